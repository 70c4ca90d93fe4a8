"""Tests of the room simulation: T60 calibration, targets and alignment, the RIR bank, config checks."""

from __future__ import annotations

import math
import shutil
import time

import numpy as np
import pyroomacoustics as pra
import pytest
import scipy.signal
import soundfile as sf

from dereverb.data.rooms import (
    EARLY_MS,
    Rir,
    RirBank,
    RoomConfig,
    load_rir_folder,
    measure_t60,
    reverberate,
    sample_room,
    simulate_rir,
)
from dereverb.errors import DataError

C = pra.constants.get("c")
LATENCY = pra.constants.get("frac_delay_length") // 2


def _decaying_noise(t60: float, sample_rate: int, seconds: float, seed: int = 0) -> np.ndarray:
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    return np.random.default_rng(seed).standard_normal(t.size) * 10 ** (-3 * t / t60)


def _peak_lag(a: np.ndarray, b: np.ndarray) -> int:
    """Lag of the cross-correlation peak of ``a`` against ``b`` (0 when they are aligned)."""
    lags = scipy.signal.correlation_lags(a.size, b.size)
    return int(lags[np.argmax(scipy.signal.correlate(a, b))])


def _config(bank: RirBank) -> RoomConfig:
    return RoomConfig(**bank.settings["config"])


# measure_t60


@pytest.mark.parametrize("sample_rate", [8000, 16000])
@pytest.mark.parametrize("t60", [0.25, 0.7, 1.5])
@pytest.mark.parametrize("decay_db", [20, 30])
def test_measure_t60_of_exponential_decay(sample_rate, t60, decay_db):
    measured = [
        measure_t60(_decaying_noise(t60, sample_rate, 1.2 * t60, seed), sample_rate, decay_db) for seed in range(10)
    ]
    assert measured == pytest.approx([t60] * 10, rel=0.06)  # one noise realisation: a few % of spread
    assert np.mean(measured) == pytest.approx(t60, rel=0.015)  # and no bias


def test_measure_t60_errors():
    noise = _decaying_noise(0.5, 8000, 0.5)
    with pytest.raises(DataError, match="decay_db=5"):
        measure_t60(noise, 8000, decay_db=5)
    with pytest.raises(DataError, match=r"decays by only 17\.0 dB"):  # a constant: 50 to 1 at the last sample
        measure_t60(np.ones(50), 8000)
    with pytest.raises(DataError, match="silent"):
        measure_t60(np.zeros(100), 8000)
    with pytest.raises(DataError, match="1-D"):
        measure_t60(np.zeros((2, 100)), 8000)


# T60 calibration


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


# simulated rooms


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


def _load_arrays(folder, arrays, sample_rate=8000) -> list[Rir]:
    for i, a in enumerate(arrays):
        sf.write(folder / f"{i}.wav", a, sample_rate, subtype="FLOAT")
    return load_rir_folder(folder, sample_rate)


def test_drr_definition(tmp_path):
    """Energy within 2.5 ms (20 samples at 8 kHz) of the direct peak over the energy of the rest."""
    h = _decaying_noise(0.3, 8000, 0.4) * 0.05
    h[100] = 1.0
    (rir,) = _load_arrays(tmp_path, [h])
    direct = np.sum(h[80:121] ** 2)
    assert rir.drr_db == pytest.approx(10 * math.log10(direct / (np.sum(h**2) - direct)), rel=1e-4)


# reverberate: targets and alignment


@pytest.mark.parametrize("target", ["direct", "early"])
def test_targets_are_aligned_with_the_direct_path(rir_bank, target):
    clean = np.random.default_rng(0).standard_normal(4000)
    for i in range(len(rir_bank)):
        reverberant, out = reverberate(clean, rir_bank[i], target)
        assert reverberant.shape == out.shape == clean.shape
        assert reverberant.dtype == out.dtype == np.float32
        assert _peak_lag(out, reverberant) == 0
        assert _peak_lag(out, clean) == 0
        assert _peak_lag(reverberant, clean) == 0


def test_direct_target_is_the_direct_path_of_the_simulation():
    """The ``direct`` target equals the dry signal through pyroomacoustics' own direct path."""
    _, dim, src, mic = sample_room(RoomConfig(), np.random.default_rng(5))
    distance = float(np.linalg.norm(src - mic))
    room = pra.ShoeBox(dim, fs=8000, max_order=0)
    room.add_source(src)
    room.add_microphone(mic)
    hpf = pra.constants.get("rir_hpf_enable")
    pra.constants.set("rir_hpf_enable", False)  # its 10 Hz high-pass, cut with this short RIR, is not the path
    try:
        room.compute_rir()
    finally:
        pra.constants.set("rir_hpf_enable", hpf)
    h = np.asarray(room.rir[0][0]) * distance
    rir = Rir(h.astype(np.float32), 8000, int(np.argmax(h)), 0.5, 0.5, distance, math.inf, tuple(dim))
    clean = np.random.default_rng(1).standard_normal(8000)
    reverberant, target = reverberate(clean, rir, "direct")
    rms = np.sqrt(np.mean(reverberant.astype(np.float64) ** 2))
    assert np.sqrt(np.mean((target - reverberant).astype(np.float64) ** 2)) < 0.005 * rms
    assert not np.allclose(target, clean, atol=0.05)  # a true fractional delay, not the dry signal


def test_direct_target_of_a_measured_rir_is_the_dry_signal(tmp_path):
    (rir,) = _load_arrays(tmp_path, [_decaying_noise(0.3, 8000, 0.4) * 0.1 + np.eye(1, 3200, 40)[0]])
    clean = np.random.default_rng(2).standard_normal(1000)
    _, target = reverberate(clean, rir, "direct")
    np.testing.assert_allclose(target, clean.astype(np.float32), rtol=1e-6)


def test_early_target_keeps_exactly_50_ms_after_the_direct_path(rir_bank):
    rir = rir_bank[0]
    n_early = round(EARLY_MS * 1e-3 * rir.sample_rate)  # 400 samples at 8 kHz
    assert n_early == 400
    impulse = np.eye(1, 2000)[0]
    reverberant, early = reverberate(impulse, rir, "early")
    h = rir.rir.astype(np.float64)
    np.testing.assert_allclose(early[:n_early], h[rir.direct_index : rir.direct_index + n_early], atol=1e-6)
    np.testing.assert_allclose(early[n_early:], 0, atol=1e-6)
    np.testing.assert_allclose(reverberant, h[rir.direct_index : rir.direct_index + 2000], atol=1e-6)
    assert np.sum(early.astype(np.float64) ** 2) == pytest.approx(
        np.sum(h[rir.direct_index : rir.direct_index + 400] ** 2)
    )
    assert np.sum(reverberant.astype(np.float64) ** 2) > np.sum(early.astype(np.float64) ** 2) + 1e-3
    # and the part before the direct peak (the fractional-delay filter's first half) is in the target too
    clean = np.random.default_rng(3).standard_normal(3000)
    _, early = reverberate(clean, rir, "early")
    expected = scipy.signal.fftconvolve(clean, h[: rir.direct_index + n_early])[rir.direct_index :][:3000]
    np.testing.assert_allclose(early, expected, atol=1e-5)


@pytest.mark.parametrize("length", [1, 17, 399, 8001])
@pytest.mark.parametrize("target", ["direct", "early"])
def test_outputs_have_the_input_length(rir_bank, length, target):
    reverberant, out = reverberate(np.ones(length, np.float32), rir_bank[1], target)
    assert reverberant.shape == out.shape == (length,)


def test_reverberate_errors(rir_bank):
    with pytest.raises(DataError, match="target='late'"):
        reverberate(np.ones(10), rir_bank[0], "late")
    with pytest.raises(DataError, match="1-D"):
        reverberate(np.ones((2, 10)), rir_bank[0])


# RirBank


def test_bank_round_trip(rir_bank):
    loaded = RirBank.load(rir_bank.folder)
    assert len(loaded) == len(rir_bank) == 6
    assert loaded.sample_rate == 8000
    for i in range(len(loaded)):
        a, b = loaded[i], rir_bank[i]
        np.testing.assert_array_equal(a.rir, b.rir)
        assert (a.direct_index, a.t60_s, a.distance_m, a.drr_db, a.room_dim) == (
            b.direct_index,
            b.t60_s,
            b.distance_m,
            b.drr_db,
            b.room_dim,
        )
    np.testing.assert_array_equal(loaded[-1].rir, loaded[5].rir)
    with pytest.raises(IndexError):
        loaded[6]


def test_bank_is_reproducible(rir_bank, tmp_path):
    settings = {"n": 6, "config": _config(rir_bank), "sample_rate": 8000, "progress": False}
    same = RirBank.build(tmp_path / "same", seed=rir_bank.settings["seed"], **settings)
    other = RirBank.build(tmp_path / "other", seed=rir_bank.settings["seed"] + 1, **settings)
    assert (tmp_path / "same" / "rirs.csv").read_text() == (rir_bank.folder / "rirs.csv").read_text()
    for i in range(6):
        np.testing.assert_array_equal(same[i].rir, rir_bank[i].rir)
        assert other[i].t60_s != rir_bank[i].t60_s
        assert other[i].rir.size != rir_bank[i].rir.size or not np.array_equal(other[i].rir, rir_bank[i].rir)
    # a bank item is simulate_rir with the generator seeded by (seed, id)
    direct = simulate_rir(_config(rir_bank), 8000, np.random.default_rng((rir_bank.settings["seed"], 4)))
    np.testing.assert_array_equal(direct.rir, rir_bank[4].rir)


def test_second_build_reuses_the_bank(rir_bank):
    files = sorted(rir_bank.folder.rglob("*"))
    mtimes = [f.stat().st_mtime_ns for f in files]
    start = time.perf_counter()
    again = RirBank.build(rir_bank.folder, 6, _config(rir_bank), 8000, rir_bank.settings["seed"], progress=False)
    assert time.perf_counter() - start < 0.5
    assert sorted(rir_bank.folder.rglob("*")) == files
    assert [f.stat().st_mtime_ns for f in files] == mtimes
    np.testing.assert_array_equal(again[3].rir, rir_bank[3].rir)
    assert not [p for p in rir_bank.folder.parent.iterdir() if p.name.startswith(".")]  # no temporary folder


@pytest.mark.parametrize(
    ("change", "differ"),
    [
        ({"seed": 1}, "seed"),
        ({"n": 5}, "n"),
        ({"sample_rate": 16000}, "sample_rate"),
        ({"config": RoomConfig(t60_range=(0.2, 0.5), distance_range=(0.5, 3.0))}, "config"),
    ],
)
def test_build_refuses_other_settings(rir_bank, change, differ):
    settings = {"n": 6, "config": _config(rir_bank), "sample_rate": 8000, "seed": 0} | change
    with pytest.raises(DataError, match=f"other settings \\({differ} differ"):
        RirBank.build(rir_bank.folder, progress=False, **settings)


def test_build_refuses_a_folder_that_is_not_a_bank(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DataError, match="not a readable RIR bank"):
        RirBank.build(tmp_path, 2, RoomConfig(), 8000, 0, progress=False)


def test_interrupted_build_leaves_nothing(tmp_path, monkeypatch):
    from dereverb.data import rooms

    calls = []

    def failing(config, sample_rate, rng):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return simulate_rir(config, sample_rate, rng)

    monkeypatch.setattr(rooms, "simulate_rir", failing)
    with pytest.raises(KeyboardInterrupt):
        RirBank.build(tmp_path / "bank", 3, RoomConfig(t60_range=(0.2, 0.3)), 8000, 0, progress=False)
    assert list(tmp_path.iterdir()) == []  # neither the bank nor its temporary folder


@pytest.fixture
def bank_copy(rir_bank, tmp_path):
    return shutil.copytree(rir_bank.folder, tmp_path / "bank")


def test_load_missing_folder(tmp_path):
    with pytest.raises(DataError, match="not found"):
        RirBank.load(tmp_path / "nowhere")


def test_load_corrupt_wav(bank_copy):
    (bank_copy / "rirs" / "000002.wav").write_bytes(b"not a wav file at all")
    with pytest.raises(DataError, match=r"000002.wav: unreadable RIR"):
        RirBank.load(bank_copy)


def test_load_missing_wav(bank_copy):
    (bank_copy / "rirs" / "000003.wav").unlink()
    with pytest.raises(DataError, match=r"000003.wav: unreadable RIR"):
        RirBank.load(bank_copy)


def test_load_truncated_csv(bank_copy):
    lines = (bank_copy / "rirs.csv").read_text().splitlines()
    (bank_copy / "rirs.csv").write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(DataError, match=r"5 rows, bank.json says 6"):
        RirBank.load(bank_copy)


def test_load_csv_with_a_missing_column(bank_copy):
    lines = (bank_copy / "rirs.csv").read_text().splitlines()
    (bank_copy / "rirs.csv").write_text("\n".join(",".join(line.split(",")[:-1]) for line in lines) + "\n")
    with pytest.raises(DataError, match="missing or unknown columns"):
        RirBank.load(bank_copy)


def test_load_missing_or_corrupt_settings(bank_copy):
    (bank_copy / "bank.json").write_text("{not json")
    with pytest.raises(DataError, match="not a readable RIR bank"):
        RirBank.load(bank_copy)
    (bank_copy / "bank.json").unlink()
    with pytest.raises(DataError, match="not a readable RIR bank"):
        RirBank.load(bank_copy)


def test_item_with_a_wrong_length_is_refused(bank_copy):
    bank = RirBank.load(bank_copy)
    sf.write(bank_copy / "rirs" / "000001.wav", np.zeros(3, np.float32), 8000, subtype="FLOAT")
    with pytest.raises(DataError, match=r"000001.wav: corrupt RIR"):
        bank[1]


# load_rir_folder


def test_load_rir_folder_resamples_and_measures(tmp_path):
    h = _decaying_noise(0.4, 16000, 0.6, seed=4) * 0.05
    h[100] = -2.0  # the direct path, negative polarity
    sf.write(tmp_path / "a.wav", h, 16000, subtype="FLOAT")
    (rir,) = load_rir_folder(tmp_path, 8000)
    assert rir.sample_rate == 8000
    assert rir.rir.size == h.size // 2
    assert rir.direct_index == 50
    assert rir.rir[50] == pytest.approx(1.0)
    assert rir.t60_measured_s == pytest.approx(0.4, rel=0.1)
    assert math.isnan(rir.distance_m)
    assert all(math.isnan(v) for v in rir.room_dim)


def test_load_rir_folder_errors(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_rir_folder(tmp_path / "nowhere", 8000)
    with pytest.raises(DataError, match=r"no .wav files"):
        load_rir_folder(tmp_path, 8000)
    (tmp_path / "bad.wav").write_bytes(b"garbage")
    with pytest.raises(DataError, match=r"bad.wav: unreadable"):
        load_rir_folder(tmp_path, 8000)


# RoomConfig


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


def test_bad_sample_rate_is_refused():
    with pytest.raises(DataError, match="sample_rate=800"):
        simulate_rir(RoomConfig(), 800, np.random.default_rng(0))
