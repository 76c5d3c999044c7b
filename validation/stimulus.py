"""Step input to L4 of the DMF column and of the spiking microcircuit: direction and order of responses.

    python validation/stimulus.py [--scale 0.1] [--rate 8] [--seeds 1] [--backend brian2|nest] [--out DIR]
"""

import argparse

from colplugin.analysis.validation import validate_stimulus

ap = argparse.ArgumentParser()
ap.add_argument("--scale", type=float, default=0.1)
ap.add_argument("--rate", type=float, default=8.0)
ap.add_argument("--seed", type=int, default=0)
ap.add_argument("--seeds", type=int, default=1, help="number of seeds (seed, seed + 1, ...)")
ap.add_argument("--backend", choices=["brian2", "nest"], default="brian2")
ap.add_argument("--device", choices=["cpp_standalone", "runtime"], default="cpp_standalone")
ap.add_argument("--out", default="runs/validation-stimulus")
a = ap.parse_args()
r = validate_stimulus(a.out, scale=a.scale, rate=a.rate, seed=a.seed, seeds=a.seeds, backend=a.backend,
                      device=a.device)
print(f"directions agree in {r['directions_agree']}/8 populations; Spearman rho {r['spearman_rho']:.2f}")
