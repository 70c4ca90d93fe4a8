"""Simulated RIRs: rooms that follow the config, the direct path at unit gain, the DRR."""

from __future__ import annotations

import math

import numpy as np
import pyroomacoustics as pra
import pytest

from dereverb.data.rooms import RoomConfig, simulate_rir
from dereverb.errors import DataError

C = pra.constants.get("c")
LATENCY = pra.constants.get("frac_delay_length") // 2


def _config(bank) -> RoomConfig:
    return RoomConfig(**bank.settings["config"])


def test_bank_rooms_follow_the_config(rir_bank):
    config = _config(rir_bank)
    for rir in (rir_bank[i] for i in range(len(rir_bank))):
        assert config.t60_range[0] <= rir.t60_s <= config.t60_range[1]
        assert config.distance_range[0] <= rir.distance_m <= config.distance_range[1]
        assert rir.t60_measured_s == pytest.approx(rir.t60_s, rel=0.15)
        x, y, z = rir.room_dim
        assert config.length_range[0] <= x <= config.length_range[1]
        assert config.aspect_range[0] <= x / y <= config.aspect_range[1]
        assert config.height_range[0] <= z <= config.height_range[1]
        # the direct path: at the propagation delay plus the fractional-delay latency, with unit gain
        assert abs(rir.direct_index - (rir.distance_m / C * rir.sample_rate + LATENCY)) <= 1.5
        assert 0.6 < rir.rir[rir.direct_index] < 1.3
        assert np.abs(rir.rir[: rir.direct_index - LATENCY - 2]).max() < 0.05  # nothing before the sound
        assert rir.rir.dtype == np.float32
        assert rir.rir.size == round(rir.t60_s * rir.sample_rate) + LATENCY + 1
        assert -20 < rir.drr_db < 20


def test_drr_definition(tmp_path, fake):
    """Energy within 2.5 ms (20 samples at 8 kHz) of the direct peak over the energy of the rest."""
    h = fake.decaying_noise(0.3, 8000, 0.4) * 0.05
    h[100] = 1.0
    (rir,) = fake.measured_rirs(tmp_path, [h])
    direct = np.sum(h[80:121] ** 2)
    assert rir.drr_db == pytest.approx(10 * math.log10(direct / (np.sum(h**2) - direct)), rel=1e-4)


def test_bad_sample_rate_is_refused():
    with pytest.raises(DataError, match="sample_rate=800"):
        simulate_rir(RoomConfig(), 800, np.random.default_rng(0))
