"""``data=folder``: paired ``reverberant/``, ``direct/`` (and ``early/``) folders, split by subfolder or seed."""

from __future__ import annotations

from pathlib import Path

import pytest
import soundfile as sf
import torch

from dereverb.data import build_datasets, prepare
from dereverb.errors import DataError

RATE = 8000


def test_folder_flat_split_items_and_lengths(tmp_path, fake):
    names = fake.pairs(tmp_path / "data")
    manifests = prepare(fake.folder_cfg(tmp_path / "data", tmp_path / "save"), RATE, progress=False)
    ids = {split: [r["ID"] for r in fake.rows(path)] for split, path in manifests.items()}
    assert [len(ids[s]) for s in ("train", "valid", "test")] == [8, 1, 1]
    assert sorted(i for split_ids in ids.values() for i in split_ids) == sorted(
        Path(n).stem for n in names
    )  # disjoint, complete
    # the CSVs hold placeholders, not absolute paths, under the new column names
    train_rows = fake.rows(manifests["train"])
    assert list(train_rows[0]) == ["ID", "duration_s", "reverberant", "direct"]
    assert all(r["reverberant"].startswith("$data_root/reverberant/") for r in train_rows)
    assert all(r["direct"].startswith("$data_root/direct/") for r in train_rows)

    data = build_datasets(fake.folder_cfg(tmp_path / "data", tmp_path / "save"), RATE, progress=False)
    assert [len(data[s]) for s in ("train", "valid", "test")] == [8, 1, 1]
    for split, dataset in data.items():
        for item in dataset:
            assert set(item) == {"id", "reverberant", "target"}
            assert item["reverberant"].dtype == torch.float32
            assert item["target"].dtype == torch.float32
            assert item["reverberant"].shape == item["target"].shape
            torch.testing.assert_close(item["reverberant"], 0.5 * item["target"])  # the same crop for both
            n_file = sf.info(tmp_path / "data" / "direct" / f"{item['id']}.wav").frames
            expected = min(n_file, round(0.2 * RATE)) if split == "train" else n_file
            assert item["reverberant"].shape == (expected,)


def test_folder_train_crops_are_random(tmp_path, fake):
    fake.pairs(tmp_path / "data", n=5)
    cfg = fake.folder_cfg(tmp_path / "data", tmp_path / "save", valid_fraction=0.2, test_fraction=0.2)
    train = build_datasets(cfg, RATE, progress=False)["train"]
    torch.manual_seed(0)
    a = [train[i]["target"] for i in range(len(train))]
    b = [train[i]["target"] for i in range(len(train))]
    assert any(not torch.equal(x, y) for x, y in zip(a, b, strict=True))
    torch.manual_seed(0)
    assert all(torch.equal(x, train[i]["target"]) for i, x in enumerate(a))  # seeded by torch


def test_folder_split_subfolders_and_early_target(tmp_path, fake):
    root = tmp_path / "data"
    for split, n in (("train", 4), ("valid", 2), ("test", 3)):
        fake.pairs(root / split, n=n, early=True, seed=len(split))
    manifests = prepare(fake.folder_cfg(root, tmp_path / "save", target="early"), RATE, progress=False)
    assert [len(fake.rows(manifests[s])) for s in ("train", "valid", "test")] == [4, 2, 3]
    assert fake.rows(manifests["valid"])[0]["early"].startswith("$data_root/valid/early/")
    item = build_datasets(fake.folder_cfg(root, tmp_path / "save", target="early"), RATE, progress=False)["test"][0]
    torch.testing.assert_close(item["reverberant"], 2 * item["target"])  # early = 0.25 direct, reverberant = 0.5


def test_folder_direct_target_is_the_default(tmp_path, fake):
    fake.pairs(tmp_path / "data", early=True)
    cfg = fake.folder_cfg(tmp_path / "data", tmp_path / "save")
    manifests = prepare(cfg, RATE, progress=False)
    assert list(fake.rows(manifests["valid"])[0]) == ["ID", "duration_s", "reverberant", "direct", "early"]
    item = build_datasets(cfg, RATE, progress=False)["valid"][0]
    torch.testing.assert_close(item["reverberant"], 0.5 * item["target"])  # the direct/ file


def test_folder_missing_split_subfolder(tmp_path, fake):
    fake.pairs(tmp_path / "data" / "train", n=3)
    fake.pairs(tmp_path / "data" / "valid", n=3)
    with pytest.raises(DataError, match=r"has train/ but no test/"):
        prepare(fake.folder_cfg(tmp_path / "data", tmp_path / "save"), RATE, progress=False)


def test_folder_early_target_needs_early_folder(tmp_path, fake):
    fake.pairs(tmp_path / "data")
    with pytest.raises(DataError, match=r"data.target=early: needs an early/ folder next to every direct/"):
        prepare(fake.folder_cfg(tmp_path / "data", tmp_path / "save", target="early"), RATE, progress=False)


def test_folder_old_folder_names_are_not_read(tmp_path, fake):
    fake.pairs(tmp_path / "data")
    (tmp_path / "data" / "reverberant").rename(tmp_path / "data" / "reverb")
    with pytest.raises(DataError, match=r"data.root=.*: no folder .*reverberant$"):
        prepare(fake.folder_cfg(tmp_path / "data", tmp_path / "save"), RATE, progress=False)


def test_folder_resamples_higher_rate_sources(tmp_path, fake):
    root = tmp_path / "data"
    for i in range(5):
        x = fake.noise(4800, i)
        fake.write(root / "direct" / f"u{i}.wav", x, 16000)
        fake.write(root / "reverberant" / f"u{i}.wav", x, 16000)
    cfg = fake.folder_cfg(root, tmp_path / "save", valid_fraction=0.2, test_fraction=0.2)
    item = build_datasets(cfg, RATE, progress=False)["valid"][0]
    assert item["reverberant"].shape == (2400,)


def test_missing_root_folder(tmp_path, fake):
    with pytest.raises(DataError, match=r"data.root=.*nowhere: no such folder"):
        prepare(fake.folder_cfg(tmp_path / "nowhere", tmp_path / "save"), RATE, progress=False)
