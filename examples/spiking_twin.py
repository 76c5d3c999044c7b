"""
The spiking twin of a trained network
=====================================

A trained network of rate columns (the DMF) is a description of spiking circuits: each
column stands for the eight populations of LIF neurons of a cortical microcircuit, and a
learned inter-column weight ``W`` for ``K = |W| / J`` synapses of strength ``J`` per
target neuron. :func:`colplugin.spiking.spiking_twin` builds that circuit, and
:func:`colplugin.analysis.twin.twin_run` runs it for every condition of a task and asks
whether the spiking neurons still solve it.

Here the network is the paper's XOR network (three MT columns, see :doc:`xor`), briefly
trained, and its twin runs on Brian2. With ``--quick`` (what the documentation build runs)
the twin is tiny (1 % of the neurons, 5 % of the recurrent in-degrees: about 3,000
neurons) and runs each of the four input patterns once, on Brian2's runtime device;
without it, XOR trains with the task's settings and the twin has the package's default
size (10 % of the neurons, half the in-degrees) and runs five trials per pattern on
Brian2's C++ standalone device::

    python examples/spiking_twin.py            # outputs in runs/example-twin/
    python examples/spiking_twin.py --quick    # tiny twin, one trial per pattern
"""

# %%
# Settings
# --------

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch

import colplugin as cp
from colplugin.plotting import show
from colplugin.analysis.figures import plot_twin_overlay, plot_twin_rasters, plot_twin_rates
from colplugin.analysis.twin import twin_run
from colplugin.spiking import simulate_spiking, spiking_twin

parser = argparse.ArgumentParser(description="the spiking twin of a trained XOR network, on Brian2")
parser.add_argument("--quick", action="store_true", help="3 training updates, a tiny twin, one trial per pattern "
                                                         "(the documentation's run)")
parser.add_argument("--out", type=Path, help="output directory (default: runs/example-twin, or a temporary "
                                             "directory with --quick)")
args = parser.parse_args()
out = args.out or (Path(tempfile.mkdtemp(prefix="colplugin-twin-")) if args.quick else Path("runs/example-twin"))
print(f"output directory: {out}")
torch.set_num_threads(1)  # small solves: one thread is fastest
if args.quick:
    twin = {"scale": 0.01, "k_scale": 0.05, "trials": 1, "device": "runtime", "nix_neurons": 1}
else:  # the defaults of `colplugin twin`
    twin = {"scale": 0.1, "k_scale": 0.5, "trials": 5, "device": "cpp_standalone", "nix_neurons": 10}



# %%
# Train the rate network
# ----------------------

task = cp.tasks.XOR()
net = task.build_network(seed=0)
result = cp.train(net, task, updates=3 if args.quick else None, seed=0, progress=not args.quick)
print(f"DMF: final test accuracy {result.summary['final_accuracy']} after {result.summary['updates']} update(s)")

# %%
# Run the twin for every input pattern
# ------------------------------------
# :func:`~colplugin.analysis.twin.twin_run` builds one twin per condition of the task's
# evaluation stimulus (the patterns 00, 01, 10, 11), runs it ``trials`` times (trial
# ``j`` with seed ``j``: new connectivity, delays, initial potentials and Poisson input),
# and reads every population's rate over the task's read-out window (the last 0.2 s).
# The spiking rates go through the task's own read-out: the twin's XOR accuracy. It
# writes ``twin.json``, ``report.md``, ``spikes.nix`` (Neo) and figures into ``out/twin``.

stim = task.evaluation_stimulus()
report = twin_run(out / "twin", net, stim, task.duration, task, backend="brian2", device=twin["device"],
                  scale=twin["scale"], k_scale=twin["k_scale"], trials=twin["trials"], seed=0,
                  nix_neurons=twin["nix_neurons"], progress=not args.quick)
print(f"twin of {report['n_neurons']} neurons and {report['n_synapses']:,} synapses per pattern; XOR accuracy: "
      f"spiking {report['accuracy']:.3g}, DMF {report['dmf_accuracy']:.3g} (same read-out window)")
print(report["table_md"])

# %%
# Spiking against DMF rates
# -------------------------
# Every population of every column and pattern in the read-out window (one panel per
# column); grey: within 30 % of the DMF. A scaled-down twin keeps every neuron's mean
# input (the missing recurrent synapses become a DC current), not the gain: with the
# in-degree scale ``k``, a change of the recurrent rates acts through ``sqrt(k)`` of the
# recurrent input only, and the input fluctuations differ too. A twin as small as the
# quick one (``k = 0.05``) therefore deviates from the DMF in several populations.

names = list(report["per_population"])
per = [report["per_population"][n]["per_condition"] for n in names]
dmf = np.array([[c[b]["dmf_hz"] for c in per] for b in range(stim.batch_size)])  # (patterns, populations)
spk = np.array([[c[b]["spiking_hz"] for c in per] for b in range(stim.batch_size)])
spk_sd = np.array([[c[b]["spiking_sd_hz"] for c in per] for b in range(stim.batch_size)])
w0, w1 = report["readout_window_s"]
show(plot_twin_rates(dmf, spk, spk_sd, names, title=f"spiking twin (scale {twin['scale']}) vs DMF, four patterns, "
                                                    f"read-out window [{w0:g}, {w1:g}) s"))

# %%
# One pattern in detail
# ---------------------
# The same steps by hand for pattern 01: :func:`~colplugin.spiking.spiking_twin` gives
# a backend-neutral :class:`~colplugin.spiking.SpikingNetwork`, and
# :func:`~colplugin.spiking.simulate_spiking` runs it. A learned feedforward weight
# becomes a number of synapses per target neuron:

tw = spiking_twin(net, stim, trial=1, scale=twin["scale"], k_scale=twin["k_scale"], duration=task.duration)
w = net.projection_weights("feedforward:lower->upper")
W = next(x for x, s, t in zip(w["weight"], w["source"], w["target"]) if (s, t) == ("lower[0].L23E", "upper[0].L4E"))
conn, size = tw.connection("lower[0].L23E", "upper[0].L4E"), tw.population("upper[0].L4E").size
print(f"lower[0].L23E -> upper[0].L4E, learned weight {W:.1f} nA: {conn.n_synapses} synapses onto {size} neurons "
      f"({conn.n_synapses / size:.1f} each, in-degree scale {twin['k_scale']}) of {conn.weight:.1f} pA")
spikes = simulate_spiking(tw, task.duration, backend="brian2", device=twin["device"], seed=0)
show(plot_twin_rasters(spikes, 0.0, task.duration, title="pattern 01 (input from 0.5 s), one trial"))

# %%
# Population rates over time: the DMF (lines) and the twin's spikes counted in 10 ms bins
# (steps), the read-out window shaded.

with torch.no_grad():
    traj = cp.simulate(net, stim, duration=task.duration, dt_out=0.005)
edges = np.arange(0.0, task.duration + 1e-9, 0.01)
binned = np.stack([np.histogram(spikes.spikes[p][1], edges)[0] / spikes.sizes[p] / 0.01
                   for p in spikes.populations], 1)
show(plot_twin_overlay(traj.t.numpy(), traj.rate[:, 1].numpy(), 0.5 * (edges[1:] + edges[:-1]), binned,
                       spikes.populations, window=task.readout_window(), title="pattern 01: DMF vs spiking twin"))
# sphinx_gallery_thumbnail_number = 2

# %%
# The spikes as Neo
# -----------------
# ``spikes.nix`` holds one Segment per pattern (and kept trial) with the SpikeTrains of
# the first ``nix_neurons`` neurons of every population (one with ``--quick``: NIX writes
# one object per train), annotated by area, column, population, layer and cell type, plus
# the network and the inputs: it can serve as a fitting target (``colplugin train fit
# --target spikes.nix``).

block = cp.load_nix(out / "twin" / "spikes.nix")
train = block.segments[1].spiketrains[0]
ann = train.annotations
print(f"{len(block.segments)} segments ({', '.join(repr(seg.name) for seg in block.segments)}), "
      f"{len(block.segments[1].spiketrains)} spike trains each")
print(f"segment 1, first train: {ann['area']}[{int(ann['column'])}].{ann['population']} (layer {ann['layer']}, "
      f"cell type {ann['cell_type']}), {len(train)} spikes in [{train.t_start}, {train.t_stop}]")
