"""``prepare``: once per settings, in a folder keyed by their hash, published atomically."""

from __future__ import annotations

import json
import logging
import shutil
import time

import pytest

from dereverb.data import manifests as manifests_module
from dereverb.data import prepare
from dereverb.data.kinds.folder import Folder
from dereverb.data.preparation import locate
from dereverb.data.settings import data_settings
from dereverb.errors import DataError

RATE = 8000


def test_prepared_folder_and_its_record(tmp_path, fake):
    fake.pairs(tmp_path / "data")
    cfg = fake.folder_cfg(tmp_path / "data", tmp_path / "save")
    manifests = prepare(cfg, RATE, progress=False)
    folder = manifests["train"].parent
    p = locate(data_settings(cfg, RATE), RATE)
    assert folder == p.folder == tmp_path / "save" / f"8k-{p.digest}"
    assert manifests == {s: folder / f"{s}.csv" for s in ("train", "valid", "test")}
    assert sorted(x.name for x in folder.iterdir()) == ["prepared.json", "test.csv", "train.csv", "valid.csv"]
    meta = json.loads((folder / "prepared.json").read_text())
    assert meta["kind"] == "folder"
    assert meta["hash"] == p.digest
    assert meta["roots"] == {"data_root": str(tmp_path / "data")}
    assert meta["counts"] == {"train": 8, "valid": 1, "test": 1}
    assert meta["settings"] == p.content
    assert "root" not in meta["settings"]
    assert "segment_s" not in meta["settings"]
    assert meta["settings"]["sample_rate"] == RATE
    assert [p.name for p in (tmp_path / "save").iterdir()] == [folder.name]  # no temporary folder left


def test_second_preparation_does_nothing(tmp_path, fake):
    fake.pairs(tmp_path / "data")
    cfg = fake.folder_cfg(tmp_path / "data", tmp_path / "save")
    first = prepare(cfg, RATE, progress=False)
    before = fake.mtimes(tmp_path / "save")
    start = time.perf_counter()
    second = prepare(cfg, RATE, progress=False)
    assert time.perf_counter() - start < 1.0
    assert second == first
    assert fake.mtimes(tmp_path / "save") == before
    assert len(list((tmp_path / "save").iterdir())) == 1


def test_changed_config_prepares_afresh_and_keeps_the_old(tmp_path, fake, caplog):
    fake.pairs(tmp_path / "data")
    first = prepare(fake.folder_cfg(tmp_path / "data", tmp_path / "save"), RATE, progress=False)
    before = fake.mtimes(first["train"].parent)
    with caplog.at_level(logging.INFO, logger="dereverb.data"):
        second = prepare(fake.folder_cfg(tmp_path / "data", tmp_path / "save", split_seed=1), RATE, progress=False)
    assert second["train"].parent != first["train"].parent
    assert "changed: split_seed" in caplog.text
    assert fake.mtimes(first["train"].parent) == before
    # a changed source file is a change too
    fake.write(tmp_path / "data" / "direct" / "utt00.wav", fake.noise(3000, 5))
    fake.write(tmp_path / "data" / "reverberant" / "utt00.wav", fake.noise(3000, 5))
    third = prepare(fake.folder_cfg(tmp_path / "data", tmp_path / "save"), RATE, progress=False)
    assert third["train"].parent not in (first["train"].parent, second["train"].parent)
    # segment_s only changes how items are cut, not what is prepared
    same = prepare(fake.folder_cfg(tmp_path / "data", tmp_path / "save", segment_s=1.0), RATE, progress=False)
    assert same == third


def test_changed_source_files_are_named_as_the_change(tmp_path, fake, caplog):
    fake.pairs(tmp_path / "data")
    prepare(fake.folder_cfg(tmp_path / "data", tmp_path / "save"), RATE, progress=False)
    fake.write(tmp_path / "data" / "direct" / "utt00.wav", fake.noise(3000, 5))
    fake.write(tmp_path / "data" / "reverberant" / "utt00.wav", fake.noise(3000, 5))
    with caplog.at_level(logging.INFO, logger="dereverb.data"):
        prepare(fake.folder_cfg(tmp_path / "data", tmp_path / "save"), RATE, progress=False)
    assert "(changed: the source files); preparing afresh" in caplog.text
    assert len(list((tmp_path / "save").iterdir())) == 2


def test_a_new_format_prepares_afresh(tmp_path, fake, monkeypatch):
    """Folders prepared under an older manifest format (old column names) are never reused."""
    fake.pairs(tmp_path / "data")
    cfg = fake.folder_cfg(tmp_path / "data", tmp_path / "save")
    current = prepare(cfg, RATE, progress=False)
    assert manifests_module.FORMAT_VERSION == 2
    monkeypatch.setattr(manifests_module, "FORMAT_VERSION", 1)
    older = prepare(cfg, RATE, progress=False)
    assert older["train"].parent != current["train"].parent


def test_failed_preparation_leaves_the_previous_one(tmp_path, fake):
    fake.pairs(tmp_path / "data")
    good = prepare(fake.folder_cfg(tmp_path / "data", tmp_path / "save"), RATE, progress=False)
    (tmp_path / "data" / "direct" / "utt05.wav").write_bytes(b"")
    with pytest.raises(DataError, match=r"empty file"):
        prepare(fake.folder_cfg(tmp_path / "data", tmp_path / "save"), RATE, progress=False)
    assert [p.name for p in (tmp_path / "save").iterdir()] == [good["train"].parent.name]


def test_an_incomplete_folder_of_that_name_is_refused(tmp_path, fake):
    fake.pairs(tmp_path / "data")
    cfg = fake.folder_cfg(tmp_path / "data", tmp_path / "save")
    folder = locate(data_settings(cfg, RATE), RATE).folder
    folder.mkdir(parents=True)
    (folder / "train.csv").write_text("ID\n")
    with pytest.raises(DataError, match=r"exists but is not a complete preparation \(no prepared.json\); remove it$"):
        prepare(cfg, RATE, progress=False)
    assert (folder / "train.csv").read_text() == "ID\n"


def test_a_preparation_finished_first_by_another_process_is_kept(tmp_path, fake, monkeypatch):
    fake.pairs(tmp_path / "data")
    cfg = fake.folder_cfg(tmp_path / "data", tmp_path / "other")
    theirs = prepare(cfg, RATE, progress=False)["train"].parent
    stamp = fake.mtimes(theirs)
    original = Folder.prepare

    def slow(self, folder, progress):  # the other process publishes while this one prepares
        stats = original(self, folder, progress)
        shutil.copytree(theirs, tmp_path / "save" / theirs.name)
        return stats

    monkeypatch.setattr(Folder, "prepare", slow)
    manifests = prepare({**cfg, "save_folder": str(tmp_path / "save")}, RATE, progress=False)
    assert [p.name for p in (tmp_path / "save").iterdir()] == [theirs.name]
    assert fake.mtimes(manifests["train"].parent) == stamp  # theirs, not replaced


def test_an_unwritable_save_folder_names_the_key(tmp_path, fake):
    fake.pairs(tmp_path / "data")
    (tmp_path / "file").write_text("")
    with pytest.raises(DataError, match=r"^data.save_folder=.*file/sub: cannot create it"):
        prepare(fake.folder_cfg(tmp_path / "data", tmp_path / "file" / "sub"), RATE, progress=False)
