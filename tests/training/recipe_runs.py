"""Helpers of the training tests: generated paired data, ``python train.py`` in subprocesses, and checks of
what a finished run leaves in its folder.

Every run writes under pytest's ``tmp_path`` (``output_dir``, ``data.save_folder``, the working directory of
the subprocess); nothing is written into the repository.
"""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from dereverb.config import CONF_DIR
from dereverb.pretrained import from_pretrained

REPO = Path(__file__).resolve().parents[2]
TRAIN = str(REPO / "train.py")
CONFIG = str(CONF_DIR / "dtcn.yaml")
RATE = 8000
PACK_MANIFEST = REPO / "dereverb" / "assets" / "speech" / "manifest.csv"
SMOKE_CHANNELS = {"N": 64, "B": 16, "H": 32, "X": 2, "R": 1}  # conf/debug/smoke.yaml


def voice(f0: float, seconds: float, seed: int) -> np.ndarray:
    """A harmonic tone with vibrato and a syllable-like envelope: speech-like enough to dereverberate."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * RATE)) / RATE
    phase = 2 * np.pi * np.cumsum(f0 * (1 + 0.1 * np.sin(2 * np.pi * 2 * t))) / RATE
    x = sum(np.sin(k * phase) / k for k in range(1, 12))
    envelope = np.clip(np.sin(2 * np.pi * 3 * t + rng.uniform(0, 2 * np.pi)), 0, None)
    return (0.3 * x * envelope + 0.003 * rng.standard_normal(t.size)).astype(np.float32)


def exponential_rir(t60: float, seed: int) -> np.ndarray:
    """A synthetic RIR: a unit direct path, then Gaussian noise decaying by 60 dB in ``t60`` seconds."""
    n = round(t60 * RATE)
    h = np.random.default_rng(seed).standard_normal(n) * 0.3 * 10 ** (-3 * np.arange(n) / n)
    h[0] = 1.0
    return h


def make_pairs(root: Path, n: int, seconds: float = 0.5) -> Path:
    """``n`` pairs ``root/reverberant/uNN.wav`` (the clean signal in a synthetic room) and ``root/direct/uNN.wav``."""
    for i in range(n):
        clean = voice(100 + 7 * i, seconds, seed=i)
        reverb = np.convolve(clean, exponential_rir(0.3, seed=i))[: clean.size]
        for role, x in (("direct", clean), ("reverberant", reverb / np.abs(reverb).max() * 0.5)):
            (root / role).mkdir(parents=True, exist_ok=True)
            sf.write(root / role / f"u{i:02d}.wav", x.astype(np.float32), RATE, subtype="FLOAT")
    return root


def run_env() -> dict:
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    # tiny models: one thread each is fastest, and far faster when the CPUs are shared
    env.update(PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    return env


def train_command(*args: str) -> list[str]:
    return [sys.executable, TRAIN, CONFIG, *args]


def run_train(cwd: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """``python train.py conf/dtcn.yaml ARGS`` run from ``cwd``."""
    cwd.mkdir(parents=True, exist_ok=True)
    return subprocess.run(train_command(*args), cwd=cwd, env=run_env(), capture_output=True, text=True, timeout=timeout)


def run_group(command: list[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess:
    """Run a command that starts processes of its own; on a timeout, kill all of them (its process group)."""
    cwd.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        command,
        cwd=cwd,
        env=run_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        pytest.fail(f"timed out after {timeout} s: {' '.join(command)}\n{stdout[-3000:]}\n{stderr[-3000:]}")
    return subprocess.CompletedProcess(command, proc.returncode, stdout, stderr)


def smoke_args(data: Path, tmp: Path, out: Path, *more: str) -> list[str]:
    return [
        "debug=smoke",
        "data=folder",
        f"data.root={data}",
        f"data.save_folder={tmp / 'prepared'}",
        f"output_dir={out}",
        "run.progress=false",
        *more,
    ]


def ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, (
        f"exit {proc.returncode}\n--- stdout\n{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-4000:]}"
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def one_line_error(proc: subprocess.CompletedProcess) -> str:
    """The refused run's message: a non-zero exit and one line on stderr, no traceback."""
    assert proc.returncode != 0, proc.stdout[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("train.py: error: "), lines[0]
    return lines[0]


def checkpoints(out: Path) -> list[Path]:
    return sorted((out / "save").glob("CKPT+*"))


def manifest_ids(prepared: Path) -> list[str]:
    (manifest,) = prepared.glob("8k-*/test.csv")
    with open(manifest, newline="") as f:
        return [row["ID"] for row in csv.DictReader(f)]


def check_run_folder(out: Path, n_test: int, cls_name: str = "DTCN") -> None:
    """What a finished smoke run leaves: log, one end-of-epoch checkpoint, test results, the model."""
    log = (out / "train_log.txt").read_text()
    assert re.search(r"^epoch: 1, lr: .* - train loss: [-\d.e+]+ - valid loss: ", log, re.M), log
    assert "epoch loaded: 1 - test loss:" in log
    (ckpt,) = checkpoints(out)
    assert (ckpt / "model.ckpt").stat().st_size > 0
    meta = yaml.safe_load((ckpt / "CKPT.yaml").read_text())
    assert meta["end-of-epoch"] is True
    assert "best_key" in meta
    assert not list((out / "save").glob("tmp-*"))

    with open(out / "test_results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == n_test
    columns = set(rows[0])
    for name in ("pesq_nb", "stoi", "estoi", "si_sdr"):
        assert {name, f"input_{name}"} <= columns
    for row in rows:
        assert np.isfinite(float(row["si_sdr"]))
        assert np.isfinite(float(row["input_si_sdr"]))
    summary = json.loads((out / "test_summary.json").read_text())
    assert summary["si_sdr"]["mean"] == pytest.approx(np.mean([float(r["si_sdr"]) for r in rows]))
    assert "input_si_sdr" in summary

    model = from_pretrained(out / "model")
    assert type(model).__name__ == cls_name
    config = model.get_config()
    assert {k: config[k] for k in SMOKE_CHANNELS} == SMOKE_CHANNELS
    # the exported weights are the best checkpoint's
    best = torch.load(ckpt / "model.ckpt", map_location="cpu", weights_only=True)
    for name, value in model.state_dict().items():
        torch.testing.assert_close(value, best[name])
    with torch.no_grad():
        assert model(torch.randn(1, RATE // 4)).shape == (1, RATE // 4)
    for name in ("config.yaml", "environment.json", "model_config.json"):
        assert (out / name).is_file()


def epochs_logged(out: Path) -> list[int]:
    return [int(m) for m in re.findall(r"^epoch: (\d+), lr:", (out / "train_log.txt").read_text(), re.M)]


def optimizer_steps(out: Path) -> int:
    (ckpt,) = checkpoints(out)
    return int(yaml.safe_load((ckpt / "brain.ckpt").read_text())["optimizer_step"])


def wrapped_train(code: list[str], args: list[str]) -> list[str]:
    """``python -c`` that runs ``code`` (e.g. a patch of the Brain), then ``train.py conf/dtcn.yaml ARGS``."""
    lines = [
        "import runpy, sys",
        *code,
        f"sys.argv = {[TRAIN, CONFIG, *args]!r}",
        f"runpy.run_path({TRAIN!r}, run_name='__main__')",
    ]
    return [sys.executable, "-c", "\n".join(lines)]


def lock_holder(out: Path) -> int | None:
    try:
        return json.loads((out / ".lock").read_text())["pid"]
    except (OSError, ValueError, KeyError):
        return None


class Payload:
    """Unpickling this creates a file: a checkpoint must never be loaded with pickle's full powers."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def copy_of_smoke_run(smoke_run, tmp_path: Path) -> tuple[Path, Path, Path]:
    """A copy of the finished smoke run to tamper with: ``(its tmp folder, the copy, its checkpoint)``."""
    import shutil

    tmp, done, proc = smoke_run
    ok(proc)
    out = tmp_path / "out"
    shutil.copytree(done, out)
    (ckpt,) = checkpoints(out)
    return tmp, out, ckpt
