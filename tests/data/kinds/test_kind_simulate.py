"""``data=simulate``: your dry speech in simulated rooms or in your RIR files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dereverb.data import build_datasets, prepare
from dereverb.errors import DataError

RATE = 8000


def test_simulate_own_speech_and_own_rirs(tmp_path, fake, rir_bank):
    clean = tmp_path / "corpus"
    for spk in ("1089", "121"):
        for k in range(6):
            fake.write(clean / spk / "ch1" / f"{spk}-{k}.flac", fake.noise(12000, k, 0.3), 16000, subtype="PCM_16")
    rirs = tmp_path / "rirs"  # the shared tiny bank's RIRs, standing in for measured ones
    for k in range(len(rir_bank)):
        fake.write(rirs / f"room{k}.wav", rir_bank[k].rir)
    cfg = {"kind": "simulate", "clean_root": str(clean), "rir_root": str(rirs), "save_folder": str(tmp_path / "s")}
    cfg |= {"valid_fraction": 0.2, "test_fraction": 0.2, "segment_s": 0.5}
    manifests = prepare(cfg, RATE, progress=False)
    train = fake.rows(manifests["train"])
    assert {r["speaker"] for r in train} == {"1089", "121"}
    assert [len(fake.rows(manifests[s])) for s in ("train", "valid", "test")] == [8, 2, 2]
    meta = json.loads((manifests["train"].parent / "prepared.json").read_text())
    assert meta["roots"] == {"data_root": str(clean), "rir_root": str(rirs)}
    assert meta["settings"]["own_rirs"] is True
    rirs_dir = manifests["train"].parent / "rirs"
    copied = sorted(p.name for s in ("train", "valid", "test") for p in (rirs_dir / s).iterdir())
    assert copied == [f"room{k}.wav" for k in range(6)]  # each RIR in exactly one split
    data = build_datasets(cfg, RATE, progress=False)
    item = data["train"][0]
    assert item["reverberant"].shape == (4000,)
    assert fake.lag_of_peak(item["reverberant"], item["target"]) == 0
    assert data["test"][0]["reverberant"].shape == (6000,)


def test_simulate_below_rate_source_skipped(tmp_path, fake):
    clean = tmp_path / "corpus"
    for k in range(6):
        fake.write(clean / f"u{k}.wav", fake.noise(4000, k), 8000)
    cfg = {"kind": "simulate", "clean_root": str(clean), "save_folder": str(tmp_path / "s"), "rooms": fake.TINY_ROOMS}
    cfg |= {"train_rirs": 1, "eval_rirs": 1, "valid_fraction": 0.2, "test_fraction": 0.2}
    with pytest.raises(DataError, match=r"recorded at 8000 Hz, below the data rate 16000 Hz"):
        prepare(cfg, 16000, progress=False)


def test_simulate_bad_files_error_or_skip(tmp_path, fake):
    clean = tmp_path / "corpus"
    for k in range(8):
        fake.write(clean / f"u{k}.wav", fake.noise(4000, k))
    (clean / "u3.wav").write_text("not audio " * 20)
    fake.write(clean / "u5.wav", np.full(4000, np.inf, np.float32))
    cfg = {"kind": "simulate", "clean_root": str(clean), "save_folder": str(tmp_path / "s"), "rooms": fake.TINY_ROOMS}
    cfg |= {"train_rirs": 1, "eval_rirs": 1, "valid_fraction": 0.2, "test_fraction": 0.2}
    with pytest.raises(DataError, match=r"u3.wav: not a readable audio file"):
        prepare(cfg, RATE, progress=False)
    manifests = prepare({**cfg, "on_bad_file": "skip"}, RATE, progress=False)
    meta = json.loads((manifests["train"].parent / "prepared.json").read_text())
    assert meta["skipped"]["count"] == 2
    ids = sorted(r["ID"] for path in manifests.values() for r in fake.rows(path))
    assert ids == ["u0", "u1", "u2", "u4", "u6", "u7"]


def test_simulate_missing_folders_name_the_key(tmp_path, fake):
    cfg = {"kind": "simulate", "clean_root": str(tmp_path / "none"), "save_folder": str(tmp_path / "s")}
    with pytest.raises(DataError, match=r"^data.clean_root=.*none: no such folder$"):
        prepare(cfg, RATE, progress=False)
    for k in range(5):
        fake.write(tmp_path / "corpus" / f"u{k}.wav", fake.noise(4000, k))
    cfg |= {"clean_root": str(tmp_path / "corpus"), "rir_root": str(tmp_path / "no_rirs")}
    with pytest.raises(DataError, match=r"^data.rir_root=.*no_rirs: no such folder$"):
        prepare(cfg, RATE, progress=False)
