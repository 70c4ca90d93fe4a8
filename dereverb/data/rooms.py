"""Room impulse responses simulated with pyroomacoustics, their T60 calibration, and the training targets.

A room is a random shoebox whose size suits the requested T60; one source and one microphone give one
RIR. Shoebox image-source RIRs do not decay as Sabine's (or Eyring's) formula predicts, so the wall
absorption is *calibrated* for every room: the image sources that arrive within the simulated
duration are enumerated in closed form and their amplitudes summed per reflection order and sample
(this depends on the geometry only), the absorption is solved so that the Schroeder T30 of that model
RIR equals the requested T60, and the image order is cut where higher orders no longer change it.
pyroomacoustics then builds the RIR once with that absorption and order.

Simulation is too slow to run per training example (seconds per RIR for T60 around 1 s), so RIRs are
precomputed into an :class:`RirBank` folder at preparation time and applied with FFT convolution by
:func:`reverberate` during training. The targets and levels are defined in ``docs/data.md``
("Room simulation and targets").

References:
    J. B. Allen and D. A. Berkley, "Image method for efficiently simulating small-room acoustics",
    J. Acoust. Soc. Am. 65(4), 1979.
    M. R. Schroeder, "New method of measuring reverberation time", J. Acoust. Soc. Am. 37(3), 1965.
    R. Scheibler, E. Bezzam and I. Dokmanić, "Pyroomacoustics: A Python package for audio room
    simulations and array processing algorithms", ICASSP 2018.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import math
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyroomacoustics as pra
import scipy.optimize
import scipy.signal
import soundfile as sf
from tqdm import tqdm

from dereverb.errors import DataError

__all__ = [
    "EARLY_MS",
    "TARGETS",
    "Rir",
    "RirBank",
    "RoomConfig",
    "load_rir_folder",
    "measure_t60",
    "reverberate",
    "sample_room",
    "simulate_rir",
]

log = logging.getLogger(__name__)

TARGETS = ("direct", "early")
EARLY_MS = 50.0  # the ``early`` target keeps the RIR up to this many ms after the direct-path peak
DRR_WINDOW_MS = 2.5  # the direct part of the DRR: samples within this many ms of the direct-path peak
_EDC_START_DB = -5.0  # Schroeder fits start 5 dB below the total energy (ISO 3382-1)
_BANK_VERSION = 1
_CSV_FIELDS = (
    "id",
    "file",
    "sample_rate",
    "direct_index",
    "t60_s",
    "t60_measured_s",
    "distance_m",
    "drr_db",
    "room_x_m",
    "room_y_m",
    "room_z_m",
    "seed",
)


def _speed_of_sound() -> float:
    return float(pra.constants.get("c"))


def _frac_delay_latency() -> int:
    """Samples by which pyroomacoustics delays every arrival (half its fractional-delay filter)."""
    return int(pra.constants.get("frac_delay_length")) // 2


def _sabine_absorption(t60: float, room_dim: Sequence[float]) -> float:
    """Mean energy absorption that Sabine's formula gives for ``t60`` in a shoebox ``room_dim``."""
    x, y, z = room_dim
    volume, surface = x * y * z, 2.0 * (x * y + x * z + y * z)
    return 24.0 * math.log(10.0) * volume / (_speed_of_sound() * surface * t60)


@dataclass(frozen=True)
class RoomConfig:
    """Settings of the random rooms; every value is checked when the config is built.

    The T60 and the source-microphone distance are drawn uniformly from their ranges. The room is then
    drawn (length, width = length / aspect, height, each uniform in its range) until the mean wall
    absorption that Sabine's formula needs for that T60 lies in ``absorption_range``: this ties the room
    size to the T60 (short T60s get small rooms, long ones large rooms) and keeps the walls plausible.
    The absorption actually used is then calibrated (see :func:`simulate_rir`).

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
        # the largest room must hold the longest distance
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
        # Sabine absorption decreases with the room size: the smallest room must reach the shortest T60
        # and the largest room the longest T60 within absorption_range.
        small = (self.length_range[0], self.length_range[0] / self.aspect_range[1], self.height_range[0])
        large = (self.length_range[1], self.length_range[1] / self.aspect_range[0], self.height_range[1])
        if _sabine_absorption(self.t60_range[0], small) > self.absorption_range[1]:
            raise DataError(
                f"RoomConfig.t60_range={self.t60_range}: T60 {self.t60_range[0]} s needs more absorption than "
                f"absorption_range={self.absorption_range} allows even in the smallest room"
            )
        if _sabine_absorption(self.t60_range[1], large) < self.absorption_range[0]:
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


@dataclass(frozen=True)
class Rir:
    """One room impulse response and how it was made.

    Attributes:
        rir: float32 [n], the response from time 0 of the simulation; the direct path has unit gain.
        sample_rate: sampling rate, Hz.
        direct_index: sample index of the direct-path peak.
        t60_s: the requested T60, seconds (for a measured RIR: the measured one).
        t60_measured_s: Schroeder T30 of ``rir`` (:func:`measure_t60`), seconds.
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


def measure_t60(rir: np.ndarray, sample_rate: int, decay_db: int = 30) -> float:
    """Reverberation time by Schroeder backward integration.

    The energy decay curve EDC(t) = sum of rir² from t to the end, in dB relative to its start, is
    fitted by least squares between -5 dB and -(5 + ``decay_db``) dB, and the fitted slope is
    extrapolated to a 60 dB decay (T30 for ``decay_db=30``, T20 for 20).

    Args:
        rir: Array[n], an impulse response (no noise-floor compensation is made).
        sample_rate: Hz.
        decay_db: the fitted decay range, 10 to 50 dB.

    Returns:
        The T60 in seconds.

    Raises:
        DataError: if ``decay_db`` is out of range or the response does not decay that far.

    References:
        M. R. Schroeder, "New method of measuring reverberation time", J. Acoust. Soc. Am. 37(3), 1965.
        ISO 3382-1:2009, Acoustics — Measurement of room acoustic parameters.

    Example:
        >>> fs, t60 = 8000, 0.5
        >>> t = np.arange(fs) / fs
        >>> rir = np.random.default_rng(0).standard_normal(fs) * 10 ** (-3 * t / t60)
        >>> abs(measure_t60(rir, fs) - t60) < 0.02
        True
    """
    if not 10 <= decay_db <= 50:
        raise DataError(f"decay_db={decay_db}: expected 10 to 50 dB")
    rir = np.asarray(rir, dtype=np.float64)
    if rir.ndim != 1 or rir.size < 2:
        raise DataError(f"rir of shape {rir.shape}: expected a 1-D response")
    edc = np.cumsum(rir[::-1] ** 2)[::-1]
    return _t60_from_edc(edc, sample_rate, decay_db)


def _t60_from_edc(edc: np.ndarray, sample_rate: int, decay_db: float) -> float:
    """T60 from a (linear, backward-integrated) energy decay curve; see :func:`measure_t60`."""
    if not edc[0] > 0:
        raise DataError("rir is silent: cannot measure its T60")
    with np.errstate(divide="ignore"):
        edc_db = 10.0 * np.log10(edc / edc[0])
    start = int(np.argmax(edc_db <= _EDC_START_DB))
    stop = int(np.argmax(edc_db <= _EDC_START_DB - decay_db))
    if stop <= start + 1:
        reached = edc_db[np.isfinite(edc_db)].min()
        raise DataError(f"rir decays by only {-reached:.1f} dB: cannot fit a {decay_db} dB decay")
    t = np.arange(start, stop) / sample_rate
    slope = np.polyfit(t, edc_db[start:stop], 1)[0]
    return float(-60.0 / slope)


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
    """
    t60 = float(rng.uniform(*config.t60_range))
    distance = float(rng.uniform(*config.distance_range))
    m = config.wall_margin
    for _ in range(10_000):
        length = rng.uniform(*config.length_range)
        dim = np.array([length, length / rng.uniform(*config.aspect_range), rng.uniform(*config.height_range)])
        a = _sabine_absorption(t60, dim)
        if not config.absorption_range[0] <= a <= config.absorption_range[1]:
            continue
        for _ in range(20):
            mic = np.array(
                [rng.uniform(m, dim[0] - m), rng.uniform(m, dim[1] - m), rng.uniform(*config.mic_height_range)]
            )
            z = rng.uniform(*config.source_height_range)
            horizontal = distance**2 - (z - mic[2]) ** 2
            if horizontal < 0:
                continue
            angle = rng.uniform(0, 2 * np.pi)
            src = np.array([*(mic[:2] + math.sqrt(horizontal) * np.array([np.cos(angle), np.sin(angle)])), z])
            if np.all(src[:2] >= m) and np.all(src[:2] <= dim[:2] - m):
                return t60, dim, src, mic
    raise DataError(f"RoomConfig: no room found for T60 {t60:.3f} s and distance {distance:.2f} m; widen the ranges")


def _image_amplitudes(dim, src, mic, sample_rate: int, duration: float) -> np.ndarray:
    """Amplitude arriving per reflection order and sample from all image sources within ``duration``.

    Image source n along an axis of length L sits at n·L + s (n even) or n·L + L - s (n odd) and has
    |n| reflections on that axis (Allen & Berkley 1979); pyroomacoustics gives an image of order o at
    distance d the amplitude β^o / d with β = sqrt(1 - absorption). Arrivals are rounded to the
    nearest sample: unlike a sum of image energies this keeps the coherent low-frequency build-up of
    the dense late arrivals, which slows the decay of image-method RIRs.

    Returns:
        Array[orders, samples]: sum of 1 / d over the images of order o arriving at sample t.
    """
    c = _speed_of_sound()
    radius = c * duration
    n_samples = round(duration * sample_rate) + 1
    axes = []
    for length, s, r in zip(dim, src, mic, strict=True):
        k = math.ceil(radius / length) + 1
        n = np.arange(-k, k + 1)
        pos = n * length + np.where(n % 2 == 0, s, length - s)
        axes.append((pos - r, np.abs(n)))
    (dx, ox), (dy, oy), (dz, oz) = axes
    dyz2 = dy[:, None] ** 2 + dz[None, :] ** 2
    oyz = oy[:, None] + oz[None, :]
    hist = np.zeros((int(ox.max() + oyz.max()) + 1) * n_samples)
    for x, o in zip(dx, ox, strict=True):
        d2 = x * x + dyz2
        keep = d2 <= radius * radius
        if keep.any():
            d = np.sqrt(d2[keep])
            t = np.rint(d * (sample_rate / c)).astype(np.int64)
            hist += np.bincount((o + oyz[keep]) * n_samples + t, weights=1.0 / d, minlength=hist.size)
    hist = hist.reshape(-1, n_samples)
    return hist[: np.flatnonzero(hist.any(axis=1)).max() + 1]


def _model_t30(amplitudes: np.ndarray, log_beta: float, sample_rate: int, hpf) -> float:
    """Schroeder T30 of the image-method RIR model for the reflection coefficient exp(log_beta)."""
    h = np.exp(np.arange(amplitudes.shape[0]) * log_beta) @ amplitudes
    if hpf is not None:
        h = scipy.signal.sosfiltfilt(hpf, h)
    try:
        return _t60_from_edc(np.cumsum(h[::-1] ** 2)[::-1], sample_rate, 30)
    except DataError:  # decays too fast to fit a 30 dB decay
        return 0.0


def _calibrate(amplitudes: np.ndarray, t60: float, sample_rate: int, guess: float) -> tuple[float, int]:
    """The wall absorption whose model T30 equals ``t60``, and the image order the simulation needs.

    The order is the smallest one whose truncated model keeps the T30 within 1 % of the full model;
    the absorption is then solved again with that truncation, so it matches what pyroomacoustics
    computes with that ``max_order``.

    Args:
        amplitudes: Array[orders, samples] from :func:`_image_amplitudes`.
        t60: the requested T60, seconds.
        sample_rate: Hz.
        guess: a first absorption (Sabine's) to start the search from.

    Returns:
        (energy absorption, max_order).
    """
    hpf = None
    if pra.constants.get("rir_hpf_enable"):
        hpf = pra.utilities.design_highpass_filter_sos(
            sample_rate, pra.constants.get("rir_hpf_fc"), **pra.constants.get("rir_hpf_kwargs")
        )
    # log β = log sqrt(1 - absorption) for absorptions from 0.99 down to 0.002
    most, least = 0.5 * math.log(1.0 - 0.99), 0.5 * math.log(1.0 - 0.002)

    def solve(amp: np.ndarray, start: float, step: float) -> float:
        def error(log_beta: float) -> float:
            return _model_t30(amp, log_beta, sample_rate, hpf) - t60

        # T30 grows as the absorption falls, until the cut at the simulated duration dominates the
        # decay; the root wanted is the first one coming from high absorption. Step from ``start``
        # (a nearby absorption) to a bracket; fall back to a scan of the whole range.
        g = min(max(start, most), least)
        sign = error(g) >= 0
        for _ in range(64):
            prev, g = g, (max(g * step, most) if sign else min(g / step, least))
            if (error(g) >= 0) != sign:
                return scipy.optimize.brentq(error, *sorted((prev, g)), xtol=1e-9, rtol=1e-6)
            if g in (most, least):
                break
        grid = np.linspace(most, least, 48)
        above = np.flatnonzero([error(x) >= 0 for x in grid])
        if above.size == 0 or above[0] == 0:
            raise DataError(f"T60 {t60:.3f} s cannot be reached in this room with an absorption of 0.002 to 0.99")
        return scipy.optimize.brentq(error, grid[above[0] - 1], grid[above[0]], xtol=1e-9, rtol=1e-6)

    log_beta = solve(amplitudes, 0.5 * math.log1p(-min(guess, 0.95)), 1.5)
    max_order = amplitudes.shape[0] - 1
    lo = 1
    while lo < max_order:  # bisection on the order: the truncated T30 grows with the order
        mid = (lo + max_order) // 2
        if _model_t30(amplitudes[: mid + 1], log_beta, sample_rate, hpf) >= 0.99 * t60:
            max_order = mid
        else:
            lo = mid + 1
    log_beta = solve(amplitudes[: max_order + 1], log_beta, 1.02)
    return float(1.0 - math.exp(2.0 * log_beta)), max_order


def _direct_peak(rir: np.ndarray, delay: float) -> int:
    """Index of the direct-path peak: the largest magnitude within 2 samples of the expected delay."""
    centre = round(delay)
    lo = max(centre - 2, 0)
    return lo + int(np.argmax(np.abs(rir[lo : centre + 3])))


def _drr_db(rir: np.ndarray, direct_index: int, sample_rate: int) -> float:
    half = round(DRR_WINDOW_MS * 1e-3 * sample_rate)
    energy = rir.astype(np.float64) ** 2
    direct = energy[max(direct_index - half, 0) : direct_index + half + 1].sum()
    rest = energy.sum() - direct
    return float(10.0 * np.log10(direct / rest)) if rest > 0 else math.inf


def simulate_rir(config: RoomConfig, sample_rate: int, rng: np.random.Generator) -> Rir:
    """Simulate one RIR: a random shoebox room, source and microphone, with a calibrated T60.

    Draws the T60 and the distance uniformly from ``config``, then a room and positions
    (:func:`sample_room`). The wall absorption is calibrated: the amplitudes of every image source
    arriving within ``config.rir_duration`` × T60 are summed per reflection order and sample, and the
    absorption is solved (Brent's method) so that the Schroeder T30 of that model RIR equals the T60;
    the image order is the smallest that keeps that T30 within 1 %. pyroomacoustics builds the RIR
    with that absorption and order; the RIR is cut at the duration (plus the fractional-delay latency)
    and scaled so that the direct path has unit gain.

    Args:
        config: the room settings.
        sample_rate: Hz (simulate at the rate used for training: cost grows with it).
        rng: the only source of randomness.

    Returns:
        The :class:`Rir`.

    References:
        J. B. Allen and D. A. Berkley, "Image method for efficiently simulating small-room acoustics",
        J. Acoust. Soc. Am. 65(4), 1979.
    """
    if not isinstance(sample_rate, (int, np.integer)) or sample_rate < 1000:
        raise DataError(f"sample_rate={sample_rate!r}: expected an integer >= 1000 Hz")
    t60, dim, src, mic = sample_room(config, rng)
    distance = float(np.linalg.norm(src - mic))
    duration = config.rir_duration * t60

    amplitudes = _image_amplitudes(dim, src, mic, sample_rate, duration)
    absorption, max_order = _calibrate(amplitudes, t60, sample_rate, guess=_sabine_absorption(t60, dim))
    room = pra.ShoeBox(dim, fs=int(sample_rate), materials=pra.Material(absorption), max_order=max_order)
    room.add_source(src)
    room.add_microphone(mic)
    room.compute_rir()
    c, latency = _speed_of_sound(), _frac_delay_latency()
    n = round(duration * sample_rate) + latency + 1
    rir = np.zeros(n, dtype=np.float64)
    full = np.asarray(room.rir[0][0], dtype=np.float64)[:n]
    rir[: full.size] = full * distance  # pyroomacoustics' direct path has amplitude 1 / distance

    direct_index = _direct_peak(rir, distance / c * sample_rate + latency)
    rir = rir.astype(np.float32)
    return Rir(
        rir=rir,
        sample_rate=int(sample_rate),
        direct_index=direct_index,
        t60_s=t60,
        t60_measured_s=measure_t60(rir, sample_rate),
        distance_m=distance,
        drr_db=_drr_db(rir, direct_index, sample_rate),
        room_dim=(float(dim[0]), float(dim[1]), float(dim[2])),
    )


def _direct_filter(rir: Rir) -> tuple[np.ndarray, int]:
    """The direct path's fractional-delay filter, relative to ``direct_index``, and its centre tap.

    A Hann-windowed sinc of pyroomacoustics' length (81 taps) delayed by the fraction of a sample
    between the true arrival (distance / c, plus the filter latency) and ``direct_index``; a unit impulse
    when the distance is unknown (measured RIRs).
    """
    if not math.isfinite(rir.distance_m):
        return np.ones(1), 0
    half = _frac_delay_latency()
    frac = rir.distance_m / _speed_of_sound() * rir.sample_rate + half - rir.direct_index
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
        g, centre = _direct_filter(rir)
        out = np.convolve(clean, g)[centre : centre + n]
    return _fit(reverberant, n), _fit(out, n)


def _fit(x: np.ndarray, n: int) -> np.ndarray:
    """``x`` as float32, zero-padded to ``n`` samples (a convolution is shorter only for tiny inputs)."""
    out = np.zeros(n, dtype=np.float32)
    out[: x.size] = x
    return out


def load_rir_folder(folder: str | os.PathLike, sample_rate: int) -> list[Rir]:
    """Measured (or other) RIRs from a folder of WAV files, for use in place of simulated ones.

    Each file (first channel) is resampled to ``sample_rate`` if needed (``torchaudio.functional.resample``),
    its direct path is taken as the largest magnitude, and it is scaled so that this peak is +1.
    The T60 is measured (:func:`measure_t60`); distance and room size are unknown (NaN).

    Args:
        folder: a folder with ``*.wav`` files (searched recursively, in sorted order).
        sample_rate: Hz.

    Returns:
        The RIRs, one per file.

    Raises:
        DataError: for a missing folder, a folder without WAV files, or an unreadable or silent file.
    """
    import torch
    import torchaudio.functional

    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: RIR folder not found")
    files = sorted(folder.rglob("*.wav"))
    if not files:
        raise DataError(f"{folder}: no .wav files in the RIR folder")
    rirs = []
    for path in files:
        try:
            h, fs = sf.read(path, dtype="float32", always_2d=True)
        except (sf.LibsndfileError, RuntimeError) as e:
            raise DataError(f"{path}: unreadable RIR ({e})") from None
        h = h[:, 0]
        if fs != sample_rate:
            h = torchaudio.functional.resample(torch.from_numpy(h), fs, sample_rate).numpy()
        direct = int(np.argmax(np.abs(h)))
        if h[direct] == 0:
            raise DataError(f"{path}: silent RIR")
        h = (h / h[direct]).astype(np.float32)
        try:
            t60 = measure_t60(h, sample_rate)
        except DataError as e:
            raise DataError(f"{path}: {e}") from None
        nan = math.nan
        rirs.append(Rir(h, sample_rate, direct, t60, t60, nan, _drr_db(h, direct, sample_rate), (nan, nan, nan)))
    return rirs


class RirBank:
    """A folder of precomputed RIRs: ``rirs/<id>.wav`` (float32), ``rirs.csv`` and ``bank.json``.

    ``rirs.csv`` has one row per RIR with the columns ``id, file, sample_rate, direct_index, t60_s,
    t60_measured_s, distance_m, drr_db, room_x_m, room_y_m, room_z_m, seed``; RIR ``id`` is
    ``simulate_rir(config, sample_rate, np.random.default_rng((seed, id)))``. ``bank.json`` records the
    settings (config, sample rate, seed, size) so that a bank is never reused for other settings.

    Example:
        >>> import tempfile
        >>> config = RoomConfig(t60_range=(0.2, 0.3))
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     bank = RirBank.build(f"{tmp}/bank", 2, config, sample_rate=8000, seed=0, progress=False)
        ...     (len(bank), bank[0].sample_rate, len(RirBank.load(f"{tmp}/bank")))
        (2, 8000, 2)
    """

    def __init__(self, folder: Path, rows: list[dict], settings: dict) -> None:
        self.folder = folder
        self.rows = rows
        self.settings = settings

    @staticmethod
    def _settings(n: int, config: RoomConfig, sample_rate: int, seed: int) -> dict:
        return {
            "version": _BANK_VERSION,
            "n": int(n),
            "sample_rate": int(sample_rate),
            "seed": int(seed),
            "config": config.to_dict(),
            "pyroomacoustics": pra.__version__,
        }

    @classmethod
    def build(
        cls,
        folder: str | os.PathLike,
        n: int,
        config: RoomConfig,
        sample_rate: int,
        seed: int,
        progress: bool = True,
    ) -> RirBank:
        """Simulate ``n`` RIRs into ``folder``, or return the bank already there if built the same way.

        The bank is written into a temporary folder beside ``folder`` and renamed at the end, so an
        interrupted build leaves nothing behind and a finished folder is always complete.

        Args:
            folder: the bank folder (created).
            n: number of RIRs.
            config: room settings.
            sample_rate: Hz.
            seed: seed of the bank (RIR i uses ``np.random.default_rng((seed, i))``).
            progress: show a tqdm progress bar.

        Returns:
            The bank.

        Raises:
            DataError: if ``folder`` holds a bank built with other settings (or something else).
        """
        if not isinstance(n, (int, np.integer)) or n < 1:
            raise DataError(f"n={n!r}: expected a positive number of RIRs")
        folder = Path(folder)
        settings = cls._settings(n, config, sample_rate, seed)
        if folder.exists():
            return cls._existing(folder, settings)
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
        try:
            (tmp / "rirs").mkdir()
            rows = []
            for i in tqdm(range(n), desc=f"RIR bank {folder.name}", disable=not progress):
                rir = simulate_rir(config, sample_rate, np.random.default_rng((seed, i)))
                file = f"rirs/{i:06d}.wav"
                sf.write(tmp / file, rir.rir, sample_rate, subtype="FLOAT")
                rows.append(_row(i, file, rir, seed))
            with open(tmp / "rirs.csv", "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=_CSV_FIELDS)
                writer.writeheader()
                writer.writerows(rows)
            (tmp / "bank.json").write_text(json.dumps(settings, indent=2) + "\n")
            try:
                tmp.rename(folder)
            except OSError:  # another process finished the same bank first
                if not folder.exists():
                    raise
                return cls._existing(folder, settings)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp)
        log.info("RIR bank %s: %d RIRs at %d Hz", folder, n, sample_rate)
        return cls.load(folder)

    @classmethod
    def _existing(cls, folder: Path, settings: dict) -> RirBank:
        bank = cls.load(folder)
        if bank.settings != settings:
            changed = sorted(k for k in settings if bank.settings.get(k) != settings[k])
            raise DataError(
                f"{folder}: RIR bank built with other settings ({', '.join(changed)} differ); "
                "remove it or choose another folder"
            )
        return bank

    @classmethod
    def load(cls, folder: str | os.PathLike) -> RirBank:
        """Open a bank built by :meth:`build`, checking its files.

        Raises:
            DataError: if the folder, ``bank.json``, ``rirs.csv`` or a WAV file is missing or corrupt.
        """
        folder = Path(folder)
        if not folder.is_dir():
            raise DataError(f"{folder}: RIR bank folder not found")
        try:
            settings = json.loads((folder / "bank.json").read_text())
            with open(folder / "rirs.csv", newline="") as f:
                rows = list(csv.DictReader(f))
        except (OSError, ValueError) as e:
            raise DataError(f"{folder}: not a readable RIR bank ({type(e).__name__}: {e})") from None
        if not isinstance(settings, dict) or settings.get("version") != _BANK_VERSION:
            raise DataError(f"{folder}/bank.json: not a version {_BANK_VERSION} RIR bank")
        if len(rows) != settings.get("n"):
            raise DataError(f"{folder}/rirs.csv: {len(rows)} rows, bank.json says {settings.get('n')}")
        for row in rows:
            if set(row) != set(_CSV_FIELDS) or None in row.values():
                raise DataError(f"{folder}/rirs.csv: row {row.get('id')!r} has missing or unknown columns")
            try:
                info = sf.info(folder / row["file"])
            except (sf.LibsndfileError, RuntimeError) as e:
                raise DataError(f"{folder / row['file']}: unreadable RIR ({e})") from None
            if info.samplerate != settings["sample_rate"] or info.channels != 1:
                raise DataError(
                    f"{folder / row['file']}: {info.samplerate} Hz, {info.channels} channels; "
                    f"expected mono at {settings['sample_rate']} Hz"
                )
        return cls(folder, rows, settings)

    @property
    def sample_rate(self) -> int:
        return int(self.settings["sample_rate"])

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> Rir:
        row = self.rows[i]  # IndexError past the end, negative indices as for lists
        path = self.folder / row["file"]
        try:
            h, fs = sf.read(path, dtype="float32")
            direct = int(row["direct_index"])
            if fs != self.sample_rate or h.ndim != 1 or not 0 <= direct < h.size:
                raise ValueError("sample rate, channels or length differ from rirs.csv")
            return Rir(
                rir=h,
                sample_rate=fs,
                direct_index=direct,
                t60_s=float(row["t60_s"]),
                t60_measured_s=float(row["t60_measured_s"]),
                distance_m=float(row["distance_m"]),
                drr_db=float(row["drr_db"]),
                room_dim=(float(row["room_x_m"]), float(row["room_y_m"]), float(row["room_z_m"])),
            )
        except (sf.LibsndfileError, RuntimeError, ValueError) as e:
            raise DataError(f"{path}: corrupt RIR ({e})") from None


def _row(i: int, file: str, rir: Rir, seed: int) -> dict:
    return {
        "id": i,
        "file": file,
        "sample_rate": rir.sample_rate,
        "direct_index": rir.direct_index,
        "t60_s": repr(rir.t60_s),
        "t60_measured_s": repr(rir.t60_measured_s),
        "distance_m": repr(rir.distance_m),
        "drr_db": repr(rir.drr_db),
        "room_x_m": repr(rir.room_dim[0]),
        "room_y_m": repr(rir.room_dim[1]),
        "room_z_m": repr(rir.room_dim[2]),
        "seed": seed,
    }
