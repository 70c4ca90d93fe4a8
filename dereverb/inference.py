"""Dereverberate recordings with a trained model: the :class:`Dereverberator` API and ``dereverb-enhance``.

``dereverb-enhance IN.wav -o OUT.wav`` (or ``python scripts/enhance.py``) runs a shipped model
(``dtcn-8k``, ``dtcn-16k``) or any model folder on wav/flac files of any rate and channel count.
Loading needs neither Hydra nor the training stack: :func:`dereverb.pretrained.from_pretrained`
reads ``config.json`` and safetensors weights.

How a file is processed:

* **Rate.** Each segment is resampled to the model's rate, enhanced, and resampled back, so the
  output has the input's rate and exact length.
* **Channels.** Every channel is enhanced on its own (channels are batch rows); ``mix_down``
  averages them first and writes mono.
* **Long files** are read, enhanced and written in segments of ``chunk_seconds`` (default 15 s)
  that overlap: every sample that reaches the output has at least ``context`` samples of real
  signal on each side (default: the model's receptive field, plus the offset bound of a DTCN with
  ``max_offset``), and neighbours are cross-faded linearly around their boundary. Memory is
  bounded by one segment, whatever the file's duration. The norms follow the whole signal:

  - gLN (whole-signal statistics): a first pass over the segments only collects every layer's
    statistics over the file, the second pass normalises with them and writes (``gln_passes``,
    default 2; long files cost two passes). With 15 s segments a trained DTCN's output agrees
    with its whole-file output to 37.5 dB SI-SDR on 200 s of speech (22.0 dB in one pass;
    ``scripts/bench_inference.py``).
  - cLN (causal models): the cumulative statistics are carried from segment to segment, and at
    the model's rate segments lie on the encoder's frame grid, so a causal TCN's chunked output
    equals the whole-file output to float tolerance. A causal DTCN without ``max_offset`` may
    move a tap further back than the context; that tap then reads the segment's zero padding.
* **Level.** A network trained with a scale-invariant loss (SI-SDR) has no fixed output level.
  A shipped model stores ``output_gain`` in its ``config.json``: the median least-squares gain
  from its raw output to the reference on its validation set (:func:`calibrate_gain`), so the
  output comes at the level (and polarity: SI-SDR ignores the sign) of the direct sound in the
  recording; ``gain="auto"`` (the default)
  applies it. A model folder without one gets ``gain="input"`` instead (logged): each segment's
  output is scaled by the least-squares gain that best matches it to the input,
  ``<x, y> / <y, y>`` per channel. ``gain="none"`` keeps the raw output; a number is used as is.
* **Output** files are written atomically (a temporary file, then a rename), with the permissions
  of the user's umask, and never replace an existing file unless asked; on any error nothing is
  left behind. The output keeps the input's subtype (e.g. PCM_16) when its format can be written
  with it, else the format's default; samples beyond full scale in an integer subtype are clipped,
  counted and reported in a warning (``subtype="FLOAT"`` avoids it). A model output with a NaN
  or Inf sample (broken weights, an absurd gain) is an error naming the input; nothing is written.
* **Several files** (``dereverb-enhance IN... -o FOLDER``): every input is read through and
  checked (header, NaN/Inf, output format) and the models are loaded before anything is written;
  one bad input refuses the run. A failure that only processing can reveal skips that file, and
  the run ends with ``written N, failed M (names)`` and exit status 2; ``--skip-existing`` then
  completes the rest.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import io
import logging
import math
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from torch import Tensor

from dereverb.allocator import release_free_memory
from dereverb.atomic import atomic_file
from dereverb.data.audio import AudioInfo, audio_info, check_samples, resample_audio
from dereverb.errors import ConfigError, DataError, EnhanceError, OutputExistsError
from dereverb.loading import check_device

__all__ = [
    "DEFAULT_CHUNK_SECONDS",
    "Dereverberator",
    "EnhanceError",
    "calibrate_gain",
    "default_model",
    "main",
    "output_format",
]

log = logging.getLogger(__name__)

DEFAULT_CHUNK_SECONDS = 15.0
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".aiff", ".aif")
_SILENCE = 1e-10  # mean power under which a segment is treated as silent (gain 1)


class _OutputNotFinite(EnhanceError):
    """The model's output holds NaN or Inf: raised by a segment, given the file's name by ``enhance_file``."""


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


def _ramp(n: int) -> np.ndarray:
    """A linear fade-in of ``n`` samples; with its mirror image it sums to 1."""
    return ((np.arange(n) + 0.5) / n).astype(np.float32)


class _SegmentNorms:
    """Forward hooks on a model's layer norms that make segment-wise inference follow the whole signal.

    * gLN (``mode="collect"``): sum each layer's input over the segment's *core* frames (the cores
      tile the signal once), giving whole-signal statistics; ``mode="apply"`` then normalises with
      them instead of the segment's own. Each collecting pass refines the statistics.
    * cLN (``mode="stream"``): the cumulative statistics are anchored at the core's first frame and
      carried from segment to segment, so a causal model's segments give what the whole signal gives.
    """

    def __init__(self, model: torch.nn.Module):
        from dereverb.nn.norm import CumulativeLayerNorm, GlobalLayerNorm

        self.gln = [m for m in model.modules() if isinstance(m, GlobalLayerNorm)]
        self.cln = [m for m in model.modules() if isinstance(m, CumulativeLayerNorm)]
        self.mode, self.core = "off", (0, 0)
        self.sums: dict[int, list[Tensor]] = {}  # gLN: [sum, sum of squares, count] per row
        self.stats: dict[int, tuple[Tensor, Tensor]] = {}  # gLN: (mean, var) per row
        self.state: dict[int, Tensor] = {}  # cLN: [rows, 3] sums before the core's first frame
        self.next: dict[int, Tensor] = {}
        self._handles = [m.register_forward_hook(self._gln) for m in self.gln]
        self._handles += [m.register_forward_hook(self._cln) for m in self.cln]

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()

    def finish_pass(self) -> None:
        """Turn the collected sums into the statistics the next pass applies."""
        for key, (s1, s2, n) in self.sums.items():
            mean = s1 / n
            self.stats[key] = (mean, (s2 / n - mean * mean).clamp_min(0))
        self.sums = {}

    def advance(self) -> None:
        """After a segment: its core's end is the next core's anchor."""
        self.state, self.next = self.next, {}

    def _gln(self, module, inputs, output):
        x = inputs[0]
        key = id(module)
        result = None
        if self.mode in ("apply", "apply+collect") and key in self.stats:
            mean, var = (t.to(x.dtype).view(-1, 1, 1) for t in self.stats[key])
            result = (x - mean) * torch.rsqrt(var + module.eps) * module.weight + module.bias
        if self.mode in ("collect", "apply+collect"):
            core = x[..., self.core[0] : self.core[1]].double()
            sums = [core.sum((1, 2)), core.pow(2).sum((1, 2)), torch.tensor(float(core.shape[1] * core.shape[2]))]
            old = self.sums.get(key)
            self.sums[key] = sums if old is None else [a + b for a, b in zip(old, sums, strict=True)]
        return result

    def _cln(self, module, inputs, output):
        if self.mode != "stream":
            return None
        x = inputs[0]
        key, (f0, f1) = id(module), self.core
        channels, frames = x.shape[1], x.shape[2]
        per = torch.stack([x.double().sum(1), x.double().pow(2).sum(1)], -1)  # [rows, T, 2]
        start = self.state.get(key, torch.zeros(x.shape[0], 3, dtype=torch.float64, device=x.device))
        cum = per.cumsum(1)  # sums over frames 0..t of the segment
        base = cum[:, f0 - 1 : f0] if f0 > 0 else torch.zeros_like(cum[:, :1])  # sums over frames < f0
        sums = start[:, None, :2] + cum - base  # whole-signal sums over frames up to t
        count = (
            start[:, None, 2:]
            + channels * (torch.arange(frames, device=x.device, dtype=torch.float64) - f0 + 1)[None, :, None]
        )
        mean = sums[..., 0:1] / count
        var = (sums[..., 1:2] / count - mean * mean).clamp_min(0)
        last = min(f1, frames) - 1
        end = torch.cat([sums[:, last], count[:, last]], -1)
        self.next[key] = end
        mean, inv = mean.transpose(1, 2).to(x.dtype), torch.rsqrt(var + module.eps).transpose(1, 2).to(x.dtype)
        return (x - mean) * inv * module.weight + module.bias


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
        if chunk_seconds is not None and not (
            isinstance(chunk_seconds, int | float)
            and not isinstance(chunk_seconds, bool)
            and math.isfinite(chunk_seconds)
            and chunk_seconds > 0
        ):
            raise EnhanceError(f"chunk_seconds must be a positive finite number or None, got {chunk_seconds!r}")
        if gain not in ("auto", "input", "none") and not (
            isinstance(gain, int | float) and not isinstance(gain, bool) and math.isfinite(gain) and gain != 0
        ):
            raise EnhanceError(f"gain must be 'auto', 'input', 'none' or a finite non-zero number, got {gain!r}")
        if gain == "auto":
            stored = getattr(model, "output_gain", None)
            if stored is None:
                log.info("the model stores no output_gain: matching each segment's level to the input")
            gain = "input" if stored is None else float(stored)
        self.device = check_device(device)
        self.model = model.to(self.device).eval()
        self.sample_rate = int(model.sample_rate)
        rf = int(model.receptive_field()[1]) if hasattr(model, "receptive_field") else self.sample_rate
        config = model.get_config() if hasattr(model, "get_config") else {}
        if config.get("max_offset"):  # bounded deformable taps reach at most this much further per block
            rf += model.stride * config["X"] * config["R"] * math.ceil(config["max_offset"])
        if context is not None and (isinstance(context, bool) or not isinstance(context, int) or context < 1):
            raise EnhanceError(f"context must be a positive number of samples, got {context!r}")
        self.context = context or rf
        self.chunk_seconds = chunk_seconds
        if chunk_seconds is not None and chunk_seconds * self.sample_rate < 3 * self.context:
            raise EnhanceError(
                f"chunk_seconds={chunk_seconds} is too short for a context of {self.context} samples "
                f"(at least {3 * self.context / self.sample_rate:.2f} s)"
            )
        self.gain = gain
        if isinstance(gln_passes, bool) or not isinstance(gln_passes, int) or gln_passes < 1:
            raise EnhanceError(f"gln_passes must be a positive int, got {gln_passes!r}")
        self.gln_passes = gln_passes

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, device: str | torch.device = "cpu", **kwargs):
        """Load a shipped model (``"dtcn-8k"``, ``"dtcn-16k"``) or a model folder.

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
            g = (x * y).mean(-1, keepdim=True) / power.clamp_min(_SILENCE)
            y = y * torch.where(power > _SILENCE, g, torch.ones_like(g))
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

    def _plan(self, total: int, rate: int) -> tuple[int, int, list[tuple[int, int]]]:
        """``(pad, fade, cores)`` at ``rate``: the core regions tile ``[0, total)``; a segment is
        its core plus ``pad`` samples on each side; neighbours cross-fade over ``fade`` samples
        centred on their boundary. ``pad = context + fade / 2`` with ``fade = context / 2``, so every
        sample that reaches the output has ``context`` samples of real signal on each side.

        At the model's rate every boundary lies on the encoder's frame grid (a multiple of its
        stride), so a segment's frames are frames of the whole signal.
        """
        step = getattr(self.model, "stride", 1) if rate == self.sample_rate else 1

        def align(n: float) -> int:
            return step * math.ceil(n / step)

        context = math.ceil(self.context * rate / self.sample_rate)
        fade = align(max(1, context // 2))
        pad = align(context + fade / 2)
        hop = total if self.chunk_seconds is None else align(max(2 * pad, round(self.chunk_seconds * rate)))
        count = max(1, math.ceil(total / hop))
        if count > 1 and total - (count - 1) * hop < fade:  # no sliver of a last segment
            count -= 1
        cores = [(k * hop, (k + 1) * hop if k < count - 1 else total) for k in range(count)]
        return pad, fade, cores

    def _frames(self, n: int, rate: int) -> int:
        """Encoder frames of the model's rate before sample ``n`` (at ``rate``) of a segment."""
        stride = getattr(self.model, "stride", 1)
        return round(n * self.sample_rate / rate / stride)

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
        read: Callable[[int, int], np.ndarray],
        write: Callable[[np.ndarray], None],
        total: int,
        rate: int,
        progress: Callable[[float], None] | None = None,
    ) -> None:
        """Enhance a signal of ``total`` samples segment by segment.

        ``read(start, stop)`` returns ``[C, stop - start]``; ``write`` receives consecutive
        finished blocks ``[C, n]`` that add up to ``total`` samples; ``progress`` gets the share
        of input samples each segment (of each pass) finished.

        A model with gLN makes ``gln_passes - 1`` passes that only collect whole-signal
        statistics, then the pass that writes; a model with cLN carries its cumulative
        statistics from segment to segment.
        """
        pad, fade, cores = self._plan(total, rate)
        norms = _SegmentNorms(self.model) if len(cores) > 1 else None
        passes = self.gln_passes if norms is not None and norms.gln else 1
        try:
            for p in range(passes):
                if norms is not None:
                    norms.mode = "stream" if not norms.gln else "apply+collect" if p else "collect"
                    if p == passes - 1 and norms.gln:
                        norms.mode = "apply" if p else "off"
                self._pass(read, write if p == passes - 1 else None, total, rate, pad, fade, cores, norms,
                           None if progress is None else lambda n: progress(n / passes))  # fmt: skip
                if norms is not None and norms.gln:
                    norms.finish_pass()
        finally:
            if norms is not None:
                norms.remove()

    def _pass(self, read, write, total, rate, pad, fade, cores, norms, progress) -> None:
        """One pass over the segments; ``write=None`` for a pass that only collects statistics."""
        up = _ramp(fade)
        half = fade // 2
        pending = None  # the faded tail of the previous segment: [C, fade] from cores[k][0] - half
        for k, (a, b) in enumerate(cores):
            first, last = k == 0, k == len(cores) - 1
            lo, hi = max(0, a - pad), min(total, b + pad)
            if norms is not None:
                norms.core = (self._frames(a - lo, rate), self._frames(b - lo, rate))
            y = self._segment(read(lo, hi), rate)
            bad = ~np.isfinite(y).all(axis=0)
            if bad.any():
                first = lo + int(np.argmax(bad))
                raise _OutputNotFinite(
                    f"the model's output holds NaN or Inf samples (the first at {first / rate:.2f} s): "
                    "its weights or output gain are broken; nothing was written"
                )
            if norms is not None:
                norms.advance()
            if len(cores) > 1:
                release_free_memory()  # segments of varying sizes would otherwise fragment the heap
            if progress is not None:
                progress(b - a)
            if write is None:
                continue
            start = a if first else a - half  # this segment's output region [start, end)
            end = b if last else b + (fade - half)
            y = y[:, start - lo : end - lo].copy()
            if not first:
                y[:, :fade] *= up
                y[:, :fade] += pending
            if not last:
                y[:, -fade:] *= up[::-1]
                pending = y[:, -fade:].copy()
                y = y[:, :-fade]
            write(y)

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
        """Dereverberate an audio file.

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
                output (without ``overwrite``, :class:`~dereverb.data.audio.OutputExistsError`),
                a missing output folder, a format or subtype that cannot be written.
            EnhanceError: the model's output holds NaN or Inf (broken weights or gain); the
                message names ``path``.
            OSError: writing failed (no space left, a file size limit, a read-only folder); its
                ``filename`` is ``output_path``.

        Whatever the error, no output file and no temporary file is left behind.
        """
        path = Path(path)
        info = audio_info(path)
        if info.frames == 0:
            raise DataError(f"{path}: contains no samples")
        channels = 1 if mix_down else info.channels
        try:
            if output_path is None:
                blocks: list[np.ndarray] = []
                with sf.SoundFile(str(path)) as src:
                    self._stream(_reader(src, path, mix_down), blocks.append, info.frames, info.sample_rate, progress)
                y = np.concatenate(blocks, axis=-1)
                return y[0] if channels == 1 else y
            out = Path(output_path)
            if out.resolve() == path.resolve():
                raise DataError(f"{out}: the output would replace its own input")
            fmt, subtype = output_format(out, info, subtype, mix_down)
            clipped = [0]
            with (
                atomic_file(out, overwrite) as tmp,
                sf.SoundFile(str(path)) as src,
                _output_file(out, tmp, info.sample_rate, channels, subtype, fmt) as dst,
            ):
                self._stream(_reader(src, path, mix_down), _writer(dst, subtype, clipped), info.frames,
                             info.sample_rate, progress)  # fmt: skip
        except _OutputNotFinite as err:
            raise EnhanceError(f"{path}: {err}") from None
        if clipped[0]:
            log.warning(
                "%s: %d samples beyond full scale were clipped in %s (write a FLOAT subtype to keep them)",
                out, clipped[0], subtype,
            )  # fmt: skip
        return out


def calibrate_gain(model: torch.nn.Module, pairs, device: str = "cpu") -> float:
    """The median least-squares gain ``<t, y> / <y, y>`` from the model's raw output ``y`` to the
    reference ``t``, over ``(input, reference)`` pairs of 1-D float arrays at the model's rate.

    Stored as ``output_gain`` in a shipped model's ``config.json``.
    """
    gains = []
    with torch.inference_mode():
        for x, t in pairs:
            y = model(torch.as_tensor(x, dtype=torch.float32, device=device)[None]).float().cpu().numpy()[0]
            n = min(len(y), len(t))
            power = float(np.dot(y[:n], y[:n]))
            if power > _SILENCE * n:
                gains.append(float(np.dot(t[:n], y[:n])) / power)
    if not gains:
        raise EnhanceError("calibrate_gain: no pair with a non-silent model output")
    return float(np.median(gains))


def _check_finite(x, what: str) -> None:
    ok = bool(torch.isfinite(x).all()) if isinstance(x, Tensor) else bool(np.isfinite(x).all())
    if not ok:
        raise EnhanceError(f"{what} contains NaN or Inf samples")


def _reader(src: sf.SoundFile, path: Path, mix_down: bool) -> Callable[[int, int], np.ndarray]:
    """``read(start, stop) -> [C, n]`` on an open file, checking every block for NaN/Inf."""

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


def _writer(dst: sf.SoundFile, subtype: str, clipped: list[int]) -> Callable[[np.ndarray], None]:
    integer = not (subtype.startswith("FLOAT") or subtype.startswith("DOUBLE") or subtype == "VORBIS")

    def write(block: np.ndarray) -> None:
        if integer:
            over = np.abs(block) > 1.0
            if over.any():
                clipped[0] += int(over.sum())
                block = np.clip(block, -1.0, 1.0)
        dst.write(block.T)

    return write


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
def _output_file(out: Path, tmp: str, rate: int, channels: int, subtype: str, fmt: str):
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


# --------------------------------------------------------------------------------------------
# command line


def _inputs(paths: Sequence[str]) -> tuple[list[Path], bool]:
    """The input files (a folder gives its audio files) and whether the output is a folder."""
    files: list[Path] = []
    folder_in = False
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in AUDIO_SUFFIXES)
            if not found:
                raise DataError(f"{p}: folder holds no audio files ({', '.join(AUDIO_SUFFIXES)})")
            files.extend(found)
            folder_in = True
        else:
            files.append(p)
    names = [f.name for f in files]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise DataError(f"several inputs share the file name {dupes[0]!r}: their outputs would collide")
    return files, folder_in or len(files) > 1


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="dereverb-enhance",
        description="Dereverberate speech recordings with a shipped or trained dereverb model.",
        epilog="Examples: dereverb-enhance in.wav -o out.wav | dereverb-enhance recordings/ -o enhanced/ "
        "--model dtcn-16k. Documentation: README.md, section Inference",
    )
    p.add_argument("inputs", nargs="+", metavar="IN", help="audio files (wav, flac, ...) or folders of them")
    p.add_argument(
        "-o", "--output", required=True, help="output file (one input) or folder (several inputs or a folder)"
    )
    p.add_argument("--model", default=None, help="shipped name (dtcn-8k, dtcn-16k) or model folder; default: the "
                   "shipped DTCN nearest to the input's rate")  # fmt: skip
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N")
    p.add_argument("--mix-down", action="store_true", help="average the channels and write mono")
    p.add_argument("--subtype", default=None, help="output subtype (PCM_16, FLOAT, ...); default: the input's")
    p.add_argument("--chunk-seconds", type=float, default=DEFAULT_CHUNK_SECONDS,
                   help=f"segment length for long files (default {DEFAULT_CHUNK_SECONDS:g})")  # fmt: skip
    p.add_argument("--gain", default="auto", help="auto (default: the model's calibrated output gain, else input), "
                   "input (match each segment to the input's level), none (raw output), or a number")  # fmt: skip
    existing = p.add_mutually_exclusive_group()
    existing.add_argument("--overwrite", action="store_true", help="replace existing output files")
    existing.add_argument(
        "--skip-existing", action="store_true", help="keep existing outputs, enhance the other inputs (resumes a run)"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar, warnings only")
    return p


_OVERWRITE_HINT = "pass --overwrite to replace, or --skip-existing to keep"


class _Refused(DataError):
    """Several inputs cannot be processed: one line each, and nothing is written."""

    def __init__(self, problems: list[str], total: int):
        self.problems = problems
        super().__init__(f"nothing written: {len(problems)} of {total} inputs cannot be processed")


def _plan_outputs(args) -> tuple[list[tuple[Path, Path, AudioInfo]], list[Path], bool]:
    """``(jobs, skipped outputs, output is a folder)``; every job's input and output checked.

    Raises:
        DataError: a problem with the inputs or outputs as a whole, or the one input's problem;
            :class:`_Refused` when several inputs are given and any of them has a problem.
    """
    files, to_folder = _inputs(args.inputs)
    out = Path(args.output)
    if to_folder:
        if out.exists() and not out.is_dir():
            raise DataError(f"{out}: several inputs need an output folder, and this is a file")
        pairs = [(f, out / f.name) for f in files]
    else:
        if out.is_dir():
            out = out / files[0].name
        pairs = [(files[0], out)]
    for f, o in pairs:
        if o.exists() and o.resolve() == f.resolve():
            raise DataError(f"{o}: the output would replace its own input")
    taken = [o for _, o in pairs if os.path.lexists(o)]
    if taken and not (args.overwrite or args.skip_existing):
        more = f" and {len(taken) - 3} more" if len(taken) > 3 else ""
        raise DataError(f"output exists: {', '.join(map(str, taken[:3]))}{more} ({_OVERWRITE_HINT})")
    skipped = taken if args.skip_existing else []
    jobs, problems = [], []
    for f, o in pairs:
        if o in skipped:
            continue
        try:  # the whole file is read once: NaN/Inf, decoding errors and truncation refuse the run now
            info = check_samples(f)
            output_format(o, info, args.subtype, args.mix_down)
            jobs.append((f, o, info))
        except DataError as err:
            problems.append(str(err))
    if problems and len(pairs) == 1:
        raise DataError(problems[0])
    if problems:
        raise _Refused(problems, len(pairs))
    return jobs, skipped, to_folder


def _error_line(err: BaseException, about: Path | None = None) -> str:
    """The one ``error:`` line for an error of the command (``about``: the input being processed)."""
    if isinstance(err, OutputExistsError):
        text = f"{err.path}: file exists ({_OVERWRITE_HINT} it)"
    elif isinstance(err, OSError) and err.strerror:
        text = f"{err.filename}: {err.strerror}" if err.filename else err.strerror
    elif isinstance(err, MemoryError | torch.cuda.OutOfMemoryError):
        text = f"{about}: out of memory (try a smaller --chunk-seconds)"
    else:
        text = str(err) or type(err).__name__
    return "error: " + " ".join(text.split())


def _names(paths: Sequence[Path], limit: int = 10) -> str:
    names = [p.name for p in paths[:limit]]
    return ", ".join(names) + (f" and {len(paths) - limit} more" if len(paths) > limit else "")


def _settings(args) -> tuple[str | float, torch.device]:
    """``(gain, device)`` from the command line, each checked before anything is read."""
    gain = args.gain
    if gain not in ("auto", "input", "none"):
        try:
            gain = float(gain)
        except ValueError:
            raise EnhanceError(f"--gain {gain!r}: expected auto, input, none or a number") from None
    if not (math.isfinite(args.chunk_seconds) and args.chunk_seconds > 0):
        raise EnhanceError(
            f"--chunk-seconds {args.chunk_seconds:g}: chunk_seconds must be a positive finite number of seconds"
        )
    try:
        device = check_device(args.device)
    except ConfigError as err:
        raise ConfigError(f"--device {err}") from None
    return gain, device


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; returns the exit status.

    0 when every input was enhanced (or skipped with ``--skip-existing``); 2 after ``error:``
    lines: one when nothing could start (nothing is written), else one per failed file and a
    last ``written N, failed M (names)``; 130 when interrupted (finished files are kept).
    """
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(levelname)s: %(message)s")
    from dereverb.allocator import tune_glibc_malloc
    from dereverb.pretrained import ModelFolderError

    jobs: list[tuple[Path, Path, AudioInfo]] = []
    written: list[Path] = []
    failed: list[Path] = []
    try:
        try:
            gain, device = _settings(args)
            jobs, skipped, to_folder = _plan_outputs(args)  # every input read and checked before any work
            tune_glibc_malloc()  # much faster CPU inference here (DEREVERB_MALLOC=default opts out)
            models: dict[str, Dereverberator] = {}
            for _, _, info in jobs:  # every model loaded before anything is written
                name = args.model or default_model(info.sample_rate)
                if name not in models:
                    models[name] = Dereverberator.from_pretrained(
                        name, device=device, chunk_seconds=args.chunk_seconds, gain=gain
                    )
            if to_folder:
                Path(args.output).mkdir(parents=True, exist_ok=True)
        except _Refused as err:
            for line in err.problems:
                print(_error_line(DataError(line)), file=sys.stderr)
            print(_error_line(err), file=sys.stderr)
            return 2
        except (DataError, EnhanceError, ConfigError, ModelFolderError, OSError) as err:
            print(_error_line(err), file=sys.stderr)
            return 2
        for dst in skipped:
            log.info("%s exists: skipped", dst)
        total = sum(info.duration_s for _, _, info in jobs)
        from tqdm import tqdm

        with tqdm(total=round(total, 1), unit="s", desc="enhancing", disable=args.quiet or None) as bar:
            for src, dst, info in jobs:
                name = args.model or default_model(info.sample_rate)
                bar.set_postfix_str(src.name)
                try:
                    models[name].enhance_file(
                        src, dst, overwrite=args.overwrite, mix_down=args.mix_down, subtype=args.subtype,
                        progress=lambda n, r=info.sample_rate: bar.update(round(n / r, 1)),
                    )  # fmt: skip
                except (DataError, EnhanceError, OSError, MemoryError, torch.cuda.OutOfMemoryError) as err:
                    bar.clear()
                    print(_error_line(err, src), file=sys.stderr)
                    failed.append(src)
                    continue
                written.append(dst)
                log.info("%s -> %s (%s)", src, dst, name)
    except KeyboardInterrupt:
        done = f"written {len(written)} of {len(jobs)} (run again with --skip-existing to finish)"
        print(f"error: interrupted; {done if written else 'nothing written'}", file=sys.stderr)
        return 130
    summary = f"written {len(written)}" + (f", skipped {len(skipped)}" if skipped else "")
    if failed:
        if len(jobs) + len(skipped) > 1:
            print(f"error: {summary}, failed {len(failed)} ({_names(failed)})", file=sys.stderr)
        return 2
    if len(jobs) + len(skipped) > 1 or skipped:
        log.info(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
