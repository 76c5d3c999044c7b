"""Torch vs Brian2 on a random 100-column network, euler and rk4 at dt = 0.1 ms.

    python validation/brian2_agreement.py [--columns 100] [--duration 0.5] [--out DIR]

The network: one MT area of full-size columns with random sparse lateral projections
(~10 target columns per column, L2/3E -> L2/3I and L2/3E self-excitation), random
learnable weights, and a fixed input to every column switched on at 0.1 s. Starts from rest.
"""

import argparse
import json
from pathlib import Path

import numpy as np
import torch

import colplugin as cp
from colplugin.experiments import export_run

ap = argparse.ArgumentParser()
ap.add_argument("--columns", type=int, default=100)
ap.add_argument("--duration", type=float, default=0.5)
ap.add_argument("--seed", type=int, default=0)
ap.add_argument("--out", default="runs/validation-brian2-agreement")
a = ap.parse_args()
torch.set_num_threads(1)
rng = np.random.default_rng(a.seed)
n = a.columns
pairs = np.array([(s, t) for s in range(n)
                  for t in rng.choice(np.delete(np.arange(n), s), min(10, n - 1), replace=False)])
net = cp.ColumnNetwork(cp.load_preset("dl25"), {"a": cp.Area("mt", n, split=False)},
                       [cp.Input("a"), cp.Lateral("a", columns=pairs, init=20.0, jitter=0.9)], seed=a.seed)
u = rng.uniform(5, 25, n)
stim = cp.Stimulus([0.0, 0.1], np.stack([np.zeros(n), u]))
report = export_run(net, stim, a.duration, Path(a.out), methods=("euler", "rk4"), seed=a.seed)
for m in ("euler", "rk4"):
    print(f"{m}: max |diff| {report[m]['max_abs_hz']:.3g} Hz, max rel {report[m]['max_rel']:.3g}")
print(json.dumps({m: {k: report[m][k] for k in ("max_abs_hz", "max_rel")} for m in ("euler", "rk4")}))
