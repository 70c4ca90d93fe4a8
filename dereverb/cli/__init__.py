"""The command lines: ``train`` (``python train.py``), ``prepare``, ``evaluate`` and ``enhance``
(``dereverb-prepare``, ``dereverb-evaluate``, ``dereverb-enhance``), on :mod:`dereverb.cli.common`."""
