#!/usr/bin/env python
"""Can one data-loading worker keep up with training? Demo training pairs per second vs model steps.

* Data: training items of the default demo data at 8 kHz (dynamic mixing: a random 4 s crop of a
  speech-pack utterance convolved with a random RIR of the training bank), read one after the other
  in this process with one thread, as one DataLoader worker would; pairs per second over
  ``--items`` items, median of ``--rounds`` rounds. The demo data is prepared first if needed.
* Model: the default DTCN (``preset("default", 8000)``), a batch of 2 x 4 s at 8 kHz, forward +
  negative SI-SDR + backward + Adam with ``--threads`` threads; median step time over ``--steps``
  steps after one warm-up step, turned into the pairs per second the model consumes.

Prints both rates and their ratio (the data side should be at least 5x faster).

Usage:
    python scripts/bench_data.py [--items 200] [--rounds 3] [--steps 3] [--out bench_data.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time


def data_rate(items: int, rounds: int, progress: bool) -> dict:
    import torch

    from dereverb.config import compose
    from dereverb.data import build_datasets, prepare

    cfg = compose("prepare", ["data=demo", "sample_rate=8000"])
    start = time.perf_counter()
    manifests = prepare(cfg.data, cfg.sample_rate, progress=progress)
    prepare_s = time.perf_counter() - start
    train = build_datasets(cfg.data, cfg.sample_rate, progress=progress)["train"]
    torch.set_num_threads(1)
    torch.manual_seed(0)
    segment = round(cfg.data.segment_s * cfg.sample_rate)
    rates, full = [], 0
    for r in range(rounds):
        start = time.perf_counter()
        for i in range(items):
            item = train[(r * items + i) % len(train)]
            full += len(item["reverberant"]) == segment
        rates.append(items / (time.perf_counter() - start))
    return {
        "prepared_folder": str(manifests["train"].parent),
        "prepare_call_s": round(prepare_s, 2),
        "train_utterances": len(train),
        "pairs_per_s_rounds": [round(x, 1) for x in rates],
        "pairs_per_s": statistics.median(rates),
        "full_segments": f"{full}/{items * rounds}",
    }


def model_rate(steps: int, threads: int) -> dict:
    import torch

    from dereverb.models import DTCN, preset

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = DTCN(**preset("default", 8000))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, target = torch.randn(2, 32000), torch.randn(2, 32000)

    def step():
        opt.zero_grad(set_to_none=True)
        est = model(x)
        t = target - target.mean(-1, keepdim=True)
        e = est - est.mean(-1, keepdim=True)
        s = (e * t).sum(-1, keepdim=True) / (t.pow(2).sum(-1, keepdim=True) + 1e-8) * t
        loss = -(10 * torch.log10(s.pow(2).sum(-1) / ((e - s).pow(2).sum(-1) + 1e-8) + 1e-8)).mean()
        loss.backward()
        opt.step()

    step()  # warm-up
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    median = statistics.median(times)
    return {"step_s_rounds": [round(t, 2) for t in times], "step_s": median, "pairs_per_s": 2 / median}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--items", type=int, default=200, help="training items per round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=3, help="timed model steps (after one warm-up)")
    p.add_argument("--threads", type=int, default=2, help="threads of the model step")
    p.add_argument("--quiet", action="store_true", help="no progress bars while preparing")
    p.add_argument("--out", help="also write the figures as JSON to this file")
    args = p.parse_args(argv)

    import torch

    data = data_rate(args.items, args.rounds, not args.quiet)
    model = model_rate(args.steps, args.threads)
    ratio = data["pairs_per_s"] / model["pairs_per_s"]
    lines = [
        f"torch {torch.__version__}; demo data at 8 kHz in {data['prepared_folder']}",
        f"data (1 worker, 1 thread): {data['pairs_per_s']:.1f} training pairs/s (4 s, dynamic mixing), median of "
        f"{args.rounds} rounds x {args.items} items {data['pairs_per_s_rounds']}; full 4 s segments: "
        f"{data['full_segments']}",
        f"model (DTCN default, batch 2 x 4 s, fwd+bwd+Adam, {args.threads} threads): {model['step_s']:.2f} s/step "
        f"{model['step_s_rounds']} = {model['pairs_per_s']:.2f} pairs/s",
        f"ratio data / model: {ratio:.1f}x ({'OK' if ratio >= 5 else 'BELOW'} the 5x target)",
    ]
    print("\n".join(lines))
    if args.out:
        from dereverb.atomic import write_text

        write_text(
            args.out, json.dumps({"data": data, "model": model, "ratio": ratio, "threads": args.threads}, indent=2)
        )
    return 0 if ratio >= 5 else 1


if __name__ == "__main__":
    raise SystemExit(main())
