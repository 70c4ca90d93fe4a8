"""PReLU with one shared slope, with a backward pass built from vectorised element-wise ops.

On the CPU, ATen's PReLU backward kernel is slow (``scripts/bench_layers.py`` compares it with
this one), and a TasNet block has two PReLUs (a DTCN block three). The backward pass here is a
few streaming passes: ``relu``, a difference and a dot product for the slope's gradient, and the
derivative ``slope + (1 - slope) * [x > 0]`` built with ``sign`` and multiplied into the output
gradient.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

__all__ = ["prelu"]


def prelu(input: Tensor, weight: Tensor) -> Tensor:
    """``torch.prelu(input, weight)``; a faster backward for a one-element ``weight`` on the CPU.

    Args:
        input (Tensor[B, C, ...]): any shape.
        weight (Tensor[1] or Tensor[C]): the slope(s) for negative inputs.

    Returns:
        Tensor: ``max(0, x) + weight * min(0, x)``, the input's shape.

    Example:
        >>> x = torch.tensor([[-2.0, 0.0, 3.0]])
        >>> prelu(x, torch.tensor([0.25]))
        tensor([[-0.5000,  0.0000,  3.0000]])
    """
    fast = (
        weight.numel() == 1
        and input.device.type == "cpu"
        and torch.is_grad_enabled()
        and (input.requires_grad or weight.requires_grad)
        and input.dtype == weight.dtype
        and input.dtype in (torch.float32, torch.float64)  # the slope's gradient is a long dot product
        and not torch.is_autocast_enabled("cpu")
    )
    return _PReLU.apply(input, weight) if fast else torch.prelu(input, weight)


class _PReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight):
        ctx.save_for_backward(x, weight)
        return torch.prelu(x, weight)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        x, weight = ctx.saved_tensors
        grad_out = grad_out.contiguous()
        x = x.contiguous()
        positive = torch.relu(x)
        grad_w = None
        if ctx.needs_input_grad[1]:
            negative = torch.sub(x, positive)  # min(x, 0)
            grad_w = torch.dot(negative.view(-1), grad_out.view(-1)).view(weight.shape)
        grad_x = None
        if ctx.needs_input_grad[0]:
            # d/dx = 1 where x > 0, else the slope (also at 0, as torch.prelu); a NaN input gets a
            # NaN gradient (torch.prelu gives it the slope's), its output being NaN anyway.
            step = positive.sign_()  # 1 where x > 0, 0 elsewhere
            grad_x = step.mul_(1 - weight).add_(weight).mul_(grad_out)
        return grad_x, grad_w
