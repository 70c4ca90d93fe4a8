"""Audio files in and out of inference: block-wise reading, the output format, the atomic writer.

:func:`transform_file` reads an input file block by block (every block checked for NaN/Inf), hands
the blocks to a processing function, and writes what it returns to a temporary file that becomes
the output only when everything succeeded (:func:`dereverb.atomic.atomic_file`): with the
permissions of the user's umask, never replacing an existing file unless asked, and leaving
nothing behind on any error. The output keeps the input's subtype (e.g. PCM_16) when its format
can be written with it, else the format's default (:func:`output_format`); samples beyond full
scale in an integer subtype are clipped, counted and reported in a warning.
"""

from __future__ import annotations

import contextlib
import errno
import io
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import soundfile as sf

from dereverb.atomic import atomic_file
from dereverb.data.audio import AudioInfo, audio_info
from dereverb.errors import DataError

__all__ = ["AUDIO_SUFFIXES", "BlockWriter", "block_reader", "output_format", "transform_file"]

log = logging.getLogger(__name__)

#: the suffixes of the files a folder given as input contributes
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".aiff", ".aif")

#: ``process(read, write, frames, sample_rate)``: enhance a file of ``frames`` samples at ``sample_rate``
Process = Callable[[Callable[[int, int], np.ndarray], Callable[[np.ndarray], None], int, int], None]


def block_reader(src: sf.SoundFile, path: Path, mix_down: bool) -> Callable[[int, int], np.ndarray]:
    """``read(start, stop) -> [C, n]`` on an open file, checking every block for NaN/Inf.

    Raises (from ``read``):
        DataError: the file cannot be decoded there, is shorter than its header says, or holds
            a NaN or Inf sample (the message gives the time and sample of the first one).
    """

    def read(start: int, stop: int) -> np.ndarray:
        try:
            src.seek(start)
            block = src.read(stop - start, dtype="float32", always_2d=True)
        except (sf.LibsndfileError, RuntimeError) as err:
            reason = " ".join(str(err).split())
            raise DataError(f"{path}: unreadable near {start / src.samplerate:.2f} s ({reason})") from None
        if block.shape[0] != stop - start:
            raise DataError(f"{path}: truncated file (expected {stop} samples, read {start + block.shape[0]})")
        bad = ~np.isfinite(block).all(axis=1)
        if bad.any():
            first = start + int(np.argmax(bad))
            raise DataError(
                f"{path}: contains NaN or Inf samples (the first at {first / src.samplerate:.2f} s, sample {first})"
            )
        block = block.T
        return block.mean(0, keepdims=True) if mix_down else np.ascontiguousarray(block)

    return read


class BlockWriter:
    """``write(block [C, n])`` to an open file; in an integer subtype, samples beyond full scale are
    clipped and counted in :attr:`clipped`."""

    def __init__(self, dst: sf.SoundFile, subtype: str):
        self.dst = dst
        self.integer = not (subtype.startswith("FLOAT") or subtype.startswith("DOUBLE") or subtype == "VORBIS")
        self.clipped = 0

    def __call__(self, block: np.ndarray) -> None:
        if self.integer:
            over = np.abs(block) > 1.0
            if over.any():
                self.clipped += int(over.sum())
                block = np.clip(block, -1.0, 1.0)
        self.dst.write(block.T)


def output_format(
    out: str | os.PathLike, info: AudioInfo, subtype: str | None = None, mix_down: bool = False
) -> tuple[str, str]:
    """The ``(format, subtype)`` an enhanced file of input ``info`` is written with at ``out``.

    The format follows the extension; the subtype is ``subtype`` when given, else the input's
    when the format can be written with it, else the format's default. The choice is tried on an
    in-memory file with the output's channels and rate, so what cannot be written (an MP3
    encoding in a WAV file, 9 channels in FLAC, a rate FLAC does not take) is refused here,
    before any work.

    Raises:
        DataError: an unknown extension, or a subtype, channel count or rate the format cannot
            be written with (one line naming ``out``).

    Example:
        >>> output_format("out.flac", AudioInfo(8000, 10, 2, "PCM_24"))
        ('FLAC', 'PCM_24')
        >>> output_format("out.wav", AudioInfo(8000, 10, 1, "MPEG_LAYER_III"))  # not in WAV: WAV's default
        ('WAV', 'PCM_16')
    """
    out = Path(out)
    fmt = out.suffix.lstrip(".").upper()
    if fmt not in sf.available_formats():
        raise DataError(f"{out}: unknown audio format {out.suffix!r} (use .wav or .flac)")
    channels = 1 if mix_down else info.channels
    if subtype is not None:
        subtype = subtype.upper()
        if not sf.check_format(fmt, subtype):
            raise DataError(f"subtype {subtype!r} is not available for {fmt} files (see soundfile.available_subtypes)")
        candidates = [subtype]
    else:
        candidates = [st for st in (info.subtype, sf.default_subtype(fmt)) if st and sf.check_format(fmt, st)]
        if not candidates:
            raise DataError(f"{out}: {fmt} files have no default subtype (pass one, e.g. PCM_16)")
    reason = ""
    for candidate in candidates:
        reason = _cannot_write(fmt, candidate, channels, info.sample_rate)
        if not reason:
            return fmt, candidate
    raise DataError(
        f"{out}: cannot write {channels} channel(s) at {info.sample_rate} Hz as {fmt} {candidates[-1]} ({reason})"
    )


def _cannot_write(fmt: str, subtype: str, channels: int, rate: int) -> str:
    """Why libsndfile refuses to open such a file for writing ("" when it can)."""
    try:
        with sf.SoundFile(io.BytesIO(), "w", rate, channels, subtype=subtype, format=fmt):
            pass
    except (sf.LibsndfileError, RuntimeError, ValueError, TypeError) as err:
        return " ".join(str(getattr(err, "error_string", err)).split()) or type(err).__name__
    return ""


@contextlib.contextmanager
def _output_file(out: Path, tmp: str, rate: int, channels: int, subtype: str, fmt: str) -> Iterator[sf.SoundFile]:
    """``tmp`` opened for writing; a failed open, write or close is an :class:`OSError` naming ``out``.

    libsndfile reports a failed write as "System error."; the reason (no space left, a file size
    limit) is asked of the file system by appending a byte to ``tmp``, which is discarded anyway.
    """
    try:
        with sf.SoundFile(tmp, "w", rate, channels, subtype=subtype, format=fmt) as dst:
            yield dst
    except sf.LibsndfileError as err:  # the reader turns its own errors into DataError
        code, reason = errno.EIO, " ".join(str(getattr(err, "error_string", err)).split())
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_APPEND)
            try:
                os.write(fd, b"\0")
            finally:
                os.close(fd)
        except OSError as probe:
            code, reason = probe.errno or code, probe.strerror or reason
        raise OSError(code, f"cannot write the output ({reason}); nothing was written", str(out)) from None


def transform_file(
    process: Process,
    path: str | os.PathLike,
    output_path: str | os.PathLike | None = None,
    overwrite: bool = False,
    mix_down: bool = False,
    subtype: str | None = None,
) -> np.ndarray | Path:
    """Run ``process`` on the audio file ``path``; write its output to ``output_path``, or return it.

    Args:
        process: ``process(read, write, frames, sample_rate)`` reads ``[C, n]`` blocks with
            ``read(start, stop)`` and passes its output to ``write`` in consecutive blocks that add
            up to ``frames`` samples.
        path: any file libsndfile reads; ``C`` is its channel count (1 with ``mix_down``).
        output_path: where to write (format from the extension); ``None`` returns the samples,
            ``[T]`` for one channel, else ``[C, T]``.
        overwrite: replace an existing ``output_path``.
        mix_down: average the channels as they are read.
        subtype: the output's subtype; default: see :func:`output_format`.

    Returns:
        The samples (``output_path=None``) or ``Path(output_path)``.

    Raises:
        DataError: a missing, empty, unreadable, sample-less or non-finite input, an existing
            output (without ``overwrite``, :class:`~dereverb.errors.OutputExistsError`), a missing
            output folder, a format or subtype that cannot be written.
        OSError: writing failed (no space left, a file size limit, a read-only folder); its
            ``filename`` is ``output_path``.

    Whatever the error (of ``process`` too), no output file and no temporary file is left behind.
    """
    path = Path(path)
    info = audio_info(path)
    if info.frames == 0:
        raise DataError(f"{path}: contains no samples")
    channels = 1 if mix_down else info.channels
    if output_path is None:
        blocks: list[np.ndarray] = []
        with sf.SoundFile(str(path)) as src:
            process(block_reader(src, path, mix_down), blocks.append, info.frames, info.sample_rate)
        y = np.concatenate(blocks, axis=-1)
        return y[0] if channels == 1 else y
    out = Path(output_path)
    if out.resolve() == path.resolve():
        raise DataError(f"{out}: the output would replace its own input")
    fmt, subtype = output_format(out, info, subtype, mix_down)
    with (
        atomic_file(out, overwrite) as tmp,
        sf.SoundFile(str(path)) as src,
        _output_file(out, tmp, info.sample_rate, channels, subtype, fmt) as dst,
    ):
        write = BlockWriter(dst, subtype)
        process(block_reader(src, path, mix_down), write, info.frames, info.sample_rate)
    if write.clipped:
        log.warning(
            "%s: %d samples beyond full scale were clipped in %s (write a FLOAT subtype to keep them)",
            out, write.clipped, subtype,
        )  # fmt: skip
    return out
