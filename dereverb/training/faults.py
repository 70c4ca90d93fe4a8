"""A failed write of a training (a full disk, a quota, a file size limit) in one line that says what to do.

The earlier checkpoints of a run survive such a failure (every checkpoint is written whole or not
at all), so each message ends by saying so and how to go on.
"""

from __future__ import annotations

import errno
import re
from pathlib import Path

from dereverb.errors import TrainingError

__all__ = ["DISK_FULL", "RESUME_HINT", "checkpoint_write_failure", "write_error"]

DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
"""The ``errno`` values of a write that failed for want of space (a full disk, a quota, a file size limit)."""

RESUME_HINT = "the earlier checkpoints are intact: free some space and run the same command to resume"


def write_error(err: OSError, out: Path) -> TrainingError | None:
    """A failed write of the run (a full disk) as one line, or None for another ``OSError``.

    Example:
        >>> err = OSError(errno.ENOSPC, "No space left on device", "results/x/1/save")
        >>> print(str(write_error(err, Path("results/x/1"))).replace("; ", ";\\n"))
        results/x/1/save: the write failed: the disk is full or a file size limit was reached (No space left on device);
        the earlier checkpoints are intact: free some space and run the same command to resume
        >>> write_error(PermissionError(errno.EACCES, "Permission denied"), Path("x")) is None
        True
    """
    if err.errno not in DISK_FULL:
        return None
    return TrainingError(
        f"{err.filename or out}: the write failed: the disk is full or a file size limit was reached "
        f"({err.strerror}); {RESUME_HINT}"
    )


def checkpoint_write_failure(err: Exception) -> str:
    """A failed write of a checkpoint in a few words (``torch.save`` reports a full disk in many ways).

    Example:
        >>> checkpoint_write_failure(OSError(errno.ENOSPC, "No space left on device"))
        'the disk is full or a file size limit was reached: No space left on device'
        >>> checkpoint_write_failure(RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 64"))
        'the write failed, is the disk full? (unexpected pos 64)'
    """
    if isinstance(err, OSError) and err.errno in DISK_FULL:
        return f"the disk is full or a file size limit was reached: {err.strerror}"
    text = (str(err).strip().splitlines() or [type(err).__name__])[0]
    text = re.sub(r"^\[enforce fail at [^\]]*\]\s*\.?\s*", "", text)  # torch's C++ location
    return f"the write failed, is the disk full? ({text})"
