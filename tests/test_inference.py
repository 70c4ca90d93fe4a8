"""Inference: the Dereverberator API and ``dereverb-enhance`` on generated reverberant files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from dereverb import inference
from dereverb.data import rooms, speech_pack
from dereverb.data.audio import read_audio
from dereverb.inference import Dereverberator, EnhanceError, calibrate_gain, default_model, main
from dereverb.metrics import si_sdr
from dereverb.models import DTCN, TCN
from dereverb.pretrained import ModelFolderError, from_pretrained, save_pretrained

TINY = {"N": 32, "B": 16, "H": 32, "X": 3, "R": 1}
ROOT = Path(__file__).parents[1]


def _perturbed(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random non-zero offsets too: an untrained DTCN's offset predictors are zero."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return model.eval()


@pytest.fixture(scope="module")
def speech8k() -> np.ndarray:
    """About 6 s of real speech from the shipped pack at 8 kHz (a few test utterances joined)."""
    files = [f for f in speech_pack.load_manifest("test") if f.duration_s >= 1.0][:4]
    return np.concatenate([read_audio(f.path, 8000, resample=True) for f in files])


@pytest.fixture(scope="module")
def reverberant(speech8k, rir_bank) -> tuple[np.ndarray, np.ndarray]:
    """``(reverberant, direct)`` at 8 kHz."""
    return rooms.reverberate(speech8k, rir_bank[0], "direct")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    return save_pretrained(_perturbed(DTCN(**TINY)), tmp_path_factory.mktemp("models") / "dtcn8k", 8000)


def _write(path: Path, x: np.ndarray, rate: int, subtype: str = "PCM_16") -> Path:
    sf.write(str(path), x.T if x.ndim == 2 else x, rate, subtype=subtype)
    return path


# ---------------------------------------------------------------------------------------------
# the command line


def test_cli_enhances_a_reverberant_wav(model_dir, reverberant, tmp_path, capsys):
    src = _write(tmp_path / "in.wav", 0.5 * reverberant[0] / np.abs(reverberant[0]).max(), 8000)
    out = tmp_path / "out.wav"
    assert main([str(src), "-o", str(out), "--model", str(model_dir), "--quiet"]) == 0
    x, rate_in = sf.read(str(src), dtype="float32")
    y, rate_out = sf.read(str(out), dtype="float32")
    assert rate_out == rate_in == 8000
    assert y.shape == x.shape
    assert sf.info(str(out)).subtype == "PCM_16"  # the input's subtype
    assert np.abs(y - x).max() > 1e-2  # it did something
    assert np.isfinite(y).all()
    assert np.abs(y).max() > 1e-3
    assert not list(tmp_path.glob(".*"))  # no temporary file left
    assert capsys.readouterr().err == ""


def test_console_script_runs_and_reports_one_line_errors(model_dir, reverberant, tmp_path):
    src = _write(tmp_path / "in.wav", 0.5 * reverberant[0] / np.abs(reverberant[0]).max(), 8000)
    script = [sys.executable, str(ROOT / "scripts" / "enhance.py")]
    ok = subprocess.run([*script, str(src), "-o", str(tmp_path / "o.wav"), "--model", str(model_dir), "--quiet"],
                        capture_output=True, text=True, timeout=300)  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert sf.info(str(tmp_path / "o.wav")).frames == sf.info(str(src)).frames
    bad = subprocess.run([*script, str(tmp_path / "missing.wav"), "-o", str(tmp_path / "p.wav"), "--model",
                          str(model_dir)], capture_output=True, text=True, timeout=300)  # fmt: skip
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [f"error: {tmp_path / 'missing.wav'}: no such file"]
    assert not (tmp_path / "p.wav").exists()


def test_folder_in_folder_out_keeps_names_and_rates(model_dir, reverberant, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    x = 0.5 * reverberant[0][:16000] / np.abs(reverberant[0]).max()
    _write(src / "a.wav", x, 8000)
    _write(src / "b.flac", rooms_resample(x, 8000, 16000), 16000)
    (src / "notes.txt").write_text("not audio, not an audio suffix: ignored")
    assert main([str(src), "-o", str(tmp_path / "out"), "--model", str(model_dir), "--quiet"]) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.wav", "b.flac"]
    assert sf.info(str(tmp_path / "out" / "b.flac")).samplerate == 16000
    assert sf.info(str(tmp_path / "out" / "b.flac")).frames == 32000


def rooms_resample(x: np.ndarray, a: int, b: int) -> np.ndarray:
    from dereverb.data.audio import resample_audio

    return resample_audio(np.asarray(x, np.float32), a, b)


def test_other_rates_are_resampled_to_the_model_and_back(model_dir, reverberant):
    d = Dereverberator.from_pretrained(model_dir, gain="none")
    x8 = reverberant[0][:24000]
    for rate in (16000, 44100):
        x = rooms_resample(x8, 8000, rate)
        y = d.enhance(x, rate)
        assert y.shape == x.shape
        # the same as resampling by hand around the model
        by_hand = rooms_resample(d.enhance(rooms_resample(x, rate, 8000), 8000), 8000, rate)[: len(x)]
        assert si_sdr(y, by_hand) > 40


def test_stereo_channels_are_enhanced_independently_or_mixed_down(model_dir, reverberant, tmp_path):
    x = 0.4 * reverberant[0][:20000] / np.abs(reverberant[0]).max()
    stereo = np.stack([x, 0.5 * np.roll(x, 300)])
    src = _write(tmp_path / "st.wav", stereo, 8000, "FLOAT")
    d = Dereverberator.from_pretrained(model_dir, gain="none")
    y = d.enhance_file(src)
    assert y.shape == stereo.shape
    for c in range(2):
        np.testing.assert_allclose(y[c], d.enhance(stereo[c], 8000), atol=1e-5)
    assert main([str(src), "-o", str(tmp_path / "mono.wav"), "--model", str(model_dir), "--mix-down", "--quiet"]) == 0
    mono, _ = sf.read(str(tmp_path / "mono.wav"), dtype="float32")
    assert mono.ndim == 1
    assert len(mono) == stereo.shape[1]
    assert main([str(src), "-o", str(tmp_path / "st_out.wav"), "--model", str(model_dir), "--quiet"]) == 0
    assert sf.info(str(tmp_path / "st_out.wav")).channels == 2


# ---------------------------------------------------------------------------------------------
# long files: segments


def test_chunked_and_whole_agree_for_gln_models(reverberant):
    x = reverberant[0]
    for cls in (DTCN, TCN):
        torch.manual_seed(1)
        model = _perturbed(cls(**TINY, L=16))
        model.sample_rate = 8000
        whole = Dereverberator(model, chunk_seconds=None, gain="none").enhance(x, 8000)
        chunked = Dereverberator(model, chunk_seconds=1.0, gain="none")
        assert len(chunked._plan(len(x), 8000)[2]) >= 5  # really cut into segments
        assert si_sdr(chunked.enhance(x, 8000), whole) >= 25
        # each segment with its own statistics is far off: the first pass is what makes it agree
        own = Dereverberator(model, chunk_seconds=1.0, gain="none", gln_passes=1).enhance(x, 8000)
        assert si_sdr(own, whole) < si_sdr(chunked.enhance(x, 8000), whole) - 10


@pytest.mark.parametrize("cls", [TCN, DTCN])
def test_chunked_equals_whole_for_causal_cln_models(reverberant, cls):
    torch.manual_seed(2)
    extra = {"max_offset": 2.0} if cls is DTCN else {}
    model = _perturbed(cls(**TINY, L=16, norm="cLN", causal=True, **extra))
    model.sample_rate = 8000
    x = reverberant[0]
    whole = Dereverberator(model, chunk_seconds=None, gain="none").enhance(x, 8000)
    chunked = Dereverberator(model, chunk_seconds=0.7, gain="none")
    assert len(chunked._plan(len(x), 8000)[2]) >= 10
    np.testing.assert_allclose(chunked.enhance(x, 8000), whole, atol=1e-5 * np.abs(whole).max(), rtol=0)


def test_shipped_models_chunked_and_whole_agree(speech8k, rir_bank):
    from dereverb.pretrained import list_pretrained

    names = [n for n in list_pretrained() if n.startswith(("dtcn", "tcn"))]
    if not names:
        pytest.skip("no shipped model in this checkout")
    for name in names:
        d = Dereverberator.from_pretrained(name, chunk_seconds=2.0)
        x = rooms.reverberate(
            rooms_resample(speech8k, 8000, d.sample_rate), _bank_rir(rir_bank, d.sample_rate), "direct"
        )[0]
        whole = Dereverberator.from_pretrained(name, chunk_seconds=None).enhance(x, d.sample_rate)
        assert si_sdr(d.enhance(x, d.sample_rate), whole) >= 25, name


def _bank_rir(bank, rate):
    rir = bank[1]
    if rate == rir.sample_rate:
        return rir
    h = rooms_resample(rir.rir, rir.sample_rate, rate)
    return rooms.Rir(h, rate, int(np.argmax(np.abs(h))), rir.t60_s, rir.t60_measured_s, rir.distance_m, rir.drr_db,
                     rir.room_dim)  # fmt: skip


def test_long_files_are_read_in_bounded_segments(model_dir, reverberant, tmp_path, monkeypatch):
    x = np.tile(reverberant[0], 3)  # ~20 s
    src = _write(tmp_path / "long.wav", 0.5 * x / np.abs(x).max(), 8000, "FLOAT")
    d = Dereverberator.from_pretrained(model_dir, chunk_seconds=2.0, gain="none")
    sizes = []
    original = inference._reader

    def spy(src_file, path, mix_down):
        read = original(src_file, path, mix_down)
        return lambda lo, hi: sizes.append(hi - lo) or read(lo, hi)

    monkeypatch.setattr(inference, "_reader", spy)
    y = d.enhance_file(src)
    assert len(y) == len(x)
    assert len(sizes) >= 8
    assert max(sizes) <= 2 * 8000 + 3 * d.context
    whole = Dereverberator.from_pretrained(model_dir, chunk_seconds=None, gain="none").enhance(
        sf.read(str(src), dtype="float32")[0], 8000
    )
    assert si_sdr(y, whole) >= 25


# ---------------------------------------------------------------------------------------------
# the API


def test_enhance_batch_rows_at_their_own_lengths(model_dir, reverberant):
    d = Dereverberator.from_pretrained(model_dir, gain="none")
    x = torch.from_numpy(reverberant[0][:16000]).repeat(2, 1)
    out = d.enhance_batch(x, lengths=torch.tensor([1.0, 0.5]))
    assert out.shape == (2, 16000)
    torch.testing.assert_close(
        out[1, :8000], torch.from_numpy(d.enhance(reverberant[0][:8000], 8000)), atol=1e-5, rtol=0
    )
    assert (out[1, 8000:] == 0).all()
    torch.testing.assert_close(out[0], d.enhance(torch.from_numpy(reverberant[0][:16000]), 8000), atol=1e-5, rtol=0)
    assert d.enhance_batch(torch.zeros(0, 100)).shape == (0, 100)
    with pytest.raises(EnhanceError, match="relative lengths"):
        d.enhance_batch(x, lengths=torch.tensor([1.0, 1.5]))
    with pytest.raises(EnhanceError, match="NaN or Inf"):
        d.enhance_batch(torch.full((1, 100), float("nan")))


def test_output_gain_is_stored_calibrated_and_applied(reverberant, tmp_path):
    torch.manual_seed(0)
    model = _perturbed(DTCN(**TINY))
    g = calibrate_gain(model, [reverberant])
    raw = model(torch.from_numpy(reverberant[0])[None]).detach().numpy()[0]
    assert g == pytest.approx(float(np.dot(reverberant[1], raw) / np.dot(raw, raw)), rel=1e-4)
    folder = save_pretrained(model, tmp_path / "m", 8000, extra={"output_gain": g})
    assert from_pretrained(folder).output_gain == pytest.approx(g)
    auto = Dereverberator.from_pretrained(folder, chunk_seconds=None).enhance(reverberant[0], 8000)
    none = Dereverberator.from_pretrained(folder, chunk_seconds=None, gain="none").enhance(reverberant[0], 8000)
    np.testing.assert_allclose(auto, g * none, rtol=1e-5, atol=1e-7)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "output_gain": 0}))
    with pytest.raises(ModelFolderError, match="output_gain"):
        from_pretrained(folder)


def test_input_gain_matches_the_level_of_the_input(model_dir, reverberant):
    d = Dereverberator.from_pretrained(model_dir, chunk_seconds=None, gain="input")
    x = reverberant[0][:16000]
    y = d.enhance(x, 8000)
    assert float(np.dot(x - y, y)) == pytest.approx(0.0, abs=1e-3 * float(np.dot(x, x)))  # y is x's projection
    for bad in ("loud", 0, float("nan"), float("inf")):
        with pytest.raises(EnhanceError, match="gain"):
            Dereverberator.from_pretrained(model_dir, gain=bad)


def test_default_model_follows_the_input_rate(monkeypatch):
    import dereverb.pretrained as pretrained

    monkeypatch.setattr(pretrained, "list_pretrained", lambda: ["dtcn-16k", "dtcn-8k", "tcn-8k"])
    assert default_model(8000) == "dtcn-8k"
    assert default_model(11025) == "dtcn-8k"
    assert default_model(16000) == "dtcn-16k"
    assert default_model(48000) == "dtcn-16k"
    monkeypatch.setattr(pretrained, "list_pretrained", lambda: ["dtcn-8k"])
    assert default_model(48000) == "dtcn-8k"
    monkeypatch.setattr(pretrained, "list_pretrained", lambda: [])
    with pytest.raises(EnhanceError, match="no shipped DTCN"):
        default_model(8000)


# ---------------------------------------------------------------------------------------------
# bad input: one line, exit 2, nothing left behind


def _bad_cases(root: Path, model_dir: Path, good: Path) -> dict[str, tuple[list[str], str]]:
    (root / "empty.wav").write_bytes(b"")
    (root / "text.wav").write_bytes(b"this is not audio at all")
    sf.write(str(root / "zero.wav"), np.zeros(0, np.float32), 8000)
    nan = np.full(40000, 0.1, np.float32)
    nan[30000] = np.nan
    sf.write(str(root / "nan.wav"), nan, 8000, subtype="FLOAT")
    inf = np.full(800, 0.1, np.float32)
    inf[3] = np.inf
    sf.write(str(root / "inf.wav"), inf, 8000, subtype="FLOAT")
    (root / "adir").mkdir()
    (root / "foreign").mkdir()
    (root / "foreign" / "model.bin").write_bytes(b"0")
    (root / "exists.wav").write_bytes(b"keep me")
    (root / "outfile").write_bytes(b"a file")
    model = ["--model", str(model_dir)]
    return {
        "missing": ([str(root / "nope.wav"), "-o", str(root / "o1.wav"), *model], "no such file"),
        "empty": ([str(root / "empty.wav"), "-o", str(root / "o2.wav"), *model], "empty file"),
        "non-audio": ([str(root / "text.wav"), "-o", str(root / "o3.wav"), *model], "not a readable audio file"),
        "zero-length": ([str(root / "zero.wav"), "-o", str(root / "o4.wav"), *model], "no samples"),
        "nan late in a long file": (
            [str(root / "nan.wav"), "-o", str(root / "o5.wav"), *model, "--chunk-seconds", "1"],
            "NaN or Inf",
        ),
        "inf": ([str(root / "inf.wav"), "-o", str(root / "o6.wav"), *model], "NaN or Inf"),
        "directory as input file": ([str(root / "adir"), "-o", str(root / "o7.wav"), *model], "no audio files"),
        "existing output": ([str(good), "-o", str(root / "exists.wav"), *model], "--overwrite"),
        "foreign model folder": (
            [str(good), "-o", str(root / "o8.wav"), "--model", str(root / "foreign")],
            "not a dereverb model",
        ),
        "unknown model name": ([str(good), "-o", str(root / "o9.wav"), "--model", "dtcn-3k"], "no such model"),
        "several inputs, file output": (
            [str(good), str(root / "inf.wav"), "-o", str(root / "outfile"), *model],
            "output folder",
        ),
        "bad gain": ([str(good), "-o", str(root / "o10.wav"), *model, "--gain", "loud"], "--gain"),
        "bad chunk": ([str(good), "-o", str(root / "o11.wav"), *model, "--chunk-seconds", "0"], "chunk_seconds"),
        "output replaces input": ([str(good), "-o", str(good), *model, "--overwrite"], "its own input"),
    }


@pytest.fixture(scope="module")
def bad_root(tmp_path_factory, model_dir, reverberant):
    root = tmp_path_factory.mktemp("bad")
    good = _write(root / "good.wav", 0.5 * reverberant[0][:8000] / np.abs(reverberant[0]).max(), 8000)
    return root, _bad_cases(root, model_dir, good)


BAD = ["missing", "empty", "non-audio", "zero-length", "nan late in a long file", "inf", "directory as input file",
       "existing output", "foreign model folder", "unknown model name", "several inputs, file output", "bad gain",
       "bad chunk", "output replaces input"]  # fmt: skip


@pytest.mark.parametrize("case", BAD)
def test_bad_input_one_line_exit_2_nothing_left(bad_root, case, capsys):
    root, cases = bad_root
    argv, expected = cases[case]
    before = sorted(p.name for p in root.iterdir())
    assert main([*argv, "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("error: "), err
    assert expected in err[0], err
    assert sorted(p.name for p in root.iterdir()) == before  # no output, no temporary file
    assert (root / "exists.wav").read_bytes() == b"keep me"


def test_overwrite_replaces_an_existing_output(model_dir, reverberant, tmp_path):
    src = _write(tmp_path / "in.wav", 0.5 * reverberant[0][:8000] / np.abs(reverberant[0]).max(), 8000)
    out = tmp_path / "out.wav"
    out.write_bytes(b"old")
    assert main([str(src), "-o", str(out), "--model", str(model_dir), "--overwrite", "--quiet"]) == 0
    assert sf.info(str(out)).frames == 8000


def test_integer_output_clipping_is_counted_and_reported(model_dir, reverberant, tmp_path, caplog):
    src = _write(tmp_path / "in.wav", 0.99 * reverberant[0][:16000] / np.abs(reverberant[0]).max(), 8000)
    d = Dereverberator.from_pretrained(model_dir, gain=50.0)
    d.enhance_file(src, tmp_path / "out.wav")
    assert "clipped" in caplog.text
    assert "out.wav" in caplog.text
    y, _ = sf.read(str(tmp_path / "out.wav"), dtype="float32")
    assert np.abs(y).max() <= 1.0
    d.enhance_file(src, tmp_path / "float.wav", subtype="FLOAT")
    assert np.abs(sf.read(str(tmp_path / "float.wav"), dtype="float32")[0]).max() > 1.0


def test_api_rejects_bad_arrays(model_dir):
    d = Dereverberator.from_pretrained(model_dir)
    with pytest.raises(EnhanceError, match="no samples"):
        d.enhance(np.zeros(0, np.float32), 8000)
    with pytest.raises(EnhanceError, match="NaN or Inf"):
        d.enhance(np.array([0.0, np.inf], np.float32), 8000)
    with pytest.raises(EnhanceError, match="shape"):
        d.enhance(np.zeros((1, 2, 3), np.float32), 8000)
    with pytest.raises(EnhanceError, match="sample_rate"):
        d.enhance(np.zeros(10, np.float32), 0)
