"""The Brain and its checkpointer: atomic saves, checkpoints read as data only, full disks, the time
budget under DDP, the cost estimate of its first steps."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import torch
from recipe_runs import (
    Payload,
    checkpoints,
    copy_of_smoke_run,
    ok,
    one_line_error,
    run_env,
    run_train,
    smoke_args,
    train_command,
)


def test_a_save_that_fails_half_way_leaves_no_checkpoint(tmp_path, monkeypatch, caplog):
    from dereverb.training.brain import AtomicCheckpointer

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

    caplog.set_level("WARNING", logger="dereverb.training.brain")
    fresh = torch.nn.Linear(2, 2)
    restarted = AtomicCheckpointer(tmp_path / "save", recoverables={"a": fresh, "b": torch.nn.Linear(2, 2)})
    assert "an incomplete checkpoint left by an interrupted save" in caplog.text
    assert not torn.exists()
    assert restarted.recover_if_possible().meta["n"] == 1
    torch.testing.assert_close(fresh.weight, torch.load(good.path / "a.ckpt")["weight"])
    assert not torch.equal(fresh.weight, torch.full((2, 2), 7.0))


def test_max_minutes_decision_is_shared_by_all_ddp_processes(monkeypatch, tmp_path):
    """Under DDP a process whose own budget is not yet spent stops with the others (no rank waits
    alone in an all-reduce): the decision is the maximum over the processes."""
    from dereverb.training.brain import DereverbBrain

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


@pytest.mark.parametrize("name", ["model", "optimizer", "lr_scheduler"])
def test_a_tampered_checkpoint_file_is_refused_before_it_runs(name, tmp_path, monkeypatch):
    from speechbrain.nnet.schedulers import ReduceLROnPlateau
    from speechbrain.utils.epoch_loop import EpochCounter

    from dereverb.errors import CheckpointError
    from dereverb.training.brain import AtomicCheckpointer

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
    torch.save({"state": Payload(marker), "param_groups": []}, ckpt.path / f"{name}.ckpt")
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
    from dereverb.errors import CheckpointError
    from dereverb.training.brain import AtomicCheckpointer

    ckpt = AtomicCheckpointer(tmp_path / "save", recoverables={"model": torch.nn.Linear(2, 2)}).save_checkpoint()
    torch.save({"weight": torch.zeros(3, 3)}, ckpt.path / "model.ckpt")  # plain weights, of another model
    with pytest.raises(CheckpointError, match=r"model\.ckpt: does not fit this run's Linear \(") as info:
        AtomicCheckpointer(tmp_path / "save", recoverables={"model": torch.nn.Linear(2, 2)}).recover_if_possible()
    assert "\n" not in str(info.value)
    assert str(info.value).endswith("; delete that checkpoint folder or choose another run folder")


def test_resuming_from_a_tampered_checkpoint_exits_with_one_line(smoke_run, pairs, tmp_path):
    tmp, out, ckpt = copy_of_smoke_run(smoke_run, tmp_path)
    marker = tmp_path / "pwned"
    torch.save({"state": Payload(marker), "param_groups": []}, ckpt / "optimizer.ckpt")
    env = {**run_env(), "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"}
    resumed = subprocess.run(train_command(*smoke_args(pairs, tmp, out, "run.epochs=2")), cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=300)  # fmt: skip
    assert not marker.exists(), "the checkpoint's payload ran"
    line = one_line_error(resumed)
    assert line == (
        f"train.py: error: {ckpt / 'optimizer.ckpt'}: not a plain weights file (it would run io.open when loaded); "
        "delete that checkpoint folder or choose another run folder"
    )
    assert checkpoints(out) == [ckpt]


def test_a_checkpoint_save_that_fails_keeps_the_earlier_ones(tmp_path, monkeypatch):
    import errno

    from dereverb.errors import CheckpointError
    from dereverb.training.brain import AtomicCheckpointer

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


def test_a_moving_average_is_validated_checkpointed_and_exported(pairs, tmp_path):
    """run.ema_decay: the checkpoint's model.ckpt is the average, train_model.ckpt the trained weights,
    and the export is the average; a run folder is resumed only with the kind it was trained with."""
    from dereverb.pretrained import from_pretrained
    from dereverb.weights import load_weights

    out = tmp_path / "out"
    ok(run_train(tmp_path / "cwd", *smoke_args(pairs, tmp_path, out, "run.ema_decay=0.5")))
    (ckpt,) = checkpoints(out)
    averaged, trained = load_weights(ckpt / "model.ckpt"), load_weights(ckpt / "train_model.ckpt")
    assert averaged.keys() == trained.keys()
    assert any(not torch.equal(averaged[k], trained[k]) for k in averaged)
    exported = from_pretrained(out / "model").state_dict()
    assert all(torch.equal(exported[k], averaged[k]) for k in averaged)

    again = run_train(tmp_path / "cwd", *smoke_args(pairs, tmp_path, out, "run.epochs=2"))
    assert one_line_error(again) == (
        f"train.py: error: {ckpt}: trained with a moving average of the weights (run.ema_decay); resume it "
        "with one, or start a new run from its model (init_from=)"
    )
    assert checkpoints(out) == [ckpt]


def test_a_run_without_a_moving_average_is_not_resumed_with_one(smoke_run, pairs, tmp_path):
    tmp, out, ckpt = copy_of_smoke_run(smoke_run, tmp_path)
    again = run_train(tmp_path / "cwd", *smoke_args(pairs, tmp, out, "run.epochs=2", "run.ema_decay=0.9"))
    assert one_line_error(again).endswith(
        "trained without a moving average of the weights (run.ema_decay); resume it without one, or start a "
        "new run from its model (init_from=)"
    )
    assert checkpoints(out) == [ckpt]
