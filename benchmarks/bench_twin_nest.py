"""A twin on NEST against NEST's own PD14 example of the same size, side by side in one run (by hand).

    python benchmarks/bench_twin_nest.py [RUN_DIR] [--scale 0.05] [--k-scale 0.5] [--trials 3]
                                         [--duration 1.5] [--threads 2] [--out results.json]

The twin: the spiking twin (:func:`colplugin.spiking.spiking_twin`) of a trained run's first
condition (``RUN_DIR``; without it, the decision task's network with its initial weights and
first evaluation condition), ``--trials`` trials of ``--duration`` s on NEST:

* ``rebuild``: one build per trial (seed + j), the twin's way before networks were reused;
* ``reuse``: the network built once and every trial run in it from a fresh state (the default
  of ``colplugin twin --backend nest``);
* ``reuse, DC background``: the same with the background as its mean current
  (``spiking_twin(background="dc")``), as NEST's example runs by default.

NEST's own PD14 example: the ``microcircuit`` package of NEST's model repository
(github.com/INM-6/microcircuit-PD14-model, ``PyNEST/``; install it with ``pip install --no-deps
PyNEST`` from a clone: it is not on PyPI and not in NEST's wheel), with ``N_scaling`` and
``K_scaling`` chosen so that its neurons and synapses equal the twin's, the same threads and
resolution (0.1 ms), with Poisson background (``bg_input_type="poisson"``, as the twin) and
with its default DC background; built (``create``, ``connect``, which includes NEST's
``Prepare``) and simulated twice for ``--duration`` (the first run after ``Prepare``, the second
in a network that has run).

The comparison is made like with like: a Poisson background costs NEST one event per neuron
and step (half the simulation time of these networks), so the twin with Poisson background is
compared with the example with Poisson background, and the DC twin with the DC example. The
table also gives the spikes per second each network emits, since NEST's cost grows with the
spikes it delivers. Prints a markdown table and writes every number to ``--out`` (JSON).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

#: Neurons and synapses of NEST's PD14 example at N_scaling = K_scaling = 1 (its network_params).
PD14_NEURONS = 77_169


def _twin(run_dir: str | None, scale: float, k_scale: float, duration: float | None, background: str | None = None):
    from colplugin.spiking import spiking_twin

    if run_dir:
        from colplugin.experiments import load_run

        network, stim, task_duration = load_run(run_dir)
    else:
        from colplugin.tasks import get_task

        task = get_task("decision")
        network, stim, task_duration = task.build_network(seed=0), task.evaluation_stimulus(), task.duration
    duration = task_duration if duration is None else duration
    return spiking_twin(network, stim, trial=0, scale=scale, k_scale=k_scale, duration=duration,
                        background=background), duration


def _twin_runs(net, duration: float, trials: int, threads: int, reuse: bool, label: str) -> dict:
    from colplugin.spiking import iter_spiking_trials

    rows = []
    t0 = time.perf_counter()
    for res in iter_spiking_trials(net, duration, trials, backend="nest", seed=1, threads=threads, reuse=reuse):
        spikes = sum(len(t) for _, t in res.spikes.values())
        rows.append({"build_s": res.build_seconds, "simulate_s": res.simulate_seconds, "spikes": spikes})
        print(f"  twin ({label}) trial {len(rows)}: build {res.build_seconds:.1f} s, "
              f"simulate {res.simulate_seconds:.1f} s, {spikes / duration:,.0f} spikes/s", flush=True)
    return {"trials": rows, "wall_s": time.perf_counter() - t0}


def _pd14(neurons: int, synapses: int, duration: float, threads: int, background: str) -> dict:
    try:
        import nest
        from microcircuit import network
        from microcircuit.network_params import default_net_dict
        from microcircuit.sim_params import default_sim_dict
        from microcircuit.stimulus_params import default_stim_dict
    except ImportError:
        sys.exit("NEST's PD14 example is not installed: git clone https://github.com/INM-6/microcircuit-PD14-model "
                 "&& pip install --no-deps microcircuit-PD14-model/PyNEST")
    n_scaling = neurons / PD14_NEURONS
    # first pass at K_scaling = 1 counts its synapses, then K_scaling matches the twin's
    k_scaling = 1.0
    out: dict = {}
    for attempt in range(2):
        net_dict = {**default_net_dict, "N_scaling": n_scaling, "K_scaling": k_scaling, "bg_input_type": background}
        sim_dict = {**default_sim_dict, "local_num_threads": threads, "print_time": False,
                    "data_path": tempfile.mkdtemp(prefix="pd14_") + os.sep, "rng_seed": 55}
        stim_dict = {**default_stim_dict, "thalamic_input": False, "dc_transient": False}
        t0 = time.perf_counter()
        net = network.Network(sim_dict, net_dict, stim_dict)
        net.create()
        net.connect()
        t_build = time.perf_counter() - t0
        n_neurons = sum(len(p) for p in net.pops)
        # neuron-to-neuron synapses: all but the devices' (a recorder, and a Poisson generator, per neuron)
        n_syn = nest.GetKernelStatus("num_connections") - (2 if background == "poisson" else 1) * n_neurons
        if attempt == 0:
            k_scaling = min(1.0, synapses / n_syn)
            continue
        runs = []
        for _ in range(2):
            before = sum(nest.GetStatus(net.spike_recorders, "n_events"))
            t1 = time.perf_counter()
            net.simulate(duration * 1e3)
            runs.append({"simulate_s": time.perf_counter() - t1,
                         "spikes": sum(nest.GetStatus(net.spike_recorders, "n_events")) - before})
        out = {"N_scaling": n_scaling, "K_scaling": k_scaling, "background": background, "neurons": n_neurons,
               "synapses": n_syn, "build_s": t_build, "runs": runs}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run_dir", nargs="?", help="a trained run (default: the decision task's untrained network)")
    ap.add_argument("--scale", type=float, default=0.05)
    ap.add_argument("--k-scale", type=float, default=0.5)
    ap.add_argument("--trials", type=int, default=3)
    ap.add_argument("--duration", type=float, help="model seconds per trial (default: the task's)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("bench_twin_nest.json"))
    a = ap.parse_args()

    net, duration = _twin(a.run_dir, a.scale, a.k_scale, a.duration)
    dc_net, _ = _twin(a.run_dir, a.scale, a.k_scale, a.duration, background="dc")
    print(f"twin: {net.n_neurons:,} neurons, {net.n_synapses:,} synapses, {a.trials} trials of {duration:g} s, "
          f"{a.threads} threads", flush=True)
    twins = {"rebuild": _twin_runs(net, duration, a.trials, a.threads, False, "rebuild"),
             "reuse": _twin_runs(net, duration, a.trials, a.threads, True, "reuse"),
             "reuse_dc": _twin_runs(dc_net, duration, a.trials, a.threads, True, "reuse, DC background")}
    pd14 = {bg: _pd14(net.n_neurons, net.n_synapses, duration, a.threads, bg) for bg in ("poisson", "dc")}

    def per_s(x: float) -> float:
        return x / duration

    rows = {}
    for key, label in (("rebuild", "twin, Poisson background, a build per trial"),
                       ("reuse", "twin, Poisson background, built once"),
                       ("reuse_dc", "twin, DC background, built once")):
        tr = twins[key]["trials"]
        rows[key] = (label, net.n_neurons, net.n_synapses, sum(t["build_s"] for t in tr), per_s(tr[0]["simulate_s"]),
                     per_s(sum(t["simulate_s"] for t in tr[1:]) / max(1, len(tr) - 1)),
                     per_s(sum(t["spikes"] for t in tr) / len(tr)), twins[key]["wall_s"])
    for bg, p in pd14.items():
        rows[f"pd14_{bg}"] = (f"NEST PD14 example, {'Poisson' if bg == 'poisson' else 'DC'} background", p["neurons"],
                              p["synapses"], p["build_s"], per_s(p["runs"][0]["simulate_s"]),
                              per_s(p["runs"][1]["simulate_s"]), per_s(p["runs"][1]["spikes"]),
                              p["build_s"] + sum(r["simulate_s"] for r in p["runs"]))
    print("\n| run | neurons | synapses | build s (all trials) | simulate s per model s, first run | "
          "later runs | spikes per model s | wall s |\n|---|---|---|---|---|---|---|---|")
    for r in rows.values():
        print(f"| {r[0]} | {r[1]:,} | {r[2]:,} | {r[3]:.1f} | {r[4]:.2f} | {r[5]:.2f} | {r[6]:,.0f} | {r[7]:.0f} |")
    ratios = {}
    for twin_key, bg in (("reuse", "poisson"), ("reuse_dc", "dc")):
        t, p = rows[twin_key], rows[f"pd14_{bg}"]
        ratios[bg] = {"simulate": t[5] / p[5], "simulate_per_spike": (t[5] / t[6]) / (p[5] / p[6])}
        print(f"twin vs NEST's PD14 example, {bg} background, simulation per model second (later runs): "
              f"{ratios[bg]['simulate']:.2f}x; per spike emitted: {ratios[bg]['simulate_per_spike']:.2f}x")
    print(f"build time of {a.trials} trials, built once vs a build per trial: "
          f"{rows['rebuild'][3] / max(rows['reuse'][3], 1e-9):.1f}x less")
    a.out.write_text(json.dumps({"scale": a.scale, "k_scale": a.k_scale, "threads": a.threads, "duration_s": duration,
                                 "twin_neurons": net.n_neurons, "twin_synapses": net.n_synapses, "twins": twins,
                                 "pd14": pd14, "ratios": ratios}, indent=2))


if __name__ == "__main__":
    main()
