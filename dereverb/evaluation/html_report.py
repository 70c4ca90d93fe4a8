"""The HTML report of an evaluation (``report.html``): one page with the summary, the figures and audio players.

The page uses relative links only (``plots/``, ``examples/``, ``results.csv``), so the folder
opens in a browser from disk, anywhere, without a server or a network.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from dereverb.atomic import write_text
from dereverb.evaluation.summary import safe_name, summary_facts, summary_footnotes, summary_tables

if TYPE_CHECKING:
    from dereverb.evaluation.figures import Example

__all__ = ["html_table", "write_report"]

_STYLE = (
    "body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
    "table{border-collapse:collapse;margin:1em 0;font-size:90%}td,th{border:1px solid #bbb;padding:3px 7px}"
    "th{background:#eee}img{max-width:100%}audio{width:240px}.note{color:#734}"
)


def html_table(header: list[str], rows: list[list[str]]) -> str:
    """A ``<table>`` of text cells, every cell escaped.

    Example:
        >>> html_table(["a"], [["<b>"]])
        '<table><thead><tr><th>a</th></tr></thead><tbody><tr><td>&lt;b&gt;</td></tr></tbody></table>'
    """
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _example(folder: Path, ex: Example, rate: int, spectrogram: str | None) -> list[str]:
    """The section of one example: a player per signal (its wav written to ``examples/<id>/``), its figure."""
    from dereverb.data.audio import write_audio

    esc = html.escape
    sub = Path("examples") / safe_name(ex.id)
    (folder / sub).mkdir(parents=True, exist_ok=True)
    cells = []
    for name, x in ex.shown():
        if not np.isfinite(x).all():
            cells.append(f"<td>{esc(name)}: not finite</td>")
            continue
        write_audio(folder / sub / f"{name}.wav", x, rate, subtype="FLOAT")
        src = (sub / f"{name}.wav").as_posix()
        cells.append(f"<td>{esc(name)}<br><audio controls preload='none' src='{esc(src)}'></audio></td>")
    parts = [f"<h3>{esc(ex.id)}</h3>", "<table><tr>" + "".join(cells) + "</tr></table>"]
    if spectrogram:
        parts.append(f"<img src='{esc(spectrogram)}' alt='spectrograms of {esc(ex.id)}'>")
    return parts


def write_report(folder: Path, summary: dict, figures: dict, examples: list[Example], rate: int) -> None:
    """Write ``report.html`` and the example audio it plays (``examples/<id>/<signal>.wav``) into ``folder``.

    Args:
        folder: the evaluation folder being written (``results.csv`` and ``summary.json`` are linked).
        summary: the content of ``summary.json``.
        figures: what :func:`dereverb.evaluation.figures.write_plots` returned.
        examples: the example utterances' signals.
        rate: their rate.
    """
    esc = html.escape
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>Evaluation: {esc(summary['model'])}</title>",
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>Evaluation of {esc(summary['model'])}</h1><ul>",
        *[f"<li>{esc(fact)}</li>" for fact in summary_facts(summary)],
        *[f"<li class='note'>{esc(note)}</li>" for note in figures.get("notes", [])],
        "</ul>",
    ]
    for title, header, rows in summary_tables(summary):
        parts += [f"<h2>{esc(title)}</h2>", html_table(header, rows)]
    footnotes = summary_footnotes(summary)
    parts += [f"<p class='note'>{esc(note)}</p>" for note in footnotes[:-1]]
    if figures.get("t60"):
        parts += ["<h2>Improvement against T60</h2>", f"<img src='{esc(figures['t60'])}' alt='improvement vs T60'>"]
    spectrograms = dict(figures.get("spectrograms", []))
    if examples:
        parts.append("<h2>Examples</h2>")
    for ex in examples:
        parts += _example(folder, ex, rate, spectrograms.get(ex.id))
    parts += [
        f"<p>{esc(footnotes[-1])} Per-utterance scores: <a href='results.csv'>results.csv</a>; summary: "
        "<a href='summary.json'>summary.json</a>.</p>",
        "</body></html>",
    ]
    write_text(folder / "report.html", "\n".join(parts))
