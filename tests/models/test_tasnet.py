"""Tests of the TCN and DTCN models."""

import contextlib
import signal
import time

import pytest
import torch

from dereverb.models import DTCN, SIZES, TCN, preset, receptive_field

TINY = {"N": 16, "B": 8, "H": 16, "X": 3, "R": 2}


def _randomise(model: torch.nn.Module) -> None:
    """Random weights everywhere, zero-initialised offset predictors included (so the taps move)."""
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)


@pytest.mark.parametrize("cls", [TCN, DTCN])
@pytest.mark.parametrize("length", [8000, 7919, 17, 16, 9, 1])
def test_output_has_the_input_length(device, cls, length):
    model = cls(**TINY).to(device)
    out = model(torch.randn(2, length, device=device))
    assert out.shape == (2, length)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("cls", [TCN, DTCN])
@pytest.mark.parametrize("batch", [0, 1])
def test_batch_zero_and_one(device, cls, batch):
    model = cls(**TINY, L=32).to(device)  # the 16 kHz window
    assert model(torch.randn(batch, 1600, device=device)).shape == (batch, 1600)


def test_untrained_dtcn_equals_tcn_with_the_same_weights(device):
    torch.manual_seed(0)
    dtcn = DTCN(**TINY, skip_channels=8).to(device)
    tcn = TCN(**TINY, skip_channels=8).to(device)
    shared = {k: v for k, v in dtcn.state_dict().items() if "offset_predictor" not in k}
    assert set(shared) == set(tcn.state_dict())  # same parameter names: one block implementation
    tcn.load_state_dict(shared)
    x = torch.randn(2, 4000, device=device)
    torch.testing.assert_close(dtcn(x), tcn(x), rtol=1e-5, atol=1e-6)


def test_gradients_reach_the_offset_predictors(device):
    model = DTCN(**TINY).to(device)
    model(torch.randn(2, 2000, device=device)).pow(2).mean().backward()
    for i, block in enumerate(model.blocks):
        grad = block.depthwise.offset_predictor.pointwise.weight.grad
        assert grad is not None, i
        assert grad.abs().sum() > 0, i


@pytest.mark.parametrize("cls", [TCN, DTCN])
def test_causal_models_never_use_the_future(device, cls):
    model = cls(**TINY, norm="cLN", causal=True).to(device).double()
    _randomise(model)
    window = model.get_config()["L"]
    x = torch.randn(1, 3000, device=device, dtype=torch.float64)
    y = model(x)
    if cls is DTCN:
        _, offsets = model.forward_with_offsets(x)
        assert max(o.abs().max().item() for o in offsets) > 1  # the taps really move
    for s in (400, 1203, 2999):
        x2 = x.clone()
        x2[:, s:] = torch.randn_like(x2[:, s:]) * 10
        y2 = model(x2)
        torch.testing.assert_close(y2[:, : s - window], y[:, : s - window], rtol=0, atol=1e-12)
        assert not torch.allclose(y2[:, s:], y[:, s:])


def test_non_causal_model_uses_the_future(device):
    """Guards the causality test: the same check fails for the default (non-causal) model."""
    model = DTCN(**TINY).to(device).double()
    _randomise(model)
    x = torch.randn(1, 3000, device=device, dtype=torch.float64)
    x2 = x.clone()
    x2[:, 2000:] += 1
    assert not torch.allclose(model(x2)[:, :1900], model(x)[:, :1900])


def test_parameter_counts_of_the_default_configurations():
    """The figures stated in docs/models.md (the DTCN paper reports about 3.6M)."""

    def count(model):
        return sum(p.numel() for p in model.parameters())

    assert count(TCN()) == 3_408_048
    assert count(DTCN()) == 3_518_736
    assert count(TCN(skip_channels=128)) == 4_983_985
    assert count(DTCN(skip_channels=128)) == 5_094_673
    assert count(TCN(N=256, H=256, R=2)) == 1_161_888
    assert count(DTCN(N=256, H=256, R=2)) == 1_198_816
    assert count(DTCN(N=256, H=256, R=2, init="identity")) == 1_199_072  # conf/model/dtcn_small.yaml


def test_receptive_field():
    assert TCN().receptive_field(8000) == (1531, 12256, 1.532)
    frames, samples, seconds = TCN(L=32).receptive_field(16000)
    assert (frames, samples) == (1531, 24512)
    assert seconds == pytest.approx(1.532)
    assert receptive_field(3, 8, 1, 16) == (511, 4096, None)


def test_get_config_rebuilds_the_model():
    model = DTCN(**TINY, offset_groups=4, modulation=True, max_offset=5.0)
    cfg = model.get_config()
    assert cfg["offset_groups"] == 4
    assert cfg["modulation"] is True
    assert cfg["max_offset"] == 5.0
    rebuilt = DTCN(**cfg)
    assert rebuilt.get_config() == cfg
    assert [p.shape for p in rebuilt.parameters()] == [p.shape for p in model.parameters()]
    assert "offset_groups" not in TCN(**TINY).get_config()


BAD_CONFIGURATIONS = [
    ({"L": 15}, "L .* must be even"),
    ({"N": 0}, "N must be a positive int"),
    ({"norm": "bn"}, "norm must be 'gLN' or 'cLN'"),
    ({"causal": True}, "causal=True needs norm='cLN'"),
    ({"mask_activation": "tanh"}, "mask_activation"),
    ({"offset_groups": 3}, "offset_groups must divide H=16"),
    ({"offset_groups": "2"}, "offset_groups must divide H=16"),
    ({"H": "abc"}, "H must be a positive int, got 'abc'"),
    ({"init": "xavier"}, "init must be 'default' or 'identity'"),
    ({"init": "identity", "L": 16}, r"needs N >= 2 \* L encoder filters \(got N=16, L=16\)"),
    ({"init": "identity", "N": 64, "mask_activation": "sigmoid"}, r"needs mask_activation='relu' \(got 'sigmoid'\)"),
    ({"N": 8193}, "N must be at most 8192, got 8193"),
    ({"H": 16384, "offset_groups": 1}, "H must be at most 8192, got 16384"),
    ({"B": 10**9}, "B must be at most 8192, got 1000000000"),
    ({"L": 4098}, "L must be at most 4096, got 4098"),
    ({"P": 65}, "P must be at most 64, got 65"),
    ({"X": 17}, "X must be at most 16, got 17"),
    ({"X": 16, "R": 65}, r"X \* R \(blocks\) must be at most 1024, got X=16, R=65"),
    ({"skip_channels": -1}, "skip_channels must be an int from 0 to 8192, got -1"),
    ({"skip_channels": "8"}, "skip_channels must be an int from 0 to 8192, got '8'"),
    ({"skip_channels": 8193}, "skip_channels must be an int from 0 to 8192, got 8193"),
    ({"causal": "no"}, "causal must be true or false, got 'no'"),
    ({"norm": ["gLN"]}, r"norm must be 'gLN' or 'cLN', got \['gLN'\]"),
    ({"modulation": "yes"}, "modulation must be true or false, got 'yes'"),
    ({"max_offset": float("inf")}, r"max_offset must be a finite number in \(0, 1e\+06\] frames or null, got inf"),
    ({"max_offset": float("nan")}, "max_offset must be a finite number .* got nan"),
    ({"max_offset": -2.0}, "max_offset must be a finite number .* got -2.0"),
    ({"max_offset": 0}, "max_offset must be a finite number .* got 0"),
    ({"max_offset": 1e300}, "max_offset must be a finite number .* got 1e"),
    ({"max_offset": True}, "max_offset must be a finite number .* got True"),
    ({"max_offset": "3"}, "max_offset must be a finite number .* got '3'"),
]


@pytest.mark.parametrize(("kwargs", "match"), BAD_CONFIGURATIONS)
def test_bad_configurations_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DTCN(**{**TINY, **kwargs})


@pytest.mark.parametrize(("kwargs", "match"), BAD_CONFIGURATIONS)
def test_check_config_refuses_what_the_constructor_refuses(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DTCN.check_config({**TINY, **kwargs})
    if "max_offset" not in kwargs and "offset_groups" not in kwargs and "modulation" not in kwargs:
        with pytest.raises(ValueError, match=match):
            TCN.check_config({**TINY, **kwargs})


def test_check_config_accepts_what_the_constructor_accepts():
    for cls, config in [(TCN, {}), (DTCN, {}), (TCN, {**TINY, "init": "identity", "N": 32}),
                        (DTCN, {**TINY, "max_offset": 3, "modulation": True, "offset_groups": 16})]:  # fmt: skip
        assert cls.check_config(config) is None
        assert cls.check_config(cls(**config).get_config()) is None
    with pytest.raises(TypeError, match="unexpected keyword argument 'max_offset'"):
        TCN.check_config({"max_offset": 3.0})


@contextlib.contextmanager
def _deadline(seconds: float):
    """Raise TimeoutError in the test if the block runs longer than ``seconds`` (instead of hanging)."""

    def expire(*_):
        raise TimeoutError(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@pytest.mark.parametrize("cls", [TCN, DTCN])
def test_absurd_repeat_counts_are_refused_at_once(cls):
    start = time.perf_counter()
    with (
        _deadline(5.0),
        pytest.raises(ValueError, match=r"X \* R \(blocks\) must be at most 1024, got X=3, R=1000000000"),
    ):
        cls(**{**TINY, "R": 10**9})
    assert time.perf_counter() - start < 0.5


@pytest.mark.parametrize(("offset_groups", "modulation"), [(1, False), (16, False), (4, True)])
def test_offsets_for_analysis(device, offset_groups, modulation):
    model = DTCN(**TINY, offset_groups=offset_groups, modulation=modulation).to(device)
    x = torch.randn(2, 1000, device=device)
    out, offsets = model.forward_with_offsets(x)
    torch.testing.assert_close(out, model(x), rtol=0, atol=0)
    frames = -(-1000 // 8) + 1  # one hop of zero padding before the signal, at least one after
    assert len(offsets) == TINY["X"] * TINY["R"]
    assert all(o.shape == (2, offset_groups * 3, frames) for o in offsets)
    assert TCN(**TINY).forward_with_offsets(x.cpu())[1] == []


def test_wrong_input_shape_is_refused():
    with pytest.raises(ValueError, match=r"expected waveforms of shape \[B, T\], got \[1, 1, 100\]"):
        TCN(**TINY)(torch.randn(1, 1, 100))


def test_presets_keep_the_receptive_field_in_seconds():
    for rate in (8000, 16000):
        cfg = preset("default", rate)
        assert DTCN(**cfg).receptive_field(rate)[2] == pytest.approx(1.532)
    assert preset("small") == {**SIZES["small"], "L": 16}
    with pytest.raises(ValueError, match="unknown model size 'huge'"):
        preset("huge")
    with pytest.raises(ValueError, match="sample_rate must be 8000 or 16000, got 44100"):
        preset("default", 44100)


# the shipped recipes' sizes at 8 and 16 kHz (small presets with a 4 ms window, default presets)
IDENTITY_SIZES = [
    pytest.param({**TINY, "N": 64, "L": 32}, id="tiny-L32"),
    pytest.param({**preset("small", 8000), "L": 32, "X": 2, "R": 1}, id="small-8k-L32"),
    pytest.param({**preset("small", 16000), "L": 64, "X": 2, "R": 1}, id="small-16k-L64"),
    pytest.param({**preset("default", 8000), "X": 2, "R": 1}, id="default-8k"),
    pytest.param({**preset("default", 16000), "X": 2, "R": 1}, id="default-16k"),
]


@pytest.mark.parametrize("cls", [TCN, DTCN])
@pytest.mark.parametrize("size", IDENTITY_SIZES)
@pytest.mark.parametrize("length", [16000, 4001, 33, 1])
def test_identity_start_returns_the_input_exactly(device, cls, size, length):
    torch.manual_seed(0)
    model = cls(**size, init="identity").to(device)
    x = torch.randn(3, length, device=device)
    x[1] *= 1e-3  # quiet rows too: the identity does not depend on the level
    out = model(x)
    torch.testing.assert_close(out, x, rtol=0, atol=2e-6 * x.abs().amax(dim=1, keepdim=True).max().item())
    torch.testing.assert_close(out[1], x[1], rtol=0, atol=2e-9)  # every sample, edges included
    torch.testing.assert_close(out[:, :5], x[:, :5], rtol=0, atol=1e-5)
    torch.testing.assert_close(out[:, -5:], x[:, -5:], rtol=0, atol=1e-5)
    assert model.get_config()["init"] == "identity"
    assert cls(**size).get_config().get("init") is None  # default models keep their old configs


def test_identity_start_whatever_the_other_weights(device):
    """reset_to_identity overrides random blocks, norms and offset predictors."""
    model = DTCN(**{**TINY, "N": 64, "L": 32}, init="identity")
    _randomise(model)
    x = torch.randn(2, 3000)
    assert (model(x) - x).abs().max() > 0.1
    model.reset_to_identity()
    model.to(device)
    torch.testing.assert_close(model(x.to(device)), x.to(device), rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="needs a model built with init='identity'"):
        DTCN(**TINY).reset_to_identity()


@pytest.mark.parametrize("cls", [TCN, DTCN])
def test_identity_start_trains_every_block(device, cls):
    """The zero mask convolution blocks the gradient of the first step only: after one update
    every parameter of every block (and the offset predictors) gets a gradient."""
    torch.manual_seed(0)
    model = cls(**{**TINY, "N": 64, "L": 32}, init="identity").to(device)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.randn(2, 2000, device=device)
    target = x + 0.3 * torch.roll(x, 40, dims=1)

    def step():
        optimiser.zero_grad()
        loss = (model(x) - target).pow(2).mean()
        loss.backward()
        return loss.item()

    step()
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in model.blocks.parameters())
    optimiser.step()
    step()
    for name, p in model.named_parameters():
        # an offset predictor's layers before its zero-initialised pointwise conv wait one more step
        behind_zero_conv = "offset_predictor." in name and "offset_predictor.pointwise." not in name
        if name.startswith(("blocks.", "bottleneck.", "input_norm.", "mask_conv.")) and not behind_zero_conv:
            assert p.grad is not None, name
            assert p.grad.abs().sum() > 0, name
    if cls is DTCN:
        assert all(b.depthwise.offset_predictor.pointwise.weight.grad.abs().sum() > 0 for b in model.blocks)


@pytest.mark.parametrize("cls", [TCN, DTCN])
@pytest.mark.parametrize("skip", [0, 8])
def test_a_grown_model_computes_the_shallower_one_then_trains_its_new_repeat(cls, skip):
    """load_shallower: the extra repeats start as identity blocks; one update opens them."""
    torch.manual_seed(0)
    small = cls(**{**TINY, "R": 1, "skip_channels": skip})
    _randomise(small)
    grown = cls(**{**TINY, "R": 3, "skip_channels": skip})
    _randomise(grown)  # whatever the new blocks hold, their residual and skip convolutions are zeroed
    grown.load_shallower(small.state_dict(), repeats=1)
    x = torch.randn(2, 3000)
    torch.testing.assert_close(grown(x), small(x), rtol=0, atol=1e-5)
    assert (grown(x) - x).abs().max() > 0.1  # not merely the identity
    grown(x).pow(2).mean().backward()
    first_new = grown.blocks[TINY["X"]]  # with skips the mask reads only them, else the residual path
    opening = first_new.skip if skip else first_new.residual
    assert opening.weight.grad.abs().sum() > 0
    for name, value in small.state_dict().items():
        torch.testing.assert_close(grown.state_dict()[name], value)


def _snr(reference: torch.Tensor, estimate: torch.Tensor) -> float:
    """dB, the edges (where the models' zero padding differs) left out."""
    reference, estimate = reference[..., 400:-400], estimate[..., 400:-400]
    return float(10 * torch.log10(reference.pow(2).sum() / (reference - estimate).pow(2).sum()))


@pytest.mark.parametrize("cls", [TCN, DTCN])
@pytest.mark.parametrize(("there", "here"), [(16000, 8000), (8000, 16000)])
@pytest.mark.parametrize("init", ["default", "identity"])
def test_a_resampled_network_computes_what_the_other_one_computes_on_band_limited_audio(cls, there, here, init):
    """load_resampled: the network at `here` on x ~ resample(other(resample(x))), x below both Nyquists."""
    import torchaudio.functional as AF

    config = {**TINY, "N": 64, "init": init}
    window = 32 if there == 16000 else 16
    other = cls(**config, L=window)
    if init == "default":
        _randomise(other)  # a mask far from 1: the resampled network must reproduce what it does
    model = cls(**config, L=window * here // there)
    model.load_resampled(other.state_dict(), window)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, here, generator=g)
    for _ in range(2):  # band-limited well below 4 kHz
        x = AF.lowpass_biquad(x, here, 0.4 * min(here, there))
    with torch.no_grad():
        reference = AF.resample(other(AF.resample(x, here, there)), there, here)
        out = model(x)
    assert _snr(reference, out) > (20 if init == "identity" else 10)
    if init == "default":
        assert _snr(x, out) < 0  # the networks do more than pass the input through
    for name, value in other.state_dict().items():  # the mask estimator carries over as it is
        if not name.startswith(("encoder.", "decoder.")):
            torch.testing.assert_close(model.state_dict()[name], value, rtol=0, atol=0)


def test_load_resampled_refuses_what_does_not_fit():
    model = DTCN(**TINY, L=16)
    with pytest.raises(ValueError, match="needs another window than L=16, got 16"):
        model.load_resampled(DTCN(**TINY, L=16).state_dict(), 16)
    with pytest.raises(ValueError, match=r"no encoder/decoder of shape \[16, 1, 32\]"):
        model.load_resampled(DTCN(**TINY, L=16).state_dict(), 32)
    with pytest.raises(ValueError, match="weights of another network: missing"):
        model.load_resampled(TCN(**TINY, L=32).state_dict(), 32)  # no offset predictors


def test_load_shallower_refuses_what_does_not_fit():
    grown = DTCN(**{**TINY, "R": 3})
    with pytest.raises(ValueError, match="needs fewer repeats than R=3, got 3"):
        grown.load_shallower(DTCN(**{**TINY, "R": 3}).state_dict(), repeats=3)
    with pytest.raises(ValueError, match="weights of another network: missing"):
        grown.load_shallower(TCN(**{**TINY, "R": 1}).state_dict(), repeats=1)  # no offset predictors
