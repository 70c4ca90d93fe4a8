"""The tables of an evaluation: the per-utterance CSV and the summary (JSON and Markdown).

The summary gives, for every metric column, the mean, the standard deviation, the 95 % confidence
interval of the mean (Student's t over the non-missing values) and how many values are missing;
when the test set has ``t60_s`` / ``drr_db`` columns, a breakdown of the means by T60 and DRR bins.

Metric columns name the signal, then the target: ``<target>_<metric>`` for the model output
(``direct_si_sdr``), ``input_<target>_<metric>`` for the unprocessed input, ``delta_<target>_<metric>``
for output minus input, ``<baseline>_<target>_<metric>`` and ``<baseline>_delta_<target>_<metric>``
for each baseline (``wpe_early_pesq_nb``).
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from dereverb.atomic import atomic_file, write_text

__all__ = [
    "DRR_BINS",
    "FORMAT",
    "T60_BINS",
    "build_summary",
    "ci95",
    "metric_columns",
    "safe_name",
    "summary_facts",
    "summary_footnotes",
    "summary_tables",
    "write_csv",
    "write_summary",
]

T60_BINS = (0.0, 0.3, 0.6, 0.9, 1.2, math.inf)
"""Edges of the T60 bins of the breakdown, seconds (left-closed)."""
DRR_BINS = (-math.inf, 0.0, 5.0, 10.0, math.inf)
"""Edges of the DRR bins of the breakdown, dB (left-closed)."""
FORMAT = "dereverb-evaluation"
"""The ``format`` field of ``summary.json``: marks a folder written by an evaluation, the only kind of
folder its ``overwrite`` replaces."""
LEADING = ("id", "duration_s", "t60_s", "t60_measured_s", "drr_db", "distance_m")
"""The first columns of ``results.csv`` (those present), before the lengths and the metrics."""


def safe_name(uid: str) -> str:
    """A file name for an utterance id: anything but letters, digits, ``.``, ``_`` and ``-`` becomes ``_``.

    Example:
        >>> safe_name("spk 1/utt:2"), safe_name("")
        ('spk_1_utt_2', 'utt')
    """
    return re.sub(r"[^A-Za-z0-9._-]", "_", uid) or "utt"


def ci95(values: Sequence[float]) -> tuple[float, float]:
    """The 95 % confidence interval of the mean of the finite values (Student's t); NaN for n < 2.

    Example:
        >>> [round(v, 3) for v in ci95([1.0, 2.0, 3.0])]
        [-0.484, 4.484]
    """
    from scipy import stats

    x = np.asarray(values, dtype=np.float64)
    x = x[np.isfinite(x)]
    if x.size < 2:
        return math.nan, math.nan
    half = float(stats.t.ppf(0.975, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))
    return float(x.mean()) - half, float(x.mean()) + half


def metric_columns(names: Sequence[str], signals: Sequence[str]) -> dict[str, list[str]]:
    """The columns of each metric: output, input, Δ, then each baseline and its Δ.

    Example:
        >>> metric_columns(["direct_si_sdr"], ["output", "input", "wpe"])["direct_si_sdr"]
        ['direct_si_sdr', 'input_direct_si_sdr', 'delta_direct_si_sdr', 'wpe_direct_si_sdr', 'wpe_delta_direct_si_sdr']
    """
    out = {}
    for name in names:
        cols = [name, f"input_{name}", f"delta_{name}"]
        for s in signals:
            if s not in ("output", "input"):
                cols += [f"{s}_{name}", f"{s}_delta_{name}"]
        out[name] = cols
    return out


def build_summary(rows: list[dict], names: Sequence[str], signals: Sequence[str], info: dict) -> dict:
    """The content of ``summary.json``: ``info`` plus statistics of every metric column.

    Args:
        rows: the per-utterance rows (NaN where missing).
        names: the metrics against each target, ``<target>_<metric>`` (``direct_si_sdr``, ...).
        signals: ``"output"``, ``"input"`` and the baselines scored.
        info: model, data, targets, rates, notes and settings to record.

    Returns:
        ``format``, ``info``'s keys, ``n_utterances``, ``utterances_with_failures``, ``metrics``,
        ``signals``, ``columns`` (column -> mean, std, n, missing, ci95) and ``breakdown``
        (``t60_s`` / ``drr_db`` -> the bins' counts and means, and how many rows have no value).
    """
    from dereverb.metrics import summarize

    columns = [c for cols in metric_columns(names, signals).values() for c in cols]
    stats = summarize(rows, columns)
    for col in columns:
        stats[col]["ci95"] = list(ci95([r[col] for r in rows]))
    summary = {
        "format": FORMAT,
        **info,
        "n_utterances": len(rows),
        "utterances_with_failures": sum(bool(r.get("failures")) for r in rows),
        "metrics": list(names),
        "signals": list(signals),
        "columns": stats,
        "breakdown": {},
    }
    for key, edges, unit in (("t60_s", T60_BINS, "s"), ("drr_db", DRR_BINS, "dB")):
        values = np.array([_num(r.get(key)) for r in rows])
        if not np.isfinite(values).any():
            continue
        bins = []
        for lo, hi in itertools.pairwise(edges):
            members = [r for r, v in zip(rows, values, strict=True) if lo <= v < hi]
            if members:
                means = summarize(members, columns)
                bins.append(
                    {"bin": _bin_label(lo, hi, unit), "low": lo, "high": hi, "n": len(members)}
                    | {col: means[col]["mean"] for col in columns}
                )
        missing = int((~np.isfinite(values)).sum())
        summary["breakdown"][key] = {"bins": bins, "without_value": missing}
    return summary


def _num(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _bin_label(lo: float, hi: float, unit: str) -> str:
    if math.isinf(lo):
        return f"< {hi:g} {unit}"
    if math.isinf(hi):
        return f">= {lo:g} {unit}"
    return f"{lo:g}-{hi:g} {unit}"


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float | np.floating):
        return f"{float(value):.6g}" if math.isfinite(value) else ""  # a missing value is an empty cell
    return str(value)


def write_csv(path: Path, rows: list[dict]) -> None:
    """The per-utterance CSV: identity and lengths, metric columns, then ``failures`` (a missing value is empty)."""
    keys = []
    for row in rows:
        keys += [k for k in row if k not in keys]
    order = [k for k in LEADING if k in keys] + [k for k in keys if k not in LEADING and k != "failures"]
    order.append("failures")
    with atomic_file(path, overwrite=True) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(order)
        for row in rows:
            writer.writerow([_cell(row.get(k)) for k in order])


def _jsonable(x):
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, float | np.floating):
        return float(x) if math.isfinite(x) else None  # NaN is not JSON: missing is null
    if isinstance(x, np.integer):
        return int(x)
    return x


def _fmt(stats: dict, digits: int) -> str:
    if stats["n"] == 0:
        return f"missing ({stats['missing']})"
    lo, hi = stats["ci95"]
    text = f"{stats['mean']:.{digits}f} ± {stats['std']:.{digits}f}"
    if math.isfinite(lo):
        text += f" [{lo:.{digits}f}, {hi:.{digits}f}]"
    if stats["missing"]:
        text += f" ({stats['missing']} missing)"
    return text


def _digits(name: str) -> int:
    return 2 if "pesq" in name or "si_sdr" in name else 3


def _num_text(value, digits: int) -> str:
    return f"{value:+.{digits}f}" if isinstance(value, float) and math.isfinite(value) else "missing"


def summary_tables(summary: dict) -> list[tuple[str, list[str], list[list[str]]]]:
    """``(title, header, rows)`` of each table of the summary (rendered as Markdown and as HTML)."""
    baselines = [s for s in summary["signals"] if s not in ("output", "input")]
    header = ["metric", "input", "output", "Δ output - input"]
    for b in baselines:
        header += [b.upper(), f"Δ {b.upper()} - input"]
    body = []
    cols = summary["columns"]
    for name in summary["metrics"]:
        d = _digits(name)
        flag = " †" if name in summary.get("flags", {}) else ""
        row = [name, _fmt(cols[f"input_{name}"], d), _fmt(cols[name], d) + flag, _fmt(cols[f"delta_{name}"], d)]
        for b in baselines:
            row += [_fmt(cols[f"{b}_{name}"], d), _fmt(cols[f"{b}_delta_{name}"], d)]
        body.append(row)
    tables = [("Scores: mean ± std [95 % CI of the mean]", header, body)]
    for key, title in (("t60_s", "By T60"), ("drr_db", "By DRR")):
        if summary["breakdown"].get(key):
            tables.append(_breakdown_table(summary, summary["breakdown"][key], title, baselines))
    return tables


def _breakdown_table(summary: dict, part: dict, title: str, baselines: list[str]):
    """The means per T60 or DRR bin: the input's SI-SDR, every Δ, and the baselines' Δ SI-SDR and PESQ-NB."""
    names = summary["metrics"]
    first = summary["targets"][0]
    shown = [n for n in (f"{first}_si_sdr", f"{first}_pesq_nb") if n in names]
    head = [title[3:], "n", f"input {first}_si_sdr", *[f"Δ {n}" for n in names]]
    head += [f"Δ {b.upper()} {n}" for b in baselines for n in shown]
    rows = []
    for b in part["bins"]:
        row = [b["bin"], str(b["n"]), _num_text(b.get(f"input_{first}_si_sdr"), 2)]
        row += [_num_text(b[f"delta_{n}"], _digits(n)) for n in names]
        row += [_num_text(b[f"{bl}_delta_{n}"], _digits(n)) for bl in baselines for n in shown]
        rows.append(row)
    if part["without_value"]:
        title += f" ({part['without_value']} utterances without a value)"
    return f"{title}: mean per bin", head, rows


def summary_facts(summary: dict) -> list[str]:
    """The lines that describe an evaluation above its tables: data, targets and rates, counts, settings, notes.

    Example:
        >>> summary = {"data": "manifest t.csv", "targets": ["direct", "early"], "target_rate": 8000,
        ...            "metric_rate": 8000, "model_class": "DTCN", "model_rate": 8000, "n_utterances": 3,
        ...            "utterances_with_failures": 0, "length_policy": "cropped", "length_warnings": 0, "notes": []}
        >>> summary_facts(summary)[1]
        'Targets: direct (the direct_* columns) and early (the early_* columns), at 8000 Hz; metrics at 8000 Hz; \
model (DTCN) at 8000 Hz'
    """
    targets = " and ".join(f"{t} (the {t}_* columns)" for t in summary["targets"])
    lines = [
        f"Data: {summary['data']}",
        f"Targets: {targets}, at {summary['target_rate']} Hz; metrics at {summary['metric_rate']} Hz; "
        f"model ({summary['model_class']}) at {summary['model_rate']} Hz",
        f"Utterances: {summary['n_utterances']}; with at least one failed (missing) metric: "
        f"{summary['utterances_with_failures']}",
        f"Lengths: {summary['length_policy']}; utterances over that: {summary['length_warnings']}",
    ]
    for b, settings in summary.get("baselines", {}).items():
        lines.append(f"{b.upper()} settings: " + ", ".join(f"{k}={v}" for k, v in settings.items()))
    return lines + [f"Note: {note}" for note in summary["notes"]]


def summary_footnotes(summary: dict) -> list[str]:
    """The lines below the tables: what each † means, then how Δ and missing values are counted."""
    lines = [f"† {name}: {why}." for name, why in summary.get("flags", {}).items()]
    return [*lines, "Δ: output (or baseline) minus input, per utterance. Missing values are counted, never scored."]


def _markdown(summary: dict) -> str:
    lines = [f"# Evaluation of {summary['model']}", ""]
    lines += [f"- {fact}" for fact in summary_facts(summary)]
    for title, header, rows in summary_tables(summary):
        lines += ["", f"## {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
    for note in summary_footnotes(summary):
        lines += ["", note]
    return "\n".join(lines) + "\n"


def write_summary(folder: Path, summary: dict) -> None:
    """``summary.json`` (NaN written as null) and ``summary.md`` in ``folder``."""
    write_text(folder / "summary.json", json.dumps(_jsonable(summary), indent=2, allow_nan=False) + "\n")
    write_text(folder / "summary.md", _markdown(summary))
