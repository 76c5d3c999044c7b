"""The decision network with and without synaptic gating, side by side: the fit to Wong & Wang (2006).

    python validation/decision_gating.py [--seeds 0 1 2] [--out runs/decision-gating]

Trains `colplugin train decision` and `colplugin train decision --gating` for each seed (the same
path as the command line) and writes `table.md` and `table.json`: per seed and variant the held-out
nrmse, decision-time rank correlation, winner correct, persistence after the stimulus and
persistence with a 2 % asymmetry between the columns (decision_metrics.json), against the goals.
"""

import argparse
import json
from pathlib import Path

from colplugin.experiments import train_run
from colplugin.tasks.decision import Decision

KEYS = ("nrmse", "decision_time_rank_correlation", "winner_correct", "persistence", "persistence_asymmetric")

ap = argparse.ArgumentParser()
ap.add_argument("--seeds", type=int, nargs="+", default=[0])
ap.add_argument("--out", default="runs/decision-gating")
a = ap.parse_args()
out = Path(a.out)
rows = []
for seed in a.seeds:
    for gating in (False, True):
        run = out / f"{'gated' if gating else 'ungated'}-s{seed}"
        res = train_run(Decision(gating=gating), seed, run, progress=True)
        m = json.loads((run / "decision_metrics.json").read_text())
        rows.append({"seed": seed, "gating": gating, "updates": res.summary["updates"], **{k: m[k] for k in KEYS}})


def cell(x):
    return "n/a" if x is None else f"{x:.3g}"


goals = ("nrmse <= 0.15, rank correlation >= 0.9, winner correct >= 0.95, persistence 1")
table = ("| seed | gating | updates | " + " | ".join(KEYS) + " |\n|---|---|---|" + "---|" * len(KEYS) + "\n"
         + "\n".join(f"| {r['seed']} | {'yes' if r['gating'] else 'no'} | {r['updates']} | "
                     + " | ".join(cell(r[k]) for k in KEYS) + " |" for r in rows))
out.mkdir(parents=True, exist_ok=True)
(out / "table.json").write_text(json.dumps(rows, indent=2))
(out / "table.md").write_text(f"# Decision with and without synaptic gating\n\nGoals: {goals}.\n\n{table}\n")
print(table)
