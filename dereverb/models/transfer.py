"""Weights of a TasNet trained at another sample rate, resampled to a network's rate."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:
    from dereverb.models.tasnet import TasNet

__all__ = ["load_resampled"]


@torch.no_grad()
def load_resampled(model: TasNet, state_dict: dict[str, Tensor], window: int) -> None:
    """Load into ``model`` the weights of the same network trained at another sample rate.

    The other network's encoder window ``window`` (in its samples) must last as long as this
    one's: ``window / its rate == L / this rate``, so both work on frames of the same duration
    and the mask estimator's weights carry over unchanged. The encoder and decoder filters are
    resampled to this rate by band-limited (sinc) interpolation, with the cut-off at the lower
    of the two Nyquist frequencies and each filter kept to its window:

    - encoder: ``g[m] = (T_here / T) * sum_n f[n] sinc((n T_there - m T_here) / T)``, so a
      frame's features are what the other encoder computes from the same band-limited frame;
    - decoder: ``d'[m] = (T_there / T) * sum_n d[n] sinc((m T_here - n T_there) / T)``, the
      other decoder's frame resampled to this rate,

    with ``T`` the longer of the two sample periods. On speech below both Nyquist frequencies
    the network then computes, at this rate, about what the other one computed at its own
    (what is lost: each filter's sinc tails beyond the window).

    Raises:
        ValueError: ``window`` equals this network's (nothing to resample), or the weights do not fit.
    """
    L, N = model.window, model.encoder.out_channels
    if window == L:
        raise ValueError(f"load_resampled needs another window than L={L}, got {window}")
    enc, dec = state_dict.get("encoder.weight"), state_dict.get("decoder.weight")
    if enc is None or dec is None or tuple(enc.shape) != (N, 1, window) or tuple(dec.shape) != (N, 1, window):
        raise ValueError(f"weights of another network: no encoder/decoder of shape [{N}, 1, {window}]")
    rest = {k: v for k, v in state_dict.items() if k not in ("encoder.weight", "decoder.weight")}
    missing, unexpected = model.load_state_dict(rest, strict=False)
    if sorted(missing) != ["decoder.weight", "encoder.weight"] or unexpected:
        raise ValueError(f"weights of another network: missing {missing[:3]}, unexpected {unexpected[:3]}")
    # Times in units of this network's sample period: theirs is L / window of ours.
    there = L / window
    coarse = max(1.0, there)
    n = torch.arange(window, dtype=torch.float64) * there  # their taps' times
    m = torch.arange(L, dtype=torch.float64)  # ours
    kernel = torch.sinc((n[None, :] - m[:, None]) / coarse)  # [L, window]
    dtype = model.encoder.weight.dtype
    model.encoder.weight.copy_((enc.double()[:, 0] @ kernel.T / coarse).unsqueeze(1).to(dtype))
    model.decoder.weight.copy_((dec.double()[:, 0] @ kernel.T * there / coarse).unsqueeze(1).to(dtype))
