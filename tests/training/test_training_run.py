"""The training recipe end to end (dereverb.training.run): artifacts, budgets, resuming after a kill,
DDP, non-finite losses, an overfitting check, and the model shipped from a run."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import yaml
from recipe_runs import (
    CONFIG,
    PACK_MANIFEST,
    REPO,
    TRAIN,
    check_run_folder,
    checkpoints,
    copy_of_smoke_run,
    epochs_logged,
    make_pairs,
    manifest_ids,
    ok,
    one_line_error,
    optimizer_steps,
    run_env,
    run_group,
    run_train,
    smoke_args,
    train_command,
    voice,
)

from dereverb.config import compose
from dereverb.data import rooms
from dereverb.losses import NegSISDR
from dereverb.models import DTCN
from dereverb.pretrained import from_pretrained


def test_smoke_run_on_paired_folders(smoke_run):
    tmp, out, proc = smoke_run
    ok(proc)
    check_run_folder(out, n_test=len(manifest_ids(tmp / "prepared")))
    (ckpt,) = checkpoints(out)
    assert f"saved an end-of-epoch checkpoint in {ckpt}\n" in proc.stdout
    assert not list((tmp / "cwd").iterdir()), "the run wrote into its working directory"
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["model"]["L"] == 16  # resolved
    assert saved["data"]["kind"] == "folder"


def test_resume_with_another_model_config_is_refused(smoke_run, pairs):
    tmp, out, proc = smoke_run
    ok(proc)
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    line = one_line_error(run_train(tmp / "cwd", *smoke_args(pairs, tmp, out, "model.H=48")))
    assert str(out) in line
    assert "(H differ)" in line
    after = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    assert after == before  # nothing of the old run touched


def test_max_steps_stops_training_then_tests_and_exports(pairs, tmp_path):
    out = tmp_path / "out"
    args = smoke_args(pairs, tmp_path, out, "run.epochs=3", "run.max_steps=3")  # 4 batches per epoch
    ok(run_train(tmp_path / "cwd", *args))
    assert epochs_logged(out) == [1]
    assert optimizer_steps(out) == 3
    check_run_folder(out, n_test=len(manifest_ids(tmp_path / "prepared")))


def test_max_minutes_cuts_the_epoch_short_then_validates_tests_and_exports(pairs, tmp_path):
    out = tmp_path / "out"
    # a budget of 60 ns is spent before the first batch has been loaded: not one step is taken,
    # yet the cut epoch is validated and checkpointed, and the test and the export follow
    args = smoke_args(pairs, tmp_path, out, "run.epochs=3", "run.max_minutes=1e-9")
    proc = ok(run_train(tmp_path / "cwd", *args))
    assert "run.max_minutes=1e-09 reached after 0 optimizer steps" in proc.stdout + proc.stderr
    assert epochs_logged(out) == [1]
    assert optimizer_steps(out) == 0
    check_run_folder(out, n_test=len(manifest_ids(tmp_path / "prepared")))


def test_ship_model_makes_a_model_folder_from_the_best_checkpoint(smoke_run, tmp_path):
    _, out, proc = smoke_run
    ok(proc)
    ship = [sys.executable, str(REPO / "scripts" / "ship_model.py"), str(out), "--name", "tiny"]
    dest = tmp_path / "tiny"
    shipped = ok(
        subprocess.run([*ship, "--out", str(dest)], env=run_env(), capture_output=True, text=True, timeout=300)
    )
    (ckpt,) = checkpoints(out)
    config = json.loads((dest / "config.json").read_text())
    assert config["training"]["total_optimizer_steps"] == 4
    (record,) = config["training"]["stages"]
    assert record["checkpoint"] == ckpt.name
    assert record["command"].startswith("python ")
    assert " conf/dtcn.yaml debug=smoke data=folder " in record["command"].replace(str(REPO) + "/", "")
    assert record["calls"] == [record["command"]]  # one call, not resumed
    assert 0 < record["train_seconds"] < 300
    assert "train_seconds_source" not in record  # the training clock of the checkpoint
    assert record["epoch"] == 1
    assert record["optimizer_steps"] == 4  # debug=smoke: 4 batches
    best_key = yaml.safe_load((ckpt / "CKPT.yaml").read_text())["best_key"]
    assert record["validation"]["best_key"] == pytest.approx(best_key, abs=1e-4)  # rounded to 4 decimals
    assert "`direct` target over 2 validation utterances" in record["output_gain_calibration"]  # smoke valid split
    assert record["selected_by"] == "pesq_nb"  # run.best_key=pesq at 8 kHz
    (curve,) = record["validation_curve"]  # the run's one validation, from its train_log.txt
    assert curve["epoch"] == 1
    assert curve["steps"] == 4
    assert curve["pesq_nb"] == pytest.approx(best_key, abs=1e-4)
    assert set(curve) == {"epoch", "steps", "pesq_nb", "stoi", "estoi", "si_sdr"}
    assert np.isfinite(config["output_gain"])
    assert config["output_gain"] != 0
    assert f"checkpoint {ckpt.name}" in shipped.stdout
    model = from_pretrained(dest)
    best = torch.load(ckpt / "model.ckpt", map_location="cpu", weights_only=True)
    for name, value in model.state_dict().items():
        torch.testing.assert_close(value, best[name])
    # an existing folder is not replaced without --overwrite, and its model card survives a replacement
    (dest / "MODEL_CARD.md").write_text("# tiny\nwritten by hand\n")
    refused = subprocess.run([*ship, "--out", str(dest)], env=run_env(), capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2
    assert refused.stderr.strip() == f"error: {dest} exists (pass --overwrite to replace it)"
    ok(subprocess.run([*ship, "--out", str(dest), "--overwrite"], env=run_env(), capture_output=True, text=True))
    assert (dest / "MODEL_CARD.md").read_text() == "# tiny\nwritten by hand\n"
    not_a_run = subprocess.run([*ship[:2], str(tmp_path), "--name", "x", "--out", str(tmp_path / "x")],
                               env=run_env(), capture_output=True, text=True, timeout=300)  # fmt: skip
    assert not_a_run.returncode == 2
    assert "no config.yaml" in not_a_run.stderr
    assert not (tmp_path / "x").exists()


def test_smoke_run_on_the_demo_data(tmp_path):
    if not PACK_MANIFEST.is_file():
        pytest.skip(f"the speech pack is not installed ({PACK_MANIFEST} does not exist)")
    out = tmp_path / "out"
    proc = ok(
        run_train(
            tmp_path / "cwd",
            "debug=smoke",
            f"data.save_folder={tmp_path / 'prepared'}",
            f"output_dir={out}",
            "run.progress=false",
            timeout=600,
        )
    )
    assert "data.kind=demo" in proc.stdout
    n_test = min(4, len(manifest_ids(tmp_path / "prepared")))  # run.limit_test_items=4
    check_run_folder(out, n_test=n_test)


def test_tiny_dtcn_overfits_one_batch(rir_bank, one_thread):
    clean = [voice(120, 0.5, seed=0), voice(210, 0.5, seed=1)]
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


def test_ship_model_refuses_an_existing_evaluation_before_writing_the_model_folder(smoke_run, tmp_path):
    _, out, proc = smoke_run
    ok(proc)
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "summary.json").write_text("{}")  # an earlier evaluation
    dest = tmp_path / "tiny"
    ship = [sys.executable, str(REPO / "scripts" / "ship_model.py"), str(out), "--name", "tiny", "--out", str(dest),
            "--evaluate", "--eval-out", str(tmp_path / "eval")]  # fmt: skip
    done = subprocess.run(ship, env=run_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'eval'} already exists (pass --overwrite to replace an earlier evaluation there)"
    ], done.stderr
    assert not dest.exists()
    assert (tmp_path / "eval" / "summary.json").read_text() == "{}"


def test_ship_model_evaluates_writes_the_card_and_chains_stages(smoke_run, pairs, tmp_path):
    """--evaluate scores the folder beside input and WPE against both references and writes the card from
    that summary; a stage trained with init_from= adds its record after the first stage's."""
    _, out, proc = smoke_run
    ok(proc)
    ship = [sys.executable, str(REPO / "scripts" / "ship_model.py")]
    data = ["--data", "data=demo_smoke", f"data.save_folder={tmp_path / 'demo'}"]
    dest = tmp_path / "stage1"
    first = ok(subprocess.run([*ship, str(out), "--name", "tiny", "--out", str(dest), "--evaluate", *data,
                               "--eval-out", str(tmp_path / "eval1")], env=run_env(), capture_output=True, text=True,
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
    (curve,) = json.loads((dest / "config.json").read_text())["training"]["stages"][0]["validation_curve"]
    assert f"| 1 | 1 | 4 | {curve['pesq_nb']:.2f} | {curve['stoi']:.3f} | {curve['estoi']:.3f} | " \
           f"{curve['si_sdr']:.2f} |" in card  # fmt: skip

    out2 = tmp_path / "run2"
    ok(run_train(tmp_path / "cwd", *smoke_args(pairs, tmp_path, out2, f"init_from={dest}")))
    dest2 = tmp_path / "stage2"
    ok(subprocess.run([*ship, str(out2), "--name", "tiny", "--out", str(dest2)], env=run_env(), capture_output=True,
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

    # --card-only: the two-stage folder's card written again from its record, every command listed in order
    before = {p.name: p.read_bytes() for p in dest2.iterdir() if p.name != "MODEL_CARD.md"}
    ok(subprocess.run([*ship, str(dest2), "--name", "tiny", "--card-only", *data, "--eval-out", str(tmp_path / "e2")],
                      env=run_env(), capture_output=True, text=True, timeout=600))  # fmt: skip
    assert {p.name: p.read_bytes() for p in dest2.iterdir() if p.name != "MODEL_CARD.md"} == before
    card2 = (dest2 / "MODEL_CARD.md").read_text()
    assert "8 optimizer steps in 2 stage(s)" in card2
    commands = card2.split("```bash\n")[1].split("```")[0].splitlines()
    assert [c.split()[1] for c in commands] == ["train.py", "scripts/ship_model.py", "train.py",
                                                "scripts/ship_model.py"]  # fmt: skip
    assert commands[1].endswith(f"--name stage1 --out {dest} --overwrite")  # the folder stage 2 started from
    assert f"init_from={dest}" in commands[2]
    assert commands[3].endswith(f"--name tiny --out {dest2} --evaluate --overwrite")
    refused = subprocess.run([*ship, str(dest2), "--name", "tiny", "--card-only", "--out", str(tmp_path / "y")],
                             env=run_env(), capture_output=True, text=True)  # fmt: skip
    assert (refused.returncode, refused.stderr.strip().count("\n")) == (2, 0)
    assert "--card-only writes the card of the model folder RUN itself" in refused.stderr

    # --if-better writes nothing unless this stage beats the one it continued from on validation
    config = json.loads((dest / "config.json").read_text())
    ship2 = [*ship, str(out2), "--name", "tiny", "--if-better"]
    for previous, better in ((1e6, False), (-1e6, True)):
        config["training"]["stages"][0]["validation"]["pesq_nb"] = previous
        (dest / "config.json").write_text(json.dumps(config))
        dest3 = tmp_path / f"stage2-{better}"
        shown = ok(subprocess.run([*ship2, "--out", str(dest3)], env=run_env(), capture_output=True, text=True,
                                  timeout=300))  # fmt: skip
        assert dest3.exists() == better
        assert ("not better; nothing written" in shown.stdout) != better
        assert f"against {previous:.4f} (the model it continued from)" in shown.stdout
    config["training"]["stages"][0]["validation"]["pesq_nb"] = 1e6  # a model already at --out: compared with it
    (dest / "config.json").write_text(json.dumps(config))
    before = {p.name: p.read_bytes() for p in dest.iterdir()}
    shown = ok(subprocess.run([*ship2, "--out", str(dest), "--overwrite"], env=run_env(), capture_output=True,
                              text=True, timeout=300))  # fmt: skip
    assert "not better; nothing written" in shown.stdout
    assert f"against {1e6:.4f} (the model at --out)" in shown.stdout
    assert {p.name: p.read_bytes() for p in dest.iterdir()} == before
    config["training"]["stages"][0]["data"]["segment_s"] = 1.0  # validated on other data: no comparison
    (dest / "config.json").write_text(json.dumps(config))
    refused = subprocess.run([*ship2, "--out", str(tmp_path / "x")], env=run_env(), capture_output=True, text=True)
    assert refused.returncode == 2
    assert "different data settings" in refused.stderr
    assert not (tmp_path / "x").exists()


def test_killed_run_resumes_from_the_last_complete_checkpoint(tmp_path):
    data = make_pairs(tmp_path / "pairs", 25, seconds=0.25)  # 20 training pairs: 20 batches of 1
    out = tmp_path / "out"
    args = smoke_args(
        data, tmp_path, out, "run.batch_size=1", "run.limit_train_batches=20", "run.ckpt_interval_steps=1"
    )
    (tmp_path / "cwd").mkdir()
    first = subprocess.Popen(
        train_command(*args),
        cwd=tmp_path / "cwd",
        env=run_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 240
        while not checkpoints(out) and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        os.killpg(first.pid, signal.SIGKILL)  # mid-epoch: 20 batches, the first checkpoint after batch 1
    finally:
        first.kill()
        first.wait()
    assert first.returncode == -signal.SIGKILL
    assert not (out / "train_log.txt").exists() or "epoch: 1" not in (out / "train_log.txt").read_text()

    complete = [c for c in checkpoints(out) if (c / "CKPT.yaml").is_file()]  # not one being deleted
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

    second = ok(run_train(tmp_path / "cwd", *args))
    log = second.stdout
    assert re.search(rf"WARNING.*removing {re.escape(str(torn))}: an incomplete checkpoint", log), log
    assert not torn.exists()
    assert f"Loading a checkpoint from {latest}" in log
    assert f"epoch 1: resuming after batch {step} " in log
    assert f"epoch 1: {20 - step} batches trained after resuming at batch {step}" in log
    assert (out / "train_log.txt").read_text().count("epoch: 1,") == 1
    check_run_folder(out, n_test=len(manifest_ids(tmp_path / "prepared")))
    (final,) = checkpoints(out)
    assert 1000.0 < yaml.safe_load((final / "brain.ckpt").read_text())["train_seconds"] < 1000.0 + 240


@pytest.mark.slow
def test_ddp_two_processes_share_one_output_folder(pairs, tmp_path):
    out = tmp_path / "out"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", TRAIN, CONFIG]
    proc = ok(run_group([*command, *smoke_args(pairs, tmp_path, out)], tmp_path / "cwd", timeout=300))
    assert proc.stdout.count("Going into epoch 1") == 1  # SpeechBrain logs on the main process only
    assert proc.stdout.count("cost estimate: 2 steps/epoch, ") == 1  # the main process's half of the 4 batches
    assert "best model (pesq = " in proc.stdout
    check_run_folder(out, n_test=len(manifest_ids(tmp_path / "prepared")))  # exactly one checkpoint
    assert {p.name for p in tmp_path.iterdir()} == {"cwd", "out", "prepared"}
    assert not list((tmp_path / "cwd").iterdir())
    assert len(list((tmp_path / "prepared").glob("8k-*"))) == 1
    assert (out / "train_log.txt").read_text().count("epoch: 1,") == 1


def test_nonfinite_losses_are_skipped_then_stop_training(pairs, tmp_path, monkeypatch, one_thread):
    from dereverb.errors import TrainingError
    from dereverb.training.brain import DereverbBrain
    from dereverb.training.run import main

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
        smoke_args(pairs, tmp_path, tmp_path / "out", "run.limit_train_batches=8", "run.nonfinite_patience=2"),
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


def test_a_full_disk_during_training_exits_with_one_line_and_keeps_the_checkpoints(smoke_run, pairs, tmp_path):
    import resource

    tmp, out, ckpt = copy_of_smoke_run(smoke_run, tmp_path)
    files = {p.name: p.read_bytes() for p in ckpt.iterdir()}
    assert len(files["model.ckpt"]) > 20_000

    def small_files():  # every write past 20 kB fails with EFBIG, as on a full disk
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))

    (tmp_path / "cwd").mkdir()
    command = train_command(*smoke_args(pairs, tmp, out, "run.epochs=2"))
    resumed = subprocess.run(
        command,
        cwd=tmp_path / "cwd",
        env=run_env(),
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=small_files,
    )
    line = one_line_error(resumed)
    assert line.startswith(f"train.py: error: {out / 'save'}: could not write a checkpoint: "), line
    assert "is the disk full?" in line
    assert line.endswith("the earlier checkpoints are intact: free some space and run the same command to resume")
    assert checkpoints(out) == [ckpt]
    assert {p.name: p.read_bytes() for p in ckpt.iterdir()} == files
    assert not list((out / "save").glob("tmp-*"))
