"""The compiled fused-solver kernel against the eager loop, torchdiffeq and Brian2, run by hand.

    python benchmarks/bench_kernel.py [--sizes 1 10 100 1000 10000] [--batches 1 64] [--quick]

Three tables, each measured in one run on one machine (compare ratios across runs, not
absolute times), single-threaded torch, float64:

1. **Forward, 0.15 s of model time**: one MT area of n full-size columns, lateral L2/3E ->
   L2/3I onto ~10 other columns per column, 20 Hz into every L4E/L4I, from V = A = 0;
   ``cp.simulate`` with no solver (``default``: the compiled kernel on the CPU), the same
   solver run by the eager loop (``eager``, ``Solver.default()`` with ``kernel="eager"``,
   the field's own dense/sparse default), torchdiffeq's dopri5 at the same tolerances, and
   Brian2 ``cpp_standalone`` (the exported rate model, euler at 0.1 ms, all trials in one
   NeuronGroup: its simulation loop, with code generation and compilation listed apart).
   Best of three below 1000 columns, one run above. The build time of the kernel (a fresh
   cache, in a subprocess) is listed apart: it is paid once per installation.
2. **Training updates**: forward + backward + Adam step of the XOR (batch 4) and decision
   (batch 16) tasks with their own solvers, compiled vs eager vs torchdiffeq (direct
   backpropagation), best of ten.
3. **Overhead per right-hand-side evaluation against its arithmetic**: the compiled
   forward's time per evaluation against the time of its arithmetic alone on this machine
   - the multiply-adds of the coupling product and the stage sums at the rate of a large
   single-threaded matrix product, plus one expm1 per population at the rate of a long
   vectorised ``torch.expm1`` - i.e. the limit of any implementation of these steps.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import subprocess
import sys
import tempfile
import time

import torch

import colplugin as cp
from bench_default import build  # the same network (benchmarks/ is the script's directory)
from colplugin.solve import compiled
from colplugin.solve.tableaus import TABLEAUS

DURATION = 0.15


@torch.no_grad()
def forward(net: cp.ColumnNetwork, batch: int, solver: cp.Solver | None, repeat: int) -> tuple[float, int]:
    stim = cp.Stimulus.constant([20.0])
    y0 = net.initial_state(batch)
    best, nfe = float("inf"), 0
    for _ in range(repeat):
        t0 = time.perf_counter()
        tr = cp.simulate(net, stim, DURATION, dt_out=DURATION / 3, solver=solver, y0=y0)
        best = min(best, time.perf_counter() - t0)
        nfe = tr.nfe
    return best, nfe


def brian2_forward(net: cp.ColumnNetwork, batch: int) -> tuple[float, float]:
    stim = cp.Stimulus.constant([20.0]).expand(batch)
    run = cp.to_brian2(net, stim, DURATION, trial=None, method="euler", record_dt=DURATION / 3,
                       device="cpp_standalone").run()
    return run.run_seconds, run.wall_seconds - run.run_seconds


def kernel_build_seconds() -> float:
    with tempfile.TemporaryDirectory() as d:
        code = "import time; from colplugin.solve import compiled; t = time.perf_counter(); " \
               "assert compiled.kernel_available()[0]; print(time.perf_counter() - t)"
        out = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, COLPLUGIN_CACHE_DIR=d),
                             capture_output=True, text=True, check=True)
    return float(out.stdout.strip())


def table_forward(sizes: list[int], batches: list[int], brian2_max: int, torchdiffeq_max: int) -> None:
    print(f"\n1. Forward, {DURATION} s of model time (s; ratio = time / default's)")
    print(f"{'columns':>7} {'batch':>5} {'default':>9} {'nfe':>5} {'eager':>9} {'ratio':>6} {'torchdiffeq':>11} "
          f"{'ratio':>6} {'brian2 run':>10} {'ratio':>6} {'brian2 build':>12}")
    default = cp.Solver.default()
    for n in sizes:
        net = build(n)
        repeat = 3 if n < 1000 else 1
        forward(net, 1, None, 1)  # warm-up
        for batch in batches:
            t_def, nfe = forward(net, batch, None, repeat)
            t_eager, _ = forward(net, batch, dataclasses.replace(default, kernel="eager"), repeat)
            cells = [f"{t_def:>9.4f} {nfe:>5} {t_eager:>9.4f} {t_eager / t_def:>6.1f}"]
            if n * batch <= torchdiffeq_max:
                t_td, _ = forward(net, batch, dataclasses.replace(default, backend="torchdiffeq"), repeat)
                cells.append(f"{t_td:>11.4f} {t_td / t_def:>6.1f}")
            else:
                cells.append(f"{'-':>11} {'-':>6}")
            if n * batch <= brian2_max:
                run_s, build_s = brian2_forward(net, batch)
                cells.append(f"{run_s:>10.4f} {run_s / t_def:>6.2f} {build_s:>12.1f}")
            else:
                cells.append(f"{'-':>10} {'-':>6} {'-':>12}")
            print(f"{n:>7} {batch:>5} " + " ".join(cells), flush=True)


def table_updates(repeat: int = 10) -> None:
    from colplugin.tasks import XOR, Decision

    print("\n2. Training update: forward + backward + Adam step (s, best of ten; ratio = time / compiled's)")
    print(f"{'task':>8} {'batch':>5} {'compiled':>9} {'eager':>9} {'ratio':>6} {'torchdiffeq':>11} {'ratio':>6}")
    for task, batch in ((XOR(), 4), (Decision(), 16)):
        net = task.build_network(seed=0)
        opt = torch.optim.Adam(net.parameters(), lr=1e-6)
        b = task.sample(batch, torch.Generator().manual_seed(0))
        times = {}
        for name, solver in (("compiled", dataclasses.replace(task.solver, kernel="compiled")),
                             ("eager", dataclasses.replace(task.solver, kernel="eager")),
                             ("torchdiffeq", dataclasses.replace(task.solver, backend="torchdiffeq"))):
            best = float("inf")
            for _ in range(repeat if name != "torchdiffeq" else 3):
                t0 = time.perf_counter()
                traj = cp.simulate(net, b.stimulus, task.duration, dt_out=task.dt_out, solver=solver)
                loss = task.loss(traj, b)
                opt.zero_grad()
                loss.backward()
                opt.step()
                best = min(best, time.perf_counter() - t0)
            times[name] = best
        c = times["compiled"]
        print(f"{task.name:>8} {batch:>5} {c:>9.4f} {times['eager']:>9.4f} {times['eager'] / c:>6.1f} "
              f"{times['torchdiffeq']:>11.4f} {times['torchdiffeq'] / c:>6.1f}", flush=True)


def machine_rates() -> tuple[float, float]:
    """(multiply-adds per s of a large float64 matrix product, expm1 per s of a long vector), one thread."""
    a = torch.randn(1024, 1024, dtype=torch.float64)
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        a @ a
        best = min(best, time.perf_counter() - t0)
    mac = 1024 ** 3 / best
    x = torch.rand(2 ** 22, dtype=torch.float64)
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        torch.expm1(x)
        best = min(best, time.perf_counter() - t0)
    return mac, x.numel() / best


def table_overhead(sizes: list[int]) -> None:
    mac_rate, exp_rate = machine_rates()
    s = TABLEAUS["dopri5"].stages
    print(f"\n3. Per evaluation (dopri5, batch 1): compiled time against its arithmetic at this machine's rates "
          f"({mac_rate / 1e9:.2f} G multiply-adds/s, {exp_rate / 1e6:.0f} M expm1/s)")
    print(f"{'columns':>7} {'form':>6} {'mult-adds':>10} {'expm1':>6} {'arith. us':>9} {'compiled us':>11} "
          f"{'ratio':>6} {'eager us':>9} {'ratio':>6}")
    default = cp.Solver.default()
    for n in sizes:
        net = build(n)
        t_c, nfe = forward(net, 1, None, 3)
        t_e, nfe_e = forward(net, 1, dataclasses.replace(default, kernel="eager"), 3)
        dense = compiled.default_dense("auto", net.n_populations, torch.device("cpu"), torch.float64)
        ops = net.field(torch.full((1, 1, net.n_inputs), 20.0, dtype=torch.float64), dense=dense).fused()
        P = ops.P
        coupling = compiled._work(ops)  # multiply-adds of the coupling product per trial
        # per evaluation: coupling, the stage input y + h sum a_ij k_j (about s/2 stages of 2P),
        # w (2 per population), y * c and the drive (2P each), the error norm's share (2P)
        macs = coupling + (s // 2 + 4) * 2 * P
        arith = macs / mac_rate + P / exp_rate
        print(f"{n:>7} {'dense' if dense else 'sparse':>6} {macs:>10} {P:>6} {arith * 1e6:>9.2f} "
              f"{t_c / nfe * 1e6:>11.2f} {t_c / nfe / arith:>6.1f} {t_e / nfe_e * 1e6:>9.2f} "
              f"{t_e / nfe_e / arith:>6.1f}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1, 10, 100, 1000, 10000])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 64])
    ap.add_argument("--brian2-max", type=int, default=64_000,
                    help="leave Brian2 out where columns x batch exceeds this")
    ap.add_argument("--torchdiffeq-max", type=int, default=64_000,
                    help="leave torchdiffeq out where columns x batch exceeds this")
    ap.add_argument("--quick", action="store_true", help="sizes 1 10 100, batch 1, no Brian2")
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.quick:
        args.sizes, args.batches, args.brian2_max = [1, 10, 100], [1], 0
    print(f"torch {torch.__version__}; float64; 1 thread; kernel available: {compiled.kernel_available()}")
    print(f"kernel build (once per installation, fresh cache): {kernel_build_seconds():.1f} s")
    table_forward(args.sizes, args.batches, args.brian2_max, args.torchdiffeq_max)
    table_updates()
    table_overhead([n for n in args.sizes if n <= 1000])


if __name__ == "__main__":
    main()
