"""Step input to L4 of the DMF column and of the spiking microcircuit: direction and order of responses.

    python validation/stimulus.py [--scale S] [--rate HZ] [--seeds M] [--backend brian2|nest] [--out DIR]

Same as `colplugin validate stimulus` (its defaults:
colplugin.analysis.validation.StimulusValidationSettings); writes report.md and stimulus.json.
"""

import argparse
import dataclasses

from colplugin.analysis.validation import StimulusValidationSettings, validate_stimulus
from colplugin.spiking.simulate import SPIKING_BACKENDS

d = StimulusValidationSettings()  # every default in one place
ap = argparse.ArgumentParser()
ap.add_argument("--scale", type=float, default=d.scale)
ap.add_argument("--rate", type=float, default=d.rate)
ap.add_argument("--seed", type=int, default=d.seed)
ap.add_argument("--seeds", type=int, default=d.seeds, help="number of seeds (seed, seed + 1, ...)")
ap.add_argument("--backend", choices=list(SPIKING_BACKENDS), default=d.backend)
ap.add_argument("--device", choices=["cpp_standalone", "runtime"], default=None)
ap.add_argument("--out", default="runs/validation-stimulus")
a = ap.parse_args()
settings = dataclasses.replace(d, scale=a.scale, rate=a.rate, seed=a.seed, seeds=a.seeds, backend=a.backend,
                               device=a.device)
r = validate_stimulus(a.out, settings)
print(f"directions agree in {r['directions_agree']}/8 populations; Spearman rho {r['spearman_rho']:.2f}")
