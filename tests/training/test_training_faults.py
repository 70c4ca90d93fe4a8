"""A failed write of a training in one line: a full disk, a quota or a file size limit names the file and says
the earlier checkpoints are intact; any other failure is left as it is."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from dereverb.errors import TrainingError
from dereverb.training.faults import RESUME_HINT, checkpoint_write_failure, write_error


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT, errno.EFBIG])
def test_a_full_disk_is_one_line_naming_the_file(code):
    err = write_error(OSError(code, "No room", "/runs/x/1/save/CKPT+a/model.ckpt"), Path("/runs/x/1"))
    assert isinstance(err, TrainingError)
    assert str(err) == (
        "/runs/x/1/save/CKPT+a/model.ckpt: the write failed: the disk is full or a file size limit was reached "
        f"(No room); {RESUME_HINT}"
    )


def test_a_full_disk_without_a_file_name_names_the_run_folder():
    err = write_error(OSError(errno.ENOSPC, "No space left on device"), Path("/runs/x/1"))
    assert str(err).startswith("/runs/x/1: the write failed: ")


@pytest.mark.parametrize("err", [PermissionError(errno.EACCES, "Permission denied", "x"), OSError(errno.EIO, "I/O")])
def test_other_write_failures_are_left_alone(err):
    assert write_error(err, Path("x")) is None


def test_a_failed_checkpoint_save_reads_as_a_few_words():
    assert checkpoint_write_failure(OSError(errno.EDQUOT, "Disk quota exceeded")) == (
        "the disk is full or a file size limit was reached: Disk quota exceeded"
    )
    torch_message = "[enforce fail at inline_container.cc:778] . PytorchStreamWriter failed writing file data/0\nmore"
    assert checkpoint_write_failure(RuntimeError(torch_message)) == (
        "the write failed, is the disk full? (PytorchStreamWriter failed writing file data/0)"
    )
    assert checkpoint_write_failure(RuntimeError()) == "the write failed, is the disk full? (RuntimeError)"
