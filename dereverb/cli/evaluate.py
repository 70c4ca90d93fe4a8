"""``dereverb-evaluate``: score a dereverberation model beside the unprocessed input (and WPE) on a test set.

    dereverb-evaluate --model results/dtcn/0 --data data=demo --out eval/dtcn --baselines wpe --report

Also ``python -m dereverb.cli.evaluate`` and ``python scripts/evaluate.py``. Prints the summary
(Markdown) when done; a bad argument, file or folder is one ``error:`` line and exit status 2.
See ``docs/evaluation.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Sequence

from dereverb.cli.common import add_device, add_quiet, command, setup_logging
from dereverb.errors import EvaluationError

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The options of ``dereverb-evaluate``."""
    p = argparse.ArgumentParser(
        prog="dereverb-evaluate",
        description="Score a dereverberation model beside the unprocessed input (and WPE) on a test set.",
        epilog="Example: dereverb-evaluate --model results/dtcn/0 --data data=demo --out eval/dtcn --baselines wpe "
        "--report. Documentation: docs/evaluation.md",
    )
    p.add_argument("--model", required=True, help="shipped model name, model folder, or training folder results/N/S")
    p.add_argument(
        "--data",
        required=True,
        nargs="+",
        metavar="DATA",
        help="paired folder (reverberant/, direct/, early/), manifest CSV, or config overrides: data=demo | "
        "data=whamr data.root=DIR [sample_rate=16000]",
    )
    p.add_argument("--out", required=True, help="output folder (must not exist unless --overwrite)")
    p.add_argument(
        "--target",
        default="auto",
        metavar="{auto,both,direct,early}",
        help="direct (the direct path), early (direct path + 50 ms), both (direct_* and early_* columns), or auto "
        "(default: both where the test set has early targets, else direct)",
    )
    p.add_argument("--reference", help=argparse.SUPPRESS)  # the old name of --target: refused with a hint
    p.add_argument("--baselines", nargs="*", default=[], metavar="NAME", help="classical baselines to score: wpe")
    p.add_argument("--batch-size", type=int, default=2, help="utterances per model call (default 2)")
    p.add_argument(
        "--pad-tolerance",
        type=float,
        default=0.0,
        help="padding an utterance may get to share a batch, as a fraction of its length (default 0: equal "
        "lengths only, outputs exactly as unbatched)",
    )
    p.add_argument("--jobs", type=int, default=None, help="metric worker processes (default: one per CPU)")
    add_device(p)
    p.add_argument("--save-audio", action="store_true", help="write the enhanced wavs (enhanced/, and wpe/)")
    p.add_argument("--plots", action="store_true", help="write figures to plots/ (needs matplotlib)")
    p.add_argument("--report", action="store_true", help="write report.html (implies --plots)")
    p.add_argument("--examples", type=int, default=3, help="utterances in the figures and the report (default 3)")
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N utterances")
    p.add_argument(
        "--overwrite", action="store_true", help="replace an earlier evaluation's output folder (nothing else)"
    )
    add_quiet(p)
    return p


@command
def main(argv: Sequence[str] | None = None) -> int:
    """The command line; returns the exit status (0, or 2 after one ``error:`` line)."""
    args = build_parser().parse_args(argv)
    setup_logging(args.quiet)
    if args.reference is not None:
        new = {"clean": "direct"}.get(args.reference, args.reference)
        raise EvaluationError(f"--reference {args.reference}: the option is now --target (--target {new})")
    from dereverb.allocator import tune_glibc_malloc
    from dereverb.evaluation import evaluate

    tune_glibc_malloc()  # as the training recipe: much faster CPU inference (DEREVERB_MALLOC=default opts out)
    result = evaluate(
        args.model,
        args.data,
        args.out,
        target=args.target,
        baselines=args.baselines,
        batch_size=args.batch_size,
        pad_tolerance=args.pad_tolerance,
        jobs=args.jobs,
        device=args.device,
        save_audio=args.save_audio,
        plots=args.plots,
        report=args.report,
        examples=args.examples,
        limit=args.limit,
        overwrite=args.overwrite,
        progress=not args.quiet,
    )
    with contextlib.suppress(OSError):
        print((result.out / "summary.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
