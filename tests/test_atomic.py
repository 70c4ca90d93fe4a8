"""Atomic writers: a finished result under its name or nothing, never a silent replacement."""

import os

import pytest

from dereverb.atomic import atomic_file, atomic_folder, write_text
from dereverb.errors import DataError, OutputExistsError


def _write_file(path, text, then=None, **kwargs):
    """Write ``text`` through atomic_file, calling ``then()`` before the block ends."""
    with atomic_file(path, **kwargs) as tmp:
        with open(tmp, "w") as f:
            f.write(text)
        if then:
            then()


def _write_folder(path, then=None, **kwargs):
    with atomic_folder(path, **kwargs) as tmp:
        (tmp / "a.txt").write_text("new")
        if then:
            then()


def _interrupt():
    raise RuntimeError("interrupted")


def test_atomic_file_leaves_nothing_when_the_block_fails(tmp_path):
    with pytest.raises(RuntimeError):
        _write_file(tmp_path / "a.txt", "half", then=_interrupt)
    assert os.listdir(tmp_path) == []


def test_atomic_file_never_replaces_without_overwrite_even_a_name_taken_meanwhile(tmp_path):
    out = tmp_path / "a.txt"
    with pytest.raises(OutputExistsError):  # another process wins the name while we write
        _write_file(out, "mine", then=lambda: out.write_text("theirs"))
    assert out.read_text() == "theirs"
    assert os.listdir(tmp_path) == ["a.txt"]
    _write_file(out, "mine", overwrite=True)
    assert out.read_text() == "mine"


def test_atomic_file_in_a_missing_folder_is_one_line(tmp_path):
    with pytest.raises(DataError, match="does not exist"), atomic_file(tmp_path / "no" / "a.txt"):
        pass


def test_write_text_replaces_by_default_and_refuses_when_asked(tmp_path):
    write_text(tmp_path / "a.json", "1")
    write_text(tmp_path / "a.json", "2")
    assert (tmp_path / "a.json").read_text() == "2"
    with pytest.raises(OutputExistsError):
        write_text(tmp_path / "a.json", "3", overwrite=False)
    assert (tmp_path / "a.json").read_text() == "2"


def test_atomic_folder_publishes_whole_or_not_at_all(tmp_path):
    out = tmp_path / "sub" / "run"
    with pytest.raises(RuntimeError):
        _write_folder(out, then=_interrupt)
    assert not out.exists()
    assert os.listdir(tmp_path / "sub") == []
    _write_folder(out)
    assert (out / "a.txt").read_text() == "new"
    assert os.listdir(tmp_path / "sub") == ["run"]


def test_atomic_folder_asks_before_touching_an_existing_folder(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "theirs.txt").write_text("keep")
    with pytest.raises(FileExistsError):
        _write_folder(out)
    _write_folder(out, on_exists=lambda folder: False)  # keep what another process made
    assert os.listdir(out) == ["theirs.txt"]
    asked = []
    _write_folder(out, on_exists=lambda folder: asked.append(folder) or True)
    assert asked == [out]
    assert os.listdir(out) == ["a.txt"]
    assert os.listdir(tmp_path) == ["run"]  # no temporary or set-aside folder left behind


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o755), (0o077, 0o700)])
def test_atomic_folder_follows_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        with atomic_folder(tmp_path / "run"):
            pass
    finally:
        os.umask(old)
    assert (tmp_path / "run").stat().st_mode & 0o777 == mode
