"""CSV manifests with root placeholders, prepared folders keyed by a settings hash, bad-file policy.

A manifest is a SpeechBrain CSV (an ``ID`` column, one row per utterance) whose paths start with
a placeholder (``$data_root``, ``$prep_root``, ``$pack_root``) replaced when it is loaded, so a
moved data folder still works. Each preparation lives in its own folder
``<save_folder>/<rate>k-<hash>``, where the hash covers every setting that changes its content
(never the roots themselves): the same settings find the same folder, changed settings get a
fresh one, and nothing prepared before is touched. A folder appears only once complete
(built through :func:`~dereverb.atomic.atomic_folder`).

The audio columns use one vocabulary (``docs/data.md``, "Vocabulary"): ``reverberant`` (the input),
``direct`` and ``early`` (the targets) in every split of the paired kinds and in valid/test of the
mixing kinds, ``clean`` (the dry source, mixed at load time) in the training split of the mixing kinds.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from dereverb.atomic import write_text
from dereverb.errors import DataError

__all__ = [
    "AUDIO_COLUMNS",
    "FORMAT_VERSION",
    "NUMERIC_COLUMNS",
    "SETTINGS_FILE",
    "SPLITS",
    "BadFiles",
    "changed_settings",
    "find_prepared",
    "latest_other_preparation",
    "manifest_paths",
    "prepared_folder",
    "read_manifest",
    "settings_hash",
    "split_names",
    "split_stats",
    "write_manifest",
]

log = logging.getLogger(__name__)

FORMAT_VERSION = 2
"""Bumped when the manifest layout changes, so older preparations are not reused (2: the columns
``reverberant``, ``direct``, ``early``, were ``reverb``, ``clean``, ``early``)."""

SPLITS = ("train", "valid", "test")
"""The splits of every preparation, one manifest each (``<split>.csv``)."""

AUDIO_COLUMNS = ("reverberant", "direct", "early", "clean")
"""The manifest columns holding audio paths: the input, the two targets, the dry source."""

NUMERIC_COLUMNS = ("duration_s", "t60_s", "t60_measured_s", "drr_db", "distance_m", "source_rate")
"""Columns read back as floats (empty cells stay ``None``)."""

SETTINGS_FILE = "prepared.json"
"""The record of a complete preparation, written last: its settings, hash, roots, counts."""


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


def manifest_paths(folder: Path) -> dict[str, Path]:
    """``{split: <folder>/<split>.csv}`` for every split.

    Example:
        >>> manifest_paths(Path("/p"))["valid"].as_posix()
        '/p/valid.csv'
    """
    return {split: Path(folder) / f"{split}.csv" for split in SPLITS}


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


def write_manifest(path: Path, rows: Sequence[dict], columns: Sequence[str]) -> None:
    """Write a SpeechBrain CSV manifest atomically (:func:`~dereverb.atomic.write_text`, replacing ``path``).

    ``columns`` must start with ``ID``. Floats are written with 6 significant digits; ``None`` as an
    empty cell; a row's keys outside ``columns`` are left out.

    Example:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "test.csv"
        >>> write_manifest(path, [{"ID": "u1", "duration_s": 1 / 3, "speaker": None}], ["ID", "duration_s", "speaker"])
        >>> path.read_text().splitlines()
        ['ID,duration_s,speaker', 'u1,0.333333,']
    """
    if columns[0] != "ID":
        raise ValueError("the first manifest column must be 'ID'")
    text = io.StringIO(newline="")
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow(["" if row.get(c) is None else _cell(row[c]) for c in columns])
    write_text(path, text.getvalue())


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


def split_stats(per_split: dict[str, list[dict]], bad: BadFiles) -> dict:
    """The record of a preparation's rows: utterances and hours per split, and the skipped files.

    Example:
        >>> split_stats({"train": [{"duration_s": 1800.0}, {"duration_s": 1800.0}]}, BadFiles("skip"))
        {'counts': {'train': 2}, 'hours': {'train': 1.0}, 'skipped': {'count': 0, 'first': []}}
    """
    return {
        "counts": {split: len(rows) for split, rows in per_split.items()},
        "hours": {split: round(sum(r["duration_s"] for r in rows) / 3600, 4) for split, rows in per_split.items()},
        "skipped": bad.as_dict(),
    }
