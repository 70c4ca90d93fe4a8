"""Reverberation time: Schroeder's measurement, and simulated RIRs calibrated to the requested T60."""

from __future__ import annotations

import numpy as np
import pyroomacoustics as pra
import pytest

from dereverb.data.rooms import RoomConfig, measure_t60, sample_room, simulate_rir
from dereverb.errors import DataError


@pytest.mark.parametrize("sample_rate", [8000, 16000])
@pytest.mark.parametrize("t60", [0.25, 0.7, 1.5])
@pytest.mark.parametrize("decay_db", [20, 30])
def test_measure_t60_of_exponential_decay(sample_rate, t60, decay_db, fake):
    measured = [
        measure_t60(fake.decaying_noise(t60, sample_rate, 1.2 * t60, seed), sample_rate, decay_db) for seed in range(10)
    ]
    assert measured == pytest.approx([t60] * 10, rel=0.06)  # one noise realisation: a few % of spread
    assert np.mean(measured) == pytest.approx(t60, rel=0.015)  # and no bias


def test_measure_t60_errors(fake):
    noise = fake.decaying_noise(0.5, 8000, 0.5)
    with pytest.raises(DataError, match="decay_db=5"):
        measure_t60(noise, 8000, decay_db=5)
    with pytest.raises(DataError, match=r"decays by only 17\.0 dB"):  # a constant: 50 to 1 at the last sample
        measure_t60(np.ones(50), 8000)
    with pytest.raises(DataError, match="silent"):
        measure_t60(np.zeros(100), 8000)
    with pytest.raises(DataError, match="1-D"):
        measure_t60(np.zeros((2, 100)), 8000)


@pytest.mark.parametrize("t60", [0.2, 0.5, 0.8, 1.2])
def test_simulated_t60_matches_request(t60):
    rir = simulate_rir(RoomConfig(t60_range=(t60, t60)), 8000, np.random.default_rng(1))
    assert rir.t60_s == t60
    assert rir.t60_measured_s == measure_t60(rir.rir, 8000)
    assert rir.t60_measured_s == pytest.approx(t60, rel=0.15)


@pytest.mark.slow
@pytest.mark.parametrize("sample_rate", [8000, 16000])
@pytest.mark.parametrize("t60", [0.2, 0.3, 0.45, 0.6, 0.8, 1.0, 1.2])
def test_simulated_t60_matches_request_sweep(sample_rate, t60):
    config = RoomConfig(t60_range=(t60, t60))
    for seed in range(5):
        rir = simulate_rir(config, sample_rate, np.random.default_rng((seed, 7)))
        assert measure_t60(rir.rir, sample_rate) == pytest.approx(t60, rel=0.15), (seed, rir.room_dim)


def test_uncalibrated_sabine_would_fail():
    """The calibration matters: Sabine's absorption in the same long-T60 room misses by far more."""
    config, rng = RoomConfig(t60_range=(1.0, 1.0)), np.random.default_rng(3)
    t60, dim, src, mic = sample_room(config, rng)
    absorption, max_order = pra.inverse_sabine(t60, dim)
    room = pra.ShoeBox(dim, fs=8000, materials=pra.Material(absorption), max_order=max_order)
    room.add_source(src)
    room.add_microphone(mic)
    room.compute_rir()
    assert measure_t60(room.rir[0][0], 8000) > 1.15 * t60
    calibrated = simulate_rir(config, 8000, np.random.default_rng(3))
    assert calibrated.room_dim == tuple(dim)
    assert calibrated.t60_measured_s == pytest.approx(t60, rel=0.05)
