"""Model cards: every figure of a card's results table comes back from the card's own evaluation
command, and the READMEs quote the cards as they are."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CARDS = sorted(
    p.parent.relative_to(ROOT)
    for pattern in ("recipes/demo/candidates/*/MODEL_CARD.md", "dereverb/checkpoints/*/MODEL_CARD.md")
    for p in ROOT.glob(pattern)
)
TARGETS = {"early (direct + 50 ms)": "early", "direct path": "direct"}
ROW = re.compile(r"^\| (early \(direct \+ 50 ms\)|direct path) \| (\w+) \| (.*) \|$", re.M)


def card_rows(folder: Path) -> dict[tuple[str, str], list[str]]:
    """``(target, metric) -> [input, model, Δ model - input [CI], WPE, Δ WPE - input]`` of a card's table."""
    text = (ROOT / folder / "MODEL_CARD.md").read_text()
    return {(TARGETS[t], m): [c.strip() for c in cells.split(" | ")] for t, m, cells in ROW.findall(text)}


def card_command(folder: Path) -> list[str]:
    """The card's evaluation command, split into arguments."""
    text = (ROOT / folder / "MODEL_CARD.md").read_text()
    (line,) = re.findall(r"^python scripts/evaluate\.py .*$", text, re.M)
    return shlex.split(line)


def _option(argv: list[str], name: str) -> list[str]:
    i = argv.index(name) + 1
    values = []
    while i < len(argv) and not argv[i].startswith("--"):
        values.append(argv[i])
        i += 1
    return values


def _within_last_digit(cell: str, value: float) -> bool:
    """``cell`` (a figure rounded for the card) is ``value`` rounded, give or take one unit of its last digit."""
    digits = len(cell.split(".")[1]) if "." in cell else 0
    return abs(float(cell) - value) <= 1.01 * 10**-digits


def test_the_candidates_have_cards():
    assert {c.name for c in CARDS} >= {"dtcn-8k", "dtcn-16k"}


@pytest.mark.parametrize("folder", CARDS, ids=str)
def test_a_card_evaluates_its_own_folder_on_both_targets(folder):
    argv = card_command(folder)
    assert _option(argv, "--model") == [str(folder)]
    assert _option(argv, "--baselines") == ["wpe"]
    rows = card_rows(folder)
    assert {t for t, _ in rows} == {"early", "direct"}
    assert {m for _, m in rows} >= {"stoi", "estoi", "si_sdr"}
    assert all(len(cells) == 5 for cells in rows.values())


@pytest.mark.parametrize("readme", ["README.md", "recipes/demo/README.md"])
def test_readme_tables_quote_the_cards(readme):
    """Every early/direct row of a README table is the row of the card whose ``--model`` precedes it."""
    text = (ROOT / readme).read_text()
    quoted = 0
    for match in ROW.finditer(text):
        models = re.findall(r"--model (\S+)", text[: match.start()])
        assert models, f"{readme}: a results row with no --model command before it"
        target, metric, cells = TARGETS[match[1]], match[2], [c.strip() for c in match[3].split(" | ")]
        card = card_rows(Path(models[-1]))[(target, metric)]
        inp, model, delta, wpe = cells[0], cells[1], cells[2].split(" [")[0], cells[3]
        assert [inp, model, delta, wpe] == [card[0], card[1], card[2].split(" [")[0], card[3]], (readme, target, metric)
        quoted += 1
    assert quoted >= 8


@pytest.mark.slow
@pytest.mark.parametrize("folder", CARDS, ids=str)
def test_card_figures_come_back_from_its_command(folder, tmp_path):
    """The card's evaluation, run again on freshly prepared data: every input, model and WPE mean and
    every Δ agrees with the card up to the rounding of its last digit."""
    from dereverb.evaluation import evaluate

    argv = card_command(folder)
    data = [*_option(argv, "--data"), f"data.save_folder={tmp_path / 'data'}"]
    summary = evaluate(ROOT / folder, data, tmp_path / "eval", baselines=["wpe"], progress=False).summary
    cols, rows = summary["columns"], card_rows(folder)
    for (target, metric), cells in rows.items():
        c = f"{target}_{metric}"
        expected = [cols[f"input_{c}"], cols[c], cols[f"delta_{c}"], cols[f"wpe_{c}"], cols[f"wpe_delta_{c}"]]
        for cell, stats in zip(cells, expected, strict=True):
            assert _within_last_digit(cell.split(" [")[0], stats["mean"]), (folder, c, cell, stats["mean"])
