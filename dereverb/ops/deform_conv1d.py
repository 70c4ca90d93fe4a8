"""1-D deformable convolution as a pure-PyTorch autograd function.

The sampling rule, stated once and relied on everywhere (tests pin it):

    Tap ``k`` of output frame ``t`` in offset group ``g`` reads the input at the
    fractional position ``p = t * stride - pad_left + k * dilation + offset[b, g*K + k, t]``
    with linear interpolation ``(1 - f) * x[floor(p)] + f * x[floor(p) + 1]``,
    ``f = p - floor(p)``. Samples outside ``[0, L)`` read as zero, each neighbour
    separately, so a tap half outside the signal fades out. No clamping of offsets.

Implementation notes (see ``shared/DEFORMCONV-NOTES.md`` for the measurements behind them):

* The input is laid out once per call as *rows*: ``(B, G, L + 4, C / G)`` with two zero rows
  at each end, ``G`` being the number of offset groups. All channels of an offset group
  share an index, so the two neighbours of a tap are two rows, and ``embedding_bag`` (sum
  mode, per-sample weights ``(1 - f, f)``) reads both and writes the interpolated row in one
  fused pass; weights ``(-1, 1)`` give the difference the offset gradient needs. The input
  gradient is a row ``index_add_``. Positions outside the signal are clamped onto the zero
  rows, which is exactly "reads as zero". One-channel rows (per-channel offsets) use flat
  gathers instead.
* Nothing of size ``(B, C, K, L_out)`` is kept for the backward pass: it keeps the input,
  the offsets, the mask and the weight, and recomputes each tap.
* Scratch buffers are reused across taps and, on the CPU, across calls (see
  :class:`_Workspace`): with the default glibc allocator, every fresh large tensor costs
  page faults.
* The integer part and the fraction of a position are computed from the offset alone
  (``floor(offset)`` and ``offset - floor(offset)``), so the fraction keeps the offset's
  full precision however long the signal is.
* At integer positions the offset gradient is the one-sided difference
  ``x[i + 1] - x[i]``, the derivative from the right: the value that training starts from
  when offset predictors are zero-initialised.
"""

from __future__ import annotations

import math
import threading

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

__all__ = ["conv1d_output_length", "deform_conv1d", "release_workspace", "resolve_padding"]


def resolve_padding(
    padding: int | str | tuple[int] | tuple[int, int], kernel_size: int, dilation: int, stride: int
) -> tuple[int, int]:
    """Return ``(pad_left, pad_right)`` for a ``padding`` argument.

    Args:
        padding: what ``F.conv1d`` accepts (an int, a 1-tuple, ``"valid"``, or ``"same"``, which
            needs ``stride == 1`` and puts the extra sample of an odd total on the right), or a
            2-tuple ``(left, right)``, an extension used for causal convolutions.
        kernel_size: number of taps ``K``.
        dilation: spacing between taps.
        stride: step between output frames.

    Returns:
        ``(pad_left, pad_right)`` in samples.

    Example:
        >>> resolve_padding("same", kernel_size=3, dilation=64, stride=1)
        (64, 64)
        >>> resolve_padding("same", kernel_size=4, dilation=1, stride=1)
        (1, 2)
        >>> resolve_padding((4, 0), kernel_size=3, dilation=2, stride=1)  # causal
        (4, 0)
    """
    if isinstance(padding, str):
        if padding == "valid":
            return 0, 0
        if padding == "same":
            if stride != 1:
                raise ValueError(f"padding='same' is not supported for strided convolutions (stride={stride})")
            total = dilation * (kernel_size - 1)
            return total // 2, total - total // 2
        raise ValueError(f"padding must be an int, a (left, right) tuple, 'valid' or 'same', got {padding!r}")
    pads = tuple(padding) if isinstance(padding, (tuple, list)) else (padding, padding)
    if len(pads) == 1:
        pads = pads * 2
    if len(pads) != 2 or any(isinstance(p, bool) or not isinstance(p, int) or p < 0 for p in pads):
        raise ValueError(
            f"padding must be a non-negative int, a (left, right) tuple of them, 'valid' or 'same', got {padding!r}"
        )
    return pads


def conv1d_output_length(
    length: int, kernel_size: int, stride: int, pad_left: int, pad_right: int, dilation: int
) -> int:
    """Number of output frames of a 1-D convolution (the formula of ``nn.Conv1d``).

    Example:
        >>> conv1d_output_length(4000, kernel_size=3, stride=1, pad_left=1, pad_right=1, dilation=1)
        4000
    """
    return (length + pad_left + pad_right - dilation * (kernel_size - 1) - 1) // stride + 1


def _positive_int(name: str, value) -> int:
    if isinstance(value, (tuple, list)) and len(value) == 1:
        value = value[0]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def _shape(t: Tensor) -> str:
    return "[" + ", ".join(str(s) for s in t.shape) + "]"


def deform_conv1d(
    input: Tensor,
    offset: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: int = 1,
    padding: int | str | tuple[int] | tuple[int, int] = 0,
    dilation: int = 1,
    groups: int = 1,
    mask: Tensor | None = None,
) -> Tensor:
    r"""1-D deformable convolution (DCNv1), with optional modulation (DCNv2).

    Tap ``k`` of output frame ``t`` reads the input at
    ``t * stride - pad_left + k * dilation + offset``, with linear interpolation between
    the two neighbouring samples; samples outside the signal read as zero. With zero offsets
    (and no mask, or a mask of ones) the result equals :func:`torch.nn.functional.conv1d`.

    Args:
        input (Tensor[B, C_in, L]): input signal.
        offset (Tensor[B, offset_groups * K, L_out]): fractional offsets in input samples,
            tap-major within each offset group (channel ``g * K + k`` is tap ``k`` of group
            ``g``). ``offset_groups`` is inferred from this shape and must divide ``C_in``;
            input channel ``c`` uses group ``c // (C_in / offset_groups)``.
        weight (Tensor[C_out, C_in / groups, K]): convolution weights.
        bias (Tensor[C_out], optional): added to every output frame.
        stride (int): step between output frames. Default: 1.
        padding (int, tuple or str): zero padding on both sides, ``"valid"`` or ``"same"``
            (stride 1 only; an odd total puts the extra sample on the right, as PyTorch), or
            ``(left, right)``, e.g. ``(dilation * (K - 1), 0)`` for a causal convolution.
        dilation (int): spacing between taps. Default: 1.
        groups (int): blocked connections from input to output channels, as in ``F.conv1d``.
        mask (Tensor[B, offset_groups * K, L_out], optional): modulation scalars multiplying
            each sampled value (DCNv2). Default: none (a mask of ones).

    Returns:
        Tensor[B, C_out, L_out]: the output, with
        ``L_out = (L + pad_left + pad_right - dilation * (K - 1) - 1) // stride + 1``.

    Differentiable with respect to ``input``, ``offset``, ``weight``, ``bias`` and ``mask``
    (first order). Works on any device and floating dtype the tensors are on; under autocast
    the input, weight, bias and mask are cast to the autocast dtype, as ``F.conv1d`` is.

    References:
        Dai et al., "Deformable Convolutional Networks", ICCV 2017.
        Zhu et al., "Deformable ConvNets v2: More Deformable, Better Results", CVPR 2019.
        Ravenscroft et al., "Deformable Temporal Convolutional Networks for Monaural
        Noisy Reverberant Speech Separation", ICASSP 2023.

    Example:
        >>> import torch
        >>> from dereverb.ops import deform_conv1d
        >>> x = torch.arange(6.0).view(1, 1, 6)
        >>> w = torch.ones(1, 1, 1)
        >>> shift = torch.full((1, 1, 6), 1.0)  # every output reads one sample later
        >>> deform_conv1d(x, shift, w)
        tensor([[[1., 2., 3., 4., 5., 0.]]])
        >>> deform_conv1d(x, torch.full((1, 1, 6), 0.5), w)  # halfway between neighbours
        tensor([[[0.5000, 1.5000, 2.5000, 3.5000, 4.5000, 2.5000]]])
    """
    if input.dim() != 3:
        raise ValueError(f"expected input of shape [B, C_in, L], got {_shape(input)}")
    if weight.dim() != 3:
        raise ValueError(f"expected weight of shape [C_out, C_in / groups, K], got {_shape(weight)}")
    stride = _positive_int("stride", stride)
    dilation = _positive_int("dilation", dilation)
    groups = _positive_int("groups", groups)
    batch, c_in, length = input.shape
    c_out, c_in_per_group, k = weight.shape
    if k < 1:
        raise ValueError(f"weight must have at least one tap, got shape {_shape(weight)}")
    if c_in % groups or c_out % groups:
        raise ValueError(f"groups={groups} must divide C_in={c_in} and C_out={c_out}")
    if c_in_per_group * groups != c_in:
        raise ValueError(
            f"expected weight of shape [C_out, {c_in // groups}, K] for C_in={c_in} and groups={groups}, "
            f"got {_shape(weight)}"
        )
    pad_left, pad_right = resolve_padding(padding, k, dilation, stride)
    l_out = conv1d_output_length(length, k, stride, pad_left, pad_right, dilation)
    if l_out < 1:
        raise RuntimeError(
            f"input length {length} with padding ({pad_left}, {pad_right}) is shorter than the "
            f"kernel's extent {dilation * (k - 1) + 1}: no output frame"
        )
    if offset.dim() != 3 or offset.shape[0] != batch or offset.shape[2] != l_out or offset.shape[1] % k:
        raise ValueError(
            f"expected offset of shape [{batch}, offset_groups * {k}, {l_out}] "
            f"(B, offset_groups * K, L_out), got {_shape(offset)}"
        )
    offset_groups = offset.shape[1] // k
    if offset_groups < 1 or c_in % offset_groups:
        raise ValueError(
            f"offset has {offset.shape[1]} channels = {offset_groups} offset groups x {k} taps, "
            f"but offset_groups must be >= 1 and divide C_in={c_in}"
        )
    if mask is not None and mask.shape != offset.shape:
        raise ValueError(f"expected mask of the offset's shape {_shape(offset)}, got {_shape(mask)}")
    if bias is not None and tuple(bias.shape) != (c_out,):
        raise ValueError(f"expected bias of shape [{c_out}], got {_shape(bias)}")
    for name, t in (("offset", offset), ("mask", mask)):
        if t is not None and not t.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor, got {t.dtype}")
    tensors = [t for t in (input, offset, weight, bias, mask) if t is not None]
    if len({t.device for t in tensors}) != 1:
        raise RuntimeError(f"all tensors must be on one device, got {sorted({str(t.device) for t in tensors})}")

    if torch.is_autocast_enabled(input.device.type):
        dtype = torch.get_autocast_dtype(input.device.type)
        input, weight = input.to(dtype), weight.to(dtype)
        bias = bias.to(dtype) if bias is not None else None
        mask = mask.to(dtype) if mask is not None else None
        with torch.autocast(input.device.type, enabled=False):
            return _DeformConv1d.apply(input, offset, weight, bias, mask, stride, pad_left, dilation, groups)
    if weight.dtype != input.dtype or (bias is not None and bias.dtype != input.dtype):
        raise TypeError(f"input ({input.dtype}), weight ({weight.dtype}) and bias must have the same dtype")
    return _DeformConv1d.apply(input, offset, weight, bias, mask, stride, pad_left, dilation, groups)


_PAD = 2  # zero rows at each end of the row layout: clamped positions land on them


class _Workspace(threading.local):
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


_workspace = _Workspace()


def release_workspace() -> None:
    """Free the scratch buffers that :func:`deform_conv1d` keeps between calls on this thread.

    Example:
        >>> release_workspace()
    """
    _workspace.buffers.clear()


class _Taps:
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
        self.row0 = (torch.arange(batch * self.groups, device=device) * (length + 2 * _PAD) + _PAD).view(
            batch, self.groups, 1
        )
        shape = (batch, self.groups, self.l_out)
        self._pos = _workspace.get("pos", shape, pos_dtype, device)
        self._frac = _workspace.get("frac", shape, pos_dtype, device)
        self._left = _workspace.get("left_index", shape, torch.long, device)
        self._right = _workspace.get("right_index", shape, torch.long, device)

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
        pos.add_(self.base + tap * self.dilation).clamp_(-_PAD, self.length)
        left = self._left
        left.copy_(pos)
        left.add_(self.row0)
        torch.add(left, 1, out=self._right)
        return left.view(-1), self._right.view(-1), frac


def _to_rows(x: Tensor, groups: int) -> Tensor:
    """``(B, C, L)`` -> ``(B * G * (L + 4), C / G)``: offset-group-major rows, two zero rows at each end.

    The result is a workspace buffer.
    """
    batch, channels, length = x.shape
    rows = _workspace.get("rows", (batch, groups, length + 2 * _PAD, channels // groups), x.dtype, x.device)
    rows[:, :, :_PAD].zero_()
    rows[:, :, -_PAD:].zero_()
    rows[:, :, _PAD:-_PAD].copy_(x.view(batch, groups, channels // groups, length).transpose(2, 3))
    return rows.view(-1, channels // groups)


def _copy_to_channels_first(out: Tensor, rows: Tensor) -> Tensor:
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


def _from_rows(rows: Tensor, batch: int, groups: int, length: int) -> Tensor:
    """Inverse of :func:`_to_rows` without the zero rows: ``-> (B, C, L)``, a new tensor."""
    per_group = rows.shape[-1]
    out = rows.new_empty(batch, groups * per_group, length)
    rows = rows.view(batch, groups, length + 2 * _PAD, per_group)[:, :, _PAD:-_PAD]
    _copy_to_channels_first(out.view(batch, groups, per_group, length), rows)
    return out


def _flat(t: Tensor) -> Tensor:
    """Row view for ``index_select``/``index_add_``; 1-D when rows hold one channel (much faster)."""
    return t.view(-1) if t.shape[-1] == 1 else t.view(-1, t.shape[-1])


def _sum_channels(t: Tensor, out: Tensor) -> Tensor:
    """Sum ``t: (B, G, L, Cg)`` over its channels into the strided view ``out: (B, G, L)``."""
    if t.shape[-1] == 1:
        return out.copy_(t[..., 0])
    return torch.sum(t, -1, out=out) if out.dtype == t.dtype else out.copy_(t.sum(-1))


def _to_cols(t: Tensor, groups: int) -> Tensor:
    """Row layout ``(B, G, L_out, Cg)`` -> ``(groups, B * L_out, C_in / groups)`` for a grouped matmul."""
    batch, _, l_out, _ = t.shape
    return t.transpose(1, 2).reshape(batch * l_out, groups, -1).transpose(0, 1)


class _Sampler:
    """Reads the two neighbours of every tap position and combines them, in row layout
    ``(B, G, L_out, Cg)``.

    Rows of several channels go through ``embedding_bag`` (bags of two rows with per-sample
    weights): one fused, vectorised pass that reads both rows and writes their weighted sum,
    faster here than two row gathers and a ``lerp``. Single-channel rows (per-channel
    offsets) use two flat gathers into workspace buffers and a ``lerp`` instead.
    """

    def __init__(self, rows: Tensor, taps: _Taps, shape: tuple[int, ...]):
        self.rows, self.taps, self.shape = rows, taps, shape
        self.bags = rows.shape[-1] > 1
        self.left = self.right = self.frac = None
        dtype, device = rows.dtype, rows.device
        if self.bags:
            n = math.prod(shape[:-1])
            self.pair = _workspace.get("pair_index", (n, 2), torch.long, device)
            self.weights = _workspace.get("pair_weight", (n, 2), dtype, device)
        else:
            self.bufs = {s: _workspace.get(f"sample_{s}", shape, dtype, device) for s in "ab"}
            self.other = _workspace.get("sample_other", shape, dtype, device)

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
        torch.index_select(_flat(self.rows), 0, self.left, out=_flat(left))
        torch.index_select(_flat(self.rows), 0, self.right, out=_flat(right))
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


def _dot_channels(t: Tensor, w: Tensor) -> Tensor:
    """``sum_c t[b, g, l, c] * w[g, c]`` for ``t: (B, G, L, Cg)``, ``w: (G, 1, Cg)`` -> ``(B, G, L)``."""
    if t.shape[-1] == 1:
        return t[..., 0] * w[:, 0]
    return torch.matmul(t, w.transpose(1, 2)).squeeze(-1)


class _DeformConv1d(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, offset, weight, bias, mask, stride, pad_left, dilation, groups):
        batch, c_in, length = x.shape
        c_out, c_in_per_group, k = weight.shape
        ctx.meta = (stride, pad_left, dilation, groups)
        ctx.shape = x.shape
        og, l_out = offset.shape[1] // k, offset.shape[2]
        if batch == 0:
            ctx.save_for_backward(x, offset, weight, mask)
            return x.new_zeros(0, c_out, l_out)

        cpg = c_in // og  # channels per offset group
        depthwise = groups == c_in == c_out
        shape = (batch, og, l_out, cpg)
        sampler = _Sampler(_to_rows(x, og), _Taps(batch, length, offset, k, stride, pad_left, dilation), shape)
        if depthwise:
            acc = _workspace.get("c", shape, x.dtype, x.device)
            w = weight.view(og, cpg, k).unsqueeze(1)  # (G, 1, Cg, K)
        else:
            acc = _workspace.get("c", (groups, batch * l_out, c_out // groups), x.dtype, x.device).zero_()
            w = weight.view(groups, c_out // groups, c_in_per_group, k)

        for tap in range(k):
            sampler.select(tap)
            m = mask.view(batch, og, k, l_out)[:, :, tap].unsqueeze(-1).to(x.dtype) if mask is not None else None
            sample = sampler.lerp("a", m)
            if not depthwise:
                acc.baddbmm_(_to_cols(sample, groups), w[..., tap].transpose(1, 2))
            elif tap == 0:
                if bias is None:
                    torch.mul(sample, w[..., 0], out=acc)
                else:  # the bias is added here, saving a pass over the output
                    torch.addcmul(bias.view(og, 1, cpg), sample, w[..., 0], out=acc)
            else:
                acc.addcmul_(sample, w[..., tap])

        # A new tensor (never a view of the workspace), in the channels-first layout.
        out = x.new_empty(batch, c_out, l_out)
        if depthwise:
            _copy_to_channels_first(out.view(batch, og, cpg, l_out), acc)
        else:
            out.view(batch, groups, c_out // groups, l_out).copy_(
                acc.view(groups, batch, l_out, c_out // groups).permute(1, 0, 3, 2)
            )
            if bias is not None:
                out.add_(bias.view(1, -1, 1))
        # The rows are a workspace buffer: the backward pass rebuilds them from x, which the
        # graph keeps alive anyway, instead of holding a second copy of every layer's input.
        ctx.save_for_backward(x, offset, weight, mask)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        x, offset, weight, mask = ctx.saved_tensors
        stride, pad_left, dilation, groups = ctx.meta
        batch, c_in, length = ctx.shape
        need_x, need_off, need_w, need_b, need_m = ctx.needs_input_grad[:5]
        grad_b = grad_out.sum((0, 2)) if need_b else None
        if batch == 0:
            return (
                torch.zeros(ctx.shape, dtype=weight.dtype, device=weight.device) if need_x else None,
                torch.zeros_like(offset) if need_off else None,
                torch.zeros_like(weight) if need_w else None,
                grad_b,
                torch.zeros_like(mask) if need_m else None,
            ) + (None,) * 4

        c_out, c_in_per_group, k = weight.shape
        dtype, device = x.dtype, x.device
        og, l_out = offset.shape[1] // k, offset.shape[2]
        cpg = c_in // og
        depthwise = groups == c_in == c_out
        shape = (batch, og, l_out, cpg)
        rows = _to_rows(x, og)
        sampler = _Sampler(rows, _Taps(batch, length, offset, k, stride, pad_left, dilation), shape)
        tmp = _workspace.get("c", shape, dtype, device)
        grad_rows = _workspace.get("grad_rows", rows.shape, dtype, device).zero_() if need_x else None
        grad_w = torch.empty_like(weight) if need_w else None
        grad_off = torch.empty_like(offset).view(batch, og, k, l_out) if need_off else None
        grad_m = torch.empty_like(mask).view(batch, og, k, l_out) if need_m else None

        if depthwise:
            # (B, G, L_out, Cg): the output gradient in the samples' row layout.
            gy = _workspace.get("d", shape, dtype, device)
            gy.copy_(grad_out.view(batch, og, cpg, l_out).transpose(2, 3))
            w = weight.view(og, cpg, k).unsqueeze(1)
            grad_s = _workspace.get("e", shape, dtype, device)
        else:
            cog = c_out // groups
            gy = grad_out.reshape(batch, groups, cog, l_out).permute(1, 0, 3, 2).reshape(groups, batch * l_out, cog)
            w = weight.view(groups, cog, c_in_per_group, k)
            grad_cols = _workspace.get("e", (groups, batch * l_out, c_in_per_group), dtype, device)

        for tap in range(k):
            sampler.select(tap)
            m = mask.view(batch, og, k, l_out)[:, :, tap].to(dtype).unsqueeze(-1) if mask is not None else None
            if need_off:
                diff = sampler.diff("a")  # x[i + 1] - x[i]
            if need_m or need_w:
                interp = sampler.lerp("b")  # the sample before modulation
            if depthwise:
                # d/d offset = m sum_c w_c gy_c diff_c; d/d mask = sum_c w_c gy_c interp_c;
                # d/d w_c = sum_bt m gy_c interp_c.
                if need_off:
                    g = _dot_channels(diff.mul_(gy), w[..., tap])
                    grad_off[:, :, tap] = g * m[..., 0] if m is not None else g
                if need_m or need_w:
                    interp.mul_(gy)
                    if need_m:
                        grad_m[:, :, tap] = _dot_channels(interp, w[..., tap])
                    if need_w:
                        if m is None:
                            grad_w[:, 0, tap] = interp.sum((0, 2)).view(-1)
                        elif cpg == 1:
                            grad_w[:, 0, tap] = (interp * m).sum((0, 2)).view(-1)
                        else:
                            grad_w[:, 0, tap] = torch.matmul(m.transpose(2, 3), interp).sum(0).view(-1)
                if need_x:
                    torch.mul(gy, w[..., tap], out=grad_s)
            else:
                torch.bmm(gy, w[..., tap], out=grad_cols)
                grad_s = grad_cols.view(groups, batch, l_out, c_in_per_group).permute(1, 2, 0, 3)
                grad_s = grad_s.reshape(batch, l_out, og, cpg).transpose(1, 2).contiguous()
                if need_off:
                    torch.mul(grad_s, diff, out=tmp)
                    _sum_channels(tmp, grad_off[:, :, tap])
                    if m is not None:
                        grad_off[:, :, tap].mul_(m[..., 0])
                if need_m:
                    torch.mul(grad_s, interp, out=tmp)
                    _sum_channels(tmp, grad_m[:, :, tap])
                if need_w:
                    if m is not None:
                        interp.mul_(m)
                    grad_w[..., tap] = torch.bmm(gy.transpose(1, 2), _to_cols(interp, groups)).view(c_out, -1)
            if need_x:
                if m is not None:
                    grad_s.mul_(m)
                # The right neighbour receives f * g, the left one (1 - f) * g.
                torch.mul(grad_s, sampler.frac, out=tmp)
                _flat(grad_rows).index_add_(0, sampler.right, _flat(tmp))
                grad_s.sub_(tmp)
                _flat(grad_rows).index_add_(0, sampler.left, _flat(grad_s))

        grad_x = _from_rows(grad_rows, batch, og, length) if need_x else None
        return (
            grad_x,
            grad_off.view_as(offset) if need_off else None,
            grad_w,
            grad_b,
            grad_m.view_as(mask) if need_m else None,
        ) + (None,) * 4
