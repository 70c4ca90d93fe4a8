"""Normalisation layers of Conv-TasNet: global (gLN) and cumulative (cLN) layer norm."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["CumulativeLayerNorm", "GlobalLayerNorm", "make_norm"]


class _LayerNorm(nn.Module):
    """Per-channel affine parameters shared by the two layer norms."""

    def __init__(self, channels: int, eps: float = 1e-8):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(1, channels, 1))
        self.bias = nn.Parameter(torch.zeros(1, channels, 1))

    def extra_repr(self) -> str:
        return f"{self.weight.shape[1]}, eps={self.eps}"


class GlobalLayerNorm(_LayerNorm):
    """Global layer norm (gLN): statistics over channels and all frames of each example.

    Args:
        channels: number of channels ``C``.
        eps: added to the variance.

    Shape:
        ``Tensor[B, C, T] -> Tensor[B, C, T]``.

    References:
        Luo and Mesgarani, "Conv-TasNet: Surpassing Ideal Time-Frequency Magnitude Masking
        for Speech Separation", IEEE/ACM TASLP 27(8), 2019.

    Example:
        >>> y = GlobalLayerNorm(4)(torch.randn(2, 4, 10) * 3 + 1)
        >>> bool(y.mean((1, 2)).abs().max() < 1e-5), bool((y.var((1, 2), unbiased=False) - 1).abs().max() < 1e-3)
        (True, True)
    """

    def forward(self, x: Tensor) -> Tensor:
        # gLN is group norm with a single group: its fused kernels are faster
        # (forward and backward) than the same arithmetic written out.
        return F.group_norm(x, 1, self.weight.view(-1), self.bias.view(-1), self.eps)


class CumulativeLayerNorm(_LayerNorm):
    """Cumulative layer norm (cLN): frame ``t`` is normalised with the statistics of all
    channels over frames ``0..t``, so the layer is causal.

    Args:
        channels: number of channels ``C``.
        eps: added to the variance.

    Shape:
        ``Tensor[B, C, T] -> Tensor[B, C, T]``.

    References:
        Luo and Mesgarani, "Conv-TasNet", IEEE/ACM TASLP 27(8), 2019, section II-D.

    Example:
        >>> x = torch.randn(1, 3, 8)
        >>> norm = CumulativeLayerNorm(3)
        >>> torch.allclose(norm(x)[..., :5], norm(x[..., :5]), atol=1e-6)  # the future does not matter
        True
    """

    def forward(self, x: Tensor) -> Tensor:
        channels = x.shape[1]
        # Cumulative sums in float64 keep the variance accurate over long signals.
        acc = torch.float64 if x.dtype in (torch.float32, torch.float64) else torch.float32
        count = torch.arange(1, x.shape[2] + 1, device=x.device, dtype=acc) * channels
        mean = x.to(acc).sum(1, keepdim=True).cumsum(2) / count
        power = x.to(acc).pow(2).sum(1, keepdim=True).cumsum(2) / count
        var = (power - mean.pow(2)).clamp_min(0)
        mean, inv_std = mean.to(x.dtype), torch.rsqrt(var + self.eps).to(x.dtype)
        return (x - mean) * inv_std * self.weight + self.bias


def make_norm(kind: str, channels: int) -> nn.Module:
    """Build a normalisation layer by name: ``"gLN"``, ``"cLN"`` or ``"none"``.

    Example:
        >>> make_norm("cLN", 8)
        CumulativeLayerNorm(8, eps=1e-08)
    """
    norms = {"gLN": GlobalLayerNorm, "cLN": CumulativeLayerNorm}
    if kind == "none":
        return nn.Identity()
    if kind not in norms:
        raise ValueError(f"unknown norm {kind!r}: expected one of 'gLN', 'cLN', 'none'")
    return norms[kind](channels)
