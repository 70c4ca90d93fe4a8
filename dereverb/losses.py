"""Training losses on padded batches of waveforms (``Tensor[B, T]`` + relative lengths).

Every loss returns one value per utterance (``Tensor[B]``), computed on each utterance's own
samples only (the padding of SpeechBrain's ``PaddedBatch`` is ignored), so that the training
recipe and its tests see the same numbers as the metrics.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = [
    "LOSSES",
    "STOI_MIN_SECONDS",
    "MultiResolutionSTFTLoss",
    "NegSISDR",
    "NegSNR",
    "SISDRPlusSTFT",
    "SISDRPlusSTOI",
    "length_mask",
]


def length_mask(lengths: Tensor | None, batch: int, samples: int, device, dtype=torch.float32) -> Tensor:
    """``Tensor[B, T]`` of ones on each utterance's samples and zeros on its padding.

    Args:
        lengths: SpeechBrain's relative lengths in ``(0, 1]`` (``None``: every sample counts).

    Example:
        >>> length_mask(torch.tensor([1.0, 0.5]), 2, 4, "cpu")
        tensor([[1., 1., 1., 1.],
                [1., 1., 0., 0.]])
    """
    if lengths is None:
        return torch.ones(batch, samples, device=device, dtype=dtype)
    absolute = torch.round(lengths.to(device) * samples)
    return (torch.arange(samples, device=device).unsqueeze(0) < absolute.unsqueeze(1)).to(dtype)


class NegSISDR(nn.Module):
    """Negative scale-invariant SDR in dB (zero-mean), the DTCN paper's training objective.

    Example:
        >>> ref = torch.randn(2, 8000)
        >>> bool((NegSISDR()(2 * ref, ref) < -60).all())
        True
    """

    def __init__(self, eps: float = 1e-8):
        super().__init__()
        self.eps = eps

    def forward(self, estimate: Tensor, target: Tensor, lengths: Tensor | None = None) -> Tensor:
        mask = length_mask(lengths, *estimate.shape, estimate.device, estimate.dtype)
        n = mask.sum(-1, keepdim=True).clamp_min(1)
        est = (estimate - (estimate * mask).sum(-1, keepdim=True) / n) * mask
        ref = (target - (target * mask).sum(-1, keepdim=True) / n) * mask
        scale = (est * ref).sum(-1, keepdim=True) / (ref.pow(2).sum(-1, keepdim=True) + self.eps)
        proj = scale * ref
        noise = est - proj
        ratio = (proj.pow(2).sum(-1) + self.eps) / (noise.pow(2).sum(-1) + self.eps)
        return -10 * torch.log10(ratio)


class NegSNR(nn.Module):
    """Negative signal-to-noise ratio in dB (not scale-invariant: the level must match too).

    Example:
        >>> ref = torch.randn(1, 8000)
        >>> round(float(NegSNR()(ref + 0.1 * ref, ref)), 3)  # error of 10% of the signal: 20 dB
        -20.0
    """

    def __init__(self, eps: float = 1e-8):
        super().__init__()
        self.eps = eps

    def forward(self, estimate: Tensor, target: Tensor, lengths: Tensor | None = None) -> Tensor:
        mask = length_mask(lengths, *estimate.shape, estimate.device, estimate.dtype)
        signal = (target * mask).pow(2).sum(-1)
        noise = ((estimate - target) * mask).pow(2).sum(-1)
        return -10 * torch.log10((signal + self.eps) / (noise + self.eps))


class MultiResolutionSTFTLoss(nn.Module):
    """Spectral convergence + log-magnitude distance, averaged over several STFT resolutions.

    Args:
        fft_sizes, hop_sizes, win_lengths: one entry per resolution (samples).
        scale_invariant: first scale each estimate by its least-squares gain to the target (the
            projection SI-SDR makes), so that the output's level is free, as with SI-SDR.

    References:
        Yamamoto et al., "Parallel WaveGAN", ICASSP 2020 (multi-resolution STFT loss).

    Example:
        >>> x = torch.randn(2, 8000)
        >>> MultiResolutionSTFTLoss()(x, x).abs().max() < 1e-5
        tensor(True)
        >>> MultiResolutionSTFTLoss(scale_invariant=True)(3 * x, x).abs().max() < 1e-5
        tensor(True)
    """

    def __init__(
        self,
        fft_sizes=(512, 256, 128),
        hop_sizes=(128, 64, 32),
        win_lengths=(512, 256, 128),
        scale_invariant: bool = False,
    ):
        super().__init__()
        if not len(fft_sizes) == len(hop_sizes) == len(win_lengths):
            raise ValueError("fft_sizes, hop_sizes and win_lengths must have the same length")
        self.resolutions = list(zip(fft_sizes, hop_sizes, win_lengths, strict=True))
        self.scale_invariant = scale_invariant

    def forward(self, estimate: Tensor, target: Tensor, lengths: Tensor | None = None) -> Tensor:
        mask = length_mask(lengths, *estimate.shape, estimate.device, estimate.dtype)
        estimate, target = estimate * mask, target * mask
        if self.scale_invariant:
            gain = (estimate * target).sum(-1, keepdim=True) / estimate.pow(2).sum(-1, keepdim=True).clamp_min(1e-12)
            estimate = gain * estimate
        total = estimate.new_zeros(estimate.shape[0])
        for n_fft, hop, win in self.resolutions:
            window = torch.hann_window(win, device=estimate.device, dtype=estimate.dtype)
            spec = [
                torch.stft(s, n_fft, hop, win, window, return_complex=True).abs().clamp_min(1e-7)
                for s in (estimate, target)
            ]
            convergence = torch.linalg.vector_norm(spec[1] - spec[0], dim=(1, 2)) / torch.linalg.vector_norm(
                spec[1], dim=(1, 2)
            ).clamp_min(1e-7)
            log_mag = (spec[1].log() - spec[0].log()).abs().mean((1, 2))
            total = total + convergence + log_mag
        return total / len(self.resolutions)


class SISDRPlusSTFT(nn.Module):
    """Negative SI-SDR plus ``stft_weight`` times the multi-resolution STFT loss.

    ``stft_scale_invariant=True`` compares the spectra after the estimate is scaled to the target
    (:class:`MultiResolutionSTFTLoss`), so the whole loss leaves the output's level free, as
    SI-SDR alone does: a model trained with SI-SDR can continue with it without first learning the
    target's level.

    Example:
        >>> ref = torch.randn(1, 8000)
        >>> bool(SISDRPlusSTFT()(2 * ref, ref) < -60)
        True
    """

    def __init__(self, stft_weight: float = 1.0, stft_scale_invariant: bool = False):
        super().__init__()
        self.si_sdr, self.stft_weight = NegSISDR(), stft_weight
        self.stft = MultiResolutionSTFTLoss(scale_invariant=stft_scale_invariant)

    def forward(self, estimate: Tensor, target: Tensor, lengths: Tensor | None = None) -> Tensor:
        return self.si_sdr(estimate, target, lengths) + self.stft_weight * self.stft(estimate, target, lengths)


STOI_MIN_SECONDS = 0.4
"""The shortest utterance STOI scores: 30 frames of 25.6 ms at a hop of 12.8 ms, rounded up."""


class SISDRPlusSTOI(nn.Module):
    """Negative SI-SDR plus ``stoi_weight`` times the negative STOI (ESTOI with ``extended=True``).

    The STOI term is ``torch_stoi.NegSTOILoss``, a differentiable STOI that follows ``pystoi`` (the
    signals resampled to 10 kHz, one-third octave bands, silent frames dropped), so training can push
    the intelligibility metric the evaluation reports. STOI normalises the estimate's level to the
    target's, so the whole loss leaves the output's level free, as SI-SDR does. Padding is zeroed and
    dropped with the silent frames. An utterance shorter than ``STOI_MIN_SECONDS`` (STOI's 30 frames
    of 25.6 ms at a hop of 12.8 ms; ``pystoi`` cannot score it either) gets the SI-SDR term only.

    Args:
        sample_rate: of the waveforms (the training recipe passes its own).
        stoi_weight: weight of the STOI term (in [-1, 0]) against SI-SDR in dB.
        extended: ESTOI instead of STOI.

    References:
        Kolbæk, Tan, Jensen, "Monaural speech enhancement using deep neural networks by maximizing a
        short-time objective intelligibility measure", ICASSP 2018.

    Example:
        >>> ref = torch.randn(1, 16000)
        >>> loss = SISDRPlusSTOI(sample_rate=8000, stoi_weight=10.0)
        >>> bool(loss(2 * ref, ref) < -60)
        True
    """

    def __init__(self, sample_rate: int = 16000, stoi_weight: float = 10.0, extended: bool = False):
        super().__init__()
        import warnings

        from torch_stoi import NegSTOILoss

        self.si_sdr, self.stoi_weight = NegSISDR(), stoi_weight
        with warnings.catch_warnings():  # torch_stoi names torchaudio's resampling method by its old name
            warnings.filterwarnings("ignore", message=".*sinc_interpolation.*", category=UserWarning)
            self.stoi = NegSTOILoss(sample_rate, extended=extended)

    def forward(self, estimate: Tensor, target: Tensor, lengths: Tensor | None = None) -> Tensor:
        mask = length_mask(lengths, *estimate.shape, estimate.device, estimate.dtype)
        loss = self.si_sdr(estimate, target, lengths)
        scored = mask.sum(-1) >= STOI_MIN_SECONDS * self.stoi.sample_rate
        if scored.any():  # in float32, the dtype of torch_stoi's filters
            est, ref = (estimate * mask)[scored].float(), (target * mask)[scored].float()
            term = self.stoi_weight * self.stoi(est, ref).to(loss.dtype)
            loss = loss.index_add(0, scored.nonzero().squeeze(1), term)
        return loss


LOSSES = {"si_sdr": NegSISDR, "snr": NegSNR, "si_sdr_stft": SISDRPlusSTFT, "si_sdr_stoi": SISDRPlusSTOI}
"""Loss names accepted by the ``loss=`` config group."""
