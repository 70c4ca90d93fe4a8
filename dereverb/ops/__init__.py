"""Functional operators."""

from dereverb.ops.deform_conv1d import conv1d_output_length, deform_conv1d, release_workspace, resolve_padding

__all__ = ["conv1d_output_length", "deform_conv1d", "release_workspace", "resolve_padding"]
