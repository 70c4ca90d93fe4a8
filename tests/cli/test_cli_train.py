"""``dereverb.cli.train.main(argv)`` in this process: the config file first, one-line refusals with status 2
before Hydra runs, Hydra's ``--cfg``, Ctrl-C with status 130. The runs themselves are in tests/training."""

from __future__ import annotations

import os
import sys

import pytest
import yaml
from hydra.core.hydra_config import HydraConfig

import dereverb.cli.train as cli
from dereverb.config import CONF_DIR

CONFIG = str(CONF_DIR / "dtcn.yaml")


def _stderr_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_a_missing_config_file_is_refused(tmp_path, capsys):
    assert cli.main([str(tmp_path / "missing.yaml"), "seed=1"]) == 2
    assert _stderr_line(capsys) == f"train.py: error: config file {tmp_path / 'missing.yaml'} not found"


def test_without_a_config_file_the_usage_is_printed(capsys):
    assert cli.main(["seed=1"]) == 2
    assert _stderr_line(capsys).startswith("usage: python train.py CONFIG.yaml [key=value ...]")
    assert cli.main([]) == 2


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("model=nope", "train.py: error: In 'dtcn': Could not find 'model/nope'; Available options in 'model': dtcn, "),
        ("optim.lrr=1", "train.py: error: Could not override 'optim.lrr'; Key 'lrr' is not in struct; "),
    ],
)
def test_a_bad_override_is_one_line_before_hydra_runs(override, expected, tmp_path, capsys):
    assert cli.main([CONFIG, override, f"output_dir={tmp_path / 'out'}"]) == 2
    assert _stderr_line(capsys).startswith(expected)
    assert not (tmp_path / "out").exists()


def test_cfg_job_prints_the_config_and_leaves_the_process_as_it_was(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("sys.argv", ["train.py", "unchanged"])
    monkeypatch.delenv("DEREVERB_COMMAND", raising=False)
    assert cli.main([str(CONF_DIR / "tcn.yaml"), "--cfg", "job", "seed=7", f"output_dir={tmp_path / 'out'}"]) == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["model"]["_target_"] == "dereverb.models.TCN"
    assert cfg["name"] == "tcn"
    assert cfg["seed"] == 7
    assert sys.argv == ["train.py", "unchanged"]
    assert "DEREVERB_COMMAND" not in os.environ
    assert not HydraConfig.initialized()  # a later main(cfg) in this process writes where its config says
    assert not (tmp_path / "out").exists()


def test_ctrl_c_is_one_line_and_status_130(monkeypatch, capsys):
    def interrupted(argv):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "split_config", interrupted)
    assert cli.main([CONFIG]) == 130
    assert _stderr_line(capsys) == "train.py: interrupted; run the same command to resume"
