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
from dereverb.errors import ConfigError, DataError
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


# ---------------------------------------------------------------------------------------------
# hostile or careless use: broken models, partial folder runs, devices, formats, a full disk


def _level(reverberant, peak: float, n: int = 8000) -> np.ndarray:
    return peak * reverberant[0][:n] / np.abs(reverberant[0][:n]).max()


def _left_behind(folder: Path) -> list[str]:
    """Temporary files (``.NAME.XXXX.tmp``) anywhere under ``folder``."""
    return sorted(p.name for p in folder.rglob(".*"))


# A command line whose model's output turns to NaN for inputs louder than $NAN_ABOVE: the weights of a
# model folder can be broken in ways a loader cannot see, and only the output shows it.
_BROKEN_CLI = """
import os, sys
import dereverb.pretrained as pretrained
from dereverb.inference import main

load = pretrained.from_pretrained
above = float(os.environ["NAN_ABOVE"])

def broken(*args, **kwargs):
    model = load(*args, **kwargs)
    model.register_forward_hook(lambda m, i, o: o * float("nan") if float(i[0].abs().max()) > above else o)
    return model

pretrained.from_pretrained = broken
sys.exit(main(sys.argv[1:]))
"""


def _cli(*args, nan_above: float | None = None, preexec_fn=None) -> subprocess.CompletedProcess:
    """``dereverb-enhance ARGS --quiet`` in a subprocess (with a broken model when ``nan_above`` is set)."""
    import os

    env = dict(os.environ)
    if nan_above is None:
        cmd = [sys.executable, str(ROOT / "scripts" / "enhance.py")]
    else:
        cmd = [sys.executable, "-c", _BROKEN_CLI]
        env["NAN_ABOVE"] = str(nan_above)
    return subprocess.run([*cmd, *map(str, args), "--quiet"], capture_output=True, text=True, timeout=300, env=env,
                          preexec_fn=preexec_fn)  # fmt: skip


def _nan_weights(model: torch.nn.Module) -> torch.nn.Module:
    with torch.no_grad():
        next(model.parameters()).view(-1)[0] = float("nan")
    return model


def test_non_finite_model_output_is_an_error_naming_the_input_and_nothing_is_written(reverberant, tmp_path):
    torch.manual_seed(0)
    model = _nan_weights(_perturbed(DTCN(**TINY)))
    model.sample_rate = 8000
    src = _write(tmp_path / "in.wav", _level(reverberant, 0.5, 16000), 8000)
    d = Dereverberator(model, gain="none")
    with pytest.raises(EnhanceError, match="NaN or Inf") as err:
        d.enhance_file(src, tmp_path / "out.wav")
    assert str(src) in str(err.value)
    assert "\n" not in str(err.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.wav"]  # no output, no temporary file
    with pytest.raises(EnhanceError, match=str(src)):
        d.enhance_file(src)
    with pytest.raises(EnhanceError, match="NaN or Inf"):
        d.enhance(_level(reverberant, 0.5), 8000)
    # a finite model with a gain that overflows float32
    torch.manual_seed(0)
    finite = _perturbed(DTCN(**TINY))
    finite.sample_rate = 8000
    with pytest.raises(EnhanceError, match="NaN or Inf"):
        Dereverberator(finite, gain=1e300).enhance_file(src, tmp_path / "loud.wav", subtype="FLOAT")
    assert not (tmp_path / "loud.wav").exists()


def test_non_finite_output_late_in_a_long_file_removes_what_was_written(model_dir, reverberant, tmp_path, monkeypatch):
    x = np.tile(_level(reverberant, 0.5, 16000), 3)
    x[30000:] *= 1.9  # louder from 3.75 s on; the model breaks down there
    src = _write(tmp_path / "in.wav", x, 8000, "FLOAT")
    # one pass, which writes as it goes (with two, the first pass would find the NaN before any write)
    d = Dereverberator.from_pretrained(model_dir, chunk_seconds=1.0, gain="none", gln_passes=1)
    d.model.register_forward_hook(lambda m, i, o: o * float("nan") if float(i[0].abs().max()) > 0.9 else o)
    written = []
    original = inference._writer

    def spy(dst, subtype, clipped):
        write = original(dst, subtype, clipped)
        return lambda block: written.append(block.shape[-1]) or write(block)

    monkeypatch.setattr(inference, "_writer", spy)
    with pytest.raises(EnhanceError, match=r"NaN or Inf samples \(the first at"):
        d.enhance_file(src, tmp_path / "out.wav")
    assert sum(written) > 0  # segments before the failure had reached the temporary file
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.wav"]


def test_cli_broken_model_one_line_exit_2_nothing_written(model_dir, reverberant, tmp_path):
    src = _write(tmp_path / "in.wav", _level(reverberant, 0.5), 8000)
    r = _cli(src, "-o", tmp_path / "out.wav", "--model", model_dir, nan_above=-1.0)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"error: {src}: "), lines
    assert "NaN or Inf" in lines[0], lines
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.wav"]


def _three_inputs(tmp_path: Path, reverberant, middle: np.ndarray, subtype: str = "PCM_16") -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    _write(folder / "a.wav", _level(reverberant, 0.5), 8000)
    _write(folder / "b.wav", middle, 8000, subtype)
    _write(folder / "c.wav", _level(reverberant, 0.4), 8000)
    return folder


def test_folder_with_a_bad_input_is_refused_before_anything_is_written(model_dir, reverberant, tmp_path):
    x = _level(reverberant, 0.5, 16000)
    x[5040] = np.nan  # 0.63 s
    folder = _three_inputs(tmp_path, reverberant, x, "FLOAT")
    out = tmp_path / "out"
    r = _cli(folder, "-o", out, "--model", model_dir, "--chunk-seconds", "1")
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().splitlines() == [
        f"error: {folder / 'b.wav'}: contains NaN or Inf samples (the first at 0.63 s, sample 5040)",
        "error: nothing written: 1 of 3 inputs cannot be processed",
    ]
    assert not out.exists()
    assert _left_behind(tmp_path) == []


def test_nan_position_is_reported_to_the_sample(model_dir, reverberant, tmp_path):
    x = _level(reverberant, 0.5, 16000)
    x[5040] = np.inf
    src = _write(tmp_path / "in.wav", x, 8000, "FLOAT")
    d = Dereverberator.from_pretrained(model_dir, chunk_seconds=1.0)
    with pytest.raises(DataError, match=r"the first at 0\.63 s, sample 5040"):
        d.enhance_file(src, tmp_path / "out.wav")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.wav"]


def test_folder_run_goes_on_after_a_failure_reports_it_and_resumes_with_skip_existing(model_dir, reverberant, tmp_path):
    folder = _three_inputs(tmp_path, reverberant, _level(reverberant, 0.95))
    out = tmp_path / "out"
    r = _cli(folder, "-o", out, "--model", model_dir, nan_above=0.9)  # b.wav breaks the model
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 2, lines
    assert lines[0].startswith(f"error: {folder / 'b.wav'}: "), lines
    assert "NaN or Inf" in lines[0], lines
    assert lines[1] == "error: written 2, failed 1 (b.wav)"
    assert sorted(p.name for p in out.iterdir()) == ["a.wav", "c.wav"]
    assert _left_behind(tmp_path) == []
    kept = {name: (out / name).read_bytes() for name in ("a.wav", "c.wav")}
    # a plain re-run refuses and says how to resume
    again = _cli(folder, "-o", out, "--model", model_dir)
    assert again.returncode == 2
    assert again.stderr.strip().splitlines() == [
        f"error: output exists: {out / 'a.wav'}, {out / 'c.wav'} (pass --overwrite to replace, or --skip-existing "
        "to keep)"
    ]
    resumed = _cli(folder, "-o", out, "--model", model_dir, "--skip-existing")
    assert resumed.returncode == 0, resumed.stderr
    assert sorted(p.name for p in out.iterdir()) == ["a.wav", "b.wav", "c.wav"]
    assert {name: (out / name).read_bytes() for name in kept} == kept  # the finished ones were not redone
    assert sf.info(str(out / "b.wav")).frames == 8000


def test_skip_existing_counts_what_it_skipped(model_dir, reverberant, tmp_path, caplog):
    folder = _three_inputs(tmp_path, reverberant, _level(reverberant, 0.3))
    out = tmp_path / "out"
    out.mkdir()
    (out / "b.wav").write_bytes(b"keep me")
    with caplog.at_level("INFO"):
        assert main([str(folder), "-o", str(out), "--model", str(model_dir), "--skip-existing"]) == 0
    assert "written 2, skipped 1" in caplog.text
    assert (out / "b.wav").read_bytes() == b"keep me"
    assert sorted(p.name for p in out.iterdir()) == ["a.wav", "b.wav", "c.wav"]
    with pytest.raises(SystemExit):  # argparse: the two ways of treating existing outputs exclude each other
        main([str(folder), "-o", str(out), "--model", str(model_dir), "--skip-existing", "--overwrite"])


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--chunk-seconds", "inf"], "error: --chunk-seconds inf: chunk_seconds must be a positive finite number"),
        (["--chunk-seconds", "nan"], "error: --chunk-seconds nan: chunk_seconds must be a positive finite number"),
        (["--chunk-seconds", "-2"], "error: --chunk-seconds -2: chunk_seconds must be a positive finite number"),
        (["--chunk-seconds", "0"], "error: --chunk-seconds 0: chunk_seconds must be a positive finite number"),
        (["--device", "foo"], "error: --device foo: unknown device (use cpu, cuda or cuda:N)"),
        (["--device", "meta"], "error: --device meta: not a device inference runs on"),
        (["--device", "mps"], "error: --device mps: no MPS device is available here"),
        (["--subtype", "MPEG_LAYER_III"], "as WAV MPEG_LAYER_III (Supported file format but unsupported encoding.)"),
    ],
    ids=[
        "chunk-inf",
        "chunk-nan",
        "chunk-negative",
        "chunk-zero",
        "device-foo",
        "device-meta",
        "device-mps",
        "mp3-subtype-in-wav",
    ],
)
def test_bad_settings_one_line_exit_2_nothing_left(model_dir, reverberant, tmp_path, extra, expected, capsys):
    if "mps" in extra and torch.backends.mps.is_available():
        pytest.skip("this machine has an MPS device")
    src = _write(tmp_path / "in.wav", _level(reverberant, 0.5), 8000)
    assert main([str(src), "-o", str(tmp_path / "out.wav"), "--model", str(model_dir), "--quiet", *extra]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: "), lines
    assert expected in lines[0], lines
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.wav"]


def test_cli_bad_settings_in_a_subprocess(model_dir, reverberant, tmp_path):
    src = _write(tmp_path / "in.wav", _level(reverberant, 0.5), 8000)
    for extra, expected in [
        (["--chunk-seconds", "inf"], "error: --chunk-seconds inf: chunk_seconds must be a positive finite number"),
        (["--device", "meta"], "error: --device meta: not a device inference runs on"),
        (["--subtype", "MPEG_LAYER_III"], "as WAV MPEG_LAYER_III (Supported file format but unsupported encoding.)"),
    ]:
        r = _cli(src, "-o", tmp_path / "out.wav", "--model", model_dir, *extra)
        assert r.returncode == 2, r.stderr
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1, lines
        assert lines[0].startswith(expected if expected.startswith("error") else "error: "), lines
        assert expected in lines[0], lines
        assert sorted(p.name for p in tmp_path.iterdir()) == ["in.wav"]


def test_api_refuses_bad_devices_and_chunk_lengths(model_dir):
    for device in ("foo", "meta", "cuda:99" if torch.cuda.is_available() else "cuda"):
        with pytest.raises(ConfigError, match=r"device|CUDA"):
            Dereverberator.from_pretrained(model_dir, device=device)
    for chunk in (float("inf"), float("nan"), -1.0, 0, True):
        with pytest.raises(EnhanceError, match="chunk_seconds"):
            Dereverberator.from_pretrained(model_dir, chunk_seconds=chunk)


@pytest.mark.skipif("MP3" not in sf.available_formats(), reason="this libsndfile has no MP3")
def test_mp3_input_to_wav_output_is_written_with_the_wav_default_subtype(model_dir, reverberant, tmp_path):
    src = tmp_path / "in.mp3"
    sf.write(str(src), _level(reverberant, 0.5), 8000, format="MP3")
    r = _cli(src, "-o", tmp_path / "out.wav", "--model", model_dir)
    assert r.returncode == 0, r.stderr
    info = sf.info(str(tmp_path / "out.wav"))
    assert (info.subtype, info.frames) == ("PCM_16", sf.info(str(src)).frames)
    assert _left_behind(tmp_path) == []


def test_output_format_is_checked_before_any_work(tmp_path):
    from dereverb.data.audio import AudioInfo
    from dereverb.inference import output_format

    assert output_format(tmp_path / "o.wav", AudioInfo(8000, 10, 1, "MPEG_LAYER_III")) == ("WAV", "PCM_16")
    assert output_format(tmp_path / "o.flac", AudioInfo(8000, 10, 2, "PCM_24")) == ("FLAC", "PCM_24")
    assert output_format(tmp_path / "o.flac", AudioInfo(8000, 10, 1, "FLOAT")) == ("FLAC", "PCM_16")
    with pytest.raises(DataError, match=r"o\.flac: cannot write 9 channel"):
        output_format(tmp_path / "o.flac", AudioInfo(8000, 10, 9, "PCM_16"))
    assert output_format(tmp_path / "o.flac", AudioInfo(8000, 10, 9, "PCM_16"), mix_down=True) == ("FLAC", "PCM_16")
    with pytest.raises(DataError, match=r"o\.flac: cannot write 1 channel\(s\) at 1000000 Hz"):
        output_format(tmp_path / "o.flac", AudioInfo(1_000_000, 10, 1, "PCM_16"))
    with pytest.raises(DataError, match="unknown audio format"):
        output_format(tmp_path / "o.xyz", AudioInfo(8000, 10, 1, "PCM_16"))
    assert list(tmp_path.iterdir()) == []


def _file_size_limit(limit: int):
    def set_limit():
        import resource
        import signal

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return set_limit


def test_full_disk_while_writing_one_line_exit_2_nothing_left(model_dir, reverberant, tmp_path):
    src = _write(tmp_path / "in.wav", _level(reverberant, 0.5, 24000), 8000)  # 48 kB of PCM_16
    out = tmp_path / "out.wav"
    r = _cli(src, "-o", out, "--model", model_dir, preexec_fn=_file_size_limit(20000))
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().splitlines() == [f"error: {out}: cannot write the output (File too large); nothing was "
                                             "written"]  # fmt: skip
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.wav"]


def test_outputs_get_the_users_umask(model_dir, reverberant, tmp_path):
    import os

    src = _write(tmp_path / "in.wav", _level(reverberant, 0.5), 8000)
    out = tmp_path / "out"
    out.mkdir(mode=0o755)
    r = _cli(src, "-o", out / "in.wav", "--model", model_dir, preexec_fn=lambda: os.umask(0o022))
    assert r.returncode == 0, r.stderr
    assert (out / "in.wav").stat().st_mode & 0o777 == 0o644
    folder = _three_inputs(tmp_path, reverberant, _level(reverberant, 0.3))
    r = _cli(folder, "-o", tmp_path / "new", "--model", model_dir, preexec_fn=lambda: os.umask(0o027))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "new").stat().st_mode & 0o777 == 0o750
    assert {(p.name, p.stat().st_mode & 0o777) for p in (tmp_path / "new").iterdir()} == {
        ("a.wav", 0o640), ("b.wav", 0o640), ("c.wav", 0o640)
    }  # fmt: skip


def test_an_existing_output_is_reported_with_the_cli_flag(model_dir, reverberant, tmp_path, capsys, monkeypatch):
    src = _write(tmp_path / "in.wav", _level(reverberant, 0.5), 8000)
    dangling = tmp_path / "out.wav"
    dangling.symlink_to(tmp_path / "nowhere.wav")  # a name that is taken, though it "does not exist"
    r = _cli(src, "-o", dangling, "--model", model_dir)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        f"error: output exists: {dangling} (pass --overwrite to replace, or --skip-existing to keep)"
    ]
    assert dangling.is_symlink()
    assert not (tmp_path / "nowhere.wav").exists()
    # an output that appears while the command runs
    original = Dereverberator.enhance_file

    def late(self, path, output_path=None, **kwargs):
        Path(output_path).write_bytes(b"someone else's")
        return original(self, path, output_path, **kwargs)

    monkeypatch.setattr(Dereverberator, "enhance_file", late)
    assert main([str(src), "-o", str(tmp_path / "late.wav"), "--model", str(model_dir), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {tmp_path / 'late.wav'}: file exists (pass --overwrite to replace, or --skip-existing to "
                   "keep it)"]  # fmt: skip
    assert (tmp_path / "late.wav").read_bytes() == b"someone else's"
    assert _left_behind(tmp_path) == []


def test_unwritable_folder_message_names_the_output(model_dir, reverberant, tmp_path, capsys, deny_creation):
    src = _write(tmp_path / "in.wav", _level(reverberant, 0.5), 8000)
    ro = tmp_path / "ro"
    ro.mkdir()
    deny_creation(ro)
    assert main([str(src), "-o", str(ro / "out.wav"), "--model", str(model_dir), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith(f"error: {ro / 'out.wav'}: "), err
    assert "Permission denied" in err[0], err
    assert ".tmp" not in err[0]
    assert list(ro.iterdir()) == []


def test_interrupt_keeps_finished_files_and_says_how_to_resume(model_dir, reverberant, tmp_path, capsys, monkeypatch):
    folder = _three_inputs(tmp_path, reverberant, _level(reverberant, 0.3))
    original = Dereverberator.enhance_file
    calls = []

    def interrupted(self, path, output_path=None, **kwargs):
        calls.append(path)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(self, path, output_path, **kwargs)

    monkeypatch.setattr(Dereverberator, "enhance_file", interrupted)
    assert main([str(folder), "-o", str(tmp_path / "out"), "--model", str(model_dir), "--quiet"]) == 130
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: interrupted; written 1 of 3 (run again with --skip-existing to finish)"
    ]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.wav"]
