"""colplugin's Rosenbrock-W solve against the default dopri5 at 100, 1,000 and 10,000 columns, run by hand.

    python benchmarks/bench_stiff_solver.py [--sizes 100 1000 10000] [--batch 64] [--big-batch 1]
                                            [--tols 1e-3 2e-3 1e-4] [--threads 2] [--duration 0.5]

The network of ``benchmarks/bench_scale.py`` (one MT area of n full-size columns, lateral
L2/3E -> L2/3I onto ~10 other columns, learnable; 20 Hz into every L4E/L4I; float64; from
V = A = 0). Per size, each in a fresh subprocess, side by side in one run:

* one training update as ``bench_scale.py --goal`` times it: ``cp.simulate`` over
  ``--duration`` s recording 3 intervals, forward + backward of the mean end rate, gradients
  with respect to the lateral weights; seconds, evaluations (of the forward);
* accuracy of the same solve recording every 1 ms (forward only): the largest state error
  over the whole trajectory (the transients) and at the end, in mV, and the largest rate
  error (Hz), all against the fused dopri5 at rtol = atol = 1e-9.

Rows: the default (dopri5, rtol 1e-6) and ``Solver("ros34pw2", rtol=tol, atol=tol)`` per
``--tols``. ``--big-batch``: the batch of the 10,000-column rows (the default at batch 64
takes minutes there).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = r"""
import json, sys, time
import numpy as np, torch
import colplugin as cp
n, batch, duration, scheme, mode, threads = (int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), sys.argv[4],
                                             sys.argv[5], int(sys.argv[6]))
torch.set_num_threads(threads)
rng = np.random.default_rng(0)
k = min(10, n - 1)
pairs = np.array([(s, t) for s in range(n) for t in rng.choice(np.delete(np.arange(n), s), k, replace=False)])
net = cp.ColumnNetwork(cp.load_preset("dl25"), {"a": cp.Area("mt", n, split=False)},
                       [cp.Input("a", to="all"), cp.Lateral("a", columns=pairs, self_excitation=False, init=5.0,
                                                            learnable=True)], seed=0)
stim = cp.Stimulus.constant([20.0]).expand(batch)
method, _, tol = scheme.partition("@")
solver = (None if scheme == "default" else cp.Solver("dopri5", rtol=1e-9, atol=1e-9, backend="fused")
          if scheme == "reference" else cp.Solver(method, rtol=float(tol), atol=float(tol)))
out = {}
if mode == "update":
    t0 = time.perf_counter()
    tr = cp.simulate(net, stim, duration, dt_out=duration / 3, solver=solver, y0=net.initial_state(batch))
    t1 = time.perf_counter()
    tr.rate[-1].mean().backward()
    out = {"forward": t1 - t0, "update": time.perf_counter() - t0, "nfe": tr.nfe}
else:
    with torch.no_grad():
        tr = cp.simulate(net, stim, duration, dt_out=1e-3, solver=solver, y0=net.initial_state(batch))
    np.save(sys.argv[7] + ".state.npy", tr.state.numpy()[:, :8])
    np.save(sys.argv[7] + ".rate.npy", tr.rate.numpy()[:, :8])
    out = {"nfe": tr.nfe}
print(json.dumps(out))
"""


def child(*args) -> dict:
    r = subprocess.run([sys.executable, "-c", CHILD, *map(str, args)], capture_output=True, text=True)
    if r.returncode != 0:
        return {"error": (r.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    import tempfile

    import numpy as np

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 10000])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--big-batch", type=int, default=1, help="batch of the 10,000-column rows")
    ap.add_argument("--tols", type=float, nargs="+", default=[1e-3, 2e-3, 1e-4])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--duration", type=float, default=0.5)
    a = ap.parse_args()
    print(f"{a.duration} s from rest, float64, {a.threads} threads; errors against dopri5 at rtol 1e-9 "
          "(states recorded every 1 ms; the first 8 trials)\n")
    print("| columns | batch | solver | update s (fwd + bwd) | forward s | evaluations | transient error (mV) "
          "| end error (mV) | rate error (Hz) |\n|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for n in a.sizes:
            batch = a.big_batch if n >= 10000 else a.batch
            acc_batch = min(batch, 8)
            ref = child(n, acc_batch, a.duration, "reference", "accuracy", a.threads, f"{tmp}/ref")
            if "error" in ref:
                print(f"| {n} | {batch} | reference failed: {ref['error']} |")
                continue
            ref_s, ref_r = np.load(f"{tmp}/ref.state.npy"), np.load(f"{tmp}/ref.rate.npy")
            for scheme in ["default"] + [f"ros34pw2@{t:g}" for t in a.tols]:
                u = child(n, batch, a.duration, scheme, "update", a.threads)
                acc = child(n, acc_batch, a.duration, scheme, "accuracy", a.threads, f"{tmp}/run")
                name = "dopri5, rtol 1e-6 (default)" if scheme == "default" else scheme.replace("@", ", rtol = atol = ")
                if "error" in u or "error" in acc:
                    print(f"| {n} | {batch} | {name} | failed: {u.get('error', acc.get('error'))} |")
                    continue
                s, r = np.load(f"{tmp}/run.state.npy"), np.load(f"{tmp}/run.rate.npy")
                print(f"| {n} | {batch} | {name} | {u['update']:.2f} | {u['forward']:.2f} | {u['nfe']} | "
                      f"{np.abs(s - ref_s).max():.1e} | {np.abs(s[-1] - ref_s[-1]).max():.1e} | "
                      f"{np.abs(r - ref_r).max():.1e} |", flush=True)


if __name__ == "__main__":
    main()
