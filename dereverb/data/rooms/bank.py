"""Banks of RIRs: simulated ones precomputed into a folder (:class:`RirBank`), or the user's own RIR files.

Simulation is too slow to run per training example (seconds per RIR for T60 around 1 s), so RIRs are
precomputed into an :class:`RirBank` folder at preparation time and applied with FFT convolution by
:func:`~dereverb.data.rooms.reverberate` during training. :func:`load_rir_folder` reads measured RIRs
instead; :func:`load_rirs` opens either.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
from pathlib import Path

import numpy as np
import pyroomacoustics as pra
import soundfile as sf
from tqdm import tqdm

from dereverb.atomic import atomic_folder, write_text
from dereverb.data.rooms.calibration import measure_t60
from dereverb.data.rooms.config import RoomConfig
from dereverb.data.rooms.simulation import Rir, drr_db, simulate_rir
from dereverb.errors import DataError

__all__ = ["BANK_VERSION", "RirBank", "load_rir_folder", "load_rirs"]

log = logging.getLogger(__name__)

BANK_VERSION = 1
"""The ``version`` of ``bank.json``; a bank of another version is refused."""

_CSV_FIELDS = (
    "id",
    "file",
    "sample_rate",
    "direct_index",
    "t60_s",
    "t60_measured_s",
    "distance_m",
    "drr_db",
    "room_x_m",
    "room_y_m",
    "room_z_m",
    "seed",
)


class RirBank:
    """A folder of precomputed RIRs: ``rirs/<id>.wav`` (float32), ``rirs.csv`` and ``bank.json``.

    ``rirs.csv`` has one row per RIR with the columns ``id, file, sample_rate, direct_index, t60_s,
    t60_measured_s, distance_m, drr_db, room_x_m, room_y_m, room_z_m, seed``; RIR ``id`` is
    ``simulate_rir(config, sample_rate, np.random.default_rng((seed, id)))``. ``bank.json`` records the
    settings (config, sample rate, seed, size) so that a bank is never reused for other settings.

    Example:
        >>> import tempfile
        >>> config = RoomConfig(t60_range=(0.2, 0.3))
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     bank = RirBank.build(f"{tmp}/bank", 2, config, sample_rate=8000, seed=0, progress=False)
        ...     (len(bank), bank[0].sample_rate, len(RirBank.load(f"{tmp}/bank")))
        (2, 8000, 2)
    """

    def __init__(self, folder: Path, rows: list[dict], settings: dict) -> None:
        self.folder = folder
        self.rows = rows
        self.settings = settings

    @staticmethod
    def _settings(n: int, config: RoomConfig, sample_rate: int, seed: int) -> dict:
        return {
            "version": BANK_VERSION,
            "n": int(n),
            "sample_rate": int(sample_rate),
            "seed": int(seed),
            "config": config.to_dict(),
            "pyroomacoustics": pra.__version__,
        }

    @classmethod
    def build(
        cls,
        folder: str | os.PathLike,
        n: int,
        config: RoomConfig,
        sample_rate: int,
        seed: int,
        progress: bool = True,
    ) -> RirBank:
        """Simulate ``n`` RIRs into ``folder``, or return the bank already there if built the same way.

        The bank is written through :func:`~dereverb.atomic.atomic_folder`, so an interrupted build
        leaves nothing behind and a finished folder is always complete; a bank that another process
        finished first is kept (if built the same way).

        Args:
            folder: the bank folder (created).
            n: number of RIRs.
            config: room settings.
            sample_rate: Hz.
            seed: seed of the bank (RIR i uses ``np.random.default_rng((seed, i))``).
            progress: show a tqdm progress bar.

        Returns:
            The bank.

        Raises:
            DataError: if ``folder`` holds a bank built with other settings (or something else).
        """
        if not isinstance(n, (int, np.integer)) or n < 1:
            raise DataError(f"n={n!r}: expected a positive number of RIRs")
        folder = Path(folder)
        settings = cls._settings(n, config, sample_rate, seed)
        if folder.exists():
            return cls._existing(folder, settings)

        def keep_the_same(existing: Path) -> bool:
            cls._existing(existing, settings)  # raises if built another way
            return False

        with atomic_folder(folder, on_exists=keep_the_same) as tmp:
            (tmp / "rirs").mkdir()
            rows = []
            for i in tqdm(range(n), desc=f"RIR bank {folder.name}", disable=not progress):
                rir = simulate_rir(config, sample_rate, np.random.default_rng((seed, i)))
                file = f"rirs/{i:06d}.wav"
                sf.write(tmp / file, rir.rir, sample_rate, subtype="FLOAT")
                rows.append(_row(i, file, rir, seed))
            text = io.StringIO(newline="")
            writer = csv.DictWriter(text, fieldnames=_CSV_FIELDS)
            writer.writeheader()
            writer.writerows(rows)
            write_text(tmp / "rirs.csv", text.getvalue())
            write_text(tmp / "bank.json", json.dumps(settings, indent=2) + "\n")
        log.info("RIR bank %s: %d RIRs at %d Hz", folder, n, sample_rate)
        return cls.load(folder)

    @classmethod
    def _existing(cls, folder: Path, settings: dict) -> RirBank:
        bank = cls.load(folder)
        if bank.settings != settings:
            changed = sorted(k for k in settings if bank.settings.get(k) != settings[k])
            raise DataError(
                f"{folder}: RIR bank built with other settings ({', '.join(changed)} differ); "
                "remove it or choose another folder"
            )
        return bank

    @classmethod
    def load(cls, folder: str | os.PathLike) -> RirBank:
        """Open a bank built by :meth:`build`, checking its files.

        Raises:
            DataError: if the folder, ``bank.json``, ``rirs.csv`` or a WAV file is missing or corrupt.
        """
        folder = Path(folder)
        if not folder.is_dir():
            raise DataError(f"{folder}: RIR bank folder not found")
        try:
            settings = json.loads((folder / "bank.json").read_text())
            with open(folder / "rirs.csv", newline="") as f:
                rows = list(csv.DictReader(f))
        except (OSError, ValueError) as e:
            raise DataError(f"{folder}: not a readable RIR bank ({type(e).__name__}: {e})") from None
        if not isinstance(settings, dict) or settings.get("version") != BANK_VERSION:
            raise DataError(f"{folder}/bank.json: not a version {BANK_VERSION} RIR bank")
        if len(rows) != settings.get("n"):
            raise DataError(f"{folder}/rirs.csv: {len(rows)} rows, bank.json says {settings.get('n')}")
        for row in rows:
            if set(row) != set(_CSV_FIELDS) or None in row.values():
                raise DataError(f"{folder}/rirs.csv: row {row.get('id')!r} has missing or unknown columns")
            try:
                info = sf.info(folder / row["file"])
            except (sf.LibsndfileError, RuntimeError) as e:
                raise DataError(f"{folder / row['file']}: unreadable RIR ({e})") from None
            if info.samplerate != settings["sample_rate"] or info.channels != 1:
                raise DataError(
                    f"{folder / row['file']}: {info.samplerate} Hz, {info.channels} channels; "
                    f"expected mono at {settings['sample_rate']} Hz"
                )
        return cls(folder, rows, settings)

    @property
    def sample_rate(self) -> int:
        return int(self.settings["sample_rate"])

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> Rir:
        row = self.rows[i]  # IndexError past the end, negative indices as for lists
        path = self.folder / row["file"]
        try:
            h, fs = sf.read(path, dtype="float32")
            direct = int(row["direct_index"])
            if fs != self.sample_rate or h.ndim != 1 or not 0 <= direct < h.size:
                raise ValueError("sample rate, channels or length differ from rirs.csv")
            return Rir(
                rir=h,
                sample_rate=fs,
                direct_index=direct,
                t60_s=float(row["t60_s"]),
                t60_measured_s=float(row["t60_measured_s"]),
                distance_m=float(row["distance_m"]),
                drr_db=float(row["drr_db"]),
                room_dim=(float(row["room_x_m"]), float(row["room_y_m"]), float(row["room_z_m"])),
            )
        except (sf.LibsndfileError, RuntimeError, ValueError) as e:
            raise DataError(f"{path}: corrupt RIR ({e})") from None


def _row(i: int, file: str, rir: Rir, seed: int) -> dict:
    return {
        "id": i,
        "file": file,
        "sample_rate": rir.sample_rate,
        "direct_index": rir.direct_index,
        "t60_s": repr(rir.t60_s),
        "t60_measured_s": repr(rir.t60_measured_s),
        "distance_m": repr(rir.distance_m),
        "drr_db": repr(rir.drr_db),
        "room_x_m": repr(rir.room_dim[0]),
        "room_y_m": repr(rir.room_dim[1]),
        "room_z_m": repr(rir.room_dim[2]),
        "seed": seed,
    }


def load_rir_folder(folder: str | os.PathLike, sample_rate: int) -> list[Rir]:
    """Measured (or other) RIRs from a folder of WAV files, for use in place of simulated ones.

    Each file (first channel) is resampled to ``sample_rate`` if needed (``torchaudio.functional.resample``),
    its direct path is taken as the largest magnitude, and it is scaled so that this peak is +1.
    The T60 is measured (:func:`~dereverb.data.rooms.measure_t60`); distance and room size are unknown (NaN).

    Args:
        folder: a folder with ``*.wav`` files (searched recursively, in sorted order).
        sample_rate: Hz.

    Returns:
        The RIRs, one per file.

    Raises:
        DataError: for a missing folder, a folder without WAV files, or an unreadable or silent file.
    """
    import torch
    import torchaudio.functional

    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: RIR folder not found")
    files = sorted(folder.rglob("*.wav"))
    if not files:
        raise DataError(f"{folder}: no .wav files in the RIR folder")
    rirs = []
    for path in files:
        try:
            h, fs = sf.read(path, dtype="float32", always_2d=True)
        except (sf.LibsndfileError, RuntimeError) as e:
            raise DataError(f"{path}: unreadable RIR ({e})") from None
        h = h[:, 0]
        if fs != sample_rate:
            h = torchaudio.functional.resample(torch.from_numpy(h), fs, sample_rate).numpy()
        direct = int(np.argmax(np.abs(h)))
        if h[direct] == 0:
            raise DataError(f"{path}: silent RIR")
        h = (h / h[direct]).astype(np.float32)
        try:
            t60 = measure_t60(h, sample_rate)
        except DataError as e:
            raise DataError(f"{path}: {e}") from None
        nan = math.nan
        rirs.append(Rir(h, sample_rate, direct, t60, t60, nan, drr_db(h, direct, sample_rate), (nan, nan, nan)))
    return rirs


def load_rirs(folder: str | os.PathLike, sample_rate: int) -> RirBank | list[Rir]:
    """A simulated bank (a folder with ``bank.json``) or a folder of the user's RIR files (``len`` and ``[]`` both).

    Raises:
        DataError: as :meth:`RirBank.load` or :func:`load_rir_folder`.
    """
    if (Path(folder) / "bank.json").is_file():
        return RirBank.load(folder)
    return load_rir_folder(folder, sample_rate)
