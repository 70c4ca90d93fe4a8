"""Reverberation time: Schroeder's measurement, and the calibration of the wall absorption to a requested T60.

Shoebox image-source RIRs do not decay as Sabine's (or Eyring's) formula predicts, so the wall absorption
is *calibrated* for every room: the image sources that arrive within the simulated duration are
enumerated in closed form and their amplitudes summed per reflection order and sample (this depends on
the geometry only), the absorption is solved so that the Schroeder T30 of that model RIR equals the
requested T60, and the image order is cut where higher orders no longer change it.

References:
    J. B. Allen and D. A. Berkley, "Image method for efficiently simulating small-room acoustics",
    J. Acoust. Soc. Am. 65(4), 1979.
    M. R. Schroeder, "New method of measuring reverberation time", J. Acoust. Soc. Am. 37(3), 1965.
"""

from __future__ import annotations

import math

import numpy as np
import pyroomacoustics as pra
import scipy.optimize
import scipy.signal

from dereverb.data.rooms.config import speed_of_sound
from dereverb.errors import DataError

__all__ = ["calibrate", "image_amplitudes", "measure_t60", "t60_from_edc"]

EDC_START_DB = -5.0
"""Schroeder fits start 5 dB below the total energy (ISO 3382-1)."""


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
    return t60_from_edc(edc, sample_rate, decay_db)


def t60_from_edc(edc: np.ndarray, sample_rate: int, decay_db: float) -> float:
    """T60 from a (linear, backward-integrated) energy decay curve; see :func:`measure_t60`.

    Raises:
        DataError: the curve is silent, or does not fall by ``decay_db`` below -5 dB.
    """
    if not edc[0] > 0:
        raise DataError("rir is silent: cannot measure its T60")
    with np.errstate(divide="ignore"):
        edc_db = 10.0 * np.log10(edc / edc[0])
    start = int(np.argmax(edc_db <= EDC_START_DB))
    stop = int(np.argmax(edc_db <= EDC_START_DB - decay_db))
    if stop <= start + 1:
        reached = edc_db[np.isfinite(edc_db)].min()
        raise DataError(f"rir decays by only {-reached:.1f} dB: cannot fit a {decay_db} dB decay")
    t = np.arange(start, stop) / sample_rate
    slope = np.polyfit(t, edc_db[start:stop], 1)[0]
    return float(-60.0 / slope)


def image_amplitudes(dim, src, mic, sample_rate: int, duration: float) -> np.ndarray:
    """Amplitude arriving per reflection order and sample from all image sources within ``duration``.

    Image source n along an axis of length L sits at n·L + s (n even) or n·L + L - s (n odd) and has
    |n| reflections on that axis (Allen & Berkley 1979); pyroomacoustics gives an image of order o at
    distance d the amplitude β^o / d with β = sqrt(1 - absorption). Arrivals are rounded to the
    nearest sample: unlike a sum of image energies this keeps the coherent low-frequency build-up of
    the dense late arrivals, which slows the decay of image-method RIRs.

    Returns:
        Array[orders, samples]: sum of 1 / d over the images of order o arriving at sample t.
    """
    c = speed_of_sound()
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
        return t60_from_edc(np.cumsum(h[::-1] ** 2)[::-1], sample_rate, 30)
    except DataError:  # decays too fast to fit a 30 dB decay
        return 0.0


# log β = log sqrt(1 - absorption) for absorptions from 0.99 down to 0.002
_MOST, _LEAST = 0.5 * math.log(1.0 - 0.99), 0.5 * math.log(1.0 - 0.002)


def _solve(amplitudes: np.ndarray, t60: float, sample_rate: int, hpf, start: float, step: float) -> float:
    """The log reflection coefficient whose model T30 equals ``t60``.

    T30 grows as the absorption falls, until the cut at the simulated duration dominates the decay;
    the root wanted is the first one coming from high absorption. Steps from ``start`` (a nearby
    value) by factors of ``step`` to a bracket, then Brent's method; falls back to a scan of the range.
    """

    def error(log_beta: float) -> float:
        return _model_t30(amplitudes, log_beta, sample_rate, hpf) - t60

    g = min(max(start, _MOST), _LEAST)
    sign = error(g) >= 0
    for _ in range(64):
        prev, g = g, (max(g * step, _MOST) if sign else min(g / step, _LEAST))
        if (error(g) >= 0) != sign:
            return scipy.optimize.brentq(error, *sorted((prev, g)), xtol=1e-9, rtol=1e-6)
        if g in (_MOST, _LEAST):
            break
    grid = np.linspace(_MOST, _LEAST, 48)
    above = np.flatnonzero([error(x) >= 0 for x in grid])
    if above.size == 0 or above[0] == 0:
        raise DataError(f"T60 {t60:.3f} s cannot be reached in this room with an absorption of 0.002 to 0.99")
    return scipy.optimize.brentq(error, grid[above[0] - 1], grid[above[0]], xtol=1e-9, rtol=1e-6)


def calibrate(amplitudes: np.ndarray, t60: float, sample_rate: int, guess: float) -> tuple[float, int]:
    """The wall absorption whose model T30 equals ``t60``, and the image order the simulation needs.

    The order is the smallest one whose truncated model keeps the T30 within 1 % of the full model;
    the absorption is then solved again with that truncation, so it matches what pyroomacoustics
    computes with that ``max_order``.

    Args:
        amplitudes: Array[orders, samples] from :func:`image_amplitudes`.
        t60: the requested T60, seconds.
        sample_rate: Hz.
        guess: a first absorption (Sabine's) to start the search from.

    Returns:
        (energy absorption, max_order).

    Raises:
        DataError: no absorption from 0.002 to 0.99 reaches ``t60`` in this room.
    """
    hpf = None
    if pra.constants.get("rir_hpf_enable"):
        hpf = pra.utilities.design_highpass_filter_sos(
            sample_rate, pra.constants.get("rir_hpf_fc"), **pra.constants.get("rir_hpf_kwargs")
        )
    log_beta = _solve(amplitudes, t60, sample_rate, hpf, 0.5 * math.log1p(-min(guess, 0.95)), 1.5)
    max_order = amplitudes.shape[0] - 1
    lo = 1
    while lo < max_order:  # bisection on the order: the truncated T30 grows with the order
        mid = (lo + max_order) // 2
        if _model_t30(amplitudes[: mid + 1], log_beta, sample_rate, hpf) >= 0.99 * t60:
            max_order = mid
        else:
            lo = mid + 1
    log_beta = _solve(amplitudes[: max_order + 1], t60, sample_rate, hpf, log_beta, 1.02)
    return float(1.0 - math.exp(2.0 * log_beta)), max_order
