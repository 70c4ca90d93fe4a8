"""``dereverb-enhance`` (:mod:`dereverb.cli.enhance`) on generated reverberant files: outputs, one-line
errors, exit statuses, folder runs, resuming, and nothing left behind."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from inference_helpers import ROOT, left_behind, level, resample, run_cli, write_wav

from dereverb.cli.enhance import build_parser, main
from dereverb.inference import Dereverberator


def test_cli_enhances_a_reverberant_wav(model_dir, reverberant, tmp_path, capsys):
    src = write_wav(tmp_path / "in.wav", 0.5 * reverberant[0] / np.abs(reverberant[0]).max(), 8000)
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
    src = write_wav(tmp_path / "in.wav", 0.5 * reverberant[0] / np.abs(reverberant[0]).max(), 8000)
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
    write_wav(src / "a.wav", x, 8000)
    write_wav(src / "b.flac", resample(x, 8000, 16000), 16000)
    (src / "notes.txt").write_text("not audio, not an audio suffix: ignored")
    assert main([str(src), "-o", str(tmp_path / "out"), "--model", str(model_dir), "--quiet"]) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.wav", "b.flac"]
    assert sf.info(str(tmp_path / "out" / "b.flac")).samplerate == 16000
    assert sf.info(str(tmp_path / "out" / "b.flac")).frames == 32000


def test_stereo_channels_are_enhanced_independently_or_mixed_down(model_dir, reverberant, tmp_path):
    x = 0.4 * reverberant[0][:20000] / np.abs(reverberant[0]).max()
    stereo = np.stack([x, 0.5 * np.roll(x, 300)])
    src = write_wav(tmp_path / "st.wav", stereo, 8000, "FLOAT")
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
    good = write_wav(root / "good.wav", 0.5 * reverberant[0][:8000] / np.abs(reverberant[0]).max(), 8000)
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
    src = write_wav(tmp_path / "in.wav", 0.5 * reverberant[0][:8000] / np.abs(reverberant[0]).max(), 8000)
    out = tmp_path / "out.wav"
    out.write_bytes(b"old")
    assert main([str(src), "-o", str(out), "--model", str(model_dir), "--overwrite", "--quiet"]) == 0
    assert sf.info(str(out)).frames == 8000


def test_cli_broken_model_one_line_exit_2_nothing_written(model_dir, reverberant, tmp_path):
    src = write_wav(tmp_path / "in.wav", level(reverberant, 0.5), 8000)
    r = run_cli(src, "-o", tmp_path / "out.wav", "--model", model_dir, nan_above=-1.0)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"error: {src}: "), lines
    assert "NaN or Inf" in lines[0], lines
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.wav"]


def _three_inputs(tmp_path: Path, reverberant, middle: np.ndarray, subtype: str = "PCM_16") -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    write_wav(folder / "a.wav", level(reverberant, 0.5), 8000)
    write_wav(folder / "b.wav", middle, 8000, subtype)
    write_wav(folder / "c.wav", level(reverberant, 0.4), 8000)
    return folder


def test_folder_with_a_bad_input_is_refused_before_anything_is_written(model_dir, reverberant, tmp_path):
    x = level(reverberant, 0.5, 16000)
    x[5040] = np.nan  # 0.63 s
    folder = _three_inputs(tmp_path, reverberant, x, "FLOAT")
    out = tmp_path / "out"
    r = run_cli(folder, "-o", out, "--model", model_dir, "--chunk-seconds", "1")
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().splitlines() == [
        f"error: {folder / 'b.wav'}: contains NaN or Inf samples (the first at 0.63 s, sample 5040)",
        "error: nothing written: 1 of 3 inputs cannot be processed",
    ]
    assert not out.exists()
    assert left_behind(tmp_path) == []


def test_folder_run_goes_on_after_a_failure_reports_it_and_resumes_with_skip_existing(model_dir, reverberant, tmp_path):
    folder = _three_inputs(tmp_path, reverberant, level(reverberant, 0.95))
    out = tmp_path / "out"
    r = run_cli(folder, "-o", out, "--model", model_dir, nan_above=0.9)  # b.wav breaks the model
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 2, lines
    assert lines[0].startswith(f"error: {folder / 'b.wav'}: "), lines
    assert "NaN or Inf" in lines[0], lines
    assert lines[1] == "error: written 2, failed 1 (b.wav)"
    assert sorted(p.name for p in out.iterdir()) == ["a.wav", "c.wav"]
    assert left_behind(tmp_path) == []
    kept = {name: (out / name).read_bytes() for name in ("a.wav", "c.wav")}
    # a plain re-run refuses and says how to resume
    again = run_cli(folder, "-o", out, "--model", model_dir)
    assert again.returncode == 2
    assert again.stderr.strip().splitlines() == [
        f"error: output exists: {out / 'a.wav'}, {out / 'c.wav'} (pass --overwrite to replace, or --skip-existing "
        "to keep)"
    ]
    resumed = run_cli(folder, "-o", out, "--model", model_dir, "--skip-existing")
    assert resumed.returncode == 0, resumed.stderr
    assert sorted(p.name for p in out.iterdir()) == ["a.wav", "b.wav", "c.wav"]
    assert {name: (out / name).read_bytes() for name in kept} == kept  # the finished ones were not redone
    assert sf.info(str(out / "b.wav")).frames == 8000


def test_skip_existing_counts_what_it_skipped(model_dir, reverberant, tmp_path, caplog):
    folder = _three_inputs(tmp_path, reverberant, level(reverberant, 0.3))
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
    src = write_wav(tmp_path / "in.wav", level(reverberant, 0.5), 8000)
    assert main([str(src), "-o", str(tmp_path / "out.wav"), "--model", str(model_dir), "--quiet", *extra]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: "), lines
    assert expected in lines[0], lines
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.wav"]


def test_cli_bad_settings_in_a_subprocess(model_dir, reverberant, tmp_path):
    src = write_wav(tmp_path / "in.wav", level(reverberant, 0.5), 8000)
    for extra, expected in [
        (["--chunk-seconds", "inf"], "error: --chunk-seconds inf: chunk_seconds must be a positive finite number"),
        (["--device", "meta"], "error: --device meta: not a device inference runs on"),
        (["--subtype", "MPEG_LAYER_III"], "as WAV MPEG_LAYER_III (Supported file format but unsupported encoding.)"),
    ]:
        r = run_cli(src, "-o", tmp_path / "out.wav", "--model", model_dir, *extra)
        assert r.returncode == 2, r.stderr
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1, lines
        assert lines[0].startswith(expected if expected.startswith("error") else "error: "), lines
        assert expected in lines[0], lines
        assert sorted(p.name for p in tmp_path.iterdir()) == ["in.wav"]


@pytest.mark.skipif("MP3" not in sf.available_formats(), reason="this libsndfile has no MP3")
def test_mp3_input_to_wav_output_is_written_with_the_wav_default_subtype(model_dir, reverberant, tmp_path):
    src = tmp_path / "in.mp3"
    sf.write(str(src), level(reverberant, 0.5), 8000, format="MP3")
    r = run_cli(src, "-o", tmp_path / "out.wav", "--model", model_dir)
    assert r.returncode == 0, r.stderr
    info = sf.info(str(tmp_path / "out.wav"))
    assert (info.subtype, info.frames) == ("PCM_16", sf.info(str(src)).frames)
    assert left_behind(tmp_path) == []


def _file_size_limit(limit: int):
    def set_limit():
        import resource
        import signal

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return set_limit


def test_full_disk_while_writing_one_line_exit_2_nothing_left(model_dir, reverberant, tmp_path):
    src = write_wav(tmp_path / "in.wav", level(reverberant, 0.5, 24000), 8000)  # 48 kB of PCM_16
    out = tmp_path / "out.wav"
    r = run_cli(src, "-o", out, "--model", model_dir, preexec_fn=_file_size_limit(20000))
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().splitlines() == [f"error: {out}: cannot write the output (File too large); nothing was "
                                             "written"]  # fmt: skip
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.wav"]


def test_outputs_get_the_users_umask(model_dir, reverberant, tmp_path):
    import os

    src = write_wav(tmp_path / "in.wav", level(reverberant, 0.5), 8000)
    out = tmp_path / "out"
    out.mkdir(mode=0o755)
    r = run_cli(src, "-o", out / "in.wav", "--model", model_dir, preexec_fn=lambda: os.umask(0o022))
    assert r.returncode == 0, r.stderr
    assert (out / "in.wav").stat().st_mode & 0o777 == 0o644
    folder = _three_inputs(tmp_path, reverberant, level(reverberant, 0.3))
    r = run_cli(folder, "-o", tmp_path / "new", "--model", model_dir, preexec_fn=lambda: os.umask(0o027))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "new").stat().st_mode & 0o777 == 0o750
    assert {(p.name, p.stat().st_mode & 0o777) for p in (tmp_path / "new").iterdir()} == {
        ("a.wav", 0o640), ("b.wav", 0o640), ("c.wav", 0o640)
    }  # fmt: skip


def test_an_existing_output_is_reported_with_the_cli_flag(model_dir, reverberant, tmp_path, capsys, monkeypatch):
    src = write_wav(tmp_path / "in.wav", level(reverberant, 0.5), 8000)
    dangling = tmp_path / "out.wav"
    dangling.symlink_to(tmp_path / "nowhere.wav")  # a name that is taken, though it "does not exist"
    r = run_cli(src, "-o", dangling, "--model", model_dir)
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
    assert left_behind(tmp_path) == []


def test_unwritable_folder_message_names_the_output(model_dir, reverberant, tmp_path, capsys, deny_creation):
    src = write_wav(tmp_path / "in.wav", level(reverberant, 0.5), 8000)
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
    folder = _three_inputs(tmp_path, reverberant, level(reverberant, 0.3))
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


def test_help_points_to_the_inference_documentation(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "Documentation: docs/inference.md" in text
    assert (ROOT / "docs" / "inference.md").is_file()
    assert build_parser().prog == "dereverb-enhance"


def test_python_m_runs_the_command(model_dir, reverberant, tmp_path):
    src = write_wav(tmp_path / "in.wav", level(reverberant, 0.5), 8000)
    r = subprocess.run([sys.executable, "-m", "dereverb.cli.enhance", str(src), "-o", str(tmp_path / "out.wav"),
                        "--model", str(model_dir), "--quiet"], capture_output=True, text=True, timeout=300,
                       cwd=ROOT)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert sf.info(str(tmp_path / "out.wav")).frames == 8000


def test_out_of_memory_names_the_input_and_the_run_goes_on(model_dir, reverberant, tmp_path, capsys, monkeypatch):
    folder = _three_inputs(tmp_path, reverberant, level(reverberant, 0.3))
    original = Dereverberator.enhance_file

    def short_of_memory(self, path, output_path=None, **kwargs):
        if Path(path).name == "b.wav":
            raise MemoryError
        return original(self, path, output_path, **kwargs)

    monkeypatch.setattr(Dereverberator, "enhance_file", short_of_memory)
    assert main([str(folder), "-o", str(tmp_path / "out"), "--model", str(model_dir), "--quiet"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: {folder / 'b.wav'}: out of memory (try a smaller --chunk-seconds)",
        "error: written 2, failed 1 (b.wav)",
    ]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.wav", "c.wav"]


def test_interrupt_while_checking_the_inputs_writes_nothing(model_dir, reverberant, tmp_path, capsys, monkeypatch):
    import dereverb.cli.enhance as enhance

    folder = _three_inputs(tmp_path, reverberant, level(reverberant, 0.3))

    def interrupted(path):
        raise KeyboardInterrupt

    monkeypatch.setattr(enhance, "check_samples", interrupted)
    assert main([str(folder), "-o", str(tmp_path / "out"), "--model", str(model_dir), "--quiet"]) == 130
    assert capsys.readouterr().err.strip().splitlines() == ["error: interrupted; nothing written"]
    assert not (tmp_path / "out").exists()
