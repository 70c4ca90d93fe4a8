"""Data: the shipped speech pack, room simulation and the datasets the recipes train on.

Modules:
    speech_pack: the clean speech shipped with the project (manifest, splits, licences).
    rooms: room impulse responses simulated with pyroomacoustics, T60 calibration, targets.
    audio: reading and writing audio files with clear errors.
    manifests: CSV manifests with root placeholders, prepared folders keyed by a settings hash.
    datasets: ``prepare`` and ``build_datasets`` for ``data=demo|simulate|folder|whamr``.
    prepare: the preparation command line, ``python -m dereverb.data.prepare [overrides]``.
"""

__all__ = ["build_datasets", "prepare"]


def __getattr__(name: str):
    # imported on first use, so that ``dereverb.errors`` stays light for the other modules
    if name in __all__:
        from dereverb.data import datasets

        return getattr(datasets, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
