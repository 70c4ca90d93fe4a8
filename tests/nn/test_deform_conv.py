"""DeformConv1d (offsets given), PackedDeformConv1d (offsets predicted) and the OffsetPredictor."""

import importlib
import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import dereverb.nn
from dereverb.nn import DeformConv1d, OffsetPredictor, PackedDeformConv1d
from dereverb.ops import deform_conv1d


@pytest.mark.parametrize(("groups", "bias"), [(1, True), (4, False), (2, True)])
def test_deform_conv1d_initialises_like_conv1d(groups, bias):
    torch.manual_seed(3)
    ref = nn.Conv1d(4, 8, 3, padding=1, groups=groups, bias=bias)
    torch.manual_seed(3)
    layer = DeformConv1d(4, 8, 3, padding=1, groups=groups, bias=bias)
    torch.testing.assert_close(layer.weight, ref.weight, rtol=0, atol=0)
    assert (layer.bias is None) == (ref.bias is None)
    if bias:
        torch.testing.assert_close(layer.bias, ref.bias, rtol=0, atol=0)


def test_deform_conv1d_repr():
    layer = DeformConv1d(16, 16, 3, padding="same", dilation=4, groups=16, bias=False)
    expected = "DeformConv1d(16, 16, kernel_size=3, stride=1, padding=same, dilation=4, groups=16, bias=False)"
    assert repr(layer) == expected
    assert "DeformConv1d(2, 3, kernel_size=5, stride=2)" == repr(DeformConv1d(2, 3, 5, stride=2))


def test_deform_conv1d_module_delegates_to_the_function(device):
    layer = DeformConv1d(6, 6, 3, padding="same", dilation=2, groups=3).to(device)
    x = torch.randn(2, 6, 30, device=device)
    offset = torch.randn(2, 2 * 3, 30, device=device)
    mask = torch.rand(2, 2 * 3, 30, device=device)
    expected = deform_conv1d(x, offset, layer.weight, layer.bias, 1, "same", 2, 3, mask)
    torch.testing.assert_close(layer(x, offset, mask), expected, rtol=0, atol=0)


def test_bad_module_arguments_are_refused():
    with pytest.raises(ValueError, match="groups=3 must divide in_channels=4"):
        DeformConv1d(4, 6, 3, groups=3)
    with pytest.raises(ValueError, match="padding"):
        DeformConv1d(4, 4, 3, padding="full")
    with pytest.raises(ValueError, match="offset_groups=3 must be >= 1 and divide channels=4"):
        OffsetPredictor(4, 3, offset_groups=3)
    with pytest.raises(ValueError, match="causal=True needs a causal norm"):
        PackedDeformConv1d(4, 4, 3, causal=True)


@pytest.mark.parametrize("max_offset", [float("inf"), float("nan"), 0.0, -1.0, 1e300, True, "2"])
def test_bad_max_offset_is_refused(max_offset):
    match = rf"max_offset must be a positive number up to 1e6 or None, got {re.escape(repr(max_offset))}$"
    with pytest.raises(ValueError, match=match):
        OffsetPredictor(4, 3, max_offset=max_offset)
    with pytest.raises(ValueError, match=match):
        PackedDeformConv1d(4, 4, 3, groups=4, max_offset=max_offset)


def test_largest_max_offset_still_gives_finite_offsets():
    layer = OffsetPredictor(4, 3, max_offset=1e6)
    with torch.no_grad():
        layer.pointwise.bias.fill_(5.0)
    offset, _ = layer(torch.randn(1, 4, 20))
    torch.testing.assert_close(offset, torch.full_like(offset, 5.0))


@pytest.mark.parametrize(
    ("offset_groups", "modulation", "stride"), [(1, False, 1), (8, False, 1), (2, True, 1), (1, False, 2)]
)
def test_untrained_deformable_layer_is_the_plain_convolution(device, offset_groups, modulation, stride):
    padding = "same" if stride == 1 else 2
    layer = PackedDeformConv1d(
        8,
        8,
        3,
        stride=stride,
        padding=padding,
        dilation=2,
        groups=8,
        offset_groups=offset_groups,
        modulation=modulation,
    ).to(device)
    x = torch.randn(3, 8, 41, device=device)
    y, offset, mask = layer.forward_with_offsets(x)
    plain = F.conv1d(x, layer.conv.weight, layer.conv.bias, stride=stride, padding=2, dilation=2, groups=8)
    assert y.shape == plain.shape
    assert offset.shape == (3, offset_groups * 3, plain.shape[-1])
    assert torch.count_nonzero(offset) == 0
    if modulation:
        torch.testing.assert_close(mask, torch.ones_like(mask))
    else:
        assert mask is None
    torch.testing.assert_close(y, plain, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(layer(x), y, rtol=0, atol=0)


def test_zero_initialised_predictor_still_learns(device):
    """The offsets start at integer positions; the one-sided derivative there must reach the
    predictor's zero-initialised last layer, otherwise training could never move the taps."""
    layer = PackedDeformConv1d(4, 4, 3, groups=4).to(device)
    x = torch.randn(2, 4, 64, device=device)
    layer(x).pow(2).sum().backward()
    grad = layer.offset_predictor.pointwise.weight.grad
    assert grad is not None
    assert grad.abs().sum() > 0


def test_offsets_are_learnable_end_to_end(device):
    """Gradient descent on a free offset recovers a fractional delay of 2.3 samples."""
    torch.manual_seed(1)
    x = torch.randn(1, 1, 200, device=device, dtype=torch.float64).cumsum(-1) / 10  # smooth-ish signal
    w = torch.ones(1, 1, 1, device=device, dtype=torch.float64)
    target = deform_conv1d(x, torch.full((1, 1, 200), 2.3, device=device, dtype=torch.float64), w)
    delay = torch.zeros(1, device=device, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([delay], lr=0.1)
    for _ in range(200):
        opt.zero_grad()
        out = deform_conv1d(x, delay.view(1, 1, 1).expand(1, 1, 200), w)
        loss = (out - target)[..., :190].pow(2).mean()
        loss.backward()
        opt.step()
    assert abs(delay.item() - 2.3) < 0.02


def test_max_offset_bounds_the_offsets(device):
    layer = OffsetPredictor(4, 3, max_offset=2.0).to(device)
    with torch.no_grad():
        layer.pointwise.bias.fill_(100.0)
    offset, _ = layer(torch.randn(2, 4, 20, device=device))
    assert offset.max() <= 2.0
    assert offset.min() > 1.9


def _random_predictor(layer: PackedDeformConv1d) -> None:
    """Give the (zero-initialised) predictor random weights, so the offsets are not zero."""
    with torch.no_grad():
        layer.offset_predictor.pointwise.weight.normal_(0, 3.0)
        layer.offset_predictor.pointwise.bias.normal_(0, 3.0)


def test_causal_layer_never_reads_the_future(device):
    layer = PackedDeformConv1d(4, 4, 3, dilation=2, groups=4, causal=True, norm="cLN", modulation=True).to(device)
    _random_predictor(layer)
    x = torch.randn(1, 4, 60, device=device)
    y, offset, _ = layer.forward_with_offsets(x)
    assert offset.abs().max() > 1  # the taps really move
    for s in (10, 31, 59):
        x2 = x.clone()
        x2[..., s:] = torch.randn_like(x2[..., s:]) * 100
        y2 = layer(x2)
        torch.testing.assert_close(y2[..., :s], y[..., :s], rtol=0, atol=0)
        assert not torch.allclose(y2[..., s:], y[..., s:])


def test_non_causal_layer_does_read_the_future(device):
    """Guards the causal test above: the same check must fail for a non-causal layer."""
    layer = PackedDeformConv1d(4, 4, 3, dilation=2, groups=4).to(device)
    _random_predictor(layer)
    x = torch.randn(1, 4, 60, device=device)
    x2 = x.clone()
    x2[..., 31:] += 10
    assert not torch.allclose(layer(x2)[..., :31], layer(x)[..., :31])


@pytest.mark.parametrize("module", ["dereverb.nn", "dereverb.nn.deform_conv"])
def test_former_name_deformable_conv1d_warns_and_is_the_packed_layer(module):
    mod = importlib.import_module(module)
    with pytest.warns(
        FutureWarning, match=r"DeformableConv1d is deprecated .* use dereverb\.nn\.PackedDeformConv1d"
    ) as w:
        cls = mod.DeformableConv1d
    assert cls is PackedDeformConv1d
    assert w[0].filename == __file__  # the warning points at the code that used the old name
    with pytest.warns(FutureWarning, match="PackedDeformConv1d"):
        from dereverb.nn import DeformableConv1d
    assert DeformableConv1d is PackedDeformConv1d
    assert type(DeformableConv1d(4, 4, 3, groups=4)) is PackedDeformConv1d
    assert "DeformableConv1d" not in dereverb.nn.__all__
    with pytest.raises(AttributeError, match="has no attribute 'DeformableConv2d'"):
        _ = mod.DeformableConv2d


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
