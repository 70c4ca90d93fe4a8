"""RIR banks: built once and reused, refused when built otherwise or corrupt; the user's own RIR files."""

from __future__ import annotations

import math
import shutil
import time

import numpy as np
import pytest
import soundfile as sf

from dereverb.data.rooms import RirBank, RoomConfig, load_rir_folder, simulate_rir
from dereverb.errors import DataError


def _config(bank: RirBank) -> RoomConfig:
    return RoomConfig(**bank.settings["config"])


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
    from dereverb.data.rooms import bank

    calls = []

    def failing(config, sample_rate, rng):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return simulate_rir(config, sample_rate, rng)

    monkeypatch.setattr(bank, "simulate_rir", failing)  # the simulation the bank calls
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


def test_load_rir_folder_resamples_and_measures(tmp_path, fake):
    h = fake.decaying_noise(0.4, 16000, 0.6, seed=4) * 0.05
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
