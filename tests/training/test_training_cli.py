"""``python train.py CONFIG.yaml ...`` (dereverb.cli.train): one-line errors, Hydra's flags, sweeps, Ctrl-C,
refused runs that leave nothing behind."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import pytest
import yaml
from recipe_runs import (
    CONFIG,
    SMOKE_CHANNELS,
    TRAIN,
    check_run_folder,
    checkpoints,
    make_pairs,
    manifest_ids,
    ok,
    one_line_error,
    run_env,
    run_group,
    run_train,
    smoke_args,
    train_command,
)

from dereverb.pretrained import from_pretrained


def test_nonfinite_loss_through_train_py_exits_with_one_line(pairs, tmp_path):
    code = "\n".join(
        [
            "import runpy, sys",
            "from dereverb.training.brain import DereverbBrain",
            "original = DereverbBrain.compute_objectives",
            "def nan_loss(self, predictions, batch, stage):",
            "    return original(self, predictions, batch, stage) * float('nan')",
            "DereverbBrain.compute_objectives = nan_loss",
            f"sys.argv = {[TRAIN, CONFIG, *smoke_args(pairs, tmp_path, tmp_path / 'out')]!r}",
            f"runpy.run_path({TRAIN!r}, run_name='__main__')",
        ]
    )
    (tmp_path / "cwd").mkdir()
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path / "cwd", env=run_env(), capture_output=True, text=True, timeout=300
    )
    line = one_line_error(proc)
    assert "training stopped: the loss was not finite" in line
    assert "run.nonfinite_patience=3" in line


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
    line = one_line_error(
        run_train(tmp_path / "cwd", *overrides, f"data.save_folder={tmp_path / 'p'}", f"output_dir={out}")
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
    proc = run_train(tmp_path / "cwd", *overrides, f"output_dir={out}")
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert expected in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not out.exists()


def test_train_py_needs_a_config_file(tmp_path):
    proc = subprocess.run(
        [sys.executable, TRAIN, str(tmp_path / "missing.yaml")],
        cwd=tmp_path,
        env=run_env(),
        capture_output=True,
        text=True,
    )
    assert one_line_error(proc).endswith("missing.yaml not found")
    proc = subprocess.run(
        [sys.executable, TRAIN, "seed=1"], cwd=tmp_path, env=run_env(), capture_output=True, text=True
    )
    assert proc.returncode != 0
    assert proc.stderr.startswith("usage: python train.py CONFIG.yaml")


def test_cfg_job_prints_the_composed_config(tmp_path):
    out = tmp_path / "out"
    proc = ok(run_train(tmp_path / "cwd", "--cfg", "job", "model=tcn_small", "seed=7", f"output_dir={out}"))
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
    args = smoke_args(pairs, tmp_path, tmp_path / "unused", "run.limit_train_batches=1", "run.test=false")
    proc = ok(run_group(train_command("-m", "seed=1,2", f"hydra.sweep.dir={sweep}", *args), tmp_path / "cwd", 300))
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir())
    # one folder per job, named by its overrides without the paths
    expected = "data=folder,debug=smoke,run.limit_train_batches=1,run.test=False,seed="
    assert [p.name for p in jobs] == [expected + "1", expected + "2"], proc.stdout[-3000:]
    for job in jobs:
        assert len(checkpoints(job)) == 1
        assert from_pretrained(job / "model").get_config()["H"] == SMOKE_CHANNELS["H"]
        assert yaml.safe_load((job / "config.yaml").read_text())["seed"] == int(job.name[-1])
    assert not (tmp_path / "unused").exists()
    assert not list((tmp_path / "cwd").iterdir())


def test_ctrl_c_prints_one_line_and_the_same_command_resumes(tmp_path):
    data = make_pairs(tmp_path / "pairs", 25, seconds=0.25)  # 20 training pairs: 20 batches of 1
    out = tmp_path / "out"
    args = smoke_args(
        data, tmp_path, out, "run.batch_size=1", "run.limit_train_batches=20", "run.ckpt_interval_steps=1"
    )
    (tmp_path / "cwd").mkdir()
    first = subprocess.Popen(
        train_command(*args), cwd=tmp_path / "cwd", env=run_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 240
        while not checkpoints(out) and first.poll() is None and time.monotonic() < deadline:
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

    second = ok(run_train(tmp_path / "cwd", *args))
    assert "Loading a checkpoint from " in second.stdout
    assert re.search(r"epoch 1: resuming after batch \d+ ", second.stdout), second.stdout[-3000:]
    check_run_folder(out, n_test=len(manifest_ids(tmp_path / "prepared")))


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
    line = one_line_error(
        run_train(tmp_path / "cwd", override, f"data.save_folder={tmp_path / 'p'}", f"output_dir={out}")
    )
    assert line.startswith(expected), line
    assert not out.exists()


def test_a_refused_run_leaves_no_new_file_in_an_existing_run_folder(smoke_run, pairs):
    tmp, out, proc = smoke_run
    ok(proc)
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    line = one_line_error(run_train(tmp / "cwd", *smoke_args(pairs, tmp, out, "optim.lr=-1")))
    assert "optim.lr: -1 is not valid" in line
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before  # no train.log, nothing appended
