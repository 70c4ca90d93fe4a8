"""What a training builds once: the model (its own checks in one line), a warm start from a model folder
(refused when the architecture differs), and the release of the run folder."""

from __future__ import annotations

import logging

import pytest
import torch

from dereverb.config import compose
from dereverb.errors import ConfigError
from dereverb.models import DTCN, TCN
from dereverb.pretrained import save_pretrained
from dereverb.training.experiment import Experiment, build_model, init_from
from dereverb.training.lock import RunLock

TINY = {"N": 32, "L": 16, "B": 16, "H": 16, "X": 1, "R": 1}


def test_build_model_instantiates_the_config():
    model = build_model(compose("tcn", ["model=tcn_small"]))
    assert type(model) is TCN
    assert model.get_config()["L"] == 16


@pytest.mark.parametrize(
    ("override", "expected"),
    [("model.L=15", "model: L (encoder window) must be even"), ("model.max_offset=inf", "model: max_offset ")],
)
def test_build_model_reports_the_model_check_in_one_line(override, expected):
    with pytest.raises(ConfigError) as info:
        build_model(compose("dtcn", [override]))
    assert str(info.value).startswith(expected)
    assert "\n" not in str(info.value)


def test_init_from_loads_the_weights_of_a_model_folder(tmp_path):
    torch.manual_seed(0)
    trained = DTCN(**TINY)
    with torch.no_grad():
        for p in trained.parameters():
            p.add_(0.01)
    save_pretrained(trained, tmp_path / "m", 8000)
    model = DTCN(**TINY)
    init_from(model, str(tmp_path / "m"), 8000)
    for name, value in model.state_dict().items():
        torch.testing.assert_close(value, trained.state_dict()[name])


@pytest.mark.parametrize(
    ("model", "rate", "expected"),
    [
        (DTCN(**{**TINY, "H": 24}), 8000, "H: 16 there, 24 here"),
        (TCN(**TINY), 8000, "class: DTCN there, TCN here"),
        (DTCN(**TINY), 16000, "sample_rate: 8000 there, 16000 here"),
    ],
)
def test_init_from_refuses_another_architecture_before_reading_weights(tmp_path, model, rate, expected):
    save_pretrained(DTCN(**TINY), tmp_path / "m", 8000)
    (tmp_path / "m" / "model.safetensors").write_bytes(b"not read")  # the config is checked first
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ConfigError) as info:
        init_from(model, str(tmp_path / "m"), rate)
    assert str(info.value).startswith(f"init_from={tmp_path / 'm'}: {tmp_path / 'm'} holds another model (")
    assert expected in str(info.value)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_init_from_grows_a_deeper_model_from_a_shallower_folder(tmp_path, caplog):
    torch.manual_seed(0)
    shallow = DTCN(**TINY)
    save_pretrained(shallow, tmp_path / "m", 8000)
    model = DTCN(**{**TINY, "R": 3})
    with caplog.at_level(logging.INFO):
        init_from(model, str(tmp_path / "m"), 8000)
    assert "(R=1); repeats 2-3 added as identity blocks" in caplog.text
    x = torch.randn(1, 2000)
    torch.testing.assert_close(model(x), shallow(x))


def test_init_from_starts_a_model_at_another_rate_from_one_whose_window_lasts_as_long(tmp_path, caplog):
    torch.manual_seed(0)
    wide = DTCN(**{**TINY, "L": 32})
    save_pretrained(wide, tmp_path / "m", 16000)
    model = DTCN(**TINY)  # L=16 at 8 kHz: 2 ms, as L=32 at 16 kHz
    with caplog.at_level(logging.INFO):
        init_from(model, str(tmp_path / "m"), 8000)
    assert "(16000 Hz, L=32); encoder and decoder resampled to 8000 Hz (L=16)" in caplog.text
    torch.testing.assert_close(model.bottleneck.weight, wide.bottleneck.weight)
    expected = DTCN(**TINY)
    expected.load_resampled(wide.state_dict(), 32)  # what init_from must have loaded, filters included
    for name, value in expected.state_dict().items():
        torch.testing.assert_close(model.state_dict()[name], value, rtol=0, atol=0)
    assert model.encoder.weight.shape == (TINY["N"], 1, 16)


def test_init_from_another_rate_needs_a_window_of_the_same_duration(tmp_path):
    save_pretrained(DTCN(**{**TINY, "L": 16}), tmp_path / "m", 16000)
    with pytest.raises(ConfigError) as info:
        init_from(DTCN(**TINY), str(tmp_path / "m"), 8000)
    assert str(info.value).endswith(
        "sample_rate: 16000 there, 8000 here; only model.L=8, a window of the same duration, starts from it at 8000 Hz)"
    )


def test_init_from_never_drops_repeats(tmp_path):
    save_pretrained(DTCN(**{**TINY, "R": 3}), tmp_path / "deep", 8000)
    with pytest.raises(ConfigError, match="R: 3 there, 1 here"):
        init_from(DTCN(**TINY), str(tmp_path / "deep"), 8000)


def test_init_from_a_folder_that_is_no_model_is_one_line(tmp_path):
    with pytest.raises(ConfigError, match=rf"^init_from={tmp_path}: .*config\.json is missing"):
        init_from(DTCN(**TINY), str(tmp_path), 8000)


def test_closing_an_experiment_releases_the_folder_and_its_log(tmp_path):
    lock = RunLock(tmp_path)
    lock.acquire()
    handler = logging.FileHandler(tmp_path / "train.log")
    logging.getLogger().addHandler(handler)
    exp = Experiment(None, None, None, None, None, None, None, {}, tmp_path, lock=lock, log_handler=handler)
    exp.close()
    assert handler not in logging.getLogger().handlers
    assert exp.lock is None
    assert exp.log_handler is None
    again = RunLock(tmp_path)  # free again
    again.acquire()
    again.release()
    exp.close()  # twice: nothing left to release
