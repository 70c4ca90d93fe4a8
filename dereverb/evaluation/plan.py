"""What an evaluation computes: its test set and model, the metric rate, and the notes on rates.

Metrics are computed at the primary target's rate when PESQ is defined there (8 or 16 kHz), else
at 16 kHz (8 kHz for targets below 16 kHz). The model gets its input at its own rate; its output is
resampled to the metric rate. Inputs at another rate than the targets are scored all the same,
with a note, since that is often a sign of mismatched files.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from dereverb.evaluation.checks import Rates, check_data_outside, check_files
from dereverb.evaluation.testset import TestSet, Utterance, is_config, load_test_set
from dereverb.loading import LoadedModel, load_model

__all__ = ["METRIC_RATES", "Plan", "input_rate_note", "make_plan", "metric_rate", "resolve"]

log = logging.getLogger(__name__)

METRIC_RATES = (8000, 16000)
"""The rates PESQ is defined at, so the rates metrics are computed at."""


@dataclass
class Plan:
    """What one evaluation computes: the utterances, the model, the rates, the metrics, and what the summary notes.

    Attributes:
        loaded: the model.
        utterances: the utterances to evaluate (``limit`` applied).
        targets: the targets, the primary one first.
        baselines: the baselines to run.
        rate: the metric rate (every scored signal is resampled to it).
        target_rate: the most common rate of the primary target's files.
        metrics: the metric names at ``rate`` (:func:`dereverb.metrics.metric_names`).
        notes: what the summary must say about rates.
        flags: column -> why its values need care (``direct_pesq_wb`` of an upsampled output).
    """

    loaded: LoadedModel
    utterances: list[Utterance]
    targets: tuple[str, ...]
    baselines: list[str]
    rate: int
    target_rate: int
    metrics: tuple[str, ...]
    notes: list[str]
    flags: dict[str, str]

    @property
    def signals(self) -> list[str]:
        """The scored signals: the model output, the unprocessed input, then each baseline."""
        return ["output", "input", *self.baselines]

    @property
    def names(self) -> list[str]:
        """Every metric against every target, ``<target>_<metric>``."""
        return [f"{t}_{m}" for t in self.targets for m in self.metrics]


def metric_rate(target_rate: int) -> int:
    """The rate the metrics are computed at for targets at ``target_rate``.

    Example:
        >>> metric_rate(16000), metric_rate(44100), metric_rate(11025)
        (16000, 16000, 8000)
    """
    if target_rate in METRIC_RATES:
        return target_rate
    return 16000 if target_rate > 16000 else 8000


def input_rate_note(rates: Rates, metric_rate: int, model_rate: int) -> str | None:
    """The note on inputs whose rate is not the targets' (None when they all match).

    Example:
        >>> print(input_rate_note(Rates(16000, 0, {8000: 3}), 16000, 8000))
        inputs at 8000 Hz, targets at 16000 Hz: each input was resampled to 16000 Hz to be scored (input_*, \
baselines) and to 8000 Hz for the model; the input has no content above 4 kHz, so check that the inputs and \
targets belong together
    """
    common = rates.input
    others = sum(n for r, n in rates.inputs.items() if r != common)
    if common == rates.target and not others:
        return None
    text = f"inputs at {common} Hz" + (f" ({others} at other rates)" if others else "")
    text += (
        f", targets at {rates.target} Hz: each input was resampled to {metric_rate} Hz to be scored "
        f"(input_*, baselines) and to {model_rate} Hz for the model"
    )
    if common < metric_rate:
        text += f"; the input has no content above {common // 2000} kHz"
    return text + ", so check that the inputs and targets belong together"


def resolve(model, data, out: Path, target: str, device: str, overwrite: bool) -> tuple[TestSet, LoadedModel]:
    """The test set and the model of an evaluation writing ``out``.

    A folder or manifest is listed before the model loads (its errors come first and fast); a dataset
    config is prepared after, at the model's rate. Neither may lie inside ``out`` when ``overwrite``
    would replace it.

    Raises:
        DataError, ModelFolderError, EvaluationError: one line each.
    """
    config = not isinstance(data, TestSet) and is_config(data)
    test = data if isinstance(data, TestSet) or config else load_test_set(data, target)
    if not config:
        check_data_outside(out, overwrite, test.utterances)
    loaded = model if isinstance(model, LoadedModel) else load_model(model, device)
    if config:
        test = load_test_set(data, target, loaded.sample_rate)
        check_data_outside(out, overwrite, test.utterances)
    return test, loaded


def make_plan(test: TestSet, loaded: LoadedModel, limit: int | None, baselines: list[str]) -> Plan:
    """Read every header (:func:`~dereverb.evaluation.checks.check_files`), choose the metric rate, and note
    what the summary must say about rates.

    Raises:
        DataError: a missing, empty, unreadable or multi-channel file (one line naming it).
    """
    from dereverb.metrics import metric_names

    utterances = test.utterances[:limit] if limit else test.utterances
    rates = check_files(utterances)
    rate, model_rate = metric_rate(rates.target), loaded.sample_rate
    notes = []
    if rate != rates.target or rates.other_targets:
        notes.append(f"targets resampled to {rate} Hz for the metrics (PESQ is defined at 8 and 16 kHz only)")
    mismatch = input_rate_note(rates, rate, model_rate)
    if mismatch:
        log.warning("%s", mismatch)
        notes.append(mismatch)
    if model_rate != rate:
        notes.append(
            f"the model works at {model_rate} Hz: each input was resampled from its file to {model_rate} Hz for "
            f"the model, and the output from {model_rate} Hz to {rate} Hz for the metrics"
        )
    flags = {}
    if model_rate < rate and "pesq_wb" in metric_names(rate):
        why = (
            f"the output's pesq_wb is that of a signal at {model_rate} Hz upsampled to {rate} Hz (no content above "
            f"{model_rate // 2000} kHz), compared with a full-band input"
        )
        notes.append(why)
        flags = {f"{t}_pesq_wb": why for t in test.targets}
    return Plan(loaded, utterances, test.targets, baselines, rate, rates.target, metric_names(rate), notes, flags)
