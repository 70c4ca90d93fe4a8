"""Tests of the model folder format (save_pretrained / from_pretrained)."""

import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import save_file

from dereverb.models import DTCN, TCN
from dereverb.pretrained import ModelFolderError, from_pretrained, save_pretrained

TINY = {"N": 16, "B": 8, "H": 16, "X": 2, "R": 1}


def _trained(cls, **kwargs):
    model = cls(**TINY, **kwargs)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.1)  # also moves the zero-initialised predictors
    return model.eval()


@pytest.mark.parametrize(("cls", "kwargs", "rate"), [
    (TCN, {}, 8000),
    (DTCN, {}, 8000),
    (DTCN, {"offset_groups": 4, "modulation": True, "max_offset": 3.0, "L": 32}, 16000),
    (TCN, {"norm": "cLN", "causal": True, "skip_channels": 8}, 16000),
])  # fmt: skip
def test_round_trip_gives_identical_outputs(tmp_path, cls, kwargs, rate):
    model = _trained(cls, **kwargs)
    folder = save_pretrained(model, tmp_path / "m", sample_rate=rate)
    assert sorted(p.name for p in folder.iterdir()) == ["MODEL_CARD.md", "config.json", "model.safetensors"]
    loaded = from_pretrained(folder)
    assert type(loaded) is cls
    assert loaded.get_config() == model.get_config()
    assert loaded.sample_rate == rate
    assert not loaded.training
    x = torch.randn(2, 3001)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
    config = json.loads((folder / "config.json").read_text())
    assert config["class"] == cls.__name__
    assert config["sample_rate"] == rate
    assert "dereverb_version" in config
    assert cls.__name__ in (folder / "MODEL_CARD.md").read_text()


def test_loading_imports_neither_hydra_nor_the_training_stack(tmp_path):
    folder = save_pretrained(_trained(DTCN), tmp_path / "m", sample_rate=8000)
    code = (
        "import pickle, sys\n"
        "def refuse(*a, **k): raise AssertionError('something was unpickled')\n"
        "pickle.load = pickle.loads = pickle.Unpickler = refuse\n"
        "from dereverb.pretrained import from_pretrained\n"
        f"m = from_pretrained({str(folder)!r})\n"
        "bad = sorted(k for k in sys.modules if k.split('.')[0] in ('hydra', 'omegaconf', 'speechbrain'))\n"
        "assert not bad, bad\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_existing_folder_is_not_overwritten(tmp_path):
    folder = save_pretrained(_trained(TCN), tmp_path / "m", sample_rate=8000)
    before = (folder / "model.safetensors").read_bytes()
    with pytest.raises(FileExistsError, match="already exists"):
        save_pretrained(_trained(DTCN), folder, sample_rate=8000)
    assert (folder / "model.safetensors").read_bytes() == before
    save_pretrained(_trained(DTCN), folder, sample_rate=8000, overwrite=True)
    assert type(from_pretrained(folder)) is DTCN
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # no temporary folders left behind


def test_bad_sample_rate_is_refused(tmp_path):
    with pytest.raises(ValueError, match="sample_rate must be one of"):
        save_pretrained(_trained(TCN), tmp_path / "m", sample_rate=22050)
    assert not (tmp_path / "m").exists()


def _break(folder, case):
    cfg_path = folder / "config.json"
    cfg = json.loads(cfg_path.read_text())
    if case == "no-config":
        cfg_path.unlink()
    elif case == "bad-json":
        cfg_path.write_text("{not json")
    elif case == "foreign-json":
        cfg_path.write_text(json.dumps({"model_type": "bert"}))
    elif case == "unknown-class":
        cfg_path.write_text(json.dumps({**cfg, "class": "ResNet"}))
    elif case == "bad-arguments":
        cfg_path.write_text(json.dumps({**cfg, "config": {**cfg["config"], "L": 15}}))
    elif case == "config-mismatch":
        cfg_path.write_text(json.dumps({**cfg, "config": {**cfg["config"], "H": 32}}))
    elif case == "no-weights":
        (folder / "model.safetensors").unlink()
    elif case == "corrupt-weights":
        (folder / "model.safetensors").write_bytes(b"\x00garbage" * 10)
    elif case == "pickle-weights":
        torch.save(TCN(**TINY).state_dict(), folder / "model.safetensors")
    elif case == "other-model-weights":
        save_file({"w": torch.zeros(3)}, folder / "model.safetensors")
    elif case == "tcn-weights-dtcn-config":
        cfg_path.write_text(json.dumps({**cfg, "class": "DTCN"}))
    elif case == "future-version":
        cfg_path.write_text(json.dumps({**cfg, "format_version": 99}))


@pytest.mark.parametrize(("case", "match"), [
    ("no-config", "not a dereverb model folder: config.json is missing"),
    ("bad-json", "not valid JSON"),
    ("foreign-json", "not a dereverb model config"),
    ("unknown-class", "unknown model class 'ResNet'"),
    ("bad-arguments", "invalid model configuration"),
    ("config-mismatch", "weights do not match TCN config.json: .* with a wrong shape"),
    ("no-weights", "model.safetensors is missing"),
    ("corrupt-weights", "not a readable safetensors file"),
    ("pickle-weights", "not a readable safetensors file"),
    ("other-model-weights", "weights do not match TCN config.json: .*missing.*unexpected"),
    ("tcn-weights-dtcn-config", "weights do not match DTCN config.json: .*missing.*offset_predictor"),
    ("future-version", "format_version 99 is not supported"),
])  # fmt: skip
def test_broken_folders_are_refused_with_one_line(tmp_path, case, match):
    folder = save_pretrained(_trained(TCN), tmp_path / "m", sample_rate=8000)
    _break(folder, case)
    with pytest.raises(ModelFolderError, match=match) as info:
        from_pretrained(folder)
    assert "\n" not in str(info.value)
    assert str(folder) in str(info.value)


def test_missing_folder_and_unknown_name(tmp_path):
    with pytest.raises(ModelFolderError, match="no such model folder or shipped model name"):
        from_pretrained(tmp_path / "nowhere")
    with pytest.raises(ModelFolderError, match="no such model folder or shipped model name"):
        from_pretrained("dtcn-3k")
    (tmp_path / "file.txt").write_text("hi")
    with pytest.raises(ModelFolderError, match="is a file, not a model folder"):
        from_pretrained(tmp_path / "file.txt")


def test_shipped_names_resolve_inside_the_package(tmp_path, monkeypatch):
    import dereverb.pretrained as pretrained

    monkeypatch.setattr(pretrained, "PRETRAINED_DIR", tmp_path)
    model = _trained(DTCN)
    save_pretrained(model, tmp_path / "dtcn-8k", sample_rate=8000)
    assert pretrained.list_pretrained() == ["dtcn-8k"]
    loaded = from_pretrained("dtcn-8k")
    x = torch.randn(1, 900)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
    with pytest.raises(ModelFolderError, match=r"dtcn-16k: no such model .* \(shipped: dtcn-8k\)"):
        from_pretrained("dtcn-16k")
