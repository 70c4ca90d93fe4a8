"""The PReLU module is a drop-in for nn.PReLU."""

import torch
from torch import nn

from dereverb.nn import PReLU


def test_prelu_module_is_a_drop_in_for_nn_prelu():
    ours, theirs = PReLU(), nn.PReLU()
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(2, 3, 9)
    torch.testing.assert_close(ours(x), theirs(x), rtol=0, atol=0)
