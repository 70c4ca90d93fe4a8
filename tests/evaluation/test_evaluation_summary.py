"""dereverb.evaluation.summary: statistics, confidence intervals, breakdowns, tables, and the files written."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
from scipy import stats

from dereverb.evaluation.summary import (
    FORMAT,
    build_summary,
    ci95,
    metric_columns,
    safe_name,
    summary_facts,
    summary_tables,
    write_csv,
    write_summary,
)

NAMES = ["direct_si_sdr", "direct_stoi"]
INFO = {
    "model": "model folder m",
    "model_class": "DTCN",
    "model_rate": 8000,
    "data": "manifest t.csv",
    "targets": ["direct"],
    "target_rate": 8000,
    "metric_rate": 8000,
    "notes": ["a note"],
    "flags": {"direct_stoi": "a flag"},
    "length_policy": "cropped",
    "length_warnings": 0,
    "baselines": {"wpe": {"taps": 10}},
}


def _rows() -> list[dict]:
    """Four utterances: input, output and WPE scores, T60 and DRR; one output SI-SDR missing."""
    rows = []
    for i, (t60, drr) in enumerate([(0.2, -3.0), (0.25, 2.0), (0.7, 7.0), (None, 12.0)]):
        row = {"id": f"u{i}", "duration_s": 1.0 + i, "t60_s": t60, "drr_db": drr, "failures": ""}
        for signal, base in (("", 10.0), ("input_", 5.0), ("wpe_", 6.0)):
            row[f"{signal}direct_si_sdr"] = base + i
            row[f"{signal}direct_stoi"] = 0.5 + base / 100 + i / 100
        rows.append(row)
    rows[3]["direct_si_sdr"] = math.nan
    rows[3]["failures"] = "output.direct_si_sdr: silent target"
    for row in rows:
        for name in NAMES:
            row[f"delta_{name}"] = row[name] - row[f"input_{name}"]
            row[f"wpe_delta_{name}"] = row[f"wpe_{name}"] - row[f"input_{name}"]
    return rows


def test_ci95_is_students_t_interval_of_the_finite_values():
    values = [1.0, 2.0, 4.0, math.nan, 8.0]
    lo, hi = ci95(values)
    x = np.array([1.0, 2.0, 4.0, 8.0])
    half = stats.t.ppf(0.975, 3) * x.std(ddof=1) / 2
    assert (lo, hi) == pytest.approx((x.mean() - half, x.mean() + half))
    assert all(math.isnan(v) for v in ci95([3.0, math.nan]))
    assert all(math.isnan(v) for v in ci95([]))


def test_metric_columns_and_safe_names():
    assert metric_columns(["early_pesq_nb"], ["output", "input"]) == {
        "early_pesq_nb": ["early_pesq_nb", "input_early_pesq_nb", "delta_early_pesq_nb"]
    }
    assert safe_name("a/b c") == "a_b_c"
    assert safe_name("ok-1.x_2") == "ok-1.x_2"


def test_build_summary_statistics_and_breakdowns():
    rows = _rows()
    summary = build_summary(rows, NAMES, ["output", "input", "wpe"], INFO)
    assert summary["format"] == FORMAT
    assert summary["targets"] == ["direct"]
    assert summary["n_utterances"] == 4
    assert summary["utterances_with_failures"] == 1
    assert summary["metrics"] == NAMES
    out = summary["columns"]["direct_si_sdr"]
    assert out["mean"] == pytest.approx(11.0)  # 10, 11, 12: the missing value is not a zero
    assert (out["n"], out["missing"]) == (3, 1)
    assert out["ci95"] == pytest.approx(list(ci95([10.0, 11.0, 12.0])))
    assert summary["columns"]["input_direct_si_sdr"]["mean"] == pytest.approx(6.5)
    assert summary["columns"]["wpe_delta_direct_stoi"]["mean"] == pytest.approx(0.01)
    t60 = summary["breakdown"]["t60_s"]
    assert [(b["bin"], b["n"]) for b in t60["bins"]] == [("0-0.3 s", 2), ("0.6-0.9 s", 1)]
    assert t60["bins"][0]["delta_direct_si_sdr"] == pytest.approx(5.0)
    assert t60["without_value"] == 1
    drr = summary["breakdown"]["drr_db"]
    assert [b["bin"] for b in drr["bins"]] == ["< 0 dB", "0-5 dB", "5-10 dB", ">= 10 dB"]
    assert math.isnan(drr["bins"][3]["delta_direct_si_sdr"])  # its only output SI-SDR is missing


def test_no_breakdown_without_t60_or_drr():
    rows = [{k: v for k, v in r.items() if k not in ("t60_s", "drr_db")} for r in _rows()]
    assert build_summary(rows, NAMES, ["output", "input", "wpe"], INFO)["breakdown"] == {}


def test_tables_facts_and_flags():
    summary = build_summary(_rows(), NAMES, ["output", "input", "wpe"], INFO)
    (title, header, body), t60, drr = summary_tables(summary)
    assert title.startswith("Scores: mean ± std [95 % CI")
    assert header == ["metric", "input", "output", "Δ output - input", "WPE", "Δ WPE - input"]
    assert [row[0] for row in body] == NAMES
    si_sdr_row = body[0]
    assert si_sdr_row[2].startswith("11.00 ± 0.82 [")  # the output: 10, 11, 12
    assert si_sdr_row[2].endswith("(1 missing)")
    assert body[1][2].endswith(" †")  # the flagged column
    assert t60[0] == "By T60 (1 utterances without a value): mean per bin"
    assert t60[1][:3] == ["T60", "n", "input direct_si_sdr"]
    assert t60[2][0][:3] == ["0-0.3 s", "2", "+5.50"]
    assert drr[2][3][3] == "missing"  # no output SI-SDR in the >= 10 dB bin
    facts = summary_facts(summary)
    assert facts[0] == "Data: manifest t.csv"
    assert "Targets: direct (the direct_* columns), at 8000 Hz" in facts[1]
    assert "WPE settings: taps=10" in facts
    assert facts[-1] == "Note: a note"


def test_written_files(tmp_path):
    rows = _rows()
    summary = build_summary(rows, NAMES, ["output", "input", "wpe"], INFO)
    write_csv(tmp_path / "results.csv", rows)
    write_summary(tmp_path, summary)
    with open(tmp_path / "results.csv", newline="") as f:
        table = list(csv.reader(f))
    assert table[0][:4] == ["id", "duration_s", "t60_s", "drr_db"]
    assert table[0][-1] == "failures"
    assert table[4][table[0].index("direct_si_sdr")] == ""  # missing: empty, never 0
    assert table[4][table[0].index("t60_s")] == ""
    assert table[1][table[0].index("direct_stoi")] == "0.6"
    data = json.loads((tmp_path / "summary.json").read_text())  # NaN written as null: strict JSON
    assert data["breakdown"]["drr_db"]["bins"][3]["delta_direct_si_sdr"] is None
    assert data["columns"]["direct_si_sdr"]["n"] == 3
    markdown = (tmp_path / "summary.md").read_text()
    assert markdown.startswith("# Evaluation of model folder m\n\n- Data: manifest t.csv\n")
    assert "| metric | input | output | Δ output - input | WPE | Δ WPE - input |" in markdown
    assert "\n† direct_stoi: a flag.\n" in markdown
    assert markdown.rstrip().endswith("Missing values are counted, never scored.")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.csv", "summary.json", "summary.md"]
