"""Reading and writing audio files with one-line errors.

:func:`read_audio` returns float32 mono samples at the rate the caller asks for, or raises a
:class:`~dereverb.errors.DataError` that names the file and says what is wrong (missing,
empty, not audio, no samples, NaN/Inf, several channels, wrong rate). :func:`check_samples`
streams through a file once and says where its first NaN/Inf sample is, without holding it in
memory. :func:`write_audio` writes atomically (through :func:`~dereverb.atomic.atomic_file`: a temporary file in
the same folder, then a rename), never replaces an existing file unless asked, and gives the file
the permissions the user's umask asks for. The datasets, the evaluation and the inference tools
all use them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from dereverb.atomic import atomic_file
from dereverb.errors import DataError, OutputExistsError, one_line

__all__ = [
    "AudioInfo",
    "audio_info",
    "check_samples",
    "read_audio",
    "resample_audio",
    "write_audio",
]


@dataclass(frozen=True)
class AudioInfo:
    """What the header of an audio file says.

    Attributes:
        sample_rate: samples per second.
        frames: samples per channel.
        channels: number of channels.
        subtype: soundfile subtype (``"PCM_16"``, ``"FLOAT"``, ...).
    """

    sample_rate: int
    frames: int
    channels: int
    subtype: str = ""

    @property
    def duration_s(self) -> float:
        """Duration in seconds."""
        return self.frames / self.sample_rate


def _check_file(path: Path) -> None:
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if not path.is_file():
        raise DataError(f"{path}: not a file")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: empty file (0 bytes)")


def audio_info(path: str | os.PathLike) -> AudioInfo:
    """Read the header of an audio file (rate, length, channels) without reading its samples.

    Args:
        path: an audio file soundfile can read (wav, flac, ogg, ...).

    Returns:
        AudioInfo: sample rate, frames and channels.

    Raises:
        DataError: the file is missing, empty or not a readable audio file.
    """
    path = Path(path)
    _check_file(path)
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, TypeError) as err:
        raise DataError(f"{path}: not a readable audio file ({one_line(err)})") from None
    return AudioInfo(int(info.samplerate), int(info.frames), int(info.channels), str(info.subtype))


def check_samples(path: str | os.PathLike, block_frames: int = 1 << 16) -> AudioInfo:
    """Read a whole audio file block by block and check that every sample can be used.

    Memory stays bounded by one block, whatever the file's duration, so a long file can be
    checked before any work is spent on it.

    Args:
        path: an audio file soundfile can read, any number of channels.
        block_frames: samples per channel read at a time.

    Returns:
        AudioInfo: what its header says.

    Raises:
        DataError: one line naming the file: missing, empty, not audio, no samples, a decoding
            error (and where), fewer samples than its header says, or a NaN/Inf sample (and
            the time of the first one).

    Example:
        >>> import tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "a.wav")
        >>> x = np.zeros(16000, np.float32); x[5040] = np.nan
        >>> sf.write(path, x, 8000, subtype="FLOAT")
        >>> check_samples(path)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        dereverb.errors.DataError: ...a.wav: contains NaN or Inf samples (the first at 0.63 s, sample 5040)
    """
    path = Path(path)
    info = audio_info(path)
    if info.frames == 0:
        raise DataError(f"{path}: contains no samples")
    done = 0
    try:
        with sf.SoundFile(str(path)) as src:
            while done < info.frames:
                block = src.read(min(block_frames, info.frames - done), dtype="float32", always_2d=True)
                if block.shape[0] == 0:
                    break
                bad = ~np.isfinite(block).all(axis=1)
                if bad.any():
                    first = done + int(np.argmax(bad))
                    raise DataError(
                        f"{path}: contains NaN or Inf samples (the first at {first / info.sample_rate:.2f} s, "
                        f"sample {first})"
                    )
                done += block.shape[0]
    except (sf.LibsndfileError, RuntimeError) as err:
        raise DataError(f"{path}: unreadable at {done / info.sample_rate:.2f} s ({one_line(err)})") from None
    if done != info.frames:
        raise DataError(f"{path}: truncated file (its header says {info.frames} samples, it holds {done})")
    return info


def resample_audio(x: np.ndarray, orig_rate: int, new_rate: int) -> np.ndarray:
    """Resample a float32 signal with :func:`torchaudio.functional.resample` (windowed sinc).

    Args:
        x: float32 ndarray [T].
        orig_rate: its sample rate.
        new_rate: the rate wanted.

    Returns:
        np.ndarray: float32 [round(T * new_rate / orig_rate)] (``x`` itself when the rates match).

    Example:
        >>> resample_audio(np.zeros(16000, np.float32), 16000, 8000).shape
        (8000,)
    """
    if orig_rate == new_rate:
        return x
    import torchaudio.functional as F

    y = F.resample(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), orig_rate, new_rate)
    return y.numpy()


def read_audio(
    path: str | os.PathLike,
    sample_rate: int | None = None,
    resample: bool = False,
) -> np.ndarray:
    """Read a mono audio file as float32 samples, checking it on the way.

    Args:
        path: an audio file soundfile can read (wav, flac, ogg, ...), mono.
        sample_rate: the rate the caller needs; ``None`` keeps the file's own rate (ask
            :func:`audio_info` for it).
        resample: when the file's rate differs from ``sample_rate``, resample it (``True``) or
            raise a :class:`DataError` (``False``, the default).

    Returns:
        np.ndarray: float32 [T] in [-1, 1] for integer formats (floats as stored).

    Raises:
        DataError: one line naming the file: missing, empty, not audio, no samples, NaN/Inf
            samples, more than one channel, or a wrong rate with resampling not allowed.

    Example:
        >>> import tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "a.wav")
        >>> write_audio(path, np.full(16000, 0.25, np.float32), 16000)
        >>> read_audio(path, 8000, resample=True).shape
        (8000,)
        >>> read_audio(path, 8000)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        dereverb.errors.DataError: ...a.wav: sample rate 16000 Hz, expected 8000 Hz (resampling not allowed)
    """
    path = Path(path)
    _check_file(path)
    try:
        x, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as err:
        raise DataError(f"{path}: not a readable audio file ({one_line(err)})") from None
    if x.shape[1] != 1:
        raise DataError(f"{path}: {x.shape[1]} channels; only mono audio is supported (mix down or pick a channel)")
    if x.shape[0] == 0:
        raise DataError(f"{path}: contains no samples")
    x = np.ascontiguousarray(x[:, 0])
    if not np.isfinite(x).all():
        raise DataError(f"{path}: contains NaN or Inf samples")
    if sample_rate is not None and rate != sample_rate:
        if not resample:
            raise DataError(f"{path}: sample rate {rate} Hz, expected {sample_rate} Hz (resampling not allowed)")
        x = resample_audio(x, rate, sample_rate)
    return x


def write_audio(
    path: str | os.PathLike,
    x: np.ndarray | torch.Tensor,
    sample_rate: int,
    overwrite: bool = False,
    subtype: str | None = None,
) -> None:
    """Write a mono signal atomically: a temporary file in the same folder, then a rename.

    A reader never sees a half-written file, and an interrupted write leaves any previous file
    in place. The format follows the extension (``.wav``, ``.flac``, ...).

    Args:
        path: the file to write; its folder must exist.
        x: float ndarray or Tensor [T] (or [1, T]).
        sample_rate: samples per second.
        overwrite: replace an existing file; by default an existing file is an error.
        subtype: soundfile subtype; default ``"FLOAT"`` for WAV (exact, never clips) and the
            format's default otherwise. Integer subtypes refuse samples outside [-1, 1].

    Raises:
        DataError: the file exists (and ``overwrite`` is False), the folder is missing, the
            signal is not 1-D, empty or not finite, or would clip in an integer format.
    """
    path = Path(path)
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    x = np.asarray(x)
    if x.ndim == 2 and x.shape[0] == 1:
        x = x[0]
    if x.ndim != 1:
        raise DataError(f"{path}: expected a mono signal [T] (or [1, T]), got shape {tuple(x.shape)}")
    if x.size == 0:
        raise DataError(f"{path}: refusing to write an empty signal")
    if not np.isfinite(x).all():
        raise DataError(f"{path}: refusing to write NaN or Inf samples")
    if not path.parent.is_dir():
        raise DataError(f"{path}: folder {path.parent} does not exist")
    if os.path.lexists(path) and not overwrite:
        raise OutputExistsError(path)
    fmt = path.suffix.lstrip(".").upper()
    if fmt not in sf.available_formats():
        raise DataError(f"{path}: unknown audio format {path.suffix!r}")
    if subtype is None:
        subtype = "FLOAT" if fmt == "WAV" else sf.default_subtype(fmt)
    if subtype.startswith("PCM") and np.abs(x).max() > 1.0:
        raise DataError(f"{path}: samples outside [-1, 1] would clip in {subtype}; scale them or write FLOAT")
    with atomic_file(path, overwrite) as tmp:
        sf.write(tmp, x.astype(np.float32, copy=False), sample_rate, subtype=subtype, format=fmt)
