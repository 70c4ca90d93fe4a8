"""The random rooms: their settings (:class:`RoomConfig`) and drawing one room with a source and a microphone.

A room is a random shoebox whose size suits the requested T60: the T60 and the source-microphone distance
are drawn first, then the room is redrawn until the mean wall absorption that Sabine's formula needs for
that T60 lies in ``absorption_range``, which ties the room size to the T60.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyroomacoustics as pra

from dereverb.errors import DataError

__all__ = ["RoomConfig", "sabine_absorption", "sample_room", "speed_of_sound"]


def speed_of_sound() -> float:
    """The speed of sound pyroomacoustics simulates with, m/s."""
    return float(pra.constants.get("c"))


def sabine_absorption(t60: float, room_dim: Sequence[float]) -> float:
    """Mean energy absorption that Sabine's formula gives for ``t60`` in a shoebox ``room_dim``.

    Example:
        >>> round(sabine_absorption(0.5, (5.0, 4.0, 3.0)), 3)
        0.206
    """
    x, y, z = room_dim
    volume, surface = x * y * z, 2.0 * (x * y + x * z + y * z)
    return 24.0 * math.log(10.0) * volume / (speed_of_sound() * surface * t60)


@dataclass(frozen=True)
class RoomConfig:
    """Settings of the random rooms; every value is checked when the config is built.

    The T60 and the source-microphone distance are drawn uniformly from their ranges. The room is then
    drawn (length, width = length / aspect, height, each uniform in its range) until the mean wall
    absorption that Sabine's formula needs for that T60 lies in ``absorption_range``: this ties the room
    size to the T60 (short T60s get small rooms, long ones large rooms) and keeps the walls plausible.
    The absorption actually used is then calibrated (see :func:`~dereverb.data.rooms.simulate_rir`).

    Args:
        t60_range: requested reverberation time range, seconds.
        distance_range: source-microphone distance range, metres.
        length_range: range of the longer floor side, metres.
        aspect_range: range of length / width of the floor (>= 1).
        height_range: range of the room height, metres.
        absorption_range: range of the Sabine mean energy absorption a room may need for its T60.
        wall_margin: smallest distance of the source and the microphone to any wall, metres.
        source_height_range: range of the source (talker's mouth) height, metres.
        mic_height_range: range of the microphone height, metres.
        rir_duration: simulated RIR length as a multiple of the requested T60 (1.0: down to about -60 dB).

    Raises:
        DataError: one line naming the field (``RoomConfig.<field>=<value>: ...``).

    Example:
        >>> RoomConfig(t60_range=[0.3, 0.5]).t60_range
        (0.3, 0.5)
    """

    t60_range: tuple[float, float] = (0.2, 1.2)
    distance_range: tuple[float, float] = (0.5, 4.0)
    length_range: tuple[float, float] = (3.0, 20.0)
    aspect_range: tuple[float, float] = (1.0, 1.8)
    height_range: tuple[float, float] = (2.5, 5.0)
    absorption_range: tuple[float, float] = (0.15, 0.6)
    wall_margin: float = 0.5
    source_height_range: tuple[float, float] = (1.2, 1.9)
    mic_height_range: tuple[float, float] = (0.8, 1.8)
    rir_duration: float = 1.0

    def __post_init__(self) -> None:
        self._check_values()
        self._check_geometry()
        self._check_reachable()

    def _check_values(self) -> None:
        """Each field on its own: ranges as finite positive ``(low, high)`` pairs, numbers finite."""
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name.endswith("_range"):
                value = _check_range(f.name, value)
                object.__setattr__(self, f.name, value)  # lists (from YAML) become tuples
            elif not (isinstance(value, (int, float)) and math.isfinite(value)) or isinstance(value, bool):
                raise DataError(f"RoomConfig.{f.name}={value!r}: expected a finite number")
        if self.t60_range[0] < 0.05:
            raise DataError(f"RoomConfig.t60_range={self.t60_range}: T60 below 0.05 s is not supported")
        if self.aspect_range[0] < 1.0:
            raise DataError(f"RoomConfig.aspect_range={self.aspect_range}: length / width must be >= 1")
        if self.absorption_range[1] >= 1.0:
            raise DataError(f"RoomConfig.absorption_range={self.absorption_range}: absorption must be < 1")
        if self.wall_margin <= 0:
            raise DataError(f"RoomConfig.wall_margin={self.wall_margin}: must be > 0")
        if not 0.25 <= self.rir_duration <= 2.0:
            raise DataError(f"RoomConfig.rir_duration={self.rir_duration}: expected 0.25 to 2.0 (times the T60)")

    def _check_geometry(self) -> None:
        """The source and the microphone fit inside the margins, at the longest distance in the largest room."""
        min_width = self.length_range[0] / self.aspect_range[1]
        if min_width <= 2 * self.wall_margin:
            raise DataError(
                f"RoomConfig.length_range={self.length_range}: the narrowest room ({min_width:.2f} m) "
                f"leaves no space inside wall_margin={self.wall_margin}"
            )
        for name in ("source_height_range", "mic_height_range"):
            lo, hi = getattr(self, name)
            if lo < self.wall_margin or hi > self.height_range[0] - self.wall_margin:
                raise DataError(
                    f"RoomConfig.{name}={(lo, hi)}: must lie within wall_margin={self.wall_margin} "
                    f"of the floor and of the lowest ceiling ({self.height_range[0]} m)"
                )
        big_x = self.length_range[1] - 2 * self.wall_margin
        big_y = self.length_range[1] / self.aspect_range[0] - 2 * self.wall_margin
        big_z = max(
            self.source_height_range[1] - self.mic_height_range[0],
            self.mic_height_range[1] - self.source_height_range[0],
        )
        if self.distance_range[1] > 0.95 * math.sqrt(big_x**2 + big_y**2 + big_z**2):
            raise DataError(
                f"RoomConfig.distance_range={self.distance_range}: {self.distance_range[1]} m cannot fit "
                f"in the largest room allowed by length_range and aspect_range"
            )

    def _check_reachable(self) -> None:
        """Sabine absorption falls with the room size: the smallest room must reach the shortest T60 and
        the largest room the longest T60 within ``absorption_range``."""
        small = (self.length_range[0], self.length_range[0] / self.aspect_range[1], self.height_range[0])
        large = (self.length_range[1], self.length_range[1] / self.aspect_range[0], self.height_range[1])
        if sabine_absorption(self.t60_range[0], small) > self.absorption_range[1]:
            raise DataError(
                f"RoomConfig.t60_range={self.t60_range}: T60 {self.t60_range[0]} s needs more absorption than "
                f"absorption_range={self.absorption_range} allows even in the smallest room"
            )
        if sabine_absorption(self.t60_range[1], large) < self.absorption_range[0]:
            raise DataError(
                f"RoomConfig.t60_range={self.t60_range}: T60 {self.t60_range[1]} s needs less absorption than "
                f"absorption_range={self.absorption_range} allows even in the largest room"
            )

    def to_dict(self) -> dict:
        """The settings as plain JSON-able values (ranges as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


def _check_range(name: str, value) -> tuple[float, float]:
    """A ``(low, high)`` pair of finite positive numbers with ``low <= high``, or DataError."""
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise DataError(f"RoomConfig.{name}={value!r}: expected a (low, high) pair of numbers") from None
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo <= 0:
        raise DataError(f"RoomConfig.{name}={value!r}: bounds must be finite and > 0")
    if lo > hi:
        raise DataError(f"RoomConfig.{name}={value!r}: low bound above high bound")
    return (lo, hi)


def sample_room(config: RoomConfig, rng: np.random.Generator) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    """Draw a T60 and a room that suits it, with a source and a microphone (see :class:`RoomConfig`).

    The T60 and the distance are uniform in their ranges; the room is drawn until its Sabine absorption
    for that T60 lies in ``absorption_range`` and it holds the source and microphone, at the drawn
    distance, within ``wall_margin`` of the walls.

    Args:
        config: the room settings.
        rng: the only source of randomness.

    Returns:
        (t60 in seconds, room_dim, source, mic), positions as float64 Array[3] in metres.

    Raises:
        DataError: if no such room is found in 10,000 draws.

    Example:
        >>> t60, dim, src, mic = sample_room(RoomConfig(distance_range=(1.0, 1.0)), np.random.default_rng(0))
        >>> round(float(np.linalg.norm(src - mic)), 6)
        1.0
    """
    t60 = float(rng.uniform(*config.t60_range))
    distance = float(rng.uniform(*config.distance_range))
    for _ in range(10_000):
        length = rng.uniform(*config.length_range)
        dim = np.array([length, length / rng.uniform(*config.aspect_range), rng.uniform(*config.height_range)])
        a = sabine_absorption(t60, dim)
        if not config.absorption_range[0] <= a <= config.absorption_range[1]:
            continue
        placed = _place(config, dim, distance, rng)
        if placed is not None:
            return (t60, dim, *placed)
    raise DataError(f"RoomConfig: no room found for T60 {t60:.3f} s and distance {distance:.2f} m; widen the ranges")


def _place(config: RoomConfig, dim: np.ndarray, distance: float, rng: np.random.Generator):
    """A source and a microphone ``distance`` apart inside the margins of ``dim`` (20 tries), or None."""
    m = config.wall_margin
    for _ in range(20):
        mic = np.array([rng.uniform(m, dim[0] - m), rng.uniform(m, dim[1] - m), rng.uniform(*config.mic_height_range)])
        z = rng.uniform(*config.source_height_range)
        horizontal = distance**2 - (z - mic[2]) ** 2
        if horizontal < 0:
            continue
        angle = rng.uniform(0, 2 * np.pi)
        src = np.array([*(mic[:2] + math.sqrt(horizontal) * np.array([np.cos(angle), np.sin(angle)])), z])
        if np.all(src[:2] >= m) and np.all(src[:2] <= dim[:2] - m):
            return src, mic
    return None
