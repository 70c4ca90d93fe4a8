"""``data=folder``: paired folders ``reverberant/``, ``direct/`` (optional ``early/``) matched by file name.

``root/train|valid|test/{reverberant,direct[,early]}`` when ``root/train`` exists, else one set of
folders split by ``data.split_seed`` and the fractions. The target is ``direct/`` (``data.target=direct``,
the default) or ``early/``.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import ClassVar

from dereverb.data.kinds import MISSING, DatasetKind, check_target, register_kind
from dereverb.data.manifests import SPLITS, BadFiles, split_names
from dereverb.data.pairs import match, paired_rows, write_paired
from dereverb.data.sources import listing, require_dir
from dereverb.errors import DataError

__all__ = ["Folder"]


@register_kind
class Folder(DatasetKind):
    """Paired folders of your own: ``reverberant/NAME`` with ``direct/NAME`` (and ``early/NAME``)."""

    name = "folder"
    defaults: ClassVar[dict] = {
        "root": MISSING,
        "target": "direct",
        "valid_fraction": 0.1,
        "test_fraction": 0.1,
        "split_seed": 0,
        "extensions": ["wav", "flac"],
    }
    folders = ("root",)

    @classmethod
    def check(cls, settings: dict) -> None:
        check_target(settings)
        settings["extensions"] = [str(e).lower().lstrip(".") for e in settings["extensions"]]

    @functools.cached_property
    def layout(self) -> dict[str, Path]:
        """``{split: base}`` for split subfolders, or ``{"all": root}``; each base holds the role folders."""
        root = require_dir(Path(self.settings["root"]), "root")
        if not (root / "train").is_dir():
            layout = {"all": root}
        else:
            layout = {split: root / split for split in SPLITS}
            for split, folder in layout.items():
                require_dir(folder, f"root: {root} has train/ but no {split}/ ({folder})")
        for base in layout.values():
            for role in ("reverberant", "direct"):
                if not (base / role).is_dir():
                    raise DataError(f"data.root={root}: no folder {base / role}")
        return layout

    @functools.cached_property
    def roles(self) -> list[str]:
        """The role folders read: ``reverberant``, ``direct``, and ``early`` when every base has one."""
        has_early = all((base / "early").is_dir() for base in self.layout.values())
        if self.settings["target"] == "early" and not has_early:
            raise DataError(
                f"data.target=early: needs an early/ folder next to every direct/ under {self.settings['root']}"
            )
        return ["reverberant", "direct", "early"] if has_early else ["reverberant", "direct"]

    def fingerprint(self) -> list:
        ext = self.settings["extensions"]
        return [[tag, listing(base / role, ext)] for tag, base in self.layout.items() for role in self.roles]

    def roots(self) -> dict[str, str]:
        return {"data_root": self.settings["root"]}

    def prepare(self, folder: Path, progress: bool) -> dict:
        s, root = self.settings, Path(self.settings["root"])
        bad = BadFiles(s["on_bad_file"])
        per_split: dict[str, list[dict]] = {}
        for tag, base in self.layout.items():
            folders = {role: base / role for role in self.roles}
            names = match(folders, s["extensions"], bad, f"data.root={base}")
            if tag != "all":
                per_split[tag] = paired_rows(folders, root, names, self.sample_rate, bad, progress, tag)
                continue
            # split by name, then drop the bad ones: a bad file never moves another between splits
            split = split_names(names, s["valid_fraction"], s["test_fraction"], s["split_seed"], "file pairs")
            for part, part_names in split.items():
                per_split[part] = paired_rows(folders, root, part_names, self.sample_rate, bad, progress, part)
        return write_paired(folder, per_split, self.roles, bad, "file pairs")
