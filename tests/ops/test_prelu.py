"""The prelu fast path computes what torch.prelu computes, values and gradients."""

import torch

from dereverb.ops import prelu
from dereverb.ops.prelu import _PReLU


def test_prelu_gradcheck():
    torch.manual_seed(0)
    x = torch.randn(3, 4, 50, dtype=torch.float64, requires_grad=True)
    w = torch.tensor([0.3], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(prelu, (x, w))


def test_prelu_matches_torch_including_zeros_and_non_contiguous_inputs(device):
    torch.manual_seed(2)
    x = torch.randn(3, 50, 4, device=device).transpose(1, 2)  # non-contiguous
    x[0, 0, :7] = 0.0  # the kink: the slope's derivative, as torch.prelu
    x.requires_grad_(True)
    w = torch.tensor([0.3], device=device, requires_grad=True)
    g = torch.randn(3, 4, 50, device=device)
    got = torch.autograd.grad(prelu(x, w), (x, w), g)
    want = torch.autograd.grad(torch.prelu(x, w), (x, w), g)
    torch.testing.assert_close(got[0], want[0], rtol=0, atol=0)
    torch.testing.assert_close(got[1], want[1], rtol=1e-5, atol=1e-5)


def test_prelu_fast_path_only_for_one_slope_with_gradients(monkeypatch):
    calls = []
    original = _PReLU.apply
    monkeypatch.setattr(_PReLU, "apply", lambda *a: calls.append(1) or original(*a))
    x = torch.randn(2, 4, 10, requires_grad=True)
    prelu(x, torch.tensor([0.25]))
    prelu(x, torch.full((4,), 0.25))  # per-channel slopes: torch.prelu
    with torch.no_grad():
        prelu(x, torch.tensor([0.25]))
    prelu(x.bfloat16(), torch.tensor([0.25], dtype=torch.bfloat16))  # low precision: torch.prelu
    assert calls == [1]
    torch.testing.assert_close(prelu(x, torch.full((4,), 0.25)), torch.prelu(x, torch.full((4,), 0.25)))
