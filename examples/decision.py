"""dL25 experiment 2: two MT columns learn winner-take-all decisions (Figure 2).

    python examples/decision.py           # train, then Figure 2 in runs/example-decision/
    python examples/decision.py --quick   # 2 updates (what CI runs)
"""

import argparse
from pathlib import Path

import torch

from colplugin.experiments import train_run

parser = argparse.ArgumentParser()
parser.add_argument("--quick", action="store_true")
parser.add_argument("--out", default="runs/example-decision")
args = parser.parse_args()
torch.set_num_threads(1)

res = train_run("decision", seed=0, out=Path(args.out), updates=2 if args.quick else None,
                gradient="direct" if args.quick else "adjoint", progress=not args.quick)
print(f"loss {res.summary['final_loss']:.4g}, accuracy {res.summary['final_accuracy']}")
print(f"Figure 2 and its numbers: {args.out}/figure2.png, figure2.json")
