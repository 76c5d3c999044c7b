"""
Winner-take-all decisions with two columns (dL25 Figure 2)
==========================================================

Experiment 2 of the paper: two MT columns receive the evidence for two alternatives
(``mu_A``, ``mu_B`` in Hz) and learn, through their lateral L2/3E -> L2/3I weights and each
column's L2/3E self-excitation, to reproduce the reduced Wong-Wang model of a perceptual
decision (its rates divided by 20, its three 5 s phases mapped onto 0.5 s phases: no
input, stimulus, no input). Figure 2 shows the excitatory rates of every layer for
evidence ``c = mu_A - mu_B`` from 0 to 20 Hz: the column with the stronger input wins.

With ``--quick`` (what the documentation build runs) the network trains for two updates;
without it, with the paper's settings (Adam, adjoint gradients, until the validation loss
stops improving, at most 400 updates)::

    python examples/decision.py            # outputs in runs/example-decision/
    python examples/decision.py --quick    # 2 updates
"""

# %%
# Settings
# --------
# ``--quick`` trains two updates; ``--out`` chooses the output directory (default: a
# temporary directory with ``--quick``, else ``runs/example-decision``).

import argparse
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

import colplugin as cp
from colplugin.experiments import train_run
from colplugin.plotting import plot_decision, plot_figure2, plot_training, show

parser = argparse.ArgumentParser(description="dL25 Figure 2: winner-take-all decisions of two columns")
parser.add_argument("--quick", action="store_true", help="2 updates (the documentation's run)")
parser.add_argument("--out", type=Path, help="output directory (default: runs/example-decision, or a temporary "
                                             "directory with --quick)")
args = parser.parse_args()
out = args.out or (Path(tempfile.mkdtemp(prefix="colplugin-decision-")) if args.quick
                   else Path("runs/example-decision"))
print(f"output directory: {out}")
torch.set_num_threads(1)  # small solves: one thread is fastest



# %%
# Train
# -----
# :func:`~colplugin.experiments.train_run` builds the task's network, trains it, and
# evaluates it: the fit to Wong-Wang on held-out pairs (``decision_metrics.json``) and the
# Figure 2 protocol (``figure2.json``, ``figure2.png``), all in ``out``.

res = train_run("decision", seed=0, out=out, updates=2 if args.quick else None,
                gradient="direct" if args.quick else "adjoint", progress=not args.quick)
s = res.summary
print(f"{s['updates']} update{'s' * (s['updates'] != 1)}, final loss {s['final_loss']:.4g} ({s['final_loss_on']}), "
      f"accuracy {s['final_accuracy']}")
show(plot_training({0: res.metrics}, key="test_loss", title="decision: validation loss per update"))

# %%
# Figure 2 as the paper draws it
# ------------------------------
# ``mu_A = 20`` Hz and ``mu_B = 20 - c`` for ``c = 0, 2, ..., 20`` Hz, from high evidence
# (red) to low (purple); every trial starts from the network's rest state, the stimulus is
# on between 0.5 and 1 s (grey); each layer's rate (the mean of its E and I populations) is
# normalised to [0, 1]; the winner's rates are solid, the loser's dashed.

fig2 = res.evaluation  # the numbers of colplugin.tasks.decision.figure2
phases = fig2["phases_s"]
show(plot_figure2(np.asarray(fig2["t_s"]), np.asarray(fig2["layer_rates_normalised"]), fig2["evidence_hz"],
                  np.asarray(fig2["winner_column"]), stimulus=(phases[1], phases[2])))

# %%
# The excitatory rates in Hz
# --------------------------
# The same trials, every layer's E population in Hz (``figure2_raw.png``).

fig = plot_decision(np.asarray(fig2["t_s"]), np.asarray(fig2["rates_hz"]), fig2["evidence_hz"],
                    np.asarray(fig2["winner_column"]),
                    title="E rates per layer (winner solid, loser dashed); pre / stimulus (grey) / post")
for ax in fig.axes:
    ax.axvspan(phases[1], phases[2], color="0.92", zorder=0)
show(fig)
# sphinx_gallery_thumbnail_number = 2
wins = fig2["stronger_input_wins"]
print(f"the stronger input wins at {sum(wins)} of {len(wins)} evidence levels c > 0")
print("L2/3E separation at the end of the stimulus (Hz):",
      [round(x, 3) for x in fig2["stimulus_end_L23E_separation_hz"]])

# %%
# The fit to Wong-Wang
# --------------------
# Both columns' L2/3E rates (solid) against the Wong-Wang targets (dashed) for three
# pairs of inputs; the numbers are those of 64 held-out pairs (goal: normalised RMS error
# at most 0.15).

m = fig2["metrics"]
print(f"held-out pairs: normalised RMS error {m['nrmse']:.3g}, winner correct {m['winner_correct']}, "
      f"decision-time rank correlation {m['decision_time_rank_correlation']}")
task = cp.tasks.Decision()
mu = torch.tensor([[30.0, 25.0], [20.0, 22.0], [36.0, 32.0]], dtype=torch.float64)
with torch.no_grad():
    traj = cp.simulate(res.network, task.stimulus(mu), task.duration, dt_out=task.dt_out, solver=task.solver)
y, target = task.output(traj).numpy(), task.targets(mu).numpy()
T = min(len(y), len(target))
fig, axes = plt.subplots(1, len(mu), figsize=(11, 3.2), sharey=True, constrained_layout=True)
for b, ax in enumerate(axes):
    for k, name in enumerate(("A", "B")):
        ax.plot(traj.t.numpy()[:T], y[:T, b, k], color=f"C{k}", label=f"column {name}")
        ax.plot(traj.t.numpy()[:T], target[:T, b, k], "--", color=f"C{k}", label=f"Wong-Wang {name}")
    ax.axvspan(task.phase, 2 * task.phase, color="0.92", zorder=0)
    ax.set_title(f"mu = {mu[b, 0]:g}, {mu[b, 1]:g} Hz", fontsize=9)
    ax.set_xlabel("time (s)")
axes[0].set_ylabel("L2/3E rate (Hz)")
axes[-1].legend(fontsize=7)
