"""Preparing a dataset once: manifests in a prepared folder keyed by a hash of the settings.

:func:`prepare` turns a ``data`` config into CSV manifests (one per split) inside
``<data.save_folder>/<rate>k-<hash>/`` (see :mod:`dereverb.data.manifests`); it is idempotent and cheap
the second time. What a kind writes is up to the kind (:mod:`dereverb.data.kinds`); the folder, its
hash, its record (``prepared.json``) and its atomic publication are the same for all.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from dereverb.atomic import atomic_folder, write_text
from dereverb.data.kinds import DatasetKind, kind_class
from dereverb.data.manifests import (
    SETTINGS_FILE,
    changed_settings,
    find_prepared,
    latest_other_preparation,
    manifest_paths,
    prepared_folder,
    settings_hash,
)
from dereverb.data.settings import data_settings
from dereverb.errors import DataError

__all__ = ["Preparation", "locate", "prepare"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Preparation:
    """Where validated settings are (or will be) prepared.

    Attributes:
        kind: the dataset kind, holding the settings.
        content: the settings that change the prepared content.
        digest: the hash of ``content`` and of the sources' fingerprint.
        folder: ``<save_folder>/<rate>k-<digest>``.
    """

    kind: DatasetKind
    content: dict
    digest: str
    folder: Path

    @property
    def manifests(self) -> dict[str, Path]:
        """``{"train", "valid", "test"}`` -> the CSV manifests in :attr:`folder`."""
        return manifest_paths(self.folder)


def locate(settings: dict, sample_rate: int) -> Preparation:
    """The preparation of validated settings (:func:`~dereverb.data.settings.data_settings`).

    Raises:
        DataError: a missing source folder, or sources that cannot be listed.
    """
    kind = kind_class(settings["kind"])(settings, sample_rate)
    content = kind.content()
    digest = settings_hash({**content, "fingerprint": kind.fingerprint()})
    return Preparation(kind, content, digest, prepared_folder(Path(settings["save_folder"]), sample_rate, digest))


def prepare(data_cfg, sample_rate: int, progress: bool = True) -> dict[str, Path]:
    """Prepare the manifests of a dataset once; later calls with the same settings do nothing.

    The manifests are written into ``<data.save_folder>/<rate>k-<hash>/`` together with
    ``prepared.json`` (the settings, their hash, counts, skipped files). The hash covers every
    setting that changes the content and a fingerprint of the source files (names and sizes), but not
    where the folders are, so moved data still matches. Changed settings are prepared afresh in
    a new folder (the old one is left as it is, and the change is logged); the folder appears
    only once complete (:func:`~dereverb.atomic.atomic_folder`), so a failed preparation leaves
    nothing half-written behind, and of two processes preparing the same folder the first to finish wins.

    Args:
        data_cfg: the ``data`` config (DictConfig or dict), see :func:`~dereverb.data.settings.data_settings`.
        sample_rate: 8000 or 16000.
        progress: show tqdm bars.

    Returns:
        dict: ``{"train": Path, "valid": Path, "test": Path}``, the CSV manifests.

    Raises:
        DataError: a bad setting or bad input data (see ``data.on_bad_file``).
    """
    s = data_settings(data_cfg, sample_rate)
    p = locate(s, sample_rate)
    if find_prepared(p.folder) is not None:
        log.info("data.kind=%s already prepared in %s", s["kind"], p.folder)
        return p.manifests
    if p.folder.exists():
        _keep_prepared(p.folder)  # raises: something else is there
    _log_changes(p)
    try:
        p.folder.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DataError(f"data.save_folder={p.folder.parent}: cannot create it ({err.strerror})") from None
    start = time.perf_counter()
    with atomic_folder(p.folder, on_exists=_keep_prepared) as tmp:
        stats = p.kind.prepare(tmp, progress)
        meta = {
            "kind": s["kind"],
            "hash": p.digest,
            "settings": p.content,
            "roots": p.kind.roots(),
            "prepared_s": round(time.perf_counter() - start, 1),
            **stats,
        }
        write_text(tmp / SETTINGS_FILE, json.dumps(meta, indent=2))
    log.info("prepared data.kind=%s in %s (%.1f s)", s["kind"], p.folder, time.perf_counter() - start)
    return p.manifests


def _keep_prepared(folder: Path) -> bool:
    """The policy for a prepared folder that exists already: keep a complete preparation, refuse anything else."""
    if find_prepared(folder) is not None:
        return False  # another process finished the same preparation first
    raise DataError(f"{folder}: exists but is not a complete preparation (no {SETTINGS_FILE}); remove it")


def _log_changes(p: Preparation) -> None:
    """Log what differs from the latest other preparation of the same kind, if any."""
    other = latest_other_preparation(p.folder.parent, p.kind.name, p.folder)
    if other is None:
        return
    changed = changed_settings(other.get("settings", {}), p.content)
    if other.get("hash") != p.digest and not changed:
        changed = ["the source files"]
    log.info("data settings differ from an earlier preparation (changed: %s); preparing afresh", ", ".join(changed))
