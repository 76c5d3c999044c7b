"""Rate model vs spiking PD14 microcircuit, decided from several seeds.

    python validation/microcircuit.py [--scale 0.1] [--k-scale 0.5] [--duration 2.5] [--seed 0] [--seeds 3]
                                      [--backend brian2|nest] [--device cpp_standalone|runtime] [--out DIR]

Same as `colplugin validate microcircuit`; writes report.md, comparison.json, rates.png, NIX files.
"""

import argparse

from colplugin.analysis.validation import validate_microcircuit

ap = argparse.ArgumentParser()
ap.add_argument("--scale", type=float, default=0.1)
ap.add_argument("--k-scale", type=float, default=0.5)
ap.add_argument("--duration", type=float, default=2.5)
ap.add_argument("--seed", type=int, default=0)
ap.add_argument("--seeds", type=int, default=3, help="number of seeds (seed, seed + 1, ...)")
ap.add_argument("--backend", choices=["brian2", "nest"], default="brian2")
ap.add_argument("--device", choices=["cpp_standalone", "runtime"], default="cpp_standalone")
ap.add_argument("--threads", type=int, default=1)
ap.add_argument("--out", default="runs/validation-microcircuit")
a = ap.parse_args()
r = validate_microcircuit(a.out, scale=a.scale, k_scale=a.k_scale, duration=a.duration, seed=a.seed, seeds=a.seeds,
                          backend=a.backend, device=a.device, threads=a.threads)
print(r["table_md"])
print(f"within 20 %: {r['within20']}, DMF within 30 %: {r['within30']}, I > E: {r['ordering']}, "
      f"{r['wall_seconds']:.1f} s, peak {r['peak_mb']:.0f} MB")
