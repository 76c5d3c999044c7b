"""One column under rising input: the rate column (DMF or LIF) against its spiking twin, seeds averaged.

    python validation/column_transfer.py [--preset dl25] [--columns 2] [--levels 0 10 20 ... 100]
                                         [--scale 0.1] [--k-scale 1] [--seeds 3] [--backend nest]
                                         [--threads 1] [--out DIR]

The column of the paper's tasks (``--columns 2``: the MT area split in two, as in the XOR and
decision networks) gets a staircase of input rates into L4E and L4I at the nominal thalamic
weights (0.5 s per level, rates over the last 0.3 s of each; the protocol of ``colplugin
calibrate``), once as the DMF and once as its spiking twin per seed (rates from the Neo spike
trains with Elephant). The in-degrees are full by default (``--k-scale 1``,
``colplugin.analysis.calibration.STAIRCASE_K_SCALE``): below 1, PD14's DC compensation would
be one current from the DMF's rates averaged over all levels. Writes ``transfer.json``
(levels, DMF rates, spiking rates per seed, their mean and sd, relative differences),
``transfer.png`` and ``report.md``, which says for each model whether L2/3E falls as the input
rises (the largest drop between successive levels), the mechanism a trained XOR network uses
to compute XOR inside one column.
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np

from colplugin._io import atomic_write_text
from colplugin.analysis.calibration import (FLOOR_HZ, STAIRCASE_K_SCALE, column_words, dmf_step_rates,
                                            spiking_step_rates, staircase_axes)
from colplugin.params import load_preset
from colplugin.params.names import POPULATIONS
from colplugin.plotting import save_figure
from colplugin.transfers import transfer_for

ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
ap.add_argument("--preset", default="dl25")
ap.add_argument("--columns", type=int, default=2)
ap.add_argument("--levels", type=float, nargs="+", default=[0.0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100])
ap.add_argument("--scale", type=float, default=0.1)
ap.add_argument("--k-scale", type=float, default=STAIRCASE_K_SCALE)
ap.add_argument("--seeds", type=int, default=3)
ap.add_argument("--backend", choices=["nest", "brian2"], default="nest")
ap.add_argument("--threads", type=int, default=1)
ap.add_argument("--out", default="runs/validation-column-transfer")
a = ap.parse_args()
out = Path(a.out)
out.mkdir(parents=True, exist_ok=True)
params = load_preset(a.preset)
model = transfer_for(params).label  # "DMF" or "LIF column": the rate model set against the twin
levels = [float(u) for u in a.levels]
t0 = time.perf_counter()
dmf = dmf_step_rates(params, levels, columns=a.columns)
spk, runs = [], []
for seed in range(a.seeds):
    r, run = spiking_step_rates(params, levels, scale=a.scale, k_scale=a.k_scale, backend=a.backend, seed=seed,
                                threads=a.threads, columns=a.columns)
    spk.append(r)
    runs.append(run)
    print(f"seed {seed}: {run['wall_seconds']:.0f} s", flush=True)
spk = np.asarray(spk)
mean, sd = spk.mean(0), spk.std(0, ddof=1) if a.seeds > 1 else np.zeros_like(spk[0])
rel = (dmf - mean) / np.maximum(mean, FLOOR_HZ)


def largest_drop(r: np.ndarray) -> tuple[float, float]:
    """The largest fall (Hz) of a rate between successive levels, and the level (Hz) it falls to."""
    d = r[:-1] - r[1:]
    i = int(np.argmax(d))
    return float(max(d[i], 0.0)), levels[i + 1]


# the LIF column's goal: every population within 15 % or 1 Hz of the twin at every level up to 60 Hz
upto = np.array(levels) <= 60.0
close = np.abs(dmf - mean) <= np.maximum(0.15 * mean, 1.0)
within = bool(close[upto].all())
miss = [(levels[i], POPULATIONS[p], float(dmf[i, p]), float(mean[i, p])) for i, p in zip(*np.nonzero(~close))]

e23 = POPULATIONS.index("L23E")
drops = {"dmf": largest_drop(dmf[:, e23]), "spiking": largest_drop(mean[:, e23])}
numbers = {"preset": a.preset, "columns": a.columns, "levels_hz": levels, "populations": POPULATIONS,
           "dmf_hz": dmf.tolist(), "spiking_hz_per_seed": spk.tolist(), "spiking_mean_hz": mean.tolist(),
           "spiking_sd_hz": sd.tolist(), "relative_difference": rel.tolist(),
           "l23e_largest_drop_hz": {k: {"drop_hz": v[0], "at_level_hz": v[1]} for k, v in drops.items()},
           "rate_model": model, "within_15pc_or_1hz_up_to_60hz": within,
           "outside_15pc_or_1hz": [{"level_hz": u, "population": q, "model_hz": m, "spiking_hz": x}
                                   for u, q, m, x in miss],
           "runs": runs, "wall_seconds": time.perf_counter() - t0}
atomic_write_text(out / "transfer.json", json.dumps(numbers, indent=2))

which = column_words(a.columns)
fig, axes = staircase_axes(f"Steady rates of {which} ({params.default_area}, {a.preset}) under rising input: "
                           f"{model} vs spiking twin (scale {a.scale}, k {a.k_scale})")
for p, ax in enumerate(axes.ravel()):
    ax.errorbar(levels, mean[:, p], yerr=sd[:, p], fmt="k-o", ms=3, capsize=2,
                label=f"spiking twin ({a.backend}, mean +- sd of {a.seeds} seeds)")
    ax.plot(levels, dmf[:, p], "-", color="tab:red", label=model)
axes[0, 0].legend(fontsize=7)
save_figure(fig, out / "transfer.png")


def sentence(name: str) -> str:
    drop, at = drops[name]
    who = {"dmf": f"The {model}'s", "spiking": "The spiking twin's"}[name]
    if drop <= FLOOR_HZ:
        return f"{who} L2/3E does not fall as the input rises (largest drop {drop:.2g} Hz)."
    return f"{who} L2/3E falls by {drop:.3g} Hz on the step to {at:g} Hz input."


lines = [f"# {which.capitalize()} ({params.default_area}, {a.preset}) under rising input: {model} vs spiking twin",
         "",
         f"Spiking twin: {a.backend}, scale {a.scale}, k {a.k_scale}, {runs[0]['neurons']} neurons, {a.seeds} seeds "
         f"(0.5 s per level, rates over the last 0.3 s). Wall time {numbers['wall_seconds']:.0f} s.", "",
         sentence("dmf"), sentence("spiking"), "",
         f"Every population within 15 % or 1 Hz of the twin at every level up to 60 Hz: **{within}**"
         + ("" if not miss else "; outside: " + ", ".join(f"{q} at {u:g} Hz ({m:.3g} vs {x:.3g} Hz)"
                                                         for u, q, m, x in miss)) + ".", "",
         "| input (Hz) | " + " | ".join(f"{p} {model} / spiking (Hz)" for p in POPULATIONS) + " |",
         "|---|" + "---|" * len(POPULATIONS)]
for i, u in enumerate(levels):
    lines.append(f"| {u:g} | " + " | ".join(f"{dmf[i, p]:.3g} / {mean[i, p]:.3g} +- {sd[i, p]:.2g}"
                                            for p in range(len(POPULATIONS))) + " |")
lines += ["", "![transfer](transfer.png)", ""]
atomic_write_text(out / "report.md", "\n".join(lines))
print("\n".join(lines[5:8]))
print(f"wrote {out} (transfer.json, transfer.png, report.md)")
