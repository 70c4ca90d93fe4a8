"""The clean speech pack shipped with the project (``dereverb/assets/speech``).

Short clean recordings of telephone prompts (Asterisk sound packages, CC-BY-SA-3.0 / GPL-2 /
BSD-style, see ``ATTRIBUTION.md`` in the pack) plus two synthetic Flite voices, as 16-bit FLAC at
each source's native rate (16 kHz or 8 kHz), with fixed train/valid/test splits by prompt.
``scripts/build_speech_pack.py`` rebuilds it from the Debian archive.

``python -m dereverb.data.speech_pack`` prints the pack's figures (minutes per speaker and split,
size) as markdown tables, computed from the manifest and the files.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from dereverb.errors import DataError

__all__ = ["PACK_DIR", "SPLITS", "SpeechFile", "format_summary", "load_manifest", "pack_summary", "verify_pack"]

PACK_DIR = Path(__file__).resolve().parents[1] / "assets" / "speech"
SPLITS = ("train", "valid", "test")
_COLUMNS = (
    "id", "path", "speaker", "sex", "language", "kind", "source", "prompt", "sample_rate",
    "num_samples", "duration_s", "split", "sha256", "origin",
)  # fmt: skip


@dataclass(frozen=True)
class SpeechFile:
    """One row of ``manifest.csv``, with ``path`` made absolute.

    Attributes:
        id: unique name, ``<voice>_<prompt>``.
        path: absolute path of the FLAC file.
        speaker: person (or synthetic voice); one speaker may have several languages.
        sex: ``female`` or ``male``.
        language: BCP 47 tag, e.g. ``en-US``.
        kind: ``real`` (a recording) or ``synthetic`` (text to speech).
        source: Debian package and version, ``name=version``.
        prompt: prompt name, shared by every voice reading it (e.g. ``vm-goodbye``); splits are by prompt.
        sample_rate: native rate in Hz (16000 or 8000).
        num_samples: length in samples.
        duration_s: length in seconds.
        split: ``train``, ``valid`` or ``test``.
        sha256: checksum of the file.
        origin: the file inside the source package it was made from.
    """

    id: str
    path: Path
    speaker: str
    sex: str
    language: str
    kind: str
    source: str
    prompt: str
    sample_rate: int
    num_samples: int
    duration_s: float
    split: str
    sha256: str
    origin: str


def load_manifest(
    split: str | None = None, min_sample_rate: int | None = None, pack_dir: str | Path = PACK_DIR
) -> list[SpeechFile]:
    """Read the pack's manifest.

    Args:
        split: keep only ``train``, ``valid`` or ``test``; None keeps all.
        min_sample_rate: keep only files at this rate or above (16000 drops the 8 kHz voices).
        pack_dir: the pack folder (default: the one shipped with the package).

    Returns:
        The rows, in manifest order, with absolute paths.

    Raises:
        DataError: the manifest is missing or malformed, or ``split`` is not a split name.

    Example:
        >>> rows = load_manifest(split="valid", min_sample_rate=16000)
        >>> all(r.split == "valid" and r.sample_rate >= 16000 and r.path.is_absolute() for r in rows)
        True
    """
    if split is not None and split not in SPLITS:
        raise DataError(f"split={split!r}: expected one of {', '.join(SPLITS)}")
    pack_dir = Path(pack_dir).resolve()
    manifest = pack_dir / "manifest.csv"
    if not manifest.is_file():
        raise DataError(f"{manifest}: speech pack manifest not found")
    with open(manifest, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = set(_COLUMNS) - set(reader.fieldnames or ())
        if missing:
            raise DataError(f"{manifest}: columns missing: {', '.join(sorted(missing))}")
        rows = []
        for line, row in enumerate(reader, start=2):
            try:
                item = SpeechFile(
                    **{k: row[k] for k in _COLUMNS if k not in ("path", "sample_rate", "num_samples", "duration_s")},
                    path=pack_dir / row["path"],
                    sample_rate=int(row["sample_rate"]),
                    num_samples=int(row["num_samples"]),
                    duration_s=float(row["duration_s"]),
                )
            except (TypeError, ValueError) as err:
                raise DataError(f"{manifest}:{line}: bad row: {err}") from err
            if item.split not in SPLITS:
                raise DataError(f"{manifest}:{line}: unknown split {item.split!r}")
            rows.append(item)
    return [
        r
        for r in rows
        if (split is None or r.split == split) and (min_sample_rate is None or r.sample_rate >= min_sample_rate)
    ]


def verify_pack(pack_dir: str | Path = PACK_DIR) -> int:
    """Check that every file of the manifest exists and has its recorded sha256.

    Args:
        pack_dir: the pack folder.

    Returns:
        The number of files checked.

    Raises:
        DataError: naming the first missing or damaged file.
    """
    rows = load_manifest(pack_dir=pack_dir)
    for r in rows:
        if not r.path.is_file():
            raise DataError(f"{r.path}: missing from the speech pack")
        digest = hashlib.sha256(r.path.read_bytes()).hexdigest()
        if digest != r.sha256:
            raise DataError(f"{r.path}: sha256 {digest} does not match the manifest's {r.sha256}")
    return len(rows)


def pack_summary(pack_dir: str | Path = PACK_DIR) -> dict:
    """Figures of the pack, from the manifest (durations) and the files (sizes).

    Args:
        pack_dir: the pack folder.

    Returns:
        ``{"speakers": {speaker: {"sex", "kind", "languages", "sample_rates", "minutes": {split: min}}},
        "splits": {split: {"files", "speakers", "minutes", "minutes_16k", "mb"}}, "total": {same keys,
        "mb" counting every file of the pack folder}}``. MB are 10^6 bytes.

    Example:
        >>> s = pack_summary()
        >>> round(sum(v["minutes"] for v in s["splits"].values()), 6) == round(s["total"]["minutes"], 6)
        True
    """
    pack_dir = Path(pack_dir).resolve()
    rows = load_manifest(pack_dir=pack_dir)
    speakers: dict[str, dict] = {}
    for r in rows:
        new = {"sex": r.sex, "kind": r.kind, "languages": set(), "sample_rates": set()}
        s = speakers.setdefault(r.speaker, {**new, "minutes": dict.fromkeys(SPLITS, 0.0)})
        s["languages"].add(r.language)
        s["sample_rates"].add(r.sample_rate)
        s["minutes"][r.split] += r.duration_s / 60
    for s in speakers.values():
        s["languages"], s["sample_rates"] = sorted(s["languages"]), sorted(s["sample_rates"])

    def figures(items: list[SpeechFile]) -> dict:
        return {
            "files": len(items),
            "speakers": len({r.speaker for r in items}),
            "minutes": sum(r.duration_s for r in items) / 60,
            "minutes_16k": sum(r.duration_s for r in items if r.sample_rate >= 16000) / 60,
            "mb": sum(r.path.stat().st_size for r in items if r.path.is_file()) / 1e6,
        }

    by_split = defaultdict(list)
    for r in rows:
        by_split[r.split].append(r)
    total = figures(rows)
    total["mb"] = sum(p.stat().st_size for p in pack_dir.rglob("*") if p.is_file()) / 1e6
    return {"speakers": speakers, "splits": {k: figures(by_split[k]) for k in SPLITS}, "total": total}


def format_summary(summary: dict) -> str:
    """Render :func:`pack_summary` as two markdown tables (per speaker, per split)."""
    lines = [
        "| speaker | sex | kind | languages | rate (Hz) | "
        + " | ".join(f"{s} (min)" for s in SPLITS)
        + " | total (min) |",
        "|" + "---|" * (6 + len(SPLITS)),
    ]
    for name, s in sorted(summary["speakers"].items()):
        minutes = [s["minutes"][k] for k in SPLITS]
        lines.append(
            f"| {name} | {s['sex']} | {s['kind']} | {', '.join(s['languages'])} | "
            f"{', '.join(map(str, s['sample_rates']))} | " + " | ".join(f"{m:.1f}" for m in minutes)
            + f" | {sum(minutes):.1f} |"
        )  # fmt: skip
    lines += ["", "| split | files | speakers | minutes | minutes at >= 16 kHz | MB |", "|---|---|---|---|---|---|"]
    for name, f in [*summary["splits"].items(), ("**all** (MB: whole folder)", summary["total"])]:
        lines.append(
            f"| {name} | {f['files']} | {f['speakers']} | {f['minutes']:.1f} | {f['minutes_16k']:.1f} | {f['mb']:.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Print the speech pack's figures as markdown tables.")
    parser.add_argument("--pack-dir", type=Path, default=PACK_DIR, help="pack folder (default: the shipped one)")
    parser.add_argument("--verify", action="store_true", help="also check every file's sha256 first")
    args = parser.parse_args(argv)
    try:
        if args.verify:
            verify_pack(args.pack_dir)
        text = format_summary(pack_summary(args.pack_dir))
    except DataError as err:
        raise SystemExit(f"error: {err}") from None
    print(text)


if __name__ == "__main__":
    main()
