"""Rate model vs spiking PD14 microcircuit, decided from several seeds.

    python validation/microcircuit.py [--scale S] [--k-scale K] [--duration T] [--seed N] [--seeds M]
                                      [--backend brian2|nest] [--device cpp_standalone|runtime] [--out DIR]

Same as `colplugin validate microcircuit` (its defaults: colplugin.analysis.validation.ValidationSettings);
writes report.md, comparison.json, rates.png, NIX files.
"""

import argparse
import dataclasses

from colplugin.analysis.validation import ValidationSettings, validate_microcircuit
from colplugin.spiking.simulate import SPIKING_BACKENDS

d = ValidationSettings()  # every default in one place
ap = argparse.ArgumentParser()
ap.add_argument("--scale", type=float, default=d.scale)
ap.add_argument("--k-scale", type=float, default=d.k_scale)
ap.add_argument("--duration", type=float, default=d.duration)
ap.add_argument("--seed", type=int, default=d.seed)
ap.add_argument("--seeds", type=int, default=d.seeds, help="number of seeds (seed, seed + 1, ...)")
ap.add_argument("--backend", choices=list(SPIKING_BACKENDS), default=d.backend)
ap.add_argument("--device", choices=["cpp_standalone", "runtime"], default=None)
ap.add_argument("--threads", type=int, default=d.threads)
ap.add_argument("--out", default="runs/validation-microcircuit")
a = ap.parse_args()
settings = dataclasses.replace(d, scale=a.scale, k_scale=a.k_scale, duration=a.duration, seed=a.seed, seeds=a.seeds,
                               backend=a.backend, device=a.device, threads=a.threads)
r = validate_microcircuit(a.out, settings)
print(r["table_md"])
print(f"within 20 %: {r['within20']}, DMF within 30 %: {r['within30']}, I > E: {r['ordering']}, "
      f"{r['wall_seconds']:.1f} s, peak {r['peak_mb']:.0f} MB")
