"""Sampling machinery of :func:`dereverb.ops.deform_conv1d`: scratch workspace, row layout, taps.

Internal to the operator (:mod:`dereverb.ops.deform_conv1d_autograd` is its only user);
:func:`release_workspace` is re-exported by :mod:`dereverb.ops`.

* The input is laid out once per call as *rows*: ``(B, G, L + 4, C / G)`` with two zero rows
  at each end, ``G`` being the number of offset groups. All channels of an offset group
  share an index, so the two neighbours of a tap are two rows, and ``embedding_bag`` (sum
  mode, per-sample weights ``(1 - f, f)``) reads both and writes the interpolated row in one
  fused pass; weights ``(-1, 1)`` give the difference the offset gradient needs. Positions
  outside the signal are clamped onto the zero rows, which is exactly "reads as zero".
  One-channel rows (per-channel offsets) use flat gathers instead.
* Scratch buffers are reused across taps and, on the CPU, across calls (see
  :class:`Workspace`): with the default glibc allocator, every fresh large tensor costs
  page faults.
* The integer part and the fraction of a position are computed from the offset alone
  (``floor(offset)`` and ``offset - floor(offset)``), so the fraction keeps the offset's
  full precision however long the signal is.
"""

from __future__ import annotations

import math
import threading

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "PAD",
    "Sampler",
    "Taps",
    "Workspace",
    "copy_to_channels_first",
    "flat",
    "from_rows",
    "release_workspace",
    "to_rows",
    "workspace",
]

PAD = 2  # zero rows at each end of the row layout: clamped positions land on them


class Workspace(threading.local):
    """Scratch buffers kept between calls (one set per thread), for CPU tensors.

    With the default glibc allocator, every fresh tensor of tens of MB is mmap-ed and its pages
    faulted in on first touch, which cost more than the arithmetic here. The operator's
    temporaries (never its outputs, never what it saves for backward) are therefore views of
    buffers that live on, grow to the largest size asked for, and are shared by every layer.
    On other devices the framework's caching allocator already does this, so plain tensors are
    returned. :func:`release_workspace` frees the buffers.
    """

    def __init__(self):
        self.buffers: dict[tuple[str, torch.dtype], Tensor] = {}

    def get(self, name: str, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> Tensor:
        if device.type != "cpu":
            return torch.empty(shape, dtype=dtype, device=device)
        numel = math.prod(shape)
        buf = self.buffers.get((name, dtype))
        if buf is None or buf.numel() < numel:
            self.buffers[(name, dtype)] = None  # free the old one before allocating the new one
            # never an inference tensor: one allocated under torch.inference_mode() could not be
            # written to by a later call outside it
            with torch.inference_mode(False):
                buf = self.buffers[(name, dtype)] = torch.empty(numel, dtype=dtype)
        return buf[:numel].view(shape)


workspace = Workspace()


def release_workspace() -> None:
    """Free the scratch buffers that :func:`~dereverb.ops.deform_conv1d` keeps between calls on this thread.

    Example:
        >>> release_workspace()
    """
    workspace.buffers.clear()


class Taps:
    """Per-call geometry: turns a tap's offsets into row indices and interpolation fractions.

    Its buffers come from the workspace and are rewritten for every tap.
    """

    def __init__(self, batch: int, length: int, offset: Tensor, k: int, stride: int, pad_left: int, dilation: int):
        self.groups = offset.shape[1] // k
        self.k, self.length, self.dilation = k, length, dilation
        self.l_out = offset.shape[2]
        self.offset = offset.view(batch, self.groups, k, self.l_out)
        device = offset.device
        # Positions are computed as floats: exact integers in float32 up to 2**24.
        big = offset.dtype == torch.float64 or length + stride * self.l_out + dilation * k > 2**23
        pos_dtype = torch.float64 if big else torch.float32
        # Position of tap 0 of each output frame.
        self.base = (torch.arange(self.l_out, device=device) * stride - pad_left).to(pos_dtype)
        self.row0 = (torch.arange(batch * self.groups, device=device) * (length + 2 * PAD) + PAD).view(
            batch, self.groups, 1
        )
        shape = (batch, self.groups, self.l_out)
        self._pos = workspace.get("pos", shape, pos_dtype, device)
        self._frac = workspace.get("frac", shape, pos_dtype, device)
        self._left = workspace.get("left_index", shape, torch.long, device)
        self._right = workspace.get("right_index", shape, torch.long, device)

    def indices(self, tap: int) -> tuple[Tensor, Tensor, Tensor]:
        """Flat row indices of the left and right neighbours, and the fraction ``(B, G, L_out)``.

        The returned tensors are views of buffers that the next call overwrites.
        """
        off = self.offset[:, :, tap]
        pos, frac = self._pos, self._frac
        if off.dtype == pos.dtype:
            torch.floor(off, out=pos)
            torch.sub(off, pos, out=frac)
        else:  # widen first (exact), e.g. bf16 offsets
            frac.copy_(off)
            torch.floor(frac, out=pos)
            frac.sub_(pos)
        # A NaN offset gives a NaN fraction (so a NaN output); its position only has to be valid.
        torch.nan_to_num_(pos, nan=0.0)
        pos.add_(self.base + tap * self.dilation).clamp_(-PAD, self.length)
        left = self._left
        left.copy_(pos)
        left.add_(self.row0)
        torch.add(left, 1, out=self._right)
        return left.view(-1), self._right.view(-1), frac


def to_rows(x: Tensor, groups: int) -> Tensor:
    """``(B, C, L)`` -> ``(B * G * (L + 4), C / G)``: offset-group-major rows, two zero rows at each end.

    The result is a workspace buffer.
    """
    batch, channels, length = x.shape
    rows = workspace.get("rows", (batch, groups, length + 2 * PAD, channels // groups), x.dtype, x.device)
    rows[:, :, :PAD].zero_()
    rows[:, :, -PAD:].zero_()
    rows[:, :, PAD:-PAD].copy_(x.view(batch, groups, channels // groups, length).transpose(2, 3))
    return rows.view(-1, channels // groups)


def copy_to_channels_first(out: Tensor, rows: Tensor) -> Tensor:
    """``out[b, g, c, t] = rows[b, g, t, c]``: the transposing copy back to channels-first.

    Done in slabs of frames that stay in cache, which was faster here than one ``copy_``.
    """
    per_group, length = rows.shape[-1], rows.shape[-2]
    if per_group == 1:
        return out.copy_(rows.transpose(-1, -2))
    step = max(64, 2**19 // (per_group * rows.element_size()))
    for start in range(0, length, step):
        out[..., start : start + step].copy_(rows[..., start : start + step, :].transpose(-1, -2))
    return out


def from_rows(rows: Tensor, batch: int, groups: int, length: int) -> Tensor:
    """Inverse of :func:`to_rows` without the zero rows: ``-> (B, C, L)``, a new tensor."""
    per_group = rows.shape[-1]
    out = rows.new_empty(batch, groups * per_group, length)
    rows = rows.view(batch, groups, length + 2 * PAD, per_group)[:, :, PAD:-PAD]
    copy_to_channels_first(out.view(batch, groups, per_group, length), rows)
    return out


def flat(t: Tensor) -> Tensor:
    """Row view for ``index_select``/``index_add_``; 1-D when rows hold one channel (much faster)."""
    return t.view(-1) if t.shape[-1] == 1 else t.view(-1, t.shape[-1])


class Sampler:
    """Reads the two neighbours of every tap position and combines them, in row layout
    ``(B, G, L_out, Cg)``.

    Rows of several channels go through ``embedding_bag`` (bags of two rows with per-sample
    weights): one fused, vectorised pass that reads both rows and writes their weighted sum,
    faster here than two row gathers and a ``lerp``. Single-channel rows (per-channel
    offsets) use two flat gathers into workspace buffers and a ``lerp`` instead.
    """

    def __init__(self, rows: Tensor, taps: Taps, shape: tuple[int, ...]):
        self.rows, self.taps, self.shape = rows, taps, shape
        self.bags = rows.shape[-1] > 1
        self.left = self.right = self.frac = None
        dtype, device = rows.dtype, rows.device
        if self.bags:
            n = math.prod(shape[:-1])
            self.pair = workspace.get("pair_index", (n, 2), torch.long, device)
            self.weights = workspace.get("pair_weight", (n, 2), dtype, device)
        else:
            self.bufs = {s: workspace.get(f"sample_{s}", shape, dtype, device) for s in "ab"}
            self.other = workspace.get("sample_other", shape, dtype, device)

    def select(self, tap: int) -> None:
        """Compute the tap's indices and fraction (``self.left``, ``self.right``, ``self.frac``)."""
        self.left, self.right, frac = self.taps.indices(tap)
        self.frac = frac.to(self.rows.dtype).unsqueeze(-1)  # (B, G, L_out, 1)
        if self.bags:
            torch.stack((self.left, self.right), dim=1, out=self.pair)

    def _bag(self) -> Tensor:
        return F.embedding_bag(self.pair, self.rows, mode="sum", per_sample_weights=self.weights).view(self.shape)

    def _gather(self, slot: str) -> tuple[Tensor, Tensor]:
        left, right = self.bufs[slot], self.other
        torch.index_select(flat(self.rows), 0, self.left, out=flat(left))
        torch.index_select(flat(self.rows), 0, self.right, out=flat(right))
        return left, right

    def lerp(self, slot: str, mask: Tensor | None = None) -> Tensor:
        """``mask * ((1 - f) x[left] + f x[right])``: the (modulated) samples of the tap."""
        if self.bags:
            self.weights[:, 1] = self.frac.view(-1)
            torch.sub(1, self.weights[:, 1], out=self.weights[:, 0])
            if mask is not None:
                self.weights.mul_(mask.reshape(-1, 1))
            return self._bag()
        left, right = self._gather(slot)
        left.lerp_(right, self.frac)
        return left.mul_(mask) if mask is not None else left

    def diff(self, slot: str) -> Tensor:
        """``x[right] - x[left]``: the derivative from the right, also at integer positions."""
        if self.bags:
            self.weights[:, 0], self.weights[:, 1] = -1.0, 1.0
            return self._bag()
        left, right = self._gather(slot)
        return torch.sub(right, left, out=left)
