#!/usr/bin/env python
"""Side-by-side benchmark of the TCN and DTCN models: training steps and inference speed.

Every measurement runs in its own fresh process (so that one model's allocator state cannot
help or hurt another), the rounds interleave the models, and the figures are medians.

* Training step: forward + negative SI-SDR + backward + Adam, a batch of 2 x 4 s at 8 kHz;
  TCN and DTCN at the default (published) size and the small CPU preset, and the default DTCN
  built on dc1d 0.2.0 layers (``unconstrained=True``, zero padding), the deformable layer the
  paper's released recipe used. Peak memory is the resident set size above the model's.
* "DTCN, plain taps": the default DTCN with offset predictors whose offsets are not applied (plain
  depthwise taps): the part of the DTCN/TCN ratio that the offset predictors cost by themselves.
* "DTCN small, pointwise offsets": the small DTCN whose offset predictors are a pointwise conv of the
  block's features alone (no depthwise conv, PReLU or norm): what the cheapest predictor would save.
  "DTCN small, plain taps" as above, at the small size.
* Inference: real-time factor (compute seconds per second of audio), batch 1, 10 s input,
  at 8 kHz (L=16) and 16 kHz (L=32).

The workers tune glibc's malloc as the training recipe does (``dereverb.allocator``);
``--glibc-defaults`` keeps glibc's defaults.

Usage:
    python scripts/bench_models.py
    python scripts/bench_models.py --glibc-defaults
    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4 python scripts/bench_models.py
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

SMALL = {"N": 256, "H": 256, "R": 2}  # dereverb.models.SIZES["small"]
TRAIN_CASES = {
    "TCN": ("TCN", {}),
    "DTCN": ("DTCN", {}),
    "DTCN (dc1d layers)": ("DTCN-dc1d", {}),
    "DTCN, plain taps": ("DTCN-plain-taps", {}),
    "TCN small": ("TCN", SMALL),
    "DTCN small": ("DTCN", SMALL),
    "DTCN small, plain taps": ("DTCN-plain-taps", SMALL),
    "DTCN small, pointwise offsets": ("DTCN-pointwise-offsets", SMALL),
}
INFER_CASES = {
    "TCN 8 kHz": ("TCN", {}, 8000),
    "DTCN 8 kHz": ("DTCN", {}, 8000),
    "DTCN, plain taps 8 kHz": ("DTCN-plain-taps", {}, 8000),
    "TCN 16 kHz": ("TCN", {"L": 32}, 16000),
    "DTCN 16 kHz": ("DTCN", {"L": 32}, 16000),
}


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _dc1d_dtcn(**kwargs):
    """The default DTCN with every deformable layer computed by dc1d 0.2.0 instead of ours."""
    from dc1d.nn import DeformConv1d as Dc1dConv
    from torch import nn

    from dereverb.models import DTCN
    from dereverb.nn import OffsetPredictor

    class Dc1dDeformable(nn.Module):
        def __init__(self, channels, kernel_size, dilation, norm):
            super().__init__()
            self.conv = Dc1dConv(channels, channels, kernel_size, padding="same", dilation=dilation,
                                 groups=channels, padding_mode="zeros", unconstrained=True)  # fmt: skip
            self.offset_predictor = OffsetPredictor(channels, kernel_size, dilation=dilation, norm=norm)

        def forward(self, x):
            offset, _ = self.offset_predictor(x)  # (B, K, L) -> dc1d's (B, 1, L, K)
            return self.conv(x, offset.transpose(1, 2).unsqueeze(1))

    class Dc1dDTCN(DTCN):
        def _depthwise(self, channels, kernel_size, dilation, causal, norm):
            return Dc1dDeformable(channels, kernel_size, dilation, norm)

    return Dc1dDTCN(**kwargs)


def _plain_taps_dtcn(**kwargs):
    """The default DTCN whose blocks predict their offsets but convolve with plain taps: the cost of
    the offset predictors alone, i.e. the DTCN/TCN ratio that a free deformable sampling would give."""
    from torch import nn

    from dereverb.models import DTCN
    from dereverb.models.tasnet import DepthwiseConv1d
    from dereverb.nn import OffsetPredictor

    class PlainTaps(nn.Module):
        def __init__(self, channels, kernel_size, dilation, causal, norm):
            super().__init__()
            self.conv = DepthwiseConv1d(channels, kernel_size, dilation, causal)
            self.offset_predictor = OffsetPredictor(channels, kernel_size, dilation=dilation, norm=norm)

        def forward(self, x):
            offset, _ = self.offset_predictor(x)
            return self.conv(x) + 0.0 * offset.sum()  # keeps the predictor in the backward pass

    class PlainTapsDTCN(DTCN):
        def _depthwise(self, channels, kernel_size, dilation, causal, norm):
            return PlainTaps(channels, kernel_size, dilation, causal, norm)

    return PlainTapsDTCN(**kwargs)


def _pointwise_offsets_dtcn(**kwargs):
    """A DTCN whose offset predictors are one zero-initialised pointwise conv of the block's features
    (no depthwise conv, PReLU or norm): the cheapest predictor the layer can have."""
    from torch import nn

    from dereverb.models import DTCN

    class Pointwise(nn.Conv1d):
        def forward(self, x):
            return super().forward(x), None

    class PointwiseOffsetsDTCN(DTCN):
        def _depthwise(self, channels, kernel_size, dilation, causal, norm):
            layer = super()._depthwise(channels, kernel_size, dilation, causal, norm)
            layer.offset_predictor = Pointwise(channels, kernel_size, 1)
            nn.init.zeros_(layer.offset_predictor.weight)
            nn.init.zeros_(layer.offset_predictor.bias)
            return layer

    return PointwiseOffsetsDTCN(**kwargs)


def _model(name: str, kwargs: dict):
    from dereverb.models import MODELS

    if name == "DTCN-dc1d":
        return _dc1d_dtcn(**kwargs)
    if name == "DTCN-plain-taps":
        return _plain_taps_dtcn(**kwargs)
    if name == "DTCN-pointwise-offsets":
        return _pointwise_offsets_dtcn(**kwargs)
    return MODELS[name](**kwargs)


def worker(args) -> None:
    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if not args.glibc_defaults:
        from dereverb.allocator import tune_glibc_malloc

        tune_glibc_malloc()  # what train.py, evaluate and dereverb-enhance do
    model = _model(args.model, json.loads(args.kwargs))
    if args.mode == "train":
        x = torch.randn(2, 4 * 8000)
        target = torch.randn(2, 4 * 8000)
        opt = torch.optim.Adam(model.parameters(), lr=1e-4)
        base = _rss_mb()

        def step():
            opt.zero_grad(set_to_none=True)
            est = model(x)
            # negative SI-SDR, the training loss
            t = target - target.mean(-1, keepdim=True)
            e = est - est.mean(-1, keepdim=True)
            s = (e * t).sum(-1, keepdim=True) / (t.pow(2).sum(-1, keepdim=True) + 1e-8) * t
            loss = -(10 * torch.log10(s.pow(2).sum(-1) / ((e - s).pow(2).sum(-1) + 1e-8) + 1e-8)).mean()
            loss.backward()
            opt.step()
    else:
        model.eval()
        x = torch.randn(1, 10 * args.rate)
        base = _rss_mb()

        def step():
            with torch.inference_mode():
                model(x)

    times = []
    for i in range(args.warmup + args.repeats):
        start = time.perf_counter()
        step()
        if i >= args.warmup:
            times.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - base
    print(json.dumps({"times": times, "peak_mb": peak}))


def _run(mode: str, model: str, kwargs: dict, rate: int, args) -> dict | None:
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--mode", mode, "--model", model]
    cmd += ["--kwargs", json.dumps(kwargs), "--rate", str(rate), "--threads", str(args.threads)]
    cmd += ["--repeats", str(args.repeats), "--warmup", str(args.warmup)]
    cmd += ["--glibc-defaults"] if args.glibc_defaults else []
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        print(f"  {model} {mode}: failed ({(proc.stderr.strip().splitlines() or ['?'])[-1]})", file=sys.stderr)
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=2, help="fresh processes per case")
    p.add_argument("--repeats", type=int, default=3, help="timed steps per process")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--skip", nargs="*", default=[], help="cases to leave out, e.g. 'DTCN (dc1d layers)'")
    p.add_argument("--only", nargs="*", default=None, help="run only these cases (their reference TCN too)")
    p.add_argument("--out", help="also write the Markdown tables to this file")
    p.add_argument(
        "--glibc-defaults",
        action="store_true",
        help="keep glibc's malloc defaults (by default the workers tune them as the recipe does)",
    )
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--mode", help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    p.add_argument("--kwargs", default="{}", help=argparse.SUPPRESS)
    p.add_argument("--rate", type=int, default=8000, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return worker(args)

    import torch

    tuned = sorted(k for k in os.environ if k.startswith("MALLOC_") or k == "GLIBC_TUNABLES")
    from dereverb.allocator import MMAP_THRESHOLD, preloaded_allocator

    allocator = preloaded_allocator()
    if allocator is None and tuned:
        allocator = "glibc with " + ", ".join(f"{k}={os.environ[k]}" for k in tuned)
    elif allocator is None and args.glibc_defaults:
        allocator = "default (glibc)"
    elif allocator is None:
        allocator = f"glibc tuned by dereverb.allocator (mmap threshold {MMAP_THRESHOLD >> 20} MiB, no trimming)"
    lines = [
        f"{args.threads} threads; torch {torch.__version__}; allocator {allocator}; "
        f"median of {args.rounds} processes x {args.repeats} steps",
        "",
        "Training step, batch 2 x 4 s at 8 kHz (forward + negative SI-SDR + backward + Adam):",
        "",
        "| model | parameters | step s | / TCN of its size | peak MB | / TCN's peak |",
        "|---|--:|--:|--:|--:|--:|",
    ]
    wanted = None if args.only is None else {*args.only, *("TCN small" if "small" in c else "TCN" for c in args.only)}
    unknown = sorted(set(args.only or ()) - set(TRAIN_CASES) - set(INFER_CASES))
    if unknown:
        p.error(f"--only: unknown case(s) {', '.join(map(repr, unknown))}")
    train = {k: v for k, v in TRAIN_CASES.items() if k not in args.skip and (wanted is None or k in wanted)}
    infer_cases = {k: v for k, v in INFER_CASES.items() if k not in args.skip and (wanted is None or k in wanted)}
    results: dict[str, list[dict]] = {k: [] for k in train}
    for _ in range(args.rounds):
        for case, (model, kwargs) in train.items():
            r = _run("train", model, kwargs, 8000, args)
            print(f"  train {case}: {r and [round(t, 2) for t in r['times']]}", file=sys.stderr, flush=True)
            if r:
                results[case].append(r)
    med = {
        k: (statistics.median(t for r in rs for t in r["times"]), max(r["peak_mb"] for r in rs))
        for k, rs in results.items()
        if rs
    }
    for case, (model, kwargs) in train.items():
        if case not in med:
            lines.append(f"| {case} | | failed | | | |")
            continue
        ref = "TCN small" if "small" in case else "TCN"
        n = sum(p.numel() for p in _model(model, kwargs).parameters())
        step, peak = med[case]
        ratio = f"{step / med[ref][0]:.2f}" if ref in med else ""
        mem = f"{peak / med[ref][1]:.2f}" if ref in med else ""
        lines.append(f"| {case} | {n / 1e6:.2f}M | {step:.2f} | {ratio} | {peak:.0f} | {mem} |")
    if "DTCN" in med and "DTCN (dc1d layers)" in med:
        lines += ["", f"dc1d-based DTCN step / our DTCN step: {med['DTCN (dc1d layers)'][0] / med['DTCN'][0]:.2f}"]

    if infer_cases:
        lines += ["", "Inference, batch 1, 10 s of audio:", "", "| model | RTF | / TCN at its rate |", "|---|--:|--:|"]
    infer: dict[str, list[float]] = {k: [] for k in infer_cases}
    for _ in range(args.rounds):
        for case, (model, kwargs, rate) in infer_cases.items():
            r = _run("infer", model, kwargs, rate, args)
            print(f"  infer {case}: {r and [round(t, 2) for t in r['times']]}", file=sys.stderr, flush=True)
            if r:
                infer[case] += r["times"]
    for case, (_, _, rate) in infer_cases.items():
        if not infer[case]:
            lines.append(f"| {case} | failed | |")
            continue
        rtf = statistics.median(infer[case]) / 10
        ref = f"TCN {rate // 1000} kHz"
        ratio = f"{statistics.median(infer[case]) / statistics.median(infer[ref]):.2f}" if infer.get(ref) else ""
        lines.append(f"| {case} | {rtf:.3f} | {ratio} |")
    print("\n".join(lines))
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
