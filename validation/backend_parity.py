"""The PD14 microcircuit on Brian2 and on NEST: population rates, mean and sd over seeds.

    python validation/backend_parity.py [--scale 0.1] [--k-scale 0.5] [--duration 2.5] [--transient 0.5]
                                        [--seeds 3] [--device cpp_standalone] [--threads 1] [--out DIR]

Writes parity.json (rates per backend and seed, seed means and sds, relative difference of the
means per population, wall times) and parity.png. Target: seed means agree within 5 %.
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np

from colplugin.analysis.figures import plot_backend_rates, save_figure
from colplugin.analysis.validation import run_seeds
from colplugin.params import load_preset
from colplugin.params.names import POPULATIONS
from colplugin.spiking import pd14_microcircuit

ap = argparse.ArgumentParser()
ap.add_argument("--scale", type=float, default=0.1)
ap.add_argument("--k-scale", type=float, default=0.5)
ap.add_argument("--duration", type=float, default=2.5)
ap.add_argument("--transient", type=float, default=0.5)
ap.add_argument("--seeds", type=int, default=3)
ap.add_argument("--device", choices=["cpp_standalone", "runtime"], default="cpp_standalone")
ap.add_argument("--threads", type=int, default=1)
ap.add_argument("--out", default="runs/validation-backend-parity")
a = ap.parse_args()
out = Path(a.out)
out.mkdir(parents=True, exist_ok=True)
net = pd14_microcircuit(None, a.scale, a.k_scale)
seeds = list(range(a.seeds))
report = {"scale": a.scale, "k_scale": a.k_scale, "duration_s": a.duration, "transient_s": a.transient,
          "seeds": seeds, "n_neurons": net.n_neurons, "n_synapses": net.n_synapses, "backends": {}}
rates = {}
for backend in ("nest", "brian2"):
    t0 = time.perf_counter()
    results = run_seeds(net, a.duration, seeds, backend=backend, device=a.device, threads=a.threads, progress=True,
                        label=f"{backend}: ")
    r = np.array([[res.rates(a.transient)[p] for p in POPULATIONS] for res in results])
    rates[backend] = r
    report["backends"][backend] = {
        "device": results[0].settings["device"], "rates_hz": r.tolist(), "mean_hz": r.mean(0).tolist(),
        "sd_hz": r.std(0, ddof=1).tolist() if len(seeds) > 1 else None,
        "wall_seconds": [res.wall_seconds for res in results], "total_wall_seconds": time.perf_counter() - t0}
    print(backend, np.round(r.mean(0), 3), flush=True)
rel = rates["brian2"].mean(0) / rates["nest"].mean(0) - 1
report["brian2_vs_nest"] = dict(zip(POPULATIONS, rel.tolist()))
report["max_abs_rel_diff"] = float(np.abs(rel).max())
report["within_5_percent"] = bool(np.all(np.abs(rel) <= 0.05))
(out / "parity.json").write_text(json.dumps(report, indent=2))
save_figure(plot_backend_rates({f"Brian2 {a.device}": rates["brian2"], "NEST": rates["nest"]},
                               load_preset("pd14")["published_rates"]), out / "parity.png")
print("| population | NEST (Hz) | Brian2 (Hz) | Brian2 vs NEST |\n|---|---|---|---|")
for p, pop in enumerate(POPULATIONS):
    n, b = rates["nest"][:, p], rates["brian2"][:, p]
    print(f"| {pop} | {n.mean():.3f} ± {n.std(ddof=1):.3f} | {b.mean():.3f} ± {b.std(ddof=1):.3f} "
          f"| {100 * rel[p]:+.1f} % |")
print(f"max |difference| {100 * report['max_abs_rel_diff']:.1f} %; within 5 %: {report['within_5_percent']}")
