"""Time the evaluation: seconds per utterance for enhancement and for metrics, side by side.

Builds a test set of ``--n`` utterances of exactly ``--seconds`` s at ``--rate`` (the shipped speech
pack, joined to length, in simulated rooms of T60 0.2-1.0 s) and an untrained model of the given
class and size, then runs ``scripts/evaluate.py`` on it ``--rounds`` times, each in a fresh process,
and reports the wall time of the whole command (imports, model loading and worker start included)
and the medians of the per-utterance stage times that the evaluation records in ``summary.json``.

Example:
    python scripts/bench_evaluate.py                    # 40 x 4 s at 8 kHz, default DTCN, no baselines
    python scripts/bench_evaluate.py --baselines wpe --rounds 3 --out results/bench_evaluate.md
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

log = logging.getLogger("bench_evaluate")


def build_set(root: Path, n: int, seconds: float, rate: int) -> None:
    """``root/test.csv`` with reverberant/ and direct/ wavs of exactly ``seconds`` s, and T60/DRR columns."""
    from dereverb.data import rooms, speech_pack
    from dereverb.data.audio import read_audio, write_audio
    from dereverb.data.manifests import write_manifest

    bank = rooms.RirBank.build(
        root / "rirs", 8, rooms.RoomConfig(t60_range=(0.2, 1.0)), sample_rate=rate, seed=0, progress=False
    )
    files = speech_pack.load_manifest("test") + speech_pack.load_manifest("valid")
    length = round(seconds * rate)
    for role in ("reverberant", "direct"):
        (root / role).mkdir(parents=True)
    rows, k = [], 0
    for i in range(n):
        parts, total = [], 0
        while total < length:
            x = read_audio(files[k % len(files)].path, rate, resample=True)
            k += 1
            parts.append(x)
            total += len(x)
        clean = np.concatenate(parts)[:length]
        rir = bank[i % len(bank)]
        reverb, direct = rooms.reverberate(clean, rir, "direct")
        uid = f"utt{i:03d}"
        write_audio(root / "reverberant" / f"{uid}.wav", reverb, rate)
        write_audio(root / "direct" / f"{uid}.wav", direct, rate)
        rows.append(
            {"ID": uid, "duration_s": seconds, "reverberant": f"$prep_root/reverberant/{uid}.wav",
             "direct": f"$prep_root/direct/{uid}.wav", "t60_s": rir.t60_s, "drr_db": rir.drr_db}
        )  # fmt: skip
    write_manifest(root / "test.csv", rows, ["ID", "duration_s", "reverberant", "direct", "t60_s", "drr_db"])


def _table(args, rounds: list[dict], n_params: int, threads: int, torch_version: str) -> list[str]:
    """The Markdown report: settings, then seconds per utterance of each stage (medians over the rounds)."""

    def med(key):
        values = [x[key] for x in rounds if key in x]
        return statistics.median(values) if values else float("nan")

    n = args.n
    walls = ", ".join(f"{x['wall_s']:.1f}" for x in rounds)
    lines = [
        f"{args.n} utterances x {args.seconds:g} s at {args.rate} Hz; {args.model} '{args.size}' "
        f"({n_params / 1e6:.2f}M parameters, untrained), batch {args.batch_size}; baselines: "
        f"{' '.join(args.baselines) or 'none'}; metric workers: {args.jobs or os.cpu_count()}; "
        f"{threads} torch threads; {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; "
        f"torch {torch_version}; median of {args.rounds} fresh process(es)",
        "",
        "| stage | s per utterance (median) | s per utterance (stage total / n) | stage total s |",
        "|---|--:|--:|--:|",
        f"| enhancement (model) | {med('enhance_s_per_utt_median'):.3f} | {med('enhance_s') / n:.3f} "
        f"| {med('enhance_s'):.1f} |",
        f"| metrics (output + input{' + ' + ' + '.join(args.baselines) if args.baselines else ''}) "
        f"| {med('metrics_s_per_utt_median'):.3f} | {med('metrics_s') / n:.3f} | {med('metrics_s'):.1f} |",
    ]
    if args.baselines:
        lines.append(
            f"| baselines ({' '.join(args.baselines)}) | {med('baselines_s_per_utt_median'):.3f} "
            f"| {med('baselines_s') / n:.3f} | {med('baselines_s'):.1f} |"
        )
    lines += [
        f"| reading audio | | {med('read_s') / n:.3f} | {med('read_s'):.1f} |",
        "",
        f"Whole command (imports, model loading, worker start, writing): {med('wall_s'):.1f} s wall "
        f"({med('total_s'):.1f} s inside evaluate()); rounds: {walls} s.",
        f"CPU time of the command and its workers (user + sys): {med('cpu_s'):.1f} s, i.e. "
        f"{med('cpu_s') / (os.cpu_count() or 1):.1f} s spread over {os.cpu_count()} cores; "
        f"1-minute load average after the run: {med('load'):.1f} (other jobs on the machine slow it down).",
    ]
    return lines


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=40, help="utterances (default 40)")
    p.add_argument("--seconds", type=float, default=4.0, help="length of each (default 4 s)")
    p.add_argument("--rate", type=int, default=8000, choices=(8000, 16000))
    p.add_argument("--model", default="DTCN", choices=("DTCN", "TCN"))
    p.add_argument("--size", default="default", help="model size preset (default, small)")
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--jobs", type=int, default=None, help="metric workers (default: one per CPU)")
    p.add_argument("--baselines", nargs="*", default=[])
    p.add_argument("--rounds", type=int, default=1, help="fresh processes (default 1)")
    p.add_argument("--out", type=Path, default=None, help="also write the Markdown table here")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    import torch

    from dereverb.models import MODELS, preset
    from dereverb.pretrained import save_pretrained

    threads = torch.get_num_threads()
    with tempfile.TemporaryDirectory(prefix="bench_evaluate.") as tmp:
        tmp = Path(tmp)
        log.info("building %d x %g s at %d Hz ...", args.n, args.seconds, args.rate)
        build_set(tmp / "set", args.n, args.seconds, args.rate)
        torch.manual_seed(0)
        model = MODELS[args.model](**preset(args.size, args.rate))
        save_pretrained(model, tmp / "model", args.rate)
        n_params = sum(q.numel() for q in model.parameters())
        script = Path(__file__).resolve().parent / "evaluate.py"
        rounds = []
        for r in range(args.rounds):
            out = tmp / f"eval{r}"
            cmd = [sys.executable, str(script), "--model", str(tmp / "model"), "--data", str(tmp / "set" / "test.csv"),
                   "--out", str(out), "--batch-size", str(args.batch_size), "--quiet"]  # fmt: skip
            if args.jobs is not None:
                cmd += ["--jobs", str(args.jobs)]
            if args.baselines:
                cmd += ["--baselines", *args.baselines]
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            start = time.perf_counter()
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
            wall = time.perf_counter() - start
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
            timing = json.loads((out / "summary.json").read_text())["timing"]
            rounds.append({"wall_s": wall, "cpu_s": cpu, "load": os.getloadavg()[0], **timing})
            log.info("round %d: %.1f s wall; %s", r + 1, wall, timing)

    lines = _table(args, rounds, n_params, threads, torch.__version__)
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
