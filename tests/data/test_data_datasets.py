"""``build_datasets``: the SpeechBrain datasets of a prepared config, read through the manifests' placeholders."""

from __future__ import annotations

import shutil

import pytest
import torch

from dereverb.data import build_datasets, prepare
from dereverb.errors import DataError

RATE = 8000


def test_items_and_the_other_columns(tmp_path, fake):
    fake.pairs(tmp_path / "data", early=True)
    data = build_datasets(fake.folder_cfg(tmp_path / "data", tmp_path / "save"), RATE, progress=False)
    assert sorted(data) == ["test", "train", "valid"]
    uid, row = next(iter(data["valid"].data.items()))
    assert set(row) == {"duration_s", "reverberant_path", "direct_path", "early_path"}
    assert row["reverberant_path"] == str(tmp_path / "data" / "reverberant" / f"{uid}.wav")
    assert isinstance(row["duration_s"], float)
    assert set(data["valid"][0]) == {"id", "reverberant", "target"}


def test_moved_data_and_save_folders_still_load(tmp_path, fake):
    fake.pairs(tmp_path / "a" / "data")
    cfg = fake.folder_cfg(tmp_path / "a" / "data", tmp_path / "a" / "save", segment_s=10.0)
    datasets = build_datasets(cfg, RATE, progress=False)
    before = {s: [(x["id"], x["reverberant"]) for x in d] for s, d in datasets.items()}
    shutil.move(tmp_path / "a", tmp_path / "b")
    cfg = fake.folder_cfg(tmp_path / "b" / "data", tmp_path / "b" / "save", segment_s=10.0)
    stamp = fake.mtimes(tmp_path / "b" / "save")
    datasets = build_datasets(cfg, RATE, progress=False)
    after = {s: [(x["id"], x["reverberant"]) for x in d] for s, d in datasets.items()}
    assert fake.mtimes(tmp_path / "b" / "save") == stamp  # found, not prepared again
    for split in before:
        assert [i for i, _ in after[split]] == [i for i, _ in before[split]]
        assert all(torch.equal(x, y) for (_, x), (_, y) in zip(before[split], after[split], strict=True))


def test_a_failed_preparation_on_the_main_process_is_an_error(tmp_path, fake, monkeypatch):
    import speechbrain.utils.distributed

    fake.pairs(tmp_path / "data")
    monkeypatch.setattr(speechbrain.utils.distributed, "run_on_main", lambda *args, **kwargs: None)
    with pytest.raises(
        DataError, match=r"8k-[0-9a-f]{12}: not prepared \(the preparation on the main process failed\?\)"
    ):
        build_datasets(fake.folder_cfg(tmp_path / "data", tmp_path / "save"), RATE, progress=False)


def test_a_pair_changed_after_preparation_is_refused_when_read(tmp_path, fake):
    fake.pairs(tmp_path / "data")
    cfg = fake.folder_cfg(tmp_path / "data", tmp_path / "save")
    prepare(cfg, RATE, progress=False)
    data = build_datasets(cfg, RATE, progress=False)
    item_id = data["valid"][0]["id"]
    fake.write(tmp_path / "data" / "direct" / f"{item_id}.wav", fake.noise(100, 0))
    with pytest.raises(DataError, match=rf"reverberant/{item_id}.wav: \d+ samples, but .*direct/{item_id}.wav has 100"):
        data["valid"][0]
