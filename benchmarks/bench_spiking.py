"""Wall time and peak memory per model second of spiking runs, run by hand.

    python benchmarks/bench_spiking.py microcircuit --backend nest --threads 2 --scale 0.1
    python benchmarks/bench_spiking.py twin RUN_DIR --backend brian2 --device runtime --scale 0.1 --k-scale 0.5

``microcircuit``: the PD14 microcircuit (:func:`colplugin.spiking.pd14_microcircuit`) for
``--duration`` s. ``twin``: the spiking twin of a trained run's first condition
(:func:`colplugin.spiking.spiking_twin`) for one trial. Each measurement runs in a fresh
process (peak memory is the child's maximum resident set size) and prints one JSON line:
backend, device, threads, scale, k_scale, neurons, synapses, build and run wall time, wall
seconds per model second and peak MB. Append the lines to a results file with ``>>``.
"""

import argparse
import json
import resource
import sys
import time

ap = argparse.ArgumentParser()
ap.add_argument("what", choices=["microcircuit", "twin"])
ap.add_argument("run_dir", nargs="?", help="run directory (twin)")
ap.add_argument("--backend", default="brian2", choices=["brian2", "nest"])
ap.add_argument("--device", default="cpp_standalone", choices=["cpp_standalone", "runtime"])
ap.add_argument("--threads", type=int, default=1)
ap.add_argument("--scale", type=float, default=0.1)
ap.add_argument("--k-scale", type=float, default=0.5)
ap.add_argument("--duration", type=float, default=1.0)
ap.add_argument("--seed", type=int, default=0)
a = ap.parse_args()

from colplugin.spiking import pd14_microcircuit, simulate_spiking, spiking_twin  # noqa: E402

if a.what == "microcircuit":
    net = pd14_microcircuit(None, a.scale, a.k_scale)
    duration = a.duration
else:
    if not a.run_dir:
        sys.exit("twin needs RUN_DIR")
    from colplugin.experiments import load_run

    network, stim, duration = load_run(a.run_dir)
    net = spiking_twin(network, stim, trial=0, scale=a.scale, k_scale=a.k_scale, duration=duration)
t0 = time.perf_counter()
res = simulate_spiking(net, duration, backend=a.backend, device=a.device, seed=a.seed, threads=a.threads)
wall = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"what": a.what, "backend": a.backend, "device": a.device if a.backend == "brian2" else None,
                  "threads": a.threads, "scale": a.scale, "k_scale": a.k_scale, "neurons": net.n_neurons,
                  "synapses": net.n_synapses, "model_seconds": duration, "wall_seconds": res.wall_seconds,
                  "wall_per_model_second": wall / duration, "peak_mb": peak}))
