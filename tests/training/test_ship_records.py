"""The training record and model card of scripts/ship_model.py for a model trained at two sample rates."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from dereverb.errors import DataError

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "ship_model.py"


@pytest.fixture(scope="module")
def ship():
    spec = importlib.util.spec_from_file_location("ship_model", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _stage(rate: int, steps: int, si_sdr: float) -> dict:
    curve = [{"epoch": 1, "steps": steps, "pesq_nb": 2.5, "stoi": 0.9, "estoi": 0.8, "si_sdr": si_sdr}]
    validation = {"pesq_nb": 2.5, "stoi": 0.9, "estoi": 0.8, "si_sdr": si_sdr, "input_pesq_nb": 2.0,
                  "input_stoi": 0.85, "input_estoi": 0.7, "input_si_sdr": 9.0}  # fmt: skip
    return {"sample_rate": rate, "data": {"kind": "demo"}, "selected_by": "si_sdr", "optimizer_steps": steps,
            "validation": validation, "validation_curve": curve}  # fmt: skip


def test_stages_validated_at_another_rate_are_not_compared(ship):
    with pytest.raises(DataError, match="different data settings or sample rates"):
        ship.better_than(_stage(8000, 10, 12.0), _stage(16000, 10, 11.0), "the model it continued from")
    better, why = ship.better_than(_stage(8000, 10, 12.0), _stage(8000, 10, 12.5), "the model at --out")
    assert not better
    assert why == "validation si_sdr 12.0000 (this stage) against 12.5000 (the model at --out)"


def test_the_card_says_which_stages_trained_at_another_rate(ship):
    stages = [_stage(16000, 100, 11.0), _stage(16000, 50, 11.5), _stage(8000, 30, 12.25)]
    table = ship.curve_table(stages, 8000)
    assert "| stage | kHz | epoch | optimizer steps (all stages) | pesq_nb | stoi | estoi | si_sdr |" in table
    assert "| input | 8 | | | 2.00 | 0.850 | 0.700 | 9.00 |" in table
    assert "| 2 | 16 | 1 | 150 | 2.50 | 0.900 | 0.800 | 11.50 |" in table
    assert "| 3 | 8 | 1 | 180 | 2.50 | 0.900 | 0.800 | 12.25 |" in table
    text = ship._rates_text(stages, 8000)
    assert text.startswith(" Stage(s) 1, 2 trained a model at 16000 Hz on the same data set at that rate; stage 3 ")
    assert "resampled" in text


def test_a_card_of_one_rate_has_no_rate_column(ship):
    table = ship.curve_table([_stage(8000, 100, 11.0), _stage(8000, 50, 11.5)], 8000)
    assert "| stage | epoch | optimizer steps (all stages) | pesq_nb | stoi | estoi | si_sdr |" in table
    assert "| 2 | 1 | 150 | 2.50 | 0.900 | 0.800 | 11.50 |" in table
    assert ship._rates_text([_stage(8000, 100, 11.0)], 8000) == ""


def test_the_card_lists_the_ship_command_between_stages(ship):
    def stage(name: str, init_from: str | None) -> dict:
        call = f"python train.py conf/dtcn.yaml name={name}" + (f" init_from={init_from}" if init_from else "")
        return {"run": f"/elsewhere/worktree/results/{name}/1234", "init_from": init_from, "calls": [call]}

    folder = "recipes/demo/candidates/m"
    stages = [stage("a", None), stage("b", folder), stage("c", folder), stage("d", "m"), stage("e", "m")]
    assert ship.replay_commands(stages, "m-8k", "dereverb/checkpoints/m") == [
        "python train.py conf/dtcn.yaml name=a",
        f"python scripts/ship_model.py results/a/1234 --name m --out {folder} --overwrite",
        f"python train.py conf/dtcn.yaml name=b init_from={folder}",
        f"python scripts/ship_model.py results/b/1234 --name m --out {folder} --overwrite",
        f"python train.py conf/dtcn.yaml name=c init_from={folder}",
        "python scripts/ship_model.py results/c/1234 --name m --overwrite",  # init_from=m: the shipped model m
        "python train.py conf/dtcn.yaml name=d init_from=m",
        "python scripts/ship_model.py results/d/1234 --name m --overwrite",
        "python train.py conf/dtcn.yaml name=e init_from=m",
        "python scripts/ship_model.py results/e/1234 --name m-8k --out dereverb/checkpoints/m --evaluate --overwrite",
    ]
