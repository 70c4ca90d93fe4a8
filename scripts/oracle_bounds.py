"""What removing only the late reverberation could give: the early target scored against the direct one.

    python scripts/oracle_bounds.py [--data data=demo] [--jobs N]

For every utterance of a test set with both targets (``direct``: the direct path; ``early``:
the direct path plus the first 50 ms of the room response), scores the unprocessed input and the
``early`` signal itself against ``direct`` with PESQ, STOI, ESTOI and SI-SDR (``dereverb.metrics``).
A method that removed all late reverberation perfectly and left the early reflections would
score what ``early`` scores; beating it on SI-SDR needs the early reflections removed as well.
Prints a Markdown table (means over the utterances; missing values counted).
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from dereverb.cli.common import print_error
from dereverb.data.audio import read_audio
from dereverb.errors import DataError
from dereverb.evaluation import load_test_set
from dereverb.metrics import Scorer, metric_names, summarize


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", nargs="+", default=["data=demo"], help="test set: paired folder with early/, manifest "
                   "CSV, or config overrides (default: data=demo)")  # fmt: skip
    p.add_argument("--sample-rate", type=int, default=8000, help="rate a dataset config is prepared at")
    p.add_argument("--jobs", type=int, default=None, help="metric worker processes (default: one per CPU)")
    args = p.parse_args(argv)
    try:
        test = load_test_set(args.data, "both", args.sample_rate)
        rate = None
        directs, inputs, earlies = [], [], []
        for u in test.utterances:
            direct = read_audio(u.targets["direct"])
            rate = rate or _rate(u.targets["direct"])
            x, e = read_audio(u.reverberant, rate), read_audio(u.targets["early"], rate)
            n = min(len(direct), len(x), len(e))
            directs.append(direct[:n])
            inputs.append(x[:n])
            earlies.append(e[:n])
    except DataError as err:
        return print_error(err)
    names = metric_names(rate)
    with Scorer(rate, args.jobs) as scorer:
        rows = {
            "unprocessed input": [s.row() for s in scorer.score_many(inputs, directs)],
            "early (direct + 50 ms), a perfect late-reverberation remover": [
                s.row() for s in scorer.score_many(earlies, directs)
            ],
        }
    print(f"Test set: {test.source}; {len(directs)} utterances at {rate} Hz; target: direct (the direct path)\n")
    print("| signal | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for label, r in rows.items():
        stats = summarize(r, names)
        cells = [f"{stats[n]['mean']:.3f}" + (f" ({stats[n]['missing']} missing)" if stats[n]["missing"] else "")
                 for n in names]  # fmt: skip
        print(f"| {label} | " + " | ".join(cells) + " |")
    base, best = rows.values()
    gap = np.mean([a["si_sdr"] - b["si_sdr"] for a, b in zip(best, base, strict=True)])
    print(f"\nSI-SDR of early minus input, mean per utterance: {gap:+.2f} dB")
    return 0


def _rate(path) -> int:
    from dereverb.data.audio import audio_info

    return audio_info(path).sample_rate


if __name__ == "__main__":
    sys.exit(main())
