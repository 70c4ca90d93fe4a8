"""The depthwise_conv1d fast path computes what F.conv1d computes, values and gradients, on every path
it takes; a whole model through the fast paths gets the plain layers' gradients.
"""

import pytest
import torch
import torch.nn.functional as F

from dereverb.models import DTCN, TCN
from dereverb.ops import depthwise_conv1d
from dereverb.ops.depthwise_conv1d import _DepthwiseConv1d

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
