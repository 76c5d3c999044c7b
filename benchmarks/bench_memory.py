"""Memory of the fused solver's backward pass, run by hand:

    python benchmarks/bench_memory.py [--columns 100 1000] [--durations 0.5 2] [--batch 64]

The digits network (``colplugin.tasks.Digits(columns=N)``: 64 input channels -> N hidden MT
columns -> 10 output MT columns, sparse coupling), ``batch`` training images, the task's
solver (fused midpoint, 0.5 ms steps), one forward+backward pass of the task's loss with
the output read at the end of ``duration`` s of model time. Two ways of storing the
forward for the backward pass (``Solver.checkpoint_every``):

* ``keep``: 0, w and g of every stage of every step (memory grows with the steps);
* ``auto``: None, checkpoints every M steps past :data:`colplugin.solve.fused.KEEP_ALL_BYTES`,
  the backward pass recomputing one chunk of M steps at a time.

Each configuration runs in a fresh subprocess, so the peak resident memory (max RSS) is
its own; ``solve MB`` is that peak minus the RSS just before the solve (the network, the
data set and torch). A ``keep`` run whose predicted memory (three times the stored stages:
the stages, their stacked copy in the forward or dL/dk in the backward, allocator slack)
exceeds ``--max-gb`` is skipped.
Single thread, float64.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = r"""
import dataclasses, json, resource, sys, time, torch
import colplugin as cp
import colplugin.solve.fused as fused
from colplugin.tasks.digits import Digits
torch.set_num_threads(int(sys.argv[5]))
columns, duration, batch = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
every = None if sys.argv[4] == "auto" else int(sys.argv[4])
task = Digits(columns=columns)
net = task.build_network(seed=0)
b = task.sample(batch, torch.Generator().manual_seed(0))
solver = dataclasses.replace(task.solver, checkpoint_every=every)
used = {}
forward = fused._FusedSolve.forward
def spy(ctx, *args):
    out = forward(ctx, *args)
    used.update(args[8])
    return out
fused._FusedSolve.forward = staticmethod(spy)
def rss_mb():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmRSS")) / 1024
before = rss_mb()
t0 = time.perf_counter()
traj = cp.simulate(net, b.stimulus, duration, dt_out=duration, solver=solver)
t1 = time.perf_counter()
task.loss(traj, b).backward()
t2 = time.perf_counter()
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"nfe": traj.nfe, "M": used.get("checkpoint_used"), "forward_s": t1 - t0, "backward_s": t2 - t1,
                  "peak_mb": peak, "before_mb": before}))
"""


def run(columns: int, duration: float, batch: int, every: str, threads: int) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, str(columns), str(duration), str(batch), every, str(threads)],
                         capture_output=True, text=True)
    if out.returncode:
        return {"error": (out.stderr.strip().splitlines() or ["killed"])[-1]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def available_gb() -> float:
    try:
        with open("/proc/meminfo") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("MemAvailable")) / 2 ** 20
    except (OSError, StopIteration):
        return 8.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--columns", type=int, nargs="+", default=[100, 1000], help="hidden columns of the network")
    ap.add_argument("--durations", type=float, nargs="+", default=[0.5, 2.0], help="model time in s")
    ap.add_argument("--batch", type=int, default=64, help="trials (images) per solve")
    ap.add_argument("--modes", nargs="+", default=["keep", "auto"], help="keep, auto, or a checkpoint spacing M")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per run")
    ap.add_argument("--max-gb", type=float, default=0.6 * available_gb(),
                    help="skip keep runs predicted to need more (GB; default 60%% of the available memory)")
    args = ap.parse_args()
    print(f"batch {args.batch}, fused midpoint at 0.5 ms, float64, {args.threads} thread(s); "
          f"MB = 2^20 bytes; solve MB = peak RSS - RSS before the solve")
    print(f"{'columns':>7}{'model s':>8}{'steps':>7}{'mode':>6}{'M':>6}{'peak MB':>10}{'solve MB':>10}"
          f"{'fwd s':>8}{'bwd s':>8}{'total s':>9}")
    for columns in args.columns:
        P = 8 * (columns + 10)
        for duration in args.durations:
            steps = round(duration / 5e-4)
            predicted_gb = 3 * steps * 2 * args.batch * 2 * P * 8 / 2 ** 30  # 2 stages: w and g, one state each
            for mode in args.modes:
                every = "0" if mode == "keep" else mode
                if mode == "keep" and predicted_gb > args.max_gb:
                    print(f"{columns:>7}{duration:>8g}{steps:>7}{mode:>6}{'-':>6}   skipped: predicted "
                          f"{predicted_gb:.1f} GB > --max-gb {args.max_gb:.1f}", flush=True)
                    continue
                r = run(columns, duration, args.batch, every, args.threads)
                if "error" in r:
                    print(f"{columns:>7}{duration:>8g}{steps:>7}{mode:>6}   failed: {r['error']}", flush=True)
                    continue
                total = r["forward_s"] + r["backward_s"]
                print(f"{columns:>7}{duration:>8g}{r['nfe'] // 2:>7}{mode:>6}{r['M'] or '-':>6}{r['peak_mb']:>10.0f}"
                      f"{r['peak_mb'] - r['before_mb']:>10.0f}{r['forward_s']:>8.1f}{r['backward_s']:>8.1f}"
                      f"{total:>9.1f}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
