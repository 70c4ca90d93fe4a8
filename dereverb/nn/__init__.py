"""Neural network modules: deformable convolutions and normalisation layers."""

from dereverb.nn.activation import PReLU
from dereverb.nn.deform_conv import DeformableConv1d, DeformConv1d, OffsetPredictor
from dereverb.nn.norm import CumulativeLayerNorm, GlobalLayerNorm, make_norm

__all__ = [
    "CumulativeLayerNorm",
    "DeformConv1d",
    "DeformableConv1d",
    "GlobalLayerNorm",
    "OffsetPredictor",
    "PReLU",
    "make_norm",
]
