#!/usr/bin/env python
"""Side-by-side benchmark of 1-D deformable convolution implementations (shape S1 of the DTCN).

Times, in one run and on the same thread count, ``nn.Conv1d`` (the floor, no offsets), our
``dereverb.ops.deform_conv1d``, dc1d 0.2.0 (``padding_mode="zeros"``, ``unconstrained=True``:
the same sampling rule as ours) and, when installed, torchvision's ``deform_conv2d`` used as
1-D (height 1). Each implementation and configuration runs in its own fresh process, so that
one's allocator state cannot help or hurt another; the rounds interleave the implementations.
Printed: medians of forward and forward+backward (``y.backward(g)`` with a random upstream
gradient, parameter gradients reset to ``None`` every step, as in training), ratios to
``nn.Conv1d`` and to dc1d, and peak memory (resident set size above the inputs).

Usage:
    python scripts/bench_deform_conv1d.py                    # S1, 2 threads, 3 rounds
    python scripts/bench_deform_conv1d.py --compile          # also torch.compile(deform_conv1d)
    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4 python scripts/bench_deform_conv1d.py
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

IMPLS = ("conv", "ours", "dc1d", "torchvision", "ours+compile")


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _build(impl: str, args, dilation: int, offset_groups: int):
    """Return ``(fn, tensors)``: ``fn()`` runs the forward and returns the output."""
    import torch

    b, c, length, k = args.batch, args.channels, args.length, args.kernel
    x = torch.randn(b, c, length, requires_grad=True)
    weight = (torch.randn(c, 1, k) / k**0.5).requires_grad_()
    bias = torch.zeros(c, requires_grad=True)
    # Offsets like a trained DTCN's: mostly within a few samples.
    offset = (torch.randn(b, offset_groups * k, length) * args.offset_std).requires_grad_()
    params = [x, weight, bias]
    pad = dilation * (k - 1) // 2

    if impl == "conv":
        import torch.nn.functional as F

        return (lambda: F.conv1d(x, weight, bias, padding="same", dilation=dilation, groups=c)), params
    if impl in ("ours", "ours+compile"):
        from dereverb.ops import deform_conv1d

        fn = torch.compile(deform_conv1d) if impl == "ours+compile" else deform_conv1d
        return (lambda: fn(x, offset, weight, bias, 1, "same", dilation, c)), [*params, offset]
    if impl == "dc1d":
        from dc1d.nn import DeformConv1d

        layer = DeformConv1d(
            c, c, k, padding="same", dilation=dilation, groups=c, padding_mode="zeros", unconstrained=True
        )
        with torch.no_grad():
            layer.weight.copy_(weight)
            layer.bias.zero_()
        # dc1d wants offsets as (B, offset_groups, L_out, K)
        off = offset.detach().view(b, offset_groups, k, length).transpose(2, 3).contiguous().requires_grad_()
        return (lambda: layer(x, off)), [x, off, *layer.parameters()]
    if impl == "torchvision":
        from torchvision.ops import deform_conv2d

        # (dy, dx) pairs per tap; dy = 0 on a height-1 "image".
        off = torch.zeros(b, offset_groups * k, 2, 1, length)
        off[:, :, 1, 0] = offset.detach().view(b, offset_groups * k, length)
        off = off.view(b, offset_groups * 2 * k, 1, length).requires_grad_()
        w4 = weight.detach().view(c, 1, 1, k).requires_grad_()
        x4 = x.detach().view(b, c, 1, length).requires_grad_()
        return (lambda: deform_conv2d(x4, off, w4, bias, padding=(0, pad), dilation=(1, dilation))), [x4, off, w4]
    raise ValueError(f"unknown implementation {impl!r}")


def worker(args) -> None:
    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    fn, tensors = _build(args.impl, args, args.dilation, args.offset_groups)
    with torch.no_grad():
        grad = torch.randn_like(fn())
    base = _rss_mb()

    def step(backward: bool) -> float:
        for t in tensors:
            t.grad = None
        start = time.perf_counter()
        y = fn()
        if backward:
            y.backward(grad)
        return (time.perf_counter() - start) * 1e3

    start = time.perf_counter()
    step(True)  # first call: compilation, if any
    first = (time.perf_counter() - start) * 1e3
    for _ in range(args.warmup):
        step(True)
    fwd = [step(False) for _ in range(args.repeats)]
    fwdbwd = [step(True) for _ in range(args.repeats)]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - base
    print(json.dumps({"fwd": fwd, "fwdbwd": fwdbwd, "peak_mb": peak, "first_ms": first}))


def _run_worker(impl: str, dilation: int, offset_groups: int, args) -> dict | None:
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--impl", impl]
    cmd += ["--dilation", str(dilation), "--offset-groups", str(offset_groups)]
    for name in ("batch", "channels", "length", "kernel", "threads", "repeats", "warmup", "offset_std"):
        cmd += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        print(f"  {impl}: failed ({last})", file=sys.stderr)
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _available(impl: str) -> bool:
    import importlib.util

    module = {"dc1d": "dc1d", "torchvision": "torchvision"}.get(impl)
    return module is None or importlib.util.find_spec(module) is not None


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--channels", type=int, default=512)
    p.add_argument("--length", type=int, default=4000)
    p.add_argument("--kernel", type=int, default=3)
    p.add_argument("--dilations", type=int, nargs="+", default=[1, 64])
    p.add_argument("--offset-groups", type=int, nargs="+", default=None, help="default: 1 and --channels")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3, help="fresh processes per implementation and configuration")
    p.add_argument("--repeats", type=int, default=5, help="timed steps per process")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--offset-std", type=float, default=1.0)
    p.add_argument("--impls", nargs="+", default=["conv", "ours", "dc1d", "torchvision"], choices=IMPLS)
    p.add_argument("--compile", action="store_true", help="also time torch.compile(deform_conv1d)")
    p.add_argument("--out", help="also write the Markdown table to this file")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--impl", help=argparse.SUPPRESS)
    p.add_argument("--dilation", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        args.offset_groups = args.offset_groups[0]
        return worker(args)

    import torch

    impls = [i for i in args.impls if _available(i)] + (["ours+compile"] if args.compile else [])
    skipped = sorted(set(args.impls) - set(impls))
    groups = args.offset_groups or [1, args.channels]
    allocator = "tcmalloc" if "tcmalloc" in os.environ.get("LD_PRELOAD", "") else "default (glibc)"
    lines = [
        f"S1: B={args.batch}, C={args.channels}, L={args.length}, K={args.kernel}, depthwise, padding 'same'; "
        f"{args.threads} threads; torch {torch.__version__}; allocator {allocator}; "
        f"median of {args.rounds} processes x {args.repeats} steps"
        + (f"; not installed: {', '.join(skipped)}" if skipped else ""),
        "",
        "| dilation | offsets | implementation | forward ms | fwd+bwd ms | fwd+bwd / conv | dc1d / this | peak MB |",
        "|--:|---|---|--:|--:|--:|--:|--:|",
    ]
    print("\n".join(lines), flush=True)
    for dilation in args.dilations:
        # runs[offset_groups][impl]: the plain convolution has no offsets, so it is timed once
        # per dilation and shared by the rows; the rounds interleave the implementations.
        runs: dict[int, dict[str, list[dict]]] = {og: {i: [] for i in impls} for og in groups}
        for _ in range(args.rounds):
            for og in groups:
                for impl in impls:
                    if impl == "conv" and og != groups[0]:
                        continue
                    result = _run_worker(impl, dilation, og, args)
                    if result is not None:
                        runs[og][impl].append(result)
        for og in groups:
            runs[og]["conv"] = runs[groups[0]]["conv"]
            med = {
                i: (
                    statistics.median(t for r in rs for t in r["fwd"]),
                    statistics.median(t for r in rs for t in r["fwdbwd"]),
                    max(r["peak_mb"] for r in rs),
                )
                for i, rs in runs[og].items()
                if rs
            }
            label = "shared (1)" if og == 1 else f"per channel ({og})" if og == args.channels else str(og)
            for impl in impls:
                if impl not in med:
                    lines.append(f"| {dilation} | {label} | {impl} | failed | | | | |")
                else:
                    fwd, fb, peak = med[impl]
                    vs_conv = f"{fb / med['conv'][1]:.2f}x" if "conv" in med else ""
                    vs_dc1d = f"{med['dc1d'][1] / fb:.2f}x" if "dc1d" in med else ""
                    cells = [str(dilation), label, impl, f"{fwd:.0f}", f"{fb:.0f}", vs_conv, vs_dc1d, f"{peak:.0f}"]
                    lines.append("| " + " | ".join(cells) + " |")
                print(lines[-1], flush=True)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
