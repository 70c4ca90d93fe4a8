"""Long signals in segments (:mod:`dereverb.inference.segments`): the plan, the cross-fade, and
segment-wise output that agrees with the whole-signal output for gLN and cLN models."""

from __future__ import annotations

import math

import numpy as np
import pytest
import soundfile as sf
import torch
from inference_helpers import TINY, perturbed, resample, write_wav

from dereverb.data import rooms
from dereverb.errors import EnhanceError
from dereverb.inference import Dereverberator, files
from dereverb.inference.segments import CrossFade, SegmentNorms, SegmentRunner, plan_segments
from dereverb.metrics import si_sdr
from dereverb.models import DTCN, TCN


def test_chunked_and_whole_agree_for_gln_models(reverberant):
    x = reverberant[0]
    for cls in (DTCN, TCN):
        torch.manual_seed(1)
        model = perturbed(cls(**TINY, L=16))
        model.sample_rate = 8000
        whole = Dereverberator(model, chunk_seconds=None, gain="none").enhance(x, 8000)
        chunked = Dereverberator(model, chunk_seconds=1.0, gain="none")
        assert len(chunked.plan(len(x), 8000).cores) >= 5  # really cut into segments
        assert si_sdr(chunked.enhance(x, 8000), whole) >= 25
        # each segment with its own statistics is far off: the first pass is what makes it agree
        own = Dereverberator(model, chunk_seconds=1.0, gain="none", gln_passes=1).enhance(x, 8000)
        assert si_sdr(own, whole) < si_sdr(chunked.enhance(x, 8000), whole) - 10


@pytest.mark.parametrize("cls", [TCN, DTCN])
def test_chunked_equals_whole_for_causal_cln_models(reverberant, cls):
    torch.manual_seed(2)
    extra = {"max_offset": 2.0} if cls is DTCN else {}
    model = perturbed(cls(**TINY, L=16, norm="cLN", causal=True, **extra))
    model.sample_rate = 8000
    x = reverberant[0]
    whole = Dereverberator(model, chunk_seconds=None, gain="none").enhance(x, 8000)
    chunked = Dereverberator(model, chunk_seconds=0.7, gain="none")
    assert len(chunked.plan(len(x), 8000).cores) >= 10
    np.testing.assert_allclose(chunked.enhance(x, 8000), whole, atol=1e-5 * np.abs(whole).max(), rtol=0)


def test_shipped_models_chunked_and_whole_agree(speech8k, rir_bank):
    from dereverb.pretrained import list_pretrained

    names = [n for n in list_pretrained() if n.startswith(("dtcn", "tcn"))]
    if not names:
        pytest.skip("no shipped model in this checkout")
    for name in names:
        whole = Dereverberator.from_pretrained(name, chunk_seconds=None)
        rate = whole.sample_rate
        chunk = math.ceil(3 * whole.context / rate)  # the shortest segments the model's context allows
        d = Dereverberator.from_pretrained(name, chunk_seconds=chunk)
        speech = resample(speech8k, 8000, rate)
        speech = np.tile(speech, math.ceil(3 * chunk * rate / len(speech)))  # three segments at least
        x = rooms.reverberate(speech, _bank_rir(rir_bank, rate), "direct")[0]
        assert len(d.plan(len(x), rate).cores) >= 3, name
        assert si_sdr(d.enhance(x, rate), whole.enhance(x, rate)) >= 25, name


def _bank_rir(bank, rate):
    rir = bank[1]
    if rate == rir.sample_rate:
        return rir
    h = resample(rir.rir, rir.sample_rate, rate)
    return rooms.Rir(h, rate, int(np.argmax(np.abs(h))), rir.t60_s, rir.t60_measured_s, rir.distance_m, rir.drr_db,
                     rir.room_dim)  # fmt: skip


def test_long_files_are_read_in_bounded_segments(model_dir, reverberant, tmp_path, monkeypatch):
    x = np.tile(reverberant[0], 3)  # ~20 s
    src = write_wav(tmp_path / "long.wav", 0.5 * x / np.abs(x).max(), 8000, "FLOAT")
    d = Dereverberator.from_pretrained(model_dir, chunk_seconds=2.0, gain="none")
    sizes = []
    original = files.block_reader

    def spy(src_file, path, mix_down):
        read = original(src_file, path, mix_down)
        return lambda lo, hi: sizes.append(hi - lo) or read(lo, hi)

    monkeypatch.setattr(files, "block_reader", spy)
    y = d.enhance_file(src)
    assert len(y) == len(x)
    assert len(sizes) >= 8
    assert max(sizes) <= 2 * 8000 + 3 * d.context
    whole = Dereverberator.from_pretrained(model_dir, chunk_seconds=None, gain="none").enhance(
        sf.read(str(src), dtype="float32")[0], 8000
    )
    assert si_sdr(y, whole) >= 25


# ---------------------------------------------------------------------------------------------
# the parts: plan, cross-fade, norms, runner


@pytest.mark.parametrize(("total", "context", "chunk", "step"), [
    (100, 8, 40, 1), (1000, 30, 200, 1), (1003, 30, 200, 8), (500, 10, None, 4), (205, 8, 40, 1), (60, 8, 40, 1),
])  # fmt: skip
def test_plan_cores_tile_the_signal_on_the_step_grid(total, context, chunk, step):
    plan = plan_segments(total, context, chunk, step)
    assert plan.cores[0][0] == 0
    assert plan.cores[-1][1] == total
    assert all(b == c for (_, b), (c, _) in zip(plan.cores, plan.cores[1:], strict=False))
    assert all(a % step == 0 for a, _ in plan.cores)
    assert plan.fade % step == 0
    assert plan.pad % step == 0
    assert plan.pad >= context + plan.fade / 2  # every output sample has `context` samples of signal around it
    assert plan.cores[-1][1] - plan.cores[-1][0] >= min(plan.fade, total)  # no sliver of a last segment
    if chunk is None:
        assert plan.cores == [(0, total)]


@pytest.mark.parametrize(("total", "context", "chunk", "step"), [(100, 8, 40, 1), (997, 21, 160, 1), (1000, 16, 96, 8)])
def test_cross_fade_of_identical_segments_gives_the_signal_back(total, context, chunk, step):
    plan = plan_segments(total, context, chunk, step)
    x = np.random.default_rng(0).standard_normal((2, total)).astype(np.float32)
    join = CrossFade(plan)
    blocks = []
    for k, (a, b) in enumerate(plan.cores):
        lo, hi = max(0, a - plan.pad), min(total, b + plan.pad)
        blocks.append(join(x[:, lo:hi], lo, k))
    np.testing.assert_allclose(np.concatenate(blocks, axis=-1), x, rtol=0, atol=1e-6)


def test_segment_norms_modes_and_removal():
    gln = DTCN(**TINY)  # gLN by default
    norms = SegmentNorms(gln)
    assert norms.gln
    assert not norms.cln
    modes = {}
    for passes in (1, 2, 3):
        modes[passes] = []
        for index in range(passes):
            norms.begin_pass(index, passes)
            modes[passes].append(norms.mode)
    assert modes == {1: ["off"], 2: ["collect", "apply"], 3: ["collect", "apply+collect", "apply"]}
    x = torch.randn(1, 800)
    norms.stats = {id(m): (torch.ones(1), torch.ones(1)) for m in norms.gln}  # statistics that change the output
    with torch.no_grad():
        hooked = gln(x)
        norms.remove()
        assert not torch.allclose(gln(x), hooked)
    cln = SegmentNorms(TCN(**TINY, norm="cLN", causal=True))
    assert cln.cln
    assert not cln.gln
    cln.begin_pass(0, 1)
    assert cln.mode == "stream"
    cln.remove()


def test_runner_reports_progress_and_names_the_input_of_a_non_finite_output():
    plan = plan_segments(1000, context=20, chunk=200)
    shares = []
    runner = SegmentRunner(torch.nn.Identity(), lambda x: x, plan, rate=100)
    out = []
    runner.run(lambda lo, hi: np.ones((1, hi - lo), np.float32), out.append, progress=shares.append)
    assert sum(shares) == 1000
    assert sum(b.shape[-1] for b in out) == 1000

    def broken(x):
        y = x.copy()
        y[:, -1] = np.nan
        return y

    runner = SegmentRunner(torch.nn.Identity(), broken, plan, rate=100)
    first = r"^in\.wav: the model's output holds NaN or Inf samples \(the first at 2\.24 s\)"  # the first segment's end
    with pytest.raises(EnhanceError, match=first):
        runner.run(lambda lo, hi: np.ones((1, hi - lo), np.float32), out.append, where="in.wav")
    with pytest.raises(EnhanceError, match=r"^the model's output holds NaN"):
        runner.run(lambda lo, hi: np.ones((1, hi - lo), np.float32), out.append)
