"""Tests of :func:`dereverb.ops.deform_conv1d`, the 1-D deformable convolution.

Everything is checked against independent references: a naive nested-loop transcription of the
sampling rule (float64), ``F.conv1d`` for zero and integer offsets, the analytic offset gradient,
finite differences and ``torch.autograd.gradcheck``. All tests take the ``device`` fixture
(``pytest --device cuda`` runs them on a GPU); random tensors are drawn on the CPU and then moved,
so every device sees the same values."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from deform_reference import (
    F64,
    fractional_offsets,
    integer_offset_reference,
    make_case,
    naive_deform_conv1d,
    randn,
    rel_err,
)

from dereverb.ops import deform_conv1d

STRIDE_PADDING = [(1, 0), (1, 2), (1, "same"), (1, "valid"), (2, 0), (2, 2), (2, "valid"), (3, 0), (3, 2), (3, "valid")]


@pytest.mark.parametrize("offset_groups", [1, 2, 4], ids=lambda g: f"og{g}")
@pytest.mark.parametrize("groups", [1, 2, 4], ids=["g1", "g2", "depthwise"])
@pytest.mark.parametrize("dilation", [1, 2, 3], ids=lambda d: f"d{d}")
@pytest.mark.parametrize(("stride", "padding"), STRIDE_PADDING, ids=lambda v: str(v))
def test_matches_naive_reference(device, stride, padding, dilation, groups, offset_groups):
    """Random fractional offsets (randn * 3: some taps leave the signal) match the nested-loop reference.

    Each geometry is checked without and with a mask, without and with a bias.
    """
    x, offset, weight, bias, mask, kw = make_case(
        device,
        c_in=4,
        c_out=4,
        length=11,
        groups=groups,
        offset_groups=offset_groups,
        with_mask=True,
        with_bias=True,
        stride=stride,
        padding=padding,
        dilation=dilation,
    )
    for m in (None, mask):
        unbiased = naive_deform_conv1d(x, offset, weight, None, mask=m, **kw)
        for b in (None, bias):
            expected = unbiased if b is None else unbiased + b.cpu().view(1, -1, 1)
            out = deform_conv1d(x, offset, weight, b, mask=m, **kw)
            assert out.shape == expected.shape
            case = f"mask={m is not None}, bias={b is not None}"
            torch.testing.assert_close(out.cpu(), expected, atol=1e-10, rtol=0, msg=lambda msg, c=case: f"{c}: {msg}")


# (c_in, c_out, k, groups, offset_groups, stride, padding, dilation, length)
SHAPES = [
    pytest.param(4, 8, 3, 4, 4, 1, 1, 1, 10, id="depthwise-multiplier2"),
    pytest.param(4, 8, 3, 4, 2, 2, 2, 2, 13, id="depthwise-multiplier2-og2-strided"),
    pytest.param(4, 6, 3, 2, 1, 1, "same", 2, 12, id="g2-cout6-same"),
    pytest.param(4, 6, 3, 2, 4, 3, 1, 1, 13, id="g2-cout6-per-channel-offsets"),
    pytest.param(6, 4, 3, 2, 3, 1, 0, 1, 9, id="cin6-og3"),
    pytest.param(6, 6, 3, 6, 6, 1, 2, 3, 12, id="cin6-depthwise"),
    pytest.param(6, 3, 3, 3, 2, 2, 1, 1, 11, id="cin6-g3-og2"),
    pytest.param(4, 5, 2, 1, 2, 1, "same", 1, 10, id="k2-same"),
    pytest.param(4, 4, 2, 2, 1, 2, 1, 3, 11, id="k2-g2-strided"),
    pytest.param(4, 4, 4, 1, 1, 1, "same", 1, 11, id="k4-same-odd-total"),
    pytest.param(4, 8, 4, 4, 2, 2, (3,), 2, 13, id="k4-depthwise-mult2-tuple-padding"),
    pytest.param(3, 2, 1, 1, 3, 2, 0, 1, 9, id="k1"),
    pytest.param(4, 4, 3, 1, 2, 1, (4, 0), 2, 10, id="causal-left-right-padding"),
    pytest.param(4, 8, 3, 4, 4, 2, (0, 3), 1, 11, id="depthwise-right-only-padding"),
]


@pytest.mark.parametrize("with_mask", [False, True], ids=["nomask", "mask"])
@pytest.mark.parametrize(
    ("c_in", "c_out", "k", "groups", "offset_groups", "stride", "padding", "dilation", "length"), SHAPES
)
def test_matches_naive_reference_shapes(
    device, c_in, c_out, k, groups, offset_groups, stride, padding, dilation, length, with_mask
):
    """C_out != C_in (depthwise multipliers, grouped), C_in = 6, K = 1, 2, 4 against the nested-loop reference."""
    x, offset, weight, bias, mask, kw = make_case(
        device,
        c_in=c_in,
        c_out=c_out,
        k=k,
        length=length,
        groups=groups,
        offset_groups=offset_groups,
        with_mask=with_mask,
        with_bias=True,
        stride=stride,
        padding=padding,
        dilation=dilation,
    )
    out = deform_conv1d(x, offset, weight, bias, mask=mask, **kw)
    expected = naive_deform_conv1d(x, offset, weight, bias, mask=mask, **kw)
    assert out.shape == expected.shape
    torch.testing.assert_close(out.cpu(), expected, atol=1e-10, rtol=0)


def test_docstring_example_values(device):
    """Hand-computed values: offset 0.5 interpolates halfway, the last frame fades into the zero beyond the end."""
    x = torch.arange(6.0, device=device).view(1, 1, 6)
    w = torch.ones(1, 1, 1, device=device)
    out = deform_conv1d(x, torch.full((1, 1, 6), 0.5, device=device), w)
    assert torch.equal(out.cpu(), torch.tensor([[[0.5, 1.5, 2.5, 3.5, 4.5, 2.5]]]))
    out = deform_conv1d(x, torch.full((1, 1, 6), -0.25, device=device), w)
    assert torch.equal(out.cpu(), torch.tensor([[[0.0, 0.75, 1.75, 2.75, 3.75, 4.75]]]))


@pytest.mark.parametrize(
    ("c_out", "groups", "offset_groups", "stride", "padding", "dilation"),
    [(6, 1, 1, 1, 1, 1), (6, 2, 2, 2, 2, 2), (4, 4, 4, 1, 3, 3), (8, 4, 2, 3, 0, 1)],
    ids=str,
)
def test_matches_torchvision_deform_conv2d(device, c_out, groups, offset_groups, stride, padding, dilation):
    """A second, independent reference: torchvision's ``deform_conv2d`` on a height-1 image with zero y-offsets.

    Values and all gradients (fractional offsets, so both sides differentiate the same linear piece).
    """
    tv_ops = pytest.importorskip("torchvision.ops")
    x, _, weight, bias, mask, kw = make_case(
        device,
        c_in=4,
        c_out=c_out,
        length=16,
        groups=groups,
        offset_groups=offset_groups,
        with_mask=True,
        with_bias=True,
        stride=stride,
        padding=padding,
        dilation=dilation,
    )
    batch, k_size, l_out = 2, 3, mask.shape[-1]
    offset = fractional_offsets(batch, offset_groups * k_size, l_out, device=device, scale=4.0)
    g = randn(batch, c_out, l_out, device=device)
    ours = [t.clone().requires_grad_() for t in (x, offset, weight, bias, mask)]
    out = deform_conv1d(ours[0], ours[1], ours[2], ours[3], mask=ours[4], **kw)
    (out * g).sum().backward()

    theirs = [t.clone().requires_grad_() for t in (x, offset, weight, bias, mask)]
    tx, toff, tw, tb, tm = theirs
    dx = toff.view(batch, offset_groups, k_size, 1, l_out)
    off2d = torch.cat([torch.zeros_like(dx), dx], dim=3).view(batch, 2 * offset_groups * k_size, 1, l_out)  # (dy, dx)
    out2d = tv_ops.deform_conv2d(
        tx.unsqueeze(2),
        off2d,
        tw.unsqueeze(2),
        tb,
        stride=(1, stride),
        padding=(0, padding),
        dilation=(1, dilation),
        mask=tm.unsqueeze(2),
    )
    (out2d.squeeze(2) * g).sum().backward()
    torch.testing.assert_close(out, out2d.squeeze(2), atol=1e-10, rtol=0)
    for name, a, b in zip(("input", "offset", "weight", "bias", "mask"), ours, theirs, strict=True):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-10, rtol=0, msg=lambda msg, n=name: f"{n}: {msg}")


ZERO_GRID = [(s, p) for s in (1, 2, 3) for p in (0, 1, 3, "same", "valid") if not (p == "same" and s != 1)]


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths")  # F.conv1d's own notice
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("groups", [1, 2, 6], ids=["g1", "g2", "depthwise"])
@pytest.mark.parametrize("dilation", [1, 2], ids=["d1", "d2"])
@pytest.mark.parametrize("k", [3, 4], ids=["k3", "k4"])  # "same" total: even for K = 3, odd for K = 4, d = 1
@pytest.mark.parametrize(("stride", "padding"), ZERO_GRID, ids=str)
def test_zero_offsets_equal_conv1d(device, stride, padding, k, dilation, groups, dtype):
    """With zero offsets (no mask) the result is ``F.conv1d`` for every geometry, incl. odd/even "same".

    Each geometry without and with a bias.
    """
    x = randn(2, 6, 17, device=device, dtype=dtype)
    weight = randn(6, 6 // groups, k, device=device, dtype=dtype)
    kw = {"stride": stride, "padding": padding, "dilation": dilation, "groups": groups}
    tol = 1e-12 if dtype == F64 else 1e-5
    for bias in (None, randn(6, device=device, dtype=dtype)):
        expected = F.conv1d(x, weight, bias, **kw)
        offset = torch.zeros(2, k, expected.shape[-1], device=device, dtype=dtype)
        out = deform_conv1d(x, offset, weight, bias, **kw)
        assert out.dtype == dtype
        torch.testing.assert_close(
            out, expected, atol=tol, rtol=tol, msg=lambda m, b=bias: f"bias={b is not None}: {m}"
        )


@pytest.mark.parametrize("padding", [(4, 0), (0, 2), (3, 1)], ids=str)
@pytest.mark.parametrize("groups", [1, 6], ids=["g1", "depthwise"])
def test_zero_offsets_left_right_padding_equal_padded_conv1d(device, padding, groups):
    """The ``(left, right)`` padding extension equals ``F.conv1d`` of the explicitly zero-padded input."""
    x = randn(2, 6, 15, device=device)
    weight = randn(6, 6 // groups, 3, device=device)
    bias = randn(6, device=device)
    expected = F.conv1d(F.pad(x, padding), weight, bias, dilation=2, groups=groups)
    offset = torch.zeros(2, 3, expected.shape[-1], device=device, dtype=F64)
    out = deform_conv1d(x, offset, weight, bias, padding=padding, dilation=2, groups=groups)
    torch.testing.assert_close(out, expected, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize(("groups", "c_out", "offset_groups"), [(1, 5, 1), (2, 6, 2), (6, 6, 6), (6, 12, 3)], ids=str)
def test_zero_offsets_mask_of_ones_equal_conv1d(device, groups, c_out, offset_groups):
    """Zero offsets with a mask of ones is ``F.conv1d`` too, and equal to passing no mask."""
    x = randn(2, 6, 15, device=device)
    weight = randn(c_out, 6 // groups, 3, device=device)
    bias = randn(c_out, device=device)
    expected = F.conv1d(x, weight, bias, padding=1, groups=groups)
    offset = torch.zeros(2, offset_groups * 3, 15, device=device, dtype=F64)
    mask = torch.ones_like(offset)
    out = deform_conv1d(x, offset, weight, bias, padding=1, groups=groups, mask=mask)
    torch.testing.assert_close(out, expected, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(out, deform_conv1d(x, offset, weight, bias, padding=1, groups=groups), atol=0, rtol=0)


def test_offset_plus_one_is_one_sample_shift(device):
    """Offset +1.0 on all taps == conv1d of the input shifted left by exactly one sample (zero appended)."""
    x = randn(2, 3, 16, device=device)
    weight = randn(4, 3, 3, device=device)
    x_shifted = torch.cat([x[..., 1:], torch.zeros_like(x[..., :1])], dim=-1)
    expected = F.conv1d(x_shifted, weight)
    offset = torch.ones(2, 3, expected.shape[-1], device=device, dtype=F64)
    torch.testing.assert_close(deform_conv1d(x, offset, weight), expected, atol=1e-12, rtol=0)
    # Exactly one sample, visible on a ramp with a single-tap identity kernel.
    ramp = torch.arange(8.0, device=device, dtype=F64).view(1, 1, 8)
    out = deform_conv1d(
        ramp, torch.ones(1, 1, 8, device=device, dtype=F64), torch.ones(1, 1, 1, device=device, dtype=F64)
    )
    assert out.flatten().tolist() == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 0.0]


@pytest.mark.parametrize(
    "tap_shifts",
    [(1, 1, 1), (-2, -2, -2), (0, 3, -1), (-5, 2, 14)],
    ids=["plus1", "minus2", "per-tap", "per-tap-outside"],
)
@pytest.mark.parametrize(
    ("stride", "padding", "dilation", "groups", "offset_groups"),
    [(1, 1, 1, 1, 1), (2, 2, 2, 2, 1), (1, "same", 3, 4, 4), (3, 0, 1, 1, 2)],
    ids=str,
)
def test_integer_offsets_are_shifted_convolutions(device, tap_shifts, stride, padding, dilation, groups, offset_groups):
    """Integer offsets (equal or different per tap, also past the ends) read whole samples: shifted conv1d."""
    x = randn(2, 4, 14, device=device)
    weight = randn(4, 4 // groups, 3, device=device)
    expected = integer_offset_reference(x, weight, tap_shifts, stride, padding, dilation, groups)
    per_tap = torch.tensor(tap_shifts, dtype=F64, device=device).repeat(offset_groups).view(1, -1, 1)
    offset = per_tap.expand(2, -1, expected.shape[-1]).contiguous()
    out = deform_conv1d(x, offset, weight, stride=stride, padding=padding, dilation=dilation, groups=groups)
    torch.testing.assert_close(out, expected, atol=1e-12, rtol=0)


def test_same_padding_pads_with_zeros(device):
    """``padding="same"`` pads with zeros: edge frames see fewer samples (not reflect/replicate padding)."""
    x = torch.ones(1, 1, 7, device=device, dtype=F64)
    w = torch.ones(1, 1, 3, device=device, dtype=F64)
    offset = torch.zeros(1, 3, 7, device=device, dtype=F64)
    out = deform_conv1d(x, offset, w, padding="same")
    assert out.flatten().tolist() == [2.0, 3.0, 3.0, 3.0, 3.0, 3.0, 2.0]
    # Random signal, K = 4 (odd total: one sample left, two right): equal to zero padding, not reflect.
    x = randn(2, 3, 12, device=device)
    w = randn(3, 3, 4, device=device)
    offset = torch.zeros(2, 4, 12, device=device, dtype=F64)
    out = deform_conv1d(x, offset, w, padding="same")
    zero_padded = F.conv1d(F.pad(x, (1, 2)), w)
    reflect_padded = F.conv1d(F.pad(x, (1, 2), mode="reflect"), w)
    torch.testing.assert_close(out, zero_padded, atol=1e-12, rtol=0)
    assert not torch.allclose(out[..., [0, -1]], reflect_padded[..., [0, -1]])
    # A fractional tap in the padding fades towards zero: position -0.5 reads 0.5 * x[0].
    x = torch.full((1, 1, 5), 4.0, device=device, dtype=F64)
    offset = torch.full((1, 1, 5), -0.5, device=device, dtype=F64)
    out = deform_conv1d(x, offset, torch.ones(1, 1, 1, device=device, dtype=F64), padding="same")
    assert out.flatten().tolist() == [2.0, 4.0, 4.0, 4.0, 4.0]


@pytest.mark.parametrize("groups", [1, 4], ids=["g1", "depthwise"])
def test_empty_batch(device, groups):
    """B = 0 gives an empty (0, C_out, L_out) output; backward gives correctly shaped zero gradients."""
    x = torch.zeros(0, 4, 10, device=device, dtype=F64, requires_grad=True)
    offset = torch.zeros(0, 6, 5, device=device, dtype=F64, requires_grad=True)  # 2 offset groups, stride 2
    mask = torch.zeros(0, 6, 5, device=device, dtype=F64, requires_grad=True)
    weight = randn(4, 4 // groups, 3, device=device).requires_grad_()
    bias = randn(4, device=device).requires_grad_()
    out = deform_conv1d(x, offset, weight, bias, stride=2, padding=1, groups=groups, mask=mask)
    assert out.shape == (0, 4, 5)
    assert out.dtype == F64
    assert out.device.type == device.type
    out.sum().backward()
    for leaf in (x, offset, mask, weight, bias):
        assert leaf.grad is not None
        assert leaf.grad.shape == leaf.shape
        assert leaf.grad.dtype == leaf.dtype
        assert torch.count_nonzero(leaf.grad) == 0


@pytest.mark.parametrize(("groups", "c_out", "offset_groups"), [(1, 6, 1), (2, 4, 3), (6, 6, 2), (6, 12, 6)], ids=str)
def test_non_contiguous_inputs(device, groups, c_out, offset_groups):
    """Transposed/sliced input, offsets, mask, weight and bias give the results and gradients of contiguous copies."""
    l_out = 9
    # Input: channels-last storage transposed, then every other sample.
    x = randn(2, 18, 6, device=device).transpose(1, 2)[..., ::2]  # (2, 6, 9)
    offset = randn(2, l_out, offset_groups * 3, device=device, scale=2.0).transpose(1, 2)
    mask = torch.rand(2, offset_groups * 6, l_out, dtype=F64).to(device)[:, ::2]
    weight = randn(3, c_out, 6 // groups, device=device).permute(1, 2, 0)
    bias = randn(2 * c_out, device=device)[::2]
    tensors = (x, offset, weight, bias, mask)
    assert not any(t.is_contiguous() for t in tensors)
    g = randn(2, c_out, l_out, device=device)

    def run(ts):
        leaves = [t.detach().requires_grad_() for t in ts]
        out = deform_conv1d(leaves[0], leaves[1], leaves[2], leaves[3], padding=1, groups=groups, mask=leaves[4])
        (out * g).sum().backward()
        return out, [leaf.grad for leaf in leaves]

    out_nc, grads_nc = run(tensors)
    out_c, grads_c = run([t.contiguous() for t in tensors])
    torch.testing.assert_close(out_nc, out_c, atol=1e-12, rtol=0)
    for a, b in zip(grads_nc, grads_c, strict=True):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, atol=1e-12, rtol=0)
    # And the contiguous result is the naive one (so both are right, not merely equal).
    expected = naive_deform_conv1d(x, offset, weight, bias, padding=1, groups=groups, mask=mask)
    torch.testing.assert_close(out_nc.detach().cpu(), expected, atol=1e-10, rtol=0)


# Tolerances, as relative error of the norm against float64 on the same (rounded) values, (forward, backward):
# bf16 (unit roundoff 2**-8 = 3.9e-3): 2e-2, 3e-2; fp16 (2**-11 = 4.9e-4): 4e-3, 6e-3. Each output sums
# C / groups * K = 12 products and the interpolation fraction is itself rounded to the low precision; the
# measured errors on the CPU are about one unit roundoff.
LOW_PRECISION_TOL = {torch.bfloat16: (2e-2, 3e-2), torch.float16: (4e-3, 6e-3)}


@pytest.mark.parametrize("offset_dtype", ["low", "float32"], ids=["low-offsets", "f32-offsets"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_low_precision_forward_backward(device, dtype, offset_dtype):
    """bf16/fp16 forward and backward are finite and close to float64 on the same rounded values.

    Offsets either in the same low precision or in float32 (as under autocast, which leaves them alone);
    each gradient has its tensor's dtype.
    """
    x, offset, weight, bias, mask, kw = make_case(
        device, c_in=8, c_out=8, length=64, groups=2, offset_groups=2, with_mask=True, with_bias=True, padding=1
    )
    # Round once to the low precision; the float64 reference then sees exactly the same values.
    low = [t.to(dtype) for t in (x, offset, weight, bias, mask)]
    if offset_dtype == "float32":
        low[1] = low[1].float()
    ref = [t.double().requires_grad_() for t in low]
    low = [t.requires_grad_() for t in low]
    try:
        out = deform_conv1d(low[0], low[1], low[2], low[3], mask=low[4], **kw)
    except (RuntimeError, NotImplementedError) as err:
        if "not implemented for" in str(err) and dtype == torch.float16:
            pytest.skip(f"float16 kernels are not available on {device}: {err}")
        raise
    assert out.dtype == dtype
    out_ref = deform_conv1d(ref[0], ref[1], ref[2], ref[3], mask=ref[4], **kw)
    fwd_tol, bwd_tol = LOW_PRECISION_TOL[dtype]
    assert torch.isfinite(out).all()
    assert rel_err(out, out_ref) < fwd_tol

    g = randn(*out.shape, device=device, dtype=dtype)
    (out * g).sum().backward()
    (out_ref * g.double()).sum().backward()
    for name, a, b in zip(("input", "offset", "weight", "bias", "mask"), low, ref, strict=True):
        assert a.grad.dtype == a.dtype, name
        assert torch.isfinite(a.grad).all(), name
        assert rel_err(a.grad, b.grad) < bwd_tol, name


def _err(case_id, match, x=(2, 4, 10), off=(2, 3, 8), w=(4, 4, 3), b=None, m=None, **kwargs):
    """One shape-error case; by default input [2, 4, 10], K = 3, L_out = 8 and valid shapes everywhere else."""
    return pytest.param(x, off, w, b, m, kwargs, match, id=case_id)


SHAPE_ERRORS = [
    _err("offset-wrong-L_out", r"\[2, offset_groups \* 3, 10\].*got \[2, 3, 9\]", off=(2, 3, 9), padding=1),
    _err("offset-wrong-batch", r"\[2, offset_groups \* 3, 8\].*got \[1, 3, 8\]", off=(1, 3, 8)),
    _err("offset-channels-not-multiple-of-K", r"offset_groups \* 3.*got \[2, 4, 8\]", off=(2, 4, 8)),
    _err("offset-not-3d", r"\[2, offset_groups \* 3, 8\].*got \[2, 24\]", off=(2, 24)),
    _err("offset-groups-not-dividing-C_in", r"9 channels = 3 offset groups.*C_in=4", off=(2, 9, 8)),
    _err("mask-length", r"\[2, 3, 8\].*got \[2, 3, 7\]", m=(2, 3, 7)),
    _err("mask-channels", r"\[2, 6, 8\].*got \[2, 3, 8\]", off=(2, 6, 8), m=(2, 3, 8)),
    _err("weight-vs-groups", r"\[C_out, 2, K\].*C_in=4.*groups=2.*got \[4, 4, 3\]", groups=2),
    _err("weight-vs-C_in", r"\[C_out, 4, K\].*got \[4, 3, 3\]", w=(4, 3, 3)),
    _err("groups-not-dividing-C_out", r"groups=2.*C_in=4.*C_out=3", w=(3, 2, 3), groups=2),
    _err("weight-not-3d", r"\[C_out, C_in / groups, K\].*got \[4, 12\]", w=(4, 12)),
    _err("bias-length", r"bias of shape \[4\], got \[3\]", b=(3,)),
    _err("bias-2d", r"bias of shape \[4\], got \[4, 1\]", b=(4, 1)),
    _err("input-2d", r"\[B, C_in, L\], got \[4, 10\]", x=(4, 10)),
    _err("input-4d", r"\[B, C_in, L\], got \[1, 2, 4, 10\]", x=(1, 2, 4, 10)),
    _err("kernel-longer-than-input", r"length 4.*\(0, 0\).*extent 7", x=(2, 4, 4), off=(2, 3, 1), dilation=3),
    _err(
        "kernel-longer-than-padded", r"length 1.*\(1, 1\).*extent 4", x=(2, 4, 1), off=(2, 4, 1), w=(4, 4, 4), padding=1
    ),
]


@pytest.mark.parametrize(("x_shape", "off_shape", "w_shape", "b_shape", "m_shape", "kwargs", "match"), SHAPE_ERRORS)
def test_shape_errors(device, x_shape, off_shape, w_shape, b_shape, m_shape, kwargs, match):
    """Inconsistent shapes raise ValueError/RuntimeError stating the expected and the actual sizes."""

    def zeros(shape):
        return torch.zeros(*shape, device=device) if shape is not None else None

    x, offset, weight, bias, mask = (zeros(shape) for shape in (x_shape, off_shape, w_shape, b_shape, m_shape))
    with pytest.raises((ValueError, RuntimeError), match=match):
        deform_conv1d(x, offset, weight, bias, mask=mask, **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"padding": "same", "stride": 2}, r"same.*stride=2"),
        ({"padding": "full"}, r"'full'"),
        ({"padding": -1}, r"-1"),
        ({"padding": (1, 1, 1)}, r"\(1, 1, 1\)"),
        ({"padding": (2, -1)}, r"\(2, -1\)"),
        ({"stride": 0}, r"stride.*0"),
        ({"dilation": 0}, r"dilation.*0"),
        ({"groups": 0}, r"groups.*0"),
    ],
    ids=[
        "same-strided",
        "unknown-string",
        "negative",
        "3-tuple",
        "negative-in-tuple",
        "stride0",
        "dilation0",
        "groups0",
    ],
)
def test_argument_errors(device, kwargs, match):
    """Invalid padding/stride/dilation/groups raise ValueError naming the offending value."""
    x, offset, weight = (torch.zeros(*shape, device=device) for shape in ((2, 4, 10), (2, 3, 10), (4, 4, 3)))
    with pytest.raises(ValueError, match=match):
        deform_conv1d(x, offset, weight, **kwargs)


@pytest.mark.parametrize(("groups", "c_out", "offset_groups"), [(1, 6, 2), (6, 6, 3), (2, 8, 6)], ids=str)
def test_cuda_matches_cpu(device, groups, c_out, offset_groups):
    """On ``--device cuda`` the output and the gradients of its weighted sum equal the CPU's."""
    if device.type != "cuda":
        pytest.skip("compares a CUDA device to the CPU: run with --device cuda")
    cpu = torch.device("cpu")
    x, offset, weight, bias, mask, kw = make_case(
        cpu,
        c_in=6,
        c_out=c_out,
        length=40,
        groups=groups,
        offset_groups=offset_groups,
        with_mask=True,
        with_bias=True,
        padding="same",
        dilation=2,
    )
    g = randn(2, c_out, 40, device=cpu)
    results = {}
    for dev in (cpu, device):
        leaves = [t.to(dev).requires_grad_() for t in (x, offset, weight, bias, mask)]
        out = deform_conv1d(leaves[0], leaves[1], leaves[2], leaves[3], mask=leaves[4], **kw)
        (out * g.to(dev)).sum().backward()
        results[dev.type] = [out.detach().cpu()] + [leaf.grad.cpu() for leaf in leaves]
    for a, b in zip(results["cuda"], results["cpu"], strict=True):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)


def test_autocast_bf16(device):
    """Under ``torch.autocast(bfloat16)`` float32 tensors give a bf16 output close to the float32 one.

    Tolerance: relative error of the output norm < 2e-2 (bf16 unit roundoff 3.9e-3). The gradients reach
    the float32 leaves as float32.
    """
    x, offset, weight, bias, mask, kw = make_case(
        device, c_in=8, c_out=8, length=32, groups=2, offset_groups=2, with_mask=True, with_bias=True, padding=1
    )
    leaves = [t.float().requires_grad_() for t in (x, offset, weight, bias, mask)]
    expected = deform_conv1d(*leaves[:4], mask=leaves[4], **kw)
    assert expected.dtype == torch.float32
    with torch.autocast(device.type, dtype=torch.bfloat16):
        out = deform_conv1d(*leaves[:4], mask=leaves[4], **kw)
    assert out.dtype == torch.bfloat16
    assert rel_err(out, expected) < 2e-2
    out.float().sum().backward()
    for leaf in leaves:
        assert leaf.grad.dtype == torch.float32
        assert torch.isfinite(leaf.grad).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("value", [1e6, -1e6, 1e12, -1e12, 3.5e4], ids=str)
@pytest.mark.parametrize("groups", [1, 4], ids=["g1", "depthwise"])
def test_large_offsets_read_zeros(device, dtype, value, groups):
    """Offsets far outside the signal read zeros: the output is the bias; gradients are zero and finite."""
    x = randn(2, 4, 20, device=device, dtype=dtype).requires_grad_()
    weight = randn(4, 4 // groups, 3, device=device, dtype=dtype).requires_grad_()
    bias = randn(4, device=device, dtype=dtype)
    offset = torch.full((2, 6, 20), value, device=device, dtype=dtype, requires_grad=True)
    out = deform_conv1d(x, offset, weight, bias, padding=1, groups=groups)
    assert torch.equal(out, bias.view(1, -1, 1).expand_as(out))
    out.sum().backward()
    for grad in (x.grad, offset.grad, weight.grad):
        assert torch.count_nonzero(grad) == 0


@pytest.mark.parametrize(("groups", "offset_groups"), [(1, 1), (2, 2), (4, 4)], ids=["dense", "grouped", "depthwise"])
def test_nan_offsets_propagate(device, groups, offset_groups):
    """A NaN offset gives NaN in the frames (and output channels) that read it, without raising; others are exact."""
    x = randn(2, 4, 12, device=device)
    weight = randn(4, 4 // groups, 3, device=device)
    offset = randn(2, offset_groups * 3, 12, device=device, scale=2.0)
    reference = deform_conv1d(x, offset, weight, padding=1, groups=groups)
    offset[1, 1, 5] = float("nan")  # batch 1, offset group 0, tap 1, frame 5
    out = deform_conv1d(x, offset, weight, padding=1, groups=groups)
    affected = torch.zeros_like(out, dtype=torch.bool)
    affected[1, : 4 // offset_groups, 5] = True  # output channels fed by offset group 0 (groups align with it)
    assert torch.isnan(out[affected]).all()
    assert not torch.isnan(out[~affected]).any()
    torch.testing.assert_close(out[~affected], reference[~affected], atol=0, rtol=0)


def test_fraction_precise_far_into_long_signals(device):
    """The fraction comes from the offset alone: a float32 offset of 0.3 interpolates 0.7/0.3 even at t ~ 2**22."""
    length = 2**22 - 16  # positions stay float32 (ulp 0.5 there), so only the offset carries the 0.3
    x = torch.zeros(1, 1, length, device=device)
    x[..., -8:] = torch.arange(1.0, 9.0, device=device)
    offset = torch.zeros(1, 1, length, device=device)
    offset[..., -8:] = 0.3
    out = deform_conv1d(x, offset, torch.ones(1, 1, 1, device=device))
    tail = out[0, 0, -8:].double().cpu()
    expected = torch.tensor([1.0, 2, 3, 4, 5, 6, 7, 8], dtype=F64)
    expected = 0.7 * expected + 0.3 * torch.cat([expected[1:], torch.zeros(1, dtype=F64)])
    torch.testing.assert_close(tail, expected, atol=1e-5, rtol=0)
