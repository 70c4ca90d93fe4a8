"""``reverberate``: the reverberant input and the ``direct`` / ``early`` targets, aligned with the dry signal."""

from __future__ import annotations

import math

import numpy as np
import pyroomacoustics as pra
import pytest
import scipy.signal

from dereverb.data.rooms import EARLY_MS, Rir, RoomConfig, reverberate, sample_room
from dereverb.errors import DataError


def _peak_lag(a: np.ndarray, b: np.ndarray) -> int:
    """Lag of the cross-correlation peak of ``a`` against ``b`` (0 when they are aligned)."""
    lags = scipy.signal.correlation_lags(a.size, b.size)
    return int(lags[np.argmax(scipy.signal.correlate(a, b))])


@pytest.mark.parametrize("target", ["direct", "early"])
def test_targets_are_aligned_with_the_direct_path(rir_bank, target):
    clean = np.random.default_rng(0).standard_normal(4000)
    for i in range(len(rir_bank)):
        reverberant, out = reverberate(clean, rir_bank[i], target)
        assert reverberant.shape == out.shape == clean.shape
        assert reverberant.dtype == out.dtype == np.float32
        assert _peak_lag(out, reverberant) == 0
        assert _peak_lag(out, clean) == 0
        assert _peak_lag(reverberant, clean) == 0


def test_direct_target_is_the_direct_path_of_the_simulation():
    """The ``direct`` target equals the dry signal through pyroomacoustics' own direct path."""
    _, dim, src, mic = sample_room(RoomConfig(), np.random.default_rng(5))
    distance = float(np.linalg.norm(src - mic))
    room = pra.ShoeBox(dim, fs=8000, max_order=0)
    room.add_source(src)
    room.add_microphone(mic)
    hpf = pra.constants.get("rir_hpf_enable")
    pra.constants.set("rir_hpf_enable", False)  # its 10 Hz high-pass, cut with this short RIR, is not the path
    try:
        room.compute_rir()
    finally:
        pra.constants.set("rir_hpf_enable", hpf)
    h = np.asarray(room.rir[0][0]) * distance
    rir = Rir(h.astype(np.float32), 8000, int(np.argmax(h)), 0.5, 0.5, distance, math.inf, tuple(dim))
    clean = np.random.default_rng(1).standard_normal(8000)
    reverberant, target = reverberate(clean, rir, "direct")
    rms = np.sqrt(np.mean(reverberant.astype(np.float64) ** 2))
    assert np.sqrt(np.mean((target - reverberant).astype(np.float64) ** 2)) < 0.005 * rms
    assert not np.allclose(target, clean, atol=0.05)  # a true fractional delay, not the dry signal


def test_direct_target_of_a_measured_rir_is_the_dry_signal(tmp_path, fake):
    (rir,) = fake.measured_rirs(tmp_path, [fake.decaying_noise(0.3, 8000, 0.4) * 0.1 + np.eye(1, 3200, 40)[0]])
    clean = np.random.default_rng(2).standard_normal(1000)
    _, target = reverberate(clean, rir, "direct")
    np.testing.assert_allclose(target, clean.astype(np.float32), rtol=1e-6)


def test_early_target_keeps_exactly_50_ms_after_the_direct_path(rir_bank):
    rir = rir_bank[0]
    n_early = round(EARLY_MS * 1e-3 * rir.sample_rate)  # 400 samples at 8 kHz
    assert n_early == 400
    impulse = np.eye(1, 2000)[0]
    reverberant, early = reverberate(impulse, rir, "early")
    h = rir.rir.astype(np.float64)
    np.testing.assert_allclose(early[:n_early], h[rir.direct_index : rir.direct_index + n_early], atol=1e-6)
    np.testing.assert_allclose(early[n_early:], 0, atol=1e-6)
    np.testing.assert_allclose(reverberant, h[rir.direct_index : rir.direct_index + 2000], atol=1e-6)
    assert np.sum(early.astype(np.float64) ** 2) == pytest.approx(
        np.sum(h[rir.direct_index : rir.direct_index + 400] ** 2)
    )
    assert np.sum(reverberant.astype(np.float64) ** 2) > np.sum(early.astype(np.float64) ** 2) + 1e-3
    # and the part before the direct peak (the fractional-delay filter's first half) is in the target too
    clean = np.random.default_rng(3).standard_normal(3000)
    _, early = reverberate(clean, rir, "early")
    expected = scipy.signal.fftconvolve(clean, h[: rir.direct_index + n_early])[rir.direct_index :][:3000]
    np.testing.assert_allclose(early, expected, atol=1e-5)


@pytest.mark.parametrize("length", [1, 17, 399, 8001])
@pytest.mark.parametrize("target", ["direct", "early"])
def test_outputs_have_the_input_length(rir_bank, length, target):
    reverberant, out = reverberate(np.ones(length, np.float32), rir_bank[1], target)
    assert reverberant.shape == out.shape == (length,)


def test_reverberate_errors(rir_bank):
    with pytest.raises(DataError, match="target='late'"):
        reverberate(np.ones(10), rir_bank[0], "late")
    with pytest.raises(DataError, match="1-D"):
        reverberate(np.ones((2, 10)), rir_bank[0])
