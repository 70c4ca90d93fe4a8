"""The outputs of :mod:`dereverb.evaluate`: per-utterance CSV, summary (JSON, Markdown), figures, HTML.

The summary gives, for every metric column, the mean, the standard deviation, the 95 % confidence
interval of the mean (Student's t over the non-missing values) and how many values are missing;
when the test set has ``t60_s`` / ``drr_db`` columns, a breakdown of the means by T60 and DRR bins.
The HTML report is one file with relative links only (``plots/``, ``examples/``), so the folder
opens in a browser from disk, anywhere, without a server or a network.
"""

from __future__ import annotations

import csv
import html
import itertools
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["FORMAT", "T60_BINS", "build_summary", "ci95", "write_csv", "write_plots", "write_report", "write_summary"]

T60_BINS = (0.0, 0.3, 0.6, 0.9, 1.2, math.inf)
"""Edges of the T60 bins of the breakdown, seconds (left-closed)."""
DRR_BINS = (-math.inf, 0.0, 5.0, 10.0, math.inf)
"""Edges of the DRR bins of the breakdown, dB (left-closed)."""
FORMAT = "dereverb-evaluation"
"""The ``format`` field of ``summary.json``: marks a folder written by :mod:`dereverb.evaluate`, the only
kind of folder its ``--overwrite`` replaces."""
LEADING = ("id", "duration_s", "t60_s", "t60_measured_s", "drr_db", "distance_m")


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


def _columns(names: Sequence[str], signals: Sequence[str]) -> dict[str, list[str]]:
    """Summary columns per metric: output, input, Δ, then each baseline and its Δ."""
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
        names: the metric names (see :func:`dereverb.metrics.metric_names`).
        signals: ``"output"``, ``"input"`` and the baselines scored.
        info: model, data, rates, notes and settings to record.
    """
    from dereverb.metrics import summarize

    columns = [c for cols in _columns(names, signals).values() for c in cols]
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
    """The per-utterance CSV: identity and lengths, metric columns, then ``failures``."""
    keys = []
    for row in rows:
        keys += [k for k in row if k not in keys]
    order = [k for k in LEADING if k in keys] + [k for k in keys if k not in LEADING and k != "failures"]
    order.append("failures")
    with open(path, "w", newline="", encoding="utf-8") as f:
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
    return 2 if name.startswith(("pesq", "si_sdr")) else 3


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
        part = summary["breakdown"].get(key)
        if not part:
            continue
        names = summary["metrics"]
        head = [title[3:], "n", "input si_sdr", *[f"Δ {n}" for n in names]]
        head += [f"Δ {b.upper()} {n}" for b in baselines for n in ("si_sdr", "pesq_nb")]
        rows = []
        for b in part["bins"]:
            row = [b["bin"], str(b["n"]), _num_text(b["input_si_sdr"], 2)]
            row += [_num_text(b[f"delta_{n}"], _digits(n)) for n in names]
            row += [_num_text(b[f"{bl}_delta_{n}"], _digits(n)) for bl in baselines for n in ("si_sdr", "pesq_nb")]
            rows.append(row)
        if part["without_value"]:
            title += f" ({part['without_value']} utterances without a value)"
        tables.append((f"{title}: mean per bin", head, rows))
    return tables


def _num_text(value, digits: int) -> str:
    return f"{value:+.{digits}f}" if isinstance(value, float) and math.isfinite(value) else "missing"


def _markdown(summary: dict) -> str:
    lines = [f"# Evaluation of {summary['model']}", ""]
    lines += [
        f"- Data: {summary['data']}",
        f"- Reference: {summary['reference']} ({summary['reference_rate']} Hz)"
        + (f", and {second} in the {second}_* rows" if (second := summary.get("second_reference")) else "")
        + "; "
        f"metrics at {summary['metric_rate']} Hz; model ({summary['model_class']}) at {summary['model_rate']} Hz",
        f"- Utterances: {summary['n_utterances']}; with at least one failed (missing) metric: "
        f"{summary['utterances_with_failures']}",
        f"- Lengths: {summary['length_policy']}; utterances over that: {summary['length_warnings']}",
    ]
    for b, settings in summary.get("baselines", {}).items():
        lines.append(f"- {b.upper()} settings: " + ", ".join(f"{k}={v}" for k, v in settings.items()))
    lines += [f"- Note: {note}" for note in summary["notes"]]
    for title, header, rows in summary_tables(summary):
        lines += ["", f"## {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
    for name, why in summary.get("flags", {}).items():
        lines += ["", f"† {name}: {why}."]
    lines += ["", "Δ: output (or baseline) minus input, per utterance. Missing values are counted, never scored."]
    return "\n".join(lines) + "\n"


def write_summary(folder: Path, summary: dict) -> None:
    """``summary.json`` (NaN written as null) and ``summary.md``."""
    (folder / "summary.json").write_text(json.dumps(_jsonable(summary), indent=2, allow_nan=False) + "\n")
    (folder / "summary.md").write_text(_markdown(summary))


# --------------------------------------------------------------------------------------------
# figures


def _safe(uid: str) -> str:
    from dereverb.evaluate import _safe_name

    return _safe_name(uid)


def _spectrogram(ax, x: np.ndarray, rate: int, title: str, vmax: float) -> None:
    from scipy.signal import stft

    n = rate * 32 // 1000
    f, t, z = stft(x, rate, nperseg=n, noverlap=n - n // 4)
    db = 20 * np.log10(np.abs(z) + 1e-9)
    ax.pcolormesh(t, f / 1000, db, shading="auto", cmap="magma", vmin=vmax - 80, vmax=vmax, rasterized=True)
    ax.set_ylabel("kHz")
    ax.set_title(title, fontsize=9, loc="left")


def _offsets(loaded, x: np.ndarray) -> list[np.ndarray]:
    import torch

    if not hasattr(loaded.model, "forward_with_offsets") or not getattr(loaded.model, "deformable", False):
        return []
    with torch.inference_mode():
        param = next(loaded.model.parameters())
        _, offsets = loaded.model.forward_with_offsets(torch.from_numpy(x)[None].to(param.device))
    return [o[0].float().cpu().numpy() for o in offsets]


def write_plots(folder: Path, kept: list[dict], rows: list[dict], loaded, rate: int, names, baselines) -> dict:
    """Spectrograms (input / output / reference, baselines, DTCN offsets) and improvement vs T60."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots = folder / "plots"
    plots.mkdir()
    figures: dict = {"spectrograms": [], "t60": None, "notes": []}
    for ex in kept:
        panels = [("input", "input (reverberant)"), ("output", "model output"), *[(b, b.upper()) for b in baselines]]
        panels.append(("reference", "reference"))
        offsets = _offsets(loaded, ex["model_input"])
        picked = sorted({0, len(offsets) // 2, len(offsets) - 1}) if offsets else []
        n_rows = len(panels) + len(picked)
        fig, axes = plt.subplots(n_rows, 1, figsize=(9, 1.7 * n_rows), sharex=True, squeeze=False)
        ref = ex["reference"]
        vmax = 20 * np.log10(np.abs(ref).max() * 8 + 1e-9)
        for ax, (key, title) in zip(axes[: len(panels), 0], panels, strict=True):
            _spectrogram(ax, ex[key], rate, title, vmax)
        X = loaded.model.get_config().get("X", 1)
        stride = loaded.model.get_config().get("L", 16) // 2
        for ax, b in zip(axes[len(panels) :, 0], picked, strict=True):
            off = offsets[b]  # [G * P, frames]
            taps = loaded.model.get_config().get("P", off.shape[0])
            per_tap = off.reshape(-1, taps, off.shape[-1]).mean(axis=0)
            t = np.arange(off.shape[-1]) * stride / loaded.sample_rate
            for k in range(taps):
                ax.plot(t, per_tap[k], lw=0.8, label=f"tap {k}")
            ax.set_ylabel("frames")
            ax.set_title(f"learned offsets, block {b} (dilation {2 ** (b % X)})", fontsize=9, loc="left")
            ax.legend(fontsize=7, loc="upper right", ncol=taps)
        axes[-1, 0].set_xlabel("time (s)")
        fig.suptitle(ex["id"], fontsize=10)
        fig.tight_layout()
        name = f"plots/spectrogram_{_safe(ex['id'])}.png"
        fig.savefig(folder / name, dpi=90)
        plt.close(fig)
        figures["spectrograms"].append((ex["id"], name))
    t60 = np.array([_num(r.get("t60_s")) for r in rows])
    if np.isfinite(t60).any():
        shown = [n for n in ("si_sdr", "pesq_nb", "estoi") if n in names]
        fig, axes = plt.subplots(1, len(shown), figsize=(4 * len(shown), 3.2), squeeze=False)
        for ax, n in zip(axes[0], shown, strict=True):
            for prefix, label, marker in [("", "model", "o"), *[(f"{b}_", b.upper(), "x") for b in baselines]]:
                y = np.array([_num(r.get(f"{prefix}delta_{n}")) for r in rows])
                ok = np.isfinite(t60) & np.isfinite(y)
                ax.scatter(t60[ok], y[ok], s=12, marker=marker, label=label)
            ax.axhline(0, color="grey", lw=0.8)
            ax.set_xlabel("T60 (s)")
            ax.set_ylabel(f"Δ {n} (output - input)")
        axes[0, 0].legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(folder / "plots/improvement_vs_t60.png", dpi=90)
        plt.close(fig)
        figures["t60"] = "plots/improvement_vs_t60.png"
    else:
        figures["notes"].append("no improvement-vs-T60 plot: the test set has no t60_s column (a manifest has one)")
    return figures


# --------------------------------------------------------------------------------------------
# HTML report


def _html_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def write_report(folder: Path, summary: dict, figures: dict, kept: list[dict], rate: int) -> None:
    """``report.html`` and the example audio it plays (``examples/<id>/*.wav``); relative links only."""
    from dereverb.data.audio import write_audio

    esc = html.escape
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>Evaluation: {esc(summary['model'])}</title>",
        "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse;margin:1em 0;font-size:90%}td,th{border:1px solid #bbb;padding:3px 7px}"
        "th{background:#eee}img{max-width:100%}audio{width:240px}.note{color:#734}</style></head><body>",
        f"<h1>Evaluation of {esc(summary['model'])}</h1><ul>",
        f"<li>Data: {esc(summary['data'])}</li>",
        f"<li>Reference: {esc(summary['reference'])} ({summary['reference_rate']} Hz)"
        + (f", and {esc(second)} in the {esc(second)}_* rows" if (second := summary.get("second_reference")) else "")
        + "; metrics at "
        f"{summary['metric_rate']} Hz; model ({esc(summary['model_class'])}) at {summary['model_rate']} Hz</li>",
        f"<li>Utterances: {summary['n_utterances']}; with at least one failed (missing) metric: "
        f"{summary['utterances_with_failures']}</li>",
        f"<li>Lengths: {esc(summary['length_policy'])}; utterances over that: {summary['length_warnings']}</li>",
    ]
    for b, settings in summary.get("baselines", {}).items():
        parts.append(f"<li>{esc(b.upper())}: " + esc(", ".join(f"{k}={v}" for k, v in settings.items())) + "</li>")
    parts += [f"<li class='note'>{esc(n)}</li>" for n in summary["notes"] + figures.get("notes", [])]
    parts.append("</ul>")
    for title, header, rows in summary_tables(summary):
        parts += [f"<h2>{esc(title)}</h2>", _html_table(header, rows)]
    for name, why in summary.get("flags", {}).items():
        parts.append(f"<p class='note'>† {esc(name)}: {esc(why)}.</p>")
    if figures.get("t60"):
        parts += ["<h2>Improvement against T60</h2>", f"<img src='{esc(figures['t60'])}' alt='improvement vs T60'>"]
    spectrograms = dict(figures.get("spectrograms", []))
    if kept:
        parts.append("<h2>Examples</h2>")
    for ex in kept:
        sub = Path("examples") / _safe(ex["id"])
        (folder / sub).mkdir(parents=True, exist_ok=True)
        roles = [k for k in ("input", "output", *summary.get("baselines", {}), "reference") if k in ex]
        cells = []
        for role in roles:
            if not np.isfinite(ex[role]).all():
                cells.append(f"<td>{esc(role)}: not finite</td>")
                continue
            write_audio(folder / sub / f"{role}.wav", ex[role], rate, subtype="FLOAT")
            src = (sub / f"{role}.wav").as_posix()
            cells.append(f"<td>{esc(role)}<br><audio controls preload='none' src='{esc(src)}'></audio></td>")
        parts += [f"<h3>{esc(ex['id'])}</h3>", "<table><tr>" + "".join(cells) + "</tr></table>"]
        if ex["id"] in spectrograms:
            parts.append(f"<img src='{esc(spectrograms[ex['id']])}' alt='spectrograms of {esc(ex['id'])}'>")
    parts += [
        "<p>Δ: output (or baseline) minus input, per utterance. Missing values are counted, never scored. "
        "Per-utterance scores: <a href='results.csv'>results.csv</a>; summary: "
        "<a href='summary.json'>summary.json</a>.</p>",
        "</body></html>",
    ]
    tmp = folder / "report.html.tmp"
    tmp.write_text("\n".join(parts), encoding="utf-8")
    os.replace(tmp, folder / "report.html")
