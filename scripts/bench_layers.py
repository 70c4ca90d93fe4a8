#!/usr/bin/env python
"""Side-by-side timings of the CPU fast paths against the PyTorch layers they replace.

* ``depthwise_conv1d`` (backward pass from forward convolutions) against ``F.conv1d``'s own
  backward, forward + backward, at the dilations of one TasNet repeat (1 ... 128);
* ``prelu`` (one shared slope) against ``torch.prelu``, forward + backward.

Shapes are those of a TasNet block at the default size: ``[2, 512, 4000]`` (batch 2 x 4 s at
8 kHz, H=512). The two candidates are called alternately; the figures are medians and the ratio is
PyTorch's time over ours.

glibc's malloc is tuned as the training recipe tunes it (``dereverb.allocator``) unless
``--glibc-defaults`` is given: with glibc's defaults, page faults on fresh tensors cost more than
either layer's arithmetic.

Usage:
    python scripts/bench_layers.py
    python scripts/bench_layers.py --glibc-defaults
    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4 python scripts/bench_layers.py
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from dereverb.allocator import tune_glibc_malloc
from dereverb.ops import depthwise_conv1d, prelu


def _pair_ms(first, second, rounds: int) -> tuple[float, float]:
    """Median milliseconds of two callables, called alternately after three warm-up calls each."""
    times: tuple[list, list] = ([], [])
    for i in range(3 + rounds):
        for fn, out in zip((first, second), times, strict=True):
            start = time.perf_counter()
            fn()
            if i >= 3:
                out.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times[0]), 1e3 * statistics.median(times[1])


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=15, help="timed calls per candidate, after 3 warm-up calls")
    p.add_argument("--shape", type=int, nargs=3, default=(2, 512, 4000), metavar=("B", "C", "T"))
    p.add_argument("--glibc-defaults", action="store_true", help="do not tune glibc's malloc as the recipe does")
    args = p.parse_args(argv)
    if not args.glibc_defaults:
        tune_glibc_malloc()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    batch, channels, length = args.shape
    x = torch.randn(batch, channels, length, requires_grad=True)
    grad = torch.randn(batch, channels, length)
    malloc = "glibc defaults" if args.glibc_defaults else "malloc tuned by dereverb.allocator unless preloaded"
    shape = list(args.shape)
    print(f"{args.threads} threads; torch {torch.__version__}; {malloc}; shape {shape}; median of {args.rounds}")
    print("\n| layer, forward + backward | PyTorch ms | ours ms | PyTorch / ours |\n|---|--:|--:|--:|")
    conv = torch.nn.Conv1d(channels, channels, 3, groups=channels)
    for dilation in (1, 2, 4, 8, 16, 32, 64, 128):

        def plain(d=dilation):
            F.conv1d(x, conv.weight, conv.bias, padding=d, dilation=d, groups=channels).backward(grad)

        def ours(d=dilation):
            depthwise_conv1d(x, conv.weight, conv.bias, (d, d), d).backward(grad)

        t_plain, t_ours = _pair_ms(plain, ours, args.rounds)
        print(f"| depthwise conv K=3, dilation {dilation} | {t_plain:.2f} | {t_ours:.2f} | {t_plain / t_ours:.2f} |")
    slope = torch.tensor([0.25], requires_grad=True)

    def plain_prelu():
        torch.prelu(x, slope).backward(grad)

    def our_prelu():
        prelu(x, slope).backward(grad)

    t_plain, t_ours = _pair_ms(plain_prelu, our_prelu, args.rounds)
    print(f"| PReLU, one slope | {t_plain:.2f} | {t_ours:.2f} | {t_plain / t_ours:.2f} |")


if __name__ == "__main__":
    main()
