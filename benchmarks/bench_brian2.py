"""Brian2 cpp_standalone vs torch for 1 s of model time, run by hand.

    python benchmarks/bench_brian2.py [--columns 1000] [--duration 1.0]

One MT area of full-size columns with ~10 lateral targets per column. Torch: rk4 at
0.1 ms (the Brian2 step) and dopri5, float64, 1 thread. Brian2: cpp_standalone, rk4,
dt = 0.1 ms, monitors every 1 ms; compile time is reported separately from the run.
"""

import argparse
import time

import numpy as np
import torch

import colplugin as cp

ap = argparse.ArgumentParser()
ap.add_argument("--columns", type=int, default=1000)
ap.add_argument("--duration", type=float, default=1.0)
a = ap.parse_args()
torch.set_num_threads(1)
rng = np.random.default_rng(0)
n = a.columns
pairs = np.array([(s, t) for s in range(n) for t in rng.choice(np.delete(np.arange(n), s), 10, replace=False)])
net = cp.ColumnNetwork(cp.load_preset("dl25"), {"a": cp.Area("mt", n, split=False)},
                       [cp.Input("a"), cp.Lateral("a", columns=pairs, init=5.0)], seed=0)
stim = cp.Stimulus([0.0, 0.1], np.stack([np.zeros(n), np.full(n, 10.0)]))
for solver in (cp.Solver("rk4", step=1e-4), cp.Solver("dopri5", rtol=1e-6, atol=1e-6)):
    t0 = time.perf_counter()
    with torch.no_grad():
        cp.simulate(net, stim, a.duration, dt_out=1e-3, solver=solver)
    print(f"torch {solver.method:<7} {time.perf_counter() - t0:8.2f} s for {a.duration} s of model time")
run = cp.to_brian2(net, stim, a.duration, method="rk4", record_dt=1e-3, device="cpp_standalone").run()
print(f"brian2 cpp_standalone rk4: {run.wall_seconds:8.2f} s in all; simulation loop {run.run_seconds:.2f} s, "
      f"code generation + compilation + I/O {run.wall_seconds - run.run_seconds:.2f} s")
