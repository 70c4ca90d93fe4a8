"""1-D deformable convolution as a pure-PyTorch autograd function: the functional operator.

The sampling rule, stated once and relied on everywhere (tests pin it):

    Tap ``k`` of output frame ``t`` in offset group ``g`` reads the input at the
    fractional position ``p = t * stride - pad_left + k * dilation + offset[b, g*K + k, t]``
    with linear interpolation ``(1 - f) * x[floor(p)] + f * x[floor(p) + 1]``,
    ``f = p - floor(p)``. Samples outside ``[0, L)`` read as zero, each neighbour
    separately, so a tap half outside the signal fades out. No clamping of offsets.

This module checks the arguments and resolves the padding; the forward and backward passes are
in :mod:`dereverb.ops.deform_conv1d_autograd`, the row layout, taps and scratch workspace they
share in :mod:`dereverb.ops.deform_conv1d_sampling` (``shared/DEFORMCONV-NOTES.md`` has the
measurements behind their design).
"""

from __future__ import annotations

import torch
from torch import Tensor

from dereverb.ops.deform_conv1d_autograd import DeformConv1dFunction
from dereverb.ops.deform_conv1d_sampling import release_workspace

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


def _check_arguments(input, offset, weight, bias, mask, stride, padding, dilation, groups) -> tuple[int, int, int, int]:
    """Check the arguments of :func:`deform_conv1d`; return ``(stride, pad_left, dilation, groups)``.

    Raises:
        ValueError: a shape, a size or a convolution parameter is wrong (the message names the
            expected and the actual sizes).
        TypeError: the offset or the mask is not a floating-point tensor.
        RuntimeError: the input is too short for one output frame, or the tensors are on
            several devices.
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
    return stride, pad_left, dilation, groups


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
    stride, pad_left, dilation, groups = _check_arguments(
        input, offset, weight, bias, mask, stride, padding, dilation, groups
    )
    if torch.is_autocast_enabled(input.device.type):
        dtype = torch.get_autocast_dtype(input.device.type)
        input, weight = input.to(dtype), weight.to(dtype)
        bias = bias.to(dtype) if bias is not None else None
        mask = mask.to(dtype) if mask is not None else None
        with torch.autocast(input.device.type, enabled=False):
            return DeformConv1dFunction.apply(input, offset, weight, bias, mask, stride, pad_left, dilation, groups)
    if weight.dtype != input.dtype or (bias is not None and bias.dtype != input.dtype):
        raise TypeError(f"input ({input.dtype}), weight ({weight.dtype}) and bias must have the same dtype")
    return DeformConv1dFunction.apply(input, offset, weight, bias, mask, stride, pad_left, dilation, groups)
