"""Manifests: the settings hash, prepared folders, CSVs with placeholders, splits by seed, the bad-file policy."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from dereverb.data import manifests as m
from dereverb.data.manifests import (
    BadFiles,
    changed_settings,
    find_prepared,
    latest_other_preparation,
    manifest_paths,
    prepared_folder,
    read_manifest,
    settings_hash,
    split_names,
    split_stats,
    write_manifest,
)
from dereverb.errors import DataError


def test_settings_hash_is_stable_short_and_covers_the_format(monkeypatch):
    a = settings_hash({"kind": "folder", "n": [1, 2], "r": {"x": 1.5}})
    assert a == settings_hash({"r": {"x": 1.5}, "n": [1, 2], "kind": "folder"})
    assert len(a) == 12
    assert int(a, 16) >= 0
    assert a != settings_hash({"kind": "folder", "n": [1, 2], "r": {"x": 1.25}})
    monkeypatch.setattr(m, "FORMAT_VERSION", 1)
    assert settings_hash({"kind": "folder", "n": [1, 2], "r": {"x": 1.5}}) != a


def test_prepared_folder_and_manifest_paths():
    assert prepared_folder(Path("/s"), 16000, "abc") == Path("/s/16k-abc")
    assert manifest_paths(Path("/s/8k-abc")) == {s: Path(f"/s/8k-abc/{s}.csv") for s in ("train", "valid", "test")}


def test_manifest_round_trip_with_placeholders(tmp_path):
    rows = [
        {"ID": "u1", "duration_s": 1.23456789, "reverberant": "$data_root/r/u1.wav", "direct": "$prep_root/d/u1.wav"},
        {"ID": "u2", "duration_s": 2.0, "reverberant": "$data_root/r/u2.wav", "direct": "$prep_root/d/u2.wav"},
    ]
    rows[1]["distance_m"] = None
    columns = ["ID", "duration_s", "reverberant", "direct", "distance_m"]
    write_manifest(tmp_path / "valid.csv", rows, columns)
    assert (tmp_path / "valid.csv").read_text().splitlines()[:2] == [
        "ID,duration_s,reverberant,direct,distance_m",
        "u1,1.23457,$data_root/r/u1.wav,$prep_root/d/u1.wav,",
    ]
    data = read_manifest(tmp_path / "valid.csv", {"data_root": "/data", "prep_root": Path("/prep")})
    assert data["u1"] == {
        "duration_s": 1.23457,
        "reverberant": "/data/r/u1.wav",
        "direct": "/prep/d/u1.wav",
        "distance_m": None,
    }
    with pytest.raises(DataError, match=r"valid.csv: a path needs a root that was not given .*\$prep_root/d/u1.wav"):
        read_manifest(tmp_path / "valid.csv", {"data_root": "/data"})


def test_write_manifest_replaces_atomically_and_needs_an_id_column(tmp_path):
    write_manifest(tmp_path / "a.csv", [{"ID": "x"}], ["ID"])
    write_manifest(tmp_path / "a.csv", [{"ID": "y"}], ["ID"])
    assert (tmp_path / "a.csv").read_text() == "ID\ny\n"
    assert os.listdir(tmp_path) == ["a.csv"]  # no temporary file left
    with pytest.raises(ValueError, match="first manifest column must be 'ID'"):
        write_manifest(tmp_path / "b.csv", [], ["name", "ID"])


def test_find_prepared_and_the_latest_other_preparation(tmp_path):
    assert find_prepared(tmp_path / "none") is None
    assert latest_other_preparation(tmp_path / "none", "folder", tmp_path) is None
    for i, (name, kind) in enumerate(
        [("8k-a", "folder"), ("8k-b", "folder"), ("8k-c", "demo"), (".8k-d.tmp-x", "folder")]
    ):
        (tmp_path / name).mkdir()
        (tmp_path / name / "prepared.json").write_text(json.dumps({"kind": kind, "hash": name}))
        os.utime(tmp_path / name / "prepared.json", (1000 + i, 1000 + i))
    (tmp_path / "8k-e").mkdir()  # incomplete: no prepared.json
    assert find_prepared(tmp_path / "8k-a") == {"kind": "folder", "hash": "8k-a"}
    assert latest_other_preparation(tmp_path, "folder", tmp_path / "8k-x")["hash"] == "8k-b"
    assert latest_other_preparation(tmp_path, "folder", tmp_path / "8k-b")["hash"] == "8k-a"
    assert latest_other_preparation(tmp_path, "whamr", tmp_path / "8k-b") is None


def test_changed_settings_names_nested_keys():
    assert changed_settings({"a": 1, "r": {"t": 1}}, {"a": 1, "r": {"t": 2}, "n": 0}) == ["n", "r.t"]
    assert changed_settings({"a": [1]}, {"a": [1]}) == []


def test_split_names_is_deterministic_and_disjoint():
    names = [f"u{i:02d}" for i in range(20)]
    split = split_names(reversed(names), 0.1, 0.2, 3, "utterances")
    assert split == split_names(names, 0.1, 0.2, 3, "utterances")  # the order given does not matter
    assert [len(split[k]) for k in ("train", "valid", "test")] == [14, 2, 4]
    assert sorted(split["train"] + split["valid"] + split["test"]) == names
    assert split != split_names(names, 0.1, 0.2, 4, "utterances")
    assert split_names(names[:3], 0.01, 0.01, 0, "utterances")["valid"] != []  # at least one each


@pytest.mark.parametrize(
    ("n", "valid", "test", "match"),
    [
        (2, 0.3, 0.3, "2 file pairs are too few"),
        (10, 0.6, 0.5, "each in \\[0, 1\\), sum < 1"),
        (10, -0.1, 0, "data.valid_fraction=-0.1"),
    ],
)
def test_split_names_errors(n, valid, test, match):
    with pytest.raises(DataError, match=match):
        split_names([str(i) for i in range(n)], valid, test, 0, "file pairs")


def test_bad_files_policy(caplog):
    with pytest.raises(DataError, match=r"^a.wav: empty \(set data.on_bad_file=skip to leave such files out\)$"):
        BadFiles("error").found("a.wav", "a.wav: empty")
    bad = BadFiles("skip")
    for i in range(7):
        bad.found(f"{i}.wav", f"{i}.wav: empty")
    assert bad.count == 7
    assert len(bad.first) == 5
    assert bad.as_dict() == {"count": 7, "first": [f"{i}.wav: empty" for i in range(5)]}
    bad.report("files")
    assert "skipped 7 bad files; first: 0.wav: empty;" in caplog.text
    with pytest.raises(DataError, match=r"data.on_bad_file='ignore'"):
        BadFiles("ignore")


def test_split_stats():
    rows = {"train": [{"duration_s": 3600.0}], "valid": [{"duration_s": 36.0}, {"duration_s": 36.0}]}
    assert split_stats(rows, BadFiles("error")) == {
        "counts": {"train": 1, "valid": 2},
        "hours": {"train": 1.0, "valid": 0.02},
        "skipped": {"count": 0, "first": []},
    }
