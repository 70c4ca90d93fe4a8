"""Long signals in overlapping segments: how they are cut, joined, and normalised as a whole.

A signal is cut into *cores* that tile it once (:func:`plan_segments`); each segment is its core
plus ``pad`` samples of real signal on each side, so every sample that reaches the output has at
least ``context`` samples of real signal around it. Neighbouring outputs are cross-faded linearly
over ``fade`` samples centred on their boundary (:class:`CrossFade`). Memory is bounded by one
segment, whatever the signal's duration.

The model's norms follow the whole signal (:class:`SegmentNorms`): a gLN model makes passes that
only collect each layer's statistics over the whole signal before the pass that writes; a causal
cLN model carries its cumulative statistics from segment to segment. :class:`SegmentRunner` drives
the passes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from dereverb.allocator import release_free_memory
from dereverb.errors import EnhanceError

__all__ = ["CrossFade", "SegmentNorms", "SegmentPlan", "SegmentRunner", "plan_segments", "ramp"]

#: ``read(start, stop) -> [C, stop - start]``: the input between two sample positions
Reader = Callable[[int, int], np.ndarray]
#: ``write(block [C, n])``: receives consecutive finished blocks
Writer = Callable[[np.ndarray], None]


class SegmentPlan(NamedTuple):
    """How a signal is cut: ``cores`` tile ``[0, total)``; a segment is its core plus ``pad``
    samples on each side; neighbours cross-fade over ``fade`` samples centred on their boundary."""

    pad: int
    fade: int
    cores: list[tuple[int, int]]


def plan_segments(total: int, context: int, chunk: int | None = None, step: int = 1) -> SegmentPlan:
    """Cut ``total`` samples into segments whose outputs have ``context`` samples of signal on each side.

    ``fade = context / 2`` and ``pad = context + fade / 2``; cores are ``chunk`` samples long (at
    least ``2 * pad``; ``None``: one segment), the last one takes the rest (never a sliver shorter
    than the fade). Every boundary is a multiple of ``step`` (the encoder's stride at the model's
    rate), so a segment's encoder frames are frames of the whole signal.

    Example:
        >>> plan_segments(100, context=8, chunk=40)
        SegmentPlan(pad=10, fade=4, cores=[(0, 40), (40, 80), (80, 100)])
        >>> plan_segments(100, context=8).cores
        [(0, 100)]
    """

    def align(n: float) -> int:
        return step * math.ceil(n / step)

    fade = align(max(1, context // 2))
    pad = align(context + fade / 2)
    hop = total if chunk is None else align(max(2 * pad, chunk))
    count = max(1, math.ceil(total / hop))
    if count > 1 and total - (count - 1) * hop < fade:  # no sliver of a last segment
        count -= 1
    cores = [(k * hop, (k + 1) * hop if k < count - 1 else total) for k in range(count)]
    return SegmentPlan(pad, fade, cores)


def ramp(n: int) -> np.ndarray:
    """A linear fade-in of ``n`` samples; with its mirror image it sums to 1.

    Example:
        >>> up = ramp(4)
        >>> up.tolist(), (up + up[::-1]).tolist()
        ([0.125, 0.375, 0.625, 0.875], [1.0, 1.0, 1.0, 1.0])
    """
    return ((np.arange(n) + 0.5) / n).astype(np.float32)


class CrossFade:
    """Joins the outputs of consecutive segments of a :class:`SegmentPlan` into consecutive blocks.

    Each segment keeps its core, widened by half the fade into each neighbour; over the fade it is
    weighted by :func:`ramp` and added to its neighbour's faded tail, held back until then.

    Example:
        >>> plan = plan_segments(100, context=8, chunk=40)
        >>> join, x = CrossFade(plan), np.arange(100, dtype=np.float32)[None]
        >>> blocks = [join(x[:, max(0, a - plan.pad) : b + plan.pad], max(0, a - plan.pad), k)
        ...           for k, (a, b) in enumerate(plan.cores)]
        >>> bool(np.allclose(np.concatenate(blocks, axis=-1), x))
        True
    """

    def __init__(self, plan: SegmentPlan):
        self.cores, self.fade = plan.cores, plan.fade
        self.up = ramp(plan.fade)
        self.pending: np.ndarray | None = None  # the faded tail of the previous segment

    def __call__(self, y: np.ndarray, lo: int, k: int) -> np.ndarray:
        """The finished block of segment ``k``, whose output ``y [C, n]`` starts at sample ``lo``."""
        (a, b), fade, half = self.cores[k], self.fade, self.fade // 2
        first, last = k == 0, k == len(self.cores) - 1
        start = a if first else a - half  # this segment's output region [start, end)
        end = b if last else b + (fade - half)
        y = y[:, start - lo : end - lo].copy()
        if not first:
            y[:, :fade] *= self.up
            y[:, :fade] += self.pending
        if not last:
            y[:, -fade:] *= self.up[::-1]
            self.pending = y[:, -fade:].copy()
            y = y[:, :-fade]
        return y


class SegmentNorms:
    """Forward hooks on a model's layer norms that make segment-wise inference follow the whole signal.

    * gLN (``mode="collect"``): sum each layer's input over the segment's *core* frames (the cores
      tile the signal once), giving whole-signal statistics; ``mode="apply"`` then normalises with
      them instead of the segment's own. Each collecting pass refines the statistics.
    * cLN (``mode="stream"``): the cumulative statistics are anchored at the core's first frame and
      carried from segment to segment, so a causal model's segments give what the whole signal gives.

    Call :meth:`remove` when done.
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

    def begin_pass(self, index: int, passes: int) -> None:
        """Set the mode of pass ``index`` of ``passes``: gLN collects, then applies; cLN streams."""
        if not self.gln:
            self.mode = "stream"
        elif index == passes - 1:
            self.mode = "apply" if index else "off"
        else:
            self.mode = "apply+collect" if index else "collect"

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


class SegmentRunner:
    """Enhance a signal at ``rate`` segment by segment, following a :class:`SegmentPlan`.

    Args:
        model: the network (its norms are hooked by :class:`SegmentNorms` while a run lasts); its
            ``sample_rate`` and ``stride`` place the segments' cores on its encoder frames.
        enhance: ``enhance(x [C, n]) -> [C, n]``: one segment, at ``rate``.
        plan: the segments.
        rate: the signal's sample rate.
        gln_passes: passes for a gLN model; the first ``gln_passes - 1`` only collect statistics.

    Example:
        >>> plan = plan_segments(100, context=8, chunk=40)
        >>> runner = SegmentRunner(torch.nn.Identity(), lambda x: 2 * x, plan, rate=8000)
        >>> blocks = []
        >>> runner.run(lambda lo, hi: np.ones((1, hi - lo), np.float32), blocks.append)
        >>> [b.shape[-1] for b in blocks], bool(np.allclose(np.concatenate(blocks, -1), 2))
        ([38, 40, 22], True)
    """

    def __init__(
        self,
        model: torch.nn.Module,
        enhance: Callable[[np.ndarray], np.ndarray],
        plan: SegmentPlan,
        rate: int,
        gln_passes: int = 2,
    ):
        self.model, self.enhance, self.plan, self.rate = model, enhance, plan, rate
        self.gln_passes = gln_passes

    def frames(self, n: int) -> int:
        """Encoder frames of the model's rate before sample ``n`` (at ``rate``) of a segment."""
        model_rate = getattr(self.model, "sample_rate", self.rate)
        return round(n * model_rate / self.rate / getattr(self.model, "stride", 1))

    def run(
        self,
        read: Reader,
        write: Writer,
        progress: Callable[[float], None] | None = None,
        where: str | None = None,
    ) -> None:
        """Enhance the whole signal: ``write`` receives consecutive blocks that add up to its length.

        ``progress`` gets the share of input samples each segment (of each pass) finished.

        Raises:
            EnhanceError: the model's output holds NaN or Inf (the message starts with ``where``,
                the input's name, when given).
        """
        norms = SegmentNorms(self.model) if len(self.plan.cores) > 1 else None
        passes = self.gln_passes if norms is not None and norms.gln else 1
        try:
            for index in range(passes):
                if norms is not None:
                    norms.begin_pass(index, passes)
                last = index == passes - 1
                self._pass(read, write if last else None, norms,
                           None if progress is None else lambda n: progress(n / passes), where)  # fmt: skip
                if norms is not None and norms.gln:
                    norms.finish_pass()
        finally:
            if norms is not None:
                norms.remove()

    def _pass(self, read: Reader, write: Writer | None, norms: SegmentNorms | None, progress, where) -> None:
        """One pass over the segments; ``write=None`` for a pass that only collects statistics."""
        pad, cores = self.plan.pad, self.plan.cores
        total = cores[-1][1]
        join = CrossFade(self.plan)
        for k, (a, b) in enumerate(cores):
            lo, hi = max(0, a - pad), min(total, b + pad)
            if norms is not None:
                norms.core = (self.frames(a - lo), self.frames(b - lo))
            y = self.enhance(read(lo, hi))
            self._check_finite(y, lo, where)
            if norms is not None:
                norms.advance()
            if len(cores) > 1:
                release_free_memory()  # segments of varying sizes would otherwise fragment the heap
            if progress is not None:
                progress(b - a)
            if write is not None:
                write(join(y, lo, k))

    def _check_finite(self, y: np.ndarray, lo: int, where: str | None) -> None:
        bad = ~np.isfinite(y).all(axis=0)
        if bad.any():
            first = lo + int(np.argmax(bad))
            raise EnhanceError(
                ("" if where is None else f"{where}: ")
                + f"the model's output holds NaN or Inf samples (the first at {first / self.rate:.2f} s): "
                "its weights or output gain are broken; nothing was written"
            )
