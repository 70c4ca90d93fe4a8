"""Depthwise 1-D convolution whose backward pass is computed with forward convolutions.

On the CPU, oneDNN's backward pass of a *dilated* depthwise convolution is slow
(``scripts/bench_layers.py`` compares it with this one). Both gradients of a depthwise
convolution are themselves cheap forward convolutions:

* the input gradient is the output gradient convolved with the flipped kernel, with the padding
  mirrored (``(K - 1) * dilation - pad`` on each side);
* the weight gradient of tap ``k`` is the correlation, summed over batch and time, of the output
  gradient with the padded input shifted by ``k * dilation``: a grouped convolution of the padded
  input (one group per batch item and channel) with the output gradient as a ``T``-long kernel,
  strided by ``dilation``, which yields exactly the ``K`` lags.

:func:`depthwise_conv1d` uses this where it pays off (CPU tensors, dilation > 1, stride 1,
padding at most the kernel's extent) and :func:`torch.nn.functional.conv1d` everywhere else, so
the results are those of ``F.conv1d`` up to float rounding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

__all__ = ["depthwise_conv1d"]


def depthwise_conv1d(
    input: Tensor, weight: Tensor, bias: Tensor | None = None, padding: tuple[int, int] = (0, 0), dilation: int = 1
) -> Tensor:
    r"""Depthwise convolution: ``F.conv1d(F.pad(input, padding), weight, bias, dilation=dilation, groups=C)``.

    Args:
        input (Tensor[B, C, L]): the signal.
        weight (Tensor[C, 1, K]): one kernel per channel.
        bias (Tensor[C], optional): added to every output frame.
        padding (tuple[int, int]): zeros added on the left and right, e.g. ``(d, d)`` for a
            centred kernel of three taps or ``(2 * d, 0)`` for a causal one.
        dilation (int): spacing between taps.

    Returns:
        Tensor[B, C, L + pad_left + pad_right - dilation * (K - 1)]

    Example:
        >>> x, w = torch.randn(2, 4, 50), torch.randn(4, 1, 3)
        >>> y = depthwise_conv1d(x, w, padding=(8, 0), dilation=4)
        >>> torch.allclose(y, F.conv1d(F.pad(x, (8, 0)), w, dilation=4, groups=4), atol=1e-6)
        True
    """
    pad_left, pad_right = padding
    extent = dilation * (weight.shape[-1] - 1)
    fast = (
        input.device.type == "cpu"
        and dilation > 1
        and input.shape[0] > 0
        and max(pad_left, pad_right) <= extent
        and not torch.is_autocast_enabled("cpu")
        and torch.is_grad_enabled()
        and (input.requires_grad or weight.requires_grad or (bias is not None and bias.requires_grad))
    )
    if fast:
        return _DepthwiseConv1d.apply(input, weight, bias, pad_left, pad_right, dilation)
    return _conv(input, weight, bias, pad_left, pad_right, dilation)


def _conv(x: Tensor, weight: Tensor, bias: Tensor | None, pad_left: int, pad_right: int, dilation: int) -> Tensor:
    """The plain depthwise ``F.conv1d`` (padding it takes itself when symmetric)."""
    if pad_left == pad_right:
        return F.conv1d(x, weight, bias, padding=pad_left, dilation=dilation, groups=x.shape[1])
    return F.conv1d(F.pad(x, (pad_left, pad_right)), weight, bias, dilation=dilation, groups=x.shape[1])


class _DepthwiseConv1d(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, pad_left, pad_right, dilation):
        ctx.meta = (pad_left, pad_right, dilation)
        ctx.has_bias = bias is not None
        ctx.save_for_backward(x, weight)
        return _conv(x, weight, bias, pad_left, pad_right, dilation)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        x, weight = ctx.saved_tensors
        pad_left, pad_right, dilation = ctx.meta
        batch, channels, _ = x.shape
        k = weight.shape[-1]
        extent = dilation * (k - 1)
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        grad_out = grad_out.contiguous()
        grad_x = grad_w = grad_b = None
        if need_x:
            # out[t] = sum_k w[k] x[t - pad_left + k d]  =>  gx[j] = sum_k w[K-1-k] g[j - (extent - pad_left) + k d]
            left, right = extent - pad_left, extent - pad_right
            g = grad_out if left == right else F.pad(grad_out, (left, right))
            grad_x = F.conv1d(
                g, weight.flip(-1), None, padding=left if left == right else 0, dilation=dilation, groups=channels
            )
        if need_w:
            # gw[c, k] = sum_{b, t} g[b, c, t] * x_padded[b, c, t + k d]: K lags of a correlation
            # with a kernel as long as the output, one group per (batch item, channel).
            padded = x if pad_left == pad_right == 0 else F.pad(x, (pad_left, pad_right))
            lags = F.conv1d(
                padded.reshape(1, batch * channels, -1),
                grad_out.view(batch * channels, 1, -1),
                stride=dilation,
                groups=batch * channels,
            )
            grad_w = lags.view(batch, channels, k).sum(0).unsqueeze(1).to(weight.dtype)
        if need_b and ctx.has_bias:
            grad_b = grad_out.sum((0, 2))
        return grad_x, grad_w, grad_b, None, None, None
