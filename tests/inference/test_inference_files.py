"""Audio files in and out of inference (:mod:`dereverb.inference.files`): reading in checked blocks,
the output format, clipping, and no file left behind on an error."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
from inference_helpers import level, write_wav

from dereverb.data.audio import AudioInfo
from dereverb.errors import DataError, EnhanceError
from dereverb.inference import Dereverberator, files, output_format


def test_integer_output_clipping_is_counted_and_reported(model_dir, reverberant, tmp_path, caplog):
    src = write_wav(tmp_path / "in.wav", 0.99 * reverberant[0][:16000] / np.abs(reverberant[0]).max(), 8000)
    d = Dereverberator.from_pretrained(model_dir, gain=50.0)
    d.enhance_file(src, tmp_path / "out.wav")
    assert "clipped" in caplog.text
    assert "out.wav" in caplog.text
    y, _ = sf.read(str(tmp_path / "out.wav"), dtype="float32")
    assert np.abs(y).max() <= 1.0
    d.enhance_file(src, tmp_path / "float.wav", subtype="FLOAT")
    assert np.abs(sf.read(str(tmp_path / "float.wav"), dtype="float32")[0]).max() > 1.0


def test_nan_position_is_reported_to_the_sample(model_dir, reverberant, tmp_path):
    x = level(reverberant, 0.5, 16000)
    x[5040] = np.inf
    src = write_wav(tmp_path / "in.wav", x, 8000, "FLOAT")
    d = Dereverberator.from_pretrained(model_dir, chunk_seconds=1.0)
    with pytest.raises(DataError, match=r"the first at 0\.63 s, sample 5040"):
        d.enhance_file(src, tmp_path / "out.wav")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.wav"]


def test_non_finite_output_late_in_a_long_file_removes_what_was_written(model_dir, reverberant, tmp_path, monkeypatch):
    x = np.tile(level(reverberant, 0.5, 16000), 3)
    x[30000:] *= 1.9  # louder from 3.75 s on; the model breaks down there
    src = write_wav(tmp_path / "in.wav", x, 8000, "FLOAT")
    # one pass, which writes as it goes (with two, the first pass would find the NaN before any write)
    d = Dereverberator.from_pretrained(model_dir, chunk_seconds=1.0, gain="none", gln_passes=1)
    d.model.register_forward_hook(lambda m, i, o: o * float("nan") if float(i[0].abs().max()) > 0.9 else o)
    written = []

    class Spy(files.BlockWriter):
        def __call__(self, block):
            written.append(block.shape[-1])
            super().__call__(block)

    monkeypatch.setattr(files, "BlockWriter", Spy)
    with pytest.raises(EnhanceError, match=r"NaN or Inf samples \(the first at"):
        d.enhance_file(src, tmp_path / "out.wav")
    assert sum(written) > 0  # segments before the failure had reached the temporary file
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.wav"]


def test_output_format_is_checked_before_any_work(tmp_path):

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


# ---------------------------------------------------------------------------------------------
# the parts: reader, writer, transform_file


def test_block_reader_reads_channels_first_and_mixes_down(tmp_path):
    x = np.stack([np.linspace(-0.5, 0.5, 1000), np.full(1000, 0.25)]).astype(np.float32)
    src = write_wav(tmp_path / "st.wav", x, 8000, "FLOAT")
    with sf.SoundFile(str(src)) as f:
        np.testing.assert_array_equal(files.block_reader(f, src, mix_down=False)(100, 300), x[:, 100:300])
        np.testing.assert_allclose(files.block_reader(f, src, mix_down=True)(0, 1000), x.mean(0, keepdims=True))


@pytest.mark.parametrize(("subtype", "clipped"), [("PCM_16", 2), ("FLOAT", 0)])
def test_block_writer_clips_and_counts_only_integer_subtypes(tmp_path, subtype, clipped):
    block = np.array([[0.5, 1.5, -2.0, 0.0]], np.float32)
    with sf.SoundFile(str(tmp_path / "o.wav"), "w", 8000, 1, subtype=subtype) as dst:
        write = files.BlockWriter(dst, subtype)
        write(block)
    assert write.clipped == clipped
    peak = np.abs(sf.read(str(tmp_path / "o.wav"), dtype="float32")[0]).max()
    assert peak == pytest.approx(1.0 if clipped else 2.0, abs=1e-4)


def test_transform_file_writes_returns_and_refuses_its_own_input(tmp_path):
    x = np.stack([np.linspace(-0.5, 0.5, 800), np.full(800, 0.25)]).astype(np.float32)
    src = write_wav(tmp_path / "in.wav", x, 8000, "FLOAT")

    def halve(read, write, frames, rate):
        assert rate == 8000
        for lo in range(0, frames, 300):
            write(0.5 * read(lo, min(frames, lo + 300)))

    np.testing.assert_allclose(files.transform_file(halve, src), 0.5 * x)
    assert files.transform_file(halve, src, mix_down=True).shape == (800,)
    out = files.transform_file(halve, src, tmp_path / "out.flac", subtype="PCM_24")
    assert sf.info(str(out)).subtype == "PCM_24"
    np.testing.assert_allclose(sf.read(str(out), dtype="float32")[0].T, 0.5 * x, atol=1e-6)
    with pytest.raises(DataError, match="its own input"):
        files.transform_file(halve, src, src, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.wav", "out.flac"]
