"""The training recipe's throughput next to the bare model's: how much the recipe itself costs.

Times, in one process and interleaved, (a) the recipe's own training steps: SpeechBrain's
``fit_batch`` of the ``DereverbBrain`` that ``python train.py conf/dtcn.yaml`` builds, fed by its
real data loader (dynamic mixing of the demo data, loader workers as configured), the wait for each
batch included; and (b) the bare model: forward + backward + Adam on a random batch of the same
shape, random, and (c) the bare model on one real batch of the recipe's loader (speech has silences
and a different spectrum: data-dependent costs such as denormal numbers show up here). Prints the
medians and their ratio (the recipe should stay within 15 % of the bare model).

    python scripts/bench_recipe.py                        # model=dtcn_small, the demo data at 8 kHz
    python scripts/bench_recipe.py --overrides model=dtcn run.batch_size=2
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="dtcn", help="primary config in conf/ (default: dtcn)")
    p.add_argument("--model", default="dtcn_small", help="model= option (default: dtcn_small)")
    p.add_argument("--steps", type=int, default=6, help="timed steps per round and side")
    p.add_argument("--rounds", type=int, default=2, help="rounds of (recipe steps, bare steps)")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps per side before the rounds")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--overrides", nargs="*", default=[], help="more Hydra overrides, e.g. run.batch_size=2")
    p.add_argument("--out", help="also write the result to this Markdown file")
    args = p.parse_args(argv)

    import speechbrain as sb
    import torch
    from hydra.utils import instantiate

    from dereverb.config import compose
    from dereverb.losses import NegSISDR
    from dereverb.training.experiment import build

    torch.set_num_threads(args.threads)
    total = args.warmup + args.rounds * args.steps
    with tempfile.TemporaryDirectory(prefix="bench_recipe.") as tmp:
        cfg = compose(
            args.config,
            [
                f"model={args.model}",
                f"output_dir={tmp}/run",
                "run.progress=false",
                "run.ckpt_interval_minutes=0",
                f"run.limit_train_batches={total}",
                *args.overrides,
            ],
        )
        exp = build(cfg)
        brain = exp.brain
        brain.on_fit_start()
        brain.on_stage_start(sb.Stage.TRAIN, 1)
        brain.modules.train()
        batches = iter(brain.make_dataloader(exp.train_set, stage=sb.Stage.TRAIN, **exp.train_loader))

        def recipe_step() -> float:
            start = time.perf_counter()
            batch = next(batches)
            brain.fit_batch(batch)
            return time.perf_counter() - start

        bare = instantiate(cfg.model)
        bare.train()
        opt = torch.optim.Adam(bare.parameters(), lr=cfg.optim.lr)
        loss_fn = NegSISDR()
        shape = (cfg.run.batch_size, round(cfg.data.segment_s * cfg.sample_rate))
        x, y = torch.randn(shape), torch.randn(shape)

        real = next(iter(brain.make_dataloader(exp.train_set, stage=sb.Stage.TRAIN, **exp.train_loader)))
        xr, yr = real.reverberant.data, real.target.data

        def bare_step(inputs=x, targets=y) -> float:
            start = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            loss_fn(bare(inputs), targets).mean().backward()
            opt.step()
            return time.perf_counter() - start

        for _ in range(args.warmup):
            recipe_step()
            bare_step()
        times: dict[str, list[float]] = {"recipe": [], "bare": [], "bare, one real batch": []}
        for r in range(args.rounds):
            times["recipe"] += [recipe_step() for _ in range(args.steps)]
            times["bare"] += [bare_step() for _ in range(args.steps)]
            times["bare, one real batch"] += [bare_step(xr, yr) for _ in range(args.steps)]
            print(f"round {r + 1}: " + ", ".join(f"{k} {v[-args.steps:]}" for k, v in times.items()),
                  file=sys.stderr, flush=True)  # fmt: skip
        brain.on_fit_end()

    med = {k: statistics.median(v) for k, v in times.items()}
    lines = [
        f"torch {torch.__version__}, {args.threads} threads; config {args.config}, model={args.model}, "
        f"batch {shape[0]} x {cfg.data.segment_s} s at {cfg.sample_rate} Hz, data={cfg.data.kind}, "
        f"loader workers {cfg.run.num_workers}; {args.rounds} rounds x {args.steps} steps per side",
        "",
        "| side | median s/step | min | max |",
        "|---|--:|--:|--:|",
        *(f"| {k} | {med[k]:.3f} | {min(v):.3f} | {max(v):.3f} |" for k, v in times.items()),
        "",
        f"recipe / bare: {med['recipe'] / med['bare']:.3f} (target <= 1.15); "
        f"recipe / bare on a real batch: {med['recipe'] / med['bare, one real batch']:.3f}",
    ]
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
