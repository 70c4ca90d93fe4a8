"""One training per run folder: an advisory lock on ``<folder>/.lock``, taken before the first write there.

A second training of the same folder is refused at once, with one line naming the process that
holds it; a lock left by a killed training does not block (the kernel releases it).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import time
from pathlib import Path

from dereverb.errors import TrainingError

__all__ = ["RunLock"]

logger = logging.getLogger(__name__)


class RunLock:
    """An advisory lock (``fcntl.flock``) on a run folder's ``.lock`` file: one training per folder.

    The lock file holds the process id, host and start time of the training that holds it, so that a
    refused training can name it. The kernel releases the lock when its process ends, however it
    ends, so a lock file left by a killed training does not block: the next training takes it over.
    The file itself stays (removing it would let two trainings lock two different files).

    Args:
        folder: the run folder; created if missing.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     lock = RunLock(Path(tmp) / "run")
        ...     lock.acquire()
        ...     lock.release()
    """

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.path = self.folder / ".lock"
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock, or refuse at once.

        Raises:
            TrainingError: another process holds it; one line naming that process.
        """
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = self._holder(fd)
            os.close(fd)
            raise TrainingError(
                f"{self.folder} is in use by another training ({holder}); wait for it or choose another name or seed"
            ) from None
        except OSError as err:  # a file system without locks: train, as before locks existed
            os.close(fd)
            logger.warning("%s cannot be locked (%s): make sure no other training uses this folder", self.path, err)
            return
        except BaseException:
            os.close(fd)
            raise
        started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
        record = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": started}) + "\n"
        os.ftruncate(fd, 0)
        os.pwrite(fd, record.encode(), 0)
        self._fd = fd

    @staticmethod
    def _holder(fd: int) -> str:
        """The lock holder as written in the file (the holder may be writing it: a short wait)."""
        for _ in range(20):
            try:
                info = json.loads(os.pread(fd, 4096, 0).decode())
                return f"pid {info['pid']} on host {info['host']}, started {info['started']}"
            except (ValueError, KeyError, TypeError, UnicodeDecodeError):
                time.sleep(0.05)
        return "its process id is not recorded yet"

    def release(self) -> None:
        """Release the lock (also released by the kernel when the process ends)."""
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
