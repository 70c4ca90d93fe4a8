"""Functional operators."""

from dereverb.ops.deform_conv1d import conv1d_output_length, deform_conv1d, release_workspace, resolve_padding
from dereverb.ops.depthwise_conv1d import depthwise_conv1d
from dereverb.ops.prelu import prelu

__all__ = ["conv1d_output_length", "deform_conv1d", "depthwise_conv1d", "prelu", "release_workspace", "resolve_padding"]
