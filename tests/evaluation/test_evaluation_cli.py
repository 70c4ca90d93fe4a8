"""dereverb-evaluate (dereverb/cli/evaluate.py): its output, and bad input as one line on stderr, exit status 2,
with nothing changed on disk (run concurrently as subprocesses of scripts/evaluate.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from dereverb.cli.evaluate import main
from dereverb.data.audio import write_audio

EVALUATE = str(Path(__file__).parents[2] / "scripts" / "evaluate.py")


def test_cli_on_a_paired_folder(pairs8k, tiny_model, tmp_path, capsys, read_csv):
    out = tmp_path / "eval"
    rc = main(["--model", str(tiny_model), "--data", str(pairs8k), "--out", str(out), "--quiet", "--jobs", "2"])
    assert rc == 0
    rows = read_csv(out / "results.csv")
    assert [r["id"] for r in rows] == sorted(p.stem for p in (pairs8k / "reverberant").glob("*.wav"))
    for name in ("pesq_nb", "stoi", "estoi", "si_sdr"):
        for col in (f"direct_{name}", f"input_direct_{name}", f"delta_direct_{name}"):
            assert col in rows[0], col
        for r in rows:
            delta = float(r[f"direct_{name}"]) - float(r[f"input_direct_{name}"])
            assert float(r[f"delta_direct_{name}"]) == pytest.approx(delta, abs=1e-4)
    assert not any("pesq_wb" in k for k in rows[0])
    assert not any(k.startswith("wpe_") for k in rows[0])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_utterances"] == 3
    assert summary["metric_rate"] == 8000
    assert summary["notes"] == []
    stats = summary["columns"]["input_direct_si_sdr"]
    assert stats["n"] == 3
    assert stats["missing"] == 0
    assert stats["ci95"][0] < stats["mean"] < stats["ci95"][1]
    assert "| direct_si_sdr |" in (out / "summary.md").read_text()
    assert "# Evaluation of" in capsys.readouterr().out  # the summary is printed
    assert not list(tmp_path.glob(".eval*"))  # no temporary folder left


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--target", "clean"], "error: --target clean: now named direct; expected one of auto, both, direct, early"),
        (["--reference", "clean"], "error: --reference clean: the option is now --target (--target direct)"),
        (["--reference", "early"], "error: --reference early: the option is now --target (--target early)"),
        (["--baselines", "nope"], "error: --baselines nope: unknown (known: wpe)"),
    ],
)
def test_renamed_and_unknown_options_are_one_line(tmp_path, capsys, argv, expected):
    rc = main(["--model", "no-such-model", "--data", str(tmp_path), "--out", str(tmp_path / "o"), *argv])
    assert rc == 2
    assert capsys.readouterr().err == expected + "\n"
    assert not (tmp_path / "o").exists()


def test_python_m_runs_the_command(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "dereverb.cli.evaluate", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0
    assert "--target {auto,both,direct,early}" in proc.stdout
    assert "--reference" not in proc.stdout


# ---------------------------------------------------------------------------------------------
# bad input: one line on stderr, no traceback, a non-zero exit


def _bad_cases(root: Path, pairs8k: Path, model: Path) -> dict[str, tuple[list[str], str]]:
    unpaired = root / "unpaired"
    for role in ("reverberant", "direct"):
        (unpaired / role).mkdir(parents=True)
    for name in ("a.wav", "b.wav", "c.wav"):
        write_audio(unpaired / "reverberant" / name, np.zeros(800, np.float32), 8000)
    write_audio(unpaired / "direct" / "a.wav", np.zeros(800, np.float32), 8000)
    empty, corrupt = root / "empty", root / "corrupt"
    for folder, content in ((empty, b""), (corrupt, b"this is not audio")):
        for role in ("reverberant", "direct"):
            (folder / role).mkdir(parents=True)
            (folder / role / "x.wav").write_bytes(content)
    old_names = root / "old_names"
    for role in ("reverb", "clean"):
        (old_names / role).mkdir(parents=True)
    not_model = root / "not_model"
    not_model.mkdir()
    (not_model / "weights.bin").write_bytes(b"0")
    existing = root / "existing"
    existing.mkdir()

    def run(model_arg, data, out):
        return ["--model", str(model_arg), "--data", str(data), "--out", str(root / out)]

    return {
        "unpaired": (run(model, unpaired, "o1"), "b.wav, reverberant/c.wav"),
        "empty file": (run(model, empty, "o2"), "empty file"),
        "corrupt file": (run(model, corrupt, "o3"), "not a readable"),
        "not a model": (run(not_model, pairs8k, "o4"), "not a dereverb"),
        "unknown model": (run("no-such-model", pairs8k, "o5"), "no such"),
        "existing output": (run(model, pairs8k, "existing"), "already exists"),
        "missing data": (run(model, root / "nope", "o6"), "no such"),
        "early missing": ([*run(model, empty, "o7"), "--target", "early"], "early/"),
        "old folder names": (run(model, old_names, "o8"), "no reverberant/ folder (clean is now direct and reverb is "
                             "now reverberant: rename them, or prepare the data again)"),
    }  # fmt: skip


@pytest.fixture(scope="module")
def bad_runs(tmp_path_factory, pairs8k, tiny_model):
    root = tmp_path_factory.mktemp("bad")
    cases = _bad_cases(root, pairs8k, tiny_model)
    procs = {
        name: subprocess.Popen(
            [sys.executable, EVALUATE, *argv, "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for name, (argv, _) in cases.items()
    }
    results = {name: (p.wait(120), *p.communicate(), cases[name][1]) for name, p in procs.items()}
    return root, results


@pytest.mark.parametrize(
    "case",
    ["unpaired", "empty file", "corrupt file", "not a model", "unknown model", "existing output", "missing data",
     "early missing", "old folder names"],
)  # fmt: skip
def test_bad_input_exits_with_one_line(bad_runs, case):
    root, results = bad_runs
    rc, stdout, stderr, expected = results[case]
    assert rc == 2, (stdout, stderr)
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: "), stderr
    assert expected in lines[0]
    assert "Traceback" not in stderr
    assert not list(root.glob("o[0-9]*"))
    assert not list(root.glob(".o[0-9]*"))
    assert not any((root / "existing").iterdir())


# ---------------------------------------------------------------------------------------------
# --overwrite replaces only an earlier evaluation; bad arguments; tampered checkpoints


def _evaluate_cli(*argv: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, EVALUATE, "--jobs", "1", *argv, "--quiet"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _one_error_line(rc: int, stdout: str, stderr: str) -> str:
    assert rc == 2, (stdout, stderr)
    assert "Traceback" not in stderr, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: "), stderr
    return lines[0]


def _tree(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` with its content (to show that nothing changed)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _overwrite_cases(root: Path, pairs8k: Path, model: Path, fake_training_folder):
    """name: (arguments, the path that must survive unchanged, text of the error line)."""
    notes = root / "results"  # a folder of the user's own work
    (notes / "dtcn" / "0").mkdir(parents=True)
    (notes / "dtcn" / "0" / "train_log.txt").write_text("epoch 1\n")
    run = root / "run"
    fake_training_folder(run)
    inside = root / "eval-and-data"  # an evaluation's folder that also holds the test set
    (inside / "data").mkdir(parents=True)
    for role in ("reverberant", "direct"):
        (inside / "data" / role).mkdir()
        for f in (pairs8k / role).iterdir():
            (inside / "data" / role / f.name).write_bytes(f.read_bytes())
    (inside / "summary.json").write_text(json.dumps({"format": "dereverb-evaluation"}))
    a_file = root / "results.txt"
    a_file.write_text("my results\n")
    foreign_summary = root / "other"
    foreign_summary.mkdir()
    (foreign_summary / "summary.json").write_text('{"total": 3}')
    extra = root / "eval-plus"  # an evaluation's folder to which the user added a file
    extra.mkdir()
    (extra / "summary.json").write_text(json.dumps({"format": "dereverb-evaluation"}))
    (extra / "my_notes.md").write_text("keep me\n")
    m, d = ["--model", str(model)], ["--data", str(pairs8k)]
    return {
        # the model does not exist: the refusal comes before the model is looked at
        "not an evaluation": (["--model", "no-such-model", *d, "--out", str(notes), "--overwrite"], notes,
                              "not an evaluation folder written by dereverb-evaluate (no summary.json)"),
        "training run": ([*m, *d, "--out", str(run), "--overwrite"], run, "a training run"),
        "the model itself": (["--model", str(run), *d, "--out", str(run), "--overwrite"], run, "is the model"),
        "holds the model": (["--model", str(run), *d, "--out", str(root), "--overwrite"], root, "holds the model"),
        "holds the data": ([*m, "--data", str(inside / "data"), "--out", str(inside), "--overwrite"], inside,
                           "holds the data"),
        "file": ([*m, *d, "--out", str(a_file)], a_file, "an existing file"),
        "file, overwrite": ([*m, *d, "--out", str(a_file), "--overwrite"], a_file, "an existing file"),
        "foreign summary": ([*m, *d, "--out", str(foreign_summary), "--overwrite"], foreign_summary,
                            "was not written by dereverb-evaluate"),
        "foreign file": ([*m, *d, "--out", str(extra), "--overwrite"], extra, "holds my_notes.md"),
        "device mps": ([*m, *d, "--out", str(root / "o1"), "--device", "mps"], root / "o1", "--device mps"),
        "device meta": ([*m, *d, "--out", str(root / "o2"), "--device", "meta"], root / "o2", "--device meta"),
        "device foo": ([*m, *d, "--out", str(root / "o3"), "--device", "foo"], root / "o3", "--device foo"),
        "limit 0": ([*m, *d, "--out", str(root / "o4"), "--limit", "0"], root / "o4", "--limit 0"),
        "jobs -1": ([*m, *d, "--out", str(root / "o5"), "--jobs", "-1"], root / "o5", "--jobs -1"),
        "pad tolerance nan": ([*m, *d, "--out", str(root / "o6"), "--pad-tolerance", "nan"], root / "o6",
                              "--pad-tolerance nan"),
        "out under a file": ([*m, *d, "--out", str(a_file / "eval")], a_file, "is a file, not a folder"),
    }  # fmt: skip


@pytest.fixture(scope="module")
def overwrite_runs(tmp_path_factory, pairs8k, tiny_model, fake_training_folder):
    root = tmp_path_factory.mktemp("overwrite")
    cases = _overwrite_cases(root, pairs8k, tiny_model, fake_training_folder)
    before = {name: _tree(keep) if keep.is_dir() else (keep.read_bytes() if keep.exists() else None)
              for name, (_, keep, _) in cases.items()}  # fmt: skip
    procs = {name: _evaluate_cli(*argv) for name, (argv, _, _) in cases.items()}
    results = {name: (p.wait(120), *p.communicate()) for name, p in procs.items()}
    return root, cases, before, results


@pytest.mark.parametrize(
    "case",
    ["not an evaluation", "training run", "the model itself", "holds the model", "holds the data", "file",
     "file, overwrite", "foreign summary", "foreign file", "device mps", "device meta", "device foo", "limit 0",
     "jobs -1", "pad tolerance nan", "out under a file"],
)  # fmt: skip
def test_refusals_leave_everything_as_it_was(overwrite_runs, case):
    """--overwrite replaces only an earlier evaluation's folder; a bad --out or argument is one line, at once."""
    root, cases, before, results = overwrite_runs
    _, keep, expected = cases[case]
    line = _one_error_line(*results[case])
    assert expected in line, line
    after = _tree(keep) if keep.is_dir() else (keep.read_bytes() if keep.exists() else None)
    assert after == before[case]  # not a file changed, added or removed
    assert not [p.name for p in root.rglob(".*") if ".old-" in p.name or ".tmp-" in p.name]
    assert "summary" not in results[case][1]  # nothing was evaluated


def test_overwrite_replaces_an_earlier_evaluation(pairs8k, tiny_model, tmp_path):
    out = tmp_path / "eval"
    args = ["--model", str(tiny_model), "--data", str(pairs8k), "--out", str(out), "--quiet", "--jobs", "1"]
    assert main([*args, "--limit", "1"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["format"] == "dereverb-evaluation"  # the marker --overwrite looks for
    assert main(args) == 2  # exists, no --overwrite
    assert main([*args, "--overwrite", "--save-audio"]) == 0
    assert json.loads((out / "summary.json").read_text())["n_utterances"] == 3
    assert len(list((out / "enhanced").glob("*.wav"))) == 3
    # a folder from before the marker (an evaluation's keys, no "format") is replaced too
    summary.pop("format")
    (out / "summary.json").write_text(json.dumps(summary))
    assert main([*args, "--overwrite", "--limit", "2"]) == 0
    assert json.loads((out / "summary.json").read_text())["n_utterances"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["eval"]  # no temporary or replaced folder left


class _Payload:
    """Unpickling it creates a file: what a tampered checkpoint would do."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


def _tampered(ckpt: Path, how: str, marker: Path) -> None:
    state = {"weight": torch.zeros(2), "payload": _Payload(marker)}
    if how == "zip":
        torch.save(state, ckpt)
    elif how == "zip, protocol 4":  # STACK_GLOBAL with memoized strings instead of GLOBAL
        torch.save(state, ckpt, pickle_protocol=4)
    elif how == "legacy format":
        torch.save(state, ckpt, _use_new_zipfile_serialization=False)
    else:  # a bare pickle
        import pickle

        ckpt.write_bytes(pickle.dumps(state, protocol=2))


TAMPERED = ["zip", "zip, protocol 4", "legacy format", "bare pickle"]


@pytest.fixture(scope="module")
def tampered_runs(tmp_path_factory, pairs8k, fake_training_folder):
    root = tmp_path_factory.mktemp("tampered")
    env = {**os.environ, "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"}
    runs = {}
    for i, how in enumerate(TAMPERED):
        folder = root / f"run{i}"
        fake_training_folder(folder)
        for ckpt in (folder / "save").glob("CKPT+*"):
            _tampered(ckpt / "model.ckpt", how, root / f"pwned{i}")
        argv = ["--model", str(folder), "--data", str(pairs8k), "--out", str(root / f"e{i}")]
        runs[how] = (_evaluate_cli(*argv, env=env), root / f"pwned{i}", root / f"e{i}")
    return {how: (p.wait(120), *p.communicate(), marker, out) for how, (p, marker, out) in runs.items()}


@pytest.mark.parametrize("how", TAMPERED)
def test_tampered_checkpoint_is_refused_without_running_it(tampered_runs, tmp_path, how):
    """A pickle payload in a training folder's model.ckpt never runs, even with TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1,
    and the refusal is one line that does not suggest weights_only=False."""
    rc, stdout, stderr, marker, out = tampered_runs[how]
    line = _one_error_line(rc, stdout, stderr)
    assert "model.ckpt" in line
    assert "weights_only" not in stderr
    assert not marker.exists()
    assert not out.exists()
    # the payload is live: an unrestricted load runs it
    if how.startswith("zip"):
        live = tmp_path / "live"
        _tampered(tmp_path / "model.ckpt", how, live)
        torch.load(tmp_path / "model.ckpt", weights_only=False)
        assert live.exists()


def test_tampered_checkpoint_in_process(tmp_path, monkeypatch, fake_training_folder):
    from dereverb.loading import load_best_checkpoint
    from dereverb.pretrained import ModelFolderError

    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    fake_training_folder(tmp_path / "run")
    for ckpt in (tmp_path / "run" / "save").glob("CKPT+*"):
        _tampered(ckpt / "model.ckpt", "zip, protocol 4", tmp_path / "pwned")
    with pytest.raises(ModelFolderError, match=r"model\.ckpt: not a plain weights file") as err:
        load_best_checkpoint(tmp_path / "run")
    assert "weights_only" not in str(err.value)
    assert not (tmp_path / "pwned").exists()
