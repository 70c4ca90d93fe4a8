"""Evaluate a dereverberation model on a reverberant test set, beside the input and classical baselines.

:func:`evaluate` enhances every utterance of a test set, scores the model output, the unprocessed
input and (``baselines=["wpe"]``) single-channel WPE against each target with
:class:`dereverb.metrics.Scorer`, and writes a per-utterance CSV and a summary (Markdown and JSON);
optionally the enhanced audio, figures and a self-contained HTML report. The command line is
``dereverb-evaluate`` (:mod:`dereverb.cli.evaluate`); ``docs/evaluation.md`` describes every option
and column.

The modules, in the order a run uses them: :mod:`~dereverb.evaluation.testset` (the utterances),
:mod:`~dereverb.evaluation.checks` (every refusal, before any work), :mod:`~dereverb.evaluation.run`
(enhance and score), :mod:`~dereverb.evaluation.summary` (the CSV and the summary),
:mod:`~dereverb.evaluation.figures` and :mod:`~dereverb.evaluation.html_report`.
"""

from dereverb.evaluation.run import EvaluationResult, evaluate
from dereverb.evaluation.testset import TARGETS, TestSet, Utterance, load_test_set

__all__ = ["TARGETS", "EvaluationResult", "TestSet", "Utterance", "evaluate", "load_test_set"]
