"""The WPE baseline: its settings, its output's shape, and a real gain on reverberant speech."""

from __future__ import annotations

import numpy as np
import pytest

from dereverb.baselines import BASELINES, WpeSettings, wpe
from dereverb.data import rooms, speech_pack
from dereverb.data.audio import read_audio
from dereverb.metrics import si_sdr


def _utterance(rate: int) -> np.ndarray:
    """One short utterance (1 to 2.5 s) of the shipped speech pack."""
    f = next(f for f in speech_pack.load_manifest("test", min_sample_rate=16000) if 1.0 <= f.duration_s <= 2.5)
    return read_audio(f.path, rate, resample=True)


def test_settings_follow_the_rate():
    settings = WpeSettings()
    assert settings.stft_sizes(8000) == (512, 128)
    assert settings.stft_sizes(16000) == (1024, 256)
    described = settings.describe(16000)
    assert described == {"window_ms": 64, "shift_ms": 16, "taps": 10, "delay": 2, "iterations": 3,
                         "psd_context": 0, "stft_size": 1024, "stft_shift": 256, "sample_rate": 16000}  # fmt: skip
    assert BASELINES == {"wpe": wpe}


@pytest.mark.parametrize("n", [4000, 8001, 12345])
def test_output_has_the_input_length_and_dtype(n):
    x = np.random.default_rng(n).standard_normal(n).astype(np.float32)
    y = wpe(x, 8000)
    assert y.shape == (n,)
    assert y.dtype == np.float32
    assert np.isfinite(y).all()


def test_other_settings_change_the_output():
    x = np.random.default_rng(0).standard_normal(8000).astype(np.float32)
    default, longer = wpe(x, 8000), wpe(x, 8000, WpeSettings(taps=20))
    assert not np.allclose(default, longer)


def test_wpe_improves_si_sdr_on_a_reverberant_utterance(rir_bank):
    x, rir = _utterance(8000), max((rir_bank[i] for i in range(len(rir_bank))), key=lambda r: r.t60_s)
    reverberant, _ = rooms.reverberate(x, rir, "direct")
    _, early = rooms.reverberate(x, rir, "early")
    y = wpe(reverberant, 8000)
    assert y.shape == reverberant.shape
    assert np.isfinite(y).all()
    gain = si_sdr(y, early) - si_sdr(reverberant, early)
    assert gain > 0.5, gain
