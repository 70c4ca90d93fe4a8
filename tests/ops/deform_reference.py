"""Reference implementations and test cases shared by the operator's tests: a naive deformable
convolution written from its definition, shifted convolutions for integer offsets, random inputs.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

F64 = torch.float64


def randn(*shape: int, device: torch.device, dtype: torch.dtype = F64, scale: float = 1.0) -> torch.Tensor:
    """Standard normal tensor drawn on the CPU (same values on every device), then moved."""
    return (torch.randn(*shape, dtype=F64) * scale).to(device=device, dtype=dtype)


def fractional_offsets(*shape: int, device: torch.device, scale: float = 2.0) -> torch.Tensor:
    """Random float64 offsets whose fractional part lies in [0.1, 0.9] (away from the kinks at integers)."""
    raw = torch.randn(*shape, dtype=F64) * scale
    whole = torch.floor(raw)
    return (whole + 0.1 + 0.8 * (raw - whole)).to(device)


def ref_padding(padding, kernel_size: int, dilation: int) -> tuple[int, int]:
    """Independent ``(pad_left, pad_right)``: PyTorch's rule, the extra sample of an odd "same" on the right.

    A 2-tuple is the operator's ``(left, right)`` extension (causal convolutions).
    """
    if padding == "valid":
        return 0, 0
    if padding == "same":
        total = dilation * (kernel_size - 1)
        return total // 2, total - total // 2
    if isinstance(padding, tuple):
        return (padding[0], padding[0]) if len(padding) == 1 else padding
    return padding, padding


def ref_out_len(length: int, kernel_size: int, stride: int, padding, dilation: int) -> int:
    """Output length of ``F.conv1d`` for the same arguments."""
    pad_left, pad_right = ref_padding(padding, kernel_size, dilation)
    return (length + pad_left + pad_right - dilation * (kernel_size - 1) - 1) // stride + 1


def naive_deform_conv1d(x, offset, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, mask=None):
    """Direct transcription of the sampling rule with Python loops in float64 (the ground truth).

    Tap ``k`` of frame ``t`` reads ``p = t * stride - pad_left + k * dilation + offset`` as
    ``(1 - f) * x[floor(p)] + f * x[floor(p) + 1]``, each neighbour reading 0 outside ``[0, L)``.
    """
    batch, c_in, length = x.shape
    c_out, c_per_group, k_size = weight.shape
    pad_left, _ = ref_padding(padding, k_size, dilation)
    l_out = ref_out_len(length, k_size, stride, padding, dilation)
    c_per_offset_group = c_in // (offset.shape[1] // k_size)
    c_out_per_group = c_out // groups
    xs = x.detach().cpu().double().tolist()
    offs = offset.detach().cpu().double().tolist()
    ws = weight.detach().cpu().double().tolist()
    bs = bias.detach().cpu().double().tolist() if bias is not None else [0.0] * c_out
    ms = mask.detach().cpu().double().tolist() if mask is not None else None

    def at(b: int, c: int, i: int) -> float:
        return xs[b][c][i] if 0 <= i < length else 0.0

    out = []
    for b in range(batch):
        out_b = []
        for o in range(c_out):
            g = o // c_out_per_group
            out_bo = []
            for t in range(l_out):
                acc = bs[o]
                for k in range(k_size):
                    for ci in range(c_per_group):
                        c = g * c_per_group + ci
                        row = (c // c_per_offset_group) * k_size + k
                        p = t * stride - pad_left + k * dilation + offs[b][row][t]
                        i = math.floor(p)
                        f = p - i
                        value = (1.0 - f) * at(b, c, i) + f * at(b, c, i + 1)
                        if ms is not None:
                            value *= ms[b][row][t]
                        acc += ws[o][ci][k] * value
                out_bo.append(acc)
            out_b.append(out_bo)
        out.append(out_b)
    return torch.tensor(out, dtype=F64).view(batch, c_out, l_out)


def make_case(
    device,
    *,
    batch=2,
    c_in=4,
    c_out=4,
    length=11,
    k=3,
    stride=1,
    padding=0,
    dilation=1,
    groups=1,
    offset_groups=1,
    with_mask=False,
    with_bias=False,
    offset_scale=3.0,
):
    """Random float64 ``(x, offset, weight, bias, mask, kwargs)`` for one configuration."""
    l_out = ref_out_len(length, k, stride, padding, dilation)
    x = randn(batch, c_in, length, device=device)
    offset = randn(batch, offset_groups * k, l_out, device=device, scale=offset_scale)
    weight = randn(c_out, c_in // groups, k, device=device)
    bias = randn(c_out, device=device) if with_bias else None
    mask = torch.rand(batch, offset_groups * k, l_out, dtype=F64).to(device) if with_mask else None
    kwargs = {"stride": stride, "padding": padding, "dilation": dilation, "groups": groups}
    return x, offset, weight, bias, mask, kwargs


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """Relative error of the norm: ``|a - b| / |b|`` (both taken in float64)."""
    a, b = a.detach().double(), b.detach().double()
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def shift(x: torch.Tensor, s: int) -> torch.Tensor:
    """``y[..., j] = x[..., j + s]``, zeros where ``j + s`` falls outside ``x``."""
    length = x.shape[-1]
    y = torch.zeros_like(x)
    if abs(s) >= length:
        return y
    if s >= 0:
        y[..., : length - s] = x[..., s:]
    else:
        y[..., -s:] = x[..., : length + s]
    return y


def integer_offset_reference(x, weight, tap_shifts, stride, padding, dilation, groups):
    """``F.conv1d`` reference for integer offsets: tap ``k`` reads the zero-padded input shifted by ``tap_shifts[k]``.

    Built from one 1-tap convolution per tap of the shifted, zero-padded signal.
    """
    k_size = weight.shape[-1]
    pad_left, pad_right = ref_padding(padding, k_size, dilation)
    l_out = ref_out_len(x.shape[-1], k_size, stride, padding, dilation)
    xp = F.pad(x, (pad_left, pad_right))
    out = 0
    for k, s in enumerate(tap_shifts):
        tap = F.conv1d(shift(xp, k * dilation + s), weight[..., k : k + 1], stride=stride, groups=groups)
        out = out + tap[..., :l_out]
    return out
