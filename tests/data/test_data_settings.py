"""``data_settings``: a ``data`` config checked, completed with its kind's defaults, folders absolute."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from dereverb.config import compose
from dereverb.data import data_settings, prepare
from dereverb.data.kinds import kind_class
from dereverb.errors import DataError

RATE = 8000


@pytest.mark.parametrize(
    ("cfg", "rate", "match"),
    [
        ({"kind": "whamr", "root": "/x", "task": "separate"}, RATE, "data.task='separate': expected one of"),
        ({"kind": "whamr", "root": "/x", "version": "mid"}, RATE, "data.version='mid'"),
        ({"kind": "whamr"}, RATE, "data.root is required"),
        ({"kind": "whamr", "root": "/x"}, 22050, "sample_rate=22050: unsupported"),
        ({"kind": "wsj"}, RATE, "data.kind='wsj': unknown"),
        ({}, RATE, "data.kind='\\?\\?\\?': unknown"),
        ({"kind": "folder", "root": "/x", "rooot": 1}, RATE, "data.rooot: unknown key"),
        ({"kind": "folder", "root": "/x", "on_bad_file": "ignore"}, RATE, "data.on_bad_file='ignore'"),
        ({"kind": "folder", "root": "/x", "segment_s": 0}, RATE, "data.segment_s=0"),
        ({"kind": "folder", "root": "/x", "segment_s": True}, RATE, "data.segment_s=True"),
        ({"kind": "folder", "root": "/x", "target": "late"}, RATE, "data.target='late'"),
        ({"kind": "demo", "train_rirs": 0}, RATE, "data.train_rirs=0"),
        ({"kind": "demo", "eval_rirs": 1.5}, RATE, "data.eval_rirs=1.5"),
        ({"kind": "demo", "rooms": [1]}, RATE, "data.rooms=\\[1\\]: expected a mapping"),
        ({"kind": "demo", "target": "late"}, RATE, "data.target='late'"),
    ],
)
def test_bad_config_values_name_the_key(tmp_path, cfg, rate, match):
    with pytest.raises(DataError, match=match):
        prepare({"save_folder": str(tmp_path), **cfg}, rate, progress=False)


@pytest.mark.parametrize("kind", ["folder", "demo", "simulate"])
def test_the_former_clean_target_names_the_new_one(tmp_path, kind):
    cfg = {"kind": kind, "save_folder": str(tmp_path), "root": "/x", "clean_root": "/x", "target": "clean"}
    cfg = {k: v for k, v in cfg.items() if k in kind_class(kind).all_defaults()}
    with pytest.raises(DataError) as err:
        data_settings(cfg, RATE)
    assert str(err.value) == "data.target=clean: this target is now called direct (set data.target=direct)"


def test_defaults_filled_and_folders_absolute(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    s = data_settings({"kind": "folder", "root": "~/pairs", "save_folder": "save", "extensions": [".WAV"]}, RATE)
    assert s == {
        "kind": "folder",
        "save_folder": str(tmp_path / "save"),
        "segment_s": 4.0,
        "on_bad_file": "error",
        "root": str(tmp_path / "pairs"),
        "target": "direct",
        "valid_fraction": 0.1,
        "test_fraction": 0.1,
        "split_seed": 0,
        "extensions": ["wav"],
    }


def test_the_config_is_not_modified():
    cfg = {"kind": "folder", "root": "/x", "save_folder": "/s", "extensions": ["WAV"]}
    data_settings(cfg, RATE)
    assert cfg == {"kind": "folder", "root": "/x", "save_folder": "/s", "extensions": ["WAV"]}


def test_dictconfig_missing_and_bad_interpolations_name_the_key():
    with pytest.raises(DataError, match=r"^data.root is required: set data.root=<a folder>"):
        data_settings(OmegaConf.create({"kind": "folder", "root": "???", "save_folder": "/s"}), RATE)
    with pytest.raises(DataError, match=r"^data: .*nowhere"):
        data_settings(OmegaConf.create({"kind": "folder", "root": "${nowhere}", "save_folder": "/s"}), RATE)


def test_compose_missing_root_names_the_key():
    cfg = compose("prepare", ["data=whamr"])
    with pytest.raises(DataError, match=r"^data.root is required"):
        prepare(cfg.data, cfg.sample_rate)


def test_default_save_folder_honours_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("DEREVERB_DATA", str(tmp_path))
    assert compose("prepare").data.save_folder == f"{tmp_path}/demo"
    monkeypatch.delenv("DEREVERB_DATA")
    assert compose("prepare").data.save_folder == "~/.cache/dereverb/demo"
