"""The cost of the LIF mean-field column, run by hand:  python benchmarks/bench_transfer.py [--reps 3]

One training update (forward + backward, the task's loss, its default solver and batch) of the
paper's XOR (16 trials) and decision (16 trials) networks, side by side in one run:

* ``dl25`` (the DMF; the task's default solver: the fused dopri5, compiled on the CPU);
* ``dl25`` on torchdiffeq's dopri5 (the same tolerances; the path every transfer can take);
* ``dl25_lif`` (the Siegert transfer with the input variance as a third state; the default
  solver resolves to torchdiffeq's dopri5, since the fused loop implements the DMF only).

Also the transfer alone: forward + backward of f and of the Siegert rate for 8 populations x
64 trials (float64, eager torch). Single thread; median of ``--reps`` updates after one warm-up.
Prints a table and the ratios (LIF / DMF default, LIF / DMF torchdiffeq).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
import warnings

import torch

import colplugin as cp
from colplugin.siegert import siegert
from colplugin.tasks import XOR, Decision
from colplugin.transfers import transfer


def update_seconds(task, preset: str, backend: str | None, reps: int) -> tuple[float, int]:
    """Median wall time (s) of one update and the forward's vector-field evaluations."""
    if backend is not None:
        task.solver = dataclasses.replace(task.solver, backend=backend)
    net = task.build_network(cp.load_preset(preset), seed=0)
    gen = torch.Generator().manual_seed(0)
    times, nfe = [], 0
    for k in range(reps + 1):
        batch = task.sample(task.settings.batch_size, gen)
        t0 = time.perf_counter()
        traj = cp.simulate(net, batch.stimulus, task.duration, dt_out=task.dt_out, solver=task.solver)
        task.loss(traj, batch).backward()
        if k:  # the first is a warm-up (compilation, caches)
            times.append(time.perf_counter() - t0)
        nfe = traj.nfe
    return statistics.median(times), nfe


def transfer_microseconds(reps: int = 200) -> tuple[float, float]:
    x = (torch.randn(64, 8, dtype=torch.float64) * 5 + 15).requires_grad_()
    s2 = torch.rand(64, 8, dtype=torch.float64) * 20 + 1
    out = []
    for fn in (lambda: transfer(x, 48.0, 981.0, 0.0089),
               lambda: siegert(x, s2, theta=15.0, V_r=0.0, tau_m=0.02, t_ref=0.002, tau_s=0.0005)):
        fn().sum().backward()
        t0 = time.perf_counter()
        for _ in range(reps):
            fn().sum().backward()
        out.append((time.perf_counter() - t0) / reps * 1e6)
    return out[0], out[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3)
    a = ap.parse_args()
    torch.set_num_threads(1)
    warnings.simplefilter("ignore", UserWarning)
    print("| task | column | solver | s per update | forward evaluations |\n|---|---|---|---|---|")
    for name, make in (("xor", XOR), ("decision", Decision)):
        rows = {}
        for label, preset, backend in (("DMF, default (fused, compiled)", "dl25", None),
                                       ("DMF, torchdiffeq dopri5", "dl25", "torchdiffeq"),
                                       ("LIF (Siegert), default (torchdiffeq dopri5)", "dl25_lif", None)):
            s, nfe = update_seconds(make(), preset, backend, a.reps)
            rows[label] = s
            print(f"| {name} | {preset} | {label} | {s:.2f} | {nfe} |", flush=True)
        lif = rows["LIF (Siegert), default (torchdiffeq dopri5)"]
        print(f"| {name} | ratio | LIF / DMF default {lif / rows['DMF, default (fused, compiled)']:.1f}x, "
              f"LIF / DMF torchdiffeq {lif / rows['DMF, torchdiffeq dopri5']:.1f}x | | |", flush=True)
    f_us, s_us = transfer_microseconds()
    print(f"\ntransfer alone, forward + backward, 8 x 64, float64: f {f_us:.0f} us, Siegert {s_us:.0f} us "
          f"({s_us / f_us:.1f}x)")


if __name__ == "__main__":
    main()
