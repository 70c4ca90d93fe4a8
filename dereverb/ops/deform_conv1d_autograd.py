"""The autograd function behind :func:`dereverb.ops.deform_conv1d`: forward and backward passes.

Internal to the operator, which checks the arguments and calls :class:`DeformConv1dFunction`.
The sampling machinery (row layout, taps, scratch workspace) is in
:mod:`dereverb.ops.deform_conv1d_sampling`.

* Nothing of size ``(B, C, K, L_out)`` is kept for the backward pass: it keeps the input,
  the offsets, the mask and the weight, and recomputes each tap. The input gradient is a row
  ``index_add_`` per neighbour.
* At integer positions the offset gradient is the one-sided difference
  ``x[i + 1] - x[i]``, the derivative from the right: the value that training starts from
  when offset predictors are zero-initialised.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from dereverb.ops.deform_conv1d_sampling import (
    Sampler,
    Taps,
    copy_to_channels_first,
    flat,
    from_rows,
    to_rows,
    workspace,
)

__all__ = ["DeformConv1dFunction"]


def _sum_channels(t: Tensor, out: Tensor) -> Tensor:
    """Sum ``t: (B, G, L, Cg)`` over its channels into the strided view ``out: (B, G, L)``."""
    if t.shape[-1] == 1:
        return out.copy_(t[..., 0])
    return torch.sum(t, -1, out=out) if out.dtype == t.dtype else out.copy_(t.sum(-1))


def _to_cols(t: Tensor, groups: int) -> Tensor:
    """Row layout ``(B, G, L_out, Cg)`` -> ``(groups, B * L_out, C_in / groups)`` for a grouped matmul."""
    batch, _, l_out, _ = t.shape
    return t.transpose(1, 2).reshape(batch * l_out, groups, -1).transpose(0, 1)


def _dot_channels(t: Tensor, w: Tensor) -> Tensor:
    """``sum_c t[b, g, l, c] * w[g, c]`` for ``t: (B, G, L, Cg)``, ``w: (G, 1, Cg)`` -> ``(B, G, L)``."""
    if t.shape[-1] == 1:
        return t[..., 0] * w[:, 0]
    return torch.matmul(t, w.transpose(1, 2)).squeeze(-1)


def _depthwise_tap_grads(tap, diff, interp, m, gy, w, grads, grad_s):
    """Offset, mask and weight gradients of one tap of a depthwise convolution, and (into
    ``grad_s``, if given) the gradient of its samples, all in row layout ``(B, G, L_out, Cg)``.

    ``diff`` is ``x[i + 1] - x[i]`` (given iff the offset gradient is wanted), ``interp`` the
    sample before modulation (given iff the mask or weight gradient is), ``m`` the tap's mask,
    ``grads`` the ``(offset, mask, weight)`` gradient buffers (``None`` where not wanted).
    """
    grad_off, grad_m, grad_w = grads
    # d/d offset = m sum_c w_c gy_c diff_c; d/d mask = sum_c w_c gy_c interp_c;
    # d/d w_c = sum_bt m gy_c interp_c.
    if grad_off is not None:
        g = _dot_channels(diff.mul_(gy), w[..., tap])
        grad_off[:, :, tap] = g * m[..., 0] if m is not None else g
    if interp is not None:
        interp.mul_(gy)
        if grad_m is not None:
            grad_m[:, :, tap] = _dot_channels(interp, w[..., tap])
        if grad_w is not None:
            if m is None:
                grad_w[:, 0, tap] = interp.sum((0, 2)).view(-1)
            elif interp.shape[-1] == 1:
                grad_w[:, 0, tap] = (interp * m).sum((0, 2)).view(-1)
            else:
                grad_w[:, 0, tap] = torch.matmul(m.transpose(2, 3), interp).sum(0).view(-1)
    if grad_s is not None:
        torch.mul(gy, w[..., tap], out=grad_s)
    return grad_s


def _grouped_tap_grads(tap, diff, interp, m, gy, w, grads, grad_cols, tmp):
    """Offset, mask and weight gradients of one tap of a (not depthwise) grouped convolution;
    returns the gradient of its samples in row layout ``(B, G, L_out, Cg)``.

    Arguments as :func:`_depthwise_tap_grads`, with ``gy`` and ``w`` in the grouped-matmul layout,
    ``grad_cols`` a ``(groups, B * L_out, C_in / groups)`` buffer and ``tmp`` a row-layout one.
    """
    grad_off, grad_m, grad_w = grads
    groups, _, c_in_per_group = grad_cols.shape
    batch, og, l_out, cpg = tmp.shape
    torch.bmm(gy, w[..., tap], out=grad_cols)
    grad_s = grad_cols.view(groups, batch, l_out, c_in_per_group).permute(1, 2, 0, 3)
    grad_s = grad_s.reshape(batch, l_out, og, cpg).transpose(1, 2).contiguous()
    if grad_off is not None:
        torch.mul(grad_s, diff, out=tmp)
        _sum_channels(tmp, grad_off[:, :, tap])
        if m is not None:
            grad_off[:, :, tap].mul_(m[..., 0])
    if grad_m is not None:
        torch.mul(grad_s, interp, out=tmp)
        _sum_channels(tmp, grad_m[:, :, tap])
    if grad_w is not None:
        if m is not None:
            interp.mul_(m)
        grad_w[..., tap] = torch.bmm(gy.transpose(1, 2), _to_cols(interp, groups)).view(grad_w.shape[0], -1)
    return grad_s


def _add_input_grad(grad_rows: Tensor, sampler: Sampler, grad_s: Tensor, tmp: Tensor, m: Tensor | None) -> None:
    """Add the gradient ``grad_s`` of the tap's samples to the two neighbours' rows of ``grad_rows``."""
    if m is not None:
        grad_s.mul_(m)
    # The right neighbour receives f * g, the left one (1 - f) * g.
    torch.mul(grad_s, sampler.frac, out=tmp)
    flat(grad_rows).index_add_(0, sampler.right, flat(tmp))
    grad_s.sub_(tmp)
    flat(grad_rows).index_add_(0, sampler.left, flat(grad_s))


class DeformConv1dFunction(torch.autograd.Function):
    """``apply(x, offset, weight, bias, mask, stride, pad_left, dilation, groups)``: arguments
    already checked by :func:`~dereverb.ops.deform_conv1d`, ``offset_groups`` read from the offset's shape.
    """

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
        sampler = Sampler(to_rows(x, og), Taps(batch, length, offset, k, stride, pad_left, dilation), shape)
        if depthwise:
            acc = workspace.get("c", shape, x.dtype, x.device)
            w = weight.view(og, cpg, k).unsqueeze(1)  # (G, 1, Cg, K)
        else:
            acc = workspace.get("c", (groups, batch * l_out, c_out // groups), x.dtype, x.device).zero_()
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
            copy_to_channels_first(out.view(batch, og, cpg, l_out), acc)
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
        rows = to_rows(x, og)
        sampler = Sampler(rows, Taps(batch, length, offset, k, stride, pad_left, dilation), shape)
        tmp = workspace.get("c", shape, dtype, device)
        grad_rows = workspace.get("grad_rows", rows.shape, dtype, device).zero_() if need_x else None
        grad_w = torch.empty_like(weight) if need_w else None
        grad_off = torch.empty_like(offset).view(batch, og, k, l_out) if need_off else None
        grad_m = torch.empty_like(mask).view(batch, og, k, l_out) if need_m else None
        grads = (grad_off, grad_m, grad_w)

        if depthwise:
            # (B, G, L_out, Cg): the output gradient in the samples' row layout.
            gy = workspace.get("d", shape, dtype, device)
            gy.copy_(grad_out.view(batch, og, cpg, l_out).transpose(2, 3))
            w = weight.view(og, cpg, k).unsqueeze(1)
            grad_s = workspace.get("e", shape, dtype, device)
        else:
            cog = c_out // groups
            gy = grad_out.reshape(batch, groups, cog, l_out).permute(1, 0, 3, 2).reshape(groups, batch * l_out, cog)
            w = weight.view(groups, cog, c_in_per_group, k)
            grad_cols = workspace.get("e", (groups, batch * l_out, c_in_per_group), dtype, device)

        for tap in range(k):
            sampler.select(tap)
            m = mask.view(batch, og, k, l_out)[:, :, tap].to(dtype).unsqueeze(-1) if mask is not None else None
            diff = sampler.diff("a") if need_off else None  # x[i + 1] - x[i]
            interp = sampler.lerp("b") if need_m or need_w else None  # the sample before modulation
            if depthwise:
                _depthwise_tap_grads(tap, diff, interp, m, gy, w, grads, grad_s if need_x else None)
            else:
                grad_s = _grouped_tap_grads(tap, diff, interp, m, gy, w, grads, grad_cols, tmp)
            if need_x:
                _add_input_grad(grad_rows, sampler, grad_s, tmp, m)

        grad_x = from_rows(grad_rows, batch, og, length) if need_x else None
        return (
            grad_x,
            grad_off.view_as(offset) if need_off else None,
            grad_w,
            grad_b,
            grad_m.view_as(mask) if need_m else None,
        ) + (None,) * 4
