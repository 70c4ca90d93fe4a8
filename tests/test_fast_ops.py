"""Tests of the CPU fast paths: depthwise_conv1d and prelu must compute what F.conv1d and
torch.prelu compute, values and gradients, on every path they take."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dereverb.models import DTCN, TCN
from dereverb.nn import OffsetPredictor, PReLU
from dereverb.ops import depthwise_conv1d, prelu
from dereverb.ops.depthwise_conv1d import _DepthwiseConv1d
from dereverb.ops.prelu import _PReLU

PADDINGS = [((4, 4), 4), ((8, 0), 4), ((0, 0), 3), ((3, 5), 4), ((6, 6), 3), ((1, 1), 1), ((2, 0), 1), ((0, 2), 2)]


def _reference(x, w, b, padding, dilation):
    return F.conv1d(F.pad(x, padding), w, b, dilation=dilation, groups=x.shape[1])


@pytest.mark.parametrize(("padding", "dilation"), PADDINGS)
def test_depthwise_gradcheck(padding, dilation):
    torch.manual_seed(0)
    x = torch.randn(2, 5, 40, dtype=torch.float64, requires_grad=True)
    w = torch.randn(5, 1, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, w, b: depthwise_conv1d(x, w, b, padding, dilation), (x, w, b))


@pytest.mark.parametrize(("padding", "dilation"), PADDINGS)
@pytest.mark.parametrize("bias", [True, False])
def test_depthwise_matches_conv1d_values_and_gradients(device, padding, dilation, bias):
    torch.manual_seed(1)
    x = torch.randn(3, 8, 61, device=device, requires_grad=True)
    w = torch.randn(8, 1, 3, device=device, requires_grad=True)
    b = torch.randn(8, device=device, requires_grad=True) if bias else None
    g = torch.randn_like(_reference(x, w, b, padding, dilation))
    inputs = [t for t in (x, w, b) if t is not None]
    y = depthwise_conv1d(x, w, b, padding, dilation)
    grads = torch.autograd.grad(y, inputs, g)
    y_ref = _reference(x, w, b, padding, dilation)
    grads_ref = torch.autograd.grad(y_ref, inputs, g)
    torch.testing.assert_close(y, y_ref)
    for got, want in zip(grads, grads_ref, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_depthwise_takes_the_fast_path_only_where_it_pays(monkeypatch):
    calls = []
    original = _DepthwiseConv1d.apply
    monkeypatch.setattr(_DepthwiseConv1d, "apply", lambda *a: calls.append(a[3:]) or original(*a))
    x, w = torch.randn(2, 4, 30, requires_grad=True), torch.randn(4, 1, 3, requires_grad=True)
    depthwise_conv1d(x, w, None, (4, 4), 4)
    assert calls == [(4, 4, 4)]  # dilated, needs gradients: the custom backward
    depthwise_conv1d(x, w, None, (1, 1), 1)  # dilation 1: oneDNN's own backward is faster
    depthwise_conv1d(x, w, None, (9, 0), 4)  # padding beyond the kernel's extent
    depthwise_conv1d(x.detach(), w.detach(), None, (4, 4), 4)  # nothing needs a gradient
    with torch.no_grad():
        depthwise_conv1d(x, w, None, (4, 4), 4)
    depthwise_conv1d(x[:0], w, None, (4, 4), 4)  # empty batch
    assert len(calls) == 1


def test_depthwise_padding_beyond_the_kernel_still_matches():
    x, w = torch.randn(2, 4, 30, requires_grad=True), torch.randn(4, 1, 3)
    y = depthwise_conv1d(x, w, None, (9, 2), 4)
    torch.testing.assert_close(y, _reference(x, w, None, (9, 2), 4))
    assert y.shape == (2, 4, 30 + 11 - 8)


def test_depthwise_only_weight_or_only_input_needs_a_gradient():
    x, w = torch.randn(2, 4, 30), torch.randn(4, 1, 3)
    for needs in ((True, False), (False, True)):
        xa, wa = x.clone().requires_grad_(needs[0]), w.clone().requires_grad_(needs[1])
        y = depthwise_conv1d(xa, wa, None, (2, 2), 2)
        (grad,) = torch.autograd.grad(y.sum(), [xa if needs[0] else wa])
        xr, wr = x.clone().requires_grad_(needs[0]), w.clone().requires_grad_(needs[1])
        (want,) = torch.autograd.grad(_reference(xr, wr, None, (2, 2), 2).sum(), [xr if needs[0] else wr])
        torch.testing.assert_close(grad, want, rtol=1e-5, atol=1e-5)


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


def test_prelu_module_is_a_drop_in_for_nn_prelu():
    ours, theirs = PReLU(), nn.PReLU()
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(2, 3, 9)
    torch.testing.assert_close(ours(x), theirs(x), rtol=0, atol=0)


@pytest.mark.parametrize("cls", [TCN, DTCN])
def test_model_gradients_match_the_plain_layers(cls, monkeypatch):
    """A whole model trained through the fast paths gets the gradients of the plain layers."""
    torch.manual_seed(4)
    model = cls(N=16, L=8, B=8, H=16, X=3, R=1)
    for p in model.parameters():  # non-zero offset predictors, so that the DTCN deforms
        p.data.add_(0.05 * torch.randn_like(p))
    wav = torch.randn(2, 400)
    fast = torch.autograd.grad(model(wav).pow(2).sum(), list(model.parameters()))
    monkeypatch.setattr("dereverb.nn.activation.prelu", torch.prelu)
    monkeypatch.setattr("dereverb.models.tasnet.depthwise_conv1d", lambda x, w, b, p, d: _reference(x, w, b, p, d))
    monkeypatch.setattr("dereverb.nn.deform_conv.depthwise_conv1d", lambda x, w, b, p, d: _reference(x, w, b, p, d))
    plain = torch.autograd.grad(model(wav).pow(2).sum(), list(model.parameters()))
    for (name, _), a, b in zip(model.named_parameters(), fast, plain, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4, msg=name)


def test_offset_predictor_state_dict_is_unchanged():
    """Checkpoints written before the fast paths still load: same parameter names and shapes."""
    keys = {k: tuple(v.shape) for k, v in OffsetPredictor(8, 3, dilation=2).state_dict().items()}
    assert keys == {
        "depthwise.weight": (8, 1, 3),
        "depthwise.bias": (8,),
        "act.weight": (1,),
        "norm.weight": (1, 8, 1),
        "norm.bias": (1, 8, 1),
        "pointwise.weight": (3, 8, 1),
        "pointwise.bias": (3,),
    }
