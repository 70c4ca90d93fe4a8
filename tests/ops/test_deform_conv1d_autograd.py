"""The backward pass of deform_conv1d: gradcheck in float64, the offset gradient at integer positions,
and gradients equal to autograd through the naive reference.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from deform_reference import F64, fractional_offsets, make_case, randn, ref_out_len, ref_padding, shift

from dereverb.ops import deform_conv1d


def test_offset_grad_at_zero_single_channel(device):
    """K = 1, weight 1: d sum(out * g) / d offset[t] = g[t] * (x[t + 1] - x[t]), with x[L] = 0."""
    length = 12
    x = randn(1, 1, length, device=device)
    g = randn(1, 1, length, device=device)
    offset = torch.zeros(1, 1, length, device=device, dtype=F64, requires_grad=True)
    out = deform_conv1d(x, offset, torch.ones(1, 1, 1, device=device, dtype=F64))
    (out * g).sum().backward()
    x_next = torch.cat([x[..., 1:], torch.zeros_like(x[..., :1])], dim=-1)
    expected = g * (x_next - x)
    assert offset.grad.abs().min() > 0  # non-zero everywhere for a random signal
    torch.testing.assert_close(offset.grad, expected, atol=1e-12, rtol=0)
    # Not the left difference nor the central one.
    x_prev = torch.cat([torch.zeros_like(x[..., :1]), x[..., :-1]], dim=-1)
    assert not torch.allclose(offset.grad, g * (x - x_prev))
    assert not torch.allclose(offset.grad, g * (x_next - x_prev) / 2)


@pytest.mark.parametrize(
    ("stride", "padding", "dilation", "groups", "offset_groups", "with_mask"),
    [(1, 1, 1, 1, 1, False), (2, 2, 2, 1, 2, True), (1, "same", 1, 3, 3, False), (1, 0, 3, 3, 1, True)],
    ids=str,
)
def test_offset_grad_at_zero_is_right_difference(device, stride, padding, dilation, groups, offset_groups, with_mask):
    """At zero offsets, d out / d offset is w[k] * (x[i + 1] - x[i]); it matches (out(+eps) - out(0)) / eps."""
    c_in, k_size = 6, 3
    x = randn(2, c_in, 13, device=device)
    weight = randn(6, c_in // groups, k_size, device=device)
    l_out = ref_out_len(13, k_size, stride, padding, dilation)
    offset = torch.zeros(2, offset_groups * k_size, l_out, device=device, dtype=F64, requires_grad=True)
    mask = torch.rand(2, offset_groups * k_size, l_out, dtype=F64).to(device) if with_mask else None
    g = randn(2, 6, l_out, device=device)
    kw = {"stride": stride, "padding": padding, "dilation": dilation, "groups": groups}
    out = deform_conv1d(x, offset, weight, mask=mask, **kw)
    (out * g).sum().backward()
    grad = offset.grad
    assert grad.abs().sum() > 0

    # Analytic: tap k sees the difference signal dx[j] = x[j + 1] - x[j] where x reads x[j].
    pad_left, pad_right = ref_padding(padding, k_size, dilation)
    xp = F.pad(x, (pad_left, pad_right + 1))
    dx = xp[..., 1:] - xp[..., :-1]
    cpo = c_in // offset_groups
    for k in range(k_size):
        for grp in range(offset_groups):
            dx_grp = torch.zeros_like(dx)
            dx_grp[:, grp * cpo : (grp + 1) * cpo] = dx[:, grp * cpo : (grp + 1) * cpo]
            d_out = F.conv1d(shift(dx_grp, k * dilation), weight[..., k : k + 1], stride=stride, groups=groups)
            d_out = d_out[..., :l_out]
            row = grp * k_size + k
            m = mask[:, row] if mask is not None else 1.0
            torch.testing.assert_close(grad[:, row], (g * d_out).sum(1) * m, atol=1e-12, rtol=0)

            # Finite difference from the right, one offset channel at a time. The output is linear in
            # the offset on [0, 1), so the forward difference equals the right derivative for any eps < 1.
            eps = 1e-3
            bumped = torch.zeros_like(offset.detach())
            bumped[:, row] = eps
            fd = (deform_conv1d(x, bumped, weight, mask=mask, **kw) - out.detach()) / eps
            torch.testing.assert_close(grad[:, row], (g * fd).sum(1), atol=1e-9, rtol=0)


GRADCHECK_CASES = [
    pytest.param({"c_in": 4, "c_out": 4, "offset_groups": 1, "padding": 1}, id="shared-offsets"),
    pytest.param({"c_in": 4, "c_out": 3, "offset_groups": 4, "padding": 1}, id="per-channel-offsets"),
    pytest.param({"c_in": 4, "c_out": 6, "groups": 2, "offset_groups": 2, "padding": "same"}, id="groups2"),
    pytest.param({"c_in": 4, "c_out": 4, "stride": 2, "dilation": 2, "padding": 2, "length": 12}, id="stride2"),
    pytest.param({"c_in": 4, "c_out": 4, "groups": 4, "offset_groups": 2, "padding": 1}, id="depthwise"),
    pytest.param({"c_in": 4, "c_out": 8, "groups": 4, "offset_groups": 4, "k": 2}, id="depthwise-mult2-k2"),
    # the DTCN's layer (depthwise, shared offsets, no mask) has a backward pass of its own
    pytest.param({"c_in": 4, "c_out": 4, "groups": 4, "padding": 2, "dilation": 2, "mask": False}, id="dtcn-layer"),
    pytest.param({"c_in": 6, "c_out": 6, "groups": 6, "offset_groups": 2, "mask": False}, id="depthwise-og2-nomask"),
    pytest.param({"c_in": 4, "c_out": 4, "groups": 4, "offset_groups": 4, "mask": False}, id="depthwise-og4-nomask"),
]


@pytest.mark.parametrize("config", GRADCHECK_CASES)
def test_gradcheck(device, config):
    """Analytic gradients of input, offset, mask, weight and bias all match numerical ones (float64)."""
    cfg = {"length": 8, "k": 3, "groups": 1, "stride": 1, "padding": 0, "dilation": 1, "offset_groups": 1, "mask": True}
    cfg.update(config)
    l_out = ref_out_len(cfg["length"], cfg["k"], cfg["stride"], cfg["padding"], cfg["dilation"])
    x = randn(2, cfg["c_in"], cfg["length"], device=device).requires_grad_()
    offset = fractional_offsets(2, cfg["offset_groups"] * cfg["k"], l_out, device=device).requires_grad_()
    mask = (torch.rand(2, cfg["offset_groups"] * cfg["k"], l_out, dtype=F64) + 0.5).to(device).requires_grad_()
    weight = randn(cfg["c_out"], cfg["c_in"] // cfg["groups"], cfg["k"], device=device).requires_grad_()
    bias = randn(cfg["c_out"], device=device).requires_grad_()
    kw = {k: cfg[k] for k in ("stride", "padding", "dilation", "groups")}

    def fn(x, offset, weight, bias, *mask):
        return deform_conv1d(x, offset, weight, bias, mask=mask[0] if mask else None, **kw)

    # index_add_ on a GPU accumulates in a nondeterministic order: allow rounding-level differences.
    nondet_tol = 1e-10 if device.type == "cuda" else 0.0
    inputs = (x, offset, weight, bias, mask) if cfg["mask"] else (x, offset, weight, bias)
    assert torch.autograd.gradcheck(fn, inputs, nondet_tol=nondet_tol)


def test_gradients_match_naive_reference_autograd(device):
    """Backward matches autograd through a differentiable torch re-implementation of the same rule."""
    x, offset, weight, bias, mask, kw = make_case(
        device, c_in=4, c_out=6, groups=2, offset_groups=2, with_mask=True, with_bias=True, padding=1, stride=2
    )
    offset = fractional_offsets(*offset.shape, device=device, scale=3.0)
    leaves = [t.clone().requires_grad_() for t in (x, offset, weight, bias, mask)]
    g = randn(2, 6, offset.shape[-1], device=device)
    (deform_conv1d(leaves[0], leaves[1], leaves[2], leaves[3], mask=leaves[4], **kw) * g).sum().backward()

    # Differentiable reference: gather both neighbours from a zero-extended signal with torch ops.
    ref = [t.clone().requires_grad_() for t in (x, offset, weight, bias, mask)]
    rx, roff, rw, rb, rm = ref
    batch, c_in, length = rx.shape
    k_size, l_out, cpo = 3, roff.shape[-1], c_in // 2
    chan_group = torch.arange(c_in, device=device) // cpo  # offset group of each input channel
    t = torch.arange(l_out, device=device, dtype=F64)
    taps = []
    for k in range(k_size):
        off_k = roff.view(batch, 2, k_size, l_out)[:, chan_group, k]  # (B, C_in, L_out)
        m_k = rm.view(batch, 2, k_size, l_out)[:, chan_group, k]
        p = t * 2 - 1 + k + off_k
        i = torch.floor(p).detach()
        f = p - i
        xe = F.pad(rx, (length + 2, length + 2))  # zeros around: indices clamp into them
        li = (i.long() + length + 2).clamp(0, xe.shape[-1] - 2)
        left, right = xe.gather(2, li), xe.gather(2, li + 1)
        taps.append(((1 - f) * left + f * right) * m_k)
    cols = torch.stack(taps, dim=-1)  # (B, C_in, L_out, K)
    cols = cols.view(batch, 2, 2, l_out, k_size)
    rw_g = rw.view(2, 3, 2, k_size)
    out_ref = torch.einsum("bgctk,gock->bgot", cols, rw_g).reshape(batch, 6, l_out) + rb.view(1, -1, 1)
    (out_ref * g).sum().backward()
    for name, a, b in zip(("input", "offset", "weight", "bias", "mask"), leaves, ref, strict=True):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-10, rtol=0, msg=f"gradient of {name}")
