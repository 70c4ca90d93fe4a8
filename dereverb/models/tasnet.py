"""Conv-TasNet-style dereverberation networks: the plain TCN and the Deformable TCN (DTCN).

One block implementation serves both models: the depthwise convolution of every block comes
from a *conv factory*, a plain :class:`DepthwiseConv1d` for the TCN and a
:class:`~dereverb.nn.PackedDeformConv1d` (offsets from its own side convolution) for the DTCN.
"""

from __future__ import annotations

import inspect
import math
import numbers

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dereverb.nn import PackedDeformConv1d, PReLU, make_norm
from dereverb.ops import depthwise_conv1d

__all__ = ["DTCN", "LIMITS", "SIZES", "TCN", "DepthwiseConv1d", "TasNet", "TemporalBlock", "preset", "receptive_field"]


class DepthwiseConv1d(nn.Module):
    """Plain depthwise convolution with "same" (or causal, left-only) zero padding.

    Its weights live in ``.conv`` like those of :class:`~dereverb.nn.PackedDeformConv1d`, so a TCN
    and a DTCN share parameter names.

    Example:
        >>> DepthwiseConv1d(8, 3, dilation=4)(torch.randn(2, 8, 50)).shape
        torch.Size([2, 8, 50])
    """

    def __init__(self, channels: int, kernel_size: int, dilation: int = 1, causal: bool = False):
        super().__init__()
        total = dilation * (kernel_size - 1)
        self.pad = (total, 0) if causal else (total // 2, total - total // 2)
        self.conv = nn.Conv1d(channels, channels, kernel_size, dilation=dilation, groups=channels)

    def forward(self, x: Tensor) -> Tensor:
        return depthwise_conv1d(x, self.conv.weight, self.conv.bias, self.pad, self.conv.dilation[0])


class TemporalBlock(nn.Module):
    """One TCN block: 1x1 conv B->H, PReLU, norm, depthwise conv (kernel P, dilation), PReLU,
    norm, 1x1 conv H->B added to the input (residual), and optionally a 1x1 conv H->Sc skip.

    Args:
        bottleneck: ``B`` channels.
        hidden: ``H`` channels.
        depthwise: the depthwise convolution module ``(B, H, T) -> (B, H, T)``.
        norm: ``"gLN"`` or ``"cLN"``.
        skip_channels: ``Sc``; 0 for no skip output.
    """

    def __init__(self, bottleneck: int, hidden: int, depthwise: nn.Module, norm: str, skip_channels: int = 0):
        super().__init__()
        self.conv1x1 = nn.Conv1d(bottleneck, hidden, 1)
        self.act1 = PReLU()
        self.norm1 = make_norm(norm, hidden)
        self.depthwise = depthwise
        self.act2 = PReLU()
        self.norm2 = make_norm(norm, hidden)
        self.residual = nn.Conv1d(hidden, bottleneck, 1)
        self.skip = nn.Conv1d(hidden, skip_channels, 1) if skip_channels else None

    def forward_with_offsets(self, x: Tensor) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """Return ``(x + residual, skip or None, offsets or None)``."""
        h = self.norm1(self.act1(self.conv1x1(x)))
        offset = None
        if isinstance(self.depthwise, PackedDeformConv1d):
            h, offset, _ = self.depthwise.forward_with_offsets(h)
        else:
            h = self.depthwise(h)
        h = self.norm2(self.act2(h))
        skip = self.skip(h) if self.skip is not None else None
        return x + self.residual(h), skip, offset

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        out, skip, _ = self.forward_with_offsets(x)
        return out, skip


SIZES = {
    "default": {},  # the published DTCN configuration: N=512, B=128, H=512, P=3, X=8, R=3
    "small": {"N": 256, "H": 256, "R": 2},  # sized for training on a CPU
}


def preset(size: str = "default", sample_rate: int = 8000) -> dict:
    """Constructor arguments for a named size at a sample rate.

    The encoder window scales with the rate (L=16 at 8 kHz, 32 at 16 kHz), so the receptive
    field in seconds does not change.

    Example:
        >>> preset("small", 16000)
        {'N': 256, 'H': 256, 'R': 2, 'L': 32}
    """
    if size not in SIZES:
        raise ValueError(f"unknown model size {size!r}: expected one of {sorted(SIZES)}")
    if sample_rate not in (8000, 16000):
        raise ValueError(f"sample_rate must be 8000 or 16000, got {sample_rate!r}")
    return {**SIZES[size], "L": 16 * sample_rate // 8000}


def receptive_field(kernel_size: int, blocks: int, repeats: int, window: int, sample_rate: int | None = None):
    """Receptive field of a TasNet with zero offsets: ``(frames, samples, seconds or None)``.

    Each output sample depends on ``samples`` input samples (encoder window included).
    Deformable layers can move their taps further unless their offsets are bounded.

    Example:
        >>> receptive_field(3, 8, 3, 16, 8000)  # the published DTCN at 8 kHz
        (1531, 12256, 1.532)
    """
    frames = 1 + repeats * (kernel_size - 1) * (2**blocks - 1)
    samples = (frames - 1) * (window // 2) + window
    return frames, samples, (samples / sample_rate if sample_rate else None)


#: Upper bounds of the constructor arguments: far above any published configuration, low enough that a
#: config file cannot ask for an allocation or a construction loop that never ends.
LIMITS = {"channels": 8192, "L": 4096, "P": 64, "X": 16, "blocks": 1024, "max_offset": 1e6}


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_tasnet_arguments(N, L, B, H, P, X, R, norm, causal, skip_channels, mask_activation, init) -> None:
    """Raise ``ValueError`` (one line naming the argument and its value) for arguments :class:`TasNet` refuses."""
    for name, value in (("N", N), ("L", L), ("B", B), ("H", H), ("P", P), ("X", X), ("R", R)):
        if not _is_int(value) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    for name, value, limit in (("N", N, LIMITS["channels"]), ("B", B, LIMITS["channels"]),
                               ("H", H, LIMITS["channels"]), ("L", L, LIMITS["L"]), ("P", P, LIMITS["P"]),
                               ("X", X, LIMITS["X"])):  # fmt: skip
        if value > limit:
            raise ValueError(f"{name} must be at most {limit}, got {value}")
    if X * R > LIMITS["blocks"]:
        raise ValueError(f"X * R (blocks) must be at most {LIMITS['blocks']}, got X={X}, R={R}")
    if L % 2:
        raise ValueError(f"L (encoder window) must be even so that the stride L/2 is whole, got {L}")
    if not isinstance(norm, str) or norm not in ("gLN", "cLN"):
        raise ValueError(f"norm must be 'gLN' or 'cLN', got {norm!r}")
    if not isinstance(causal, bool):
        raise ValueError(f"causal must be true or false, got {causal!r}")
    if causal and norm != "cLN":
        raise ValueError("causal=True needs norm='cLN' (gLN looks at the whole signal)")
    if not isinstance(mask_activation, str) or mask_activation not in ("relu", "sigmoid"):
        raise ValueError(f"mask_activation must be 'relu' or 'sigmoid', got {mask_activation!r}")
    if not _is_int(skip_channels) or not 0 <= skip_channels <= LIMITS["channels"]:
        raise ValueError(f"skip_channels must be an int from 0 to {LIMITS['channels']}, got {skip_channels!r}")
    if not isinstance(init, str) or init not in ("default", "identity"):
        raise ValueError(f"init must be 'default' or 'identity', got {init!r}")
    if init == "identity" and N < 2 * L:
        raise ValueError(f"init='identity' needs N >= 2 * L encoder filters (got N={N}, L={L})")
    if init == "identity" and mask_activation != "relu":
        raise ValueError(f"init='identity' needs mask_activation='relu' (got {mask_activation!r})")


def _check_deformable_arguments(H, offset_groups, modulation, max_offset) -> None:
    """Raise ``ValueError`` (one line naming the argument and its value) for the arguments only :class:`DTCN` has."""
    if _is_int(H) and (not _is_int(offset_groups) or offset_groups < 1 or H % offset_groups):
        raise ValueError(f"offset_groups must divide H={H}, got {offset_groups!r}")
    if not isinstance(modulation, bool):
        raise ValueError(f"modulation must be true or false, got {modulation!r}")
    if max_offset is not None and not (
        isinstance(max_offset, numbers.Real) and not isinstance(max_offset, bool)
        and 0 < max_offset <= LIMITS["max_offset"]
    ):  # fmt: skip
        raise ValueError(
            f"max_offset must be a finite number in (0, {LIMITS['max_offset']:g}] frames or null, got {max_offset!r}"
        )


class TasNet(nn.Module):
    """Conv-TasNet-style single-output network for dereverberation (base of TCN and DTCN).

    Encoder (Conv1d, kernel ``L``, stride ``L/2``, ReLU) -> mask estimator -> mask x encoded
    input -> decoder (ConvTranspose1d). The mask estimator is: norm -> 1x1 conv N->B -> R
    repeats of X :class:`TemporalBlock` with dilations 1, 2, ..., 2^(X-1) -> 1x1 conv to N ->
    mask activation. Without a skip path (the default, as in the released DTCN code built on
    SpeechBrain's Conv-TasNet) the mask comes from the residual stream; with
    ``skip_channels > 0`` it comes from the sum of the blocks' skip outputs (original Conv-TasNet).

    Args:
        N: encoder filters.
        L: encoder window in samples (stride ``L // 2``); 16 at 8 kHz, 32 at 16 kHz.
        B: bottleneck channels.
        H: hidden channels of the blocks.
        P: depthwise kernel size.
        X: blocks per repeat.
        R: repeats.
        norm: ``"gLN"`` (default) or ``"cLN"``.
        causal: every layer uses only past and present frames (requires ``norm="cLN"``).
        skip_channels: ``Sc``; 0 (default) disables the skip path.
        mask_activation: ``"relu"`` (default) or ``"sigmoid"``.
        init: ``"default"`` (PyTorch's initialisation) or ``"identity"``: the untrained network
            returns its input exactly (see :meth:`reset_to_identity`), so training starts from the
            unprocessed signal's scores instead of climbing back to them. Needs ``N >= 2 * L`` and the
            ReLU mask, and adds a bias to the mask's 1x1 convolution (initialised to 1).

    Every argument is checked before anything is built (:meth:`check_config` runs the same checks
    alone); sizes are bounded by :data:`LIMITS`, far above any published configuration.

    Shape:
        ``Tensor[B, T] -> Tensor[B, T]`` for any ``T >= 1``.

    References:
        Luo and Mesgarani, "Conv-TasNet", IEEE/ACM TASLP 27(8), 2019.
    """

    deformable = False

    def __init__(
        self,
        N: int = 512,
        L: int = 16,
        B: int = 128,
        H: int = 512,
        P: int = 3,
        X: int = 8,
        R: int = 3,
        norm: str = "gLN",
        causal: bool = False,
        skip_channels: int = 0,
        mask_activation: str = "relu",
        init: str = "default",
    ):
        super().__init__()
        _check_tasnet_arguments(N, L, B, H, P, X, R, norm, causal, skip_channels, mask_activation, init)
        self._config = {"N": N, "L": L, "B": B, "H": H, "P": P, "X": X, "R": R, "norm": norm, "causal": causal,
                        "skip_channels": skip_channels, "mask_activation": mask_activation}  # fmt: skip
        if init != "default":  # absent from the configs of models made before the option existed
            self._config["init"] = init
        self.window, self.stride, self.causal = L, L // 2, causal
        self.encoder = nn.Conv1d(1, N, L, stride=L // 2, bias=False)
        self.decoder = nn.ConvTranspose1d(N, 1, L, stride=L // 2, bias=False)
        self.input_norm = make_norm(norm, N)
        self.bottleneck = nn.Conv1d(N, B, 1)
        self.blocks = nn.ModuleList(
            TemporalBlock(B, H, self._depthwise(H, P, 2**x, causal, norm), norm, skip_channels)
            for _ in range(R)
            for x in range(X)
        )
        self.mask_act = PReLU() if skip_channels else nn.Identity()
        self.mask_conv = nn.Conv1d(skip_channels or B, N, 1, bias=init == "identity")
        self.mask_activation = mask_activation
        if init == "identity":
            self.reset_to_identity()

    @torch.no_grad()
    def reset_to_identity(self) -> None:
        """Make the network compute the identity, whatever its other weights.

        The first ``2 * L`` encoder filters become ``+-w * b_k``: the orthonormal DCT-II basis
        ``b_k`` of ``R^L`` times the sine window ``w[n] = sin(pi (n + 1/2) / L)``, whose squares sum to
        one at hop ``L / 2``; the decoder rows of those filters are the same, the other decoder rows
        zero. Through the encoder's ReLU, ``relu(c) * f - relu(-c) * f = c * f``, so decoding the
        unmasked features overlap-adds ``w^2 * x`` frame by frame, which is ``x``. The mask's 1x1
        convolution gets zero weights and a bias of one: the ReLU mask is exactly 1. The blocks keep
        their (random) weights; the mask convolution's first update opens the path to them.
        """
        if self.mask_conv.bias is None or self.mask_activation != "relu":
            raise ValueError("reset_to_identity needs a model built with init='identity'")
        L = self.window
        n = torch.arange(L, dtype=torch.float64) + 0.5
        k = torch.arange(L, dtype=torch.float64)[:, None]
        basis = torch.cos(math.pi * n * k / L) * math.sqrt(2.0 / L)
        basis[0] /= math.sqrt(2.0)
        filters = (basis * torch.sin(math.pi * n / L)).to(self.encoder.weight.dtype)
        pair = torch.cat([filters, -filters]).unsqueeze(1)  # [2L, 1, L]
        self.encoder.weight[: 2 * L] = pair
        self.decoder.weight.zero_()
        self.decoder.weight[: 2 * L] = pair
        self.mask_conv.weight.zero_()
        self.mask_conv.bias.fill_(1.0)

    def _depthwise(self, channels: int, kernel_size: int, dilation: int, causal: bool, norm: str) -> nn.Module:
        """The conv factory: the block's depthwise convolution."""
        return DepthwiseConv1d(channels, kernel_size, dilation, causal)

    @torch.no_grad()
    def load_shallower(self, state_dict: dict[str, Tensor], repeats: int) -> None:
        """Load the weights of the same network with fewer repeats ``R``; the extra ones start as identity.

        The first ``repeats * X`` blocks and every other module take the given weights; each block
        after them gets zero residual (and skip) convolutions, so that it passes its input through
        unchanged and the grown network computes exactly what the shallower one did. Their other
        weights keep their initialisation, and the residual convolutions' first update opens them.

        Raises:
            ValueError: ``repeats`` is not below this network's ``R``, or the weights do not fit.
        """
        R, X = self._config["R"], self._config["X"]
        if not 0 < repeats < R:
            raise ValueError(f"load_shallower needs fewer repeats than R={R}, got {repeats}")
        missing, unexpected = self.load_state_dict(state_dict, strict=False)
        new = {f"blocks.{i}." for i in range(repeats * X, R * X)}
        missing = [k for k in missing if not any(k.startswith(b) for b in new)]
        if missing or unexpected:
            raise ValueError(f"weights of another network: missing {missing[:3]}, unexpected {unexpected[:3]}")
        for block in self.blocks[repeats * X :]:
            for conv in (block.residual, block.skip):
                if conv is not None:
                    conv.weight.zero_()
                    conv.bias.zero_()

    def load_resampled(self, state_dict: dict[str, Tensor], window: int) -> None:
        """Load the same network's weights from another rate (:func:`dereverb.models.transfer.load_resampled`)."""
        from dereverb.models.transfer import load_resampled

        load_resampled(self, state_dict, window)

    def get_config(self) -> dict:
        """The constructor's arguments, enough to rebuild the model: ``type(self)(**get_config())``."""
        return dict(self._config)

    @classmethod
    def check_config(cls, config: dict) -> None:
        """Check constructor arguments as ``cls(**config)`` would, without building anything.

        Cheap whatever the values: a config read from a file can be checked before any module is
        built or any memory allocated.

        Raises:
            TypeError: an unknown argument.
            ValueError: a value the constructor refuses (one line naming it).

        Example:
            >>> TCN.check_config({"N": 64, "R": 10**9})
            Traceback (most recent call last):
            ...
            ValueError: X * R (blocks) must be at most 1024, got X=8, R=1000000000
        """
        bound = inspect.signature(cls).bind(**config)
        bound.apply_defaults()
        args = bound.arguments
        if cls.deformable:
            _check_deformable_arguments(args["H"], args["offset_groups"], args["modulation"], args["max_offset"])
        _check_tasnet_arguments(*(args[k] for k in inspect.signature(TasNet).parameters))

    def receptive_field(self, sample_rate: int | None = None):
        """``(frames, samples, seconds)`` of the zero-offset receptive field (see :func:`receptive_field`)."""
        cfg = self.get_config()
        return receptive_field(cfg["P"], cfg["X"], cfg["R"], cfg["L"], sample_rate)

    def _pad(self, wav: Tensor) -> tuple[Tensor, int]:
        """Zero-pad one hop before the signal and at least one after it, so that every sample lies
        under two encoder frames (the first and last ones too)."""
        if wav.dim() != 2:
            raise ValueError(f"expected waveforms of shape [B, T], got {list(wav.shape)}")
        length = wav.shape[-1]
        frames = -(-length // self.stride) + 1
        return F.pad(wav, (self.stride, (frames - 1) * self.stride + self.window - length - self.stride)), length

    def forward_with_offsets(self, wav: Tensor) -> tuple[Tensor, list[Tensor]]:
        """Return ``(enhanced Tensor[B, T], offsets)``: one ``Tensor[B, G * P, frames]`` per
        deformable block (an empty list for a TCN), for analysis and plots."""
        padded, length = self._pad(wav)
        feats = F.relu(self.encoder(padded.unsqueeze(1)))
        h = self.bottleneck(self.input_norm(feats))
        skips, offsets = 0, []
        for block in self.blocks:
            h, skip, offset = block.forward_with_offsets(h)
            if skip is not None:
                skips = skips + skip
            if offset is not None:
                offsets.append(offset)
        score = self.mask_conv(self.mask_act(skips if self.blocks[0].skip is not None else h))
        mask = torch.relu(score) if self.mask_activation == "relu" else torch.sigmoid(score)
        out = self.decoder(feats * mask).squeeze(1)
        return out[..., self.stride : self.stride + length], offsets

    def forward(self, wav: Tensor) -> Tensor:
        """Dereverberate ``Tensor[B, T]`` waveforms; the output has the input's shape."""
        return self.forward_with_offsets(wav)[0]


class TCN(TasNet):
    """The Conv-TasNet baseline: plain depthwise convolutions. See :class:`TasNet` for the
    arguments; the defaults are the published DTCN configuration at 8 kHz.

    Example:
        >>> model = TCN(N=32, B=16, H=32, X=2, R=1)
        >>> model(torch.randn(2, 1001)).shape
        torch.Size([2, 1001])
    """


class DTCN(TasNet):
    """Deformable TCN: each block's depthwise convolution is a :class:`~dereverb.nn.PackedDeformConv1d`
    whose offsets come from a small side convolution (zero-initialised: an untrained DTCN computes
    exactly what a TCN with the same weights computes).

    Args:
        offset_groups: 1 (default) shares each tap's offset across the H channels, as in the
            published code; ``H`` gives every channel its own offsets.
        modulation: also learn a DCNv2 mask per tap.
        max_offset: optional soft bound on the offsets, in frames (a number in ``(0, 1e6]``).
        (the others): see :class:`TasNet`; the defaults are the published DTCN at 8 kHz.

    With ``causal=True`` the deformable taps are bounded so that none reads a future frame.

    References:
        Ravenscroft, Goetze and Hain, "Deformable Temporal Convolutional Networks for Monaural
        Noisy Reverberant Speech Separation", ICASSP 2023.

    Example:
        >>> model = DTCN(N=32, B=16, H=32, X=2, R=1)
        >>> out, offsets = model.forward_with_offsets(torch.randn(1, 800))
        >>> out.shape, len(offsets), offsets[0].shape
        (torch.Size([1, 800]), 2, torch.Size([1, 3, 101]))
    """

    deformable = True

    def __init__(
        self,
        N: int = 512,
        L: int = 16,
        B: int = 128,
        H: int = 512,
        P: int = 3,
        X: int = 8,
        R: int = 3,
        norm: str = "gLN",
        causal: bool = False,
        skip_channels: int = 0,
        mask_activation: str = "relu",
        init: str = "default",
        offset_groups: int = 1,
        modulation: bool = False,
        max_offset: float | None = None,
    ):
        _check_deformable_arguments(H, offset_groups, modulation, max_offset)
        self._deform_kwargs = {"offset_groups": offset_groups, "modulation": modulation, "max_offset": max_offset}
        super().__init__(N, L, B, H, P, X, R, norm, causal, skip_channels, mask_activation, init)
        self._config.update(self._deform_kwargs)

    def _depthwise(self, channels: int, kernel_size: int, dilation: int, causal: bool, norm: str) -> nn.Module:
        return PackedDeformConv1d(
            channels, channels, kernel_size, dilation=dilation, groups=channels, causal=causal, norm=norm,
            **self._deform_kwargs,
        )  # fmt: skip
