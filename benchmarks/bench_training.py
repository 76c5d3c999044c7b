"""Training cost, run by hand:  python benchmarks/bench_training.py [--quick]

1. Wall time per update: XOR (batch 4 and 16) and decision (batch 16): the tasks' default
   (fused dopri5, direct gradients; the compiled kernel on the CPU), torchdiffeq dopri5 with
   direct backpropagation, and
   torchdiffeq's adjoint; plus the time to draw one batch (the decision task's Wong-Wang targets).
2. Peak memory (max RSS of a fresh process) of one forward+backward pass, adjoint vs direct,
   as the simulated duration grows from 1 s to 10 s (two MT columns, batch 16).
3. Wall time to 100 % XOR test accuracy (XOR's own training settings, ``XOR().settings``,
   evaluation included), fused direct gradients vs torchdiffeq's adjoint, for the first seeds
   (``colplugin reproduce xor --seeds 10`` gives the fused figure for ten seeds).

Each configuration runs in its own subprocess so that peak RSS is its own. Single thread.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = r"""
import dataclasses, json, resource, sys, time, torch
import colplugin as cp
from colplugin.tasks import XOR, Decision
torch.set_num_threads(1)
kind, gradient, batch, duration, reps = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
fused = sys.argv[6] == "fused"
task = XOR() if kind == "xor" else Decision()
task.solver = dataclasses.replace(task.solver, backend="fused" if fused else "torchdiffeq")
net = task.build_network(seed=0)
gen = torch.Generator().manual_seed(0)
times, sample = [], []
for _ in range(reps):
    t0 = time.perf_counter()
    b = task.sample(batch, gen)
    sample.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    if kind == "decision_long":
        z = torch.zeros(batch, 2, dtype=torch.float64)
        mu = task.inputs(batch, gen)
        stim = cp.Stimulus([0.0, 0.5], torch.stack([z, mu], 1))
        traj = cp.simulate(net, stim, duration, dt_out=0.01, solver=task.solver, gradient=gradient)
        loss = traj.rate.pow(2).mean()
    else:
        traj = cp.simulate(net, b.stimulus, task.duration, dt_out=task.dt_out, solver=task.solver, gradient=gradient)
        loss = task.loss(traj, b)
    loss.backward()
    times.append(time.perf_counter() - t0)
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"seconds_per_update": sorted(times)[len(times) // 2], "peak_rss_mb": rss,
                  "sample_seconds": sorted(sample)[len(sample) // 2]}))
"""


TO_100 = r"""
import json, sys, time, torch
from colplugin.tasks import XOR
from colplugin.training.trainer import train
torch.set_num_threads(1)
seed, gradient = int(sys.argv[1]), sys.argv[2]
task = XOR()
net = task.build_network(seed=seed)
t0 = time.perf_counter()
res = train(net, task, gradient=gradient, seed=seed, progress=False)  # every other setting: task.settings
print(json.dumps({"seconds": time.perf_counter() - t0, "updates": len(res.metrics),
                  "accuracy": res.metrics[-1]["test_accuracy"]}))
"""


def run(*args, code: str = CHILD) -> dict:
    out = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer repetitions, durations and seeds")
    ap.add_argument("--only", type=int, choices=(1, 2, 3), help="run one section")
    args = ap.parse_args()
    reps = 1 if args.quick else 3
    if args.only in (None, 1):
        section1(reps)
    if args.only in (None, 2):
        section2(args.quick)
    if args.only in (None, 3):
        section3(args.quick)


def section1(reps: int) -> None:
    print("1. wall time per update (median of %d; forward + backward, no evaluation; sampling apart)" % reps)
    print(f"{'task':<10}{'batch':>6}{'solver':>28}{'s/update':>10}{'sample s':>10}")
    for kind, batch in (("xor", 4), ("xor", 16), ("decision", 16)):
        for g, fused, label in (("direct", "fused", "fused dopri5, direct"),
                                ("direct", "torchdiffeq", "torchdiffeq dopri5, direct"),
                                ("adjoint", "torchdiffeq", "torchdiffeq dopri5, adjoint")):
            r = run(kind, g, batch, 0, reps, fused)
            print(f"{kind:<10}{batch:>6}{label:>28}{r['seconds_per_update']:>10.3f}{r['sample_seconds']:>10.3f}",
                  flush=True)


def section2(quick: bool) -> None:
    print("\n2. peak memory of one forward+backward, two MT columns, batch 16")
    print(f"{'duration s':>10}{'fused MB':>12}{'adjoint MB':>12}{'fused s':>10}{'adjoint s':>10}")
    for d in ((1, 5) if quick else (1, 2, 5, 10)):
        rd = run("decision_long", "direct", 16, d, 1, "fused")
        ra = run("decision_long", "adjoint", 16, d, 1, "torchdiffeq")
        print(f"{d:>10}{rd['peak_rss_mb']:>12.0f}{ra['peak_rss_mb']:>12.0f}{rd['seconds_per_update']:>10.1f}"
              f"{ra['seconds_per_update']:>10.1f}", flush=True)


def section3(quick: bool) -> None:
    from colplugin.tasks import XOR

    st = XOR().settings
    print(f"\n3. wall time to 100 % XOR test accuracy (XOR settings: up to {st.updates} updates, lr {st.lr}, "
          f"clip {st.clip_grad}, rollback {st.rollback}, stop at {st.stop_at_accuracy})")
    print(f"{'seed':>5}{'fused updates':>15}{'fused s':>10}{'adjoint updates':>17}{'adjoint s':>11}")
    for seed in ((0,) if quick else (0, 1, 2)):
        rf = run(seed, "direct", code=TO_100)
        ra = run(seed, "adjoint", code=TO_100)
        print(f"{seed:>5}{rf['updates']:>15}{rf['seconds']:>10.1f}{ra['updates']:>17}{ra['seconds']:>11.1f}",
              flush=True)


if __name__ == "__main__":
    main()
