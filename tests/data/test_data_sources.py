"""Source files: listings for the content hash, audio names, splits by subfolder or by seed."""

from __future__ import annotations

from pathlib import Path

import pytest

from dereverb.data.sources import audio_names, listing, progress_bar, require_dir, split_files
from dereverb.errors import DataError

FRACTIONS = {"valid_fraction": 0.2, "test_fraction": 0.2, "split_seed": 0}


def _touch(root: Path, *names: str) -> None:
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"x" * len(name))


def test_listing_is_sorted_relative_and_sized(tmp_path):
    _touch(tmp_path, "b/2.wav", "a.FLAC", "b/1.wav", "notes.txt")
    assert listing(tmp_path, ["wav", "flac"]) == [["a.FLAC", 6], ["b/1.wav", 7], ["b/2.wav", 7]]
    assert len(listing(tmp_path)) == 4


def test_audio_names_are_not_recursive(tmp_path):
    _touch(tmp_path, "a.wav", "sub/b.wav", ".hidden.wav", "c.flac")
    assert audio_names(tmp_path, ["wav"]) == {"a.wav": tmp_path / "a.wav"}


def test_require_dir(tmp_path):
    assert require_dir(tmp_path, "root") == tmp_path
    with pytest.raises(DataError, match=r"^data.root=.*nowhere: no such folder$"):
        require_dir(tmp_path / "nowhere", "root")


def test_split_files_by_subfolders(tmp_path):
    _touch(tmp_path, "train/s1/a.wav", "train/b.wav", "valid/c.wav", "test/d.wav", "other/e.wav")
    split = split_files(tmp_path, ["wav"], FRACTIONS, "files")
    assert {k: [p.relative_to(tmp_path).as_posix() for p in v] for k, v in split.items()} == {
        "train": ["train/b.wav", "train/s1/a.wav"],
        "valid": ["valid/c.wav"],
        "test": ["test/d.wav"],
    }


def test_split_files_by_seed(tmp_path):
    _touch(tmp_path, *(f"s{i % 2}/u{i}.wav" for i in range(10)))
    split = split_files(tmp_path, ["wav"], FRACTIONS, "files")
    assert [len(split[k]) for k in ("train", "valid", "test")] == [6, 2, 2]
    assert sorted(p.name for v in split.values() for p in v) == sorted(f"u{i}.wav" for i in range(10))


def test_split_files_errors(tmp_path):
    with pytest.raises(DataError, match=r": no audio files \(wav\)$"):
        split_files(tmp_path, ["wav"], FRACTIONS, "files")
    _touch(tmp_path, "train/a.wav", "valid/b.wav")
    with pytest.raises(DataError, match=r"has train/ but no test/ subfolder$"):
        split_files(tmp_path, ["wav"], FRACTIONS, "files")
    (tmp_path / "test").mkdir()
    with pytest.raises(DataError, match=r"test: no audio files \(wav\)$"):
        split_files(tmp_path, ["wav"], FRACTIONS, "files")


def test_progress_bar_yields_the_items():
    assert list(progress_bar([1, 2, 3], False, "x")) == [1, 2, 3]
