"""The training losses: known values, invariances, signs, shapes, padding, the STFT and STOI variants,
gradients."""

from __future__ import annotations

import math

import pytest
import torch

from dereverb.config import CONF_DIR
from dereverb.losses import (
    LOSSES,
    MultiResolutionSTFTLoss,
    NegSISDR,
    NegSNR,
    SISDRPlusSTFT,
    SISDRPlusSTOI,
    length_mask,
)


def _signals(batch: int = 3, samples: int = 4000, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A reference and a noise, ``Tensor[batch, samples]`` each, float64 white noise."""
    g = torch.Generator().manual_seed(seed)
    ref, noise = torch.randn(2, batch, samples, generator=g, dtype=torch.float64)
    return ref, noise


def _orthogonal(ref: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """``noise`` made zero-mean and orthogonal to the zero-mean ``ref``, per row."""
    ref = ref - ref.mean(-1, keepdim=True)
    noise = noise - noise.mean(-1, keepdim=True)
    return noise - (noise * ref).sum(-1, keepdim=True) / ref.pow(2).sum(-1, keepdim=True) * ref


def test_length_mask_marks_each_utterance_samples():
    mask = length_mask(torch.tensor([1.0, 0.5, 0.25]), 3, 8, "cpu")
    assert mask.shape == (3, 8)
    assert mask.sum(-1).tolist() == [8, 4, 2]
    assert mask[1].tolist() == [1, 1, 1, 1, 0, 0, 0, 0]
    assert torch.equal(length_mask(None, 2, 5, "cpu"), torch.ones(2, 5))


@pytest.mark.parametrize("scale", [0.1, 0.5, 2.0, 300.0])
def test_si_sdr_of_a_scaled_copy_is_near_perfect(scale):
    ref, _ = _signals()
    loss = NegSISDR()(scale * ref, ref)
    assert loss.shape == (3,)
    assert (loss < -60).all()  # SI-SDR above 60 dB: bounded only by the loss's eps


@pytest.mark.parametrize("snr_db", [-10.0, 0.0, 12.5, 30.0])
def test_si_sdr_is_minus_the_known_ratio(snr_db):
    ref, noise = _signals()
    noise = _orthogonal(ref, noise)
    ref0 = ref - ref.mean(-1, keepdim=True)
    noise = (
        noise * (ref0.pow(2).sum(-1, keepdim=True) / noise.pow(2).sum(-1, keepdim=True) / 10 ** (snr_db / 10)).sqrt()
    )
    loss = NegSISDR()(ref + noise, ref)
    torch.testing.assert_close(loss, torch.full((3,), -snr_db, dtype=torch.float64), rtol=0, atol=1e-6)


def test_si_sdr_ignores_scale_and_offset_but_not_the_error():
    ref, noise = _signals()
    est = ref + 0.3 * noise
    base = NegSISDR()(est, ref)
    torch.testing.assert_close(NegSISDR()(5.0 * est, ref), base)
    torch.testing.assert_close(NegSISDR()(est + 2.0, ref), base)  # zero-mean
    assert (NegSISDR()(ref + 0.6 * noise, ref) > base).all()  # more error: a larger loss
    assert (NegSISDR()(-ref, ref) < -60).all()  # a sign flip is a scale of -1


def test_snr_is_not_scale_invariant():
    ref, noise = _signals()
    torch.testing.assert_close(NegSNR()(2 * ref, ref), torch.zeros(3, dtype=torch.float64), rtol=0, atol=1e-9)
    torch.testing.assert_close(NegSNR()(1.1 * ref, ref), torch.full((3,), -20.0, dtype=torch.float64))
    assert (NegSNR()(ref + 0.1 * noise, ref) < NegSNR()(ref + noise, ref)).all()


def _padded(samples: int = 3000, end: int = 1500):
    """A batch of two whose second utterance ends at ``end``: with zeros after it, and with garbage after it."""
    ref, noise = _signals(batch=2, samples=samples)
    est = ref + 0.2 * noise
    zeros = (est.clone(), ref.clone())
    garbage = (est.clone(), ref.clone())
    for x in zeros:
        x[1, end:] = 0.0
    garbage[0][1, end:], garbage[1][1, end:] = 100.0, -7.0
    return (est, ref), zeros, garbage, torch.tensor([1.0, end / samples])


@pytest.mark.parametrize(
    "loss_fn",
    [NegSISDR(), NegSNR(), MultiResolutionSTFTLoss(), MultiResolutionSTFTLoss(scale_invariant=True), SISDRPlusSTFT()],
)
def test_whatever_the_padding_holds_is_ignored(loss_fn):
    (est, ref), zeros, garbage, lengths = _padded()
    both = loss_fn(*garbage, lengths)
    assert both.shape == (2,)
    torch.testing.assert_close(both, loss_fn(*zeros, lengths))
    torch.testing.assert_close(both[:1], loss_fn(est[:1], ref[:1]))  # the full-length utterance is untouched


@pytest.mark.parametrize("loss_fn", [NegSISDR(), NegSNR()])
def test_a_padded_utterance_scores_as_the_utterance_alone(loss_fn):
    """The waveform losses sum over the utterance's own samples (the STFT loss also sees the zeros' frames)."""
    (est, ref), _, garbage, lengths = _padded()
    torch.testing.assert_close(loss_fn(*garbage, lengths)[1:], loss_fn(est[1:, :1500], ref[1:, :1500]))


def test_stft_loss_is_zero_for_a_copy_and_grows_with_the_error():
    ref, noise = _signals(samples=8000)
    stft = MultiResolutionSTFTLoss()
    assert stft(ref, ref).abs().max() < 1e-6
    small, large = stft(ref + 0.05 * noise, ref), stft(ref + 0.5 * noise, ref)
    assert small.shape == (3,)
    assert (small > 0).all()
    assert (large > small).all()
    assert (stft(2 * ref, ref) > 0.1).all()  # spectral magnitudes: not scale-invariant


def test_scale_invariant_stft_loss_ignores_the_level_but_not_the_error():
    ref, noise = _signals(samples=8000)
    stft = MultiResolutionSTFTLoss(scale_invariant=True)
    for scale in (0.005, 2.0, 177.0, -1.0):
        assert stft(scale * ref, ref).abs().max() < 1e-6
    est = ref + 0.3 * noise
    torch.testing.assert_close(stft(40 * est, ref), stft(est, ref))
    # the level it ignores is the least-squares gain: the plain loss of the projected estimate
    gain = (est * ref).sum(-1, keepdim=True) / est.pow(2).sum(-1, keepdim=True)
    torch.testing.assert_close(stft(est, ref), MultiResolutionSTFTLoss()(gain * est, ref))
    assert (stft(est, ref) > 0.1).all()


def test_si_sdr_plus_stft_can_leave_the_level_free():
    ref, noise = _signals(samples=8000)
    est = ref + 0.3 * noise
    free = SISDRPlusSTFT(stft_scale_invariant=True)
    torch.testing.assert_close(free(0.01 * est, ref), free(est, ref))
    assert not torch.allclose(SISDRPlusSTFT()(0.01 * est, ref), SISDRPlusSTFT()(est, ref))


@pytest.mark.parametrize("extended", [False, True])
def test_the_stoi_term_is_pystoi_and_leaves_the_level_free(extended):
    """loss - (-SI-SDR) is -weight * STOI, as pystoi computes it, whatever the estimate's level."""
    from pystoi import stoi

    ref, noise = _signals(batch=2, samples=16000)  # 2 s at 8 kHz
    ref, noise = ref.float(), noise.float()
    est = ref + 0.7 * noise
    loss = SISDRPlusSTOI(sample_rate=8000, stoi_weight=5.0, extended=extended)
    term = (loss(est, ref) - NegSISDR()(est, ref)) / -5.0
    expected = [stoi(r.numpy(), e.numpy(), 8000, extended=extended) for r, e in zip(ref, est, strict=True)]
    expected = torch.tensor(expected, dtype=term.dtype)
    torch.testing.assert_close(term, expected, rtol=0, atol=5e-3)  # torch_stoi resamples its own way
    assert 0.2 < min(expected) < max(expected) < 0.95  # a partly intelligible estimate: the check has room
    torch.testing.assert_close(loss(0.01 * est, ref), loss(est, ref), rtol=0, atol=1e-4)
    assert (loss(ref + 0.2 * noise, ref) < loss(est, ref)).all()


def test_the_stoi_loss_ignores_the_padding_and_skips_what_stoi_cannot_score():
    (est, ref), zeros, garbage, lengths = _padded(samples=8000, end=5000)  # 1 s at 8 kHz; 0.625 s, then padding
    loss = SISDRPlusSTOI(sample_rate=8000)
    torch.testing.assert_close(loss(*garbage, lengths), loss(*zeros, lengths))
    torch.testing.assert_close(loss(*garbage, lengths)[:1], loss(est[:1], ref[:1]))
    assert (loss(*garbage, lengths) < NegSISDR()(*garbage, lengths) - 1).all()  # both have a STOI term
    short = torch.tensor([1.0, 0.3])  # 0.3 s: SI-SDR only
    value = loss(*garbage, short)
    torch.testing.assert_close(value[1], NegSISDR()(*garbage, short)[1])
    torch.testing.assert_close(value[0], loss(est[:1], ref[:1])[0])


def test_training_on_the_stoi_loss_raises_stoi():
    from pystoi import stoi

    ref, noise = (x.float() for x in _signals(batch=1, samples=8000))
    est = (ref + noise).requires_grad_()
    loss_fn, optimizer = SISDRPlusSTOI(sample_rate=8000, stoi_weight=50.0), torch.optim.Adam([est], lr=1e-2)
    before = stoi(ref[0].numpy(), est[0].detach().numpy(), 8000)
    for _ in range(20):
        optimizer.zero_grad()
        loss_fn(est, ref).sum().backward()
        assert torch.isfinite(est.grad).all()
        optimizer.step()
    assert stoi(ref[0].numpy(), est[0].detach().numpy(), 8000) > before + 0.05


def test_stft_loss_refuses_resolutions_of_different_counts():
    with pytest.raises(ValueError, match="same length"):
        MultiResolutionSTFTLoss(fft_sizes=(512, 256), hop_sizes=(128,), win_lengths=(512, 256))


@pytest.mark.parametrize("weight", [0.0, 1.0, 2.5])
def test_si_sdr_plus_stft_is_the_weighted_sum(weight):
    ref, noise = _signals(samples=8000)
    est = ref + 0.3 * noise
    expected = NegSISDR()(est, ref) + weight * MultiResolutionSTFTLoss()(est, ref)
    torch.testing.assert_close(SISDRPlusSTFT(stft_weight=weight)(est, ref), expected)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_every_loss_trains_a_signal_towards_the_target(name):
    """Gradients are finite and a few steps of gradient descent lower the loss (float32, as in training)."""
    torch.manual_seed(0)
    ref = torch.randn(2, 4000)
    est = (ref + 0.5 * torch.randn(2, 4000)).requires_grad_()
    loss_fn = LOSSES[name]()
    optimizer = torch.optim.Adam([est], lr=1e-2)
    first = loss_fn(est, ref, torch.tensor([1.0, 0.75])).mean()
    for _ in range(20):
        optimizer.zero_grad()
        loss = loss_fn(est, ref, torch.tensor([1.0, 0.75])).mean()
        loss.backward()
        assert torch.isfinite(est.grad).all()
        optimizer.step()
    assert math.isfinite(loss.item())
    assert loss.item() < first.item()


def test_every_loss_config_names_a_loss():
    names = {p.stem for p in (CONF_DIR / "loss").glob("*.yaml")}
    assert names == set(LOSSES)
