"""glibc ``malloc`` settings that keep PyTorch's large CPU tensors from being page-faulted in again.

With glibc's default settings, a freed block of tens of MB (an activation of a TasNet layer) is
often handed back to the system and faulted in page by page on the next allocation; how often
depends on the history of allocation sizes, so it also varies between runs and grows when a data
pipeline allocates beside the model. Raising the mmap threshold to 32 MiB and the trim threshold
keeps such blocks in the heap for reuse, so the recipe's CPU training steps cost what the bare
model's do. ``python scripts/bench_recipe.py`` measures it (with ``--overrides run.tune_malloc=false``
for glibc's defaults); the figures are in docs/performance.md, "The training recipe". The cost: the
process keeps freed memory instead of returning it to the system.

The training recipe calls :func:`tune_glibc_malloc` at start (``run.tune_malloc``, default on).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

__all__ = ["MMAP_THRESHOLD", "TRIM_THRESHOLD", "preloaded_allocator", "release_free_memory", "tune_glibc_malloc"]

logger = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1  # mallopt parameters, from glibc's malloc.h
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 2**20  # glibc's documented maximum on 64-bit systems
TRIM_THRESHOLD = 2**31 - 1  # mallopt takes an int


def preloaded_allocator() -> str | None:
    """The allocator preloaded in place of glibc's (``tcmalloc``, ``jemalloc``, ``mimalloc``), or None.

    Example:
        >>> preloaded_allocator() in (None, "tcmalloc", "jemalloc", "mimalloc")
        True
    """
    preload = os.environ.get("LD_PRELOAD", "")
    for name in ("tcmalloc", "jemalloc", "mimalloc"):
        if name in preload:
            return name
    return None


def _glibc():
    """glibc as a ctypes library, or None (another C library, or another allocator preloaded)."""
    if preloaded_allocator() is not None:
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version  # noqa: B018 (present in glibc only)
    except (OSError, AttributeError):
        return None
    return libc


def release_free_memory() -> bool:
    """Return glibc's free heap memory to the system (``malloc_trim(0)``).

    Long-file inference calls it after every segment: segments of slightly different sizes
    (the first, the last, resampled ones) otherwise fragment the heap and raise the peak memory
    of a long file (``scripts/bench_inference.py`` measures the peak on a 1-hour file;
    docs/performance.md, "Inference").
    Does nothing (and returns False) without glibc or with another allocator preloaded.

    Example:
        >>> isinstance(release_free_memory(), bool)
        True
    """
    libc = _glibc()
    if libc is None:
        return False
    libc.malloc_trim.argtypes, libc.malloc_trim.restype = [ctypes.c_size_t], ctypes.c_int
    return bool(libc.malloc_trim(0))


def tune_glibc_malloc() -> bool:
    """Raise glibc's mmap and trim thresholds for this process (see the module docstring).

    Does nothing when another allocator is preloaded (tcmalloc, jemalloc, mimalloc), when the C
    library is not glibc, or when ``DEREVERB_MALLOC=default`` is set in the environment.

    Returns:
        True when both settings were applied.

    Example:
        >>> isinstance(tune_glibc_malloc(), bool)
        True
    """
    if os.environ.get("DEREVERB_MALLOC", "").lower() == "default":
        return False
    other = preloaded_allocator()
    if other is not None:
        logger.debug("%s is preloaded: glibc malloc settings left alone", other)
        return False
    libc = _glibc()
    if libc is None:
        return False
    mallopt = libc.mallopt
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    ok = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    if ok:
        logger.info(
            "glibc malloc: mmap threshold %d MiB, trim threshold %d MiB (set DEREVERB_MALLOC=default to keep "
            "glibc's defaults)",
            MMAP_THRESHOLD >> 20,
            TRIM_THRESHOLD >> 20,
        )
    return ok
