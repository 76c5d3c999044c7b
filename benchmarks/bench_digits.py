"""The digits task at scale: time per update and per epoch, peak memory, for 100 and 1000 hidden columns.

Run by hand:  python benchmarks/bench_digits.py [--columns 100 1000] [--updates 3] [--threads 1]
                                                [--device cpu] [--nproc 1 2] [--batch-size 64]

For each hidden-area size, a fresh subprocess builds ``Digits(columns=N)`` (input 64 ->
N MT columns -> 10 MT columns, fused midpoint at 0.5 ms over a 0.1 s trial, batch 64) and
runs ``--updates`` training updates (forward + exact discrete-adjoint backward + Adam step,
no test evaluation), then one forward pass over the 100 held-out images evaluated per
update. Reported: the median seconds per update, the seconds of an epoch (1437 training
images = ceil(1437 / batch) updates, 23 at batch 64, each with its evaluation), and the process's
peak resident memory (``ru_maxrss``), which includes Python, torch and scikit-learn
(about 400 MB before any network exists).

``--nproc 2`` also times data-parallel updates (``colplugin.training.distributed``) with
two processes of one thread each.

A full training run is the command line's: ``colplugin train digits --columns 100 --seed 0
--out runs/digits100`` (its metrics.json holds ``final_accuracy`` on the 360 held-out
images and ``mlp_accuracy``, scikit-learn's MLPClassifier on the same split).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = r"""
import json, resource, sys, time
import torch
torch.set_num_threads({threads})
from colplugin.solve.simulate import simulate
from colplugin.tasks.digits import Digits
from colplugin.training import train
from colplugin.training.distributed import train_distributed

def main():
    task = Digits(columns={columns}, device={device!r}, batch_size={batch})
    times = []
    if {nproc} == 1:
        net = task.build_network(seed=0)
        train(net, task, updates={updates}, seed=0, progress=False, evaluate=False,
              callbacks=[lambda row: times.append(row["wall_seconds"])])
    else:
        r = train_distributed(task, {nproc}, seed=0, updates={updates}, progress=False, evaluate=False,
                              threads={threads})
        times = [row["wall_seconds"] for row in r["metrics"]]
        net = task.build_network(seed=0)
    per = sorted(b - a for a, b in zip([0.0] + times[:-1], times))
    test = task.test_set()
    t0 = time.perf_counter()
    with torch.no_grad():
        simulate(net, test.stimulus.to(net.W_intra.device, net.W_intra.dtype), task.duration, dt_out=task.dt_out,
                 solver=task.solver)
    if net.W_intra.is_cuda:
        torch.cuda.synchronize()
    evaluation = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    gpu = torch.cuda.max_memory_allocated() / 2**20 if net.W_intra.is_cuda else None
    print(json.dumps({{"seconds_per_update": per[len(per) // 2], "all_updates": per, "eval_seconds": evaluation,
                      "peak_rss_mb": rss, "peak_gpu_mb": gpu, "edges": int(net.inp_src.numel() + net.rec_src.numel()),
                      "learnable": sum(p.numel() for p in net.learnable_parameters())}}))

if __name__ == "__main__":
    main()
"""


def measure(columns: int, updates: int, threads: int, device: str, nproc: int, batch: int = 64) -> dict:
    code = CHILD.format(columns=columns, updates=updates, threads=threads, device=device, nproc=nproc, batch=batch)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--columns", type=int, nargs="+", default=[100, 1000])
    ap.add_argument("--updates", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--nproc", type=int, nargs="+", default=[1])
    ap.add_argument("--batch-size", type=int, default=64, help="images per update (default 64)")
    args = ap.parse_args()
    per_epoch = -(-1437 // args.batch_size)
    print(f"{'columns':>8} {'nproc':>6} {'edges':>8} {'s/update':>9} {'eval s':>7} {'s/epoch':>8} "
          f"{'peak RSS MB':>12} {'peak GPU MB':>12}")
    rows = []
    for n in args.columns:
        for p in args.nproc:
            r = measure(n, args.updates, args.threads, args.device, p, args.batch_size)
            epoch = per_epoch * (r["seconds_per_update"] + r["eval_seconds"])
            gpu = f"{r['peak_gpu_mb']:.0f}" if r["peak_gpu_mb"] is not None else "-"
            print(f"{n:>8} {p:>6} {r['edges']:>8} {r['seconds_per_update']:>9.2f} {r['eval_seconds']:>7.2f} "
                  f"{epoch:>8.1f} {r['peak_rss_mb']:>12.0f} {gpu:>12}", flush=True)
            rows.append({"columns": n, "nproc": p, "batch_size": args.batch_size, "seconds_per_epoch": epoch, **r})
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
