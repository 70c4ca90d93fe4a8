"""The run folder's records: the model a folder trains (a resume with another is refused), the resolved config
and the environment of the latest call, each written atomically."""

from __future__ import annotations

import json

import pytest
import yaml

from dereverb.config import compose
from dereverb.errors import ConfigError, OutputExistsError
from dereverb.models import DTCN, TCN
from dereverb.training.records import check_resume_compatible, environment, write_run_records

TINY = {"N": 32, "L": 16, "B": 16, "H": 16, "X": 1, "R": 1}


def test_a_new_folder_gets_the_model_record_and_the_same_model_resumes(tmp_path):
    model = DTCN(**TINY)
    check_resume_compatible(tmp_path, model, 8000, record_it=False)
    assert not (tmp_path / "model_config.json").exists()  # checked without the lock: nothing written
    check_resume_compatible(tmp_path, model, 8000)
    record = json.loads((tmp_path / "model_config.json").read_text())
    assert record == {"class": "DTCN", "config": model.get_config(), "sample_rate": 8000}
    check_resume_compatible(tmp_path, DTCN(**TINY), 8000)  # the same model again: accepted
    assert [p.name for p in tmp_path.iterdir()] == ["model_config.json"]  # no temporary file left


@pytest.mark.parametrize(
    ("model", "rate", "what"),
    [
        (DTCN(**{**TINY, "H": 24}), 8000, "(H differ)"),
        (TCN(**TINY), 8000, "differ)"),
        (DTCN(**TINY), 16000, "(sample_rate differ)"),
    ],
)
def test_a_folder_of_another_model_is_refused_in_one_line(tmp_path, model, rate, what):
    check_resume_compatible(tmp_path, DTCN(**TINY), 8000)
    before = (tmp_path / "model_config.json").read_text()
    with pytest.raises(ConfigError) as info:
        check_resume_compatible(tmp_path, model, rate)
    message = str(info.value)
    assert message.startswith(f"{tmp_path} holds a run of another model ")
    assert what in message
    assert message.endswith("resume it with its own config, or choose another name or seed")
    assert "\n" not in message
    assert (tmp_path / "model_config.json").read_text() == before


def test_the_model_record_is_never_overwritten(tmp_path, monkeypatch):
    """A record that appears between the check and the write (it cannot under the lock) is not replaced."""
    from pathlib import Path

    model = DTCN(**TINY)
    real_exists = Path.exists
    monkeypatch.setattr(Path, "exists", lambda p: False if p.name == "model_config.json" else real_exists(p))
    (tmp_path / "model_config.json").write_text("{}")
    with pytest.raises(OutputExistsError):
        check_resume_compatible(tmp_path, model, 8000)
    assert (tmp_path / "model_config.json").read_text() == "{}"


def test_the_config_and_environment_records_are_replaced_on_each_call(tmp_path, monkeypatch):
    monkeypatch.setenv("DEREVERB_COMMAND", "python train.py conf/dtcn.yaml seed=3")
    (tmp_path / "config.yaml").write_text("old\n")
    write_run_records(tmp_path, compose("dtcn", ["seed=3"]))
    saved = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert saved["seed"] == 3
    assert saved["model"]["L"] == 16  # resolved
    env = json.loads((tmp_path / "environment.json").read_text())
    assert env["command"] == "python train.py conf/dtcn.yaml seed=3"
    assert env["calls"] == [env["command"]]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml", "environment.json"]


def test_a_resumed_run_keeps_the_commands_of_every_call(tmp_path, monkeypatch):
    cfg = compose("dtcn", ["seed=3"])
    (tmp_path / "environment.json").write_text(json.dumps({"command": "python train.py conf/dtcn.yaml first"}))
    for second in ("second", "third"):  # a record that predates calls, then two resumes
        monkeypatch.setenv("DEREVERB_COMMAND", f"python train.py conf/dtcn.yaml {second}")
        write_run_records(tmp_path, cfg)
    env = json.loads((tmp_path / "environment.json").read_text())
    assert [c.split()[-1] for c in env["calls"]] == ["first", "second", "third"]
    assert env["command"].endswith(" third")  # the latest call


def test_an_unreadable_earlier_record_is_replaced_with_a_warning(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("DEREVERB_COMMAND", "python train.py conf/dtcn.yaml seed=3")
    (tmp_path / "environment.json").write_text("{not json")
    with caplog.at_level("WARNING"):
        write_run_records(tmp_path, compose("dtcn", ["seed=3"]))
    assert json.loads((tmp_path / "environment.json").read_text())["calls"] == ["python train.py conf/dtcn.yaml seed=3"]
    assert "environment.json is unreadable" in caplog.text


def test_the_environment_names_the_versions():
    import torch

    env = environment()
    assert {"dereverb", "python", "platform", "torch", "speechbrain", "cuda", "threads", "argv", "command"} <= set(env)
    assert env["torch"] == torch.__version__
    assert env["command"].startswith("python ")
