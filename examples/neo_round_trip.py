"""The whole loop through Neo files: target -> NIX -> fit -> Brian2 -> compare.

1. A known two-column network generates rates (the target) under two trials of input.
2. The rates are written as NIX (Neo) and read back.
3. A fresh network of the same architecture (other initial weights) is fitted to them.
4. The fit is exported to Brian2, run there, and written as NIX too.
5. All three are compared.

    python examples/neo_round_trip.py [--quick] [--out DIR]
"""

import argparse
from pathlib import Path

import numpy as np
import torch

import colplugin as cp
from colplugin.export.neo import stimulus_from_neo
from colplugin.tasks.fit import fit

parser = argparse.ArgumentParser()
parser.add_argument("--quick", action="store_true")
parser.add_argument("--out", default="runs/example-neo")
args = parser.parse_args()
torch.set_num_threads(1)
out = Path(args.out)
out.mkdir(parents=True, exist_ok=True)

params = cp.load_preset("dl25")


def network(seed):
    return cp.ColumnNetwork(params, {"mt": ("mt", 2)}, [cp.Input("mt"), cp.Lateral("mt", init=50.0)], seed=seed)


truth = network(1)
truth.set_projection_weights("lateral:mt:cross", 250.0)
truth.set_projection_weights("lateral:mt:self", 10.0)
stim = cp.Stimulus([0.0, 0.1], [[[0, 0], [30, 20]], [[0, 0], [15, 35]]])
with torch.no_grad():
    target = cp.simulate(truth, stim, duration=0.4, dt_out=0.01)
cp.save_nix(cp.to_neo(target, description="target from a known network"), out / "target.nix")

block = cp.load_nix(out / "target.nix")  # everything below reads only the file
channels = ["mt[0].L23E", "mt[1].L23E", "mt[0].L23I", "mt[1].L23I"]
net = network(5)
res = fit(net, block, channels, updates=20 if args.quick else 60, progress=not args.quick)
rms0, rms = 1 - res.metrics[0]["test_accuracy"], 1 - res.summary["final_accuracy"]
print(f"relative RMS error of the fitted channels: {100 * rms0:.2f} % after 1 update -> {100 * rms:.2f} % (best)")
print("learned cross weights (nA):", net.projection_weights("lateral:mt:cross")["weight"].round(1), "(truth 250)")
print("learned self weights (nA): ", net.projection_weights("lateral:mt:self")["weight"].round(1), "(truth 10)")

stim_from_file = stimulus_from_neo(block)
run = cp.to_brian2(net, stim_from_file, duration=0.4, trial=None, method="euler").run()
cp.save_nix(cp.to_neo(run), out / "fit_brian2.nix")
t_tgt, r_tgt = cp.from_neo(cp.load_nix(out / "target.nix"), channels)
t_b2, r_b2 = cp.from_neo(cp.load_nix(out / "fit_brian2.nix"), channels)
r_b2 = r_b2[:: int(round(0.01 / 1e-4))]  # Brian2 records every 0.1 ms, the target every 10 ms
n = min(len(r_b2), len(r_tgt))  # Brian2's monitor stops one step before the end
err = np.sqrt(np.mean((r_b2[:n] - r_tgt[:n]) ** 2)) / np.sqrt(np.mean(r_tgt[:n] ** 2))
print(f"Brian2 run of the fitted network vs target (from NIX files): relative RMS {100 * err:.2f} %")
