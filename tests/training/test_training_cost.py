"""The cost estimate: timed on the first steps (the first left out), one line whose numbers agree with each
other, logged once per call of ``fit`` by the main process only."""

from __future__ import annotations

import logging
import re

import pytest
import speechbrain as sb
import torch
from recipe_runs import ok
from speechbrain.utils.epoch_loop import EpochCounter

from dereverb.training.cost import RunCost, StepClock, duration

UNITS = {"s": 1, "min": 60, "h": 3600, "d": 86400}
LINE = re.compile(
    r"cost estimate: (?P<steps>\d+) steps/epoch, (?P<step>[\d.]+) s/step \((?P<measured>[^)]+)\) -> "
    r"(?P<epoch>[\d.]+) (?P<epoch_unit>s|min|h|d)/epoch, (?P<total>[\d.]+) (?P<total_unit>s|min|h|d) "
    r"for (?P<epochs>\d+) epochs"
)


def _parse(line: str) -> dict:
    """The numbers of a cost line, durations in seconds."""
    found = LINE.search(line)
    assert found, line
    g = found.groupdict()
    return {
        "steps": int(g["steps"]),
        "step": float(g["step"]),
        "measured": g["measured"],
        "epoch": float(g["epoch"]) * UNITS[g["epoch_unit"]],
        "total": float(g["total"]) * UNITS[g["total_unit"]],
        "epochs": int(g["epochs"]),
    }


def _consistent(cost: dict) -> None:
    """Three significant digits each: the products agree within their rounding."""
    assert cost["epoch"] == pytest.approx(cost["steps"] * cost["step"], rel=0.01)
    assert cost["total"] == pytest.approx(cost["epoch"] * cost["epochs"], rel=0.01)


def test_the_smoke_run_logs_a_consistent_cost_estimate(smoke_run):
    _, _, proc = smoke_run
    ok(proc)
    lines = [line for line in proc.stdout.splitlines() if "cost estimate:" in line]
    assert len(lines) == 1, lines
    assert "[INFO]" in lines[0]
    cost = _parse(lines[0])
    assert cost["steps"] == 4  # debug=smoke: run.limit_train_batches=4
    assert cost["epochs"] == 1
    assert cost["measured"] == "median of steps 2-4"
    assert 0 < cost["step"] < 60
    _consistent(cost)
    # logged once measured: after the fourth step, before the epoch's validation
    assert proc.stdout.index("cost estimate:") < proc.stdout.index("saved an end-of-epoch checkpoint")


def test_step_clock_leaves_out_the_first_step_and_takes_the_median():
    clock = StepClock(steps=133, start=0.0)
    ends = [100.0, 101.0, 104.0, 105.5, 200.0]  # step 1 warms up (100 s); steps 2-4 take 1, 3 and 1.5 s
    assert [clock.tick(t) for t in ends] == [None, None, None, 1.5, None]
    assert clock.measured == "median of steps 2-4"


@pytest.mark.parametrize(
    ("steps", "measured", "result"), [(3, "median of steps 2-3", 2.0), (2, "step 2", 3.0), (1, "step 1", 1.0)]
)
def test_step_clock_fits_a_short_epoch(steps, measured, result):
    clock = StepClock(steps=steps, start=0.0)
    ends = [1.0, 4.0, 5.0][:steps]  # steps of 1, 3 and 1 s
    ticks = [clock.tick(t) for t in ends]
    assert clock.measured == measured
    assert ticks[-1] == pytest.approx(result)
    assert all(t is None for t in ticks[:-1])


def test_run_cost_line_agrees_with_itself_and_names_the_budgets():
    cost = RunCost(133, 6.1, 100, "median of steps 2-4", max_minutes=145, max_steps=2000)
    line = cost.line()
    _consistent(_parse(line))
    assert line.startswith("cost estimate: 133 steps/epoch, 6.1 s/step (median of steps 2-4) -> 13.5 min/epoch, ")
    assert "22.5 h for 100 epochs" in line
    assert "run.max_minutes=145 stops it after ~10.7 epochs" in line  # 145 min / 13.52 min
    assert "run.max_steps=2000 stops it after ~15 epochs" in line  # 2000 / 133
    generous = RunCost(133, 6.1, 2, "median of steps 2-4", max_minutes=600, max_steps=10**6).line()
    assert generous.endswith("(within run.max_minutes=600; within run.max_steps=1000000)")
    assert "(" not in RunCost(4, 0.05, 1, "step 1").line().split("-> ")[1]  # no budget: nothing to say


def test_run_cost_of_a_resumed_run_says_what_is_left():
    cost = RunCost(100, 2.0, 10, "median of steps 2-4", epochs_left=3.5, max_minutes=10, max_steps=1000, steps_done=900)
    line = cost.line()
    assert "33.3 min for 10 epochs, 11.7 min for the 3.5 left" in line
    assert "run.max_minutes=10 stops it after ~3 epochs" in line  # 10 min / 200 s per epoch
    assert "run.max_steps=1000 stops it after ~1 epochs" in line  # 100 steps left


def test_duration_picks_a_readable_unit():
    assert [duration(s) for s in (0.25, 89, 90, 5399, 5400, 259_199, 259_200)] == [
        "0.25 s",
        "89 s",
        "1.5 min",
        "90 min",
        "1.5 h",
        "72 h",
        "3 d",
    ]


def _brain(hparams: dict):
    from dereverb.training.brain import DereverbBrain

    brain = DereverbBrain(
        modules={"model": torch.nn.Linear(2, 2)},
        hparams={"epoch_counter": EpochCounter(5), **hparams},
        run_opts={"device": "cpu", "noprogressbar": True},
    )
    brain._steps_per_epoch = 10  # as make_dataloader records it
    return brain


def _fit_steps(brain, monkeypatch, n: int, epoch: int = 1) -> None:
    """Start a training stage and run ``n`` steps of nothing (SpeechBrain's own step replaced)."""
    monkeypatch.setattr(sb.Brain, "fit_batch", lambda self, batch: torch.tensor(0.0))
    brain.on_fit_start()
    brain.on_stage_start(sb.Stage.TRAIN, epoch)
    for _ in range(n):
        brain.fit_batch(None)


def test_the_brain_logs_the_estimate_once_after_the_fourth_step(monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="dereverb.training.brain")
    brain = _brain({"max_minutes": 60.0})
    _fit_steps(brain, monkeypatch, 3)
    assert "cost estimate" not in caplog.text
    brain.fit_batch(None)
    (line,) = [r.getMessage() for r in caplog.records if "cost estimate" in r.getMessage()]
    assert line.startswith("cost estimate: 10 steps/epoch, ")
    assert "(median of steps 2-4)" in line
    assert "for 5 epochs (within run.max_minutes=60)" in line
    for _ in range(6):
        brain.fit_batch(None)
    brain.on_stage_start(sb.Stage.TRAIN, 2)  # the next epoch of the same call: not again
    for _ in range(4):
        brain.fit_batch(None)
    assert caplog.text.count("cost estimate") == 1


def test_a_resumed_epoch_is_measured_on_its_remaining_steps(monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="dereverb.training.brain")
    brain = _brain({})
    brain.step = 8  # restored from an intra-epoch checkpoint of epoch 2: 2 steps left in it
    _fit_steps(brain, monkeypatch, 2, epoch=2)
    (line,) = [r.getMessage() for r in caplog.records if "cost estimate" in r.getMessage()]
    assert "(step 2)" in line
    assert "for 5 epochs, " in line
    assert line.endswith(" for the 3.2 left")  # 5 - (1 + 8/10)


def test_only_the_main_process_measures(monkeypatch, caplog):
    import dereverb.training.brain as brain_module

    caplog.set_level(logging.INFO, logger="dereverb.training.brain")
    monkeypatch.setattr(brain_module, "if_main_process", lambda: False)
    brain = _brain({})
    _fit_steps(brain, monkeypatch, 5)
    assert "cost estimate" not in caplog.text
