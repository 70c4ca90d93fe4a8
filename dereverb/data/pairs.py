"""Paired files (the ``folder`` and ``whamr`` kinds): matching names across role folders, checking each
pair, and the manifests of paired examples."""

from __future__ import annotations

from pathlib import Path

from dereverb.data.audio import audio_info, read_audio
from dereverb.data.manifests import SPLITS, BadFiles, split_stats, write_manifest
from dereverb.data.sources import audio_names, progress_bar
from dereverb.errors import DataError

__all__ = ["check_pair", "match", "paired_rows", "write_paired"]


def match(folders: dict[str, Path], extensions: list[str], bad: BadFiles, what: str) -> list[str]:
    """The names present in every role folder, sorted; unmatched names are a DataError or skipped.

    Args:
        folders: role -> folder, e.g. ``{"reverberant": ..., "direct": ...}``.
        extensions: audio extensions to consider.
        bad: the bad-file policy; under ``skip`` each unmatched name is recorded.
        what: what is matched, for the error message.

    Raises:
        DataError: (policy ``error``) how many files lack a partner, and the first five names.
    """
    names = {role: audio_names(folder, extensions) for role, folder in folders.items()}
    common = set.intersection(*(set(n) for n in names.values()))
    unmatched = []
    for role, found in names.items():
        others = [r for r in folders if r != role]
        for name in sorted(set(found) - common):
            unmatched.append((name, f"{folders[role] / name}: no file of that name in {', '.join(others)}"))
    if unmatched:
        first = ", ".join(sorted({n for n, _ in unmatched})[:5])
        if bad.policy == "error":
            raise DataError(
                f"{what}: {len(unmatched)} files without a partner (first: {first}) "
                "(set data.on_bad_file=skip to leave them out)"
            )
        for name, reason in unmatched:
            bad.found(name, reason)
    return sorted(common)


def check_pair(paths: dict[str, Path], sample_rate: int, bad: BadFiles, name: str) -> float | None:
    """Read every file of an example; returns its duration in seconds, or None if it was skipped.

    Every file is read through (empty, corrupt, channels, NaN/Inf); the members must share their rate
    and length, and that rate must not be below ``sample_rate``.

    Raises:
        DataError: (policy ``error``) the first problem, naming the file.
    """
    try:
        rates, lengths = {}, {}
        for role, path in paths.items():
            info = audio_info(path)
            x = read_audio(path)
            rates[role], lengths[role] = info.sample_rate, len(x)
        first = next(iter(paths))
        for role, path in paths.items():
            if rates[role] != rates[first]:
                raise DataError(f"{path}: sample rate {rates[role]} Hz, but {paths[first]} has {rates[first]} Hz")
            if lengths[role] != lengths[first]:
                raise DataError(f"{path}: {lengths[role]} samples, but {paths[first]} has {lengths[first]}")
        if rates[first] < sample_rate:
            raise DataError(f"{paths[first]}: recorded at {rates[first]} Hz, below the data rate {sample_rate} Hz")
        return lengths[first] / rates[first]
    except DataError as err:
        bad.found(name, str(err))
        return None


def paired_rows(
    folders: dict[str, Path],
    root: Path,
    names: list[str],
    sample_rate: int,
    bad: BadFiles,
    progress: bool,
    desc: str,
) -> list[dict]:
    """Manifest rows of the named pairs that pass :func:`check_pair`: ``ID``, ``duration_s`` and one
    ``$data_root/...`` path per role (relative to ``root``)."""
    rows = []
    for name in progress_bar(names, progress, desc):
        paths = {role: folder / name for role, folder in folders.items()}
        duration = check_pair(paths, sample_rate, bad, name)
        if duration is None:
            continue
        row = {"ID": Path(name).stem, "duration_s": duration}
        for role, path in paths.items():
            row[role] = "$data_root/" + path.relative_to(root).as_posix()
        rows.append(row)
    return rows


def write_paired(folder: Path, per_split: dict[str, list[dict]], roles: list[str], bad: BadFiles, what: str) -> dict:
    """Write the manifests of paired rows (``ID, duration_s, <roles>``); returns their :func:`split_stats`.

    Raises:
        DataError: a split left without rows.
    """
    for split in SPLITS:
        if not per_split.get(split):
            raise DataError(f"no usable {what} left for the {split} split")
        write_manifest(folder / f"{split}.csv", per_split[split], ["ID", "duration_s", *roles])
    bad.report(what)
    return split_stats(per_split, bad)
