"""Fused solver on dense vs sparse coupling, and the sparse edge product (index_add vs CSR).

Run by hand:  python benchmarks/bench_sparse.py [--sizes 8 16 32 64 128 1000] [--threads 1]

One MT area of n full-size columns, lateral L2/3E -> L2/3I onto ~10 other columns per
column, 20 Hz into every L4E/L4I, float64. For each size: the time of one stage
evaluation (F(y)) and of its transposed Jacobian-vector product, and a forward 0.15 s solve
with fused dopri5 (rtol 1e-7, atol 1e-9), for the dense field (up to 1024 populations),
the sparse field with ``index_add`` edges and with CSR edges. Ratios are to the dense
field (or to index_add where dense is not run), measured in the same process.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

import colplugin as cp
from colplugin.solve.fused import fused_solve


def build(n: int, fan_out: int = 10, dtype=torch.float64) -> cp.ColumnNetwork:
    rng = np.random.default_rng(0)
    k = min(fan_out, n - 1)
    pairs = (np.array([(s, t) for s in range(n) for t in rng.choice(np.delete(np.arange(n), s), k, replace=False)])
             if k > 0 else np.zeros((0, 2), np.int64))
    projs = [cp.Input("a", to="all")]
    if k > 0:
        projs.append(cp.Lateral("a", columns=pairs, self_excitation=False, init=5.0))
    return cp.ColumnNetwork(cp.load_preset("dl25"), {"a": cp.Area("mt", n, split=False)}, projs, dtype=dtype, seed=0)


def best(fn, repeat: int) -> float:
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return min(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[8, 16, 32, 64, 128, 1000])
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--duration", type=float, default=0.15)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"threads {args.threads}, batch {args.batch}; times in ms (best of several); ratio = time / first variant")
    print(f"{'columns':>7} {'variant':>10} {'F(y) ms':>9} {'vjp ms':>9} {'solve ms':>9} {'nfe':>5} {'ratio':>6}")
    for n in args.sizes:
        net = build(n)
        B = args.batch
        rates = torch.full((B, 1, 1), 20.0, dtype=torch.float64)
        variants = ([("dense", True, None)] if 8 * n <= 1024 else []) + [("index_add", False, "index_add"),
                                                                        ("csr", False, "csr")]
        first = None
        for name, dense, ep in variants:
            t_f, t_b, t_s, nfe = measure(net, B, rates, dense, ep, args.duration)
            first = first or t_s
            print(f"{n:>7} {name:>10} {1e3 * t_f:>9.4f} {1e3 * t_b:>9.4f} {1e3 * t_s:>9.1f} {nfe:>5} "
                  f"{t_s / first:>6.2f}", flush=True)


@torch.no_grad()
def measure(net: cp.ColumnNetwork, B: int, rates: torch.Tensor, dense: bool, ep: str | None,
            duration: float) -> tuple[float, float, float, int]:
    """(stage s, vjp s, solve s, nfe) of one coupling form."""
    field = net.field(rates, dense=dense)
    ops = field.fused(ep)
    y = torch.randn(B, 2 * field.P, dtype=torch.float64)
    k = torch.empty_like(y)
    r = max(3, min(200, int(2e5 / field.P)))
    t_f = best(lambda: [ops.stage(y, ops.drive[:, 0], k) for _ in range(r)], 3) / r
    w, g = ops.stage(y, ops.drive[:, 0], k)
    S = ops.slope(w, g)
    t_b = best(lambda: [ops.vjp(y, S, k) for _ in range(r)], 3) / r

    def solve():
        return fused_solve(field, net.initial_state(B), [0.0, duration], [0], [1], "dopri5",
                           lambda t, x, s: None, rtol=1e-7, atol=1e-9, edge_product=ep)

    t_s = best(solve, 2 if field.P >= 8000 else 3)
    return t_f, t_b, t_s, solve()[1]

if __name__ == "__main__":
    main()
