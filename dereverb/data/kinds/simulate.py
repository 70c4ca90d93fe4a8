"""``data=simulate``: your dry speech (``data.clean_root``) in simulated rooms, or in your RIRs (``data.rir_root``).

Both folders are split by ``train/ valid/ test/`` subfolders when present, else by ``data.split_seed``
and the fractions; the speaker of a file is its top folder (as in LibriSpeech or VCTK). See
:class:`~dereverb.data.mixing.MixingKind` for the mixing.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import ClassVar

from dereverb.data.audio import audio_info
from dereverb.data.kinds import MISSING, register_kind
from dereverb.data.manifests import BadFiles
from dereverb.data.mixing import MixingKind, Source
from dereverb.data.sources import require_dir, split_files
from dereverb.errors import DataError

__all__ = ["Simulate"]


@register_kind
class Simulate(MixingKind):
    """Your own dry speech corpus in simulated rooms, or in your own RIRs."""

    name = "simulate"
    defaults: ClassVar[dict] = {
        **MixingKind.defaults,
        "clean_root": MISSING,
        "rir_root": None,
        "valid_fraction": 0.05,
        "test_fraction": 0.05,
        "split_seed": 0,
        "extensions": ["wav", "flac"],
    }
    folders = ("clean_root", "rir_root")

    @classmethod
    def check(cls, settings: dict) -> None:
        super().check(settings)
        settings["extensions"] = [str(e).lower().lstrip(".") for e in settings["extensions"]]

    @functools.cached_property
    def clean_files(self) -> dict[str, list[Path]]:
        """The dry files of each split."""
        root = require_dir(Path(self.settings["clean_root"]), "clean_root")
        return split_files(root, self.settings["extensions"], self.settings, f"clean files in {root}")

    @functools.cached_property
    def rir_files(self) -> dict[str, list[Path]] | None:
        """The RIR files of each split, or None without ``data.rir_root``."""
        if self.settings["rir_root"] is None:
            return None
        root = require_dir(Path(self.settings["rir_root"]), "rir_root")
        return split_files(root, ["wav"], self.settings, f"RIR files in {root}")

    def own_rirs(self) -> tuple[Path, dict[str, list[Path]]] | None:
        return None if self.rir_files is None else (Path(self.settings["rir_root"]), self.rir_files)

    def fingerprint(self) -> list:
        out = [["clean", _sizes(self.clean_files, Path(self.settings["clean_root"]))]]
        if self.rir_files is not None:
            out.append(["rirs", _sizes(self.rir_files, Path(self.settings["rir_root"]))])
        return out

    def roots(self) -> dict[str, str]:
        roots = {"data_root": self.settings["clean_root"], "rir_root": self.settings["rir_root"]}
        return {k: v for k, v in roots.items() if v is not None}

    def sources(self, bad: BadFiles) -> dict[str, list[Source]]:
        root = Path(self.settings["clean_root"])
        split_layout = (root / "train").is_dir()
        out = {}
        for split, paths in self.clean_files.items():
            out[split] = []
            for path in paths:
                rel = path.relative_to(root)
                try:
                    info = audio_info(path)
                    if info.sample_rate < self.sample_rate:
                        raise DataError(
                            f"{path}: recorded at {info.sample_rate} Hz, below the data rate {self.sample_rate} Hz"
                        )
                except DataError as err:
                    bad.found(rel.as_posix(), str(err))
                    continue
                parts = rel.parts[1:] if split_layout else rel.parts
                out[split].append(
                    Source(
                        id=rel.with_suffix("").as_posix().replace("/", "__"),
                        path=path,
                        cell="$data_root/" + rel.as_posix(),
                        speaker=parts[0] if len(parts) > 1 else "",  # the top folder, as in LibriSpeech/VCTK
                        sample_rate=info.sample_rate,
                        duration_s=info.duration_s,
                    )
                )
        return out


def _sizes(files: dict[str, list[Path]], root: Path) -> list:
    """The split files' paths relative to ``root`` and their sizes, for the content hash."""
    return [
        [split, [[p.relative_to(root).as_posix(), p.stat().st_size] for p in paths]] for split, paths in files.items()
    ]
