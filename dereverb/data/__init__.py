"""Data: the shipped speech pack, room simulation and the datasets the recipes train on.

Modules:
    errors: ``DataError``, the one exception every bad-input check raises.
    speech_pack: the clean speech shipped with the project (manifest, splits, licences).
    rooms: room impulse responses simulated with pyroomacoustics, T60 calibration, targets.
    audio: reading and writing audio files with clear errors.
    datasets: preparation and SpeechBrain datasets for ``data=demo|simulate|folder|whamr``.
"""
