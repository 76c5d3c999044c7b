"""NEST backend: a :class:`SpikingNetwork` as NEST nodes and connections (NEST 3.10).

- Neurons: ``iaf_psc_exp`` (exact integration, exponential current synapses; the PD14
  model). Currents in pA, times in ms, potentials in mV, as in the description.
- Connections: ``nest.Connect`` with ``{"rule": "fixed_total_number", "N": n}`` (autapses
  and multapses allowed); weights ``nest.math.redraw(nest.random.normal(...))`` bounded at 0
  to keep the sign of the mean, delays redrawn below one time step (NEST rounds them to
  the grid).
- Independent Poisson input: one ``poisson_generator`` of rate ``n_sources * rate`` per
  input and segment of the rate profile (``start``/``stop``), connected ``all_to_all``
  (each target gets its own realisation) with a delay of one step.
- Poisson source populations: ``parrot_neuron`` s driven by ``poisson_generator`` s, which
  adds one time step to their delays.
- DC input: the neurons' ``I_e``.
- Recording: one ``spike_recorder`` per recorded population. NEST stamps a spike at the
  end of the step in which the threshold was crossed; the result reports the start of
  that step (one ``dt`` earlier), as Brian2 does, so that both lie in ``[0, duration)``.
- Seeds: ``rng_seed = seed + 1`` (NEST needs a seed >= 1) and ``local_num_threads``: the
  same seed and number of virtual processes give the same spikes.
- MPI: NEST built with MPI runs one network in the processes of ``mpirun -n N`` (``threads``
  per process; N x threads virtual processes). Each process records its own neurons, the
  spikes of all are gathered into every process (mpi4py), and only rank 0 writes files
  (:mod:`colplugin._mpi`). NEST's spikes depend on the number of virtual processes, not on
  their split: 2 processes x 1 thread give the spikes of 1 process x 2 threads
  (``validation/nest_mpi.py`` checks it).

Adaptation (``threshold_jump > 0``) is an approximation: NEST has no ``iaf_psc_exp`` with
a spike-triggered threshold, so adapting populations use ``gif_psc_exp`` with one
threshold component (``q_sfa = threshold_jump``, ``tau_sfa = tau_threshold``), no
spike-triggered current and an escape rate ``lambda_0 exp((V - V_T) / Delta_V)`` made
nearly deterministic (``Delta_V`` = 1 µV, ``lambda_0`` = 1e3 /s: below threshold by 10
µV it almost never fires, above it by 10 µV it fires within the step); its membrane is
the same LIF with ``g_L = C_m / tau_m``. ``gif_psc_exp``'s threshold state cannot be set,
so an initial offset ``theta0`` is added to the baseline threshold ``V_T_star`` and
decayed by hand: the run proceeds in 10 ms chunks, after each ``V_T_star = V_th + theta0
exp(-t / tau_threshold)`` (exact at the chunk boundaries).
"""

from __future__ import annotations

import math
import os
import sys
import time
import warnings
from typing import Iterator

import numpy as np

from .._mpi import gather_spikes, launch_size, share_run, writes_files
from .network import SpikingNetwork
from .result import SpikingResult

__all__ = ["run_nest", "iter_nest_trials", "trial_gap_ms", "GIF_DELTA_V", "GIF_LAMBDA_0", "THETA0_CHUNK_MS"]

#: Escape-noise width of ``gif_psc_exp`` for adapting populations (mV): near-deterministic.
GIF_DELTA_V = 1e-3
#: Escape rate at threshold of ``gif_psc_exp`` (1/s).
GIF_LAMBDA_0 = 1e3
#: Chunk length (ms) of the run when an initial threshold offset decays by hand.
THETA0_CHUNK_MS = 10.0


def _import_nest():
    os.environ.setdefault("PYNEST_QUIET", "1")
    try:
        import nest
    except ImportError:
        raise ImportError("the NEST backend needs NEST 3.10: pip install 'colplugin[nest]' "
                          "(or pip install nest-simulator)") from None
    return nest


def _syn_spec(nest, c, dt_ms: float) -> dict:
    sd = abs(c.weight) * c.weight_rel_sd
    if sd > 0:
        lo, hi = (0.0, float("inf")) if c.weight > 0 else (float("-inf"), 0.0)
        weight = nest.math.redraw(nest.random.normal(mean=c.weight, std=sd), min=lo, max=hi)
    else:
        weight = float(c.weight)
    d_sd = c.delay * c.delay_rel_sd
    if d_sd > 0:
        delay = nest.math.redraw(nest.random.normal(mean=c.delay, std=d_sd), min=dt_ms, max=float("inf"))
    else:
        delay = max(float(c.delay), dt_ms)
    return {"synapse_model": "static_synapse", "weight": weight, "delay": delay}


def _generators(nest, profile, scale: float, duration_ms: float):
    gens = []
    for a, b, r in profile.segments(duration_ms):
        if r <= 0:
            continue
        spec = {"rate": scale * r, "start": a}
        if b < duration_ms:
            spec["stop"] = b
        gens.append(nest.Create("poisson_generator", params=spec))
    return gens


#: Connections NEST stores per virtual process and synapse model (its source table: 2^27 - 2).
NEST_MAX_CONNECTIONS_PER_THREAD = 2**27 - 2


def nest_threads(net: SpikingNetwork, threads: int, processes: int = 1) -> int:
    """The threads per process NEST needs for ``net``: ``threads``, or more where its synapses exceed NEST's limit.

    NEST refuses more than :data:`NEST_MAX_CONNECTIONS_PER_THREAD` connections of one synapse
    model per virtual process (thread of a process) ("Too many connections"), after minutes of
    building. A network that needs more threads runs with as many (announced; the spike trains
    depend on the number of virtual processes, ``processes x threads``, so the same command
    gives the same result).
    """
    need = math.ceil(math.ceil(net.n_synapses / NEST_MAX_CONNECTIONS_PER_THREAD) / max(1, processes))
    if need > threads:
        warnings.warn(f"NEST stores at most {NEST_MAX_CONNECTIONS_PER_THREAD:,} connections per thread, and this "
                      f"network has {net.n_synapses:,}: running with {need} threads instead of {threads} (pass "
                      f"--threads {need} or more to say so, or lower --scale / --k-scale)", RuntimeWarning,
                      stacklevel=3)
        return need
    return threads


def _reset_kernel(nest, seed: int, threads: int, dt_ms: float) -> None:
    """A fresh NEST kernel: resolution ``dt_ms`` (ms), ``rng_seed = seed + 1``, ``threads`` threads, quiet."""
    nest.ResetKernel()
    nest.verbosity = nest.VerbosityLevel.ERROR
    nest.SetKernelStatus({"resolution": dt_ms, "rng_seed": int(seed) + 1, "local_num_threads": int(threads),
                          "print_time": False})


def _initial_potential(nest, p):
    """A population's initial membrane potentials (mV): drawn from its normal distribution, or its mean."""
    return nest.random.normal(mean=p.V0_mean, std=p.V0_sd) if p.V0_sd > 0 else p.V0_mean


def _create_populations(nest, net: SpikingNetwork) -> tuple[dict, list]:
    """One NEST node collection per population (``iaf_psc_exp``, or ``gif_psc_exp`` where it adapts).

    Returns
    -------
    nodes : dict
        Node collection per population name.
    theta0 : list
        ``(nodes, V_th mV, theta0 mV, tau_threshold ms)`` of each adapting population with an
        initial threshold offset, which the run decays by hand.
    """
    nodes, theta0 = {}, []
    for p in net.populations:
        m = p.model
        common = {"C_m": m.C_m, "E_L": m.E_L, "V_reset": m.V_reset, "t_ref": m.t_ref, "tau_syn_ex": m.tau_syn,
                  "tau_syn_in": m.tau_syn, "I_e": p.I_dc}
        if m.adapting:
            params = {**common, "g_L": m.C_m / m.tau_m, "V_T_star": m.V_th + p.theta0, "Delta_V": GIF_DELTA_V,
                      "lambda_0": GIF_LAMBDA_0, "q_sfa": [m.threshold_jump], "tau_sfa": [m.tau_threshold],
                      "q_stc": [], "tau_stc": []}
            nodes[p.name] = nest.Create("gif_psc_exp", p.size, params=params)
            if p.theta0 > 0:
                theta0.append((nodes[p.name], m.V_th, p.theta0, m.tau_threshold))
        else:
            nodes[p.name] = nest.Create("iaf_psc_exp", p.size, params={**common, "tau_m": m.tau_m, "V_th": m.V_th})
        nodes[p.name].V_m = _initial_potential(nest, p)
    return nodes, theta0


def _connect(nest, net: SpikingNetwork, nodes: dict, dt_ms: float, T: float) -> list:
    """Source populations (parrots driven by generators), connections and independent Poisson input.

    Adds the source populations' parrots to ``nodes``; ``dt_ms`` is the time step and ``T``
    the run length, ms. Returns every ``poisson_generator`` made (their times are relative to
    their ``origin``, which a reused network moves to each trial's start).
    """
    generators = []
    for s in net.sources:
        parrots = nest.Create("parrot_neuron", s.size)
        for g in _generators(nest, s.rate, 1.0, T):
            nest.Connect(g, parrots, "all_to_all", {"delay": dt_ms})
            generators.append(g)
        nodes[s.name] = parrots
    for c in net.connections:
        if c.n_synapses:
            nest.Connect(nodes[c.source], nodes[c.target],
                         {"rule": "fixed_total_number", "N": c.n_synapses, "allow_autapses": True,
                          "allow_multapses": True}, _syn_spec(nest, c, dt_ms))
    for inp in net.poisson_inputs:
        if inp.n_sources > 0:
            for g in _generators(nest, inp.rate, inp.n_sources, T):
                nest.Connect(g, nodes[inp.target], "all_to_all", {"weight": float(inp.weight), "delay": dt_ms})
                generators.append(g)
    return generators


def _spike_recorders(nest, net: SpikingNetwork, nodes: dict) -> dict:
    """One ``spike_recorder`` per recorded population, by name."""
    recorders = {}
    for name in net.record:
        recorders[name] = nest.Create("spike_recorder")
        nest.Connect(nodes[name], recorders[name])
    return recorders


def _run_decaying_theta0(nest, theta0: list, T: float, dt_ms: float) -> None:
    """Run for ``T`` ms in chunks of :data:`THETA0_CHUNK_MS` (on the time grid of step ``dt_ms`` ms).

    After each chunk, each initial threshold offset is decayed to its value at the chunk's end.
    """
    steps = int(round(T / dt_ms))
    n_chunks = int(np.ceil(T / THETA0_CHUNK_MS - 1e-9))
    edges = [min(steps, int(round(k * THETA0_CHUNK_MS / dt_ms))) for k in range(n_chunks + 1)]
    edges[-1] = steps
    with nest.RunManager():
        for k in range(n_chunks):
            if edges[k + 1] > edges[k]:
                nest.Run((edges[k + 1] - edges[k]) * dt_ms)
            t_now = edges[k + 1] * dt_ms
            for group, v_th, th0, tau in theta0:
                group.V_T_star = v_th + th0 * np.exp(-t_now / tau)


def _run_in_chunks(nest, T: float, dt_ms: float) -> None:
    """Run for ``T`` ms in at most 20 chunks on the time grid (step ``dt_ms`` ms).

    Progress goes to stderr once the run has taken more than 5 s of wall time.
    """
    n_chunks = max(1, min(20, int(np.ceil(T / 50.0))))
    steps = int(round(T / dt_ms))
    edges = [round(steps * k / n_chunks) * dt_ms for k in range(n_chunks + 1)]  # on the time grid
    t_sim = time.perf_counter()
    with nest.RunManager():
        for k in range(n_chunks):
            nest.Run(edges[k + 1] - edges[k])
            elapsed = time.perf_counter() - t_sim
            if elapsed > 5.0 and writes_files():
                print(f"NEST: {(k + 1) / n_chunks:.0%} of {T / 1000:g} s simulated in {elapsed:.0f} s",
                      file=sys.stderr, flush=True)


def _recorded_spikes(nest, recorders: dict, nodes: dict, dt_ms: float, origin_ms: float = 0.0,
                     T: float = float("inf")) -> tuple[dict, dict]:
    """Spikes (neuron index within the population, time s) and sizes of every recorded population.

    NEST stamps the end of the step (``dt_ms`` ms) in which V crossed threshold; the times
    are the start of that step, as Brian2's, counted from the trial's start ``origin_ms`` (ms)
    and kept in ``[0, T)`` ms. Under MPI each process records its own neurons, and the spikes
    of all are gathered (:func:`colplugin._mpi.gather_spikes`: sorted by time, then neuron).
    """
    spikes, sizes = {}, {}
    for name, rec in recorders.items():
        ev = rec.get("events")
        first = nodes[name][0].global_id
        t = np.asarray(ev["times"], float) - dt_ms - origin_ms
        keep = (t >= -1e-9) & (t < T - 1e-9)
        spikes[name] = (np.asarray(ev["senders"], dtype=np.int64)[keep] - first, np.maximum(t[keep], 0.0) * 1e-3)
        sizes[name] = len(nodes[name])
    return gather_spikes(spikes, nest.NumProcesses()), sizes


#: Threshold (mV) that silences the neurons between two trials of a reused network: no input reaches it
#: (``V_th`` of ``iaf_psc_exp``, ``V_T_star`` of ``gif_psc_exp``; their potentials cannot silence them, since a
#: refractory ``gif_psc_exp`` clamps its potential to ``V_reset``).
SILENT_THRESHOLD_MV = 1e9
#: Time constant (ms) of the threshold adaptation between two trials: it vanishes within one step.
CLEAR_TAU_MS = 1e-6
#: Synaptic time constants the pause between two trials lets the synaptic currents decay (e^-20 of them remains).
SETTLE_TAU_SYN = 20


def trial_gap_ms(net: SpikingNetwork, max_delay_ms: float, dt_ms: float) -> float:
    """The pause (ms, on the time grid) between two trials of a network built once (:func:`iter_nest_trials`).

    Every spike in flight arrives within the longest delay ``max_delay_ms``, and then the
    synaptic currents decay for :data:`SETTLE_TAU_SYN` synaptic time constants; and every
    refractory period that was running ends.
    """
    tau_syn = max((p.model.tau_syn for p in net.populations), default=0.0)
    t_ref = max((p.model.t_ref for p in net.populations), default=0.0)
    gap = max(max_delay_ms + SETTLE_TAU_SYN * tau_syn, t_ref) + dt_ms
    return float(np.ceil(gap / dt_ms - 1e-9) * dt_ms)


def _set_initial_state(nest, net: SpikingNetwork, nodes: dict) -> None:
    """Each neuron's threshold as at its start and its initial potential (new draws)."""
    for p in net.populations:
        if p.model.adapting:
            nodes[p.name].set(tau_sfa=[p.model.tau_threshold], V_T_star=p.model.V_th + p.theta0)
        else:
            nodes[p.name].V_th = p.model.V_th
        nodes[p.name].V_m = _initial_potential(nest, p)


def _restart(nest, net: SpikingNetwork, nodes: dict, generators: list, recorders: dict, origin_ms: float,
             gap_ms: float) -> None:
    """Bring a built network back to a fresh trial's state, which starts at ``origin_ms`` (ms).

    For ``gap_ms`` (:func:`trial_gap_ms`) every threshold is out of reach
    (:data:`SILENT_THRESHOLD_MV`: no spikes) while every spike in flight arrives, the synaptic
    currents decay (``iaf_psc_exp`` cannot set them) and the refractory periods end; the
    adaptation of ``gif_psc_exp`` (whose state cannot be set) decays within a step
    (:data:`CLEAR_TAU_MS`), and the generators, whose times count from ``origin`` (the next
    trial's start), are off. Then the thresholds are set as at the start, the potentials drawn
    anew, and the recorders emptied.
    """
    for p in net.populations:
        if p.model.adapting:
            nodes[p.name].set(tau_sfa=[CLEAR_TAU_MS], V_T_star=SILENT_THRESHOLD_MV)
        else:
            nodes[p.name].V_th = SILENT_THRESHOLD_MV
    for g in generators:
        g.origin = origin_ms
    with nest.RunManager():  # its own Prepare: gif_psc_exp reads tau_sfa there
        nest.Run(gap_ms)
    _set_initial_state(nest, net, nodes)
    for rec in recorders.values():
        rec.n_events = 0


def _check_gating(net: SpikingNetwork) -> None:
    if net.gating is not None or any(c.gated for c in net.connections):
        raise ValueError(f"network {net.name!r} has gated connections (a saturating gating variable in every "
                         "neuron), which NEST's built-in models do not have (it would need a NESTML neuron); run it "
                         "on backend 'brian2'")


def iter_nest_trials(net: SpikingNetwork, duration: float, trials: int, *, seed: int = 0, threads: int = 1,
                     dt: float = 1e-4, device: str | None = None,
                     directory: str | None = None) -> Iterator[SpikingResult]:
    """Build ``net`` in NEST once and run ``trials`` trials of ``duration`` s in it, one result per trial.

    The trials share the network's connectivity, weights and delays (drawn with ``seed``);
    each starts from a fresh state (:func:`_restart`: new initial potentials, no adaptation, no
    synaptic current, nothing in flight) and gets its own Poisson input, the continuation of
    the same random stream. Trial 0 is exactly :func:`run_nest` with ``seed``. Trial ``j``
    runs from ``j (duration + gap)`` in NEST's time (:func:`trial_gap_ms`); its spike times
    count from its own start.

    The first result's ``build_seconds`` is the build's (kernel, nodes, connections), the
    others' 0; ``simulate_seconds`` is each trial's run, its pause before it included.
    ``device`` and ``directory`` are accepted (the backends' common signature) and ignored.
    """
    _check_gating(net)
    nest = _import_nest()
    processes = nest.NumProcesses()
    if launch_size() > processes:
        raise RuntimeError(f"this process is one of {launch_size()} MPI processes, but NEST ({nest.__file__}) runs "
                           f"in {processes}: it was built without MPI (the PyPI wheel has none), so every process "
                           "would simulate the whole network. Build NEST with -Dwith-mpi=ON (docs: 'NEST with MPI') "
                           "and put it first on PYTHONPATH, or run without mpirun")
    if processes > 1:
        share_run()  # one network in several processes: only rank 0 writes, as the command line declares
    threads = nest_threads(net, threads, processes)
    t0 = time.perf_counter()
    dt_ms = dt * 1e3
    T = int(round(duration * 1e3 / dt_ms)) * dt_ms  # on the time grid, as NEST runs it
    _reset_kernel(nest, seed, threads, dt_ms)
    nodes, theta0 = _create_populations(nest, net)
    generators = _connect(nest, net, nodes, dt_ms, T)
    recorders = _spike_recorders(nest, net, nodes)
    t_build = time.perf_counter() - t0
    gap = trial_gap_ms(net, float(nest.GetKernelStatus("max_delay")), dt_ms) if trials > 1 else 0.0
    settings = {"name": net.name, **dict(net.metadata), "backend": "nest", "device": "nest", "seed": seed,
                "threads": threads, "dt_s": dt, "duration_s": duration, "n_neurons": net.n_neurons,
                "n_synapses": net.n_synapses, "nest_version": nest.__version__, "mpi_processes": processes,
                "virtual_processes": processes * threads, "trials_in_network": int(trials),
                "trial_gap_ms": gap}
    ann = {p.name: dict(p.annotations) for p in net.populations if p.name in recorders}
    for j in range(trials):
        t1 = time.perf_counter()
        origin = j * (T + gap)
        if j:
            _restart(nest, net, nodes, generators, recorders, origin, gap)
        if theta0:
            _run_decaying_theta0(nest, theta0, T, dt_ms)
        else:  # in chunks, with progress on stderr once a run takes more than 5 s of wall time
            _run_in_chunks(nest, T, dt_ms)
        t_run = time.perf_counter() - t1
        spikes, sizes = _recorded_spikes(nest, recorders, nodes, dt_ms, origin, T)
        build = t_build if j == 0 else 0.0
        yield SpikingResult(spikes, sizes, duration, {**settings, "trial_in_network": j}, ann,
                            {"build": build, "run": t_run, "total": build + time.perf_counter() - t1},
                            build_seconds=build, simulate_seconds=t_run)


def run_nest(net: SpikingNetwork, duration: float, *, seed: int = 0, threads: int = 1,
             dt: float = 1e-4, device: str | None = None, directory: str | None = None) -> SpikingResult:
    """Build ``net`` in NEST and run it for ``duration`` s (use :func:`~colplugin.spiking.simulate_spiking`).

    NEST has no devices and builds no project: ``device`` and ``directory`` are accepted (the
    backends' common signature) and ignored.

    The result's ``build_seconds`` is the wall time of resetting the kernel, creating the nodes and
    connecting them (``Create``, ``Connect``); ``simulate_seconds`` that of the run (``Run`` in a
    ``RunManager``, which includes NEST's preparation of the connection tables before the first step).
    """
    return next(iter_nest_trials(net, duration, 1, seed=seed, threads=threads, dt=dt))
