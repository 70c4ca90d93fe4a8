"""Global and cumulative layer norms."""

import torch

from dereverb.nn import CumulativeLayerNorm, GlobalLayerNorm


def test_global_layer_norm_statistics(device):
    x = torch.randn(3, 5, 40, device=device) * 4 + 2
    y = GlobalLayerNorm(5).to(device)(x)
    torch.testing.assert_close(y.mean((1, 2)), torch.zeros(3, device=device), rtol=0, atol=1e-5)
    torch.testing.assert_close(y.var((1, 2), unbiased=False), torch.ones(3, device=device), rtol=0, atol=1e-4)


def test_cumulative_layer_norm_is_causal_and_matches_global_norm_on_prefixes(device):
    x = torch.randn(2, 5, 30, device=device) * 3 - 1
    cln, gln = CumulativeLayerNorm(5).to(device), GlobalLayerNorm(5).to(device)
    y = cln(x)
    for t in (1, 7, 30):
        # frame t-1 of cLN uses the statistics of frames 0..t-1, i.e. gLN of the prefix
        torch.testing.assert_close(y[..., t - 1], gln(x[..., :t])[..., t - 1], rtol=1e-4, atol=1e-4)
    x2 = x.clone()
    x2[..., 12:] = 50.0
    torch.testing.assert_close(cln(x2)[..., :12], y[..., :12], rtol=0, atol=0)
