"""
Fitting a Neo recording
=======================

The way back in: a network of columns is fitted to rates stored as Neo, then run in
Brian2 and written as Neo again. The recording here is made by hand as a ``neo.Block``
(what a lab's rates or an analysis pipeline would provide): the L2/3 rates of two
columns under two trials of input, from a hidden network with known weights, with
measurement noise. A second network of the same architecture, with other initial
weights, learns its lateral weights from the file alone.

1. Record: the hidden network's rates (4 channels every 10 ms, plus noise) as a Neo
   Block, written to NIX.
2. Fit: :func:`colplugin.tasks.fit.fit` reads the target and the inputs from the Block
   and trains the new network's learnable weights.
3. Export: the fitted network runs in Brian2 on the inputs read from the file; its run
   is written as NIX too and compared with the recording.

With ``--quick`` (what the documentation build runs) the fit takes 20 updates; without
it, the fit's default settings (60 updates)::

    python examples/neo_round_trip.py            # outputs in runs/example-neo/
    python examples/neo_round_trip.py --quick    # 20 updates
"""

# %%
# Settings
# --------

import argparse
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import neo
import numpy as np
import quantities as pq
import torch

import colplugin as cp
from colplugin.export.neo import stimulus_from_neo
from colplugin.plotting import plot_training, show
from colplugin.tasks.fit import fit

parser = argparse.ArgumentParser(description="fit a network of columns to a Neo recording, run the fit in Brian2")
parser.add_argument("--quick", action="store_true", help="20 updates of the fit (the documentation's run)")
parser.add_argument("--out", type=Path, help="output directory (default: runs/example-neo, or a temporary "
                                             "directory with --quick)")
args = parser.parse_args()
out = args.out or (Path(tempfile.mkdtemp(prefix="colplugin-neo-")) if args.quick else Path("runs/example-neo"))
out.mkdir(parents=True, exist_ok=True)
print(f"output directory: {out}")
torch.set_num_threads(1)  # small solves: one thread is fastest



# %%
# The network and the hidden truth
# --------------------------------
# Two MT columns with thalamic input and learnable lateral weights (L2/3E of each column
# onto L2/3I of the other, and L2/3E self-excitation). The hidden network has cross
# weights of 250 nA and self weights of 10 nA; it is simulated under two trials of input
# (none for 0.1 s, then 30 / 20 Hz or 15 / 35 Hz).

params = cp.load_preset("dl25")


def network(seed):
    return cp.ColumnNetwork(params, {"mt": ("mt", 2)}, [cp.Input("mt"), cp.Lateral("mt", init=50.0)], seed=seed)


hidden = network(1)
hidden.set_projection_weights("lateral:mt:cross", 250.0)
hidden.set_projection_weights("lateral:mt:self", 10.0)
duration, dt = 0.4, 0.01
stim = cp.Stimulus([0.0, 0.1], [[[0, 0], [30, 20]], [[0, 0], [15, 35]]])
with torch.no_grad():
    truth = cp.simulate(hidden, stim, duration=duration, dt_out=dt)

# %%
# The recording as a Neo Block
# ----------------------------
# One Segment per trial, holding the rates as an AnalogSignal named ``"rate"`` (Hz; each
# channel annotated with area, column and population, which is how the fit matches
# channels to the network's populations) and the inputs as an AnalogSignal named
# ``"input"`` (Hz, one channel per network input, on the same clock). Noise: Gaussian,
# 5 % of each channel's RMS rate, rates clipped at 0 Hz.

channels = ["mt[0].L23E", "mt[1].L23E", "mt[0].L23I", "mt[1].L23I"]
idx = [hidden.channel_names.index(c) for c in channels]
clean = truth.rate[:, :, idx].numpy()  # (T, trials, channels), Hz
rng = np.random.default_rng(0)
noisy = np.clip(clean + 0.05 * np.sqrt(np.mean(clean ** 2, axis=(0, 1))) * rng.standard_normal(clean.shape), 0, None)
inputs = stim.sample(truth.t).numpy()  # (T, trials, inputs), Hz

recording = neo.Block(name="two columns, L2/3 rates", description="simulated recording with 5 % noise")
for b in range(stim.batch_size):
    seg = neo.Segment(name=f"trial {b}", index=b)
    seg.analogsignals.append(neo.AnalogSignal(
        noisy[:, b], units="Hz", sampling_period=dt * pq.s, name="rate",
        array_annotations={"area": np.array(["mt"] * 4), "column": np.array([0, 1, 0, 1]),
                           "population": np.array(["L23E", "L23E", "L23I", "L23I"])}))
    seg.analogsignals.append(neo.AnalogSignal(inputs[:, b], units="Hz", sampling_period=dt * pq.s, name="input"))
    recording.segments.append(seg)
cp.save_nix(recording, out / "recording.nix")

# %%
# Fit a new network to the file
# -----------------------------
# Everything below reads the recording from ``recording.nix`` only. The new network has
# the same architecture and other initial weights (seed 5, lateral weights near 50 nA);
# :func:`~colplugin.tasks.fit.fit` minimises the squared difference between its rates and
# the recorded ones (both trials in each update) and keeps the best weights. Its accuracy
# is 1 - the relative RMS error of the fitted channels.

block = cp.load_nix(out / "recording.nix")
net = network(5)
res = fit(net, block, channels, updates=20 if args.quick else None, progress=not args.quick)
rms0, rms = 1 - res.metrics[0]["test_accuracy"], 1 - res.summary["final_accuracy"]
print(f"relative RMS error of the fitted channels: {100 * rms0:.2f} % after 1 update -> {100 * rms:.2f} % (best)")
print("learned cross weights (nA):", net.projection_weights("lateral:mt:cross")["weight"].round(1), "(hidden 250)")
print("learned self weights (nA): ", net.projection_weights("lateral:mt:self")["weight"].round(1), "(hidden 10)")
show(plot_training({5: res.metrics}, title="fit: 1 - relative RMS error per update"))

# %%
# Run the fitted network in Brian2, write it as NIX
# -------------------------------------------------
# The inputs come from the file (:func:`~colplugin.export.neo.stimulus_from_neo`);
# Brian2 runs both trials at once, and :func:`colplugin.to_neo` turns its run into a
# Block of the same layout as the recording's.

stim_from_file = stimulus_from_neo(block)
run = cp.to_brian2(net, stim_from_file, duration=duration, trial=None, record_dt=dt).run()
cp.save_nix(cp.to_neo(run, description="Brian2 run of the fitted network"), out / "fit_brian2.nix")

t_rec, r_rec = cp.from_neo(cp.load_nix(out / "recording.nix"), channels)
t_b2, r_b2 = cp.from_neo(cp.load_nix(out / "fit_brian2.nix"), channels)
n = min(len(t_rec), len(t_b2))
err_rec = np.sqrt(np.mean((r_b2[:n] - r_rec[:n]) ** 2) / np.mean(r_rec[:n] ** 2))
err_truth = np.sqrt(np.mean((r_b2[:n] - clean[:n]) ** 2) / np.mean(clean[:n] ** 2))
print(f"Brian2 run of the fitted network vs the recording (from NIX files): relative RMS {100 * err_rec:.2f} %")
print(f"... vs the hidden network's noiseless rates: relative RMS {100 * err_truth:.2f} %")

# %%
# Recording, fit and hidden truth
# -------------------------------
# Dots: the recording; lines: the fitted network in Brian2; grey: the hidden network's
# noiseless rates (the fit recovers them better than the noise would suggest).

fig, axes = plt.subplots(1, stim.batch_size, figsize=(11, 3.8), sharey=True, constrained_layout=True)
for b, ax in enumerate(axes):
    for k, name in enumerate(channels):
        ax.plot(t_rec, r_rec[:, b, k], ".", ms=3, color=f"C{k}")
        ax.plot(t_b2[:n], r_b2[:n, b, k], color=f"C{k}", label=name)
        ax.plot(truth.t.numpy(), clean[:, b, k], color="0.6", lw=0.8, zorder=0)
    ax.set_title(f"trial {b}: inputs {stim.rates[b, 1].tolist()} Hz from 0.1 s", fontsize=9)
    ax.set_xlabel("time (s)")
axes[0].set_ylabel("rate (Hz)")
axes[-1].legend(fontsize=8)
# sphinx_gallery_thumbnail_number = 2
