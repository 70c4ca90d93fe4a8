"""dereverb.evaluation.plan: the metric rate, the notes on rates, and resolving the test set and the model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dereverb.data.audio import write_audio
from dereverb.errors import DataError, EvaluationError
from dereverb.evaluation import TestSet, Utterance
from dereverb.evaluation.checks import Rates
from dereverb.evaluation.plan import input_rate_note, make_plan, metric_rate, resolve
from dereverb.loading import LoadedModel


def _set(root: Path, rate: int, input_rate: int | None = None, n: int = 3) -> TestSet:
    """``n`` utterances of noise with direct and early targets at ``rate`` (inputs at ``input_rate``)."""
    rng = np.random.default_rng(0)
    utts = []
    for i in range(n):
        files = {}
        for role, r in (("reverberant", input_rate or rate), ("direct", rate), ("early", rate)):
            files[role] = root / role / f"u{i}.wav"
            files[role].parent.mkdir(parents=True, exist_ok=True)
            write_audio(files[role], 0.1 * rng.standard_normal(r // 2).astype(np.float32), r)
        utts.append(Utterance(f"u{i}", files.pop("reverberant"), files))
    return TestSet(utts, "test", ("direct", "early"))


def test_metric_rate():
    assert [metric_rate(r) for r in (8000, 16000, 11025, 22050, 48000)] == [8000, 16000, 8000, 16000, 16000]


def test_input_rate_note():
    assert input_rate_note(Rates(8000, 0, {8000: 4}), 8000, 8000) is None
    note = input_rate_note(Rates(16000, 0, {16000: 3, 8000: 1}), 16000, 16000)
    assert note.startswith("inputs at 16000 Hz (1 at other rates), targets at 16000 Hz")
    assert "no content above" not in note


def test_a_16k_set_with_an_8k_model_flags_pesq_wb_against_each_target(tmp_path):
    plan = make_plan(_set(tmp_path, 16000), LoadedModel(None, 8000, "m"), None, ["wpe"])
    assert (plan.rate, plan.target_rate) == (16000, 16000)
    assert plan.metrics == ("pesq_wb", "pesq_nb", "stoi", "estoi", "si_sdr")
    assert plan.names[:2] == ["direct_pesq_wb", "direct_pesq_nb"]
    assert plan.names[5:7] == ["early_pesq_wb", "early_pesq_nb"]
    assert plan.signals == ["output", "input", "wpe"]
    assert sorted(plan.flags) == ["direct_pesq_wb", "early_pesq_wb"]
    assert plan.notes[0].startswith("the model works at 8000 Hz")
    assert plan.notes[1] == plan.flags["direct_pesq_wb"]


def test_limit_other_rates_and_mismatched_inputs(tmp_path, caplog):
    plan = make_plan(_set(tmp_path / "a", 22050, input_rate=8000), LoadedModel(None, 16000, "m"), 2, [])
    assert len(plan.utterances) == 2
    assert (plan.rate, plan.target_rate) == (16000, 22050)
    assert plan.notes[0] == "targets resampled to 16000 Hz for the metrics (PESQ is defined at 8 and 16 kHz only)"
    assert plan.notes[1].startswith("inputs at 8000 Hz, targets at 22050 Hz")
    assert "inputs at 8000 Hz" in caplog.text
    assert plan.flags == {}
    same = make_plan(_set(tmp_path / "b", 8000), LoadedModel(None, 8000, "m"), None, [])
    assert (same.rate, same.notes, same.flags) == (8000, [], {})


def test_resolve_lists_a_folder_before_the_model_loads(tmp_path):
    with pytest.raises(DataError, match="no such folder or manifest"):
        resolve("no-such-model", tmp_path / "nope", tmp_path / "out", "auto", "cpu", False)
    test, loaded = _set(tmp_path / "s", 8000), LoadedModel(None, 8000, "m")
    assert resolve(loaded, test, tmp_path / "out", "auto", "cpu", False) == (test, loaded)
    with pytest.raises(EvaluationError, match="holds the test set's"):
        resolve(loaded, test, tmp_path, "auto", "cpu", True)
