"""The :class:`~dereverb.inference.Dereverberator` API: rates, batches, output level, bad arguments."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from inference_helpers import TINY, level, nan_weights, perturbed, resample, write_wav

from dereverb.errors import ConfigError
from dereverb.inference import Dereverberator, EnhanceError, calibrate_gain, default_model
from dereverb.metrics import si_sdr
from dereverb.models import DTCN
from dereverb.pretrained import ModelFolderError, from_pretrained, save_pretrained


def test_other_rates_are_resampled_to_the_model_and_back(model_dir, reverberant):
    d = Dereverberator.from_pretrained(model_dir, gain="none")
    x8 = reverberant[0][:24000]
    for rate in (16000, 44100):
        x = resample(x8, 8000, rate)
        y = d.enhance(x, rate)
        assert y.shape == x.shape
        # the same as resampling by hand around the model
        by_hand = resample(d.enhance(resample(x, rate, 8000), 8000), 8000, rate)[: len(x)]
        assert si_sdr(y, by_hand) > 40


def test_enhance_batch_rows_at_their_own_lengths(model_dir, reverberant):
    d = Dereverberator.from_pretrained(model_dir, gain="none")
    x = torch.from_numpy(reverberant[0][:16000]).repeat(2, 1)
    out = d.enhance_batch(x, lengths=torch.tensor([1.0, 0.5]))
    assert out.shape == (2, 16000)
    torch.testing.assert_close(
        out[1, :8000], torch.from_numpy(d.enhance(reverberant[0][:8000], 8000)), atol=1e-5, rtol=0
    )
    assert (out[1, 8000:] == 0).all()
    torch.testing.assert_close(out[0], d.enhance(torch.from_numpy(reverberant[0][:16000]), 8000), atol=1e-5, rtol=0)
    assert d.enhance_batch(torch.zeros(0, 100)).shape == (0, 100)
    with pytest.raises(EnhanceError, match="relative lengths"):
        d.enhance_batch(x, lengths=torch.tensor([1.0, 1.5]))
    with pytest.raises(EnhanceError, match="NaN or Inf"):
        d.enhance_batch(torch.full((1, 100), float("nan")))


def test_output_gain_is_stored_calibrated_and_applied(reverberant, tmp_path):
    torch.manual_seed(0)
    model = perturbed(DTCN(**TINY))
    g = calibrate_gain(model, [reverberant])
    raw = model(torch.from_numpy(reverberant[0])[None]).detach().numpy()[0]
    assert g == pytest.approx(float(np.dot(reverberant[1], raw) / np.dot(raw, raw)), rel=1e-4)
    folder = save_pretrained(model, tmp_path / "m", 8000, extra={"output_gain": g})
    assert from_pretrained(folder).output_gain == pytest.approx(g)
    auto = Dereverberator.from_pretrained(folder, chunk_seconds=None).enhance(reverberant[0], 8000)
    none = Dereverberator.from_pretrained(folder, chunk_seconds=None, gain="none").enhance(reverberant[0], 8000)
    np.testing.assert_allclose(auto, g * none, rtol=1e-5, atol=1e-7)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "output_gain": 0}))
    with pytest.raises(ModelFolderError, match="output_gain"):
        from_pretrained(folder)


def test_input_gain_matches_the_level_of_the_input(model_dir, reverberant):
    d = Dereverberator.from_pretrained(model_dir, chunk_seconds=None, gain="input")
    x = reverberant[0][:16000]
    y = d.enhance(x, 8000)
    assert float(np.dot(x - y, y)) == pytest.approx(0.0, abs=1e-3 * float(np.dot(x, x)))  # y is x's projection
    for bad in ("loud", 0, float("nan"), float("inf")):
        with pytest.raises(EnhanceError, match="gain"):
            Dereverberator.from_pretrained(model_dir, gain=bad)


def test_default_model_follows_the_input_rate(monkeypatch):
    import dereverb.pretrained as pretrained

    monkeypatch.setattr(pretrained, "list_pretrained", lambda: ["dtcn-16k", "dtcn-8k", "tcn-8k"])
    assert default_model(8000) == "dtcn-8k"
    assert default_model(11025) == "dtcn-8k"
    assert default_model(16000) == "dtcn-16k"
    assert default_model(48000) == "dtcn-16k"
    monkeypatch.setattr(pretrained, "list_pretrained", lambda: ["dtcn-8k"])
    assert default_model(48000) == "dtcn-8k"
    monkeypatch.setattr(pretrained, "list_pretrained", lambda: [])
    with pytest.raises(EnhanceError, match="no shipped DTCN"):
        default_model(8000)


def test_api_rejects_bad_arrays(model_dir):
    d = Dereverberator.from_pretrained(model_dir)
    with pytest.raises(EnhanceError, match="no samples"):
        d.enhance(np.zeros(0, np.float32), 8000)
    with pytest.raises(EnhanceError, match="NaN or Inf"):
        d.enhance(np.array([0.0, np.inf], np.float32), 8000)
    with pytest.raises(EnhanceError, match="shape"):
        d.enhance(np.zeros((1, 2, 3), np.float32), 8000)
    with pytest.raises(EnhanceError, match="sample_rate"):
        d.enhance(np.zeros(10, np.float32), 0)


def test_non_finite_model_output_is_an_error_naming_the_input_and_nothing_is_written(reverberant, tmp_path):
    torch.manual_seed(0)
    model = nan_weights(perturbed(DTCN(**TINY)))
    model.sample_rate = 8000
    src = write_wav(tmp_path / "in.wav", level(reverberant, 0.5, 16000), 8000)
    d = Dereverberator(model, gain="none")
    with pytest.raises(EnhanceError, match="NaN or Inf") as err:
        d.enhance_file(src, tmp_path / "out.wav")
    assert str(src) in str(err.value)
    assert "\n" not in str(err.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.wav"]  # no output, no temporary file
    with pytest.raises(EnhanceError, match=str(src)):
        d.enhance_file(src)
    with pytest.raises(EnhanceError, match="NaN or Inf"):
        d.enhance(level(reverberant, 0.5), 8000)
    # a finite model with a gain that overflows float32
    torch.manual_seed(0)
    finite = perturbed(DTCN(**TINY))
    finite.sample_rate = 8000
    with pytest.raises(EnhanceError, match="NaN or Inf"):
        Dereverberator(finite, gain=1e300).enhance_file(src, tmp_path / "loud.wav", subtype="FLOAT")
    assert not (tmp_path / "loud.wav").exists()


def test_api_refuses_bad_devices_and_chunk_lengths(model_dir):
    for device in ("foo", "meta", "cuda:99" if torch.cuda.is_available() else "cuda"):
        with pytest.raises(ConfigError, match=r"device|CUDA"):
            Dereverberator.from_pretrained(model_dir, device=device)
    for chunk in (float("inf"), float("nan"), -1.0, 0, True):
        with pytest.raises(EnhanceError, match="chunk_seconds"):
            Dereverberator.from_pretrained(model_dir, chunk_seconds=chunk)
