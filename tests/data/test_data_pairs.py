"""Paired files: names matched across role folders, every pair checked, bad pairs an error or skipped."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from dereverb.data import prepare
from dereverb.data.manifests import BadFiles
from dereverb.data.pairs import check_pair, match
from dereverb.errors import DataError

RATE = 8000


def test_match_keeps_the_common_names(tmp_path, fake):
    fake.pairs(tmp_path, n=3)
    fake.write(tmp_path / "reverberant" / "extra.wav", fake.noise(100, 0))
    folders = {"reverberant": tmp_path / "reverberant", "direct": tmp_path / "direct"}
    with pytest.raises(DataError, match=r"^pairs: 1 files without a partner \(first: extra.wav\)"):
        match(folders, ["wav"], BadFiles("error"), "pairs")
    bad = BadFiles("skip")
    assert match(folders, ["wav"], bad, "pairs") == ["utt00.wav", "utt01.wav", "utt02.wav"]
    assert bad.first == [f"{tmp_path / 'reverberant' / 'extra.wav'}: no file of that name in direct"]


def test_check_pair_returns_the_duration(tmp_path, fake):
    fake.pairs(tmp_path, n=1)
    paths = {"reverberant": tmp_path / "reverberant" / "utt00.wav", "direct": tmp_path / "direct" / "utt00.wav"}
    assert check_pair(paths, RATE, BadFiles("error"), "utt00.wav") == pytest.approx(0.3)
    bad = BadFiles("skip")
    assert check_pair(paths, 16000, bad, "utt00.wav") is None
    assert bad.names == ["utt00.wav"]


def test_unmatched_pairs_error_lists_names(tmp_path, fake):
    fake.pairs(tmp_path / "data")
    fake.write(tmp_path / "data" / "reverberant" / "orphan_a.wav", fake.noise(2400, 1))
    fake.write(tmp_path / "data" / "direct" / "orphan_b.wav", fake.noise(2400, 2))
    with pytest.raises(DataError, match=r"2 files without a partner \(first: orphan_a.wav, orphan_b.wav\)"):
        prepare(fake.folder_cfg(tmp_path / "data", tmp_path / "save"), RATE, progress=False)


def test_unmatched_pairs_skipped_and_counted(tmp_path, fake, caplog):
    fake.pairs(tmp_path / "data")
    fake.write(tmp_path / "data" / "reverberant" / "orphan_a.wav", fake.noise(2400, 1))
    cfg = fake.folder_cfg(tmp_path / "data", tmp_path / "save", on_bad_file="skip")
    with caplog.at_level(logging.WARNING, logger="dereverb.data"):
        manifests = prepare(cfg, RATE, progress=False)
    meta = json.loads((manifests["train"].parent / "prepared.json").read_text())
    assert meta["skipped"]["count"] == 1
    assert "orphan_a.wav" in meta["skipped"]["first"][0]
    assert sum(meta["counts"].values()) == 10
    assert "skipped 1 bad file pairs" in caplog.text
    assert "orphan_a.wav" in caplog.text


BAD_FILES = {
    "empty": (lambda fake, p: p.write_bytes(b""), "empty file"),
    "text": (lambda fake, p: p.write_text("no audio here " * 20), "not a readable audio file"),
    "nan": (lambda fake, p: fake.write(p, np.full(2400, np.nan, np.float32)), "NaN or Inf"),
    "stereo": (lambda fake, p: fake.write(p, np.zeros((2400, 2), np.float32)), "2 channels"),
    "length": (
        lambda fake, p: fake.write(p, fake.noise(1000, 0)),
        r"2640 samples, but .*reverberant/utt03.wav has 1000 ",
    ),
    "rate": (
        lambda fake, p: fake.write(p, fake.noise(2400 * 2, 0), 16000),
        r"sample rate 8000 Hz, but .*reverberant/utt03.wav has 16000 Hz",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_file_error_names_it(tmp_path, fake, case):
    make, match_text = BAD_FILES[case]
    fake.pairs(tmp_path / "data")
    bad = tmp_path / "data" / "reverberant" / "utt03.wav"
    bad.unlink()
    make(fake, bad)
    with pytest.raises(DataError, match=match_text) as err:
        prepare(fake.folder_cfg(tmp_path / "data", tmp_path / "save"), RATE, progress=False)
    assert "utt03.wav" in str(err.value)
    assert "data.on_bad_file=skip" in str(err.value)
    assert not any((tmp_path / "save").iterdir())  # nothing half-prepared left behind


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_file_skipped_and_counted(tmp_path, fake, case):
    make, _ = BAD_FILES[case]
    fake.pairs(tmp_path / "data")
    bad = tmp_path / "data" / "reverberant" / "utt03.wav"
    bad.unlink()
    make(fake, bad)
    cfg = fake.folder_cfg(tmp_path / "data", tmp_path / "save", on_bad_file="skip")
    manifests = prepare(cfg, RATE, progress=False)
    meta = json.loads((manifests["train"].parent / "prepared.json").read_text())
    assert meta["skipped"]["count"] == 1
    all_ids = [r["ID"] for path in manifests.values() for r in fake.rows(path)]
    assert "utt03" not in all_ids
    assert len(all_ids) == 9


def test_source_below_data_rate_is_bad(tmp_path, fake):
    fake.pairs(tmp_path / "data")  # 8 kHz files
    with pytest.raises(DataError, match=r"recorded at 8000 Hz, below the data rate 16000 Hz"):
        prepare(fake.folder_cfg(tmp_path / "data", tmp_path / "save"), 16000, progress=False)


def test_a_split_left_empty_is_an_error(tmp_path, fake):
    fake.pairs(tmp_path / "data", n=3)
    for name in ("utt00.wav", "utt01.wav", "utt02.wav"):
        (tmp_path / "data" / "direct" / name).write_bytes(b"")
    cfg = fake.folder_cfg(tmp_path / "data", tmp_path / "save", on_bad_file="skip")
    with pytest.raises(DataError, match=r"^no usable file pairs left for the train split$"):
        prepare({**cfg, "valid_fraction": 0.3, "test_fraction": 0.3}, RATE, progress=False)
