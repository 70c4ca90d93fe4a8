"""The dynamic items of the datasets: what turns a manifest row into a ``reverberant`` / ``target`` pair.

:class:`PairedItem` reads a pair of files (the paired kinds, and valid/test of every kind);
:class:`MixingItem` makes a pair afresh from a dry utterance and a random room of a bank (training of
the mixing kinds). Their randomness is drawn from torch's generator, so ``torch.manual_seed`` and the
DataLoader's worker seeding govern it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from dereverb.data.audio import read_audio
from dereverb.errors import DataError

__all__ = ["ITEM_KEYS", "MixingItem", "PairedItem", "random_start", "torch_rng"]

ITEM_KEYS = ("id", "reverberant", "target")
"""The keys of every dataset item."""


def torch_rng() -> np.random.Generator:
    """A NumPy generator seeded from torch's, so that ``torch.manual_seed`` and DataLoader worker seeding apply.

    Example:
        >>> _ = torch.manual_seed(0); a = torch_rng().integers(1000)
        >>> _ = torch.manual_seed(0); b = torch_rng().integers(1000)
        >>> bool(a == b)
        True
    """
    return np.random.default_rng(int(torch.randint(0, 2**62, ()).item()))


def random_start(length: int, segment: int, rng: np.random.Generator) -> int:
    """A uniform crop start for ``segment`` samples of ``length``; 0 when the signal is not longer.

    Example:
        >>> random_start(100, 100, np.random.default_rng(0)), 0 <= random_start(100, 10, np.random.default_rng(0)) <= 90
        (0, True)
    """
    return int(rng.integers(0, length - segment + 1)) if length > segment else 0


def _tensor(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))


class PairedItem:
    """Read a ``reverberant`` / target pair (resampled to the data rate), optionally cropped at random.

    Args:
        sample_rate: the data rate; files above it are resampled.
        segment: crop both to this many samples at one random position (longer pairs only); None: whole.

    Raises:
        DataError: (when called) an unreadable file, or members of different lengths.
    """

    def __init__(self, sample_rate: int, segment: int | None):
        self.sample_rate, self.segment = sample_rate, segment

    def __call__(self, reverberant_path: str, target_path: str) -> Iterator[torch.Tensor]:
        reverberant = read_audio(reverberant_path, self.sample_rate, resample=True)
        target = read_audio(target_path, self.sample_rate, resample=True)
        if len(reverberant) != len(target):
            raise DataError(f"{reverberant_path}: {len(reverberant)} samples, but {target_path} has {len(target)}")
        if self.segment is not None and len(reverberant) > self.segment:
            start = random_start(len(reverberant), self.segment, torch_rng())
            reverberant, target = reverberant[start : start + self.segment], target[start : start + self.segment]
        yield _tensor(reverberant)
        yield _tensor(target)


class MixingItem:
    """Dynamic mixing: a random crop of a dry utterance in a random room of a bank, and its target.

    An utterance shorter than ``segment`` is placed at a random position in silence first, so every item
    has exactly ``segment`` samples, its reverberant tail included; the crop is convolved together with
    up to one RIR length of the speech before it, so the reverberation entering the crop is present.

    Args:
        bank_folder: an RIR bank or a folder of RIR files (:func:`~dereverb.data.rooms.load_rirs`),
            opened on first use in each worker.
        sample_rate: the data rate.
        segment: samples per item.
        target: ``direct`` or ``early`` (:func:`~dereverb.data.rooms.reverberate`).
    """

    def __init__(self, bank_folder: Path, sample_rate: int, segment: int, target: str):
        self.bank_folder, self.sample_rate, self.segment, self.target = bank_folder, sample_rate, segment, target
        self._bank = None

    @property
    def bank(self):
        """The RIRs (``len`` and ``[]``), loaded on first use."""
        if self._bank is None:
            from dereverb.data import rooms  # pyroomacoustics: imported when items are read, not before

            self._bank = rooms.load_rirs(self.bank_folder, self.sample_rate)
        return self._bank

    def __getstate__(self):
        return {**self.__dict__, "_bank": None}  # each worker loads its own

    def __call__(self, clean_path: str) -> Iterator[torch.Tensor]:
        from dereverb.data import rooms

        rng = torch_rng()
        clean = read_audio(clean_path, self.sample_rate, resample=True)
        rir = self.bank[int(rng.integers(len(self.bank)))]
        if len(clean) < self.segment:  # a short utterance at a random place in silence: its tail fills the rest
            left = int(rng.integers(0, self.segment - len(clean) + 1))
            clean = np.pad(clean, (left, self.segment - len(clean) - left))
        start = random_start(len(clean), self.segment, rng)
        context = min(start, len(rir.rir))  # reverberation carried in from before the crop
        window = clean[start - context : start + self.segment]
        reverberant, target = rooms.reverberate(window, rir, target=self.target)
        yield _tensor(reverberant[context:])
        yield _tensor(target[context:])
