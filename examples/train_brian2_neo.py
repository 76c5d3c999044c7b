"""
Train, export to Brian2, write Neo files
========================================

The package's main path in one script: train a network of columns in PyTorch, run the
trained network in Brian2 (the same equations, with units), write both runs as Neo
files (NIX), read them back and compare. The network is the paper's XOR network (three
MT columns, see :doc:`xor`); any :class:`~colplugin.ColumnNetwork` goes the same way.

With ``--quick`` (what the documentation build runs) the network trains for three
updates; without it, with the task's settings (up to 50 updates)::

    python examples/train_brian2_neo.py            # outputs in runs/example-brian2-neo/
    python examples/train_brian2_neo.py --quick    # 3 updates
"""

# %%
# Settings
# --------

import argparse
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

import colplugin as cp
from colplugin.plotting import plot_overlay, show

parser = argparse.ArgumentParser(description="train in PyTorch, run in Brian2, write and read Neo (NIX) files")
parser.add_argument("--quick", action="store_true", help="3 training updates (the documentation's run)")
parser.add_argument("--out", type=Path, help="output directory (default: runs/example-brian2-neo, or a temporary "
                                             "directory with --quick)")
args = parser.parse_args()
out = args.out or (Path(tempfile.mkdtemp(prefix="colplugin-brian2-neo-")) if args.quick
                   else Path("runs/example-brian2-neo"))
out.mkdir(parents=True, exist_ok=True)
print(f"output directory: {out}")
torch.set_num_threads(1)  # small solves: one thread is fastest



# %%
# Train in PyTorch
# ----------------
# A task builds its network (with the paper's initialisation) and knows its training
# settings; :func:`colplugin.train` learns the learnable inter-column weights.

task = cp.tasks.XOR()
net = task.build_network(seed=0)
result = cp.train(net, task, updates=3 if args.quick else None, seed=0, progress=not args.quick)
n_updates = result.summary["updates"]
print(f"{n_updates} update{'s' * (n_updates != 1)}, final test accuracy {result.summary['final_accuracy']}")

# %%
# Run the trained network in PyTorch and in Brian2
# ------------------------------------------------
# The four input patterns of the task's evaluation (no input for 0.5 s, then 00, 01, 10
# or 11). :func:`colplugin.to_brian2` builds Brian2 objects for all four trials at once
# (``trial=None``); its default method, forward Euler at 0.1 ms, is the scheme of
# ``Solver("euler", step=1e-4)`` in PyTorch, so the two runs agree to rounding. Both
# record every millisecond; Brian2 generates Cython code (``target="cython"``: compiled
# once, cached, many times faster per step than the default ``"numpy"``).

stim = task.evaluation_stimulus()
with torch.no_grad():
    traj = cp.simulate(net, stim, duration=task.duration, dt_out=1e-3, solver=cp.Solver("euler", step=1e-4))
run = cp.to_brian2(net, stim, duration=task.duration, trial=None, record_dt=1e-3, target="cython").run()
print(f"Brian2: {run.trial_rates.shape[0]} samples x {run.n_trials} trials x {net.n_populations} populations "
      f"in {run.wall_seconds:.1f} s")
show(plot_overlay(traj, run, trial=1))

# %%
# Write both runs as Neo (NIX) files
# ----------------------------------
# :func:`colplugin.to_neo` makes a ``neo.Block`` of either run: one Segment per trial,
# an AnalogSignal of the rates (Hz, one channel per population, annotated with area,
# column, population, layer and cell type), the inputs and the stimulus epochs; the
# Block's annotations record the network and the solver.

cp.save_nix(cp.to_neo(traj, seed=0, description="XOR network, PyTorch (euler, 0.1 ms)"), out / "torch.nix")
cp.save_nix(cp.to_neo(run, seed=0, description="XOR network, Brian2 (euler, 0.1 ms)"), out / "brian2.nix")

block = cp.load_nix(out / "brian2.nix")
seg = block.segments[1]
rate = next(s for s in seg.analogsignals if s.name == "rate")
print(f"{block.name!r}: {len(block.segments)} segments; segment {seg.name!r} holds "
      f"{[s.name for s in seg.analogsignals]} and epochs {[e.name for e in seg.epochs]}")
print(f"rate signal: {rate.shape[0]} samples x {rate.shape[1]} channels in {rate.units.dimensionality}, "
      f"sampled every {rate.sampling_period.rescale('ms')}; channel 0 is "
      f"{rate.array_annotations['area'][0]}[{rate.array_annotations['column'][0]}]."
      f"{rate.array_annotations['population'][0]}")

# %%
# Read them back and compare
# --------------------------
# :func:`colplugin.from_neo` returns the times (s) and rates (Hz, time x trial x channel)
# of a Block, for any channels chosen by name.

channel = ["upper[0].L23E"]
t_torch, r_torch = cp.from_neo(cp.load_nix(out / "torch.nix"), channel)
t_b2, r_b2 = cp.from_neo(cp.load_nix(out / "brian2.nix"), channel)
n = min(len(t_torch), len(t_b2))
rel = np.abs(r_b2[:n] - r_torch[:n]) / np.maximum(np.abs(r_torch[:n]), 1e-3)
print(f"upper[0].L23E, Brian2 vs PyTorch read back from NIX: max relative difference {rel.max():.2e}")

fig, (ax_r, ax_d) = plt.subplots(1, 2, figsize=(11, 3.6), constrained_layout=True)
for k, pattern in enumerate(("00", "01", "10", "11")):
    ax_r.plot(t_torch[:n], r_torch[:n, k, 0], color=f"C{k}", lw=2, alpha=0.5, label=f"x = {pattern}")
    ax_r.plot(t_b2[:n], r_b2[:n, k, 0], "--", color=f"C{k}", lw=1)
    ax_d.semilogy(t_b2[:n], np.maximum(rel[:, k, 0], 1e-17), color=f"C{k}", lw=0.8)
ax_r.set_title("C's L2/3E from the NIX files (PyTorch thick, Brian2 dashed)", fontsize=9)
ax_r.set_xlabel("time (s)")
ax_r.set_ylabel("rate (Hz)")
ax_r.legend(fontsize=8)
ax_d.set_title("relative difference Brian2 vs PyTorch", fontsize=9)
ax_d.set_xlabel("time (s)")
