"""The training recipe, one concern per module (import from the module; this package imports nothing).

- :mod:`dereverb.training.config`: :func:`~dereverb.training.config.validate`, the checks of a composed config.
- :mod:`dereverb.training.lock`: :class:`~dereverb.training.lock.RunLock`, one training per run folder.
- :mod:`dereverb.training.records`: the run folder's records (model, config, environment).
- :mod:`dereverb.training.experiment`: :func:`~dereverb.training.experiment.build`, everything made once.
- :mod:`dereverb.training.brain`: :class:`~dereverb.training.brain.DereverbBrain` and its atomic checkpointer.
- :mod:`dereverb.training.cost`: the cost estimate logged after the first steps.
- :mod:`dereverb.training.faults`: a failed write (a full disk) in one line.
- :mod:`dereverb.training.run`: :func:`~dereverb.training.run.main`, the recipe end to end.

``python train.py conf/dtcn.yaml [overrides]`` is :mod:`dereverb.cli.train`.
"""
