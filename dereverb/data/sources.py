"""Finding the source files of a dataset: listings for the content hash, audio names, splits by folder or seed."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from dereverb.data.manifests import SPLITS, split_names
from dereverb.errors import DataError

__all__ = ["audio_names", "listing", "progress_bar", "require_dir", "split_files"]


def listing(folder: Path, extensions: list[str] | None = None) -> list[list]:
    """Relative paths and sizes of the files under ``folder`` (sorted), for the content hash.

    Args:
        folder: searched recursively.
        extensions: lower-case extensions without the dot to keep; None: every file.

    Returns:
        list: ``[[relative posix path, size in bytes], ...]``.

    Example:
        >>> import tempfile
        >>> root = Path(tempfile.mkdtemp())
        >>> _ = (root / "b.wav").write_bytes(b"12"); _ = (root / "a.txt").write_bytes(b"1")
        >>> listing(root), listing(root, ["wav"])
        ([['a.txt', 1], ['b.wav', 2]], [['b.wav', 2]])
    """
    out = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        for name in sorted(filenames):
            if extensions is None or name.rsplit(".", 1)[-1].lower() in extensions:
                path = Path(dirpath) / name
                out.append([path.relative_to(folder).as_posix(), path.stat().st_size])
    return out


def require_dir(path: Path, key: str) -> Path:
    """``path`` if it is a folder.

    Raises:
        DataError: ``data.<key>=<path>: no such folder``.
    """
    if not path.is_dir():
        raise DataError(f"data.{key}={path}: no such folder")
    return path


def progress_bar(items: Iterable, progress: bool, desc: str):
    """``items`` with a tqdm bar when ``progress`` (the bar disappears when done)."""
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, disable=not progress, leave=False)


def audio_names(folder: Path, extensions: list[str]) -> dict[str, Path]:
    """The audio files directly in ``folder`` by name (hidden files left out).

    Example:
        >>> import tempfile
        >>> root = Path(tempfile.mkdtemp())
        >>> for name in ("a.WAV", ".b.wav", "c.txt"):
        ...     _ = (root / name).write_bytes(b"")
        >>> list(audio_names(root, ["wav"]))
        ['a.WAV']
    """
    return {
        p.name: p
        for p in sorted(folder.iterdir())
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower().lstrip(".") in extensions
    }


def split_files(root: Path, extensions: list[str], settings: dict, what: str) -> dict[str, list[Path]]:
    """Split a folder's audio files: by ``train/ valid/ test/`` subfolders, or by the seed.

    Without the subfolders the files (searched recursively) are split by
    :func:`~dereverb.data.manifests.split_names` with ``data.valid_fraction``, ``data.test_fraction``
    and ``data.split_seed``.

    Raises:
        DataError: a missing split subfolder, or no audio files in a split.
    """
    if (root / "train").is_dir():
        out = {}
        for split in SPLITS:
            folder = root / split
            if not folder.is_dir():
                raise DataError(f"{root}: has train/ but no {split}/ subfolder")
            out[split] = [folder / rel for rel, _ in listing(folder, extensions)]
            if not out[split]:
                raise DataError(f"{folder}: no audio files ({', '.join(extensions)})")
        return out
    files = {rel: root / rel for rel, _ in listing(root, extensions)}
    if not files:
        raise DataError(f"{root}: no audio files ({', '.join(extensions)})")
    s = settings
    split = split_names(files, s["valid_fraction"], s["test_fraction"], s["split_seed"], what)
    return {part: [files[rel] for rel in names] for part, names in split.items()}
