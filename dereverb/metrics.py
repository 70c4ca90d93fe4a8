"""Speech quality and intelligibility metrics: PESQ, STOI/ESTOI and SI-SDR, failures counted.

Every score compares an estimate with a target (the direct path, or the direct path plus the
early reflections) and means something only next to the same score of the unprocessed
(reverberant) input, which is why the training recipe and the evaluation always score both.
Every function takes ``(estimate, target)`` in that order.

* ``pesq_nb`` / ``pesq_wb``: ITU-T P.862 narrow-band (MOS-LQO, 8 kHz and 16 kHz signals) and
  P.862.2 wide-band (16 kHz only), computed by the ``pesq`` package, which accepts no other rate.
* ``stoi`` / ``estoi``: short-time objective intelligibility and its extended version, computed
  by ``pystoi`` (any rate; it resamples to 10 kHz internally).
* ``si_sdr``: scale-invariant signal-to-distortion ratio in dB (Le Roux et al., 2019).

A metric that cannot be computed is a *missing* value (NaN) with a reason, never a zero: PESQ
raises when it finds no utterance or the signal is shorter than 0.25 s, and pystoi returns
``1e-5`` with a warning when fewer than 30 frames remain after removing silent frames. Those
cases are recorded as missing and counted by :func:`summarize`.

PESQ and STOI cost tens of milliseconds per second of audio, so :class:`Scorer` computes them in
worker processes.

References:
    ITU-T Rec. P.862 (2001) and P.862.2 (2007).
    Taal et al., "An Algorithm for Intelligibility Prediction of Time-Frequency Weighted Noisy
    Speech", IEEE TASLP 2011. Jensen and Taal, "An Algorithm for Predicting the Intelligibility
    of Speech Masked by Modulated Noise Maskers", IEEE TASLP 2016.
    Le Roux et al., "SDR - Half-baked or Well Done?", ICASSP 2019.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import signal
import warnings
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

import numpy as np

__all__ = ["PESQ_RATES", "Scorer", "Scores", "metric_names", "score", "si_sdr", "summarize"]

PESQ_RATES = (8000, 16000)


def metric_names(sample_rate: int) -> tuple[str, ...]:
    """The metrics reported for signals at ``sample_rate``.

    Args:
        sample_rate: 8000 (narrow-band PESQ) or 16000 (wide-band and narrow-band PESQ).

    Returns:
        The metric names, in the order the recipe and the evaluation script report them.

    Raises:
        ValueError: for any other rate (resample to 8 or 16 kHz first: PESQ is defined at those
            two rates only).

    Example:
        >>> metric_names(8000)
        ('pesq_nb', 'stoi', 'estoi', 'si_sdr')
        >>> metric_names(16000)
        ('pesq_wb', 'pesq_nb', 'stoi', 'estoi', 'si_sdr')
    """
    if sample_rate == 8000:
        return ("pesq_nb", "stoi", "estoi", "si_sdr")
    if sample_rate == 16000:
        return ("pesq_wb", "pesq_nb", "stoi", "estoi", "si_sdr")
    raise ValueError(f"sample rate {sample_rate} Hz is not supported by PESQ (8000 or 16000 Hz): resample first")


def si_sdr(estimate: np.ndarray, target: np.ndarray, eps: float = 1e-8) -> float:
    """Scale-invariant SDR in dB of one utterance (both signals made zero-mean first).

    Args:
        estimate (ndarray[T]): the signal to score.
        target (ndarray[T]): what it should be, same length.
        eps: guards the divisions.

    Returns:
        SI-SDR in dB; NaN when the target is silent or a signal is not finite.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> target = rng.standard_normal(16000)
        >>> round(si_sdr(0.5 * target, target), 1) > 70  # a scaled copy is perfect
        True
        >>> noise = rng.standard_normal(16000)
        >>> round(si_sdr(target + 0.1 * noise / np.std(noise) * np.std(target), target))  # about 20 dB
        20
    """
    est = np.asarray(estimate, dtype=np.float64)
    tgt = np.asarray(target, dtype=np.float64)
    if est.shape != tgt.shape:
        raise ValueError(f"estimate and target must have the same shape, got {est.shape} and {tgt.shape}")
    if not (np.isfinite(est).all() and np.isfinite(tgt).all()):
        return math.nan
    est = est - est.mean()
    tgt = tgt - tgt.mean()
    energy = np.dot(tgt, tgt)
    if energy <= eps:
        return math.nan
    projection = np.dot(est, tgt) / energy * tgt
    noise = est - projection
    return float(10 * np.log10((np.dot(projection, projection) + eps) / (np.dot(noise, noise) + eps)))


@dataclass
class Scores:
    """The scores of one utterance.

    Attributes:
        values: metric name -> value; NaN where the metric could not be computed.
        failures: metric name -> why it could not be computed (only the failed ones).
    """

    values: dict[str, float]
    failures: dict[str, str] = field(default_factory=dict)

    def row(self, prefix: str = "") -> dict[str, float]:
        """The values with ``prefix`` prepended to every name (e.g. ``"input_"``)."""
        return {prefix + k: v for k, v in self.values.items()}


def _pesq(estimate: np.ndarray, target: np.ndarray, sample_rate: int, mode: str) -> tuple[float, str | None]:
    import pesq

    try:
        with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
            # pesq normalises by the peak: a silent signal divides by zero, then raises below
            warnings.simplefilter("ignore", RuntimeWarning)
            return float(pesq.pesq(sample_rate, target, estimate, mode)), None  # P.862: reference first
    except pesq.NoUtterancesError:
        return math.nan, "PESQ found no utterance"
    except pesq.BufferTooShortError:
        return math.nan, "PESQ needs at least 0.25 s"
    except pesq.PesqError as err:  # any other failure of the P.862 code
        return math.nan, f"PESQ failed: {type(err).__name__}"


def _stoi(estimate: np.ndarray, target: np.ndarray, sample_rate: int, extended: bool) -> tuple[float, str | None]:
    from pystoi import stoi

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = float(stoi(target, estimate, sample_rate, extended=extended))  # pystoi: clean signal first
    if any("Not enough STFT frames" in str(w.message) for w in caught):
        return math.nan, "fewer than 30 frames of speech after removing silent frames"
    return value, None


def score(estimate: np.ndarray, target: np.ndarray, sample_rate: int) -> Scores:
    """Score one utterance with every metric of :func:`metric_names` (in this process).

    Args:
        estimate (ndarray[T]): the signal to score (model output or unprocessed input).
        target (ndarray[T]): what it should be (the direct path or the early target), same length.
        sample_rate: 8000 or 16000.

    Returns:
        The scores; failed metrics are NaN with a reason.

    Example:
        >>> silence = np.zeros(8000)
        >>> s = score(silence, silence, 8000)
        >>> s.values["pesq_nb"], s.failures["pesq_nb"]
        (nan, 'PESQ found no utterance')
    """
    names = metric_names(sample_rate)
    est = np.asarray(estimate, dtype=np.float64).reshape(-1)
    tgt = np.asarray(target, dtype=np.float64).reshape(-1)
    if est.shape != tgt.shape:
        raise ValueError(f"estimate and target must have the same length, got {est.size} and {tgt.size}")
    if not (np.isfinite(est).all() and np.isfinite(tgt).all()):
        reason = "non-finite samples"
        return Scores(dict.fromkeys(names, math.nan), dict.fromkeys(names, reason))
    values: dict[str, float] = {}
    failures: dict[str, str] = {}
    for name in names:
        if name.startswith("pesq"):
            value, why = _pesq(est, tgt, sample_rate, name[-2:])
        elif name in ("stoi", "estoi"):
            value, why = _stoi(est, tgt, sample_rate, extended=name == "estoi")
        else:
            value = si_sdr(est, tgt)
            why = None if math.isfinite(value) else "silent target"
        values[name] = value
        if why is not None:
            failures[name] = why
    return Scores(values, failures)


def _score_star(args) -> Scores:
    return score(*args)


def _ignore_sigint() -> None:
    """Worker processes leave Ctrl-C to the main process (which stops them), instead of each printing a traceback."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class Scorer:
    """Scores many utterances, in parallel worker processes.

    Keep one instance for the whole run (the workers start once); use it as a context manager
    or call :meth:`close`.

    Args:
        sample_rate: 8000 or 16000 (see :func:`metric_names`).
        jobs: worker processes; ``None`` uses the CPUs available to this process, ``0`` or ``1``
            scores in this process.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> targets = [rng.standard_normal(8000) for _ in range(2)]
        >>> with Scorer(8000, jobs=1) as scorer:
        ...     scores = scorer.score_many(targets, targets)
        >>> [s.values["si_sdr"] > 70 for s in scores]  # identical signals
        [True, True]
    """

    def __init__(self, sample_rate: int, jobs: int | None = None):
        self.names = metric_names(sample_rate)
        self.sample_rate = sample_rate
        self.jobs = len(os.sched_getaffinity(0)) if jobs is None else max(jobs, 1)
        self._pool: ProcessPoolExecutor | None = None

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            # spawn: the workers must not inherit the parent's torch threads or CUDA state
            self._pool = ProcessPoolExecutor(
                self.jobs, mp_context=multiprocessing.get_context("spawn"), initializer=_ignore_sigint
            )
        return self._pool

    def score_many(self, estimates: Sequence[np.ndarray], targets: Sequence[np.ndarray]) -> list[Scores]:
        """Score ``estimates[i]`` against ``targets[i]``, in order."""
        if len(estimates) != len(targets):
            raise ValueError(f"got {len(estimates)} estimates and {len(targets)} targets")
        args = [(e, t, self.sample_rate) for e, t in zip(estimates, targets, strict=True)]
        if self.jobs == 1 or len(args) < 2:
            return [_score_star(a) for a in args]
        return list(self._executor().map(_score_star, args, chunksize=max(1, len(args) // (4 * self.jobs))))

    def close(self) -> None:
        """Stop the worker processes."""
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def __enter__(self) -> Scorer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def summarize(rows: Iterable[dict[str, float]], names: Iterable[str] | None = None) -> dict[str, dict[str, float]]:
    """Mean, standard deviation, count and missing count of each metric over utterances.

    Args:
        rows: one dict of metric values per utterance (NaN = missing), e.g. ``Scores.values`` or
            rows with prefixed names such as ``input_pesq_nb``.
        names: the columns to summarise; default: every key of the first row.

    Returns:
        name -> ``{"mean", "std", "n", "missing"}`` over the non-missing values (mean and std are
        NaN when every value is missing).

    Example:
        >>> summarize([{"stoi": 0.9}, {"stoi": 0.7}, {"stoi": float("nan")}])["stoi"]
        {'mean': 0.8, 'std': 0.1, 'n': 2, 'missing': 1}
    """
    rows = list(rows)
    names = list(names) if names is not None else list(rows[0]) if rows else []
    out = {}
    for name in names:
        values = np.array([row.get(name, math.nan) for row in rows], dtype=np.float64)
        ok = values[np.isfinite(values)]
        out[name] = {
            "mean": round(float(ok.mean()), 12) if ok.size else math.nan,
            "std": round(float(ok.std()), 12) if ok.size else math.nan,
            "n": int(ok.size),
            "missing": int(values.size - ok.size),
        }
    return out
