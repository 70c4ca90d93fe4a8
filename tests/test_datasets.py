"""Preparation and datasets of every kind on tiny generated data: items, splits, idempotence,
placeholders, bad input, the Hydra ``data=`` group and the preparation command line."""

from __future__ import annotations

import csv
import json
import logging
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from dereverb.config import CONF_DIR, compose
from dereverb.data import build_datasets, prepare
from dereverb.data.datasets import DEFAULTS
from dereverb.errors import DataError

RATE = 8000
TINY_ROOMS = {"t60_range": [0.2, 0.3], "distance_range": [0.5, 1.5]}


def _noise(n: int, seed: int, scale: float = 0.1) -> np.ndarray:
    return (scale * np.random.default_rng(seed).standard_normal(n)).astype(np.float32)


def _write(path: Path, x: np.ndarray, rate: int = RATE, subtype: str = "FLOAT") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, x, rate, subtype=subtype)


def _pairs(root: Path, n: int = 10, early: bool = False, seed: int = 0) -> list[str]:
    """root/reverb/NAME and root/clean/NAME with reverb = 0.5 * clean; lengths 0.3 s + 10 ms * i."""
    names = []
    for i in range(n):
        name = f"utt{i:02d}.wav"
        clean = _noise(2400 + 80 * i, seed + i)
        _write(root / "clean" / name, clean)
        _write(root / "reverb" / name, 0.5 * clean)
        if early:
            _write(root / "early" / name, 0.25 * clean)
        names.append(name)
    return names


def _folder_cfg(root: Path, save: Path, **kw) -> dict:
    return {"kind": "folder", "root": str(root), "save_folder": str(save), "segment_s": 0.2, **kw}


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _mtimes(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in sorted(folder.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------------------------ folder


def test_folder_flat_split_items_and_lengths(tmp_path):
    names = _pairs(tmp_path / "data")
    manifests = prepare(_folder_cfg(tmp_path / "data", tmp_path / "save"), RATE, progress=False)
    ids = {split: [r["ID"] for r in _rows(path)] for split, path in manifests.items()}
    assert [len(ids[s]) for s in ("train", "valid", "test")] == [8, 1, 1]
    assert sorted(i for split_ids in ids.values() for i in split_ids) == sorted(
        Path(n).stem for n in names
    )  # disjoint, complete
    # the CSVs hold placeholders, not absolute paths
    assert all(r["reverb"].startswith("$data_root/reverb/") for r in _rows(manifests["train"]))

    data = build_datasets(_folder_cfg(tmp_path / "data", tmp_path / "save"), RATE, progress=False)
    assert [len(data[s]) for s in ("train", "valid", "test")] == [8, 1, 1]
    for split, dataset in data.items():
        for item in dataset:
            assert set(item) == {"id", "reverb", "target"}
            assert item["reverb"].dtype == torch.float32
            assert item["target"].dtype == torch.float32
            assert item["reverb"].shape == item["target"].shape
            torch.testing.assert_close(item["reverb"], 0.5 * item["target"])  # the same crop for both
            n_file = sf.info(tmp_path / "data" / "clean" / f"{item['id']}.wav").frames
            expected = min(n_file, round(0.2 * RATE)) if split == "train" else n_file
            assert item["reverb"].shape == (expected,)


def test_folder_train_crops_are_random(tmp_path):
    _pairs(tmp_path / "data", n=5)
    cfg = _folder_cfg(tmp_path / "data", tmp_path / "save", valid_fraction=0.2, test_fraction=0.2)
    train = build_datasets(cfg, RATE, progress=False)["train"]
    torch.manual_seed(0)
    a = [train[i]["target"] for i in range(len(train))]
    b = [train[i]["target"] for i in range(len(train))]
    assert any(not torch.equal(x, y) for x, y in zip(a, b, strict=True))
    torch.manual_seed(0)
    assert all(torch.equal(x, train[i]["target"]) for i, x in enumerate(a))  # seeded by torch


def test_folder_split_subfolders_and_early_target(tmp_path):
    root = tmp_path / "data"
    for split, n in (("train", 4), ("valid", 2), ("test", 3)):
        _pairs(root / split, n=n, early=True, seed=len(split))
    manifests = prepare(_folder_cfg(root, tmp_path / "save", target="early"), RATE, progress=False)
    assert [len(_rows(manifests[s])) for s in ("train", "valid", "test")] == [4, 2, 3]
    assert _rows(manifests["valid"])[0]["early"].startswith("$data_root/valid/early/")
    item = build_datasets(_folder_cfg(root, tmp_path / "save", target="early"), RATE, progress=False)["test"][0]
    torch.testing.assert_close(item["reverb"], 2 * item["target"])  # early = 0.25 clean, reverb = 0.5 clean


def test_folder_missing_split_subfolder(tmp_path):
    _pairs(tmp_path / "data" / "train", n=3)
    _pairs(tmp_path / "data" / "valid", n=3)
    with pytest.raises(DataError, match=r"has train/ but no test/"):
        prepare(_folder_cfg(tmp_path / "data", tmp_path / "save"), RATE, progress=False)


def test_folder_early_target_needs_early_folder(tmp_path):
    _pairs(tmp_path / "data")
    with pytest.raises(DataError, match=r"data.target=early: needs an early/ folder"):
        prepare(_folder_cfg(tmp_path / "data", tmp_path / "save", target="early"), RATE, progress=False)


def test_folder_resamples_higher_rate_sources(tmp_path):
    root = tmp_path / "data"
    for i in range(5):
        x = _noise(4800, i)
        _write(root / "clean" / f"u{i}.wav", x, 16000)
        _write(root / "reverb" / f"u{i}.wav", x, 16000)
    cfg = _folder_cfg(root, tmp_path / "save", valid_fraction=0.2, test_fraction=0.2)
    item = build_datasets(cfg, RATE, progress=False)["valid"][0]
    assert item["reverb"].shape == (2400,)


# ------------------------------------------------------------------------------------ bad input


def test_missing_root_folder(tmp_path):
    with pytest.raises(DataError, match=r"data.root=.*nowhere: no such folder"):
        prepare(_folder_cfg(tmp_path / "nowhere", tmp_path / "save"), RATE, progress=False)


def test_unmatched_pairs_error_lists_names(tmp_path):
    _pairs(tmp_path / "data")
    _write(tmp_path / "data" / "reverb" / "orphan_a.wav", _noise(2400, 1))
    _write(tmp_path / "data" / "clean" / "orphan_b.wav", _noise(2400, 2))
    with pytest.raises(DataError, match=r"2 files without a partner \(first: orphan_a.wav, orphan_b.wav\)"):
        prepare(_folder_cfg(tmp_path / "data", tmp_path / "save"), RATE, progress=False)


def test_unmatched_pairs_skipped_and_counted(tmp_path, caplog):
    _pairs(tmp_path / "data")
    _write(tmp_path / "data" / "reverb" / "orphan_a.wav", _noise(2400, 1))
    with caplog.at_level(logging.WARNING, logger="dereverb.data"):
        manifests = prepare(_folder_cfg(tmp_path / "data", tmp_path / "save", on_bad_file="skip"), RATE, progress=False)
    meta = json.loads((manifests["train"].parent / "prepared.json").read_text())
    assert meta["skipped"]["count"] == 1
    assert "orphan_a.wav" in meta["skipped"]["first"][0]
    assert sum(meta["counts"].values()) == 10
    assert "skipped 1 bad file pairs" in caplog.text
    assert "orphan_a.wav" in caplog.text


BAD_FILES = {
    "empty": (lambda p: p.write_bytes(b""), "empty file"),
    "text": (lambda p: p.write_text("no audio here " * 20), "not a readable audio file"),
    "nan": (lambda p: _write(p, np.full(2400, np.nan, np.float32)), "NaN or Inf"),
    "stereo": (lambda p: _write(p, np.zeros((2400, 2), np.float32)), "2 channels"),
    "length": (lambda p: _write(p, _noise(1000, 0)), r"2640 samples, but .*reverb/utt03.wav has 1000 "),
    "rate": (
        lambda p: _write(p, _noise(2400 * 2, 0), 16000),
        r"sample rate 8000 Hz, but .*reverb/utt03.wav has 16000 Hz",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_file_error_names_it(tmp_path, case):
    make, match = BAD_FILES[case]
    _pairs(tmp_path / "data")
    bad = tmp_path / "data" / "reverb" / "utt03.wav"
    bad.unlink()
    make(bad)
    with pytest.raises(DataError, match=match) as err:
        prepare(_folder_cfg(tmp_path / "data", tmp_path / "save"), RATE, progress=False)
    assert "utt03.wav" in str(err.value)
    assert "data.on_bad_file=skip" in str(err.value)
    assert not any((tmp_path / "save").iterdir())  # nothing half-prepared left behind


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_file_skipped_and_counted(tmp_path, case):
    make, _ = BAD_FILES[case]
    _pairs(tmp_path / "data")
    bad = tmp_path / "data" / "reverb" / "utt03.wav"
    bad.unlink()
    make(bad)
    manifests = prepare(_folder_cfg(tmp_path / "data", tmp_path / "save", on_bad_file="skip"), RATE, progress=False)
    meta = json.loads((manifests["train"].parent / "prepared.json").read_text())
    assert meta["skipped"]["count"] == 1
    all_ids = [r["ID"] for path in manifests.values() for r in _rows(path)]
    assert "utt03" not in all_ids
    assert len(all_ids) == 9


def test_source_below_data_rate_is_bad(tmp_path):
    _pairs(tmp_path / "data")  # 8 kHz files
    with pytest.raises(DataError, match=r"recorded at 8000 Hz, below the data rate 16000 Hz"):
        prepare(_folder_cfg(tmp_path / "data", tmp_path / "save"), 16000, progress=False)


@pytest.mark.parametrize(
    ("cfg", "rate", "match"),
    [
        ({"kind": "whamr", "root": "/x", "task": "separate"}, RATE, "data.task='separate': expected one of"),
        ({"kind": "whamr", "root": "/x", "version": "mid"}, RATE, "data.version='mid'"),
        ({"kind": "whamr"}, RATE, "data.root is required"),
        ({"kind": "whamr", "root": "/x"}, 22050, "sample_rate=22050: unsupported"),
        ({"kind": "wsj"}, RATE, "data.kind='wsj': unknown"),
        ({"kind": "folder", "root": "/x", "rooot": 1}, RATE, "data.rooot: unknown key"),
        ({"kind": "folder", "root": "/x", "on_bad_file": "ignore"}, RATE, "data.on_bad_file='ignore'"),
        ({"kind": "folder", "root": "/x", "segment_s": 0}, RATE, "data.segment_s=0"),
        ({"kind": "demo", "train_rirs": 0}, RATE, "data.train_rirs=0"),
        ({"kind": "demo", "target": "late"}, RATE, "data.target='late'"),
    ],
)
def test_bad_config_values_name_the_key(tmp_path, cfg, rate, match):
    with pytest.raises(DataError, match=match):
        prepare({"save_folder": str(tmp_path), **cfg}, rate, progress=False)


# ------------------------------------------------------------------------------------ idempotence


def test_second_preparation_does_nothing(tmp_path):
    _pairs(tmp_path / "data")
    cfg = _folder_cfg(tmp_path / "data", tmp_path / "save")
    first = prepare(cfg, RATE, progress=False)
    before = _mtimes(tmp_path / "save")
    start = time.perf_counter()
    second = prepare(cfg, RATE, progress=False)
    assert time.perf_counter() - start < 1.0
    assert second == first
    assert _mtimes(tmp_path / "save") == before
    assert len(list((tmp_path / "save").iterdir())) == 1


def test_changed_config_prepares_afresh_and_keeps_the_old(tmp_path, caplog):
    _pairs(tmp_path / "data")
    first = prepare(_folder_cfg(tmp_path / "data", tmp_path / "save"), RATE, progress=False)
    before = _mtimes(first["train"].parent)
    with caplog.at_level(logging.INFO, logger="dereverb.data"):
        second = prepare(_folder_cfg(tmp_path / "data", tmp_path / "save", split_seed=1), RATE, progress=False)
    assert second["train"].parent != first["train"].parent
    assert "changed: split_seed" in caplog.text
    assert _mtimes(first["train"].parent) == before
    # a changed source file is a change too
    _write(tmp_path / "data" / "clean" / "utt00.wav", _noise(3000, 5))
    _write(tmp_path / "data" / "reverb" / "utt00.wav", _noise(3000, 5))
    third = prepare(_folder_cfg(tmp_path / "data", tmp_path / "save"), RATE, progress=False)
    assert third["train"].parent not in (first["train"].parent, second["train"].parent)
    # segment_s only changes how items are cut, not what is prepared
    same = prepare(_folder_cfg(tmp_path / "data", tmp_path / "save", segment_s=1.0), RATE, progress=False)
    assert same == third


def test_failed_preparation_leaves_the_previous_one(tmp_path):
    _pairs(tmp_path / "data")
    good = prepare(_folder_cfg(tmp_path / "data", tmp_path / "save"), RATE, progress=False)
    (tmp_path / "data" / "clean" / "utt05.wav").write_bytes(b"")
    with pytest.raises(DataError, match=r"empty file"):
        prepare(_folder_cfg(tmp_path / "data", tmp_path / "save"), RATE, progress=False)
    assert [p.name for p in (tmp_path / "save").iterdir()] == [good["train"].parent.name]


def test_moved_data_and_save_folders_still_load(tmp_path):
    _pairs(tmp_path / "a" / "data")
    cfg = _folder_cfg(tmp_path / "a" / "data", tmp_path / "a" / "save", segment_s=10.0)
    before = {s: [(x["id"], x["reverb"]) for x in d] for s, d in build_datasets(cfg, RATE, progress=False).items()}
    shutil.move(tmp_path / "a", tmp_path / "b")
    cfg = _folder_cfg(tmp_path / "b" / "data", tmp_path / "b" / "save", segment_s=10.0)
    stamp = _mtimes(tmp_path / "b" / "save")
    after = {s: [(x["id"], x["reverb"]) for x in d] for s, d in build_datasets(cfg, RATE, progress=False).items()}
    assert _mtimes(tmp_path / "b" / "save") == stamp  # found, not prepared again
    for split in before:
        assert [i for i, _ in after[split]] == [i for i, _ in before[split]]
        assert all(torch.equal(x, y) for (_, x), (_, y) in zip(before[split], after[split], strict=True))


# ------------------------------------------------------------------------------------ WHAMR!

WHAMR_NAMES = ["011a0101_0.061105_401c020r_-0.061105.wav", "01zo030l_1.9869_40po031b_-1.9869.wav"]
WHAMR_FOLDERS = {"s1_reverb": 0.1, "s1_anechoic": 0.2, "mix_single_reverb": 0.3, "s2_reverb": 0.4, "noise": 0.5}


def _whamr(root: Path, rates=("wav8k",), versions=("min", "max")) -> None:
    """A fake WHAMR! tree: every file of folder F holds the constant WHAMR_FOLDERS[F] (+1 for max)."""
    for rate_dir in rates:
        rate = 8000 if rate_dir == "wav8k" else 16000
        for version in versions:
            for k, split in enumerate(("tr", "cv", "tt")):
                for folder, value in WHAMR_FOLDERS.items():
                    for j, name in enumerate(WHAMR_NAMES[: 2 if split == "tr" else 1]):
                        n = rate // 10 * (3 + j + k)
                        x = np.full(n, value + (version == "max"), np.float32)
                        _write(root / rate_dir / version / split / folder / name, x, rate)


@pytest.mark.parametrize("version", ["min", "max"])
@pytest.mark.parametrize(("task", "reverb_value"), [("dereverb", 0.1), ("denoise_dereverb", 0.3)])
def test_whamr_tasks_and_versions(tmp_path, task, reverb_value, version):
    _whamr(tmp_path / "whamr")
    cfg = {"kind": "whamr", "root": str(tmp_path / "whamr"), "save_folder": str(tmp_path / "save")}
    cfg |= {"task": task, "version": version, "segment_s": 0.35}
    data = build_datasets(cfg, RATE, progress=False)
    assert [len(data[s]) for s in ("train", "valid", "test")] == [2, 1, 1]
    offset = 1.0 if version == "max" else 0.0
    for split, dataset in data.items():
        for item in dataset:
            assert item["id"] in {Path(n).stem for n in WHAMR_NAMES}
            torch.testing.assert_close(item["reverb"], torch.full_like(item["reverb"], reverb_value + offset))
            torch.testing.assert_close(item["target"], torch.full_like(item["target"], 0.2 + offset))
            if split == "train":
                assert len(item["reverb"]) == min(2800, 800 * (3 + WHAMR_NAMES.index(item["id"] + ".wav")))
    (folder,) = (tmp_path / "save").iterdir()
    rows = _rows(folder / "test.csv")
    expected = f"$data_root/wav8k/{version}/tt/{'s1_reverb' if task == 'dereverb' else 'mix_single_reverb'}/"
    assert rows[0]["reverb"].startswith(expected)
    assert rows[0]["clean"] == f"$data_root/wav8k/{version}/tt/s1_anechoic/{WHAMR_NAMES[0]}"


def test_whamr_16k_uses_wav16k_and_8k_falls_back_to_it(tmp_path):
    _whamr(tmp_path / "whamr", rates=("wav16k",), versions=("min",))
    cfg = {"kind": "whamr", "root": str(tmp_path / "whamr"), "save_folder": str(tmp_path / "save")}
    assert build_datasets(cfg, 16000, progress=False)["test"][0]["reverb"].shape == (8000,)  # 0.5 s
    assert build_datasets(cfg, 8000, progress=False)["test"][0]["reverb"].shape == (4000,)  # resampled


def test_whamr_missing_folders(tmp_path):
    _whamr(tmp_path / "whamr", versions=("min",))
    cfg = {"kind": "whamr", "root": str(tmp_path / "whamr"), "save_folder": str(tmp_path / "save")}
    with pytest.raises(DataError, match=r"data.version=max: no folder"):
        prepare({**cfg, "version": "max"}, RATE, progress=False)
    with pytest.raises(DataError, match=r"no wav16k/ folder"):
        prepare(cfg, 16000, progress=False)
    shutil.rmtree(tmp_path / "whamr" / "wav8k" / "min" / "cv" / "mix_single_reverb")
    with pytest.raises(DataError, match=r"cv/mix_single_reverb .needed by data.task=denoise_dereverb"):
        prepare({**cfg, "task": "denoise_dereverb"}, RATE, progress=False)
    (tmp_path / "whamr" / "wav8k" / "min" / "tr" / "s1_anechoic" / WHAMR_NAMES[1]).unlink()
    with pytest.raises(DataError, match=f"1 files without a partner \\(first: {WHAMR_NAMES[1]}\\)"):
        prepare(cfg, RATE, progress=False)


# ------------------------------------------------------------------------------------ demo, simulate

PACK_COLUMNS = ["id", "path", "speaker", "sex", "language", "kind", "source", "prompt", "sample_rate"]
PACK_COLUMNS += ["num_samples", "duration_s", "split", "sha256", "origin"]


def _pack(folder: Path) -> Path:
    """A fake speech pack: per split, two 16 kHz voices and one 8 kHz voice."""
    rows = []
    for split, n in (("train", 3), ("valid", 2), ("test", 2)):
        for voice, rate in (("anna", 16000), ("bert", 16000), ("tel", 8000)):
            for k in range(n):
                uid = f"{voice}_{split}{k}"
                x = _noise(int(rate * (0.6 + 0.1 * k)), hash(uid) % 1000, 0.3)
                _write(folder / voice / f"{uid}.flac", x, rate, subtype="PCM_16")
                rows.append([uid, f"{voice}/{uid}.flac", voice, "female", "en-US", "real", "x=1", f"p{k}", rate])
                rows[-1] += [len(x), len(x) / rate, split, "0" * 64, "x"]
    with open(folder / "manifest.csv", "w", newline="") as f:
        csv.writer(f).writerows([PACK_COLUMNS, *rows])
    return folder


def _demo_cfg(tmp_path: Path, **kw) -> dict:
    cfg = {"kind": "demo", "save_folder": str(tmp_path / "save"), "pack_dir": str(_pack(tmp_path / "pack"))}
    return cfg | {"rooms": TINY_ROOMS, "train_rirs": 3, "eval_rirs": 2, "segment_s": 0.5} | kw


def _lag_of_peak(x: torch.Tensor, y: torch.Tensor, max_lag: int = 200) -> int:
    x, y = x.double().numpy(), y.double().numpy()
    lags = range(-max_lag, max_lag + 1)
    corr = [np.dot(x[max(0, k) : len(x) + min(0, k)], y[max(0, -k) : len(y) - max(0, k)]) for k in lags]
    return list(lags)[int(np.argmax(corr))]


def test_demo_items_alignment_and_manifests(tmp_path):
    cfg = _demo_cfg(tmp_path)
    manifests = prepare(cfg, RATE, progress=False)
    folder = manifests["train"].parent
    valid = _rows(manifests["valid"])
    assert len(valid) == 6
    assert len(_rows(manifests["train"])) == 9
    for col in ("ID", "reverb", "clean", "early", "duration_s", "speaker", "t60_s", "drr_db", "distance_m"):
        assert col in valid[0]
    assert valid[0]["reverb"].startswith("$prep_root/valid/reverb/")
    assert all(0.15 < float(r["t60_s"]) < 0.35 for r in valid)
    assert _rows(manifests["train"])[0]["clean"].startswith("$pack_root/")
    # no room shared between the splits' banks
    banks = {s: sorted((folder / "rirs" / s / "rirs").glob("*.wav")) for s in ("train", "valid", "test")}
    arrays = {s: [sf.read(p)[0] for p in ps] for s, ps in banks.items()}
    assert [len(arrays[s]) for s in ("train", "valid", "test")] == [3, 2, 2]
    for a in arrays["train"]:
        assert not any(a.shape == b.shape and np.allclose(a, b) for b in arrays["valid"] + arrays["test"])

    data = build_datasets(cfg, RATE, progress=False)
    torch.manual_seed(0)
    for split, dataset in data.items():
        for item in dataset:
            assert item["reverb"].dtype == torch.float32
            assert item["reverb"].shape == item["target"].shape
            assert torch.isfinite(item["reverb"]).all()
            if split == "train":
                assert item["reverb"].shape == (4000,)  # 0.5 s crop of >= 0.6 s utterances
            else:
                duration = next(float(r["duration_s"]) for r in _rows(manifests[split]) if r["ID"] == item["id"])
                assert item["reverb"].shape == (round(duration * RATE),)
            assert _lag_of_peak(item["reverb"], item["target"]) == 0
    # dynamic mixing: the same training utterance comes out differently each time
    first, second = data["train"][0]["reverb"], data["train"][0]["reverb"]
    assert not torch.equal(first, second)


def test_demo_16k_uses_only_16k_sources(tmp_path):
    cfg = _demo_cfg(tmp_path, train_rirs=1, eval_rirs=1)
    manifests = prepare(cfg, 16000, progress=False)
    for split, path in manifests.items():
        rows = _rows(path)
        assert len(rows) == {"train": 6, "valid": 4, "test": 4}[split]
        assert all(not r["ID"].startswith("tel_") for r in rows)
    assert manifests["train"].parent.name.startswith("16k-")
    item = build_datasets(cfg, 16000, progress=False)["valid"][0]
    assert item["reverb"].shape[0] == round(float(_rows(manifests["valid"])[0]["duration_s"]) * 16000)


def test_demo_early_target(tmp_path):
    data = build_datasets(_demo_cfg(tmp_path, target="early", train_rirs=1, eval_rirs=1), RATE, progress=False)
    item = data["valid"][0]
    folder = next((tmp_path / "save").iterdir())
    early, _ = sf.read(folder / "valid" / "early" / f"{item['id']}.wav", dtype="float32")
    torch.testing.assert_close(item["target"], torch.from_numpy(early))


def test_simulate_own_speech_and_own_rirs(tmp_path, rir_bank):
    clean = tmp_path / "corpus"
    for spk in ("1089", "121"):
        for k in range(6):
            _write(clean / spk / "ch1" / f"{spk}-{k}.flac", _noise(12000, k, 0.3), 16000, subtype="PCM_16")
    rirs = tmp_path / "rirs"  # the shared tiny bank's RIRs, standing in for measured ones
    for k in range(len(rir_bank)):
        _write(rirs / f"room{k}.wav", rir_bank[k].rir)
    cfg = {"kind": "simulate", "clean_root": str(clean), "rir_root": str(rirs), "save_folder": str(tmp_path / "s")}
    cfg |= {"valid_fraction": 0.2, "test_fraction": 0.2, "segment_s": 0.5}
    manifests = prepare(cfg, RATE, progress=False)
    train = _rows(manifests["train"])
    assert {r["speaker"] for r in train} == {"1089", "121"}
    assert [len(_rows(manifests[s])) for s in ("train", "valid", "test")] == [8, 2, 2]
    rirs_dir = manifests["train"].parent / "rirs"
    copied = sorted(p.name for s in ("train", "valid", "test") for p in (rirs_dir / s).iterdir())
    assert copied == [f"room{k}.wav" for k in range(6)]  # each RIR in exactly one split
    data = build_datasets(cfg, RATE, progress=False)
    item = data["train"][0]
    assert item["reverb"].shape == (4000,)
    assert _lag_of_peak(item["reverb"], item["target"]) == 0
    assert data["test"][0]["reverb"].shape == (6000,)


def test_simulate_below_rate_source_skipped(tmp_path):
    clean = tmp_path / "corpus"
    for k in range(6):
        _write(clean / f"u{k}.wav", _noise(4000, k), 8000)
    cfg = {"kind": "simulate", "clean_root": str(clean), "save_folder": str(tmp_path / "s"), "rooms": TINY_ROOMS}
    cfg |= {"train_rirs": 1, "eval_rirs": 1, "valid_fraction": 0.2, "test_fraction": 0.2}
    with pytest.raises(DataError, match=r"recorded at 8000 Hz, below the data rate 16000 Hz"):
        prepare(cfg, 16000, progress=False)


def test_simulate_bad_files_error_or_skip(tmp_path):
    clean = tmp_path / "corpus"
    for k in range(8):
        _write(clean / f"u{k}.wav", _noise(4000, k))
    (clean / "u3.wav").write_text("not audio " * 20)
    _write(clean / "u5.wav", np.full(4000, np.inf, np.float32))
    cfg = {"kind": "simulate", "clean_root": str(clean), "save_folder": str(tmp_path / "s"), "rooms": TINY_ROOMS}
    cfg |= {"train_rirs": 1, "eval_rirs": 1, "valid_fraction": 0.2, "test_fraction": 0.2}
    with pytest.raises(DataError, match=r"u3.wav: not a readable audio file"):
        prepare(cfg, RATE, progress=False)
    manifests = prepare({**cfg, "on_bad_file": "skip"}, RATE, progress=False)
    meta = json.loads((manifests["train"].parent / "prepared.json").read_text())
    assert meta["skipped"]["count"] == 2
    ids = sorted(r["ID"] for path in manifests.values() for r in _rows(path))
    assert ids == ["u0", "u1", "u2", "u4", "u6", "u7"]


# ------------------------------------------------------------------------------------ Hydra and CLI


def test_data_yaml_mirrors_python_defaults():
    from omegaconf import OmegaConf

    for kind, defaults in DEFAULTS.items():
        data = OmegaConf.to_container(compose("prepare", [f"data={kind}"]).data)
        assert data.pop("kind") == kind
        assert data.pop("save_folder").endswith(f"/{kind}")
        assert data == {k: v for k, v in defaults.items() if k not in ("kind", "save_folder")}, kind


@pytest.mark.parametrize("kind", ["demo", "simulate", "folder", "whamr"])
def test_every_data_config_composes_and_prepares(tmp_path, kind):
    overrides = [f"data={kind}", f"data.save_folder={tmp_path / 'save'}", "data.segment_s=0.2"]
    if kind == "demo":
        overrides += [f"data.pack_dir={_pack(tmp_path / 'pack')}", "data.train_rirs=1", "data.eval_rirs=1"]
        overrides += ["+data.rooms.t60_range=[0.2,0.3]", "+data.rooms.distance_range=[0.5,1.5]"]
    elif kind == "simulate":
        for k in range(5):
            _write(tmp_path / "corpus" / f"u{k}.wav", _noise(4000, k))
        overrides += [f"data.clean_root={tmp_path / 'corpus'}", "data.train_rirs=1", "data.eval_rirs=1"]
        overrides += ["+data.rooms.t60_range=[0.2,0.3]", "data.valid_fraction=0.2", "data.test_fraction=0.2"]
    elif kind == "folder":
        _pairs(tmp_path / "pairs")
        overrides += [f"data.root={tmp_path / 'pairs'}"]
    else:
        _whamr(tmp_path / "whamr", versions=("max",))
        overrides += [f"data.root={tmp_path / 'whamr'}", "data.version=max", "data.task=denoise_dereverb"]
    cfg = compose("prepare", overrides)
    assert cfg.data.kind == kind
    assert cfg.sample_rate == RATE
    data = build_datasets(cfg.data, cfg.sample_rate, progress=False)
    assert all(len(data[s]) >= 1 for s in ("train", "valid", "test"))
    assert data["valid"][0]["reverb"].dtype == torch.float32


def test_compose_missing_root_names_the_key():
    cfg = compose("prepare", ["data=whamr"])
    with pytest.raises(DataError, match=r"data.root is required"):
        prepare(cfg.data, cfg.sample_rate)


def test_default_save_folder_honours_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("DEREVERB_DATA", str(tmp_path))
    assert compose("prepare").data.save_folder == f"{tmp_path}/demo"
    monkeypatch.delenv("DEREVERB_DATA")
    assert compose("prepare").data.save_folder == "~/.cache/dereverb/demo"


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "dereverb.data.prepare", *args], capture_output=True, text=True, cwd=cwd, check=False
    )


def test_cli_bad_root_prints_one_line(tmp_path):
    proc = _cli("data=folder", f"data.root={tmp_path / 'nowhere'}", f"data.save_folder={tmp_path}", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"error: data.root={tmp_path / 'nowhere'}: no such folder"]
    proc = _cli("data=nosuch", cwd=tmp_path)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1
    assert "nosuch" in proc.stderr


def test_cli_prepares_and_summarises(tmp_path):
    _pairs(tmp_path / "pairs")
    proc = _cli("data=folder", f"data.root={tmp_path / 'pairs'}", f"data.save_folder={tmp_path / 's'}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "prepared data.kind=folder at 8000 Hz" in proc.stdout
    assert "train      8 utterances" in proc.stdout
    assert CONF_DIR.is_absolute()


def test_room_settings_are_checked_and_normalised(tmp_path):
    with pytest.raises(DataError, match=r"t60_range"):
        prepare(_demo_cfg(tmp_path, rooms={"t60_range": [1.0, 0.5]}), RATE, progress=False)
    with pytest.raises(DataError, match=r"data.rooms: .*unexpected keyword argument 'size'"):
        prepare(_demo_cfg(tmp_path, rooms={"size": 3}), RATE, progress=False)
    from dereverb.data.datasets import _content_settings, data_settings
    from dereverb.data.rooms import RoomConfig

    spelled = data_settings(_demo_cfg(tmp_path, rooms=RoomConfig().to_dict()), RATE)
    empty = data_settings(_demo_cfg(tmp_path, rooms={}), RATE)
    assert _content_settings(spelled, RATE) == _content_settings(empty, RATE)


def test_prepare_stays_callable_after_the_cli_module_is_imported(tmp_path):
    import importlib

    import dereverb.data

    importlib.import_module("dereverb.data.prepare")  # as pytest's doctest collection does
    _pairs(tmp_path / "data")
    manifests = dereverb.data.prepare(_folder_cfg(tmp_path / "data", tmp_path / "save"), RATE, progress=False)
    assert manifests["train"].is_file()


def test_demo_short_utterances_fill_the_segment(tmp_path):
    # the pack's utterances: 0.6-0.8 s; the direct target is silent exactly outside the utterance
    cfg = _demo_cfg(tmp_path, segment_s=2.0, train_rirs=1, eval_rirs=1, target="direct")
    train = build_datasets(cfg, RATE, progress=False)["train"]
    torch.manual_seed(0)
    for i in range(len(train)):
        item = train[i]
        assert item["reverb"].shape == (16000,)
        assert item["target"].shape == (16000,)
        active = (item["target"].abs() > 0).nonzero()
        n = round(float(_rows(next((tmp_path / "save").iterdir()) / "train.csv")[i]["duration_s"]) * RATE)
        assert n - 100 <= int(active[-1] - active[0]) + 1 <= n + 100  # the whole utterance, once
        assert item["reverb"][active[-1] + 1 :].abs().sum() > 0 or active[-1] == 15999  # the tail continues


def test_changed_room_code_is_a_changed_setting(tmp_path, monkeypatch, caplog):
    from dereverb.data import datasets, rooms

    cfg = _demo_cfg(tmp_path, train_rirs=1, eval_rirs=1)
    first = prepare(cfg, RATE, progress=False)
    original = rooms.reverberate

    def louder(clean, rir, target="direct"):
        reverberant, out = original(clean, rir, target)
        return reverberant, 2 * out

    monkeypatch.setattr(rooms, "reverberate", louder)
    datasets._simulator_fingerprint.cache_clear()
    with caplog.at_level(logging.INFO, logger="dereverb.data"):
        second = prepare(cfg, RATE, progress=False)
    datasets._simulator_fingerprint.cache_clear()
    assert second["train"].parent != first["train"].parent
    assert "changed: simulator" in caplog.text
