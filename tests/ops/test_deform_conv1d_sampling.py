"""The operator reuses scratch buffers between calls: nothing it returns may alias them."""

import pytest
import torch

from dereverb.ops import deform_conv1d, release_workspace


@pytest.mark.parametrize(("offset_groups", "groups"), [(1, 6), (6, 6), (3, 6), (1, 1), (6, 2)])
def test_results_survive_later_calls(device, offset_groups, groups):
    """Outputs and gradients of a first call must not change when a second call of the same
    shape (which reuses the same scratch buffers) runs forward and backward."""
    release_workspace()

    def run(seed):
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(2, 6, 25, generator=g).to(device).requires_grad_()
        off = (torch.randn(2, offset_groups * 3, 25, generator=g) * 2).to(device).requires_grad_()
        w = torch.randn(6, 6 // groups, 3, generator=g).to(device).requires_grad_()
        y = deform_conv1d(x, off, w, padding="same", dilation=2, groups=groups)
        y.backward(torch.randn(y.shape, generator=g).to(device))
        return [y.detach(), x.grad, off.grad, w.grad]

    first = run(1)
    snapshot = [t.clone() for t in first]
    second = run(2)
    for a, b, c in zip(first, snapshot, second, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
        assert a.data_ptr() != c.data_ptr()
        assert not torch.equal(a, c)


def test_pending_backward_survives_other_calls(device):
    """Two layers' forwards run before either backward (as in any network): the first layer's
    backward must not read the second's scratch data."""
    x = torch.randn(2, 4, 30, device=device, dtype=torch.float64, requires_grad=True)
    off1 = torch.randn(2, 3, 30, device=device, dtype=torch.float64, requires_grad=True)
    off2 = torch.randn(2, 3, 30, device=device, dtype=torch.float64, requires_grad=True)
    w1 = torch.randn(4, 1, 3, device=device, dtype=torch.float64, requires_grad=True)
    w2 = torch.randn(4, 1, 3, device=device, dtype=torch.float64, requires_grad=True)

    def net(x, off1, off2, w1, w2):
        h = deform_conv1d(x, off1, w1, padding="same", groups=4)
        return deform_conv1d(torch.tanh(h), off2, w2, padding="same", dilation=3, groups=4)

    assert torch.autograd.gradcheck(net, (x, off1, off2, w1, w2))


def test_release_workspace_frees_the_buffers():
    from dereverb.ops.deform_conv1d_sampling import workspace

    deform_conv1d(torch.randn(1, 2, 10), torch.zeros(1, 3, 8), torch.randn(2, 2, 3))
    assert workspace.buffers
    release_workspace()
    assert not workspace.buffers


def test_inference_mode_first_then_training():
    # buffers first allocated under inference_mode must still be writable by a later training call
    release_workspace()
    x = torch.randn(2, 8, 50)
    weight = torch.randn(8, 1, 3)
    offset = torch.rand(2, 3, 50)
    with torch.inference_mode():
        expected = deform_conv1d(x, offset, weight, padding=1, groups=8)
    xg = x.clone().requires_grad_()
    out = deform_conv1d(xg, offset, weight, padding=1, groups=8)
    out.sum().backward()
    torch.testing.assert_close(out.detach(), expected)
    assert torch.isfinite(xg.grad).all()
    assert xg.grad.abs().sum() > 0
