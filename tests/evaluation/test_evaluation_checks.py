"""dereverb.evaluation.checks: every refusal in one line, what --overwrite may replace, and the file headers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from dereverb.errors import DataError, EvaluationError
from dereverb.evaluation import Utterance
from dereverb.evaluation.checks import (
    check_arguments,
    check_files,
    check_out,
    check_replaceable,
    check_runtime,
    inside,
    on_exists,
    protected_paths,
)
from dereverb.loading import LoadedModel

GOOD = {"target": "auto", "baselines": ["wpe"], "batch_size": 2, "pad_tolerance": 0.0, "jobs": None, "examples": 3,
        "limit": None}  # fmt: skip


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"target": "reference"}, "--target reference: expected one of auto, both, direct, early"),
        ({"baselines": ["wpe", "dnn"]}, "--baselines dnn: unknown (known: wpe)"),
        ({"batch_size": 0}, "--batch-size 0: expected an integer >= 1"),
        ({"batch_size": True}, "--batch-size True: expected an integer >= 1"),
        ({"limit": 0}, "--limit 0: expected an integer >= 1"),
        ({"examples": -1}, "--examples -1: expected an integer >= 0"),
        ({"jobs": 1.5}, "--jobs 1.5: expected an integer >= 0"),
        ({"pad_tolerance": float("nan")}, "--pad-tolerance nan: expected a number >= 0"),
        ({"pad_tolerance": -0.1}, "--pad-tolerance -0.1: expected a number >= 0"),
    ],
)
def test_bad_arguments(change, expected):
    check_arguments(**GOOD)
    with pytest.raises((DataError, EvaluationError)) as err:
        check_arguments(**{**GOOD, **change})
    assert str(err.value) == expected


@pytest.mark.parametrize(
    ("device", "expected"),
    [
        ("foo", "--device foo: unknown device (use cpu, cuda or cuda:N)"),
        ("meta", "--device meta: not a device inference runs on (use cpu, cuda or cuda:N)"),
        ("cuda:99", "--device cuda:99: "),
    ],
)
def test_bad_devices(device, expected):
    check_runtime("cpu", False)
    with pytest.raises(EvaluationError) as err:
        check_runtime(device, False)
    assert str(err.value).startswith(expected)


def _evaluation(folder: Path, **summary) -> Path:
    folder.mkdir(parents=True)
    (folder / "summary.json").write_text(json.dumps(summary or {"format": "dereverb-evaluation"}))
    (folder / "results.csv").write_text("id\n")
    (folder / "plots").mkdir()
    return folder


def test_what_overwrite_may_replace(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    check_out(tmp_path / "new", overwrite=False)  # a new folder is fine
    (tmp_path / "empty").mkdir()
    check_out(tmp_path / "empty", overwrite=True)  # so is an empty one, with --overwrite
    earlier = _evaluation(tmp_path / "earlier")
    check_out(earlier, overwrite=True)
    legacy = _evaluation(tmp_path / "legacy", model="m", metrics=[], columns={}, n_utterances=0)
    check_replaceable(legacy)
    with pytest.raises(EvaluationError, match="already exists"):
        check_out(earlier, overwrite=False)
    with pytest.raises(EvaluationError, match="the current folder"):
        check_out(tmp_path, overwrite=True)
    with pytest.raises(EvaluationError, match=r"holds the model \("):
        check_out(earlier, overwrite=True, protected=[("the model", earlier / "plots")])
    (tmp_path / "a.txt").write_text("")
    with pytest.raises(EvaluationError, match=r"a\.txt is a file, not a folder"):
        check_out(tmp_path / "a.txt" / "eval", overwrite=True)
    with pytest.raises(EvaluationError, match="an existing file"):
        check_out(tmp_path / "a.txt", overwrite=True)
    (tmp_path / "link").symlink_to(earlier)
    with pytest.raises(EvaluationError, match="a symbolic link"):
        check_out(tmp_path / "link", overwrite=True)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ({"model_config.json": "{}"}, "a training run or a model folder"),
        ({"config.json": "{}"}, "a training run or a model folder"),
        ({"notes.txt": ""}, "no summary.json"),
        ({"summary.json": '{"total": 1}'}, 'no "format": "dereverb-evaluation"'),
        ({"summary.json": "not json"}, 'no "format": "dereverb-evaluation"'),
        ({"summary.json": '{"format": "dereverb-evaluation"}', "a.txt": "", "b.txt": ""}, "holds a.txt and 1 more"),
    ],
)
def test_folders_that_are_never_replaced(tmp_path, content, expected):
    out = tmp_path / "out"
    out.mkdir()
    for name, text in content.items():
        (out / name).write_text(text)
    with pytest.raises(EvaluationError, match=expected) as err:
        check_replaceable(out)
    assert "refusing to replace it (move it away or choose another --out)" in str(err.value)


def test_on_exists_checks_again_at_publish_time(tmp_path):
    earlier = _evaluation(tmp_path / "earlier")
    assert on_exists(True)(earlier) is True
    with pytest.raises(EvaluationError, match="appeared while evaluating"):
        on_exists(False)(earlier)
    (earlier / "mine.txt").write_text("")
    with pytest.raises(EvaluationError, match=r"holds mine\.txt"):
        on_exists(True)(earlier)
    (tmp_path / "file").write_text("")
    with pytest.raises(EvaluationError, match="became a file or a link"):
        on_exists(True)(tmp_path / "file")


def test_protected_paths_and_inside(tmp_path):
    ckpt = tmp_path / "run" / "save" / "CKPT+1"
    loaded = LoadedModel(None, 8000, "m", checkpoint=ckpt)
    assert protected_paths(loaded, ["data=folder", f"data.root={tmp_path}"]) == [
        ("the training run of the model", tmp_path / "run"), ("the data", tmp_path)
    ]  # fmt: skip
    assert protected_paths(str(tmp_path), str(tmp_path / "nope")) == [("the model", tmp_path)]
    assert inside(tmp_path / "a" / "b", tmp_path)
    assert not inside(tmp_path.parent, tmp_path)


def test_check_files_reads_every_header(tmp_path):
    def wav(name, rate, channels=1, frames=800):
        path = tmp_path / name
        sf.write(path, np.zeros((frames, channels), np.float32), rate, subtype="FLOAT")
        return path

    utts = [Utterance(f"u{i}", wav(f"r{i}.wav", 8000 if i else 16000), {"direct": wav(f"d{i}.wav", 16000),
            "early": wav(f"e{i}.wav", 22050)}) for i in range(3)]  # fmt: skip
    rates = check_files(utts)
    assert (rates.target, rates.other_targets, rates.inputs, rates.input) == (16000, 0, {16000: 1, 8000: 2}, 8000)
    stereo = Utterance("s", wav("s.wav", 8000, channels=2), {"direct": wav("d.wav", 8000)})
    with pytest.raises(DataError, match=r"s.wav: 2 channels; only mono audio is supported"):
        check_files([stereo])
    empty = Utterance("e", wav("r.wav", 8000), {"direct": wav("z.wav", 8000, frames=0)})
    with pytest.raises(DataError, match=r"z.wav: contains no samples"):
        check_files([empty])
