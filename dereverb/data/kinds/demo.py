"""``data=demo``: the shipped speech pack (:mod:`dereverb.data.speech_pack`) in simulated rooms.

The pack's fixed splits (by prompt); at 16 kHz its 8 kHz voices are left out. See
:class:`~dereverb.data.mixing.MixingKind` for the mixing.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import ClassVar

from dereverb.data import speech_pack
from dereverb.data.kinds import register_kind
from dereverb.data.manifests import SPLITS, BadFiles
from dereverb.data.mixing import MixingKind, Source
from dereverb.errors import DataError

__all__ = ["Demo"]


@register_kind
class Demo(MixingKind):
    """The shipped speech pack (or another pack folder, ``data.pack_dir``) in simulated rooms."""

    name = "demo"
    defaults: ClassVar[dict] = {**MixingKind.defaults, "pack_dir": None}
    folders = ("pack_dir",)
    read_sources = False

    @property
    def pack_dir(self) -> Path:
        """The pack folder: ``data.pack_dir``, or the one shipped with the package."""
        return Path(self.settings["pack_dir"] or speech_pack.PACK_DIR).resolve()

    @functools.cached_property
    def pack_sources(self) -> dict[str, list[Source]]:
        """The pack's utterances per split recorded at >= the data rate.

        Raises:
            DataError: a split without such utterances, or a bad pack manifest.
        """
        pack_dir, out = self.pack_dir, {}
        for split in SPLITS:
            entries = speech_pack.load_manifest(split=split, min_sample_rate=self.sample_rate, pack_dir=pack_dir)
            if not entries:
                raise DataError(
                    f"the speech pack {pack_dir} has no {split} utterances recorded at >= {self.sample_rate} Hz"
                )
            out[split] = [
                Source(
                    id=e.id,
                    path=e.path,
                    cell="$pack_root/" + e.path.relative_to(pack_dir).as_posix(),
                    speaker=e.speaker,
                    sample_rate=e.sample_rate,
                    duration_s=e.duration_s,
                )
                for e in entries
            ]
        return out

    def fingerprint(self) -> list:
        return [
            [split, [[x.id, x.sample_rate, round(x.duration_s, 3)] for x in xs]]
            for split, xs in self.pack_sources.items()
        ]

    def roots(self) -> dict[str, str]:
        return {"pack_root": str(self.pack_dir)}

    def sources(self, bad: BadFiles) -> dict[str, list[Source]]:
        return self.pack_sources
