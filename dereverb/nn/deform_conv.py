"""Deformable convolution modules: the bare layer, the offset predictor, and both together.

:class:`DeformConv1d` takes the offsets as an argument; :class:`PackedDeformConv1d` packs an
:class:`OffsetPredictor` with it and predicts them from its input (the naming of mmcv's
``DeformConv2dPack``). ``DeformableConv1d``, the packed layer's former name, still resolves to it
for one release, with a :class:`FutureWarning`.
"""

from __future__ import annotations

import math
import numbers
import warnings

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dereverb.nn.activation import PReLU
from dereverb.nn.norm import make_norm
from dereverb.ops import deform_conv1d, depthwise_conv1d, resolve_padding

__all__ = ["DeformConv1d", "OffsetPredictor", "PackedDeformConv1d"]

#: Former names kept for one release, ``old -> new``: using one warns (see :func:`renamed`).
RENAMED = {"DeformableConv1d": "PackedDeformConv1d"}


class DeformConv1d(nn.Module):
    """1-D deformable convolution layer that takes its offsets as an argument: ``layer(x, offset, mask=None)``.

    It holds only the parameters; :class:`PackedDeformConv1d` also predicts the offsets from its
    input. Parameters and their initialisation are those of :class:`torch.nn.Conv1d` (zero padding
    only). See :func:`dereverb.ops.deform_conv1d` for the sampling rule and shapes.

    Args:
        in_channels: input channels ``C_in``.
        out_channels: output channels ``C_out``.
        kernel_size: number of taps ``K``.
        stride: step between output frames.
        padding: int, ``(left, right)``, ``"valid"`` or ``"same"``.
        dilation: spacing between taps.
        groups: blocked connections from input to output channels.
        bias: whether to learn an additive bias.

    Example:
        >>> layer = DeformConv1d(4, 4, kernel_size=3, padding="same", groups=4)
        >>> layer
        DeformConv1d(4, 4, kernel_size=3, stride=1, padding=same, groups=4)
        >>> x, offset = torch.randn(2, 4, 50), torch.zeros(2, 3, 50)  # one shared offset per tap
        >>> plain = torch.nn.functional.conv1d(x, layer.weight, layer.bias, padding=1, groups=4)
        >>> torch.allclose(layer(x, offset), plain, atol=1e-6)
        True
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int | str | tuple[int, int] = 0,
        dilation: int = 1,
        groups: int = 1,
        bias: bool = True,
    ):
        super().__init__()
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"groups={groups} must divide in_channels={in_channels} and out_channels={out_channels}")
        resolve_padding(padding, kernel_size, dilation, stride)  # validates early, with a clear message
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, kernel_size
        self.stride, self.padding, self.dilation, self.groups = stride, padding, dilation, groups
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, kernel_size))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Initialise like :class:`torch.nn.Conv1d`."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(self.weight[0].numel())
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, input: Tensor, offset: Tensor, mask: Tensor | None = None) -> Tensor:
        """Args:
            input (Tensor[B, C_in, L]): the signal.
            offset (Tensor[B, offset_groups * K, L_out]): fractional offsets in samples.
            mask (Tensor[B, offset_groups * K, L_out], optional): modulation (DCNv2).

        Returns:
            Tensor[B, C_out, L_out]
        """
        return deform_conv1d(
            input, offset, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups, mask
        )

    def extra_repr(self) -> str:
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        if self.padding not in (0, "valid"):
            s += f", padding={self.padding}"
        if self.dilation != 1:
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        return s


class OffsetPredictor(nn.Module):
    """The side convolution that predicts a deformable layer's offsets (and optional mask).

    depthwise conv (the main conv's kernel, stride, padding and dilation) -> PReLU -> norm ->
    pointwise conv to ``offset_groups * K`` offset channels (plus as many mask channels with
    ``modulation``). The pointwise conv is zero-initialised, so an untrained predictor gives
    zero offsets and a mask of ones: the deformable layer starts as the plain convolution.

    Args:
        channels: input channels.
        kernel_size: the main convolution's ``K``.
        stride: the main convolution's stride.
        padding: the main convolution's padding.
        dilation: the main convolution's dilation.
        offset_groups: ``1`` shares the offsets across channels; ``channels`` gives every
            channel its own.
        modulation: also predict a DCNv2 mask, ``2 * sigmoid(.)`` (one at initialisation).
        max_offset: if set (a number in ``(0, 1e6]``), offsets are bounded softly:
            ``max_offset * tanh(raw / max_offset)``.
        norm: ``"gLN"``, ``"cLN"`` or ``"none"``.
        max_tap_offset: if set, a tensor ``[K]`` of upper bounds per tap (used to keep causal
            taps from reading the future).

    Shape:
        ``Tensor[B, C, L] -> (Tensor[B, G*K, L_out], Tensor[B, G*K, L_out] or None)``.
    """

    def __init__(
        self,
        channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int | str | tuple[int, int] = "same",
        dilation: int = 1,
        offset_groups: int = 1,
        modulation: bool = False,
        max_offset: float | None = None,
        norm: str = "gLN",
        max_tap_offset: Tensor | None = None,
    ):
        super().__init__()
        if offset_groups < 1 or channels % offset_groups:
            raise ValueError(f"offset_groups={offset_groups} must be >= 1 and divide channels={channels}")
        if max_offset is not None and not (
            isinstance(max_offset, numbers.Real) and not isinstance(max_offset, bool) and 0 < max_offset <= 1e6
        ):  # larger bounds overflow float32 in max_offset * tanh(offset / max_offset)
            raise ValueError(f"max_offset must be a positive number up to 1e6 or None, got {max_offset!r}")
        self.kernel_size, self.offset_groups, self.modulation, self.max_offset = (
            kernel_size,
            offset_groups,
            modulation,
            max_offset,
        )
        pad_left, pad_right = resolve_padding(padding, kernel_size, dilation, stride)
        self.padding = (pad_left, pad_right)
        # Holds the weights; forward() calls depthwise_conv1d (faster backward on the CPU) when stride is 1.
        self.depthwise = nn.Conv1d(channels, channels, kernel_size, stride, 0, dilation, groups=channels)
        self.act = PReLU()
        self.norm = make_norm(norm, channels)
        n_out = offset_groups * kernel_size * (2 if modulation else 1)
        self.pointwise = nn.Conv1d(channels, n_out, 1)
        nn.init.zeros_(self.pointwise.weight)
        nn.init.zeros_(self.pointwise.bias)
        if max_tap_offset is not None:
            bound = torch.as_tensor(max_tap_offset, dtype=torch.float32).repeat(offset_groups).view(1, -1, 1)
            self.register_buffer("max_tap_offset", bound, persistent=False)
        else:
            self.max_tap_offset = None

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        conv = self.depthwise
        if conv.stride[0] == 1:
            h = depthwise_conv1d(x, conv.weight, conv.bias, self.padding, conv.dilation[0])
        else:
            h = conv(F.pad(x, self.padding))
        h = self.pointwise(self.norm(self.act(h)))
        n = self.offset_groups * self.kernel_size
        offset, mask = (h[:, :n], 2 * torch.sigmoid(h[:, n:])) if self.modulation else (h, None)
        if self.max_offset is not None:
            offset = self.max_offset * torch.tanh(offset / self.max_offset)
        if self.max_tap_offset is not None:
            offset = torch.minimum(offset, self.max_tap_offset.to(offset.dtype))
        return offset, mask


class PackedDeformConv1d(nn.Module):
    """1-D deformable convolution that predicts its own offsets from its input: ``layer(x)``.

    An :class:`OffsetPredictor` feeding a :class:`DeformConv1d` (which takes the offsets as an
    argument instead): the building block of the DTCN. Formerly ``DeformableConv1d``.

    ``forward(x)`` returns the output only; :meth:`forward_with_offsets` also returns the
    offsets and mask it used, for analysis and plots.

    Args:
        in_channels, out_channels, kernel_size, stride, dilation, groups, bias: as
            :class:`torch.nn.Conv1d`.
        padding: ``"same"`` (default) or anything :class:`DeformConv1d` accepts. Ignored
            with ``causal=True``, which pads ``dilation * (K - 1)`` on the left only.
        offset_groups: ``1`` (shared offsets, as in the published DTCN) up to ``in_channels``.
        modulation: learn a DCNv2 mask too.
        max_offset: optional soft bound on the offsets' magnitude, in samples.
        causal: no output frame depends on a later input sample: causal padding, and every tap
            ``k`` bounded to ``offset <= dilation * (K - 1 - k)``.
        norm: the offset predictor's normalisation (``"gLN"``; ``causal`` requires ``"cLN"``
            or ``"none"``).

    References:
        Ravenscroft et al., "Deformable Temporal Convolutional Networks for Monaural Noisy
        Reverberant Speech Separation", ICASSP 2023.

    Example:
        >>> layer = PackedDeformConv1d(8, 8, kernel_size=3, dilation=2, groups=8)
        >>> x = torch.randn(2, 8, 100)
        >>> y, offset, mask = layer.forward_with_offsets(x)
        >>> y.shape, offset.shape, mask
        (torch.Size([2, 8, 100]), torch.Size([2, 3, 100]), None)
        >>> plain = torch.nn.functional.conv1d(x, layer.conv.weight, layer.conv.bias, padding=2, dilation=2, groups=8)
        >>> torch.allclose(layer(x), plain, atol=1e-6)  # untrained: exactly the plain convolution
        True
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int | str | tuple[int, int] = "same",
        dilation: int = 1,
        groups: int = 1,
        bias: bool = True,
        offset_groups: int = 1,
        modulation: bool = False,
        max_offset: float | None = None,
        causal: bool = False,
        norm: str = "gLN",
    ):
        super().__init__()
        max_tap = None
        if causal:
            if norm == "gLN":
                raise ValueError("causal=True needs a causal norm for the offset predictor: norm='cLN' or 'none'")
            padding = (dilation * (kernel_size - 1), 0)
            max_tap = torch.tensor([float(dilation * (kernel_size - 1 - k)) for k in range(kernel_size)])
        self.causal = causal
        self.conv = DeformConv1d(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias)
        self.offset_predictor = OffsetPredictor(
            in_channels, kernel_size, stride, padding, dilation, offset_groups, modulation, max_offset, norm, max_tap
        )

    def forward_with_offsets(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        """Return ``(output, offset, mask)``; ``mask`` is ``None`` without modulation.

        Args:
            x (Tensor[B, C_in, L]): the input.

        Returns:
            ``(Tensor[B, C_out, L_out], Tensor[B, offset_groups * K, L_out], Tensor or None)``
        """
        offset, mask = self.offset_predictor(x)
        return self.conv(x, offset, mask), offset, mask

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_with_offsets(x)[0]


def renamed(name: str) -> type:
    """The class formerly called ``name`` (a key of :data:`RENAMED`), with a :class:`FutureWarning`.

    Called by a module-level ``__getattr__``: the warning points at the code that used the old name.

    Example:
        >>> import warnings
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     cls = renamed("DeformableConv1d")
        >>> cls is PackedDeformConv1d, caught[0].category.__name__
        (True, 'FutureWarning')
    """
    new = RENAMED[name]
    warnings.warn(
        f"dereverb.nn.{name} is deprecated and will be removed in the next release: use dereverb.nn.{new}, "
        "the same class under its new name",
        FutureWarning,
        stacklevel=3,
    )
    return globals()[new]


def __getattr__(name: str):
    if name in RENAMED:
        return renamed(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
