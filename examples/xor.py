"""dL25 experiment 1: a 3-column network learns XOR (Figure 1).

    python examples/xor.py            # 10 seeds, Figure 1B in runs/example-xor/
    python examples/xor.py --quick    # one seed, a few updates (what CI runs)
"""

import argparse
import json
from pathlib import Path

import torch

import colplugin as cp
from colplugin.experiments import reproduce, train_run
from colplugin.tasks.xor import truth_table

parser = argparse.ArgumentParser()
parser.add_argument("--quick", action="store_true")
parser.add_argument("--out", default="runs/example-xor")
args = parser.parse_args()
torch.set_num_threads(1)
out = Path(args.out)

if args.quick:
    train_run("xor", seed=0, out=out / "seed0", updates=3, progress=False)
else:
    summary = reproduce("xor", out)  # XOR's reproduction: Figure 1B over its 10 seeds
    print(summary["headline"])
net = cp.load_checkpoint(out / "seed0" / "checkpoint.pt")["network"]
for column, info in truth_table(net).items():
    print(f"{column}: computes {info['function']:<6} E/I input ratio {info['EI_ratio']:.2f}  "
          f"L2/3E responses {[round(x, 3) for x in info['responses_hz']]} Hz")
print("final test accuracy (seed 0):", json.loads((out / "seed0" / "metrics.json").read_text())["final_accuracy"])
