#!/usr/bin/env python
"""T60 accuracy and simulation time of ``dereverb.data.rooms.simulate_rir``.

For each sample rate and requested T60, simulates ``--rooms`` random rooms of the default
``RoomConfig`` with ``t60_range=(T60, T60)`` and reports the seconds per RIR (median and max) and the
relative error of the measured T60 (Schroeder T30, the calibrated quantity; T20 for information).
With ``--sabine``, the same rooms are also simulated the uncalibrated way (absorption and image order
from ``pyroomacoustics.inverse_sabine``) as a baseline.

Usage:
    python scripts/bench_rooms.py                       # 8 and 16 kHz, T60 0.2 to 1.2 s, 8 rooms each
    python scripts/bench_rooms.py --rates 8000 --rooms 3 --sabine
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import pyroomacoustics as pra

from dereverb.data.rooms import RoomConfig, measure_t60, sample_room, simulate_rir


def _sabine_rir(config: RoomConfig, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """The room that ``simulate_rir`` draws from the same ``rng``, simulated with ``pra.inverse_sabine``."""
    t60, dim, src, mic = sample_room(config, rng)
    absorption, max_order = pra.inverse_sabine(t60, dim)
    room = pra.ShoeBox(dim, fs=sample_rate, materials=pra.Material(absorption), max_order=max_order)
    room.add_source(src)
    room.add_microphone(mic)
    room.compute_rir()
    return room.rir[0][0]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rates", type=int, nargs="+", default=[8000, 16000])
    p.add_argument("--t60", type=float, nargs="+", default=[0.2, 0.4, 0.6, 0.8, 1.0, 1.2])
    p.add_argument("--rooms", type=int, default=8, help="rooms per (rate, T60)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sabine", action="store_true", help="also simulate the uncalibrated Sabine baseline")
    args = p.parse_args()

    header = f"{'rate':>6} {'T60':>5} {'s/RIR med':>9} {'s/RIR max':>9} {'T30 err mean':>12} {'T30 |err| max':>13}"
    header += f" {'T20 |err| max':>13}" + (
        f" {'Sabine T30 err min..max':>24} {'Sabine s/RIR':>12}" if args.sabine else ""
    )
    print(header, flush=True)
    worst = 0.0
    for rate in args.rates:
        for t60 in args.t60:
            config = RoomConfig(t60_range=(t60, t60))
            times, err30, err20, sab_err, sab_times = [], [], [], [], []
            for i in range(args.rooms):
                seed = (args.seed, i)
                start = time.perf_counter()
                rir = simulate_rir(config, rate, np.random.default_rng(seed))
                times.append(time.perf_counter() - start)
                err30.append(measure_t60(rir.rir, rate, 30) / t60 - 1)
                err20.append(measure_t60(rir.rir, rate, 20) / t60 - 1)
                if args.sabine:
                    start = time.perf_counter()
                    h = _sabine_rir(config, rate, np.random.default_rng(seed))
                    sab_times.append(time.perf_counter() - start)
                    sab_err.append(measure_t60(h, rate, 30) / t60 - 1)
            worst = max(worst, max(abs(e) for e in err30))
            line = (
                f"{rate:>6} {t60:>5.2f} {statistics.median(times):>9.2f} {max(times):>9.2f} "
                f"{statistics.mean(err30):>+12.1%} {max(abs(e) for e in err30):>13.1%} "
                f"{max(abs(e) for e in err20):>13.1%}"
            )
            if args.sabine:
                line += f" {min(sab_err):>+11.1%}..{max(sab_err):>+10.1%} {statistics.median(sab_times):>12.2f}"
            print(line, flush=True)
    print(f"largest T30 error of the calibrated RIRs: {worst:.1%}", flush=True)


if __name__ == "__main__":
    main()
