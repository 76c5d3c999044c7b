"""Time and peak memory from 10 to 10,000 columns, forward and forward+backward, run by hand.

    python benchmarks/bench_scale.py [--sizes 10 100 1000 10000] [--batches 1 64] [--duration 0.15]
                                     [--goal] [--goal-schemes midpoint@1e-3] [--skip-above 64000]
                                     [--threads 1 2]

One MT area of n full-size columns, lateral L2/3E -> L2/3I onto ~10 other columns per column
(about 10 target columns each), 20 Hz into every L4E/L4I, float64, from V = A = 0,
``--duration`` s of model time. Per size and batch, each in a fresh subprocess (so that the
peak resident memory is its own), side by side in one run:

* ``fused``: ``cp.simulate`` with its default solver (fused dopri5, rtol = atol = 1e-6; the
  compiled kernel or the eager sparse loop, whichever ``kernel="auto"`` picks), forward, and
  forward + backward of the mean rate at the end (exact discrete adjoint, checkpointed past
  64 MiB), gradients with respect to the learnable lateral weights;
* ``torchdiffeq``: dopri5 at the same tolerances, forward, and forward + backward by
  backpropagation through ``odeint``;
* ``brian2``: the exported rate model in ``cpp_standalone`` (euler at 0.1 ms, all trials in
  one NeuronGroup), forward only: its simulation loop, and its code generation + build.

``solve MB`` is the child's peak RSS minus its RSS before the solve. Configurations where
columns x batch exceeds ``--skip-above`` are left out for torchdiffeq and Brian2.
``--goal`` adds the issue's target row: one training update (forward + backward, 0.5 s of model
time) of 1,000 columns at batch 64 with the fused solver. ``--threads``: torch intra-op threads
(``torch.set_num_threads``; the compiled kernel shares chunks of trials between as many), one
table per value, and one goal row per value. ``--goal-schemes midpoint@1e-3 rk4@2e-3`` times the
goal row also with fixed-step schemes and gives each one's end rates against dopri5 at rtol 1e-9.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import numpy as np

CHILD = r"""
import json, resource, sys, time
import numpy as np, torch
import colplugin as cp
n, batch, duration, backend, mode = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), sys.argv[4], sys.argv[5]
torch.set_num_threads(int(sys.argv[6]))
scheme = sys.argv[7] if len(sys.argv) > 7 else "default"
rng = np.random.default_rng(0)
k = min(10, n - 1)
projs = [cp.Input("a", to="all")]
if k > 0:
    pairs = np.array([(s, t) for s in range(n) for t in rng.choice(np.delete(np.arange(n), s), k, replace=False)])
    projs.append(cp.Lateral("a", columns=pairs, self_excitation=False, init=5.0, learnable=True))
net = cp.ColumnNetwork(cp.load_preset("dl25"), {"a": cp.Area("mt", n, split=False)}, projs, seed=0)
stim = cp.Stimulus.constant([20.0]).expand(batch)
rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
out = {}
t0 = time.perf_counter()
if backend == "brian2":
    run = cp.to_brian2(net, stim, duration, trial=None, method="euler", record_dt=duration / 3,
                       device="cpp_standalone").run()
    out = {"seconds": run.run_seconds, "build_seconds": run.wall_seconds - run.run_seconds}
else:
    solver = None if backend == "fused" else cp.Solver("dopri5", rtol=1e-6, atol=1e-6, backend="torchdiffeq")
    if scheme != "default":  # "METHOD@STEP" (fixed step, fused) or "reference" (dopri5, rtol 1e-9)
        method, _, step = scheme.partition("@")
        solver = (cp.Solver("dopri5", rtol=1e-9, atol=1e-9, backend="fused") if method == "reference"
                  else cp.Solver(method, rtol=float(step), atol=float(step)) if method == "ros34pw2"
                  else cp.Solver(method, step=float(step), backend="fused"))
    with torch.set_grad_enabled(mode == "backward"):
        tr = cp.simulate(net, stim, duration, dt_out=duration / 3, solver=solver, y0=net.initial_state(batch))
        if mode == "backward":
            tr.rate[-1].mean().backward()
    out = {"seconds": time.perf_counter() - t0, "nfe": tr.nfe,
           "rate_end": tr.rate[-1].detach().reshape(-1)[:: max(1, tr.rate[-1].numel() // 4096)].tolist()}
out["solve_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - rss0
print(json.dumps(out))
"""


def child(n: int, batch: int, duration: float, backend: str, mode: str, threads: int = 1,
          scheme: str = "default") -> dict:
    r = subprocess.run([sys.executable, "-c", CHILD, str(n), str(batch), str(duration), backend, mode, str(threads),
                        scheme], capture_output=True, text=True)
    if r.returncode != 0:
        return {"error": (r.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(r.stdout.strip().splitlines()[-1])


def cell(r: dict | None, key: str = "seconds") -> str:
    if r is None:
        return f"{'-':>9} {'-':>8}"
    if "error" in r:
        return f"{'error':>9} {'':>8}"
    return f"{r[key]:>9.3f} {r['solve_mb']:>8.0f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="*", default=[10, 100, 1000, 10000])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 64])
    ap.add_argument("--duration", type=float, default=0.15)
    ap.add_argument("--skip-above", type=int, default=64000)
    ap.add_argument("--goal", action="store_true")
    ap.add_argument("--threads", type=int, nargs="+", default=[1])
    ap.add_argument("--goal-schemes", nargs="*", default=[], metavar="METHOD@STEP",
                    help="also time the goal row with fixed-step fused schemes, e.g. midpoint@1e-3 rk4@2e-3, or "
                         "the Rosenbrock-W scheme at a tolerance, ros34pw2@1e-3, and give each one's error "
                         "against dopri5 at rtol 1e-9")
    args = ap.parse_args()
    for th in args.threads:
        if not args.sizes:
            break
        print(f"\n{args.duration} s of model time, float64, {th} thread(s); seconds and solve MB "
              "(peak RSS of the solve)")
        print(f"{'columns':>7} {'batch':>5} | {'fused fwd':>9} {'MB':>8} | {'fwd+bwd':>9} {'MB':>8} | "
              f"{'tdiffeq fwd':>9} {'MB':>8} | {'fwd+bwd':>9} {'MB':>8} | {'brian2 run':>9} {'MB':>8} {'build s':>7}")
        for n in args.sizes:
            for batch in args.batches:
                small = n * batch <= args.skip_above
                f = child(n, batch, args.duration, "fused", "forward", th)
                fb = child(n, batch, args.duration, "fused", "backward", th)
                t = child(n, batch, args.duration, "torchdiffeq", "forward", th) if small else None
                tb = child(n, batch, args.duration, "torchdiffeq", "backward", th) if small else None
                b = child(n, batch, args.duration, "brian2", "forward", th) if small else None
                build = f"{b['build_seconds']:>7.1f}" if b and "error" not in b else f"{'-':>7}"
                print(f"{n:>7} {batch:>5} | {cell(f)} | {cell(fb)} | {cell(t)} | {cell(tb)} | {cell(b)} {build}",
                      flush=True)
    if args.goal:
        ref = None
        if args.goal_schemes:  # the accuracy of each scheme: end rates against a tight dopri5, forward only
            ref = child(1000, 64, 0.5, "fused", "forward", max(args.threads), "reference")
        for th in args.threads:
            for scheme in ["default"] + list(args.goal_schemes):
                r = child(1000, 64, 0.5, "fused", "backward", th, scheme)
                name = ("dopri5, rtol 1e-6 (the default)" if scheme == "default" else
                        scheme.replace("@", " at rtol = atol = ") if scheme.startswith("ros34pw2") else
                        scheme.replace("@", " at ") + " s")
                err = ""
                if ref and "rate_end" in ref and "rate_end" in r:
                    a, b = np.asarray(r["rate_end"]), np.asarray(ref["rate_end"])
                    err = f", end rates vs dopri5 rtol 1e-9: max |diff| {np.abs(a - b).max():.2e} Hz " \
                          f"(rates up to {np.abs(b).max():.3g} Hz)"
                print(f"\ngoal: one update (forward + backward, 0.5 s of model time), 1000 columns, batch 64, fused "
                      f"{name}, {th} thread(s): {r.get('seconds', float('nan')):.1f} s, "
                      f"{r.get('solve_mb', float('nan')):.0f} MB, {r.get('nfe', '?')} evaluations{err} "
                      f"(goal: <= 3 s on 2 threads)", flush=True)

if __name__ == "__main__":
    main()
