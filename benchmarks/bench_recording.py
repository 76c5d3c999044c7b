"""What recording costs: simulate at fine output steps against the bare solve, run by hand.

    python benchmarks/bench_recording.py [--sizes 10 100 1000] [--batches 1 64] [--threads 1]

The network of ``benchmarks/bench_default.py`` (one MT area of n columns, lateral L2/3E -> L2/3I
onto ~10 other columns, 20 Hz into every L4E/L4I), 0.15 s from V = A = 0, the default solver
(``Solver.default()``), float64. Per size and batch, side by side in one process (best of three
below 1000 columns, one run above):

* ``bare``: outputs at 0 and 0.15 s only (``dt_out = duration``);
* ``1 ms``: ``dt_out = 1e-3`` (151 points);
* ``0.1 ms``: ``dt_out = 1e-4`` (1501 points, Brian2's dt);

forward only (``torch.no_grad``) and forward + backward (a loss on the last rates, gradients of
the learnable weights); both read the trajectory's states and rates. ``overhead`` is
``time / bare - 1``: the part of a call spent because it records (the goal: at most 0.3 at
every size).

Each recorded row is measured twice, before and after dense output: ``steps`` with
``Engine(interpolate=False)`` (the solve steps onto every output time, so fine output steps
cap the step size; the ``nfe`` column shows it) and ``dense`` with the default (the steps go
where the error control puts them; the outputs come from dopri5's interpolant).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

import colplugin as cp

sys.path.insert(0, str(Path(__file__).parent))
from bench_default import build  # noqa: E402  (the same network as the default-solver benchmark)

DT_OUTS = {"bare": None, "1 ms": 1e-3, "0.1 ms": 1e-4}


def timed(net: cp.ColumnNetwork, stim: cp.Stimulus, duration: float, dt_out: float | None, backward: bool,
          repeat: int, solver: cp.Solver | None = None) -> tuple[float, int]:
    best, nfe = float("inf"), 0
    for _ in range(repeat):
        net.zero_grad()
        t0 = time.perf_counter()
        with torch.set_grad_enabled(backward):
            tr = cp.simulate(net, stim, duration, dt_out=dt_out or duration, solver=solver)
            tr.rate  # noqa: B018 - the outputs a user reads: states and rates
            if backward:
                tr.rate[-1].sum().backward()
        best = min(best, time.perf_counter() - t0)
        nfe = tr.nfe
    return best, nfe


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[10, 100, 1000])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 64])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--duration", type=float, default=0.15)
    ap.add_argument("--skip-batch64-above", type=int, default=100,
                    help="leave batch 64 out for more columns than this (minutes per call)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}; {args.threads} thread(s); {args.duration} s; default solver; float64")
    print(f"{'columns':>7} {'batch':>5} {'pass':>9} {'output':>7} {'record':>6} {'time s':>9} {'nfe':>6} "
          f"{'overhead':>9}")
    default = cp.Solver.default()
    solvers = {"steps": cp.Solver(default.method, default.control, replace(default.engine, interpolate=False)),
               "dense": default}
    for n in args.sizes:
        net = build(n)
        repeat = 3 if n < 1000 else 1
        for batch in args.batches:
            if batch > 1 and n > args.skip_batch64_above:
                continue
            stim = cp.Stimulus.constant(torch.full((batch, net.n_inputs), 20.0, dtype=torch.float64))
            timed(net, stim, 0.01, None, False, 1)  # warm-up (kernel load, index caches)
            for backward in (False, True):
                bare = None
                for label, dt_out in DT_OUTS.items():
                    for how, solver in solvers.items():
                        if dt_out is None and how == "steps":
                            continue  # the same solve
                        t, nfe = timed(net, stim, args.duration, dt_out, backward, repeat, solver)
                        bare = t if bare is None else bare
                        print(f"{n:>7} {batch:>5} {'fwd+bwd' if backward else 'forward':>9} {label:>7} {how:>6} "
                              f"{t:>9.3f} {nfe:>6} {t / bare - 1:>9.2f}", flush=True)


if __name__ == "__main__":
    main()
