"""One room impulse response (:class:`Rir`) simulated with pyroomacoustics in a random shoebox room.

The room comes from :func:`~dereverb.data.rooms.config.sample_room`, its wall absorption and image order
from :func:`~dereverb.data.rooms.calibration.calibrate`; pyroomacoustics then builds the RIR once with
that absorption and order.

References:
    J. B. Allen and D. A. Berkley, "Image method for efficiently simulating small-room acoustics",
    J. Acoust. Soc. Am. 65(4), 1979.
    R. Scheibler, E. Bezzam and I. Dokmanić, "Pyroomacoustics: A Python package for audio room
    simulations and array processing algorithms", ICASSP 2018.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pyroomacoustics as pra

from dereverb.data.rooms.calibration import calibrate, image_amplitudes, measure_t60
from dereverb.data.rooms.config import RoomConfig, sabine_absorption, sample_room, speed_of_sound
from dereverb.errors import DataError

__all__ = ["DRR_WINDOW_MS", "Rir", "direct_peak", "drr_db", "frac_delay_latency", "simulate_rir"]

DRR_WINDOW_MS = 2.5
"""The direct part of the DRR: samples within this many ms of the direct-path peak."""


@dataclass(frozen=True)
class Rir:
    """One room impulse response and how it was made.

    Attributes:
        rir: float32 [n], the response from time 0 of the simulation; the direct path has unit gain.
        sample_rate: sampling rate, Hz.
        direct_index: sample index of the direct-path peak.
        t60_s: the requested T60, seconds (for a measured RIR: the measured one).
        t60_measured_s: Schroeder T30 of ``rir`` (:func:`~dereverb.data.rooms.measure_t60`), seconds.
        distance_m: source-microphone distance, metres (NaN when unknown).
        drr_db: direct-to-reverberant ratio, dB: energy within ``DRR_WINDOW_MS`` of ``direct_index``
            over the energy of all other samples.
        room_dim: room size (x, y, z), metres (NaN when unknown).
    """

    rir: np.ndarray
    sample_rate: int
    direct_index: int
    t60_s: float
    t60_measured_s: float
    distance_m: float
    drr_db: float
    room_dim: tuple[float, float, float]


def frac_delay_latency() -> int:
    """Samples by which pyroomacoustics delays every arrival (half its fractional-delay filter)."""
    return int(pra.constants.get("frac_delay_length")) // 2


def direct_peak(rir: np.ndarray, delay: float) -> int:
    """Index of the direct-path peak: the largest magnitude within 2 samples of the expected ``delay``.

    Example:
        >>> direct_peak(np.array([0.0, 0.2, 1.0, 0.1, 0.0, 0.9]), 1.4)
        2
    """
    centre = round(delay)
    lo = max(centre - 2, 0)
    return lo + int(np.argmax(np.abs(rir[lo : centre + 3])))


def drr_db(rir: np.ndarray, direct_index: int, sample_rate: int) -> float:
    """Direct-to-reverberant ratio, dB: energy within ``DRR_WINDOW_MS`` of ``direct_index`` over the rest.

    Example:
        >>> h = np.zeros(800)
        >>> h[[100, 400]] = [1.0, 0.1]
        >>> round(drr_db(h, 100, 8000), 6)
        20.0
    """
    half = round(DRR_WINDOW_MS * 1e-3 * sample_rate)
    energy = rir.astype(np.float64) ** 2
    direct = energy[max(direct_index - half, 0) : direct_index + half + 1].sum()
    rest = energy.sum() - direct
    return float(10.0 * np.log10(direct / rest)) if rest > 0 else math.inf


def simulate_rir(config: RoomConfig, sample_rate: int, rng: np.random.Generator) -> Rir:
    """Simulate one RIR: a random shoebox room, source and microphone, with a calibrated T60.

    Draws the T60 and the distance uniformly from ``config``, then a room and positions
    (:func:`~dereverb.data.rooms.sample_room`). The wall absorption is calibrated: the amplitudes of every
    image source arriving within ``config.rir_duration`` × T60 are summed per reflection order and
    sample, and the absorption is solved (Brent's method) so that the Schroeder T30 of that model RIR
    equals the T60; the image order is the smallest that keeps that T30 within 1 %. pyroomacoustics
    builds the RIR with that absorption and order; the RIR is cut at the duration (plus the
    fractional-delay latency) and scaled so that the direct path has unit gain.

    Args:
        config: the room settings.
        sample_rate: Hz (simulate at the rate used for training: cost grows with it).
        rng: the only source of randomness.

    Returns:
        The :class:`Rir`.

    Raises:
        DataError: a sample rate below 1000 Hz, or a room that no absorption calibrates.

    References:
        J. B. Allen and D. A. Berkley, "Image method for efficiently simulating small-room acoustics",
        J. Acoust. Soc. Am. 65(4), 1979.
    """
    if not isinstance(sample_rate, (int, np.integer)) or sample_rate < 1000:
        raise DataError(f"sample_rate={sample_rate!r}: expected an integer >= 1000 Hz")
    t60, dim, src, mic = sample_room(config, rng)
    distance = float(np.linalg.norm(src - mic))
    duration = config.rir_duration * t60

    amplitudes = image_amplitudes(dim, src, mic, sample_rate, duration)
    absorption, max_order = calibrate(amplitudes, t60, sample_rate, guess=sabine_absorption(t60, dim))
    room = pra.ShoeBox(dim, fs=int(sample_rate), materials=pra.Material(absorption), max_order=max_order)
    room.add_source(src)
    room.add_microphone(mic)
    room.compute_rir()
    latency = frac_delay_latency()
    n = round(duration * sample_rate) + latency + 1
    rir = np.zeros(n, dtype=np.float64)
    full = np.asarray(room.rir[0][0], dtype=np.float64)[:n]
    rir[: full.size] = full * distance  # pyroomacoustics' direct path has amplitude 1 / distance

    direct_index = direct_peak(rir, distance / speed_of_sound() * sample_rate + latency)
    rir = rir.astype(np.float32)
    return Rir(
        rir=rir,
        sample_rate=int(sample_rate),
        direct_index=direct_index,
        t60_s=t60,
        t60_measured_s=measure_t60(rir, sample_rate),
        distance_m=distance,
        drr_db=drr_db(rir, direct_index, sample_rate),
        room_dim=(float(dim[0]), float(dim[1]), float(dim[2])),
    )
