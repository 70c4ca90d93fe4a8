"""Inference benchmark: real-time factor of each shipped model, and peak RAM on a 1-hour file.

    python scripts/bench_inference.py [--models dtcn-8k dtcn-16k] [--threads 2] [--runs 5] [--hours 1]

* Real-time factor (seconds of compute per second of audio, lower is faster) of
  ``Dereverberator.enhance`` on a 10 s reverberant recording at the model's rate, batch 1, on
  ``--threads`` CPU threads: the median of ``--runs`` runs after a warm-up, side by side with
  single-channel WPE (``dereverb.baselines.wpe``, the evaluation's settings) on the same signal.
* Chunked versus whole: SI-SDR of the segment-wise output (default 15 s segments, one pass and
  the default two passes for gLN) against the whole-signal output on ``--agreement-seconds`` of
  test speech in the same room.
* Peak RAM: ``dereverb-enhance`` on a ``--hours``-long 16 kHz mono PCM_16 file (speech from the
  shipped pack in a simulated room, repeated) run as a child process; its peak resident set size
  (``ru_maxrss``) and wall time, so long-file processing (segments, two passes for gLN) is
  measured end to end. ``--hours 0`` skips it.

Prints a Markdown table. Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from dereverb.allocator import tune_glibc_malloc
from dereverb.baselines import wpe
from dereverb.data import rooms, speech_pack
from dereverb.data.audio import read_audio
from dereverb.inference import Dereverberator
from dereverb.metrics import si_sdr
from dereverb.pretrained import list_pretrained


def _speech(rate: int, seconds: float) -> np.ndarray:
    """Test-split speech of the shipped pack at ``rate`` in a simulated 0.6 s room, ``seconds`` long."""
    out, total = [], 0
    for f in speech_pack.load_manifest("test", min_sample_rate=rate):
        x = read_audio(f.path, rate, resample=True)
        out.append(x)
        total += len(x)
        if total >= seconds * rate:
            break
    x = np.concatenate(out)[: int(seconds * rate)]
    rir = rooms.simulate_rir(
        rooms.RoomConfig(t60_range=(0.6, 0.6), distance_range=(2.0, 2.0)), rate, np.random.default_rng(3)
    )
    y = rooms.reverberate(x, rir, "direct")[0]
    return (0.5 * y / np.abs(y).max()).astype(np.float32)


def _median_time(fn, runs: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _long_file(path: Path, hours: float, rate: int = 16000) -> float:
    """Write a ``hours``-long mono PCM_16 file block by block; returns its duration in seconds."""
    block = _speech(rate, 60.0)
    frames = int(hours * 3600 * rate)
    with sf.SoundFile(str(path), "w", rate, 1, subtype="PCM_16") as f:
        written = 0
        while written < frames:
            n = min(len(block), frames - written)
            f.write(block[:n])
            written += n
    return frames / rate


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="*", default=None, help="shipped names or model folders (default: all shipped)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--seconds", type=float, default=10.0, help="length of the real-time-factor input")
    p.add_argument("--hours", type=float, default=1.0, help="length of the peak-RAM file (0 skips it)")
    p.add_argument(
        "--agreement-seconds", type=float, default=200.0, help="signal of the chunked-vs-whole check (0 skips)"
    )
    args = p.parse_args()
    models = args.models if args.models is not None else list_pretrained()
    if not models:
        print("error: no shipped model in this checkout and none given with --models", file=sys.stderr)
        return 2
    tune_glibc_malloc()
    torch.set_num_threads(args.threads)
    print(f"# bench_inference: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"{args.threads} threads, torch {torch.__version__}, median of {args.runs} runs\n")  # fmt: skip
    print(f"| model | rate | RTF model ({args.seconds:g} s, batch 1) | RTF WPE | model / WPE |")
    print("|---|---|---|---|---|")
    wpe_rtf: dict[int, float] = {}
    for name in models:
        d = Dereverberator.from_pretrained(name)
        x = _speech(d.sample_rate, args.seconds)
        seconds = len(x) / d.sample_rate
        rtf = _median_time(lambda d=d, x=x: d.enhance(x, d.sample_rate), args.runs) / seconds
        if d.sample_rate not in wpe_rtf:
            wpe_rtf[d.sample_rate] = _median_time(lambda x=x, r=d.sample_rate: wpe(x, r), args.runs) / seconds
        w = wpe_rtf[d.sample_rate]
        print(f"| {name} | {d.sample_rate} | {rtf:.4f} | {w:.4f} | {rtf / w:.2f} |", flush=True)
    if args.agreement_seconds > 0:
        print(
            f"\n| model | chunked vs whole, {args.agreement_seconds:g} s, SI-SDR dB: one pass | two passes (default) |"
        )
        print("|---|---|---|")
        for name in models:
            whole = Dereverberator.from_pretrained(name, chunk_seconds=None, gain="none")
            x = _speech(whole.sample_rate, args.agreement_seconds)
            ref = whole.enhance(x, whole.sample_rate)
            cells = []
            for passes in (1, 2):
                d = Dereverberator.from_pretrained(name, gain="none", gln_passes=passes)
                cells.append(f"{si_sdr(d.enhance(x, d.sample_rate), ref):.1f}")
            print(f"| {name} | " + " | ".join(cells) + " |", flush=True)
    if args.hours <= 0:
        return 0
    print(f"\n| model | {args.hours:g} h 16 kHz mono file: peak RSS | wall time | RTF |")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="bench_inference.") as tmp:
        src = Path(tmp) / "long.wav"
        duration = _long_file(src, args.hours)
        for name in models:
            out = Path(tmp) / f"out-{Path(name).name}.wav"
            env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
            # the CLI in a child that reports its own peak RSS (KiB on Linux) on its last stderr line
            code = (
                "import resource, sys; from dereverb.cli.enhance import main; rc = main(sys.argv[1:]); "
                "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr); sys.exit(rc)"
            )
            cmd = [sys.executable, "-c", code, str(src), "-o", str(out), "--model", name, "--quiet"]
            start = time.perf_counter()
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
            wall = time.perf_counter() - start
            if proc.returncode != 0:
                print(f"error: {name}: {proc.stderr.strip()}", file=sys.stderr)
                return 1
            peak_kib = int(proc.stderr.strip().splitlines()[-1])
            if sf.info(str(out)).frames != sf.info(str(src)).frames:
                print(f"error: {name}: output length differs from the input's", file=sys.stderr)
                return 1
            print(f"| {name} | {peak_kib / 1024**2:.2f} GiB | {wall:.0f} s | {wall / duration:.4f} |", flush=True)
            out.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
