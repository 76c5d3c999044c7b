"""simulate's default vs the eager fused solver vs torchdiffeq, run by hand.

    python benchmarks/bench_default.py [--sizes 1 10 100 1000 10000] [--threads 1 2]

One MT area of n full-size columns (float64), lateral L2/3E -> L2/3I onto ~10 other columns
per column, 20 Hz into every L4E/L4I, forward only (no gradients), 0.15 s of model time from
V = A = 0. Per size and thread count, measured side by side in one process (best of three
below 1000 columns, one run above):

* ``default``: ``cp.simulate(net, stim, 0.15)`` with no solver (``Solver.default()``:
  fused dopri5, rtol 1e-6, atol 1e-6; on the CPU the compiled kernel up to its work limit);
* ``fused``: ``Solver("dopri5", rtol=1e-7, atol=1e-9, backend="fused", kernel="eager")`` (the
  paper's tolerances, the eager loop; ``benchmarks/bench_kernel.py`` compares the two loops);
* ``torchdiffeq``: ``Solver("dopri5", rtol=1e-7, atol=1e-9)`` (the reference integrator).

Ratios are times over the default's in the same row group; the machine may be shared, so
compare ratios, not absolute times, across runs.

Threads: on the 2-core development machine (shared with other processes) one thread was
faster at every size (two threads oversubscribe the cores: 100 columns 9x slower), so the
default is ``--threads 1``; pass ``--threads 1 2`` to compare on an idle machine.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

import colplugin as cp


def build(n: int, fan_out: int = 10) -> cp.ColumnNetwork:
    rng = np.random.default_rng(0)
    k = min(fan_out, n - 1)
    projs = [cp.Input("a", to="all")]
    if k > 0:
        pairs = np.array([(s, t) for s in range(n) for t in rng.choice(np.delete(np.arange(n), s), k, replace=False)])
        projs.append(cp.Lateral("a", columns=pairs, self_excitation=False, init=5.0))
    return cp.ColumnNetwork(cp.load_preset("dl25"), {"a": cp.Area("mt", n, split=False)}, projs, seed=0)


SOLVERS = {"default": None,
           "fused": cp.Solver("dopri5", rtol=1e-7, atol=1e-9, backend="fused", kernel="eager"),
           "torchdiffeq": cp.Solver("dopri5", rtol=1e-7, atol=1e-9, backend="torchdiffeq")}


@torch.no_grad()
def timed(net: cp.ColumnNetwork, solver: cp.Solver | None, duration: float, repeat: int) -> tuple[float, int]:
    stim = cp.Stimulus.constant([20.0])
    best, nfe = float("inf"), 0
    for _ in range(repeat):
        t0 = time.perf_counter()
        tr = cp.simulate(net, stim, duration, dt_out=duration / 3, solver=solver)
        best = min(best, time.perf_counter() - t0)
        nfe = tr.nfe
    return best, nfe


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[1, 10, 100, 1000, 10000])
    ap.add_argument("--threads", type=int, nargs="+", default=[1])
    ap.add_argument("--duration", type=float, default=0.15)
    ap.add_argument("--skip-torchdiffeq-above", type=int, default=10**9,
                    help="leave torchdiffeq out for more columns than this")
    args = ap.parse_args()
    print(f"torch {torch.__version__}; forward {args.duration} s; float64; times in s; ratio = time / default's")
    print(f"{'columns':>7} {'threads':>7} {'solver':>12} {'time s':>9} {'nfe':>6} {'ratio':>7}")
    for n in args.sizes:
        net = build(n)
        repeat = 3 if n < 1000 else 1
        timed(net, None, min(args.duration, 0.01), 1)  # warm-up (allocator, index caches)
        for threads in args.threads:
            torch.set_num_threads(threads)
            base = None
            for name, solver in SOLVERS.items():
                if name == "torchdiffeq" and n > args.skip_torchdiffeq_above:
                    continue
                t, nfe = timed(net, solver, args.duration, repeat)
                base = base or t
                print(f"{n:>7} {threads:>7} {name:>12} {t:>9.4f} {nfe:>6} {t / base:>7.2f}", flush=True)


if __name__ == "__main__":
    main()
