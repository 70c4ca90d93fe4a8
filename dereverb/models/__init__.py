"""Dereverberation models: the Conv-TasNet-style TCN baseline and the Deformable TCN."""

from dereverb.models.tasnet import DTCN, TCN, DepthwiseConv1d, TasNet, TemporalBlock, receptive_field

MODELS = {"TCN": TCN, "DTCN": DTCN}

__all__ = ["DTCN", "MODELS", "TCN", "DepthwiseConv1d", "TasNet", "TemporalBlock", "receptive_field"]
