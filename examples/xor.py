"""
XOR with three columns (dL25 Figure 1B)
=======================================

Experiment 1 of the paper: two MT columns (A and B, area ``lower``) receive two inputs
through learnable weights, and drive a third column (C, area ``upper``) through learnable
feedforward weights. A trial is 0.5 s without input, then 0.5 s of the pattern
``(x1, x2)``, a logical 1 being 20 Hz; the output is C's L2/3E rate at the end of the trial,
and the network should compute XOR. Figure 1B shows the test accuracy per update for
several initialisations (seeds); Figure 1A the learned weights of one solution.

With ``--quick`` (what the documentation build runs) two seeds train for at most three
updates; without it, :func:`colplugin.experiments.reproduce` trains the paper's ten seeds
with the task's settings (up to 50 Adam updates each, stop at 100 % test accuracy)::

    python examples/xor.py            # 10 seeds, outputs in runs/example-xor/
    python examples/xor.py --quick    # 2 seeds, 3 updates at most
"""

# %%
# Settings
# --------
# ``--quick`` trains a few updates; ``--out`` chooses the output directory (default: a
# temporary directory with ``--quick``, else ``runs/example-xor``).

import argparse
import json
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import torch

import colplugin as cp
from colplugin.experiments import reproduce
from colplugin.plotting import plot_training, plot_weights, show
from colplugin.tasks.xor import truth_table

parser = argparse.ArgumentParser(description="dL25 Figure 1B: XOR learned by three columns")
parser.add_argument("--quick", action="store_true", help="2 seeds, at most 3 updates (the documentation's run)")
parser.add_argument("--out", type=Path, help="output directory (default: runs/example-xor, or a temporary "
                                             "directory with --quick)")
args = parser.parse_args()
out = args.out or (Path(tempfile.mkdtemp(prefix="colplugin-xor-")) if args.quick else Path("runs/example-xor"))
print(f"output directory: {out}")
torch.set_num_threads(1)  # small solves: one thread is fastest



# %%
# Train the seeds
# ---------------
# :func:`~colplugin.experiments.reproduce` trains seeds ``0, 1, ...`` into
# ``out/seed<k>/`` (checkpoint, metrics, figures) and summarises them: how many reached
# 100 % test accuracy, after how many updates, and which logical function each column
# learned (the paper's solution is A = OR, B = AND, C = XOR).

summary = reproduce("xor", out, seeds=2 if args.quick else None, updates=3 if args.quick else None,
                    progress=not args.quick)
print(summary["headline"])

# %%
# Figure 1B: test accuracy per update
# -----------------------------------
# One line per seed, from update 0 (the initial weights) on; each seed's
# ``metrics.json`` holds its test accuracy after every update.

metrics = {int(p.name[4:]): json.loads((p / "metrics.json").read_text())["per_update"]
           for p in sorted(out.glob("seed*"))}
show(plot_training(metrics, title="XOR: test accuracy per update (one line per seed)"))

# %%
# Figure 1A: the learned weights of seed 0
# ----------------------------------------
# Arrows from the inputs to A and B and from A and B to C; blue arrows end on excitatory
# populations, red ones on inhibitory ones, and the width grows with the weight.

net = cp.load_checkpoint(out / "seed0" / "checkpoint.pt")["network"]
show(plot_weights(net, title="XOR seed 0: learned weights (dL25 Figure 1A)"))

# %%
# What each column computes
# -------------------------
# :func:`~colplugin.tasks.xor.truth_table` thresholds each column's L2/3E response to the
# four patterns (00, 01, 10, 11) at the midpoint of its range and names the function.

for column, info in truth_table(net).items():
    print(f"{column}: computes {info['function']:<6} E/I input ratio {info['EI_ratio']:.2f}  "
          f"L2/3E responses {[round(x, 3) for x in info['responses_hz']]} Hz")
print("final test accuracy (seed 0):", json.loads((out / "seed0" / "metrics.json").read_text())["final_accuracy"])

# %%
# C's output over a trial
# -----------------------
# The trained network's response to the four noiseless patterns: C's L2/3E rate, which
# the read-out takes at the end of the trial (the pattern is on from 0.5 s).

task = cp.tasks.XOR()
stim = task.evaluation_stimulus()
with torch.no_grad():
    traj = cp.simulate(net, stim, duration=task.duration, dt_out=0.005)
fig, ax = plt.subplots(figsize=(6, 3.5), constrained_layout=True)
for k, pattern in enumerate(("00", "01", "10", "11")):
    ax.plot(traj.t.numpy(), traj.get("rate", "upper", 0, "L23E")[:, k].numpy(),
            label=f"x = {pattern} (XOR {int(pattern[0] != pattern[1])})")
ax.axvspan(task.t_on, task.duration, color="0.92", zorder=0)
ax.set_xlabel("time (s)")
ax.set_ylabel("C's L2/3E rate (Hz)")
ax.set_title("XOR seed 0: output column (grey: pattern on)")
ax.legend(fontsize=8)
