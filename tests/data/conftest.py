"""Fixtures of the data tests: tiny generated audio, paired folders, a fake speech pack and a fake WHAMR! tree."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import soundfile as sf
import torch

PACK_COLUMNS = ["id", "path", "speaker", "sex", "language", "kind", "source", "prompt", "sample_rate"]
PACK_COLUMNS += ["num_samples", "duration_s", "split", "sha256", "origin"]


class Fake:
    """Makers of tiny test data and small readers (the ``fake`` fixture)."""

    RATE = 8000
    TINY_ROOMS: ClassVar[dict] = {"t60_range": [0.2, 0.3], "distance_range": [0.5, 1.5]}
    WHAMR_NAMES: ClassVar[list] = ["011a0101_0.061105_401c020r_-0.061105.wav", "01zo030l_1.9869_40po031b_-1.9869.wav"]
    WHAMR_FOLDERS: ClassVar[dict] = {
        "s1_reverb": 0.1,
        "s1_anechoic": 0.2,
        "mix_single_reverb": 0.3,
        "s2_reverb": 0.4,
        "noise": 0.5,
    }

    @staticmethod
    def noise(n: int, seed: int, scale: float = 0.1) -> np.ndarray:
        return (scale * np.random.default_rng(seed).standard_normal(n)).astype(np.float32)

    @staticmethod
    def write(path: Path, x: np.ndarray, rate: int = RATE, subtype: str = "FLOAT") -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, x, rate, subtype=subtype)

    @classmethod
    def pairs(cls, root: Path, n: int = 10, early: bool = False, seed: int = 0) -> list[str]:
        """root/reverberant/NAME and root/direct/NAME with reverberant = 0.5 * direct (early = 0.25 * direct);
        lengths 0.3 s + 10 ms * i."""
        names = []
        for i in range(n):
            name = f"utt{i:02d}.wav"
            direct = cls.noise(2400 + 80 * i, seed + i)
            cls.write(root / "direct" / name, direct)
            cls.write(root / "reverberant" / name, 0.5 * direct)
            if early:
                cls.write(root / "early" / name, 0.25 * direct)
            names.append(name)
        return names

    @staticmethod
    def folder_cfg(root: Path, save: Path, **kw) -> dict:
        return {"kind": "folder", "root": str(root), "save_folder": str(save), "segment_s": 0.2, **kw}

    @staticmethod
    def rows(path: Path) -> list[dict]:
        with open(path, newline="") as f:
            return list(csv.DictReader(f))

    @staticmethod
    def mtimes(folder: Path) -> dict[str, int]:
        return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in sorted(folder.rglob("*")) if p.is_file()}

    @classmethod
    def pack(cls, folder: Path) -> Path:
        """A fake speech pack: per split, two 16 kHz voices and one 8 kHz voice."""
        rows = []
        for split, n in (("train", 3), ("valid", 2), ("test", 2)):
            for voice, rate in (("anna", 16000), ("bert", 16000), ("tel", 8000)):
                for k in range(n):
                    uid = f"{voice}_{split}{k}"
                    x = cls.noise(int(rate * (0.6 + 0.1 * k)), hash(uid) % 1000, 0.3)
                    cls.write(folder / voice / f"{uid}.flac", x, rate, subtype="PCM_16")
                    rows.append([uid, f"{voice}/{uid}.flac", voice, "female", "en-US", "real", "x=1", f"p{k}", rate])
                    rows[-1] += [len(x), len(x) / rate, split, "0" * 64, "x"]
        with open(folder / "manifest.csv", "w", newline="") as f:
            csv.writer(f).writerows([PACK_COLUMNS, *rows])
        return folder

    @classmethod
    def demo_cfg(cls, tmp_path: Path, **kw) -> dict:
        cfg = {"kind": "demo", "save_folder": str(tmp_path / "save"), "pack_dir": str(cls.pack(tmp_path / "pack"))}
        return cfg | {"rooms": cls.TINY_ROOMS, "train_rirs": 3, "eval_rirs": 2, "segment_s": 0.5} | kw

    @classmethod
    def whamr(cls, root: Path, rates=("wav8k",), versions=("min", "max")) -> None:
        """A fake WHAMR! tree: every file of folder F holds the constant WHAMR_FOLDERS[F] (+1 for max)."""
        for rate_dir in rates:
            rate = 8000 if rate_dir == "wav8k" else 16000
            for version in versions:
                for k, split in enumerate(("tr", "cv", "tt")):
                    for folder, value in cls.WHAMR_FOLDERS.items():
                        for j, name in enumerate(cls.WHAMR_NAMES[: 2 if split == "tr" else 1]):
                            n = rate // 10 * (3 + j + k)
                            x = np.full(n, value + (version == "max"), np.float32)
                            cls.write(root / rate_dir / version / split / folder / name, x, rate)

    @staticmethod
    def decaying_noise(t60: float, sample_rate: int, seconds: float, seed: int = 0) -> np.ndarray:
        """Gaussian noise decaying by 60 dB in ``t60`` seconds: an idealised RIR."""
        t = np.arange(int(seconds * sample_rate)) / sample_rate
        return np.random.default_rng(seed).standard_normal(t.size) * 10 ** (-3 * t / t60)

    @staticmethod
    def measured_rirs(folder: Path, arrays, sample_rate: int = RATE) -> list:
        """``arrays`` written as ``folder/<i>.wav`` and read back by :func:`~dereverb.data.rooms.load_rir_folder`."""
        from dereverb.data.rooms import load_rir_folder

        for i, a in enumerate(arrays):
            sf.write(folder / f"{i}.wav", a, sample_rate, subtype="FLOAT")
        return load_rir_folder(folder, sample_rate)

    @staticmethod
    def lag_of_peak(x: torch.Tensor, y: torch.Tensor, max_lag: int = 200) -> int:
        """The lag of the cross-correlation peak of ``x`` against ``y`` (0 when aligned)."""
        x, y = x.double().numpy(), y.double().numpy()
        lags = range(-max_lag, max_lag + 1)
        corr = [np.dot(x[max(0, k) : len(x) + min(0, k)], y[max(0, -k) : len(y) - max(0, k)]) for k in lags]
        return list(lags)[int(np.argmax(corr))]


@pytest.fixture
def fake() -> type[Fake]:
    """The makers of tiny test data (:class:`Fake`)."""
    return Fake
