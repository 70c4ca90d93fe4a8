"""Activations."""

from __future__ import annotations

from torch import Tensor, nn

from dereverb.ops import prelu

__all__ = ["PReLU"]


class PReLU(nn.PReLU):
    """:class:`torch.nn.PReLU` (same parameters, same ``state_dict``) computed by
    :func:`dereverb.ops.prelu`, whose backward pass is faster on the CPU for one shared slope.

    Example:
        >>> import torch
        >>> act = PReLU()
        >>> torch.equal(act(torch.tensor([-1.0, 2.0])), torch.nn.PReLU()(torch.tensor([-1.0, 2.0])))
        True
    """

    def forward(self, input: Tensor) -> Tensor:
        return prelu(input, self.weight)
