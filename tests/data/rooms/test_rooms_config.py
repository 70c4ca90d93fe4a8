"""``RoomConfig``: defaults, every value checked; ``sample_room`` draws rooms that suit the T60."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dereverb.data.rooms import RoomConfig, sample_room
from dereverb.data.rooms.config import sabine_absorption
from dereverb.errors import DataError


def test_default_config_is_valid_and_lists_become_tuples():
    assert RoomConfig().t60_range == (0.2, 1.2)
    assert RoomConfig().distance_range == (0.5, 4.0)
    config = RoomConfig(t60_range=[0.3, 0.5])
    assert config.t60_range == (0.3, 0.5)
    assert RoomConfig(**config.to_dict()) == config


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"t60_range": (-0.2, 1.0)}, "t60_range"),
        ({"t60_range": (1.2, 0.2)}, "t60_range"),
        ({"t60_range": (0.2, math.nan)}, "t60_range"),
        ({"t60_range": (0.2, 1.0, 2.0)}, "t60_range"),
        ({"t60_range": "short"}, "t60_range"),
        ({"t60_range": (0.02, 0.5)}, "t60_range"),  # below 0.05 s
        ({"t60_range": (0.2, 3.0)}, "t60_range"),  # too long for the largest room
        ({"t60_range": (0.06, 0.5)}, "t60_range"),  # too short for the smallest room
        ({"distance_range": (0.0, 2.0)}, "distance_range"),
        ({"distance_range": (3.0, 1.0)}, "distance_range"),
        ({"distance_range": (0.5, 30.0)}, "distance_range"),  # cannot fit
        ({"length_range": (1.0, 20.0)}, "length_range"),  # no space inside the margins
        ({"aspect_range": (0.5, 1.5)}, "aspect_range"),
        ({"height_range": (5.0, 2.5)}, "height_range"),
        ({"absorption_range": (0.1, 1.0)}, "absorption_range"),
        ({"wall_margin": 0.0}, "wall_margin"),
        ({"wall_margin": -1.0}, "wall_margin"),
        ({"wall_margin": "wide"}, "wall_margin"),
        ({"rir_duration": 0.1}, "rir_duration"),
        ({"rir_duration": math.inf}, "rir_duration"),
        ({"source_height_range": (1.2, 2.4)}, "source_height_range"),  # above the lowest ceiling's margin
        ({"mic_height_range": (0.2, 1.0)}, "mic_height_range"),  # below the floor margin
    ],
)
def test_bad_config_values_are_refused(kwargs, name):
    with pytest.raises(DataError, match=f"RoomConfig.{name}="):
        RoomConfig(**kwargs)


def test_sample_room_suits_the_t60_and_the_margins():
    config = RoomConfig(t60_range=(0.3, 0.9), distance_range=(1.0, 2.0))
    for seed in range(20):
        t60, dim, src, mic = sample_room(config, np.random.default_rng(seed))
        assert 0.3 <= t60 <= 0.9
        assert 1.0 - 1e-9 <= float(np.linalg.norm(src - mic)) <= 2.0 + 1e-9
        assert config.absorption_range[0] <= sabine_absorption(t60, dim) <= config.absorption_range[1]
        for p in (src, mic):
            assert np.all(p[:2] >= config.wall_margin)
            assert np.all(p[:2] <= dim[:2] - config.wall_margin)
    a = sample_room(config, np.random.default_rng(7))
    b = sample_room(config, np.random.default_rng(7))
    assert a[0] == b[0]
    assert all(np.array_equal(x, y) for x, y in zip(a[1:], b[1:], strict=True))


def test_sabine_absorption_grows_with_the_surface_and_falls_with_the_t60():
    assert sabine_absorption(0.5, (5.0, 4.0, 3.0)) == pytest.approx(0.161 * 60 / (94 * 0.5), rel=0.01)
    assert sabine_absorption(1.0, (5.0, 4.0, 3.0)) == pytest.approx(sabine_absorption(0.5, (5.0, 4.0, 3.0)) / 2)
    assert not math.isnan(sabine_absorption(0.2, (20.0, 20.0, 5.0)))
