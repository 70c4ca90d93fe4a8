"""The test set of an evaluation: its utterances, from a paired folder, a manifest or a dataset config.

A test item is a reverberant input and one or two targets: ``direct`` (the direct path of the
room response, or the dry speech a real recording was made from) and ``early`` (the direct path
plus the first 50 ms of the room response). :func:`load_test_set` finds them in

* a paired folder ``reverberant/``, ``direct/`` (and ``early/``) whose files are matched by name;
* a prepared manifest CSV with the columns ``reverberant``, ``direct`` (and ``early``);
* a dataset config given as Hydra overrides (``data=demo``): its prepared test split.

Nothing is read here but folder listings and the manifest: the audio headers are checked by
:func:`dereverb.evaluation.checks.check_files`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from dereverb.errors import DataError

__all__ = [
    "AUDIO_EXTENSIONS",
    "INPUT",
    "TARGETS",
    "TestSet",
    "Utterance",
    "check_target",
    "is_config",
    "load_test_set",
]

AUDIO_EXTENSIONS = ("wav", "flac")
INPUT = "reverberant"
"""The folder and manifest column of the reverberant inputs."""
TARGETS = ("auto", "both", "direct", "early")
"""The values of ``target``: one target, both (``direct`` first), or ``auto`` (both where ``early`` exists)."""
_OLD_NAMES = {"reverb": "reverberant", "clean": "direct"}


@dataclass
class Utterance:
    """One test item.

    Attributes:
        id: the utterance name (the file stem, or the manifest's ``ID``).
        reverberant: the input file.
        targets: target name (``direct``, ``early``) -> its file, the primary target first.
        meta: the manifest's numeric columns (``t60_s``, ``drr_db``, ...).
    """

    id: str
    reverberant: Path
    targets: dict[str, Path]
    meta: dict = field(default_factory=dict)

    @property
    def target(self) -> Path:
        """The file of the primary target."""
        return next(iter(self.targets.values()))

    def files(self) -> list[Path]:
        """The input, then every target file."""
        return [self.reverberant, *self.targets.values()]


@dataclass
class TestSet:
    """The utterances to score, the targets they are scored against, and where they came from.

    Attributes:
        utterances: the test items.
        source: a one-line description (folder, manifest or dataset config).
        targets: ``("direct",)``, ``("early",)`` or ``("direct", "early")``: the primary target first.
    """

    __test__ = False  # not a pytest test class

    utterances: list[Utterance]
    source: str
    targets: tuple[str, ...] = ("direct",)

    @property
    def target(self) -> str:
        """The primary target."""
        return self.targets[0]


def load_test_set(spec: str | os.PathLike | Sequence[str], target: str = "auto", sample_rate: int = 8000) -> TestSet:
    """Find the utterances of a test set (paired folder, manifest CSV, or dataset config overrides).

    Args:
        spec: a folder with ``reverberant/`` and ``direct/`` (optional ``early/``), a prepared manifest
            ``*.csv``, or Hydra overrides of ``conf/prepare.yaml`` such as ``["data=demo"]``.
        target: ``direct`` (the direct path), ``early`` (direct path + 50 ms), ``both`` (``direct``
            and ``early``), or ``auto`` (``both`` where the test set has early targets, else ``direct``).
        sample_rate: the rate a dataset config is prepared at unless the overrides set
            ``sample_rate=`` (the model's rate is a good choice).

    Returns:
        The test set, its utterances sorted by name for a folder, in manifest order for a manifest.

    Raises:
        DataError: an unknown target, missing pairs (the first few named), a missing folder, column
            or early target (one line).

    Example:
        >>> import tempfile, pathlib
        >>> root = pathlib.Path(tempfile.mkdtemp())
        >>> for role in ("reverberant", "direct"):
        ...     (root / role).mkdir()
        ...     _ = (root / role / "a.wav").write_bytes(b"")
        >>> test = load_test_set(root)
        >>> test.targets, [u.id for u in test.utterances]
        (('direct',), ['a'])
    """
    check_target(target)
    items = [str(spec)] if isinstance(spec, str | os.PathLike) else [str(s) for s in spec]
    if not items:
        raise DataError("--data: give a folder, a manifest CSV or a dataset config such as data=demo")
    if is_config(items):
        return _from_config(items, target, sample_rate)
    path = Path(items[0]).expanduser()
    if path.is_dir():
        return _from_folder(path, target)
    if path.is_file() and path.suffix.lower() == ".csv":
        return _from_manifest(path, target)
    if path.exists():
        raise DataError(f"{path}: not a folder or a .csv manifest")
    raise DataError(f"{path}: no such folder or manifest (or give a dataset config such as data=demo)")


def check_target(target: str) -> None:
    """Refuse a ``target`` that is not one of :data:`TARGETS` (``clean`` is now ``direct``).

    Example:
        >>> check_target("clean")
        Traceback (most recent call last):
        ...
        dereverb.errors.DataError: --target clean: now named direct; expected one of auto, both, direct, early
    """
    if target not in TARGETS:
        renamed = "now named direct; " if target == "clean" else ""
        raise DataError(f"--target {target}: {renamed}expected one of {', '.join(TARGETS)}")


def is_config(spec: str | os.PathLike | Sequence[str]) -> bool:
    """Whether ``spec`` is dataset config overrides (``data=demo ...``) rather than one folder or manifest.

    Example:
        >>> is_config(["data=demo"]), is_config("/no/such/folder")
        (True, False)
    """
    items = [spec] if isinstance(spec, str | os.PathLike) else list(spec)
    return len(items) > 1 or (len(items) == 1 and "=" in str(items[0]) and not Path(items[0]).exists())


def _targets(target: str, has_early: bool) -> tuple[str, ...]:
    """The targets to score, the primary one first."""
    if target == "auto":
        return ("direct", "early") if has_early else ("direct",)
    return ("direct", "early") if target == "both" else (target,)


def _old_names(present: set[str]) -> str:
    """A hint when the folders or columns carry the names used before ``reverberant`` and ``direct`` (a
    ``clean`` alone is a training manifest's dry speech, not an old name)."""
    if "reverb" not in present:
        return ""
    old = sorted(name for name in _OLD_NAMES if name in present)
    renames = " and ".join(f"{name} is now {_OLD_NAMES[name]}" for name in old)
    return f" ({renames}: rename them, or prepare the data again)"


def _audio_files(folder: Path) -> dict[str, Path]:
    return {
        p.name: p
        for p in sorted(folder.iterdir())
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower().lstrip(".") in AUDIO_EXTENSIONS
    }


def _from_folder(root: Path, target: str) -> TestSet:
    targets = _targets(target, (root / "early").is_dir())
    present = {p.name for p in root.iterdir() if p.is_dir()}
    for role in (INPUT, *targets):
        if role not in present:
            hint = f" (--target {target} needs one)" if role == "early" else _old_names(present)
            raise DataError(f"{root}: no {role}/ folder{hint}; a paired test folder holds {INPUT}/ and direct/")
    inputs = _audio_files(root / INPUT)
    if not inputs:
        raise DataError(f"{root / INPUT}: no audio files ({', '.join(AUDIO_EXTENSIONS)})")
    files = {role: _audio_files(root / role) for role in targets}
    for role, found in files.items():
        unpaired = [f"{INPUT}/{n}" for n in sorted(set(inputs) - set(found))]
        unpaired += [f"{role}/{n}" for n in sorted(set(found) - set(inputs))]
        if unpaired:
            raise DataError(
                f"{root}: {len(unpaired)} files without a partner of the same name in {INPUT}/ and {role}/ "
                f"(first: {', '.join(unpaired[:5])})"
            )
    utts = [Utterance(Path(n).stem, inputs[n], {role: files[role][n] for role in targets}) for n in sorted(inputs)]
    return TestSet(utts, f"paired folder {root}", targets)


def _from_manifest(path: Path, target: str) -> TestSet:
    from dereverb.data.manifests import NUMERIC_COLUMNS, find_prepared, read_manifest

    meta = find_prepared(path.parent) or {}
    replacements = {**meta.get("roots", {}), "prep_root": str(path.parent.resolve())}
    try:
        rows = read_manifest(path, replacements)
    except DataError:
        raise
    except Exception as err:  # a CSV that is not a manifest: say which file, in one line
        raise DataError(
            f"{path}: not a readable manifest ({type(err).__name__}: {' '.join(str(err).split())})"
        ) from None
    if not rows:
        raise DataError(f"{path}: the manifest has no rows")
    first = next(iter(rows.values()))
    targets = _targets(target, "early" in first)
    for column in (INPUT, *targets):
        if column not in first:
            hint = _old_names(set(first))
            if not hint and column == INPUT:
                hint = " (a training manifest holds clean speech only: use the test manifest)"
            raise DataError(f"{path}: no {column!r} column{hint}")
    utts = []
    for uid, row in rows.items():
        numeric = {k: row[k] for k in NUMERIC_COLUMNS if k in row and k != "duration_s"}
        utts.append(Utterance(uid, Path(row[INPUT]), {t: Path(row[t]) for t in targets}, numeric))
    return TestSet(utts, f"manifest {path}", targets)


def _from_config(overrides: list[str], target: str, sample_rate: int) -> TestSet:
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from dereverb.config import compose
    from dereverb.data import prepare

    bad = [o for o in overrides if "=" not in o]
    if bad:
        raise DataError(f"--data: {bad[0]!r} is not a config override (key=value); a folder or CSV comes alone")
    if not any(o.split("=", 1)[0].lstrip("+~") == "sample_rate" for o in overrides):
        overrides = [*overrides, f"sample_rate={sample_rate}"]
    try:
        cfg = compose("prepare", overrides)
        manifests = prepare(cfg.data, cfg.sample_rate, progress=True)
    except (HydraException, OmegaConfBaseException) as err:
        raise DataError(f"--data {' '.join(overrides)}: {' '.join(str(err).split())}") from None
    test = _from_manifest(manifests["test"], target)
    test.source = f"{' '.join(overrides)} (test split, {manifests['test']})"
    return test
