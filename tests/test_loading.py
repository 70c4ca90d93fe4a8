"""Loading a model to run it: what a user names becomes a model in eval mode, or one line saying why not."""

import json

import pytest
import torch

from dereverb.errors import ConfigError, ModelFolderError
from dereverb.loading import check_device, load_model
from dereverb.models import TCN
from dereverb.pretrained import save_pretrained


@pytest.mark.parametrize(
    ("device", "match"),
    [("foo", "foo: unknown device"), ("meta", "meta: not a device inference runs on"), ("cuda:99", "cuda:99")],
)
def test_unusable_devices_are_refused_in_one_line(device, match):
    with pytest.raises(ConfigError, match=match):
        check_device(device)


def test_the_cpu_is_always_usable():
    assert check_device("cpu") == torch.device("cpu")


def test_a_model_folder_loads_in_eval_mode_with_its_rate(tmp_path):
    torch.manual_seed(0)
    model = TCN(N=16, L=8, B=8, H=16, X=2, R=1)
    save_pretrained(model, tmp_path / "m", 8000)
    loaded = load_model(tmp_path / "m")
    assert loaded.sample_rate == 8000
    assert loaded.source == f"model folder {tmp_path / 'm'}"
    assert loaded.checkpoint is None
    assert not loaded.model.training
    x = torch.randn(1, 400)
    torch.testing.assert_close(loaded.model(x), model.eval()(x))


def test_a_folder_that_is_no_model_is_one_line(tmp_path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("x")
    with pytest.raises(ModelFolderError, match="is not a dereverb model"):
        load_model(tmp_path / "notes")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "model_config.json").write_text(json.dumps({"class": "TCN"}))
    with pytest.raises(ModelFolderError, match="not a dereverb model record"):
        load_model(tmp_path / "run")
