"""Tests of the model folder format (save_pretrained / from_pretrained)."""

import json
import os
import re
import stat
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import load_file, save_file

from dereverb.models import DTCN, TCN
from dereverb.pretrained import ModelFolderError, from_pretrained, save_pretrained

TINY = {"N": 16, "B": 8, "H": 16, "X": 2, "R": 1}


def _trained(cls, **kwargs):
    model = cls(**{**TINY, **kwargs})
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
    (DTCN, {"norm": "cLN", "causal": True}, 8000),
    (DTCN, {"init": "identity", "N": 32}, 8000),
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


def _edit_config(folder, **changes):
    path = folder / "config.json"
    config = json.loads(path.read_text())
    config["config"].update(changes.pop("model", {}))
    path.write_text(json.dumps({**config, **changes}))


def _edit_header(path, edit):
    """Rewrite a safetensors file's JSON header with ``edit(header)``, keeping its data bytes."""
    data = path.read_bytes()
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + n])
    edit(header)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(len(text).to_bytes(8, "little") + text + data[8 + n :])


def _refused(folder, match):
    with pytest.raises(ModelFolderError, match=match) as info:
        from_pretrained(folder)
    assert "\n" not in str(info.value)
    assert str(folder) in str(info.value)
    return str(info.value)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_weights_are_refused(tmp_path, value):
    folder = save_pretrained(_trained(TCN), tmp_path / "m", sample_rate=8000)
    weights = folder / "model.safetensors"
    state = load_file(weights)
    state["blocks.0.conv1x1.weight"].view(-1)[[0, 5, 7]] = value
    save_file(state, weights, metadata={"format": "dereverb-model", "class": "TCN"})
    _refused(folder, r"m/model.safetensors: tensor blocks.0.conv1x1.weight has 3 NaN/Inf values$")


@pytest.mark.parametrize("gain", [1e300, -1e300, 1e-300, 1e5, 5e-5, float("inf"), float("nan"), 0, True, "2"])
def test_output_gain_out_of_range_is_refused(tmp_path, gain):
    folder = save_pretrained(_trained(TCN), tmp_path / "m", sample_rate=8000)
    _edit_config(folder, output_gain=gain)
    _refused(folder, r"config.json: output_gain must be a number whose magnitude is from 0.0001 to 10000, got ")


def test_output_gain_out_of_range_is_not_saved(tmp_path):
    with pytest.raises(ValueError, match=r"output_gain must be a number whose magnitude is from .* got 1e\+300"):
        save_pretrained(_trained(TCN), tmp_path / "m", sample_rate=8000, extra={"output_gain": 1e300})
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("gain", [1e-4, -0.5, 3, 1e4])
def test_output_gain_in_range_is_kept(tmp_path, gain):
    folder = save_pretrained(_trained(TCN), tmp_path / "m", sample_rate=8000, extra={"output_gain": gain})
    assert from_pretrained(folder).output_gain == gain


def _relabel_int32(header):
    header["blocks.0.conv1x1.weight"]["dtype"] = "I32"  # same byte length: only the header lies


def _relabel_half(header):
    entry = header["blocks.0.conv1x1.weight"]
    entry["dtype"], entry["shape"] = "F16", [2 * entry["shape"][0], *entry["shape"][1:]]  # consistent byte length


@pytest.mark.parametrize("relabel", [_relabel_int32, _relabel_half])
def test_relabelled_dtype_in_the_header_is_refused(tmp_path, relabel):
    folder = save_pretrained(_trained(TCN), tmp_path / "m", sample_rate=8000)
    _edit_header(folder / "model.safetensors", relabel)
    message = _refused(folder, r"weights do not match TCN config.json: .*1 with a wrong dtype")
    assert "blocks.0.conv1x1.weight is " in message
    assert "F32 expected" in message


def test_weights_of_another_dtype_are_refused(tmp_path):
    folder = save_pretrained(_trained(DTCN), tmp_path / "m", sample_rate=8000)
    weights = folder / "model.safetensors"
    state = load_file(weights)
    save_file({k: v.double() for k, v in state.items()}, weights)
    message = _refused(folder, rf"weights do not match DTCN config.json: {len(state)} with a wrong dtype")
    assert "is F64, F32 expected" in message


def test_models_of_other_precisions_are_saved_as_float32(tmp_path):
    model = _trained(DTCN).double()
    folder = save_pretrained(model, tmp_path / "m", sample_rate=8000)
    assert {v.dtype for v in load_file(folder / "model.safetensors").values()} == {torch.float32}
    x = torch.randn(1, 900)
    with torch.no_grad():
        torch.testing.assert_close(from_pretrained(folder)(x), model(x.double()).float(), rtol=1e-4, atol=1e-5)


def test_non_finite_weights_are_not_saved(tmp_path):
    model = _trained(TCN)
    with torch.no_grad():
        model.bottleneck.bias[2] = float("nan")
    with pytest.raises(ValueError, match=r"TCN tensor bottleneck\.bias has 1 NaN/Inf values: not saving"):
        save_pretrained(model, tmp_path / "m", sample_rate=8000)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("model", "match"), [
    ({"max_offset": float("inf")}, "max_offset must be a finite number .* got inf"),
    ({"max_offset": -1.0}, "max_offset must be a finite number .* got -1.0"),
    ({"N": 8193}, "N must be at most 8192, got 8193"),
    ({"X": 16, "R": 65}, r"X \* R \(blocks\) must be at most 1024, got X=16, R=65"),
    ({"causal": "yes"}, "causal must be true or false, got 'yes'"),
    ({"modulation": 1}, "modulation must be true or false, got 1"),
    ({"bias": True}, "got an unexpected keyword argument 'bias'"),
])  # fmt: skip
def test_out_of_range_constructor_arguments_are_refused(tmp_path, model, match):
    folder = save_pretrained(_trained(DTCN), tmp_path / "m", sample_rate=8000)
    _edit_config(folder, model=model)
    _refused(folder, rf"config.json: invalid model configuration \({match}\)$")


_CHILD = textwrap.dedent("""
    import json, resource, signal, sys, time
    resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))  # a runaway allocation fails instead of swapping
    from dereverb.pretrained import from_pretrained

    def timeout(*_):
        raise TimeoutError("still loading after 10 s")

    signal.signal(signal.SIGALRM, timeout)
    results = []
    for folder in sys.argv[1:]:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        start = time.perf_counter()
        signal.alarm(10)
        try:
            from_pretrained(folder)
            error = None
        except Exception as err:
            error = f"{type(err).__name__}: {str(err)[:300]}"
        signal.alarm(0)
        grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
        results.append({"error": error, "seconds": time.perf_counter() - start, "grown_mb": grown / 1024})
    print(json.dumps(results))
""")


def test_huge_configs_are_refused_before_anything_is_allocated(tmp_path):
    """A config.json asking for a huge model gets one line at once: the header of the small weights file is
    compared with the config on the meta device, before any tensor is allocated."""
    cases = {
        "N": ({"N": 10**9}, r"invalid model configuration \(N must be at most 8192"),
        "R": ({"R": 10**9}, r"invalid model configuration \(X \* R \(blocks\) must be at most 1024"),
        "within-limits": ({"N": 8192, "B": 8192, "H": 8192}, "weights do not match DTCN config.json: .*wrong shape"),
    }
    folders = []
    for name, (model, _) in cases.items():
        folder = save_pretrained(_trained(DTCN), tmp_path / name, sample_rate=8000)
        _edit_config(folder, model=model)
        folders.append(str(folder))
    proc = subprocess.run([sys.executable, "-c", _CHILD, *folders], capture_output=True, text=True, timeout=120,
                          check=False)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads(proc.stdout)
    for (name, (_, match)), result in zip(cases.items(), results, strict=True):
        assert result["error"] is not None, (name, result)
        assert result["error"].startswith("ModelFolderError: "), (name, result)
        assert re.search(match, result["error"]), (name, result)
        assert result["seconds"] < 1.0, (name, result)
        assert result["grown_mb"] < 200, (name, result)  # the within-limits model would take 1.6 GB


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_saved_folders_follow_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        folder = save_pretrained(_trained(TCN), tmp_path / "m", sample_rate=8000)
        replaced = save_pretrained(_trained(DTCN), folder, sample_rate=8000, overwrite=True)
    finally:
        os.umask(old)
    assert stat.S_IMODE(replaced.stat().st_mode) == 0o777 & ~umask
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in replaced.iterdir()} == {
        name: 0o666 & ~umask for name in ("MODEL_CARD.md", "config.json", "model.safetensors")
    }


@pytest.mark.parametrize("what", ["run-folder", "file", "symlink"])
def test_overwrite_replaces_only_a_model_folder(tmp_path, what):
    target = tmp_path / "m"
    if what == "run-folder":
        target.mkdir()
        (target / "train_log.txt").write_text("epoch 1")
    elif what == "file":
        target.write_text("notes")
    else:
        save_pretrained(_trained(TCN), tmp_path / "real", sample_rate=8000)
        target.symlink_to(tmp_path / "real")
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(FileExistsError, match=r"m exists and is not a dereverb model folder: not replacing it"):
        save_pretrained(_trained(DTCN), target, sample_rate=8000, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    if what == "run-folder":
        assert (target / "train_log.txt").read_text() == "epoch 1"
    elif what == "file":
        assert target.read_text() == "notes"
    else:
        assert type(from_pretrained(target)) is TCN


def test_overwrite_of_an_empty_folder(tmp_path):
    (tmp_path / "m").mkdir()
    save_pretrained(_trained(DTCN), tmp_path / "m", sample_rate=8000, overwrite=True)
    assert type(from_pretrained(tmp_path / "m")) is DTCN
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]
