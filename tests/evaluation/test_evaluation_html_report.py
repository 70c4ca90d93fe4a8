"""dereverb.evaluation.html_report: one self-contained page, relative links, escaped text, playable examples."""

from __future__ import annotations

import re

import numpy as np
import soundfile as sf

from dereverb.evaluation.figures import Example
from dereverb.evaluation.html_report import html_table, write_report
from dereverb.evaluation.summary import build_summary


def _summary() -> dict:
    rows = [{"id": f"u{i}", "direct_si_sdr": 3.0 + i, "input_direct_si_sdr": 1.0, "delta_direct_si_sdr": 2.0 + i,
             "failures": ""} for i in range(3)]  # fmt: skip
    info = {"model": "model <m>", "model_class": "TCN", "model_rate": 8000, "data": "folder & co",
            "targets": ["direct"], "target_rate": 8000, "metric_rate": 8000, "notes": ["a <note>"],
            "flags": {"direct_si_sdr": "flagged"}, "length_policy": "cropped", "length_warnings": 0}  # fmt: skip
    return build_summary(rows, ["direct_si_sdr"], ["output", "input"], info)


def _example(uid: str, finite: bool = True) -> Example:
    x = np.sin(np.arange(800) / 5).astype(np.float32)
    output = x.copy() if finite else np.full_like(x, np.nan)
    return Example(uid, x, {"input": x, "output": output}, 0.5 * x, "direct")


def test_html_table_escapes_every_cell():
    table = html_table(["a&b"], [["<i>", "x"]])
    assert "<th>a&amp;b</th>" in table
    assert "<td>&lt;i&gt;</td><td>x</td>" in table


def test_report_page_links_and_audio(tmp_path):
    figures = {"spectrograms": [("u<1>", "plots/spectrogram_u_1_.png")], "t60": "plots/improvement_vs_t60.png",
               "notes": ["a figure note"]}  # fmt: skip
    write_report(tmp_path, _summary(), figures, [_example("u<1>"), _example("u2", finite=False)], 8000)
    page = (tmp_path / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>")
    assert "<h1>Evaluation of model &lt;m&gt;</h1>" in page
    assert "<li>Data: folder &amp; co</li>" in page
    assert "<li>Note: a &lt;note&gt;</li>" in page
    assert "<li class='note'>a figure note</li>" in page
    assert "<p class='note'>† direct_si_sdr: flagged.</p>" in page
    assert "<h3>u&lt;1&gt;</h3>" in page
    assert "<td>output: not finite</td>" in page  # the second example's output is not written
    links = re.findall(r"""(?:src|href)=['"]([^'"]+)['"]""", page)
    assert [x for x in links if x.endswith(".wav")] == [
        "examples/u_1_/input.wav", "examples/u_1_/output.wav", "examples/u_1_/direct.wav",
        "examples/u2/input.wav", "examples/u2/direct.wav",
    ]  # fmt: skip
    assert {"results.csv", "summary.json", "plots/improvement_vs_t60.png", "plots/spectrogram_u_1_.png"} <= set(links)
    assert not [x for x in links if "://" in x or x.startswith("/")]
    for wav in (tmp_path / "examples").rglob("*.wav"):
        x, rate = sf.read(wav)
        assert rate == 8000
        assert sf.info(wav).subtype == "FLOAT"
        assert x.shape == (800,)
    assert not (tmp_path / "examples" / "u2" / "output.wav").exists()
    assert [p.name for p in tmp_path.iterdir() if p.is_file()] == ["report.html"]  # no temporary file left


def test_report_without_examples_or_figures(tmp_path):
    write_report(tmp_path, _summary(), {}, [], 8000)
    page = (tmp_path / "report.html").read_text()
    assert "<h2>Examples</h2>" not in page
    assert "<img" not in page
    assert "<h2>Scores: mean ± std [95 % CI of the mean]</h2>" in page
    assert not (tmp_path / "examples").exists()
