"""dereverb.evaluation.testset: paired folders and manifests, the targets chosen, and one-line refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from dereverb.data.manifests import write_manifest
from dereverb.errors import DataError
from dereverb.evaluation import TARGETS, TestSet, Utterance, load_test_set
from dereverb.evaluation.testset import check_target, is_config


def _folder(root: Path, roles=("reverberant", "direct", "early"), names=("b.wav", "a.flac")) -> Path:
    for role in roles:
        (root / role).mkdir(parents=True)
        for name in names:
            (root / role / name).write_bytes(b"")  # only listed here: headers are read by checks.check_files
    return root


def test_folder_targets(tmp_path):
    root = _folder(tmp_path / "set")
    auto = load_test_set(root)
    assert auto.targets == ("direct", "early")
    assert auto.target == "direct"
    assert auto.source == f"paired folder {root}"
    assert [u.id for u in auto.utterances] == ["a", "b"]
    utt = auto.utterances[0]
    assert utt == Utterance("a", root / "reverberant" / "a.flac",
                            {"direct": root / "direct" / "a.flac", "early": root / "early" / "a.flac"})  # fmt: skip
    assert utt.target == root / "direct" / "a.flac"
    assert utt.files() == [root / "reverberant" / "a.flac", root / "direct" / "a.flac", root / "early" / "a.flac"]
    assert load_test_set(root, target="early").targets == ("early",)
    assert load_test_set(root, target="direct").targets == ("direct",)
    assert load_test_set(root, target="both").targets == ("direct", "early")
    only_direct = _folder(tmp_path / "direct_only", roles=("reverberant", "direct"))
    assert load_test_set(only_direct).targets == ("direct",)
    with pytest.raises(DataError, match=r"no early/ folder \(--target both needs one\)"):
        load_test_set(only_direct, target="both")


def test_manifest_reads_the_new_columns(tmp_path):
    rows = [{"ID": "u1", "duration_s": 1.0, "reverberant": "$prep_root/r/u1.wav", "direct": "$prep_root/d/u1.wav",
             "early": "$prep_root/e/u1.wav", "t60_s": 0.4, "drr_db": 3.0}]  # fmt: skip
    write_manifest(tmp_path / "test.csv", rows, ["ID", "duration_s", "reverberant", "direct", "early", "t60_s",
                                                 "drr_db"])  # fmt: skip
    test = load_test_set(tmp_path / "test.csv", target="early")
    assert test.targets == ("early",)
    (utt,) = test.utterances
    assert utt.reverberant == tmp_path.resolve() / "r" / "u1.wav"
    assert utt.targets == {"early": tmp_path.resolve() / "e" / "u1.wav"}
    assert utt.meta == {"t60_s": 0.4, "drr_db": 3.0}  # numeric columns but the duration
    assert load_test_set(tmp_path / "test.csv").targets == ("direct", "early")


@pytest.mark.parametrize(
    ("columns", "expected"),
    [
        (["ID", "reverb", "clean", "early"], "no 'reverberant' column (clean is now direct and reverb is now "
                                              "reverberant: rename them, or prepare the data again)"),
        (["ID", "reverb", "direct"], "no 'reverberant' column (reverb is now reverberant: rename them, or prepare "
                                     "the data again)"),
        (["ID", "duration_s", "clean"], "no 'reverberant' column (a training manifest holds clean speech only: use "
                                        "the test manifest)"),
        (["ID", "reverberant", "early"], "no 'direct' column"),
    ],
)  # fmt: skip
def test_manifest_without_the_columns_is_one_line(tmp_path, columns, expected):
    write_manifest(tmp_path / "m.csv", [{c: "1" if c != "ID" else "u1" for c in columns}], columns)
    with pytest.raises(DataError) as err:
        load_test_set(tmp_path / "m.csv", target="direct")
    assert str(err.value) == f"{tmp_path / 'm.csv'}: {expected}"


def test_folder_refusals(tmp_path):
    old = _folder(tmp_path / "old", roles=("reverb", "clean"))
    with pytest.raises(DataError, match=r"no reverberant/ folder \(clean is now direct and reverb is now reverberant"):
        load_test_set(old)
    unpaired = _folder(tmp_path / "unpaired", roles=("reverberant",))
    _folder(unpaired, roles=("direct",), names=("a.flac", "c.wav"))
    with pytest.raises(DataError, match=r"2 files without a partner .* \(first: reverberant/b.wav, direct/c.wav\)"):
        load_test_set(unpaired)
    empty = _folder(tmp_path / "empty", roles=("reverberant", "direct"), names=())
    with pytest.raises(DataError, match=r"reverberant: no audio files \(wav, flac\)"):
        load_test_set(empty)
    with pytest.raises(DataError, match="no such folder or manifest"):
        load_test_set(tmp_path / "nope")
    (tmp_path / "x.txt").write_text("")
    with pytest.raises(DataError, match=r"not a folder or a \.csv manifest"):
        load_test_set(tmp_path / "x.txt")
    with pytest.raises(DataError, match="--data: give a folder"):
        load_test_set([])
    with pytest.raises(DataError, match="'extra' is not a config override"):
        load_test_set(["data=demo", "extra"])


def test_targets_and_config_specs():
    assert TARGETS == ("auto", "both", "direct", "early")
    for target in TARGETS:
        check_target(target)
    with pytest.raises(DataError) as err:
        check_target("clean")
    assert str(err.value) == "--target clean: now named direct; expected one of auto, both, direct, early"
    with pytest.raises(DataError, match=r"^--target x: expected one of"):
        load_test_set("anything", target="x")
    assert is_config(["data=demo", "sample_rate=16000"])
    assert not is_config("some/folder")
    assert TestSet([], "s").targets == ("direct",)
