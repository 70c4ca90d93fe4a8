"""The :class:`Dereverberator`: a trained TCN/DTCN applied to tensors, arrays and files of any rate.

Each segment is resampled to the model's rate, enhanced and resampled back; every channel is
enhanced on its own (channels are batch rows). Long signals go through
:mod:`dereverb.inference.segments`, files through :mod:`dereverb.inference.files`.

Level: a network trained with a scale-invariant loss (SI-SDR) has no fixed output level (nor
polarity). A shipped model stores ``output_gain`` in its ``config.json``, the median least-squares
gain from its raw output to the reference on its validation set (:func:`calibrate_gain`);
``gain="auto"`` applies it, or, for a model folder without one, matches each segment's level to
the input (``gain="input"``: the gain ``<x, y> / <y, y>`` per channel).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from dereverb.data.audio import resample_audio
from dereverb.errors import EnhanceError
from dereverb.inference.files import transform_file
from dereverb.inference.segments import Reader, SegmentPlan, SegmentRunner, Writer, plan_segments
from dereverb.loading import check_device

__all__ = ["DEFAULT_CHUNK_SECONDS", "Dereverberator", "calibrate_gain", "default_model"]

log = logging.getLogger(__name__)

DEFAULT_CHUNK_SECONDS = 15.0
SILENCE = 1e-10  # mean power under which a segment is treated as silent (gain 1)


def default_model(sample_rate: int) -> str:
    """The shipped DTCN that best matches an input rate: ``dtcn-16k`` from 16 kHz up, else ``dtcn-8k``.

    Falls back to the other one when only one is shipped.

    Raises:
        EnhanceError: no shipped DTCN is installed.
    """
    from dereverb.pretrained import list_pretrained

    shipped = [name for name in ("dtcn-16k", "dtcn-8k") if name in list_pretrained()]
    if not shipped:
        raise EnhanceError("no shipped DTCN model in this install: pass --model with a model folder")
    preferred = "dtcn-16k" if sample_rate >= 16000 else "dtcn-8k"
    return preferred if preferred in shipped else shipped[0]


def _is_number(value) -> bool:
    """A finite int or float (not a bool)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _check_settings(chunk_seconds, context, gain, gln_passes) -> None:
    """Refuse a bad :class:`Dereverberator` setting with one line naming it."""
    if chunk_seconds is not None and not (_is_number(chunk_seconds) and chunk_seconds > 0):
        raise EnhanceError(f"chunk_seconds must be a positive finite number or None, got {chunk_seconds!r}")
    if gain not in ("auto", "input", "none") and not (_is_number(gain) and gain != 0):
        raise EnhanceError(f"gain must be 'auto', 'input', 'none' or a finite non-zero number, got {gain!r}")
    if context is not None and (isinstance(context, bool) or not isinstance(context, int) or context < 1):
        raise EnhanceError(f"context must be a positive number of samples, got {context!r}")
    if isinstance(gln_passes, bool) or not isinstance(gln_passes, int) or gln_passes < 1:
        raise EnhanceError(f"gln_passes must be a positive int, got {gln_passes!r}")


def _receptive_field(model: torch.nn.Module, sample_rate: int) -> int:
    """Samples a model's output depends on: its receptive field, plus the offset bound of a DTCN
    with ``max_offset`` (one second when the model cannot say)."""
    rf = int(model.receptive_field()[1]) if hasattr(model, "receptive_field") else sample_rate
    config = model.get_config() if hasattr(model, "get_config") else {}
    if config.get("max_offset"):  # bounded deformable taps reach at most this much further per block
        rf += model.stride * config["X"] * config["R"] * math.ceil(config["max_offset"])
    return rf


class Dereverberator:
    """Dereverberate speech with a trained TCN/DTCN.

    Args:
        model: a :class:`~dereverb.models.TasNet` with a ``sample_rate`` attribute (as returned
            by :func:`~dereverb.pretrained.from_pretrained`).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...
        chunk_seconds: signals longer than this are processed in segments of this length
            (``None``: always whole).
        context: samples of real signal (at the model's rate) that every output sample of a
            segment has on each side; default: the model's receptive field (plus the offset
            bound of a DTCN with ``max_offset``).
        gain: ``"auto"`` (the model's calibrated ``output_gain``, else ``"input"``), ``"input"``
            (match each segment's level to the input), ``"none"`` (raw output) or a number.
        gln_passes: passes over a long file for a gLN model: the first ``gln_passes - 1`` only
            collect whole-signal statistics (1: each segment uses its own).

    Raises:
        EnhanceError: a model without ``sample_rate``, or a bad setting (one line naming it).
        ConfigError: a device inference cannot run on here.

    Example:
        >>> from dereverb.models import DTCN
        >>> model = DTCN(N=32, B=16, H=32, X=2, R=1); model.sample_rate = 8000
        >>> d = Dereverberator(model)
        >>> d.enhance(np.random.randn(2, 12000).astype(np.float32), 16000).shape  # stereo, 16 kHz
        (2, 12000)
    """

    def __init__(
        self,
        model: torch.nn.Module,
        device: str | torch.device = "cpu",
        chunk_seconds: float | None = DEFAULT_CHUNK_SECONDS,
        context: int | None = None,
        gain: str | float = "auto",
        gln_passes: int = 2,
    ):
        if not hasattr(model, "sample_rate"):
            raise EnhanceError(
                "the model has no sample_rate attribute (load it with dereverb.pretrained.from_pretrained)"
            )
        _check_settings(chunk_seconds, context, gain, gln_passes)
        if gain == "auto":
            stored = getattr(model, "output_gain", None)
            if stored is None:
                log.info("the model stores no output_gain: matching each segment's level to the input")
            gain = "input" if stored is None else float(stored)
        self.device = check_device(device)
        self.model = model.to(self.device).eval()
        self.sample_rate = int(model.sample_rate)
        self.context = context or _receptive_field(model, self.sample_rate)
        self.chunk_seconds = chunk_seconds
        if chunk_seconds is not None and chunk_seconds * self.sample_rate < 3 * self.context:
            raise EnhanceError(
                f"chunk_seconds={chunk_seconds} is too short for a context of {self.context} samples "
                f"(at least {3 * self.context / self.sample_rate:.2f} s)"
            )
        self.gain = gain
        self.gln_passes = gln_passes

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, device: str | torch.device = "cpu", **kwargs):
        """Load a shipped model (``"dtcn-8k"``, ``"dtcn-16k"``) or a model folder.

        ``kwargs`` are the constructor's other options (``chunk_seconds``, ``gain``, ...).

        Raises:
            ModelFolderError: not a dereverb model folder (one line saying why).
        """
        from dereverb.pretrained import from_pretrained

        return cls(from_pretrained(name_or_path, map_location="cpu"), device=device, **kwargs)

    def __repr__(self) -> str:
        return (f"Dereverberator({type(self.model).__name__} at {self.sample_rate} Hz, device={self.device}, "
                f"chunk_seconds={self.chunk_seconds}, context={self.context}, gain={self.gain!r})")  # fmt: skip

    # ---------------------------------------------------------------------------------------
    # tensors at the model's rate

    def _run(self, x: Tensor) -> Tensor:
        """Model output for ``x [C, T]`` at the model's rate, level-matched per row."""
        with torch.inference_mode():
            y = self.model(x.to(self.device, torch.float32)).float().cpu()
        x = x.cpu().float()
        if self.gain == "input":
            power = (y * y).mean(-1, keepdim=True)
            g = (x * y).mean(-1, keepdim=True) / power.clamp_min(SILENCE)
            y = y * torch.where(power > SILENCE, g, torch.ones_like(g))
        elif self.gain != "none":
            y = y * self.gain
        return y

    def enhance_batch(self, wavs: Tensor, lengths: Tensor | None = None) -> Tensor:
        """Enhance a batch of waveforms at the model's rate.

        Args:
            wavs: ``Tensor[B, T]`` at ``self.sample_rate``.
            lengths: relative lengths in (0, 1] (SpeechBrain's convention), ``None`` for all 1.
                Each row is enhanced at its own length (padding never reaches gLN's statistics),
                and the output is zero beyond it.

        Returns:
            Tensor[B, T]: the dereverberated waveforms (on the CPU).

        Raises:
            EnhanceError: not a ``Tensor[B, T]``, bad ``lengths``, or NaN/Inf samples.
        """
        if not isinstance(wavs, Tensor) or wavs.dim() != 2:
            raise EnhanceError(f"wavs must be a Tensor[B, T], got {getattr(wavs, 'shape', type(wavs).__name__)}")
        batch, total = wavs.shape
        if lengths is None:
            sizes = [total] * batch
        else:
            lengths = torch.as_tensor(lengths, dtype=torch.float64).flatten()
            if lengths.numel() != batch or not bool(((lengths > 0) & (lengths <= 1)).all()):
                raise EnhanceError(f"lengths must be {batch} relative lengths in (0, 1], got {lengths.tolist()}")
            sizes = [max(1, round(float(v) * total)) for v in lengths]
        _check_finite(wavs, "wavs")
        out = torch.zeros(batch, total)
        if batch == 0 or total == 0:
            return out
        if len(set(sizes)) == 1:
            out[:, : sizes[0]] = torch.from_numpy(
                self._process(wavs[:, : sizes[0]].cpu().float().numpy(), self.sample_rate)
            )
        else:
            for row, size in enumerate(sizes):
                y = self._process(wavs[row : row + 1, :size].cpu().float().numpy(), self.sample_rate)
                out[row, :size] = torch.from_numpy(y[0])
        return out

    # ---------------------------------------------------------------------------------------
    # arrays at any rate

    def enhance(self, x: np.ndarray | Tensor, sample_rate: int) -> np.ndarray | Tensor:
        """Dereverberate ``[T]`` (mono) or ``[C, T]`` (channels first) samples at any rate.

        Returns the same type, shape and rate (resampled to the model's rate and back).

        Raises:
            EnhanceError: wrong shape, no samples, NaN/Inf, or a bad sample rate.
        """
        is_tensor = isinstance(x, Tensor)
        arr = x.detach().cpu().float().numpy() if is_tensor else np.asarray(x, dtype=np.float32)
        if arr.ndim not in (1, 2):
            raise EnhanceError(f"expected samples [T] or [C, T], got shape {tuple(arr.shape)}")
        if arr.shape[-1] == 0:
            raise EnhanceError("the signal has no samples")
        if isinstance(sample_rate, bool) or not isinstance(sample_rate, int) or sample_rate <= 0:
            raise EnhanceError(f"sample_rate must be a positive int, got {sample_rate!r}")
        _check_finite(arr, "the signal")
        y = self._process(np.atleast_2d(arr), sample_rate)
        y = y[0] if arr.ndim == 1 else y
        return torch.from_numpy(y).to(x.device) if is_tensor else y

    def plan(self, total: int, rate: int) -> SegmentPlan:
        """How a signal of ``total`` samples at ``rate`` is cut into segments (:func:`plan_segments`).

        Every output sample has ``context`` samples (scaled to ``rate``) of real signal on each
        side. At the model's rate every boundary lies on the encoder's frame grid (a multiple of
        its stride), so a segment's frames are frames of the whole signal.
        """
        step = getattr(self.model, "stride", 1) if rate == self.sample_rate else 1
        context = math.ceil(self.context * rate / self.sample_rate)
        chunk = None if self.chunk_seconds is None else round(self.chunk_seconds * rate)
        return plan_segments(total, context, chunk, step)

    def _segment(self, x: np.ndarray, rate: int) -> np.ndarray:
        """Enhance ``x [C, n]`` at ``rate``: resample, model, resample back, exact length."""
        n = x.shape[-1]
        z = resample_audio(x, rate, self.sample_rate) if rate != self.sample_rate else x
        y = self._run(torch.from_numpy(np.ascontiguousarray(z))).numpy()
        if rate != self.sample_rate:
            y = resample_audio(y, self.sample_rate, rate)
        if y.shape[-1] < n:
            y = np.pad(y, ((0, 0), (0, n - y.shape[-1])))
        return np.ascontiguousarray(y[:, :n], dtype=np.float32)

    def _stream(
        self,
        read: Reader,
        write: Writer,
        total: int,
        rate: int,
        progress: Callable[[float], None] | None = None,
        where: str | None = None,
    ) -> None:
        """Enhance a signal of ``total`` samples at ``rate`` segment by segment (:class:`SegmentRunner`)."""
        runner = SegmentRunner(self.model, lambda x: self._segment(x, rate), self.plan(total, rate), rate,
                               self.gln_passes)  # fmt: skip
        runner.run(read, write, progress, where)

    def _process(self, x: np.ndarray, rate: int) -> np.ndarray:
        """Enhance an in-memory ``[C, T]`` signal at ``rate`` (in segments when it is long)."""
        blocks: list[np.ndarray] = []
        self._stream(lambda lo, hi: x[:, lo:hi], blocks.append, x.shape[-1], rate)
        return np.concatenate(blocks, axis=-1)

    # ---------------------------------------------------------------------------------------
    # files

    def enhance_file(
        self,
        path: str | os.PathLike,
        output_path: str | os.PathLike | None = None,
        overwrite: bool = False,
        mix_down: bool = False,
        subtype: str | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> np.ndarray | Path:
        """Dereverberate an audio file, read and written in segments (bounded memory).

        Args:
            path: a wav/flac/... file, any rate, any number of channels.
            output_path: where to write the result (format from its extension); ``None``
                returns the samples instead, ``[T]`` for mono (or ``mix_down``), else ``[C, T]``.
            overwrite: replace an existing ``output_path``.
            mix_down: average the channels first; the output is mono.
            subtype: soundfile subtype of the output; default: the input's when the output
                format supports it, else the format's default.
            progress: called with the number of input samples of each finished segment.

        Returns:
            The samples (``output_path=None``) or ``Path(output_path)``.

        Raises:
            DataError: a missing, empty, unreadable, sample-less or non-finite input, an existing
                output (without ``overwrite``, :class:`~dereverb.errors.OutputExistsError`),
                a missing output folder, a format or subtype that cannot be written.
            EnhanceError: the model's output holds NaN or Inf (broken weights or gain); the
                message names ``path``.
            OSError: writing failed (no space left, a file size limit, a read-only folder); its
                ``filename`` is ``output_path``.

        Whatever the error, no output file and no temporary file is left behind
        (:func:`dereverb.inference.files.transform_file`).
        """

        def process(read: Reader, write: Writer, total: int, rate: int) -> None:
            self._stream(read, write, total, rate, progress, where=str(Path(path)))

        return transform_file(process, path, output_path, overwrite, mix_down, subtype)


def calibrate_gain(model: torch.nn.Module, pairs, device: str = "cpu") -> float:
    """The median least-squares gain ``<t, y> / <y, y>`` from the model's raw output ``y`` to the
    reference ``t``, over ``(input, reference)`` pairs of 1-D float arrays at the model's rate.

    Stored as ``output_gain`` in a shipped model's ``config.json``.

    Raises:
        EnhanceError: every pair gives a silent model output.
    """
    gains = []
    with torch.inference_mode():
        for x, t in pairs:
            y = model(torch.as_tensor(x, dtype=torch.float32, device=device)[None]).float().cpu().numpy()[0]
            n = min(len(y), len(t))
            power = float(np.dot(y[:n], y[:n]))
            if power > SILENCE * n:
                gains.append(float(np.dot(t[:n], y[:n])) / power)
    if not gains:
        raise EnhanceError("calibrate_gain: no pair with a non-silent model output")
    return float(np.median(gains))


def _check_finite(x, what: str) -> None:
    ok = bool(torch.isfinite(x).all()) if isinstance(x, Tensor) else bool(np.isfinite(x).all())
    if not ok:
        raise EnhanceError(f"{what} contains NaN or Inf samples")
