"""Metrics: known values, failures recorded as missing (never zero), parallel == serial."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dereverb.metrics import Scorer, metric_names, score, si_sdr, summarize


def speech_like(seconds: float, rate: int, seed: int = 0) -> np.ndarray:
    """A voiced, syllable-modulated harmonic signal with pauses: enough for PESQ's and STOI's VADs."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    f0 = 120 + 30 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / rate
    voiced = sum(np.sin(h * phase) / h for h in range(1, 25) if h * 200 < rate / 2)
    syllables = np.clip(np.sin(2 * np.pi * 3.0 * t), 0, None) ** 2
    pauses = (np.sin(2 * np.pi * 0.4 * t) > -0.6).astype(float)
    x = voiced * syllables * pauses + 0.01 * rng.standard_normal(t.size) * syllables
    return (0.3 * x / np.abs(x).max()).astype(np.float32)


def with_noise(x: np.ndarray, snr_db: float, seed: int = 1) -> np.ndarray:
    noise = np.random.default_rng(seed).standard_normal(x.size)
    noise *= np.sqrt(np.mean(x.astype(np.float64) ** 2) / np.mean(noise**2) / 10 ** (snr_db / 10))
    return (x + noise).astype(np.float32)


@pytest.mark.parametrize("rate", [8000, 16000])
def test_identical_signals_score_at_the_top(rate):
    x = speech_like(3.0, rate)
    s = score(x, x, rate)
    assert s.failures == {}
    assert set(s.values) == set(metric_names(rate))
    assert s.values["pesq_nb"] > 4.4
    if rate == 16000:
        assert s.values["pesq_wb"] > 4.5
    assert s.values["stoi"] > 0.99
    assert s.values["estoi"] > 0.99
    assert s.values["si_sdr"] > 60


def test_scores_fall_with_noise():
    x = speech_like(3.0, 16000)
    clean, mild, harsh = (score(y, x, 16000).values for y in (x, with_noise(x, 20), with_noise(x, 0)))
    for name in ("pesq_wb", "pesq_nb", "stoi", "estoi", "si_sdr"):
        assert clean[name] > mild[name] > harsh[name], name
    assert harsh["pesq_nb"] < 2.5
    assert mild["si_sdr"] == pytest.approx(20, abs=0.1)
    assert harsh["si_sdr"] == pytest.approx(0, abs=0.1)


def test_si_sdr_closed_form_and_scale_invariance():
    rng = np.random.default_rng(3)
    ref = rng.standard_normal(8000)
    noise = rng.standard_normal(8000)
    noise -= noise.mean()
    noise -= np.dot(noise, ref - ref.mean()) / np.dot(ref - ref.mean(), ref - ref.mean()) * (ref - ref.mean())
    noise *= np.linalg.norm(ref - ref.mean()) / np.linalg.norm(noise) * 10 ** (-15 / 20)
    assert si_sdr(ref + noise, ref) == pytest.approx(15, abs=1e-6)
    assert si_sdr(7 * (ref + noise), ref) == pytest.approx(15, abs=1e-6)
    assert si_sdr(-(ref + noise), ref) == pytest.approx(15, abs=1e-6)  # the optimal scale may be negative
    assert si_sdr(ref + 3 * noise, ref) == pytest.approx(15 - 20 * np.log10(3), abs=1e-6)
    assert math.isnan(si_sdr(ref, np.zeros(8000)))
    with pytest.raises(ValueError, match="same shape"):
        si_sdr(ref, ref[:-1])


def test_pesq_failures_are_missing_with_a_reason_not_zero():
    silence = np.zeros(16000, np.float32)
    s = score(silence, silence, 8000)
    assert math.isnan(s.values["pesq_nb"])
    assert s.failures["pesq_nb"] == "PESQ found no utterance"
    short = speech_like(0.2, 8000)
    s = score(short, short, 8000)
    assert math.isnan(s.values["pesq_nb"])
    assert s.failures["pesq_nb"] == "PESQ needs at least 0.25 s"


def test_stoi_with_too_few_frames_is_missing_not_1e5():
    # 0.3 s of speech: fewer than 30 STFT frames remain; pystoi would return 1e-5 with a warning
    x = speech_like(0.3, 8000)
    s = score(x, x, 8000)
    for name in ("stoi", "estoi"):
        assert math.isnan(s.values[name]), name
        assert "fewer than 30 frames" in s.failures[name]
    assert math.isfinite(s.values["si_sdr"])


def test_non_finite_estimate_makes_every_metric_missing():
    x = speech_like(2.0, 8000)
    y = x.copy()
    y[100] = np.nan
    s = score(y, x, 8000)
    assert all(math.isnan(v) for v in s.values.values())
    assert set(s.failures.values()) == {"non-finite samples"}


def test_unsupported_rate_and_length_mismatch_are_refused():
    with pytest.raises(ValueError, match="44100 Hz is not supported by PESQ"):
        metric_names(44100)
    with pytest.raises(ValueError, match="same length"):
        score(np.ones(8000), np.ones(7999), 8000)


def test_parallel_workers_give_the_serial_scores():
    refs = [speech_like(2.0, 8000, seed=i) for i in range(4)]
    ests = [with_noise(r, 5 + 5 * i, seed=i) for i, r in enumerate(refs)]
    serial = Scorer(8000, jobs=1).score_many(ests, refs)
    with Scorer(8000, jobs=2) as scorer:
        parallel = scorer.score_many(ests, refs)
    for p, s in zip(parallel, serial, strict=True):  # the same up to BLAS rounding in another process
        assert p.values == pytest.approx(s.values, rel=1e-9)
    assert len({round(s.values["pesq_nb"], 3) for s in serial}) == 4  # really four different utterances


def test_summarize_counts_missing_values():
    rows = [score(x, x, 8000).row("input_") for x in (speech_like(2.0, 8000), np.zeros(8000, np.float32))]
    summary = summarize(rows)
    assert summary["input_pesq_nb"]["n"] == 1
    assert summary["input_pesq_nb"]["missing"] == 1
    assert summary["input_pesq_nb"]["mean"] == pytest.approx(rows[0]["input_pesq_nb"])
    assert summary["input_si_sdr"]["missing"] == 1


def test_every_metric_takes_the_estimate_first_then_the_target():
    """PESQ and ESTOI are not symmetric: swapping the arguments changes the score, so the order is pinned."""
    target = speech_like(3.0, 16000)
    estimate = with_noise(target, 5)
    forward, swapped = score(estimate, target, 16000).values, score(target, estimate, 16000).values
    assert forward["pesq_wb"] != pytest.approx(swapped["pesq_wb"], abs=1e-3)
    assert forward["estoi"] != pytest.approx(swapped["estoi"], abs=1e-3)
    assert forward["si_sdr"] == pytest.approx(si_sdr(estimate, target))
    (many,) = Scorer(16000, jobs=1).score_many([estimate], [target])
    assert many.values == pytest.approx(forward)
    silent = np.zeros_like(target)
    assert score(target, silent, 16000).failures["si_sdr"] == "silent target"
    with pytest.raises(ValueError, match="got 1 estimates and 2 targets"):
        Scorer(16000, jobs=1).score_many([estimate], [target, target])
