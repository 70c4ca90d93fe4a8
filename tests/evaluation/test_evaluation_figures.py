"""dereverb.evaluation.figures: one spectrogram figure per example (with a DTCN's offsets), the T60 figure."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dereverb.evaluation.figures import Example, write_plots
from dereverb.loading import LoadedModel
from dereverb.models import DTCN, TCN

pytest.importorskip("matplotlib")
TINY = {"N": 32, "B": 16, "H": 32, "X": 2, "R": 1}


def _example(uid: str, n: int = 4000) -> Example:
    rng = np.random.default_rng(0)
    x = rng.standard_normal(n).astype(np.float32)
    signals = {"input": x, "output": 0.5 * x, "wpe": 0.8 * x}
    return Example(uid, x, signals, 0.3 * x, "early")


def _rows(t60: bool) -> list[dict]:
    return [{"id": f"u{i}", **({"t60_s": 0.2 + 0.3 * i} if t60 else {}), "delta_early_si_sdr": float(i),
             "wpe_delta_early_si_sdr": 0.5, "delta_early_pesq_nb": 0.1, "wpe_delta_early_pesq_nb": 0.0}
            for i in range(3)]  # fmt: skip


def _loaded(cls) -> LoadedModel:
    torch.manual_seed(0)
    return LoadedModel(cls(**TINY).eval(), 8000, "test")


def test_example_shows_its_signals_then_its_target():
    ex = _example("a")
    assert [name for name, _ in ex.shown()] == ["input", "output", "wpe", "early"]


def test_spectrograms_and_the_t60_figure(tmp_path):
    examples = [_example("spk 1/a"), _example("b")]
    names = ["early_pesq_nb", "early_si_sdr"]
    figures = write_plots(tmp_path, examples, _rows(True), _loaded(TCN), 8000, names, ["wpe"], "early")
    assert figures["spectrograms"] == [("spk 1/a", "plots/spectrogram_spk_1_a.png"), ("b", "plots/spectrogram_b.png")]
    assert figures["t60"] == "plots/improvement_vs_t60.png"
    assert figures["notes"] == []
    for _, path in figures["spectrograms"]:
        assert (tmp_path / path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / figures["t60"]).stat().st_size > 1000
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == [
        "improvement_vs_t60.png", "spectrogram_b.png", "spectrogram_spk_1_a.png"
    ]  # fmt: skip


def test_a_dtcn_figure_adds_its_offsets_and_no_t60_column_is_noted(tmp_path):
    (tmp_path / "tcn").mkdir()
    (tmp_path / "dtcn").mkdir()
    plain = write_plots(tmp_path / "tcn", [_example("a")], _rows(False), _loaded(TCN), 8000, [], [], "early")
    deformable = write_plots(tmp_path / "dtcn", [_example("a")], _rows(False), _loaded(DTCN), 8000, [], [], "early")
    for figures in (plain, deformable):
        assert figures["t60"] is None
        assert figures["notes"] == ["no improvement-vs-T60 plot: the test set has no t60_s column (a manifest has one)"]
    from PIL import Image

    heights = [Image.open(folder / "plots" / "spectrogram_a.png").size[1] for folder in (tmp_path / "tcn",
               tmp_path / "dtcn")]  # fmt: skip
    assert heights[1] > heights[0]  # the offsets' panels below the spectrograms


def test_the_plots_folder_must_be_new(tmp_path):
    (tmp_path / "plots").mkdir()
    with pytest.raises(FileExistsError):
        write_plots(tmp_path, [], [], _loaded(TCN), 8000, [], [], "direct")
