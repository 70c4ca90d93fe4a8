"""Preparation and SpeechBrain datasets for ``data=demo|simulate|folder|whamr``.

:func:`prepare` turns a ``data`` config into CSV manifests (one per split) inside a prepared
folder keyed by a hash of the settings (see :mod:`dereverb.data.manifests`); it is idempotent and
cheap the second time. :func:`build_datasets` prepares (once, on the main process) and returns
``{"train", "valid", "test"}`` :class:`~speechbrain.dataio.dataset.DynamicItemDataset` s whose
items give ``id``, ``reverb`` and ``target`` (float32 Tensor[T]).

The kinds:

* ``demo``: the shipped speech pack in simulated rooms. Training items are mixed afresh every
  time (a random ``segment_s`` crop of a training utterance convolved with a random RIR from the
  training bank); valid and test are written once as wav files, with RIR banks of other seeds.
* ``simulate``: the same on the user's clean speech (``data.clean_root``), optionally with the
  user's measured RIRs (``data.rir_root``).
* ``folder``: paired ``reverb/`` and ``clean/`` folders (optional ``early/``) matched by name.
* ``whamr``: the official WHAMR! tree, ``task: dereverb | denoise_dereverb``, ``version: min | max``.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dereverb.data.audio import audio_info, read_audio, write_audio
from dereverb.data.manifests import (
    SETTINGS_FILE,
    BadFiles,
    changed_settings,
    commit_folder,
    find_prepared,
    latest_other_preparation,
    prepared_folder,
    read_manifest,
    settings_hash,
    split_names,
    write_manifest,
)
from dereverb.errors import DataError

__all__ = ["DEFAULTS", "KINDS", "SAMPLE_RATES", "SPLITS", "build_datasets", "data_settings", "prepare"]

log = logging.getLogger(__name__)

KINDS = ("demo", "simulate", "folder", "whamr")
SAMPLE_RATES = (8000, 16000)
SPLITS = ("train", "valid", "test")
WHAMR_SPLITS = {"train": "tr", "valid": "cv", "test": "tt"}
WHAMR_INPUTS = {"dereverb": "s1_reverb", "denoise_dereverb": "mix_single_reverb"}
MISSING = "???"

_COMMON = {"kind": MISSING, "save_folder": MISSING, "segment_s": 4.0, "on_bad_file": "error"}
_MIXING = {
    "target": "early",
    "rooms": {},
    "train_rirs": 400,
    "eval_rirs": 50,
    "seed": 0,
}
DEFAULTS: dict[str, dict] = {
    "demo": {**_COMMON, **_MIXING, "pack_dir": None},
    "simulate": {
        **_COMMON,
        **_MIXING,
        "clean_root": MISSING,
        "rir_root": None,
        "valid_fraction": 0.05,
        "test_fraction": 0.05,
        "split_seed": 0,
        "extensions": ["wav", "flac"],
    },
    "folder": {
        **_COMMON,
        "root": MISSING,
        "target": "clean",
        "valid_fraction": 0.1,
        "test_fraction": 0.1,
        "split_seed": 0,
        "extensions": ["wav", "flac"],
    },
    "whamr": {**_COMMON, "root": MISSING, "task": "dereverb", "version": "min"},
}
"""Every key of each kind with its default; ``"???"`` marks required keys (as Hydra does)."""

_ROOT_KEYS = ("root", "clean_root", "rir_root", "pack_dir")
_BUILD_ONLY = ("save_folder", "segment_s")  # not part of the prepared content


# --------------------------------------------------------------------------------------------
# settings


def data_settings(data_cfg, sample_rate: int) -> dict:
    """Validate a ``data`` config and fill in the defaults of its kind.

    Args:
        data_cfg: a DictConfig (the ``data`` node of a composed config) or a plain dict.
        sample_rate: the root config's ``sample_rate`` (8000 or 16000).

    Returns:
        dict: a plain dict with every key of the kind, paths expanded.

    Raises:
        DataError: one line naming the key: unknown kind or key, missing required value,
            unsupported sample rate, a value out of range.

    Example:
        >>> data_settings({"kind": "whamr", "root": "/data/whamr", "save_folder": "/tmp/x"}, 8000)["task"]
        'dereverb'
    """
    if sample_rate not in SAMPLE_RATES:
        raise DataError(f"sample_rate={sample_rate}: unsupported; use 8000 or 16000")
    cfg = _to_dict(data_cfg)
    kind = cfg.get("kind", MISSING)
    if kind not in KINDS:
        raise DataError(f"data.kind={kind!r}: unknown; expected one of {', '.join(KINDS)}")
    unknown = sorted(set(cfg) - set(DEFAULTS[kind]))
    if unknown:
        raise DataError(f"data.{unknown[0]}: unknown key for data.kind={kind} (known: {', '.join(DEFAULTS[kind])})")
    s = {**copy.deepcopy(DEFAULTS[kind]), **cfg}
    for key, value in s.items():
        if value == MISSING:
            hint = "a folder" if key != "kind" else "a kind"
            raise DataError(f"data.{key} is required: set data.{key}=<{hint}> on the command line or in the config")
    for key in (*_ROOT_KEYS, "save_folder"):
        if s.get(key) is not None:
            s[key] = str(Path(os.path.expanduser(str(s[key]))).absolute())
    _check_choice(s, "on_bad_file", ("error", "skip"))
    if not (isinstance(s["segment_s"], int | float) and s["segment_s"] > 0):
        raise DataError(f"data.segment_s={s['segment_s']!r}: expected a positive number of seconds")
    if kind in ("demo", "simulate"):
        _check_choice(s, "target", ("direct", "early"))
        for key in ("train_rirs", "eval_rirs"):
            if not (isinstance(s[key], int) and s[key] >= 1):
                raise DataError(f"data.{key}={s[key]!r}: expected a positive integer")
        if not isinstance(s["rooms"], dict):
            raise DataError(f"data.rooms={s['rooms']!r}: expected a mapping of RoomConfig fields")
    if kind == "folder":
        _check_choice(s, "target", ("clean", "early"))
    if kind == "whamr":
        _check_choice(s, "task", tuple(WHAMR_INPUTS))
        _check_choice(s, "version", ("min", "max"))
    if "extensions" in s:
        s["extensions"] = [str(e).lower().lstrip(".") for e in s["extensions"]]
    return s


def _check_choice(s: dict, key: str, choices: tuple) -> None:
    if s[key] not in choices:
        raise DataError(f"data.{key}={s[key]!r}: expected one of {', '.join(map(str, choices))}")


def _to_dict(data_cfg) -> dict:
    if isinstance(data_cfg, dict):
        return copy.deepcopy(data_cfg)
    from omegaconf import OmegaConf
    from omegaconf.errors import InterpolationResolutionError, MissingMandatoryValue

    missing = sorted(OmegaConf.missing_keys(data_cfg))
    if missing:
        key = missing[0]
        raise DataError(f"data.{key} is required: set data.{key}=<a folder> on the command line or in the config")
    try:
        return OmegaConf.to_container(data_cfg, resolve=True)
    except (InterpolationResolutionError, MissingMandatoryValue) as err:
        raise DataError(f"data: {' '.join(str(err).split())}") from None


# --------------------------------------------------------------------------------------------
# preparation


@dataclass
class _Plan:
    """What a preparation will do: its content hash inputs and the function that writes it."""

    fingerprint: list
    roots: dict[str, str]
    build: Callable[[Path, bool], dict]


def prepare(data_cfg, sample_rate: int, progress: bool = True) -> dict[str, Path]:
    """Prepare the manifests of a dataset once; later calls with the same settings do nothing.

    The manifests are written into ``<data.save_folder>/<rate>k-<hash>/`` together with
    ``prepared.json`` (the settings, their hash, counts, skipped files). The hash covers every
    setting that changes the content and a listing of the source files (names and sizes), but not
    where the folders are, so moved data still matches. Changed settings are prepared afresh in
    a new folder (the old one is left as it is, and the change is logged); the folder appears
    only once complete, so a failed preparation leaves nothing half-written behind.

    Args:
        data_cfg: the ``data`` config (DictConfig or dict), see :func:`data_settings`.
        sample_rate: 8000 or 16000.
        progress: show tqdm bars.

    Returns:
        dict: ``{"train": Path, "valid": Path, "test": Path}``, the CSV manifests.

    Raises:
        DataError: a bad setting or bad input data (see ``data.on_bad_file``).
    """
    s = data_settings(data_cfg, sample_rate)
    plan, content, digest, final = _locate(s, sample_rate)
    save_folder = Path(s["save_folder"])
    manifests = _manifests(final)
    if find_prepared(final) is not None:
        log.info("data.kind=%s already prepared in %s", s["kind"], final)
        return manifests
    other = latest_other_preparation(save_folder, s["kind"], final)
    if other is not None:
        changed = changed_settings(other.get("settings", {}), content)
        if other.get("hash") != digest and not changed:
            changed = ["the source files"]
        log.info("data settings differ from an earlier preparation (changed: %s); preparing afresh", ", ".join(changed))
    try:
        save_folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DataError(f"data.save_folder={save_folder}: cannot create it ({err.strerror})") from None
    tmp = save_folder / f".tmp-{final.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    start = time.perf_counter()
    try:
        stats = plan.build(tmp, progress)
        meta = {
            "kind": s["kind"],
            "hash": digest,
            "settings": content,
            "roots": plan.roots,
            "prepared_s": round(time.perf_counter() - start, 1),
            **stats,
        }
        with open(tmp / SETTINGS_FILE, "w", encoding="utf-8") as f:
            json.dump(meta, f, indent=2)
        commit_folder(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("prepared data.kind=%s in %s (%.1f s)", s["kind"], final, time.perf_counter() - start)
    return manifests


def _locate(s: dict, sample_rate: int) -> tuple[_Plan, dict, str, Path]:
    """The plan, content settings, their hash and the prepared folder of validated settings."""
    plan = _PLANNERS[s["kind"]](s, sample_rate)
    content = _content_settings(s, sample_rate)
    digest = settings_hash({**content, "fingerprint": plan.fingerprint})
    return plan, content, digest, prepared_folder(Path(s["save_folder"]), sample_rate, digest)


def _manifests(folder: Path) -> dict[str, Path]:
    return {split: folder / f"{split}.csv" for split in SPLITS}


def _content_settings(s: dict, sample_rate: int) -> dict:
    content = {k: v for k, v in s.items() if k not in _BUILD_ONLY and k not in _ROOT_KEYS}
    if "rir_root" in s:
        content["own_rirs"] = s["rir_root"] is not None
    if "rooms" in s and not content.get("own_rirs"):
        content["rooms"] = _room_config(s).to_dict()  # checked now; {} and the defaults spelled out are equal
    if "rooms" in s:
        content["simulator"] = _simulator_fingerprint(sample_rate, not content.get("own_rirs"))
    content["sample_rate"] = sample_rate
    return content


@functools.lru_cache(maxsize=4)
def _simulator_fingerprint(sample_rate: int, simulated: bool) -> str:
    """A digest of what the room code computes (one small room, a short signal through it, both
    targets), so that a changed simulator or target definition is a changed setting too."""
    from dereverb.data import rooms

    if simulated:
        config = rooms.RoomConfig(t60_range=(0.2, 0.2), distance_range=(1.0, 1.0))
        rir = rooms.simulate_rir(config, sample_rate, np.random.default_rng(0))
    else:
        h = np.zeros(sample_rate // 10, np.float32)
        h[[5, 40, 200, 500]] = [1.0, 0.5, -0.3, 0.1]
        rir = rooms.Rir(h, sample_rate, 5, 0.1, 0.1, float("nan"), 0.0, (float("nan"),) * 3)
    x = np.random.default_rng(1).standard_normal(sample_rate // 4)
    parts = [rir.rir, *rooms.reverberate(x, rir, "direct"), rooms.reverberate(x, rir, "early")[1]]
    digest = hashlib.sha256()
    for part in parts:  # rounded: bit-level differences between machines must not count
        digest.update(np.round(np.asarray(part, np.float64), 4).tobytes())
    return digest.hexdigest()[:12]


def _listing(folder: Path, extensions: list[str] | None = None) -> list[list]:
    """Relative paths and sizes of the files under ``folder`` (sorted), for the content hash."""
    out = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        for name in sorted(filenames):
            if extensions is None or name.rsplit(".", 1)[-1].lower() in extensions:
                path = Path(dirpath) / name
                out.append([path.relative_to(folder).as_posix(), path.stat().st_size])
    return out


def _require_dir(path: Path, key: str) -> Path:
    if not path.is_dir():
        raise DataError(f"data.{key}={path}: no such folder")
    return path


def _progress(items, progress: bool, desc: str):
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, disable=not progress, leave=False)


# --------------------------------------------------------------------------------------------
# paired folders (folder, whamr)


def _audio_names(folder: Path, extensions: list[str]) -> dict[str, Path]:
    return {
        p.name: p
        for p in sorted(folder.iterdir())
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower().lstrip(".") in extensions
    }


def _match(folders: dict[str, Path], extensions: list[str], bad: BadFiles, what: str) -> list[str]:
    """Names present in every folder; unmatched names are a DataError or skipped."""
    names = {role: _audio_names(folder, extensions) for role, folder in folders.items()}
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


def _check_pair(paths: dict[str, Path], sample_rate: int, bad: BadFiles, name: str) -> float | None:
    """Read every file of an example; returns its duration in seconds, or None if skipped."""
    try:
        rates, lengths = {}, {}
        for role, path in paths.items():
            info = audio_info(path)
            x = read_audio(path)  # every check: empty, corrupt, channels, NaN/Inf
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


def _paired_rows(
    folders: dict[str, Path],
    root: Path,
    names: list[str],
    sample_rate: int,
    bad: BadFiles,
    progress: bool,
    desc: str,
) -> list[dict]:
    rows = []
    for name in _progress(names, progress, desc):
        paths = {role: folder / name for role, folder in folders.items()}
        duration = _check_pair(paths, sample_rate, bad, name)
        if duration is None:
            continue
        row = {"ID": Path(name).stem, "duration_s": duration}
        for role, path in paths.items():
            row[role] = "$data_root/" + path.relative_to(root).as_posix()
        rows.append(row)
    return rows


def _plan_folder(s: dict, sample_rate: int) -> _Plan:
    root = _require_dir(Path(s["root"]), "root")
    roles = ["reverb", "clean", "early"]
    if (root / "train").is_dir():
        layout = {split: root / split for split in SPLITS}
        for split, folder in layout.items():
            _require_dir(folder, f"root: {root} has train/ but no {split}/ ({folder})")
    else:
        layout = {"all": root}
    for base in layout.values():
        for role in ("reverb", "clean"):
            if not (base / role).is_dir():
                raise DataError(f"data.root={root}: no folder {base / role}")
    has_early = all((base / "early").is_dir() for base in layout.values())
    if s["target"] == "early" and not has_early:
        raise DataError(f"data.target=early: needs an early/ folder next to every clean/ under {root}")
    roles = roles if has_early else roles[:2]
    fingerprint = [[tag, _listing(base / role, s["extensions"])] for tag, base in layout.items() for role in roles]

    def build(tmp: Path, progress: bool) -> dict:
        bad = BadFiles(s["on_bad_file"])
        per_split: dict[str, list[dict]] = {}
        for tag, base in layout.items():
            folders = {role: base / role for role in roles}
            names = _match(folders, s["extensions"], bad, f"data.root={base}")
            if tag == "all":
                # split by name, then drop the bad ones: a bad file never moves another between splits
                split = split_names(names, s["valid_fraction"], s["test_fraction"], s["split_seed"], "file pairs")
                for part, part_names in split.items():
                    per_split[part] = _paired_rows(folders, root, part_names, sample_rate, bad, progress, part)
            else:
                per_split[tag] = _paired_rows(folders, root, names, sample_rate, bad, progress, tag)
        return _write_paired(tmp, per_split, roles, bad, "file pairs")

    return _Plan(fingerprint, {"data_root": str(root)}, build)


def _plan_whamr(s: dict, sample_rate: int) -> _Plan:
    root = _require_dir(Path(s["root"]), "root")
    wanted = f"wav{sample_rate // 1000}k"
    candidates = [wanted] + (["wav16k"] if sample_rate == 8000 else [])
    rate_dir = next((root / c for c in candidates if (root / c).is_dir()), None)
    if rate_dir is None:
        raise DataError(
            f"data.root={root}: no {' or '.join(candidates)}/ folder (the WHAMR! layout wavXk/min|max/tr|cv|tt)"
        )
    base = rate_dir / s["version"]
    if not base.is_dir():
        raise DataError(f"data.version={s['version']}: no folder {base}")
    inp = WHAMR_INPUTS[s["task"]]
    folders = {}
    for split, short in WHAMR_SPLITS.items():
        folders[split] = {"reverb": base / short / inp, "clean": base / short / "s1_anechoic"}
        for folder in folders[split].values():
            if not folder.is_dir():
                raise DataError(f"data.root={root}: no folder {folder} (needed by data.task={s['task']})")
    fingerprint = [[split, role, _listing(f, ["wav"])] for split, fs in folders.items() for role, f in fs.items()]

    def build(tmp: Path, progress: bool) -> dict:
        bad = BadFiles(s["on_bad_file"])
        per_split = {}
        for split, fs in folders.items():
            names = _match(fs, ["wav"], bad, f"WHAMR! {split} ({fs['reverb'].parent})")
            per_split[split] = _paired_rows(fs, root, names, sample_rate, bad, progress, split)
        return _write_paired(tmp, per_split, ["reverb", "clean"], bad, "WHAMR! files")

    return _Plan(fingerprint, {"data_root": str(root)}, build)


def _write_paired(tmp: Path, per_split: dict[str, list[dict]], roles: list[str], bad: BadFiles, what: str) -> dict:
    for split in SPLITS:
        if not per_split.get(split):
            raise DataError(f"no usable {what} left for the {split} split")
        write_manifest(tmp / f"{split}.csv", per_split[split], ["ID", "duration_s", *roles])
    bad.report(what)
    return _stats(per_split, bad)


def _stats(per_split: dict[str, list[dict]], bad: BadFiles) -> dict:
    return {
        "counts": {split: len(rows) for split, rows in per_split.items()},
        "hours": {split: round(sum(r["duration_s"] for r in rows) / 3600, 4) for split, rows in per_split.items()},
        "skipped": bad.as_dict(),
    }


# --------------------------------------------------------------------------------------------
# dynamic mixing (demo, simulate)


@dataclass
class _Source:
    """One clean utterance used by the mixing kinds."""

    id: str
    path: Path
    cell: str  # the manifest cell: "$root/relative/path"
    speaker: str
    sample_rate: int
    duration_s: float


def _plan_demo(s: dict, sample_rate: int) -> _Plan:
    from dereverb.data import speech_pack

    pack_dir = Path(s["pack_dir"]) if s["pack_dir"] is not None else Path(speech_pack.PACK_DIR)
    sources: dict[str, list[_Source]] = {}
    for split in SPLITS:
        entries = speech_pack.load_manifest(split=split, min_sample_rate=sample_rate, pack_dir=pack_dir)
        if not entries:
            raise DataError(f"the speech pack {pack_dir} has no {split} utterances recorded at >= {sample_rate} Hz")
        sources[split] = [
            _Source(
                id=e.id,
                path=e.path,
                cell="$pack_root/" + e.path.relative_to(pack_dir.resolve()).as_posix(),
                speaker=e.speaker,
                sample_rate=e.sample_rate,
                duration_s=e.duration_s,
            )
            for e in entries
        ]
    fingerprint = [
        [split, [[x.id, x.sample_rate, round(x.duration_s, 3)] for x in xs]] for split, xs in sources.items()
    ]

    def build(tmp: Path, progress: bool) -> dict:
        bad = BadFiles(s["on_bad_file"])
        return _build_mixing(tmp, s, sample_rate, sources, None, None, bad, progress, full_check=False)

    return _Plan(fingerprint, {"pack_root": str(pack_dir.resolve())}, build)


def _split_files(root: Path, extensions: list[str], s: dict, what: str) -> dict[str, list[Path]]:
    """Split a folder's audio files: by ``train/ valid/ test/`` subfolders, or by the seed."""
    if (root / "train").is_dir():
        out = {}
        for split in SPLITS:
            folder = root / split
            if not folder.is_dir():
                raise DataError(f"{root}: has train/ but no {split}/ subfolder")
            out[split] = [folder / rel for rel, _ in _listing(folder, extensions)]
            if not out[split]:
                raise DataError(f"{folder}: no audio files ({', '.join(extensions)})")
        return out
    files = {rel: root / rel for rel, _ in _listing(root, extensions)}
    if not files:
        raise DataError(f"{root}: no audio files ({', '.join(extensions)})")
    split = split_names(files, s["valid_fraction"], s["test_fraction"], s["split_seed"], what)
    return {part: [files[rel] for rel in names] for part, names in split.items()}


def _plan_simulate(s: dict, sample_rate: int) -> _Plan:
    clean_root = _require_dir(Path(s["clean_root"]), "clean_root")
    files = _split_files(clean_root, s["extensions"], s, f"clean files in {clean_root}")
    split_layout = (clean_root / "train").is_dir()
    fingerprint = [["clean", _listing(clean_root, s["extensions"])]]
    roots = {"data_root": str(clean_root)}
    rir_files = rir_root = None
    if s["rir_root"] is not None:
        rir_root = _require_dir(Path(s["rir_root"]), "rir_root")
        rir_files = _split_files(rir_root, ["wav"], s, f"RIR files in {rir_root}")
        fingerprint.append(["rirs", _listing(rir_root, ["wav"])])
        roots["rir_root"] = str(rir_root)

    def build(tmp: Path, progress: bool) -> dict:
        bad = BadFiles(s["on_bad_file"])
        sources = {}
        for split, paths in files.items():
            sources[split] = []
            for path in paths:
                rel = path.relative_to(clean_root)
                parts = rel.parts[1:] if split_layout else rel.parts
                try:
                    info = audio_info(path)
                    if info.sample_rate < sample_rate:
                        raise DataError(
                            f"{path}: recorded at {info.sample_rate} Hz, below the data rate {sample_rate} Hz"
                        )
                except DataError as err:
                    bad.found(rel.as_posix(), str(err))
                    continue
                sources[split].append(
                    _Source(
                        id=rel.with_suffix("").as_posix().replace("/", "__"),
                        path=path,
                        cell="$data_root/" + rel.as_posix(),
                        speaker=parts[0] if len(parts) > 1 else "",  # the top folder, as in LibriSpeech/VCTK
                        sample_rate=info.sample_rate,
                        duration_s=info.duration_s,
                    )
                )
        return _build_mixing(tmp, s, sample_rate, sources, rir_files, rir_root, bad, progress, full_check=True)

    return _Plan(fingerprint, roots, build)


def _build_mixing(
    tmp: Path,
    s: dict,
    sample_rate: int,
    sources: dict[str, list[_Source]],
    rir_files: dict[str, list[Path]] | None,
    rir_root: Path | None,
    bad: BadFiles,
    progress: bool,
    full_check: bool,
) -> dict:
    """Training manifest (clean sources, mixed at load time) + RIR banks + cached valid/test."""
    from dereverb.data import rooms

    per_split: dict[str, list[dict]] = {}
    train_rows = []
    for src in _progress(sources["train"], progress and full_check, "train (check)"):
        if full_check:
            try:
                read_audio(src.path)
            except DataError as err:
                bad.found(src.id, str(err))
                continue
        train_rows.append(
            {
                "ID": src.id,
                "duration_s": src.duration_s,
                "clean": src.cell,
                "speaker": src.speaker,
                "source_rate": src.sample_rate,
            }
        )
    per_split["train"] = train_rows
    banks = _make_banks(tmp / "rirs", s, sample_rate, rir_files, rir_root, progress)  # after the checks
    for offset, split in enumerate(("valid", "test"), start=1):
        bank = banks[split]
        rng = np.random.default_rng([s["seed"], offset])
        for role in ("reverb", "clean", "early"):
            (tmp / split / role).mkdir(parents=True)
        rows = []
        for src in _progress(sources[split], progress, f"{split} (simulate)"):
            try:
                clean = read_audio(src.path, sample_rate, resample=True)
            except DataError as err:
                bad.found(src.id, str(err))
                continue
            index = int(rng.integers(len(bank)))
            rir = bank[index]
            reverb, direct = rooms.reverberate(clean, rir, target="direct")
            _, early = rooms.reverberate(clean, rir, target="early")
            row = {"ID": src.id, "duration_s": len(clean) / sample_rate, "speaker": src.speaker, "rir": index}
            for role, x in (("reverb", reverb), ("clean", direct), ("early", early)):
                write_audio(tmp / split / role / f"{src.id}.wav", x, sample_rate)
                row[role] = f"$prep_root/{split}/{role}/{src.id}.wav"
            row.update(_rir_meta(rir))
            rows.append(row)
        per_split[split] = rows
    columns = ["ID", "duration_s", "speaker"]
    write_manifest(tmp / "train.csv", per_split["train"], [*columns, "clean", "source_rate"])
    meta = ["rir", "t60_s", "t60_measured_s", "drr_db", "distance_m"]
    for split in ("valid", "test"):
        write_manifest(tmp / f"{split}.csv", per_split[split], [*columns, "reverb", "clean", "early", *meta])
    for split in SPLITS:
        if not per_split[split]:
            raise DataError(f"no usable utterances left for the {split} split")
    bad.report("clean files")
    return _stats(per_split, bad)


def _rir_meta(rir) -> dict:
    return {
        "t60_s": float(rir.t60_s),
        "t60_measured_s": float(rir.t60_measured_s),
        "drr_db": float(rir.drr_db),
        "distance_m": float(rir.distance_m) if math.isfinite(rir.distance_m) else None,  # unknown for measured RIRs
    }


def _room_config(s: dict):
    from dereverb.data import rooms

    try:
        return rooms.RoomConfig(**s["rooms"])
    except TypeError as err:
        raise DataError(f"data.rooms: {' '.join(str(err).split())}") from None


def _make_banks(folder: Path, s: dict, sample_rate: int, rir_files, rir_root, progress: bool) -> dict:
    """One RIR bank per split; different seeds (or different files), so no room is shared."""
    from dereverb.data import rooms

    banks = {}
    if rir_files is None:
        config = _room_config(s)
        sizes = {"train": s["train_rirs"], "valid": s["eval_rirs"], "test": s["eval_rirs"]}
        for offset, split in enumerate(SPLITS):
            banks[split] = rooms.RirBank.build(
                folder / split, sizes[split], config, sample_rate, seed=s["seed"] * 1000 + offset, progress=progress
            )
    else:  # the user's RIRs: copied per split into the prepared folder, read by load_rir_folder
        for split in SPLITS:
            (folder / split).mkdir(parents=True)
            for path in rir_files[split]:
                shutil.copyfile(path, folder / split / "__".join(path.relative_to(rir_root).parts))
            banks[split] = _load_rirs(folder / split, sample_rate)
    return banks


def _load_rirs(folder: Path, sample_rate: int):
    """A simulated bank (``bank.json``) or a folder of the user's RIR files: both support len and []."""
    from dereverb.data import rooms

    if (folder / "bank.json").is_file():
        return rooms.RirBank.load(folder)
    return rooms.load_rir_folder(folder, sample_rate)


_PLANNERS: dict[str, Callable[[dict, int], _Plan]] = {
    "demo": _plan_demo,
    "simulate": _plan_simulate,
    "folder": _plan_folder,
    "whamr": _plan_whamr,
}


# --------------------------------------------------------------------------------------------
# datasets


def _rng() -> np.random.Generator:
    # drawn from torch's generator, so torch.manual_seed and DataLoader worker seeding apply
    return np.random.default_rng(int(torch.randint(0, 2**62, ()).item()))


def _crop(length: int, segment: int, rng: np.random.Generator) -> int:
    return int(rng.integers(0, length - segment + 1)) if length > segment else 0


def build_datasets(data_cfg, sample_rate: int, progress: bool = True) -> dict:
    """Prepare once (on the main process) and return the SpeechBrain datasets of each split.

    Items give ``id`` (str), ``reverb`` and ``target`` (float32 Tensor[T], aligned, same length).
    Training items are cropped to ``data.segment_s`` at a random position (the same crop for
    both). The mixing kinds (``demo``, ``simulate``) convolve each training crop with a random RIR
    of the training bank every time, and place an utterance shorter than ``segment_s`` at a random
    position in silence (so every item has exactly ``segment_s``, the reverberant tail included);
    the paired kinds (``folder``, ``whamr``) use shorter pairs whole (``PaddedBatch`` pads them).
    Validation and test items are whole utterances. The manifest's other columns
    (``duration_s``, ``speaker``, ``t60_s``, ...) stay in ``dataset.data`` for sorting/filtering.

    Args:
        data_cfg: the ``data`` config (DictConfig or dict).
        sample_rate: 8000 or 16000.
        progress: show tqdm bars while preparing.

    Returns:
        dict: ``{"train", "valid", "test"}`` -> ``DynamicItemDataset``.
    """
    from speechbrain.dataio.dataset import DynamicItemDataset
    from speechbrain.utils.distributed import run_on_main

    s = data_settings(data_cfg, sample_rate)
    run_on_main(prepare, kwargs={"data_cfg": s, "sample_rate": sample_rate, "progress": progress})
    folder = _locate(s, sample_rate)[3]
    manifests = _manifests(folder)
    meta = find_prepared(folder)
    if meta is None:
        raise DataError(f"{folder}: not prepared (the preparation on the main process failed?)")
    replacements = {**meta["roots"], "prep_root": str(folder)}
    # roots from the current config win, so a moved source folder still works
    replacements.update({k: v for k, v in _current_roots(s).items() if v is not None})
    segment = round(s["segment_s"] * sample_rate)
    target_col = {"direct": "clean", "clean": "clean", "early": "early"}.get(s.get("target", "clean"))

    out = {}
    for split in SPLITS:
        data = read_manifest(manifests[split], replacements)
        for row in data.values():
            for role in ("reverb", "clean", "early"):
                if role in row:
                    row[f"{role}_path"] = row.pop(role)
        mixing = s["kind"] in ("demo", "simulate") and split == "train"
        if mixing:
            item = _mixing_item(folder / "rirs" / "train", sample_rate, segment, s["target"])
            takes = ["clean_path"]
        else:
            item = _paired_item(sample_rate, segment if split == "train" else None)
            takes = ["reverb_path", f"{target_col}_path"]
        dataset = DynamicItemDataset(data, output_keys=["id", "reverb", "target"])
        dataset.add_dynamic_item(item.__call__, takes=takes, provides=["reverb", "target"])
        dataset.set_output_keys(["id", "reverb", "target"])
        out[split] = dataset
    return out


def _current_roots(s: dict) -> dict:
    if s["kind"] in ("folder", "whamr"):
        return {"data_root": s["root"]}
    if s["kind"] == "simulate":
        return {"data_root": s["clean_root"], "rir_root": s["rir_root"]}
    from dereverb.data import speech_pack

    return {"pack_root": str(Path(s["pack_dir"] or speech_pack.PACK_DIR).resolve())}


class _paired_item:
    """Read an input/target pair (resampled to the data rate), optionally cropped at random."""

    def __init__(self, sample_rate: int, segment: int | None):
        self.sample_rate, self.segment = sample_rate, segment

    def __call__(self, reverb_path: str, target_path: str):
        reverb = read_audio(reverb_path, self.sample_rate, resample=True)
        target = read_audio(target_path, self.sample_rate, resample=True)
        if len(reverb) != len(target):
            raise DataError(f"{reverb_path}: {len(reverb)} samples, but {target_path} has {len(target)}")
        if self.segment is not None and len(reverb) > self.segment:
            start = _crop(len(reverb), self.segment, _rng())
            reverb, target = reverb[start : start + self.segment], target[start : start + self.segment]
        yield torch.from_numpy(np.ascontiguousarray(reverb))
        yield torch.from_numpy(np.ascontiguousarray(target))


class _mixing_item:
    """Dynamic mixing: a random crop of a clean utterance in a random room of the training bank."""

    def __init__(self, bank_folder: Path, sample_rate: int, segment: int, target: str):
        self.bank_folder, self.sample_rate, self.segment, self.target = bank_folder, sample_rate, segment, target
        self._bank = None

    @property
    def bank(self):
        if self._bank is None:
            self._bank = _load_rirs(self.bank_folder, self.sample_rate)
        return self._bank

    def __getstate__(self):
        return {**self.__dict__, "_bank": None}  # each worker loads its own

    def __call__(self, clean_path: str):
        from dereverb.data import rooms

        rng = _rng()
        clean = read_audio(clean_path, self.sample_rate, resample=True)
        rir = self.bank[int(rng.integers(len(self.bank)))]
        if len(clean) < self.segment:  # a short utterance at a random place in silence: its tail fills the rest
            left = int(rng.integers(0, self.segment - len(clean) + 1))
            clean = np.pad(clean, (left, self.segment - len(clean) - left))
        start = _crop(len(clean), self.segment, rng)
        # reverberation carried in from before the crop: convolve from up to one RIR earlier
        context = min(start, len(rir.rir))
        window = clean[start - context : start + self.segment]
        reverb, target = rooms.reverberate(window, rir, target=self.target)
        yield torch.from_numpy(np.ascontiguousarray(reverb[context:], dtype=np.float32))
        yield torch.from_numpy(np.ascontiguousarray(target[context:], dtype=np.float32))
