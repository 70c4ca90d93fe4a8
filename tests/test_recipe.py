"""The training recipe end to end: ``python train.py conf/dtcn.yaml ...`` in subprocesses (artifacts,
resuming after a kill, DDP, sweeps, errors), an overfitting check, and non-finite losses.

Every run writes under pytest's ``tmp_path`` (``output_dir``, ``data.save_folder``, the working
directory of the subprocess); nothing is written into the repository.
"""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from dereverb.config import CONF_DIR, compose
from dereverb.data import rooms
from dereverb.losses import NegSISDR
from dereverb.models import DTCN
from dereverb.pretrained import from_pretrained

REPO = Path(__file__).resolve().parent.parent
TRAIN = str(REPO / "train.py")
CONFIG = str(CONF_DIR / "dtcn.yaml")
RATE = 8000
PACK_MANIFEST = REPO / "dereverb" / "assets" / "speech" / "manifest.csv"
SMOKE_CHANNELS = {"N": 64, "B": 16, "H": 32, "X": 2, "R": 1}  # conf/debug/smoke.yaml


# --------------------------------------------------------------------------------------------
# data and subprocess helpers


def _voice(f0: float, seconds: float, seed: int) -> np.ndarray:
    """A harmonic tone with vibrato and a syllable-like envelope: speech-like enough to dereverberate."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * RATE)) / RATE
    phase = 2 * np.pi * np.cumsum(f0 * (1 + 0.1 * np.sin(2 * np.pi * 2 * t))) / RATE
    x = sum(np.sin(k * phase) / k for k in range(1, 12))
    envelope = np.clip(np.sin(2 * np.pi * 3 * t + rng.uniform(0, 2 * np.pi)), 0, None)
    return (0.3 * x * envelope + 0.003 * rng.standard_normal(t.size)).astype(np.float32)


def _exponential_rir(t60: float, seed: int) -> np.ndarray:
    """A synthetic RIR: a unit direct path, then Gaussian noise decaying by 60 dB in ``t60`` seconds."""
    n = round(t60 * RATE)
    h = np.random.default_rng(seed).standard_normal(n) * 0.3 * 10 ** (-3 * np.arange(n) / n)
    h[0] = 1.0
    return h


def _pairs(root: Path, n: int, seconds: float = 0.5) -> Path:
    """``n`` pairs ``root/reverberant/uNN.wav`` (the clean signal in a synthetic room) and ``root/direct/uNN.wav``."""
    for i in range(n):
        clean = _voice(100 + 7 * i, seconds, seed=i)
        reverb = np.convolve(clean, _exponential_rir(0.3, seed=i))[: clean.size]
        for role, x in (("direct", clean), ("reverberant", reverb / np.abs(reverb).max() * 0.5)):
            (root / role).mkdir(parents=True, exist_ok=True)
            sf.write(root / role / f"u{i:02d}.wav", x.astype(np.float32), RATE, subtype="FLOAT")
    return root


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    # tiny models: one thread each is fastest, and far faster when the CPUs are shared
    env.update(PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    return env


@pytest.fixture
def one_thread():
    """Run in-process training on one thread (tiny models; oversubscribed threads are many times slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _command(*args: str) -> list[str]:
    return [sys.executable, TRAIN, CONFIG, *args]


def _train(cwd: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """``python train.py conf/dtcn.yaml ARGS`` run from ``cwd``."""
    cwd.mkdir(parents=True, exist_ok=True)
    return subprocess.run(_command(*args), cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout)


def _run_group(command: list[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess:
    """Run a command that starts processes of its own; on a timeout, kill all of them (its process group)."""
    cwd.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        command, cwd=cwd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        pytest.fail(f"timed out after {timeout} s: {' '.join(command)}\n{stdout[-3000:]}\n{stderr[-3000:]}")
    return subprocess.CompletedProcess(command, proc.returncode, stdout, stderr)


def _smoke_args(data: Path, tmp: Path, out: Path, *more: str) -> list[str]:
    return [
        "debug=smoke",
        "data=folder",
        f"data.root={data}",
        f"data.save_folder={tmp / 'prepared'}",
        f"output_dir={out}",
        "run.progress=false",
        *more,
    ]


def _ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, (
        f"exit {proc.returncode}\n--- stdout\n{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-4000:]}"
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def _one_line_error(proc: subprocess.CompletedProcess) -> str:
    """The refused run's message: a non-zero exit and one line on stderr, no traceback."""
    assert proc.returncode != 0, proc.stdout[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("train.py: error: "), lines[0]
    return lines[0]


def _checkpoints(out: Path) -> list[Path]:
    return sorted((out / "save").glob("CKPT+*"))


def _test_ids(prepared: Path) -> list[str]:
    (manifest,) = prepared.glob("8k-*/test.csv")
    with open(manifest, newline="") as f:
        return [row["ID"] for row in csv.DictReader(f)]


def _check_run_folder(out: Path, n_test: int, cls_name: str = "DTCN") -> None:
    """What a finished smoke run leaves: log, one end-of-epoch checkpoint, test results, the model."""
    log = (out / "train_log.txt").read_text()
    assert re.search(r"^epoch: 1, lr: .* - train loss: [-\d.e+]+ - valid loss: ", log, re.M), log
    assert "epoch loaded: 1 - test loss:" in log
    (ckpt,) = _checkpoints(out)
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


# --------------------------------------------------------------------------------------------
# 2. the smoke run, in a subprocess


@pytest.fixture(scope="module")
def pairs(tmp_path_factory) -> Path:
    """20 generated pairs of 0.5 s: 16 train, 2 valid, 2 test (the folder kind's default split)."""
    return _pairs(tmp_path_factory.mktemp("pairs"), 20)


@pytest.fixture(scope="module")
def smoke_run(pairs, tmp_path_factory) -> tuple[Path, Path, subprocess.CompletedProcess]:
    """One ``debug=smoke data=folder`` run; returns (its tmp folder, output folder, process)."""
    tmp = tmp_path_factory.mktemp("smoke")
    out = tmp / "out"
    proc = _train(tmp / "cwd", *_smoke_args(pairs, tmp, out))
    return tmp, out, proc


def test_smoke_run_on_paired_folders(smoke_run):
    tmp, out, proc = smoke_run
    _ok(proc)
    _check_run_folder(out, n_test=len(_test_ids(tmp / "prepared")))
    (ckpt,) = _checkpoints(out)
    assert f"saved an end-of-epoch checkpoint in {ckpt}\n" in proc.stdout
    assert not list((tmp / "cwd").iterdir()), "the run wrote into its working directory"
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["model"]["L"] == 16  # resolved
    assert saved["data"]["kind"] == "folder"


def test_resume_with_another_model_config_is_refused(smoke_run, pairs):
    tmp, out, proc = smoke_run
    _ok(proc)
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    line = _one_line_error(_train(tmp / "cwd", *_smoke_args(pairs, tmp, out, "model.H=48")))
    assert str(out) in line
    assert "(H differ)" in line
    after = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    assert after == before  # nothing of the old run touched


def _epochs_logged(out: Path) -> list[int]:
    return [int(m) for m in re.findall(r"^epoch: (\d+), lr:", (out / "train_log.txt").read_text(), re.M)]


def _optimizer_steps(out: Path) -> int:
    (ckpt,) = _checkpoints(out)
    return int(yaml.safe_load((ckpt / "brain.ckpt").read_text())["optimizer_step"])


def test_max_steps_stops_training_then_tests_and_exports(pairs, tmp_path):
    out = tmp_path / "out"
    args = _smoke_args(pairs, tmp_path, out, "run.epochs=3", "run.max_steps=3")  # 4 batches per epoch
    _ok(_train(tmp_path / "cwd", *args))
    assert _epochs_logged(out) == [1]
    assert _optimizer_steps(out) == 3
    _check_run_folder(out, n_test=len(_test_ids(tmp_path / "prepared")))


def test_max_minutes_cuts_the_epoch_short_then_validates_tests_and_exports(pairs, tmp_path):
    out = tmp_path / "out"
    # a budget of 60 ns is spent before the first batch has been loaded: not one step is taken,
    # yet the cut epoch is validated and checkpointed, and the test and the export follow
    args = _smoke_args(pairs, tmp_path, out, "run.epochs=3", "run.max_minutes=1e-9")
    proc = _ok(_train(tmp_path / "cwd", *args))
    assert "run.max_minutes=1e-09 reached after 0 optimizer steps" in proc.stdout + proc.stderr
    assert _epochs_logged(out) == [1]
    assert _optimizer_steps(out) == 0
    _check_run_folder(out, n_test=len(_test_ids(tmp_path / "prepared")))


def test_ship_model_makes_a_model_folder_from_the_best_checkpoint(smoke_run, tmp_path):
    _, out, proc = smoke_run
    _ok(proc)
    ship = [sys.executable, str(REPO / "scripts" / "ship_model.py"), str(out), "--name", "tiny"]
    dest = tmp_path / "tiny"
    shipped = _ok(subprocess.run([*ship, "--out", str(dest)], env=_env(), capture_output=True, text=True, timeout=300))
    (ckpt,) = _checkpoints(out)
    config = json.loads((dest / "config.json").read_text())
    assert config["training"]["total_optimizer_steps"] == 4
    (record,) = config["training"]["stages"]
    assert record["checkpoint"] == ckpt.name
    assert record["command"].startswith("python ")
    assert " conf/dtcn.yaml debug=smoke data=folder " in record["command"].replace(str(REPO) + "/", "")
    assert 0 < record["train_seconds"] < 300
    assert "train_seconds_source" not in record  # the training clock of the checkpoint
    assert record["epoch"] == 1
    assert record["optimizer_steps"] == 4  # debug=smoke: 4 batches
    best_key = yaml.safe_load((ckpt / "CKPT.yaml").read_text())["best_key"]
    assert record["validation"]["best_key"] == pytest.approx(best_key, abs=1e-4)  # rounded to 4 decimals
    assert "`direct` target over 2 validation utterances" in record["output_gain_calibration"]  # smoke valid split
    assert np.isfinite(config["output_gain"])
    assert config["output_gain"] != 0
    assert f"checkpoint {ckpt.name}" in shipped.stdout
    model = from_pretrained(dest)
    best = torch.load(ckpt / "model.ckpt", map_location="cpu", weights_only=True)
    for name, value in model.state_dict().items():
        torch.testing.assert_close(value, best[name])
    # an existing folder is not replaced without --overwrite, and its model card survives a replacement
    (dest / "MODEL_CARD.md").write_text("# tiny\nwritten by hand\n")
    refused = subprocess.run([*ship, "--out", str(dest)], env=_env(), capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2
    assert refused.stderr.strip() == f"error: {dest} exists (pass --overwrite to replace it)"
    _ok(subprocess.run([*ship, "--out", str(dest), "--overwrite"], env=_env(), capture_output=True, text=True))
    assert (dest / "MODEL_CARD.md").read_text() == "# tiny\nwritten by hand\n"
    not_a_run = subprocess.run([*ship[:2], str(tmp_path), "--name", "x", "--out", str(tmp_path / "x")],
                               env=_env(), capture_output=True, text=True, timeout=300)  # fmt: skip
    assert not_a_run.returncode == 2
    assert "no config.yaml" in not_a_run.stderr
    assert not (tmp_path / "x").exists()


def test_smoke_run_on_the_demo_data(tmp_path):
    if not PACK_MANIFEST.is_file():
        pytest.skip(f"the speech pack is not installed ({PACK_MANIFEST} does not exist)")
    out = tmp_path / "out"
    proc = _ok(
        _train(
            tmp_path / "cwd",
            "debug=smoke",
            f"data.save_folder={tmp_path / 'prepared'}",
            f"output_dir={out}",
            "run.progress=false",
            timeout=600,
        )
    )
    assert "data.kind=demo" in proc.stdout
    n_test = min(4, len(_test_ids(tmp_path / "prepared")))  # run.limit_test_items=4
    _check_run_folder(out, n_test=n_test)


# --------------------------------------------------------------------------------------------
# 3. a tiny DTCN overfits one batch


def test_tiny_dtcn_overfits_one_batch(rir_bank, one_thread):
    clean = [_voice(120, 0.5, seed=0), _voice(210, 0.5, seed=1)]
    pairs = [rooms.reverberate(c, rir_bank[i]) for i, c in enumerate(clean)]
    reverb = torch.from_numpy(np.stack([p[0] for p in pairs]))
    target = torch.from_numpy(np.stack([p[1] for p in pairs]))
    loss_fn = NegSISDR()
    with torch.no_grad():
        input_si_sdr = -loss_fn(reverb, target)
    model = DTCN(N=32, L=16, B=32, H=32, X=4, R=1)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    improvement = torch.full((2,), -np.inf)
    for step in range(300):
        optimizer.zero_grad()
        loss = loss_fn(model(reverb), target).mean()
        loss.backward()
        optimizer.step()
        if step % 10 == 9:
            with torch.no_grad():
                improvement = -loss_fn(model(reverb), target) - input_si_sdr
            if improvement.min() >= 10:
                break
    assert improvement.min() >= 10, f"SI-SDR improvement {improvement.tolist()} dB after {step + 1} steps"


# --------------------------------------------------------------------------------------------
# 4. resuming after a kill, mid-epoch and during a checkpoint save


def test_ship_model_evaluates_writes_the_card_and_chains_stages(smoke_run, pairs, tmp_path):
    """--evaluate scores the folder beside input and WPE against both references and writes the card from
    that summary; a stage trained with init_from= adds its record after the first stage's."""
    _, out, proc = smoke_run
    _ok(proc)
    ship = [sys.executable, str(REPO / "scripts" / "ship_model.py")]
    data = ["--data", "data=demo_smoke", f"data.save_folder={tmp_path / 'demo'}"]
    dest = tmp_path / "stage1"
    first = _ok(subprocess.run([*ship, str(out), "--name", "tiny", "--out", str(dest), "--evaluate", *data,
                                "--eval-out", str(tmp_path / "eval1")], env=_env(), capture_output=True, text=True,
                               timeout=600))  # fmt: skip
    summary = json.loads((tmp_path / "eval1" / "summary.json").read_text())
    assert summary["targets"] == ["direct", "early"]
    card = (dest / "MODEL_CARD.md").read_text()
    early = summary["columns"]["early_si_sdr"]
    assert f"| early (direct + 50 ms) | si_sdr | {summary['columns']['input_early_si_sdr']['mean']:.2f} | " \
           f"{early['mean']:.2f} |" in card  # fmt: skip
    assert f"| direct path | estoi | {summary['columns']['input_direct_estoi']['mean']:.3f} |" in card
    verdict = "met" if "shipping bar met" in first.stdout else "not met"
    assert "**Shipping bar** " in card
    assert f"): **{verdict}**" in card
    assert "python scripts/evaluate.py --model" in card
    assert "4 optimizer steps in 1 stage(s)" in card

    out2 = tmp_path / "run2"
    _ok(_train(tmp_path / "cwd", *_smoke_args(pairs, tmp_path, out2, f"init_from={dest}")))
    dest2 = tmp_path / "stage2"
    _ok(subprocess.run([*ship, str(out2), "--name", "tiny", "--out", str(dest2)], env=_env(), capture_output=True,
                       text=True, timeout=300))  # fmt: skip
    first_record = json.loads((dest / "config.json").read_text())["training"]
    record = json.loads((dest2 / "config.json").read_text())["training"]
    assert len(record["stages"]) == 2
    assert record["stages"][0] == first_record["stages"][0]
    assert record["stages"][1]["init_from"] == str(dest)
    assert record["total_optimizer_steps"] == 8
    assert record["total_train_hours"] == pytest.approx(
        sum(s["train_seconds"] for s in record["stages"]) / 3600, abs=1e-3
    )


def test_killed_run_resumes_from_the_last_complete_checkpoint(tmp_path):
    data = _pairs(tmp_path / "pairs", 25, seconds=0.25)  # 20 training pairs: 20 batches of 1
    out = tmp_path / "out"
    args = _smoke_args(
        data, tmp_path, out, "run.batch_size=1", "run.limit_train_batches=20", "run.ckpt_interval_steps=1"
    )
    (tmp_path / "cwd").mkdir()
    first = subprocess.Popen(
        _command(*args),
        cwd=tmp_path / "cwd",
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 240
        while not _checkpoints(out) and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        os.killpg(first.pid, signal.SIGKILL)  # mid-epoch: 20 batches, the first checkpoint after batch 1
    finally:
        first.kill()
        first.wait()
    assert first.returncode == -signal.SIGKILL
    assert not (out / "train_log.txt").exists() or "epoch: 1" not in (out / "train_log.txt").read_text()

    complete = [c for c in _checkpoints(out) if (c / "CKPT.yaml").is_file()]  # not one being deleted
    assert complete, "no checkpoint before the kill"
    metas = {c: yaml.safe_load((c / "CKPT.yaml").read_text()) for c in complete}
    latest = max(complete, key=lambda c: metas[c]["unixtime"])
    assert metas[latest]["end-of-epoch"] is False  # an intra-epoch checkpoint
    step = int((latest / "dataloader-TRAIN.ckpt").read_text())
    assert 1 <= step < 20
    assert yaml.safe_load((latest / "brain.ckpt").read_text())["step"] == step
    # the training clock is carried across resumes: pretend the killed call had trained for 1000 s
    brain = yaml.safe_load((latest / "brain.ckpt").read_text())
    assert brain["train_seconds"] > 0
    (latest / "brain.ckpt").write_text(yaml.safe_dump({**brain, "train_seconds": 1000.0}))

    # a save killed half-way: the newest folder, holding only its CKPT.yaml
    torn = out / "save" / "tmp-CKPT+2099-01-01+00-00-00+00"
    torn.mkdir()
    (torn / "CKPT.yaml").write_text(
        yaml.safe_dump({"end-of-epoch": False, "unixtime": 4.1e9, "INTRA_EPOCH_CKPT_FLAG": True})
    )

    second = _ok(_train(tmp_path / "cwd", *args))
    log = second.stdout
    assert re.search(rf"WARNING.*removing {re.escape(str(torn))}: an incomplete checkpoint", log), log
    assert not torn.exists()
    assert f"Loading a checkpoint from {latest}" in log
    assert f"epoch 1: resuming after batch {step} " in log
    assert f"epoch 1: {20 - step} batches trained after resuming at batch {step}" in log
    assert (out / "train_log.txt").read_text().count("epoch: 1,") == 1
    _check_run_folder(out, n_test=len(_test_ids(tmp_path / "prepared")))
    (final,) = _checkpoints(out)
    assert 1000.0 < yaml.safe_load((final / "brain.ckpt").read_text())["train_seconds"] < 1000.0 + 240


def test_a_save_that_fails_half_way_leaves_no_checkpoint(tmp_path, monkeypatch, caplog):
    from dereverb.brain import AtomicCheckpointer

    model = torch.nn.Linear(2, 2)
    other = torch.nn.Linear(2, 2)
    checkpointer = AtomicCheckpointer(tmp_path / "save", recoverables={"a": model, "b": other})
    good = checkpointer.save_checkpoint(meta={"n": 1})
    assert good.path.name.startswith("CKPT+")

    def dies(obj, path):
        assert (Path(path).parent / "CKPT.yaml").is_file()
        raise KeyboardInterrupt  # as a kill would, after CKPT.yaml and a.ckpt are written

    monkeypatch.setitem(checkpointer.custom_save_hooks, "b", dies)
    with torch.no_grad():
        model.weight.fill_(7.0)
    with pytest.raises(KeyboardInterrupt):
        checkpointer.save_checkpoint(meta={"n": 2})
    (torn,) = (tmp_path / "save").glob("tmp-CKPT+*")
    assert (torn / "CKPT.yaml").is_file()
    assert [c.path for c in checkpointer.list_checkpoints()] == [good.path]

    caplog.set_level("WARNING", logger="dereverb.brain")
    fresh = torch.nn.Linear(2, 2)
    restarted = AtomicCheckpointer(tmp_path / "save", recoverables={"a": fresh, "b": torch.nn.Linear(2, 2)})
    assert "an incomplete checkpoint left by an interrupted save" in caplog.text
    assert not torn.exists()
    assert restarted.recover_if_possible().meta["n"] == 1
    torch.testing.assert_close(fresh.weight, torch.load(good.path / "a.ckpt")["weight"])
    assert not torch.equal(fresh.weight, torch.full((2, 2), 7.0))


# --------------------------------------------------------------------------------------------
# 5. two DDP processes (gloo, CPU) share one output folder


@pytest.mark.slow
def test_ddp_two_processes_share_one_output_folder(pairs, tmp_path):
    out = tmp_path / "out"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", TRAIN, CONFIG]
    proc = _ok(_run_group([*command, *_smoke_args(pairs, tmp_path, out)], tmp_path / "cwd", timeout=300))
    assert proc.stdout.count("Going into epoch 1") == 1  # SpeechBrain logs on the main process only
    assert "best model (pesq = " in proc.stdout
    _check_run_folder(out, n_test=len(_test_ids(tmp_path / "prepared")))  # exactly one checkpoint
    assert {p.name for p in tmp_path.iterdir()} == {"cwd", "out", "prepared"}
    assert not list((tmp_path / "cwd").iterdir())
    assert len(list((tmp_path / "prepared").glob("8k-*"))) == 1
    assert (out / "train_log.txt").read_text().count("epoch: 1,") == 1


# --------------------------------------------------------------------------------------------
# 6. non-finite losses


def test_nonfinite_losses_are_skipped_then_stop_training(pairs, tmp_path, monkeypatch, one_thread):
    from dereverb.brain import DereverbBrain
    from dereverb.train import TrainingError, main

    seen = {"train_calls": 0}
    original = DereverbBrain.compute_forward

    def poisoned(self, batch, stage):
        if stage.name != "TRAIN":
            return original(self, batch, stage)
        seen["train_calls"] += 1
        model = self.modules.model
        if "initial" not in seen:
            seen["model"], seen["initial"] = model, {k: v.clone() for k, v in model.state_dict().items()}
        batch = batch.to(self.device)
        reverb, _ = batch.reverberant
        if seen["train_calls"] % 2 == 1:  # batches 1, 3, 5, ...: NaN input
            reverb = torch.full_like(reverb, float("nan"))
        return model(reverb)

    monkeypatch.setattr(DereverbBrain, "compute_forward", poisoned)
    cwd = os.getcwd()
    cfg = compose(
        "dtcn",
        _smoke_args(pairs, tmp_path, tmp_path / "out", "run.limit_train_batches=8", "run.nonfinite_patience=2"),
    )
    with pytest.raises(TrainingError, match=r"run\.nonfinite_patience=2 ") as info:
        main(cfg)
    assert "\n" not in str(info.value)
    assert seen["train_calls"] == 5  # the third NaN batch exceeds the patience of 2; no batch after it
    assert os.getcwd() == cwd
    state = seen["model"].state_dict()
    assert all(torch.isfinite(v).all() for v in state.values())
    assert any(not torch.equal(v, seen["initial"][k]) for k, v in state.items())  # the clean batches trained
    assert not (tmp_path / "out" / "model").exists()


def test_nonfinite_loss_through_train_py_exits_with_one_line(pairs, tmp_path):
    code = "\n".join(
        [
            "import runpy, sys",
            "from dereverb.brain import DereverbBrain",
            "original = DereverbBrain.compute_objectives",
            "def nan_loss(self, predictions, batch, stage):",
            "    return original(self, predictions, batch, stage) * float('nan')",
            "DereverbBrain.compute_objectives = nan_loss",
            f"sys.argv = {[TRAIN, CONFIG, *_smoke_args(pairs, tmp_path, tmp_path / 'out')]!r}",
            f"runpy.run_path({TRAIN!r}, run_name='__main__')",
        ]
    )
    (tmp_path / "cwd").mkdir()
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path / "cwd", env=_env(), capture_output=True, text=True, timeout=300
    )
    line = _one_line_error(proc)
    assert "training stopped: the loss was not finite" in line
    assert "run.nonfinite_patience=3" in line


# --------------------------------------------------------------------------------------------
# 7. invalid configurations are refused before any training


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["optim.lr=-1"], "optim.lr: -1 is not valid"),
        (["sample_rate=22050"], "sample_rate: 22050 is not valid"),
        (["data=folder", "data.root=/nonexistent"], "data.root=/nonexistent: no such folder"),
        (["data=folder"], "data.root is required"),
        (["run.precision=fp8"], "run.precision: 'fp8' is not valid"),
        (["model.L=15"], "model: L (encoder window) must be even"),  # the model's own check, before the data
        (["model.max_offset=inf"], "model: max_offset must be a finite number"),
        (["model.R=1000000000"], "model: X * R (blocks) must be at most 1024"),
    ],
)
def test_invalid_values_exit_with_one_line(overrides, expected, tmp_path):
    out = tmp_path / "out"
    line = _one_line_error(
        _train(tmp_path / "cwd", *overrides, f"data.save_folder={tmp_path / 'p'}", f"output_dir={out}")
    )
    assert expected in line
    assert not out.exists()  # not even Hydra's job log
    assert not (out / "save").exists()
    assert not (out / "config.yaml").exists()
    assert not (tmp_path / "p").exists()
    assert not list((tmp_path / "cwd").iterdir())


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["optim.lrr=1"], "optim.lrr"),
        (["model=nope"], "model/nope"),
        (["+foo"], "+foo"),
    ],
)
def test_hydra_errors_exit_without_a_traceback(overrides, expected, tmp_path):
    out = tmp_path / "out"
    proc = _train(tmp_path / "cwd", *overrides, f"output_dir={out}")
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert expected in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not out.exists()


def test_train_py_needs_a_config_file(tmp_path):
    proc = subprocess.run(
        [sys.executable, TRAIN, str(tmp_path / "missing.yaml")],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
    )
    assert _one_line_error(proc).endswith("missing.yaml not found")
    proc = subprocess.run([sys.executable, TRAIN, "seed=1"], cwd=tmp_path, env=_env(), capture_output=True, text=True)
    assert proc.returncode != 0
    assert proc.stderr.startswith("usage: python train.py CONFIG.yaml")


# --------------------------------------------------------------------------------------------
# 8. Hydra's flags


def test_cfg_job_prints_the_composed_config(tmp_path):
    out = tmp_path / "out"
    proc = _ok(_train(tmp_path / "cwd", "--cfg", "job", "model=tcn_small", "seed=7", f"output_dir={out}"))
    cfg = yaml.safe_load(proc.stdout)
    assert cfg["model"]["_target_"] == "dereverb.models.TCN"
    assert cfg["model"]["H"] == 256
    assert cfg["seed"] == 7
    assert cfg["optim"]["lr"] == 1e-3
    assert "hydra" not in cfg
    assert not out.exists()


@pytest.mark.slow
def test_multirun_gives_one_folder_per_job(pairs, tmp_path):
    sweep = tmp_path / "multirun"
    args = _smoke_args(pairs, tmp_path, tmp_path / "unused", "run.limit_train_batches=1", "run.test=false")
    proc = _ok(_run_group(_command("-m", "seed=1,2", f"hydra.sweep.dir={sweep}", *args), tmp_path / "cwd", 300))
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir())
    # one folder per job, named by its overrides without the paths
    expected = "data=folder,debug=smoke,run.limit_train_batches=1,run.test=False,seed="
    assert [p.name for p in jobs] == [expected + "1", expected + "2"], proc.stdout[-3000:]
    for job in jobs:
        assert len(_checkpoints(job)) == 1
        assert from_pretrained(job / "model").get_config()["H"] == SMOKE_CHANNELS["H"]
        assert yaml.safe_load((job / "config.yaml").read_text())["seed"] == int(job.name[-1])
    assert not (tmp_path / "unused").exists()
    assert not list((tmp_path / "cwd").iterdir())


def test_max_minutes_decision_is_shared_by_all_ddp_processes(monkeypatch, tmp_path):
    """Under DDP a process whose own budget is not yet spent stops with the others (no rank waits
    alone in an all-reduce): the decision is the maximum over the processes."""
    from dereverb.brain import DereverbBrain

    brain = DereverbBrain(
        modules={"model": torch.nn.Linear(2, 2)},
        hparams={"max_minutes": 60.0},
        run_opts={"device": "cpu", "noprogressbar": True},
    )
    brain.on_fit_start()
    assert brain._optimizer_step_limit_exceeded is False  # alone, one hour left
    calls = []

    def other_rank_is_out_of_time(flag, op):
        calls.append(float(flag))
        flag.fill_(1.0)

    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "all_reduce", other_rank_is_out_of_time)
    assert brain._optimizer_step_limit_exceeded is True
    assert calls == [0.0]  # this process voted "go on"
    assert brain._optimizer_step_limit_exceeded is True  # and stays stopped, without asking again
    assert calls == [0.0]


# --------------------------------------------------------------------------------------------
# 9. faults: a folder in use, a tampered checkpoint, a full disk, Ctrl-C, refused runs leave nothing


def _wrapped_train(code: list[str], args: list[str]) -> list[str]:
    """``python -c`` that runs ``code`` (e.g. a patch of the Brain), then ``train.py conf/dtcn.yaml ARGS``."""
    lines = [
        "import runpy, sys",
        *code,
        f"sys.argv = {[TRAIN, CONFIG, *args]!r}",
        f"runpy.run_path({TRAIN!r}, run_name='__main__')",
    ]
    return [sys.executable, "-c", "\n".join(lines)]


def _lock_holder(out: Path) -> int | None:
    try:
        return json.loads((out / ".lock").read_text())["pid"]
    except (OSError, ValueError, KeyError):
        return None


def test_a_second_training_on_the_same_folder_is_refused_while_the_first_runs(pairs, tmp_path):
    out, ready, go = tmp_path / "out", tmp_path / "ready", tmp_path / "go"
    args = _smoke_args(pairs, tmp_path, out)
    # the first training holds the folder, then waits for the test before its first batch
    hold = [
        "import os, time",
        "from dereverb.brain import DereverbBrain",
        "start = DereverbBrain.on_fit_start",
        "def waiting(self):",
        "    start(self)",
        f"    open({str(ready)!r}, 'w').close()",
        "    deadline = time.monotonic() + 240",
        f"    while not os.path.exists({str(go)!r}) and time.monotonic() < deadline:",
        "        time.sleep(0.05)",
        "DereverbBrain.on_fit_start = waiting",
    ]
    (tmp_path / "cwd").mkdir()
    first = subprocess.Popen(
        _wrapped_train(hold, args), cwd=tmp_path / "cwd", env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 240
        while not ready.exists() and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _lock_holder(out) == first.pid, "the first training did not lock its folder"
        before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}

        line = _one_line_error(_train(tmp_path / "cwd", *args))
        assert line.startswith(f"train.py: error: {out} is in use by another training (pid {first.pid} on host "), line
        assert line.endswith("; wait for it or choose another name or seed")
        assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == before  # nothing touched
        go.touch()
        stdout, stderr = first.communicate(timeout=240)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
            first.wait()
    _ok(subprocess.CompletedProcess(first.args, first.returncode, stdout, stderr))
    _check_run_folder(out, n_test=len(_test_ids(tmp_path / "prepared")))
    assert (out / "train_log.txt").read_text().count("epoch: 1,") == 1  # one training wrote it


def test_run_lock_names_its_holder_and_a_stale_lock_file_does_not_block(tmp_path):
    from dereverb.train import RunLock, TrainingError

    folder = tmp_path / "results" / "x" / "1"
    (folder).mkdir(parents=True)
    # left by a training that died (the kernel released its lock): taken over
    (folder / ".lock").write_text(json.dumps({"pid": 2**22 + 12345, "host": "gone", "started": "long ago"}))
    held = RunLock(folder)
    held.acquire()
    assert json.loads((folder / ".lock").read_text())["pid"] == os.getpid()
    # another process is refused, with the holder's process id and host
    code = (
        "import sys; from dereverb.train import RunLock, TrainingError\n"
        f"try:\n    RunLock({str(folder)!r}).acquire()\nexcept TrainingError as err:\n    sys.exit(str(err))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], env=_env(), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.startswith(f"{folder} is in use by another training (pid {os.getpid()} on host "), proc.stderr
    with pytest.raises(TrainingError, match=rf"\(pid {os.getpid()} on host .*, started "):
        RunLock(folder).acquire()  # a second lock in this process is refused too
    held.release()
    proc = subprocess.run([sys.executable, "-c", code], env=_env(), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    again = RunLock(folder)
    again.acquire()
    again.release()


class _Payload:
    """Unpickling this creates a file: a checkpoint must never be loaded with pickle's full powers."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("name", ["model", "optimizer", "lr_scheduler"])
def test_a_tampered_checkpoint_file_is_refused_before_it_runs(name, tmp_path, monkeypatch):
    from speechbrain.nnet.schedulers import ReduceLROnPlateau
    from speechbrain.utils.epoch_loop import EpochCounter

    from dereverb.brain import AtomicCheckpointer, CheckpointError

    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")  # torch.load without weights_only would unpickle
    model = torch.nn.Linear(2, 2)

    def recoverables():
        return {
            "model": model,
            "optimizer": torch.optim.Adam(model.parameters()),
            "lr_scheduler": ReduceLROnPlateau(),
            "counter": EpochCounter(3),
        }

    ckpt = AtomicCheckpointer(tmp_path / "save", recoverables=recoverables()).save_checkpoint(meta={"n": 1})
    assert AtomicCheckpointer(tmp_path / "save", recoverables=recoverables()).recover_if_possible() is not None
    marker = tmp_path / "pwned"
    torch.save({"state": _Payload(marker), "param_groups": []}, ckpt.path / f"{name}.ckpt")
    with pytest.raises(CheckpointError) as info:
        AtomicCheckpointer(tmp_path / "save", recoverables=recoverables()).recover_if_possible()
    assert not marker.exists()
    message = str(info.value)
    assert message == (
        f"{ckpt.path / f'{name}.ckpt'}: not a plain weights file (it would run io.open when loaded); "
        "delete that checkpoint folder or choose another run folder"
    )
    assert "weights_only=False" not in message


def test_a_checkpoint_file_that_does_not_fit_is_refused_with_one_line(tmp_path):
    from dereverb.brain import AtomicCheckpointer, CheckpointError

    ckpt = AtomicCheckpointer(tmp_path / "save", recoverables={"model": torch.nn.Linear(2, 2)}).save_checkpoint()
    torch.save({"weight": torch.zeros(3, 3)}, ckpt.path / "model.ckpt")  # plain weights, of another model
    with pytest.raises(CheckpointError, match=r"model\.ckpt: does not fit this run's Linear \(") as info:
        AtomicCheckpointer(tmp_path / "save", recoverables={"model": torch.nn.Linear(2, 2)}).recover_if_possible()
    assert "\n" not in str(info.value)
    assert str(info.value).endswith("; delete that checkpoint folder or choose another run folder")


def _copy_of_smoke_run(smoke_run, tmp_path: Path) -> tuple[Path, Path, Path]:
    """A copy of the finished smoke run to tamper with: ``(its tmp folder, the copy, its checkpoint)``."""
    import shutil

    tmp, done, proc = smoke_run
    _ok(proc)
    out = tmp_path / "out"
    shutil.copytree(done, out)
    (ckpt,) = _checkpoints(out)
    return tmp, out, ckpt


def test_resuming_from_a_tampered_checkpoint_exits_with_one_line(smoke_run, pairs, tmp_path):
    tmp, out, ckpt = _copy_of_smoke_run(smoke_run, tmp_path)
    marker = tmp_path / "pwned"
    torch.save({"state": _Payload(marker), "param_groups": []}, ckpt / "optimizer.ckpt")
    env = {**_env(), "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"}
    resumed = subprocess.run(_command(*_smoke_args(pairs, tmp, out, "run.epochs=2")), cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=300)  # fmt: skip
    assert not marker.exists(), "the checkpoint's payload ran"
    line = _one_line_error(resumed)
    assert line == (
        f"train.py: error: {ckpt / 'optimizer.ckpt'}: not a plain weights file (it would run io.open when loaded); "
        "delete that checkpoint folder or choose another run folder"
    )
    assert _checkpoints(out) == [ckpt]


def test_a_checkpoint_save_that_fails_keeps_the_earlier_ones(tmp_path, monkeypatch):
    import errno

    from dereverb.brain import AtomicCheckpointer, CheckpointError

    model = torch.nn.Linear(2, 2)
    checkpointer = AtomicCheckpointer(tmp_path / "save", recoverables={"model": model})
    good = checkpointer.save_checkpoint(meta={"n": 1})
    saved = (good.path / "model.ckpt").read_bytes()

    def full(obj, path):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setitem(checkpointer.custom_save_hooks, "model", full)
    with pytest.raises(CheckpointError) as info:
        checkpointer.save_and_keep_only(meta={"n": 2})
    assert str(info.value).startswith(
        f"{tmp_path / 'save'}: could not write a checkpoint: the disk is full or a file size limit was reached: "
        "No space left on device; the earlier checkpoints are intact"
    )
    assert sorted(p.name for p in (tmp_path / "save").iterdir()) == [good.path.name]  # no torn folder left
    assert (good.path / "model.ckpt").read_bytes() == saved


def test_a_full_disk_during_training_exits_with_one_line_and_keeps_the_checkpoints(smoke_run, pairs, tmp_path):
    import resource

    tmp, out, ckpt = _copy_of_smoke_run(smoke_run, tmp_path)
    files = {p.name: p.read_bytes() for p in ckpt.iterdir()}
    assert len(files["model.ckpt"]) > 20_000

    def small_files():  # every write past 20 kB fails with EFBIG, as on a full disk
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))

    (tmp_path / "cwd").mkdir()
    command = _command(*_smoke_args(pairs, tmp, out, "run.epochs=2"))
    resumed = subprocess.run(
        command, cwd=tmp_path / "cwd", env=_env(), capture_output=True, text=True, timeout=300, preexec_fn=small_files
    )
    line = _one_line_error(resumed)
    assert line.startswith(f"train.py: error: {out / 'save'}: could not write a checkpoint: "), line
    assert "is the disk full?" in line
    assert line.endswith("the earlier checkpoints are intact: free some space and run the same command to resume")
    assert _checkpoints(out) == [ckpt]
    assert {p.name: p.read_bytes() for p in ckpt.iterdir()} == files
    assert not list((out / "save").glob("tmp-*"))


def test_ctrl_c_prints_one_line_and_the_same_command_resumes(tmp_path):
    data = _pairs(tmp_path / "pairs", 25, seconds=0.25)  # 20 training pairs: 20 batches of 1
    out = tmp_path / "out"
    args = _smoke_args(
        data, tmp_path, out, "run.batch_size=1", "run.limit_train_batches=20", "run.ckpt_interval_steps=1"
    )
    (tmp_path / "cwd").mkdir()
    first = subprocess.Popen(
        _command(*args), cwd=tmp_path / "cwd", env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 240
        while not _checkpoints(out) and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        os.killpg(first.pid, signal.SIGINT)  # Ctrl-C: the whole foreground process group
        _, stderr = first.communicate(timeout=120)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
            first.wait()
    assert first.returncode == 130, stderr
    assert stderr.strip().splitlines()[-1:] == ["train.py: interrupted; run the same command to resume"], stderr
    assert "Traceback" not in stderr
    assert not (out / "model").exists()

    second = _ok(_train(tmp_path / "cwd", *args))
    assert "Loading a checkpoint from " in second.stdout
    assert re.search(r"epoch 1: resuming after batch \d+ ", second.stdout), second.stdout[-3000:]
    _check_run_folder(out, n_test=len(_test_ids(tmp_path / "prepared")))


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("+run.foo=1", "train.py: error: run.foo: unknown key (the recipe does not read it; run takes "),
        ("+optim.betas=[0.8,0.9]", "train.py: error: optim.betas: unknown key "),
        ("+model.dropout=0.1", "train.py: error: model.dropout: unknown key "),
        ("+loss.stft_weight=2", "train.py: error: loss.stft_weight: unknown key "),
    ],
)
def test_unknown_keys_appended_with_a_plus_are_refused(override, expected, tmp_path):
    out = tmp_path / "out"
    line = _one_line_error(
        _train(tmp_path / "cwd", override, f"data.save_folder={tmp_path / 'p'}", f"output_dir={out}")
    )
    assert line.startswith(expected), line
    assert not out.exists()


def test_a_refused_run_leaves_no_new_file_in_an_existing_run_folder(smoke_run, pairs):
    tmp, out, proc = smoke_run
    _ok(proc)
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    line = _one_line_error(_train(tmp / "cwd", *_smoke_args(pairs, tmp, out, "optim.lr=-1")))
    assert "optim.lr: -1 is not valid" in line
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before  # no train.log, nothing appended
