"""Simulation cost vs network size: model seconds per wall second and peak memory.

Run by hand:  python benchmarks/bench_columns.py [--sizes 1 10 100 1000 10000] [--duration 0.15]

Each network is one MT area of n columns with
sparse lateral projections onto ~10 other columns per column (L2/3E -> L2/3I), simulated
with dopri5 (rtol 1e-6, atol 1e-6) from V = A = 0 without input, in float32, 1 thread.
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np
import torch

import colplugin as cp


def build(n: int, fan_out: int = 10) -> cp.ColumnNetwork:
    rng = np.random.default_rng(0)
    k = min(fan_out, n - 1)
    pairs = np.array([(s, t) for s in range(n) for t in rng.choice(np.delete(np.arange(n), s), k, replace=False)]
                     ).reshape(-1, 2) if k > 0 else np.zeros((0, 2), np.int64)
    return cp.ColumnNetwork(cp.load_preset("dl25"), {"a": cp.Area("mt", n, split=False)},
                            [cp.Lateral("a", columns=pairs, self_excitation=False, init=5.0)], dtype=torch.float32)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[1, 10, 100, 1000, 10000])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 64])
    ap.add_argument("--duration", type=float, default=0.15)
    args = ap.parse_args()
    torch.set_num_threads(1)
    print(f"{'columns':>8} {'batch':>6} {'wall s':>8} {'model s / wall s':>17} {'nfe':>6} {'peak RSS MB':>12}")
    for n in args.sizes:
        net = build(n)
        for B in args.batches:
            stim = cp.Stimulus.none(B, 0)
            t0 = time.perf_counter()
            with torch.no_grad():
                tr = cp.simulate(net, stim, args.duration, dt_out=args.duration / 3,
                                 solver=cp.Solver("dopri5", rtol=1e-6, atol=1e-6))
            wall = time.perf_counter() - t0
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            print(f"{n:>8} {B:>6} {wall:>8.3f} {args.duration / wall:>17.3f} {tr.nfe:>6} {rss:>12.0f}", flush=True)


if __name__ == "__main__":
    main()
