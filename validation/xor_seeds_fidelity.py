"""XOR over 10 seeds as the paper ran it, and the effect of single changes.

Runs :func:`colplugin.experiments.reproduce` for the XOR task's defaults and for variants
that change one thing (learning rate, the paper code's Hz read-out, the training aids that
the paper did not use), and writes one summary line per variant to ``variants.json``.

Usage::

    python validation/xor_seeds_fidelity.py OUT [--seeds 10] [--variants paper,lr0.05,...]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from colplugin.experiments import reproduce
from colplugin.tasks import XOR

#: Variant name -> (XOR keyword arguments, training-setting overrides).
VARIANTS = {
    "paper": ({}, {}),
    "lr0.05": ({}, {"lr": 0.05}),
    "lr0.02": ({}, {"lr": 0.02}),
    "hz_readout": ({"readout": "hz"}, {}),
    "clip_rollback": ({}, {"clip_grad": 0.1, "rollback": 1.5}),
}

KEYS = ("seeds", "solved", "updates_to_solve", "median_updates_to_solve", "solved_at_update_0", "paper_solution",
        "functions_by_column", "function_combinations", "margins", "median_margin", "margin_at_least_0.2",
        "total_wall_seconds")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    args = ap.parse_args()
    torch.set_num_threads(1)
    results = {}
    path = args.out / "variants.json"
    if path.exists():
        results = json.loads(path.read_text())
    for name in args.variants.split(","):
        kwargs, overrides = VARIANTS[name]
        task = XOR(**kwargs)
        task.settings = task.settings.override(**overrides)
        r = reproduce(task, args.out / name, seeds=args.seeds, progress=False)
        results[name] = {"task": kwargs, "settings": overrides, **{k: r.get(k) for k in KEYS}}
        print(name, r["headline"], flush=True)
        args.out.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
