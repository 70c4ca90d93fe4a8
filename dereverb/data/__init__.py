"""Data: the shipped speech pack, room simulation and the datasets the recipes train on.

Modules:
    speech_pack: the clean speech shipped with the project (manifest, splits, licences).
    rooms: room impulse responses simulated with pyroomacoustics, T60 calibration, targets, RIR banks.
    audio: reading and writing audio files with clear errors.
    manifests: CSV manifests with root placeholders, prepared folders keyed by a settings hash.
    kinds: the dataset kinds (``data=demo|simulate|folder|whamr``), one module each, and their registry.
    settings: :func:`data_settings`, a ``data`` config checked and completed with its kind's defaults.
    preparation: :func:`prepare`, the manifests of a dataset prepared once.
    datasets: :func:`build_datasets`, the SpeechBrain datasets of each split.
    items: the dynamic items (a pair of files read, or a pair mixed afresh).
    sources, pairs, mixing: what the kinds share (listing sources, paired files, dynamic mixing).

The command line is ``dereverb-prepare`` (:mod:`dereverb.cli.prepare`).
"""

from dereverb.data.datasets import build_datasets
from dereverb.data.preparation import prepare
from dereverb.data.settings import data_settings

__all__ = ["build_datasets", "data_settings", "prepare"]
