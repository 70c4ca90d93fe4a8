"""Applying a room to dry speech: the reverberant input and the training targets ``direct`` and ``early``.

Both signals are aligned with the dry signal (the direct-path arrival at lag 0) and have its length.
The definitions and levels are in ``docs/data.md`` ("Room simulation and targets").
"""

from __future__ import annotations

import math

import numpy as np
import scipy.signal

from dereverb.data.rooms.config import speed_of_sound
from dereverb.data.rooms.simulation import Rir, frac_delay_latency
from dereverb.errors import DataError

__all__ = ["EARLY_MS", "TARGETS", "direct_filter", "reverberate"]

TARGETS = ("direct", "early")
"""The training targets a room can give (``data.target``)."""

EARLY_MS = 50.0
"""The ``early`` target keeps the RIR up to this many ms after the direct-path peak."""


def direct_filter(rir: Rir) -> tuple[np.ndarray, int]:
    """The direct path's fractional-delay filter, relative to ``direct_index``, and its centre tap.

    A Hann-windowed sinc of pyroomacoustics' length (81 taps) delayed by the fraction of a sample
    between the true arrival (distance / c, plus the filter latency) and ``direct_index``; a unit impulse
    when the distance is unknown (measured RIRs).

    Example:
        >>> r = Rir(np.ones(4, np.float32), 8000, 1, 0.3, 0.3, float("nan"), 3.0, (3, 3, 3))
        >>> direct_filter(r)
        (array([1.]), 0)
    """
    if not math.isfinite(rir.distance_m):
        return np.ones(1), 0
    half = frac_delay_latency()
    frac = rir.distance_m / speed_of_sound() * rir.sample_rate + half - rir.direct_index
    k = np.arange(-half, half + 1) - frac
    window = np.where(np.abs(k) <= half, 0.5 + 0.5 * np.cos(np.pi * k / half), 0.0)
    return np.sinc(k) * window, half


def reverberate(clean: np.ndarray, rir: Rir, target: str = "direct") -> tuple[np.ndarray, np.ndarray]:
    """Apply a room to a dry signal: the reverberant input and the training target.

    Both outputs have ``len(clean)`` samples and are shifted so that the direct-path arrival sits at lag
    0 relative to ``clean``: ``reverberant[t] = (clean * rir)[t + direct_index]``. Targets:

    - ``direct``: ``clean`` through the direct path alone, i.e. the direct path's fractional-delay
      filter at unit gain (equal to ``clean`` delayed by less than a sample).
    - ``early``: ``clean`` through ``rir[: direct_index + round(EARLY_MS / 1000 · sample_rate)]``: the
      direct path and the first 50 ms after it.

    Args:
        clean: Array[time], the dry signal.
        rir: the room.
        target: ``"direct"`` or ``"early"``.

    Returns:
        (reverberant, target), float32 Array[time] each.

    Raises:
        DataError: an unknown target, or a signal that is not 1-D.

    Example:
        >>> r = Rir(np.array([0, 1, 0, 0.5], np.float32), 8000, 1, 0.3, 0.3, float("nan"), 3.0, (3, 3, 3))
        >>> reverberate(np.array([1.0, 0, 0, 0]), r)
        (array([1. , 0. , 0.5, 0. ], dtype=float32), array([1., 0., 0., 0.], dtype=float32))
    """
    if target not in TARGETS:
        raise DataError(f"target={target!r}: expected one of {', '.join(TARGETS)}")
    clean = np.asarray(clean, dtype=np.float64)
    if clean.ndim != 1:
        raise DataError(f"clean of shape {clean.shape}: expected a 1-D signal")
    n, start = clean.size, rir.direct_index
    h = rir.rir.astype(np.float64)
    reverberant = scipy.signal.oaconvolve(clean, h)[start : start + n]
    if target == "early":
        early = h[: start + round(EARLY_MS * 1e-3 * rir.sample_rate)]
        out = scipy.signal.oaconvolve(clean, early)[start : start + n]
    else:
        g, centre = direct_filter(rir)
        out = np.convolve(clean, g)[centre : centre + n]
    return _fit(reverberant, n), _fit(out, n)


def _fit(x: np.ndarray, n: int) -> np.ndarray:
    """``x`` as float32, zero-padded to ``n`` samples (a convolution is shorter only for tiny inputs)."""
    out = np.zeros(n, dtype=np.float32)
    out[: x.size] = x
    return out
