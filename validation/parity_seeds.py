"""Parity over seeds: both pattern sets, accuracy, margins, updates and wall time per seed.

    python validation/parity_seeds.py --out /tmp/parity_seeds [--seeds 10] [--all-seeds 3]

Trains the fixed-position set (0001, 0011, 0111, 1111) over ``--seeds`` seeds and all 16
patterns over ``--all-seeds`` seeds with the task's default settings (the same runs as
``colplugin reproduce parity [--parity-set all] --seeds N``) and prints one line per seed.
"""

import argparse
from pathlib import Path

from colplugin.experiments import reproduce
from colplugin.tasks.parity import Parity


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seeds", type=int, default=10, help="seeds of the fixed-position set (default 10)")
    ap.add_argument("--all-seeds", type=int, default=3, help="seeds of the 16-pattern set (default 3; 0: skip)")
    args = ap.parse_args()
    for name, n in (("fixed", args.seeds), ("all", args.all_seeds)):
        if n <= 0:
            continue
        result = reproduce(Parity(patterns=name), args.out / name, seeds=n, progress=False)
        print(result["headline"])
        for seed, v in result["per_seed"].items():
            print(f"  {name} seed {seed}: update-0 accuracy {v['initial_accuracy']:.2f}, solved at update "
                  f"{v['updates_to_solve']}, final test accuracy {v['final_accuracy']:.2f}, test margin "
                  f"{v['test_margin']:.3f}, {v['updates']} updates, {v['wall_seconds']:.1f} s")


if __name__ == "__main__":
    main()
