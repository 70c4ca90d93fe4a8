"""Evaluation: the CLI on tiny generated sets, the model sources, rates, lengths, honest metrics, bad input."""

from __future__ import annotations

import csv
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from dereverb.baselines import wpe
from dereverb.data import rooms, speech_pack
from dereverb.data.audio import read_audio, write_audio
from dereverb.data.manifests import write_manifest
from dereverb.evaluate import evaluate, main
from dereverb.loading import load_model
from dereverb.metrics import si_sdr
from dereverb.models import DTCN, TCN
from dereverb.pretrained import save_pretrained

TINY = {"N": 32, "B": 16, "H": 32, "X": 2, "R": 1}


def _speech(n: int, rate: int) -> list[tuple[str, np.ndarray]]:
    """``n`` short utterances (1 to 2.5 s) of the shipped speech pack at ``rate``."""
    files = [f for f in speech_pack.load_manifest("test", min_sample_rate=16000) if 1.0 <= f.duration_s <= 2.5]
    return [(f.id, read_audio(f.path, rate, resample=True)) for f in files[:n]]


def _synthetic_rir(rate: int, t60: float = 0.5, seed: int = 0) -> rooms.Rir:
    """A direct path at sample 0 plus exponentially decaying noise from 5 ms on."""
    n = int(t60 * rate)
    t = np.arange(n) / rate
    h = 0.3 * np.random.default_rng(seed).standard_normal(n) * np.exp(-6.9 * t / t60) * (t > 0.005)
    h[0] = 1.0
    return rooms.Rir(h.astype(np.float32), rate, 0, t60, t60, math.nan, 0.0, (math.nan,) * 3)


def _write_pairs(root: Path, utterances, rirs, early: bool = True) -> list[dict]:
    """reverb/, clean/ (and early/) of the utterances in the rooms; returns manifest rows."""
    roles = ("reverb", "clean", "early") if early else ("reverb", "clean")
    for role in roles:
        (root / role).mkdir(parents=True)
    rows = []
    for i, (uid, x) in enumerate(utterances):
        rir = rirs[i % len(rirs)]
        reverb, direct = rooms.reverberate(x, rir, "direct")
        signals = {"reverb": reverb, "clean": direct, "early": rooms.reverberate(x, rir, "early")[1]}
        row = {"ID": uid, "duration_s": len(x) / rir.sample_rate, "t60_s": rir.t60_s, "drr_db": rir.drr_db}
        for role in roles:
            write_audio(root / role / f"{uid}.wav", signals[role], rir.sample_rate)
            row[role] = f"$prep_root/{role}/{uid}.wav"
        rows.append(row)
    return rows


@pytest.fixture(scope="module")
def pairs8k(tmp_path_factory, rir_bank):
    root = tmp_path_factory.mktemp("pairs8k")
    rows = _write_pairs(root, _speech(3, 8000), [rir_bank[i] for i in range(len(rir_bank))])
    write_manifest(root / "test.csv", rows, ["ID", "duration_s", "reverb", "clean", "early", "t60_s", "drr_db"])
    return root


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    return save_pretrained(DTCN(**TINY), tmp_path_factory.mktemp("models") / "dtcn8k", 8000)


def _read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_cli_on_a_paired_folder(pairs8k, tiny_model, tmp_path, capsys):
    out = tmp_path / "eval"
    rc = main(["--model", str(tiny_model), "--data", str(pairs8k), "--out", str(out), "--quiet", "--jobs", "2"])
    assert rc == 0
    rows = _read_csv(out / "results.csv")
    assert [r["id"] for r in rows] == sorted(p.stem for p in (pairs8k / "reverb").glob("*.wav"))
    for name in ("pesq_nb", "stoi", "estoi", "si_sdr"):
        for col in (name, f"input_{name}", f"delta_{name}"):
            assert col in rows[0], col
        for r in rows:
            assert float(r[f"delta_{name}"]) == pytest.approx(float(r[name]) - float(r[f"input_{name}"]), abs=1e-4)
    assert "pesq_wb" not in rows[0]
    assert "wpe_si_sdr" not in rows[0]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_utterances"] == 3
    assert summary["metric_rate"] == 8000
    assert summary["notes"] == []
    stats = summary["columns"]["input_si_sdr"]
    assert stats["n"] == 3
    assert stats["missing"] == 0
    assert stats["ci95"][0] < stats["mean"] < stats["ci95"][1]
    assert "| si_sdr |" in (out / "summary.md").read_text()
    assert "# Evaluation of" in capsys.readouterr().out  # the summary is printed
    assert not list(tmp_path.glob(".eval*"))  # no temporary folder left


def test_both_references_in_one_run(pairs8k, tiny_model, tmp_path):
    """With early references present, the default scores against the clean (direct-path) reference
    and the early one: the early_* columns equal a run against early alone, the others a run
    against clean alone; the summary and its table show both."""
    both = evaluate(tiny_model, pairs8k, tmp_path / "both", baselines=["wpe"], jobs=1, progress=False)
    clean = evaluate(tiny_model, pairs8k, tmp_path / "clean", reference="clean", baselines=["wpe"], jobs=1,
                     progress=False)  # fmt: skip
    early = evaluate(tiny_model, pairs8k, tmp_path / "early", reference="early", baselines=["wpe"], jobs=1,
                     progress=False)  # fmt: skip
    assert both.summary["reference"] == "clean"
    assert both.summary["second_reference"] == "early"
    assert clean.summary["second_reference"] is None
    assert both.summary["metrics"] == [
        "pesq_nb", "stoi", "estoi", "si_sdr", "early_pesq_nb", "early_stoi", "early_estoi", "early_si_sdr"
    ]  # fmt: skip
    for b, c, e in zip(both.rows, clean.rows, early.rows, strict=True):
        assert not any(k.startswith("early_") or "_early_" in k for k in c)
        for name in ("pesq_nb", "stoi", "estoi", "si_sdr"):
            for prefix in ("", "input_", "delta_", "wpe_", "wpe_delta_"):
                assert b[f"{prefix}{name}"] == pytest.approx(c[f"{prefix}{name}"], abs=1e-4), (prefix, name)
                assert b[f"{prefix}early_{name}"] == pytest.approx(e[f"{prefix}{name}"], abs=1e-4), (prefix, name)
        # the references differ, so do the scores: the early reference keeps the first reflections
        assert b["input_early_si_sdr"] > b["input_si_sdr"]
    table = (tmp_path / "both" / "summary.md").read_text()
    assert "| early_si_sdr |" in table
    assert "| si_sdr |" in table
    assert "and early in the early_* rows" in table
    header = (tmp_path / "both" / "results.csv").read_text().splitlines()[0].split(",")
    assert {"early_si_sdr", "input_early_si_sdr", "delta_early_si_sdr", "wpe_delta_early_si_sdr"} <= set(header)


def test_auto_reference_without_early_files_is_clean_only(tiny_model, tmp_path, rir_bank):
    _write_pairs(tmp_path / "data", _speech(1, 8000), [rir_bank[0]], early=False)
    result = evaluate(tiny_model, tmp_path / "data", tmp_path / "eval", jobs=1, progress=False)
    assert result.summary["reference"] == "clean"
    assert result.summary["second_reference"] is None
    assert "early_si_sdr" not in result.rows[0]
    rc = main(["--model", str(tiny_model), "--data", str(tmp_path / "data"), "--out", str(tmp_path / "e2"),
               "--reference", "both", "--quiet"])  # fmt: skip
    assert rc == 2
    assert not (tmp_path / "e2").exists()


def test_dataset_config_evaluates_its_prepared_test_split(pairs8k, tiny_model, tmp_path):
    data = ["data=folder", f"data.root={pairs8k}", f"data.save_folder={tmp_path / 'prepared'}"]
    result = evaluate(tiny_model, data, tmp_path / "eval", jobs=1, progress=False)
    assert len(result.rows) == 1  # 3 pairs: one each for train, valid and test
    assert "test split" in result.summary["data"]
    assert list((tmp_path / "prepared").glob("8k-*/test.csv"))  # prepared at the model's rate


def test_wpe_improves_si_sdr_on_a_reverberant_utterance(rir_bank):
    (_, x), rir = _speech(1, 8000)[0], max((rir_bank[i] for i in range(len(rir_bank))), key=lambda r: r.t60_s)
    reverb, _ = rooms.reverberate(x, rir, "direct")
    _, early = rooms.reverberate(x, rir, "early")
    y = wpe(reverb, 8000)
    assert y.shape == reverb.shape
    assert np.isfinite(y).all()
    gain = si_sdr(y, early) - si_sdr(reverb, early)
    assert gain > 0.5, gain


def test_manifest_with_baseline_plots_and_report(pairs8k, tiny_model, tmp_path):
    out = tmp_path / "eval"
    result = evaluate(
        tiny_model, pairs8k / "test.csv", out, reference="early", baselines=["wpe"], report=True,
        save_audio=True, examples=2, jobs=1, progress=False,
    )  # fmt: skip
    rows = _read_csv(out / "results.csv")
    assert len(rows) == 3
    assert {"t60_s", "drr_db", "wpe_si_sdr", "wpe_delta_si_sdr"} <= set(rows[0])
    assert all(r["wpe_si_sdr"] != r["input_si_sdr"] for r in rows)  # WPE changed the signal
    summary = result.summary
    assert summary["reference"] == "early"
    assert summary["baselines"]["wpe"]["stft_size"] == 512
    assert sum(b["n"] for b in summary["breakdown"]["t60_s"]["bins"]) == 3
    assert "## By T60" in (out / "summary.md").read_text()
    for name in ("enhanced", "wpe"):
        assert len(list((out / name).glob("*.wav"))) == 3
    assert len(list((out / "plots").glob("spectrogram_*.png"))) == 2
    assert (out / "plots" / "improvement_vs_t60.png").stat().st_size > 1000
    page = (out / "report.html").read_text()
    links = re.findall(r"""(?:src|href)=['"]([^'"]+)['"]""", page)
    assert len([x for x in links if x.endswith(".wav")]) == 2 * 4  # input, output, WPE, reference
    for link in links:
        assert "://" not in link, link
        assert not link.startswith(("/", "\\")), link
        assert (out / link).is_file(), link
    assert "<table>" in page
    assert "WPE" in page


def test_16k_references_with_an_8k_model_are_resampled_and_flagged(tiny_model, tmp_path):
    _write_pairs(tmp_path / "pairs16k", _speech(2, 16000), [_synthetic_rir(16000)], early=False)
    result = evaluate(tiny_model, tmp_path / "pairs16k", tmp_path / "eval", jobs=1, progress=False)
    summary = result.summary
    assert summary["metric_rate"] == 16000
    assert summary["model_rate"] == 8000
    assert "pesq_wb" in summary["flags"]
    assert "upsampled" in summary["flags"]["pesq_wb"]
    assert any("resampled" in n for n in summary["notes"])
    rows = _read_csv(tmp_path / "eval" / "results.csv")
    assert len(rows) == 2
    assert {"pesq_wb", "input_pesq_wb", "delta_pesq_wb"} <= set(rows[0])
    assert all(r["scored_samples"] == r["reference_samples"] for r in rows)  # 16k -> 8k -> 16k kept the length
    assert "pesq_wb †" not in (tmp_path / "eval" / "summary.md").read_text()  # the dagger follows the value
    assert "†" in (tmp_path / "eval" / "summary.md").read_text()


def _fake_training_folder(root: Path) -> dict[str, dict]:
    """results/<name>/<seed> as the recipe leaves it: model_config.json and save/CKPT+*/ (no export)."""
    model = TCN(**TINY)
    (root / "save").mkdir(parents=True)
    record = {"class": "TCN", "config": model.get_config(), "sample_rate": 8000}
    (root / "model_config.json").write_text(json.dumps(record))
    states = {}
    for i, best in enumerate(["0.5", "0.9", "-.inf"]):
        torch.manual_seed(i)
        state = TCN(**TINY).state_dict()
        ckpt = root / "save" / f"CKPT+2026-01-0{i + 1}+00-00-00+00"
        ckpt.mkdir()
        (ckpt / "CKPT.yaml").write_text(f"best_key: {best}\nend-of-epoch: true\n")
        torch.save(state, ckpt / "model.ckpt")
        states[ckpt.name] = state
    return states


def test_training_folder_uses_the_best_checkpoint_then_the_export(pairs8k, tmp_path):
    folder = tmp_path / "results" / "tcn" / "0"
    states = _fake_training_folder(folder)
    loaded = load_model(folder)
    assert "CKPT+2026-01-02" in loaded.source
    assert loaded.sample_rate == 8000
    for key, value in loaded.model.state_dict().items():
        torch.testing.assert_close(value, states["CKPT+2026-01-02+00-00-00+00"][key])
    assert main(["--model", str(folder), "--data", str(pairs8k), "--out", str(tmp_path / "e"), "--quiet"]) == 0
    assert "CKPT+2026-01-02" in json.loads((tmp_path / "e" / "summary.json").read_text())["model"]
    torch.manual_seed(9)
    save_pretrained(TCN(**TINY), folder / "model", 8000)
    assert "export model/" in load_model(folder).source


def test_failures_are_missing_and_counted_lengths_cropped(tiny_model, tmp_path, caplog):
    root = tmp_path / "set"
    (uid, x), rir = _speech(1, 8000)[0], _synthetic_rir(8000, 0.3)
    _write_pairs(root, [(uid, x), ("short", x[:1600])], [rir], early=False)  # 0.2 s: too short for PESQ
    reverb = read_audio(root / "reverb" / f"{uid}.wav")
    write_audio(root / "reverb" / f"{uid}.wav", reverb[: int(len(reverb) * 0.95)], 8000, overwrite=True)
    result = evaluate(tiny_model, root, tmp_path / "eval", jobs=1, progress=False)
    rows = {r["id"]: r for r in _read_csv(tmp_path / "eval" / "results.csv")}
    assert rows["short"]["pesq_nb"] == ""
    assert rows["short"]["input_pesq_nb"] == ""
    assert "PESQ needs at least 0.25 s" in rows["short"]["failures"]
    assert result.summary["columns"]["pesq_nb"]["missing"] == 1
    assert result.summary["columns"]["pesq_nb"]["n"] == 1
    assert result.summary["utterances_with_failures"] == 1
    assert "(1 missing)" in (tmp_path / "eval" / "summary.md").read_text()
    long = rows[uid]
    assert int(long["scored_samples"]) == int(len(reverb) * 0.95)  # cropped to the shorter input
    assert result.summary["length_warnings"] == 1
    assert "signal lengths differ" in caplog.text


# ---------------------------------------------------------------------------------------------
# bad input: one line on stderr, no traceback, a non-zero exit (run concurrently as subprocesses)


def _bad_cases(root: Path, pairs8k: Path, model: Path) -> dict[str, tuple[list[str], str]]:
    unpaired = root / "unpaired"
    for role in ("reverb", "clean"):
        (unpaired / role).mkdir(parents=True)
    for name in ("a.wav", "b.wav", "c.wav"):
        write_audio(unpaired / "reverb" / name, np.zeros(800, np.float32), 8000)
    write_audio(unpaired / "clean" / "a.wav", np.zeros(800, np.float32), 8000)
    empty, corrupt = root / "empty", root / "corrupt"
    for folder, content in ((empty, b""), (corrupt, b"this is not audio")):
        for role in ("reverb", "clean"):
            (folder / role).mkdir(parents=True)
            (folder / role / "x.wav").write_bytes(content)
    not_model = root / "not_model"
    not_model.mkdir()
    (not_model / "weights.bin").write_bytes(b"0")
    existing = root / "existing"
    existing.mkdir()

    def run(model_arg, data, out):
        return ["--model", str(model_arg), "--data", str(data), "--out", str(root / out)]

    return {
        "unpaired": (run(model, unpaired, "o1"), "b.wav, reverb/c.wav"),
        "empty file": (run(model, empty, "o2"), "empty file"),
        "corrupt file": (run(model, corrupt, "o3"), "not a readable"),
        "not a model": (run(not_model, pairs8k, "o4"), "not a dereverb"),
        "unknown model": (run("no-such-model", pairs8k, "o5"), "no such"),
        "existing output": (run(model, pairs8k, "existing"), "already exists"),
        "missing data": (run(model, root / "nope", "o6"), "no such"),
        "early missing": ([*run(model, empty, "o7"), "--reference", "early"], "early/"),
    }


@pytest.fixture(scope="module")
def bad_runs(tmp_path_factory, pairs8k, tiny_model):
    root = tmp_path_factory.mktemp("bad")
    cases = _bad_cases(root, pairs8k, tiny_model)
    procs = {
        name: subprocess.Popen(
            [sys.executable, str(Path(__file__).parents[1] / "scripts" / "evaluate.py"), *argv, "--quiet"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, (argv, _) in cases.items()
    }
    results = {name: (p.wait(120), *p.communicate(), cases[name][1]) for name, p in procs.items()}
    return root, results


@pytest.mark.parametrize(
    "case",
    ["unpaired", "empty file", "corrupt file", "not a model", "unknown model", "existing output", "missing data",
     "early missing"],
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
# --overwrite replaces only an earlier evaluation; bad arguments; tampered checkpoints; input rates


def _evaluate_cli(*argv: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(Path(__file__).parents[1] / "scripts" / "evaluate.py"), "--jobs", "1", *argv, "--quiet"],
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


def _overwrite_cases(root: Path, pairs8k: Path, model: Path) -> dict[str, tuple[list[str], Path, str]]:
    """name: (arguments, the path that must survive unchanged, text of the error line)."""
    notes = root / "results"  # a folder of the user's own work
    (notes / "dtcn" / "0").mkdir(parents=True)
    (notes / "dtcn" / "0" / "train_log.txt").write_text("epoch 1\n")
    run = root / "run"
    _fake_training_folder(run)
    inside = root / "eval-and-data"  # an evaluation's folder that also holds the test set
    (inside / "data").mkdir(parents=True)
    for role in ("reverb", "clean"):
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
def overwrite_runs(tmp_path_factory, pairs8k, tiny_model):
    root = tmp_path_factory.mktemp("overwrite")
    cases = _overwrite_cases(root, pairs8k, tiny_model)
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
    assert sorted(p.name for p in tmp_path.iterdir()) == ["eval"]  # no .eval.old-PID, no .eval.tmp-PID


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
def tampered_runs(tmp_path_factory, pairs8k):
    root = tmp_path_factory.mktemp("tampered")
    env = {**os.environ, "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"}
    runs = {}
    for i, how in enumerate(TAMPERED):
        folder = root / f"run{i}"
        _fake_training_folder(folder)
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


def test_tampered_checkpoint_in_process(tmp_path, monkeypatch):
    from dereverb.loading import load_best_checkpoint
    from dereverb.pretrained import ModelFolderError

    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    _fake_training_folder(tmp_path / "run")
    for ckpt in (tmp_path / "run" / "save").glob("CKPT+*"):
        _tampered(ckpt / "model.ckpt", "zip, protocol 4", tmp_path / "pwned")
    with pytest.raises(ModelFolderError, match=r"model\.ckpt: not a plain weights file") as err:
        load_best_checkpoint(tmp_path / "run")
    assert "weights_only" not in str(err.value)
    assert not (tmp_path / "pwned").exists()


def test_inputs_at_another_rate_than_the_references_are_noted(tmp_path, caplog):
    """8 kHz reverb against 16 kHz references: scored, with a note in the summary and a warning."""
    root = tmp_path / "mixed"
    _write_pairs(root, _speech(2, 16000), [_synthetic_rir(16000, 0.3)], early=False)
    for f in (root / "reverb").iterdir():
        write_audio(f, read_audio(f, 8000, resample=True), 8000, overwrite=True)
    torch.manual_seed(0)
    model = save_pretrained(DTCN(**TINY), tmp_path / "m16", 16000)
    result = evaluate(model, root, tmp_path / "eval", jobs=1, progress=False)
    expected = "inputs at 8000 Hz, references at 16000 Hz"
    assert [n for n in result.summary["notes"] if n.startswith(expected)], result.summary["notes"]
    assert any(expected in n for n in json.loads((tmp_path / "eval" / "summary.json").read_text())["notes"])
    assert f"- Note: {expected}" in (tmp_path / "eval" / "summary.md").read_text()
    assert expected in caplog.text
