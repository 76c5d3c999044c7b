"""A spiking twin on NEST under MPI: 2 processes x 1 thread give the spikes of 1 process x 2 threads.

    python validation/nest_mpi.py [--processes 2] [--scale 0.01] [--k-scale 0.1] [--conditions 2]
                                  [--trials 2] [--seed 0] [--out runs/validation-nest-mpi]

Needs NEST built with MPI and mpi4py built against the same MPI (docs: "NEST with MPI"); the
NEST wheel from PyPI has no MPI. NEST's random streams belong to virtual processes, so its
spikes depend on their number (processes x threads), not on how they are split.

The script runs the spiking twin of the decision task's network (its initial weights, the
first ``--conditions`` conditions of its evaluation stimulus, ``--trials`` trials per
condition in one built network) twice, each in a fresh process:

* ``threads``: ``python nest_mpi.py --worker threads --threads P`` (one process, P threads);
* ``mpi``: ``mpiexec -n P python nest_mpi.py --worker mpi --threads 1`` (P processes).

Each writes a twin directory (``twin_threads/``, ``twin_mpi/``: twin.json, report, figures,
spikes.nix with every neuron and trial) through :func:`colplugin.analysis.twin.twin_run`; under
MPI only rank 0 writes. The script then checks that every spike train of every condition and
trial is identical in both, that both twin.json hold the same rates, and that the MPI
directory holds each file once and nothing else. Writes ``mpi.json``; exits 1 on a difference.
"""

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

ap = argparse.ArgumentParser()
ap.add_argument("--processes", type=int, default=2)
ap.add_argument("--scale", type=float, default=0.01)
ap.add_argument("--k-scale", type=float, default=0.1)
ap.add_argument("--conditions", type=int, default=2)
ap.add_argument("--trials", type=int, default=2)
ap.add_argument("--seed", type=int, default=0)
ap.add_argument("--out", default="runs/validation-nest-mpi")
ap.add_argument("--worker", choices=["threads", "mpi"], help=argparse.SUPPRESS)
ap.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
a = ap.parse_args()
out = Path(a.out)

if a.worker:  # one layout: the twin, written by rank 0
    from colplugin.analysis.twin import twin_run
    from colplugin.tasks import get_task

    task = get_task("decision")
    net = task.build_network(seed=a.seed)
    stim = task.evaluation_stimulus()
    stim = stim.select(list(range(min(a.conditions, stim.batch_size))))
    twin_run(out / f"twin_{a.worker}", net, stim, task.duration, task, backend="nest", scale=a.scale,
             k_scale=a.k_scale, trials=a.trials, seed=a.seed, threads=a.threads, nix_neurons=10 ** 6,
             nix_trials=a.trials, progress=False)
    sys.exit(0)

import numpy as np  # noqa: E402

import colplugin as cp  # noqa: E402

try:
    import nest
except ImportError:
    sys.exit("NEST is not installed: build it with MPI (docs: 'NEST with MPI')")
if not nest.build_info.get("have_mpi"):
    sys.exit(f"this NEST ({nest.__file__}) was built without MPI (the PyPI wheel has none); build it from its source "
             "distribution with -Dwith-mpi=ON and put its site-packages first on PYTHONPATH (docs: 'NEST with MPI')")
try:
    import mpi4py  # noqa: F401
except ImportError:
    sys.exit("mpi4py is not installed: pip install --no-binary mpi4py mpi4py (built against NEST's MPI)")
mpiexec = nest.build_info.get("mpiexec") or shutil.which("mpiexec") or shutil.which("mpirun")
if not mpiexec:
    sys.exit("no mpiexec or mpirun on PATH")
out.mkdir(parents=True, exist_ok=True)
for d in ("twin_threads", "twin_mpi"):
    shutil.rmtree(out / d, ignore_errors=True)
common = [__file__, "--scale", str(a.scale), "--k-scale", str(a.k_scale), "--conditions", str(a.conditions),
          "--trials", str(a.trials), "--seed", str(a.seed), "--out", str(out)]
walls = {}
for layout, cmd in (("threads", [sys.executable, *common, "--worker", "threads", "--threads", str(a.processes)]),
                    ("mpi", [mpiexec, "-n", str(a.processes), sys.executable, *common, "--worker", "mpi",
                             "--threads", "1"])):
    print(f"{layout}: {' '.join(cmd)}", flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    walls[layout] = time.perf_counter() - t0

blocks = {layout: cp.load_nix(out / f"twin_{layout}" / "spikes.nix") for layout in ("threads", "mpi")}
twins = {layout: json.loads((out / f"twin_{layout}" / "twin.json").read_text()) for layout in ("threads", "mpi")}
differences, trains, spikes = [], 0, 0
for sa, sb in zip(blocks["threads"].segments, blocks["mpi"].segments, strict=True):
    for ta, tb in zip(sa.spiketrains, sb.spiketrains, strict=True):
        same_neuron = ta.annotations["population"] == tb.annotations["population"] and \
            ta.annotations["neuron"] == tb.annotations["neuron"]
        if not same_neuron or not np.array_equal(ta.rescale("s").magnitude, tb.rescale("s").magnitude):
            differences.append(f"{sa.name}: {ta.annotations['population']} neuron {ta.annotations['neuron']}")
        trains += 1
        spikes += len(ta)
rates = {layout: [[c["spiking_trials_hz"] for c in p["per_condition"]] for p in t["per_population"].values()]
         for layout, t in twins.items()}
same_rates = rates["threads"] == rates["mpi"]
expected = set(twins["threads"]["files"])
found = {p.name for p in (out / "twin_mpi").iterdir()}
result = {"processes": a.processes, "scale": a.scale, "k_scale": a.k_scale, "conditions": a.conditions,
          "trials": a.trials, "seed": a.seed, "n_neurons": twins["mpi"]["n_neurons"],
          "n_synapses": twins["mpi"]["n_synapses"], "spike_trains_compared": trains, "spikes_compared": spikes,
          "differing_spike_trains": differences[:20], "n_differing": len(differences), "same_rates": same_rates,
          "files_expected": sorted(expected), "files_found": sorted(found), "wall_seconds": walls,
          "mpi_settings": {k: twins["mpi"].get(k) for k in ("threads", "network_reused")}}
(out / "mpi.json").write_text(json.dumps(result, indent=2))
ok = not differences and same_rates and found == expected
print(f"{trains} spike trains ({spikes} spikes) over {a.conditions} conditions x {a.trials} trials: "
      f"{len(differences)} differ; rates {'identical' if same_rates else 'DIFFER'}; MPI directory "
      f"{'holds each file once' if found == expected else f'differs: {sorted(found ^ expected)}'}; "
      f"wall {walls['threads']:.1f} s (1 x {a.processes} threads) vs {walls['mpi']:.1f} s ({a.processes} processes)")
sys.exit(0 if ok else 1)
