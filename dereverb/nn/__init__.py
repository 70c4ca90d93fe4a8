"""Neural network modules: deformable convolutions and normalisation layers."""

from dereverb.nn import deform_conv
from dereverb.nn.activation import PReLU
from dereverb.nn.deform_conv import DeformConv1d, OffsetPredictor, PackedDeformConv1d
from dereverb.nn.norm import CumulativeLayerNorm, GlobalLayerNorm, make_norm

__all__ = [
    "CumulativeLayerNorm",
    "DeformConv1d",
    "GlobalLayerNorm",
    "OffsetPredictor",
    "PReLU",
    "PackedDeformConv1d",
    "make_norm",
]


def __getattr__(name: str):
    # Former names (``DeformableConv1d``) still resolve for one release, with a FutureWarning.
    if name in deform_conv.RENAMED:
        return deform_conv.renamed(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
