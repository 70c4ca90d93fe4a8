"""Dereverberation models: the Conv-TasNet-style TCN baseline and the Deformable TCN."""

from dereverb.models.tasnet import (
    DTCN,
    LIMITS,
    SIZES,
    TCN,
    DepthwiseConv1d,
    TasNet,
    TemporalBlock,
    preset,
    receptive_field,
)

MODELS = {"TCN": TCN, "DTCN": DTCN}

__all__ = [
    "DTCN",
    "LIMITS",
    "MODELS",
    "SIZES",
    "TCN",
    "DepthwiseConv1d",
    "TasNet",
    "TemporalBlock",
    "preset",
    "receptive_field",
]
