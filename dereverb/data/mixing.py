"""Dynamic mixing (the ``demo`` and ``simulate`` kinds): dry speech in simulated or measured rooms.

Training items are mixed afresh every time (:class:`~dereverb.data.items.MixingItem`: a random crop of a
training utterance convolved with a random RIR of the training bank); valid and test are reverberated
once at preparation, with RIR banks of other seeds (or other RIR files), and written as wav files.
:class:`MixingKind` holds what the two kinds share; each says where its dry utterances come from.
"""

from __future__ import annotations

import functools
import hashlib
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from dereverb.data.audio import read_audio, write_audio
from dereverb.data.items import MixingItem
from dereverb.data.kinds import DatasetKind, check_positive_int, check_target
from dereverb.data.manifests import SPLITS, BadFiles, split_stats, write_manifest
from dereverb.data.sources import progress_bar
from dereverb.errors import DataError

__all__ = ["MixingKind", "Source", "room_config", "simulator_fingerprint"]

_RIR_COLUMNS = ["rir", "t60_s", "t60_measured_s", "drr_db", "distance_m"]


@dataclass
class Source:
    """One dry utterance used by the mixing kinds.

    Attributes:
        id: the manifest ``ID``.
        path: the file.
        cell: its manifest cell, ``$<root>/<relative path>``.
        speaker: the speaker, or ``""``.
        sample_rate: the file's rate, Hz.
        duration_s: its duration, seconds.
    """

    id: str
    path: Path
    cell: str
    speaker: str
    sample_rate: int
    duration_s: float


def room_config(settings: dict):
    """The :class:`~dereverb.data.rooms.RoomConfig` of ``data.rooms``.

    Raises:
        DataError: an unknown field (``data.rooms: ...``) or a bad value (``RoomConfig.<field>=...``).
    """
    from dereverb.data import rooms  # pyroomacoustics: imported when rooms are needed

    try:
        return rooms.RoomConfig(**settings["rooms"])
    except TypeError as err:
        raise DataError(f"data.rooms: {' '.join(str(err).split())}") from None


@functools.lru_cache(maxsize=4)
def simulator_fingerprint(sample_rate: int, simulated: bool) -> str:
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


def _rir_meta(index: int, rir) -> dict:
    return {
        "rir": index,
        "t60_s": float(rir.t60_s),
        "t60_measured_s": float(rir.t60_measured_s),
        "drr_db": float(rir.drr_db),
        "distance_m": float(rir.distance_m) if math.isfinite(rir.distance_m) else None,  # unknown for measured RIRs
    }


class MixingKind(DatasetKind):
    """Dry utterances in rooms: the training manifest lists the dry sources (column ``clean``), mixed at
    load time; valid and test are reverberated once (columns ``reverberant``, ``direct``, ``early``).

    A subclass implements :meth:`sources` (and :meth:`own_rirs` to use RIR files instead of simulated
    rooms), plus :meth:`~dereverb.data.kinds.DatasetKind.fingerprint` and
    :meth:`~dereverb.data.kinds.DatasetKind.roots`.

    Attributes:
        read_sources: read every training source through while preparing (the user's corpus may hold
            bad files; the shipped pack is known to be good).
    """

    defaults: ClassVar[dict] = {"target": "early", "rooms": {}, "train_rirs": 400, "eval_rirs": 50, "seed": 0}
    read_sources: ClassVar[bool] = True

    @classmethod
    def check(cls, settings: dict) -> None:
        check_target(settings)
        for key in ("train_rirs", "eval_rirs"):
            check_positive_int(settings, key)
        if not isinstance(settings["rooms"], dict):
            raise DataError(f"data.rooms={settings['rooms']!r}: expected a mapping of RoomConfig fields")

    def content(self) -> dict:
        content = super().content()
        own = self.settings.get("rir_root") is not None
        if "rir_root" in self.settings:
            content["own_rirs"] = own
        if not own:
            content["rooms"] = room_config(
                self.settings
            ).to_dict()  # checked now; {} and the defaults spelled out are equal
        content["simulator"] = simulator_fingerprint(self.sample_rate, not own)
        return content

    def sources(self, bad: BadFiles) -> dict[str, list[Source]]:
        """The dry utterances of each split; unusable ones are recorded in ``bad`` (or raise)."""
        raise NotImplementedError

    def own_rirs(self) -> tuple[Path, dict[str, list[Path]]] | None:
        """The user's RIR folder and its files per split, or None for simulated rooms.

        A kind that reads RIR files names their folder in the setting ``rir_root`` (None: simulated rooms).
        """
        return None

    def item(self, split: str, folder: Path):
        if split != "train":
            return super().item(split, folder)
        segment = round(self.settings["segment_s"] * self.sample_rate)
        return MixingItem(folder / "rirs" / "train", self.sample_rate, segment, self.settings["target"]), ["clean"]

    def prepare(self, folder: Path, progress: bool) -> dict:
        bad = BadFiles(self.settings["on_bad_file"])
        sources = self.sources(bad)
        per_split = {"train": self._train_rows(sources["train"], bad, progress)}
        banks = self._banks(folder / "rirs", progress)  # after the checks
        for offset, split in enumerate(("valid", "test"), start=1):
            rng = np.random.default_rng([self.settings["seed"], offset])
            per_split[split] = self._mix(folder, split, sources[split], banks[split], rng, bad, progress)
        columns = ["ID", "duration_s", "speaker"]
        write_manifest(folder / "train.csv", per_split["train"], [*columns, "clean", "source_rate"])
        for split in ("valid", "test"):
            write_manifest(
                folder / f"{split}.csv", per_split[split], [*columns, "reverberant", "direct", "early", *_RIR_COLUMNS]
            )
        for split in SPLITS:
            if not per_split[split]:
                raise DataError(f"no usable utterances left for the {split} split")
        bad.report("clean files")
        return split_stats(per_split, bad)

    def _train_rows(self, sources: list[Source], bad: BadFiles, progress: bool) -> list[dict]:
        """The training manifest's rows: the dry sources (read through first when :attr:`read_sources`)."""
        rows = []
        for src in progress_bar(sources, progress and self.read_sources, "train (check)"):
            if self.read_sources:
                try:
                    read_audio(src.path)
                except DataError as err:
                    bad.found(src.id, str(err))
                    continue
            rows.append(
                {
                    "ID": src.id,
                    "duration_s": src.duration_s,
                    "clean": src.cell,
                    "speaker": src.speaker,
                    "source_rate": src.sample_rate,
                }
            )
        return rows

    def _banks(self, folder: Path, progress: bool) -> dict:
        """One RIR bank per split; different seeds (or different files), so no room is shared."""
        from dereverb.data import rooms

        s, banks = self.settings, {}
        own = self.own_rirs()
        if own is None:
            config = room_config(s)
            sizes = {"train": s["train_rirs"], "valid": s["eval_rirs"], "test": s["eval_rirs"]}
            for offset, split in enumerate(SPLITS):
                seed = s["seed"] * 1000 + offset
                banks[split] = rooms.RirBank.build(
                    folder / split, sizes[split], config, self.sample_rate, seed, progress
                )
            return banks
        rir_root, files = own  # the user's RIRs: copied per split into the prepared folder
        for split in SPLITS:
            (folder / split).mkdir(parents=True)
            for path in files[split]:
                shutil.copyfile(path, folder / split / "__".join(path.relative_to(rir_root).parts))
            banks[split] = rooms.load_rirs(folder / split, self.sample_rate)
        return banks

    def _mix(
        self, folder: Path, split: str, sources: list[Source], bank, rng, bad: BadFiles, progress: bool
    ) -> list[dict]:
        """Reverberate the utterances of a valid/test split once, each in a random room of its bank."""
        from dereverb.data import rooms

        for role in ("reverberant", "direct", "early"):
            (folder / split / role).mkdir(parents=True)
        rows = []
        for src in progress_bar(sources, progress, f"{split} (simulate)"):
            try:
                clean = read_audio(src.path, self.sample_rate, resample=True)
            except DataError as err:
                bad.found(src.id, str(err))
                continue
            index = int(rng.integers(len(bank)))
            rir = bank[index]
            reverberant, direct = rooms.reverberate(clean, rir, target="direct")
            early = rooms.reverberate(clean, rir, target="early")[1]
            row = {"ID": src.id, "duration_s": len(clean) / self.sample_rate, "speaker": src.speaker}
            for role, x in (("reverberant", reverberant), ("direct", direct), ("early", early)):
                write_audio(folder / split / role / f"{src.id}.wav", x, self.sample_rate)
                row[role] = f"$prep_root/{split}/{role}/{src.id}.wav"
            rows.append(row | _rir_meta(index, rir))
        return rows
