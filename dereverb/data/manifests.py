"""CSV manifests with root placeholders, prepared folders keyed by a settings hash, bad-file policy.

A manifest is a SpeechBrain CSV (an ``ID`` column, one row per utterance) whose paths start with
a placeholder (``$data_root``, ``$prep_root``, ``$pack_root``) replaced when it is loaded, so a
moved data folder still works. Each preparation lives in its own folder
``<save_folder>/<rate>k-<hash>``, where the hash covers every setting that changes its content
(never the roots themselves): the same settings find the same folder, changed settings get a
fresh one, and nothing prepared before is touched. A folder appears only once complete
(built under a temporary name, then renamed).
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from dereverb.errors import DataError

__all__ = [
    "FORMAT_VERSION",
    "NUMERIC_COLUMNS",
    "BadFiles",
    "find_prepared",
    "prepared_folder",
    "read_manifest",
    "settings_hash",
    "split_names",
    "write_manifest",
]

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
"""Bumped when the manifest layout changes, so older preparations are not reused."""

NUMERIC_COLUMNS = ("duration_s", "t60_s", "t60_measured_s", "drr_db", "distance_m", "source_rate")
"""Columns read back as floats (empty cells stay ``None``)."""

SETTINGS_FILE = "prepared.json"


def settings_hash(settings: dict) -> str:
    """A short, stable digest of JSON-serialisable settings.

    Example:
        >>> settings_hash({"a": 1, "b": [2, 3]}) == settings_hash({"b": [2, 3], "a": 1})
        True
        >>> len(settings_hash({}))
        12
    """
    text = json.dumps({"format": FORMAT_VERSION, **settings}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def prepared_folder(save_folder: Path, sample_rate: int, digest: str) -> Path:
    """The folder of one preparation: ``<save_folder>/<rate>k-<hash>``."""
    return Path(save_folder) / f"{sample_rate // 1000}k-{digest}"


def find_prepared(folder: Path) -> dict | None:
    """The stored settings of a complete preparation in ``folder``, or None."""
    path = Path(folder) / SETTINGS_FILE
    if not path.is_file():
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def changed_settings(old: dict, new: dict, prefix: str = "") -> list[str]:
    """Dotted names of the settings that differ between two nested dicts.

    Example:
        >>> changed_settings({"a": 1, "r": {"t": 1, "d": 2}}, {"a": 1, "r": {"t": 2, "d": 2}, "n": 0})
        ['n', 'r.t']
    """
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += changed_settings(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(prefix + key)
    return out


def latest_other_preparation(save_folder: Path, kind: str, exclude: Path) -> dict | None:
    """The most recent complete preparation of ``kind`` in ``save_folder`` other than ``exclude``."""
    best = None
    if not Path(save_folder).is_dir():
        return None
    for sub in Path(save_folder).iterdir():
        if sub == exclude or sub.name.startswith("."):
            continue
        meta = find_prepared(sub)
        if meta and meta.get("kind") == kind:
            mtime = (sub / SETTINGS_FILE).stat().st_mtime
            if best is None or mtime > best[0]:
                best = (mtime, meta)
    return best and best[1]


def commit_folder(tmp: Path, final: Path) -> None:
    """Atomically publish a finished preparation (``tmp`` renamed to ``final``)."""
    try:
        os.replace(tmp, final)
    except OSError:
        if find_prepared(final) is None:
            raise
        shutil.rmtree(tmp, ignore_errors=True)  # another process finished the same one first


def write_manifest(path: Path, rows: Sequence[dict], columns: Sequence[str]) -> None:
    """Write a SpeechBrain CSV manifest atomically; ``columns`` must start with ``ID``.

    Floats are written with 6 significant digits; ``None`` as an empty cell.
    """
    if columns[0] != "ID":
        raise ValueError("the first manifest column must be 'ID'")
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for row in rows:
            writer.writerow(["" if row.get(c) is None else _cell(row[c]) for c in columns])
    os.replace(tmp, path)


def _cell(value) -> str:
    if isinstance(value, float | np.floating):
        return f"{float(value):.6g}"
    return str(value)


def read_manifest(path: Path, replacements: dict[str, str]) -> dict[str, dict]:
    """Load a manifest written by :func:`write_manifest`, replacing ``$placeholders``.

    Args:
        path: the CSV file.
        replacements: placeholder name -> folder, e.g. ``{"data_root": "/data/whamr"}``.

    Returns:
        dict: ``{ID: {column: value}}``, the numeric columns as floats.
    """
    from speechbrain.dataio.dataio import load_data_csv

    try:
        data = load_data_csv(str(path), replacements={k: str(v) for k, v in replacements.items()})
    except KeyError as err:
        raise DataError(f"{path}: a path needs a root that was not given ({err.args[0]})") from None
    for row in data.values():
        for key in NUMERIC_COLUMNS:
            if key in row:
                row[key] = float(row[key]) if row[key] != "" else None
    return data


def split_names(names: Iterable[str], valid: float, test: float, seed: int, what: str) -> dict[str, list[str]]:
    """Split names into train/valid/test by a fixed seed and fractions.

    The names are sorted, shuffled by ``seed`` and cut by the fractions; valid and test get at
    least one name each. The same names, fractions and seed always give the same split;
    adding or removing a file changes it (and, through the settings hash, the preparation).

    Args:
        names: unique names.
        valid: fraction for the validation set, in [0, 1).
        test: fraction for the test set, in [0, 1); ``valid + test < 1``.
        seed: the shuffling seed.
        what: what is split, for the error message.

    Returns:
        dict: ``{"train": [...], "valid": [...], "test": [...]}``, each sorted.

    Example:
        >>> s = split_names([f"u{i}" for i in range(10)], 0.2, 0.1, 0, "utterances")
        >>> [len(s[k]) for k in ("train", "valid", "test")]
        [7, 2, 1]
    """
    names = sorted(names)
    if not (0 <= valid < 1 and 0 <= test < 1 and valid + test < 1):
        raise DataError(f"data.valid_fraction={valid}, data.test_fraction={test}: each in [0, 1), sum < 1")
    n = len(names)
    n_valid = max(1, round(n * valid)) if valid > 0 else 0
    n_test = max(1, round(n * test)) if test > 0 else 0
    if n - n_valid - n_test < 1:
        raise DataError(f"{n} {what} are too few to split into train/valid/test")
    order = np.random.default_rng(seed).permutation(n)
    picked = [names[i] for i in order]
    return {
        "valid": sorted(picked[:n_valid]),
        "test": sorted(picked[n_valid : n_valid + n_test]),
        "train": sorted(picked[n_valid + n_test :]),
    }


class BadFiles:
    """The bad-input policy: raise at once (``"error"``) or skip, count and report (``"skip"``).

    Example:
        >>> bad = BadFiles("skip")
        >>> bad.found("a.wav", "a.wav: contains no samples")
        >>> bad.count, bad.first
        (1, ['a.wav: contains no samples'])
    """

    def __init__(self, policy: str):
        if policy not in ("error", "skip"):
            raise DataError(f"data.on_bad_file={policy!r}: expected 'error' or 'skip'")
        self.policy = policy
        self.names: list[str] = []
        self.reasons: list[str] = []

    @property
    def count(self) -> int:
        return len(self.names)

    @property
    def first(self) -> list[str]:
        return self.reasons[:5]

    def found(self, name: str, reason: str) -> None:
        """Record a bad file: raises ``DataError(reason)`` under ``"error"``."""
        if self.policy == "error":
            raise DataError(reason + " (set data.on_bad_file=skip to leave such files out)")
        self.names.append(name)
        self.reasons.append(reason)

    def report(self, what: str) -> None:
        """Log how many files were skipped, with the first few reasons."""
        if self.names:
            log.warning("skipped %d bad %s; first: %s", self.count, what, "; ".join(self.first))

    def as_dict(self) -> dict:
        return {"count": self.count, "first": self.first}
