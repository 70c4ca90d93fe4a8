"""read_audio / write_audio: round trips, resampling, and every bad-input error."""

from __future__ import annotations

import os

import numpy as np
import pytest
import soundfile as sf
import torch

from dereverb.atomic import atomic_file
from dereverb.data.audio import audio_info, check_samples, read_audio, resample_audio, write_audio
from dereverb.errors import DataError, OutputExistsError


def _tone(n=800, rate=8000, freq=440.0):
    return (0.5 * np.sin(2 * np.pi * freq * np.arange(n) / rate)).astype(np.float32)


def test_round_trip_exact_float_wav(tmp_path):
    x = _tone()
    write_audio(tmp_path / "a.wav", x, 8000)
    y = read_audio(tmp_path / "a.wav", 8000)
    assert y.dtype == np.float32
    assert y.shape == x.shape
    np.testing.assert_array_equal(y, x)
    info = audio_info(tmp_path / "a.wav")
    assert (info.sample_rate, info.frames, info.channels) == (8000, 800, 1)
    assert info.duration_s == pytest.approx(0.1)


def test_reads_integer_formats_as_float(tmp_path):
    x = _tone()
    sf.write(tmp_path / "a.flac", x, 8000, subtype="PCM_16")
    y = read_audio(tmp_path / "a.flac")
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, x, atol=1 / 2**15)


def test_write_accepts_tensor_and_1xT(tmp_path):
    write_audio(tmp_path / "t.wav", torch.from_numpy(_tone())[None], 8000)
    assert read_audio(tmp_path / "t.wav").shape == (800,)


def test_resample_when_allowed(tmp_path):
    x = _tone(16000, 16000, 300.0)
    write_audio(tmp_path / "a.wav", x, 16000)
    y = read_audio(tmp_path / "a.wav", 8000, resample=True)
    assert y.shape == (8000,)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y[100:-100], _tone(8000, 8000, 300.0)[100:-100], atol=2e-2)
    assert resample_audio(x, 16000, 16000) is x


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda p: None, "no such file"),
        (lambda p: p.write_bytes(b""), r"empty file \(0 bytes\)"),
        (lambda p: p.write_text("this is not audio, just text" * 10), "not a readable audio file"),
        (lambda p: p.write_bytes(open_wav_bytes()[:30]), "not a readable audio file"),
        (lambda p: sf.write(p, np.zeros(0, np.float32), 8000), "contains no samples"),
        (lambda p: sf.write(p, np.array([0, np.nan, 0], np.float32), 8000, subtype="FLOAT"), "NaN or Inf"),
        (lambda p: sf.write(p, np.array([0, np.inf, 0], np.float32), 8000, subtype="FLOAT"), "NaN or Inf"),
        (lambda p: sf.write(p, np.zeros((100, 2), np.float32), 8000), "2 channels; only mono"),
        (lambda p: sf.write(p, np.zeros(100, np.float32), 16000), r"sample rate 16000 Hz, expected 8000 Hz"),
    ],
    ids=["missing", "empty", "text", "truncated", "no-samples", "nan", "inf", "stereo", "rate"],
)
def test_read_errors_name_the_file(tmp_path, make, match):
    path = tmp_path / "bad.wav"
    make(path)
    with pytest.raises(DataError, match=match) as err:
        read_audio(path, 8000)
    assert str(path) in str(err.value)
    assert "\n" not in str(err.value)


def open_wav_bytes():
    import io

    buf = io.BytesIO()
    sf.write(buf, _tone(), 8000, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def test_read_directory_is_an_error(tmp_path):
    with pytest.raises(DataError, match="not a file"):
        read_audio(tmp_path)


def test_write_refuses_to_overwrite_and_keeps_the_old_file(tmp_path):
    path = tmp_path / "a.wav"
    write_audio(path, _tone(), 8000)
    with pytest.raises(DataError, match="file exists"):
        write_audio(path, np.zeros(10, np.float32), 8000)
    np.testing.assert_array_equal(read_audio(path), _tone())
    write_audio(path, np.zeros(10, np.float32), 8000, overwrite=True)
    assert read_audio(path).shape == (10,)
    assert sorted(os.listdir(tmp_path)) == ["a.wav"]  # no temporary file left behind


def test_failed_write_leaves_previous_file_and_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "a.wav"
    write_audio(path, _tone(), 8000)

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(sf, "write", boom)
    with pytest.raises(OSError, match="disk full"):
        write_audio(path, np.zeros(10, np.float32), 8000, overwrite=True)
    monkeypatch.undo()
    np.testing.assert_array_equal(read_audio(path), _tone())
    assert sorted(os.listdir(tmp_path)) == ["a.wav"]


@pytest.mark.parametrize(
    ("x", "name", "match"),
    [
        (np.zeros((2, 10), np.float32), "a.wav", "expected a mono signal"),
        (np.zeros(0, np.float32), "a.wav", "empty signal"),
        (np.array([0, np.nan], np.float32), "a.wav", "NaN or Inf"),
        (np.zeros(10, np.float32), "a.xyz", "unknown audio format"),
        (np.zeros(10, np.float32), "missing/a.wav", "does not exist"),
    ],
)
def test_write_errors(tmp_path, x, name, match):
    with pytest.raises(DataError, match=match):
        write_audio(tmp_path / name, x, 8000)
    assert not (tmp_path / name).exists()


def test_write_refuses_clipping_in_integer_formats(tmp_path):
    with pytest.raises(DataError, match="would clip in PCM_16"):
        write_audio(tmp_path / "a.wav", np.array([0.0, 1.5], np.float32), 8000, subtype="PCM_16")
    write_audio(tmp_path / "a.wav", np.array([0.0, 1.5], np.float32), 8000)  # FLOAT keeps it exactly
    assert read_audio(tmp_path / "a.wav")[1] == 1.5


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)])
def test_written_files_follow_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        write_audio(tmp_path / "a.wav", _tone(), 8000)
        with atomic_file(tmp_path / "b.txt") as tmp:
            with open(tmp, "w") as f:
                f.write("done")
        write_audio(tmp_path / "a.wav", _tone(), 8000, overwrite=True)
    finally:
        os.umask(old)
    assert (tmp_path / "a.wav").stat().st_mode & 0o777 == mode
    assert (tmp_path / "b.txt").stat().st_mode & 0o777 == mode
    assert sorted(os.listdir(tmp_path)) == ["a.wav", "b.txt"]


def test_unwritable_folder_error_names_the_output_not_the_temporary_file(tmp_path, deny_creation):
    deny_creation(tmp_path)
    with pytest.raises(PermissionError) as err:
        write_audio(tmp_path / "a.wav", _tone(), 8000)
    assert err.value.filename == str(tmp_path / "a.wav")
    assert "Permission denied" in err.value.strerror
    assert os.listdir(tmp_path) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_folder_error_names_the_output(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir(mode=0o555)
    with pytest.raises(PermissionError) as err:
        write_audio(folder / "a.wav", _tone(), 8000)
    assert err.value.filename == str(folder / "a.wav")


def test_existing_names_are_refused_even_dangling_links(tmp_path):
    link = tmp_path / "a.wav"
    link.symlink_to(tmp_path / "nowhere.wav")
    with pytest.raises(OutputExistsError, match="overwrite=True") as err:
        write_audio(link, _tone(), 8000)
    assert err.value.path == link
    assert isinstance(err.value, DataError)
    assert link.is_symlink()
    assert not (tmp_path / "nowhere.wav").exists()
    assert "--overwrite" in str(OutputExistsError(link, "pass --overwrite to replace it"))


def test_check_samples_reads_through_and_says_where(tmp_path):
    x = np.zeros((24000, 2), np.float32)
    x[20000, 1] = np.nan
    sf.write(tmp_path / "late.wav", x, 8000, subtype="FLOAT")
    with pytest.raises(
        DataError, match=r"late\.wav: contains NaN or Inf samples \(the first at 2\.50 s, sample 20000\)"
    ):
        check_samples(tmp_path / "late.wav", block_frames=4096)
    sf.write(tmp_path / "ok.flac", x[:, :1] * 0, 8000)
    info = check_samples(tmp_path / "ok.flac", block_frames=4096)
    assert (info.sample_rate, info.frames, info.channels, info.subtype) == (8000, 24000, 1, "PCM_16")
    sf.write(tmp_path / "empty.wav", np.zeros(0, np.float32), 8000)
    with pytest.raises(DataError, match="no samples"):
        check_samples(tmp_path / "empty.wav")
    with pytest.raises(DataError, match="no such file"):
        check_samples(tmp_path / "missing.wav")


def test_check_samples_finds_a_broken_stream_the_header_hides(tmp_path):
    sf.write(tmp_path / "cut.flac", (0.3 * np.random.default_rng(0).standard_normal(48000)).astype(np.float32), 8000)
    data = (tmp_path / "cut.flac").read_bytes()
    (tmp_path / "cut.flac").write_bytes(data[: len(data) // 2])
    assert audio_info(tmp_path / "cut.flac").frames == 48000  # the header still promises every sample
    with pytest.raises(DataError, match=r"cut\.flac: (unreadable at|truncated)"):
        check_samples(tmp_path / "cut.flac", block_frames=4096)
