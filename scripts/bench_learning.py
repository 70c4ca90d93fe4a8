"""Learning curves at equal optimizer steps: which initialisation, loss and model learn fastest.

Every case is one run of the training recipe (``train.py``, its own process) from the same seed on
the same data (so the same batches in the same order), validated every ``--every`` optimizer steps
on the first ``--valid-items`` validation utterances against the recipe's target (``early`` by
default). The learning rate is held constant (no plateau halving), so the cases differ only in what
the table names. Prints one Markdown table: the unprocessed input's scores, then each case's at
every validation, and the seconds per step of each run (noisy when something else runs).

    python scripts/bench_learning.py                              # the four default cases, 600 steps
    OMP_NUM_THREADS=1 taskset -c 0 python scripts/bench_learning.py --steps 300 --cases dtcn-identity tcn-identity

Run folders go to ``results/bench_learning/<case>/`` (a re-run resumes and reuses finished ones).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from dereverb.training.records import read_train_log

ROOT = Path(__file__).resolve().parent.parent

# name: (primary config, overrides). All share model size (small preset, 4 ms window), data and seed.
CASES = {
    "dtcn-default": ("dtcn", ["model=dtcn_small", "model.init=default"]),
    "dtcn-identity": ("dtcn", ["model=dtcn_small"]),
    "dtcn-identity-stft": ("dtcn", ["model=dtcn_small", "loss=si_sdr_stft"]),
    "tcn-identity": ("tcn", ["model=tcn_small"]),
}
METRICS = ("pesq", "stoi", "estoi", "si_sdr")


def run_case(name: str, steps: int, every: int, valid_items: int, sample_rate: int, extra: list[str]) -> float:
    """Train one case (resuming a finished or interrupted run); returns the wall seconds of this call."""
    config, overrides = CASES[name]
    cmd = [
        sys.executable, str(ROOT / "train.py"), str(ROOT / "conf" / f"{config}.yaml"), *overrides,
        f"name=bench_learning/{name}", f"output_dir=results/bench_learning/{name}-{sample_rate // 1000}k",
        f"sample_rate={sample_rate}", f"model.L={sample_rate // 250}",
        f"run.epochs={steps // every}", f"run.limit_train_batches={every}", f"run.limit_valid_items={valid_items}",
        "optim.plateau_patience=1000000", "run.metric_jobs=1", "run.test=false", "run.export=false",
        "run.progress=false", "run.ckpt_interval_minutes=0", *extra,
    ]  # fmt: skip
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if done.returncode:
        tail = done.stderr.strip().splitlines()[-1:] or ["(no output)"]
        sys.exit(f"bench_learning: case {name} failed: {tail[0]}")
    return time.perf_counter() - start


def _fmt(row: dict, metric: str, prefix: str = "") -> str:
    key = next((k for k in (f"{prefix}{metric}", f"{prefix}{metric}_nb", f"{prefix}{metric}_wb") if k in row), None)
    if key is None:
        return ""
    return f"{row[key]:.2f}" if metric == "si_sdr" or "pesq" in key else f"{row[key]:.3f}"


def table(curves: dict[str, list[dict]], every: int, seconds: dict[str, float]) -> str:
    """One Markdown table: a row per validation, a column per case and metric."""
    names = list(curves)
    head = "| steps | " + " | ".join(f"{n}: PESQ / STOI / ESTOI / SI-SDR" for n in names) + " |"
    lines = [head, "|--:|" + "---|" * len(names)]
    first = next((c[0] for c in curves.values() if c), None)
    if first is not None:
        scores = " / ".join(_fmt(first, m, "input_") for m in METRICS)
        lines.append("| 0 (input) | " + " | ".join(scores for _ in names) + " |")
    for i in range(max((len(c) for c in curves.values()), default=0)):
        cells = [" / ".join(_fmt(c[i], m) for m in METRICS) if i < len(c) else "" for c in curves.values()]
        lines.append(f"| {(i + 1) * every} | " + " | ".join(cells) + " |")
    timed = [f"{seconds[n]:.2f}" if n in seconds else "(resumed)" for n in names]
    lines.append("| s/step (wall, validation included) | " + " | ".join(timed) + " |")
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    p.add_argument("--steps", type=int, default=600, help="optimizer steps per case (default 600)")
    p.add_argument("--every", type=int, default=100, help="validate every N steps (default 100)")
    p.add_argument("--valid-items", type=int, default=20, help="validation utterances scored (default 20)")
    p.add_argument("--sample-rate", type=int, default=8000, choices=(8000, 16000))
    p.add_argument("--overrides", nargs="*", default=[], help="more overrides for every case, e.g. optim.lr=2e-3")
    args = p.parse_args(argv)
    if args.steps < args.every or args.every < 1 or args.steps % args.every:
        p.error("--steps must be a positive multiple of --every")

    curves, seconds = {}, {}
    for name in args.cases:
        log = ROOT / "results" / "bench_learning" / f"{name}-{args.sample_rate // 1000}k" / "train_log.txt"
        before = len(read_train_log(log))
        wall = run_case(name, args.steps, args.every, args.valid_items, args.sample_rate, args.overrides)
        curves[name] = read_train_log(log)
        if before == 0:  # timed only when this call ran the whole case
            seconds[name] = wall / args.steps
        print(f"{name}: {len(curves[name])} validations, {wall:.0f} s", file=sys.stderr, flush=True)
    print(
        f"Validation ({args.valid_items} utterances, target: the recipe's), every {args.every} steps, "
        f"{args.sample_rate} Hz, same seed and batches; PESQ is {'wb' if args.sample_rate == 16000 else 'nb'}:\n"
    )
    print(table(curves, args.every, seconds))


if __name__ == "__main__":
    main()
