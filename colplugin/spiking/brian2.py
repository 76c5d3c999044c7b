"""Brian2 backend: a :class:`SpikingNetwork` as Brian2 objects, on the runtime or cpp_standalone device.

All neurons are one ``NeuronGroup`` (populations are contiguous slices of it); every
connection between populations is one ``Synapses`` object built from index arrays drawn in
numpy; a Poisson source population is a ``PoissonGroup`` whose rate follows a
``TimedArray``; independent Poisson input of all populations is one ``run_regularly`` operation that adds
``weight * poisson(rate * dt)`` per neuron and step (rates from a 2-d ``TimedArray``), so
that the number of generated code objects does not grow with the number of inputs.
Neuron parameters shared by every population are namespace constants, the others
per-neuron constants. Integration is exact (``method="exact"``).

Adaptation: populations with ``threshold_jump > 0`` get a threshold variable ``theta``
(``v > V_th + theta``) that jumps at each spike and decays with ``tau_threshold``.

Synaptic gating (a network with a :class:`~colplugin.spiking.network.SynapticGatingModel`): every
neuron gets a gating variable ``s_G`` (``ds_G/dt = -s_G / tau_G``, ``s_G += gamma_G (1 - s_G)`` at
its spikes) and the gated connections one more ``Synapses`` object whose summed variable
``I_gat_post = w * s_G_pre`` adds to the membrane current. A shared gating (``shared=True``) is one
``NeuronGroup`` of gating variables, one per gated source population (``G += gamma_G (1 - G) k / N``
after each step in which ``k`` of its ``N`` neurons spiked, counted by a ``Synapses`` object from
the neurons), and each target
neuron's gated synapses from one population are one synapse from that population's variable
(their weights summed): ``I_gat_post = w * G_pre``.

Reproducibility: connectivity, weights, delays and initial potentials come from
``numpy.random.default_rng(seed)``; the Poisson input uses Brian2's generator, seeded with
``brian2.seed(seed)`` after the device is chosen (in cpp_standalone the seed must be set on
the standalone device, or the compiled project seeds itself from the clock).
"""

from __future__ import annotations

import shutil
import tempfile
import time

import numpy as np

from .network import LIFModel, SpikingNetwork
from .result import SpikingResult
from .._warnings import quiet_brian2_parsing
from ..export.brian2 import progress_report

__all__ = ["run_brian2", "draw_normal"]

_PARAMS = ("C_m", "tau_m", "E_L", "V_reset", "V_th", "t_ref", "tau_syn")
_UNITS = {"C_m": "pF", "tau_m": "ms", "E_L": "mV", "V_reset": "mV", "V_th": "mV", "t_ref": "ms", "tau_syn": "ms",
          "tau_th": "ms"}
_DIMS = {"pF": "farad", "ms": "second", "mV": "volt"}


def draw_normal(rng: np.random.Generator, mean: float, sd: float, n: int, *, low: float | None = None,
                high: float | None = None) -> np.ndarray:
    """``n`` normal draws, redrawing those outside ``[low, high]`` (NEST's ``nest.math.redraw``)."""
    x = rng.normal(mean, sd, n) if sd > 0 else np.full(n, float(mean))
    for _ in range(1000):
        bad = np.zeros(n, bool)
        if low is not None:
            bad |= x < low
        if high is not None:
            bad |= x > high
        if not bad.any():
            return x
        x[bad] = rng.normal(mean, sd, int(bad.sum()))
    raise ValueError(f"could not draw values of N({mean}, {sd}) within [{low}, {high}]; widen the bounds")


def _weights_delays(rng: np.random.Generator, c, n: int, dt_ms: float) -> tuple[np.ndarray, np.ndarray]:
    sd = abs(c.weight) * c.weight_rel_sd
    w = draw_normal(rng, c.weight, sd, n, low=0.0 if c.weight > 0 else None, high=0.0 if c.weight < 0 else None)
    d = draw_normal(rng, c.delay, c.delay * c.delay_rel_sd, n, low=dt_ms)
    return w, np.round(d / dt_ms) * dt_ms


def _network_layout(net: SpikingNetwork) -> tuple[np.ndarray, dict[str, int], int]:
    """Where each population lies in the one ``NeuronGroup``.

    Returns
    -------
    sizes : numpy.ndarray
        Neurons per population, in the description's order.
    offsets : dict
        Index of each population's first neuron.
    n_total : int
        Neurons in all.
    """
    pops = net.populations
    sizes = np.array([p.size for p in pops])
    offsets = dict(zip([p.name for p in pops], np.concatenate([[0], np.cumsum(sizes)[:-1]])))
    return sizes, offsets, int(sizes.sum())


def _select_device(b2, device: str, directory: str | None, threads: int) -> str | None:
    """Set Brian2's preferences and device; returns the cpp_standalone project directory (``None`` for runtime).

    Parameters
    ----------
    b2 : module
        ``brian2``.
    device : {"cpp_standalone", "runtime"}
    directory : str, optional
        The project directory (default: a new temporary one).
    threads : int
        OpenMP threads of the standalone project (1: none).
    """
    b2.prefs.codegen.target = "cython"
    b2.prefs.core.stop_on_keyboard_interrupt = False  # Ctrl+C interrupts; never a silently shortened run
    if device == "cpp_standalone":
        directory = directory or tempfile.mkdtemp(prefix="colplugin_spiking_")
        b2.set_device("cpp_standalone", directory=directory, build_on_run=False)
        b2.prefs.devices.cpp_standalone.openmp_threads = threads if threads > 1 else 0
    return directory


def _restore_device(b2, device: str, directory: str | None, cleanup: bool) -> None:
    """Back to Brian2's runtime device after a cpp_standalone run; remove a temporary project (``cleanup``)."""
    if device == "cpp_standalone":
        b2.device.reinit()
        b2.device.activate()
        b2.set_device("runtime")
        if cleanup:  # a temporary project of a large circuit holds GBs of connectivity
            shutil.rmtree(directory, ignore_errors=True)


def _neuron_equations(b2, models: list[LIFModel], plan, gating=None) -> tuple[str, list[str], dict, str, str]:
    """The neurons' equations, threshold and reset.

    Parameters shared by every model are namespace constants (with units), the others
    per-neuron constants; ``plan`` (:func:`_poisson_plan`) adds the Poisson input's slots,
    adaptation the threshold ``theta``.

    Returns
    -------
    tuple
        ``(equations, per-neuron parameter names, namespace, threshold, reset)``.
    """
    per_neuron, namespace = [], {}
    for name in _PARAMS:
        values = {getattr(m, name) for m in models}
        unit = getattr(b2, _UNITS[name])
        if len(values) == 1:
            namespace[name] = values.pop() * unit
        else:
            per_neuron.append(name)
    gated = " + I_gat" if gating is not None else ""
    eqs = (f"dv/dt = (E_L - v) / tau_m + (I + I_dc{gated}) / C_m : volt (unless refractory)\n"
           "dI/dt = -I / tau_syn : amp\nI_dc : amp (constant)\n")
    eqs += "".join(f"{name} : {_DIMS[_UNITS[name]]} (constant)\n" for name in per_neuron)
    if plan is not None:
        namespace["poisson_rates"] = b2.TimedArray(plan[0] * b2.Hz, dt=plan[1] * b2.second)
        eqs += "".join(f"w_poisson_{m} : amp (constant)\nrow_poisson_{m} : integer (constant)\n"
                       for m in range(plan[2].shape[0]))
    threshold, reset = "v > V_th", "v = V_reset"
    if any(m.adapting for m in models):
        eqs += "dtheta/dt = -theta / tau_th : volt\nq_th : volt (constant)\ntau_th : second (constant)\n"
        threshold, reset = "v > V_th + theta", "v = V_reset; theta += q_th"
    if gating is not None:  # the summed current of the gated synapses, and every neuron's gating variable
        eqs += "I_gat : amp\n"
        if not gating.shared:
            eqs += "ds_G/dt = -s_G / tau_G : 1\n"
            namespace.update(tau_G=gating.tau * b2.ms, gamma_G=gating.gamma)
            reset += "; s_G += gamma_G * (1 - s_G)"
    return eqs, per_neuron, namespace, threshold, reset


def _neuron_group(b2, net: SpikingNetwork, sizes: np.ndarray, n_total: int, rng: np.random.Generator, plan):
    """All neurons as one ``NeuronGroup`` named ``"neurons"``, parameters and initial state set.

    The initial potentials (mV) are drawn from ``rng``, population by population.
    """
    pops = net.populations
    models: list[LIFModel] = [p.model for p in pops]
    eqs, per_neuron, namespace, threshold, reset = _neuron_equations(b2, models, plan, net.gating)
    G = b2.NeuronGroup(n_total, b2.Equations(eqs), threshold=threshold, reset=reset,
                       refractory="t_ref" if "t_ref" in per_neuron else namespace["t_ref"],
                       method="exact", namespace=namespace, name="neurons")
    for name in per_neuron:
        setattr(G, name, np.repeat([getattr(m, name) for m in models], sizes) * getattr(b2, _UNITS[name]))
    G.I_dc = np.repeat([p.I_dc for p in pops], sizes) * b2.pA
    G.v = np.concatenate([rng.normal(p.V0_mean, p.V0_sd, p.size) if p.V0_sd > 0 else np.full(p.size, p.V0_mean)
                          for p in pops]) * b2.mV
    if any(m.adapting for m in models):
        G.q_th = np.repeat([m.threshold_jump for m in models], sizes) * b2.mV
        G.tau_th = np.repeat([m.tau_threshold if m.adapting else 1.0 for m in models], sizes) * b2.ms
        G.theta = np.repeat([p.theta0 for p in pops], sizes) * b2.mV
    return G


def _source_groups(b2, net: SpikingNetwork, duration: float, dt: float) -> dict:
    """One ``PoissonGroup`` per Poisson source population, its rate (Hz) sampled on the time grid (step ``dt`` s)."""
    dt_ms = dt * 1e3
    source_groups, n_steps = {}, int(round(duration / dt))
    for k, s in enumerate(net.sources):
        grid = np.zeros(n_steps + 1)
        for a, b, r in s.rate.segments(duration * 1e3):
            grid[int(round(a / dt_ms)):int(round(b / dt_ms))] = r
        grid[-1] = grid[-2]
        ta = b2.TimedArray(grid * b2.Hz, dt=dt * b2.second, name=f"rate_{k}")
        source_groups[s.name] = b2.PoissonGroup(s.size, rates=f"rate_{k}(t)", namespace={f"rate_{k}": ta},
                                                name=f"source_{k}")
    return source_groups


def _synapses(b2, net: SpikingNetwork, G, source_groups: dict, offsets: dict, rng: np.random.Generator,
              dt: float) -> list:
    """The connections: recurrent ones in one ``Synapses`` object, each source population's in one more.

    Pairs, weights (pA) and delays (ms, on the ``dt`` s grid) are drawn from ``rng``, connection by connection.
    """
    dt_ms = dt * 1e3
    by_pre: dict[str, list] = {}
    for c in net.connections:
        if c.n_synapses and not c.gated:
            by_pre.setdefault("neurons" if c.source in offsets else c.source, []).append(c)
    objs = _gated_synapses(b2, net, G, offsets, rng)
    for k, (pre, conns) in enumerate(by_pre.items()):
        src, tgt, w, d = [], [], [], []
        for c in conns:
            n = c.n_synapses
            n_src = net.size_of(c.source)
            src.append(rng.integers(0, n_src, n, dtype=np.int64) + (offsets[c.source] if pre == "neurons" else 0))
            tgt.append(rng.integers(0, net.size_of(c.target), n, dtype=np.int64) + offsets[c.target])
            ww, dd = _weights_delays(rng, c, n, dt_ms)
            w.append(ww)
            d.append(dd)
        S = b2.Synapses(G if pre == "neurons" else source_groups[pre], G, "w : amp", on_pre="I_post += w",
                        name=f"synapses_{k}")
        S.connect(i=np.concatenate(src).astype(np.int32), j=np.concatenate(tgt).astype(np.int32))
        S.w = np.concatenate(w) * b2.pA
        S.delay = np.concatenate(d) * b2.ms
        objs.append(S)
    return objs


def _gated_synapses(b2, net: SpikingNetwork, G, offsets: dict, rng: np.random.Generator) -> list:
    """The gated connections as one ``Synapses`` object: ``I_gat_post = w * s_G_pre`` (summed, no delay).

    A synapse of weight ``J`` (pA) carries ``J tau_syn s / (gamma tau)``: its mean over a source
    population firing at ``r`` is ``J tau_syn G / (gamma tau)``, the rate model's gated input.
    """
    gated = [c for c in net.connections if c.gated and c.n_synapses]
    if not gated:
        return []
    g = net.gating
    src, tgt, w = [], [], []
    for c in gated:
        n = c.n_synapses
        if not g.shared:  # a shared variable is the same for every source neuron: no draw of the source
            src.append(rng.integers(0, net.size_of(c.source), n, dtype=np.int64) + offsets[c.source])
        tgt.append(rng.integers(0, net.size_of(c.target), n, dtype=np.int64) + offsets[c.target])
        sd = abs(c.weight) * c.weight_rel_sd
        ww = draw_normal(rng, c.weight, sd, n, low=0.0 if c.weight > 0 else None, high=0.0 if c.weight < 0 else None)
        w.append(ww * net.population(c.target).model.tau_syn / (g.gamma * g.tau))
    if g.shared:
        return _shared_gates(b2, net, G, offsets, gated, tgt, w)
    S = b2.Synapses(G, G, "w : amp\nI_gat_post = w * s_G_pre : amp (summed)", name="gated_synapses")
    S.connect(i=np.concatenate(src).astype(np.int32), j=np.concatenate(tgt).astype(np.int32))
    S.w = np.concatenate(w) * b2.pA
    return [S]


def _shared_gates(b2, net: SpikingNetwork, G, offsets: dict, gated: list, tgt: list, w: list) -> list:
    """A shared gating: one variable per gated source population and one synapse from it per target neuron.

    ``tgt`` and ``w`` are the gated connections' drawn targets (neuron indices) and weights (pA, already
    scaled by ``tau_syn / (gamma tau)``), connection by connection; a target neuron's weights from one
    source population are summed (the variable is the same for every neuron of that population).
    """
    g = net.gating
    sources = sorted({c.source for c in gated}, key=lambda name: offsets[name])
    gate = {name: k for k, name in enumerate(sources)}
    gates = b2.NeuronGroup(len(sources), "dG/dt = -G / tau_G : 1\ninv_N : 1 (constant)\nn_spikes : 1",
                           method="exact", namespace={"tau_G": g.tau * b2.ms, "gamma_G": g.gamma},
                           name="population_gates")
    gates.inv_N = [1.0 / net.size_of(name) for name in sources]
    # a step's spikes are counted (order-free), then move G towards 1 together, after the synapses' slot
    gates.run_regularly("G += gamma_G * inv_N * n_spikes * (1 - G)\nn_spikes = 0", when="resets",
                        name="population_gates_rise")
    spikes = b2.Synapses(G, gates, on_pre="n_spikes_post += 1", name="gate_spikes")
    pre = np.concatenate([offsets[name] + np.arange(net.size_of(name)) for name in sources])
    post = np.concatenate([np.full(net.size_of(name), gate[name]) for name in sources])
    spikes.connect(i=pre.astype(np.int32), j=post.astype(np.int32))
    total = np.zeros((len(sources), len(G)))  # summed weight (pA) of each target neuron from each variable
    for c, t, ww in zip(gated, tgt, w):
        total[gate[c.source]] += np.bincount(t, weights=ww, minlength=len(G))
    i, j = np.nonzero(total)
    S = b2.Synapses(gates, G, "w : amp\nI_gat_post = w * G_pre : amp (summed)", name="gated_synapses")
    S.connect(i=i.astype(np.int32), j=j.astype(np.int32))
    S.w = total[i, j] * b2.pA
    return [gates, spikes, S]


def _poisson_input(b2, G, plan):
    """The independent Poisson input of every population as one ``run_regularly`` operation (one code object).

    ``plan`` is :func:`_poisson_plan`'s (not ``None``); sets the slots' weights (pA) and rate rows on ``G``.
    """
    slots = range(plan[2].shape[0])
    for m in slots:
        setattr(G, f"w_poisson_{m}", plan[3][m] * b2.pA)
        setattr(G, f"row_poisson_{m}", plan[2][m])
    terms = [f"w_poisson_{m} * poisson(poisson_rates(t, row_poisson_{m}) * dt)" for m in slots]
    return G.run_regularly("I += " + " + ".join(terms), when="synapses", name="poisson_input")


def _build_network(b2, net: SpikingNetwork, duration: float, dt: float, rng: np.random.Generator):
    """``net`` as a Brian2 ``Network`` of neurons, sources, synapses, Poisson input and a spike monitor.

    Parameters
    ----------
    b2 : module
        ``brian2``, its device already selected.
    net : SpikingNetwork
    duration : float
        Run length, s (the rate grids of the inputs).
    dt : float
        Time step, s.
    rng : numpy.random.Generator
        Initial potentials, then connectivity, weights and delays, in this order.

    Returns
    -------
    tuple
        ``(network, spike monitor)``.
    """
    sizes, offsets, n_total = _network_layout(net)
    plan = _poisson_plan(net, offsets, n_total, duration, dt)
    G = _neuron_group(b2, net, sizes, n_total, rng, plan)
    source_groups = _source_groups(b2, net, duration, dt)
    objs = [G, *source_groups.values(), *_synapses(b2, net, G, source_groups, offsets, rng, dt)]
    if plan is not None:
        objs.append(_poisson_input(b2, G, plan))
    M = b2.SpikeMonitor(G, name="spikes")
    objs.append(M)
    return b2.Network(*objs), M


def _simulate(b2, network, duration: float, device: str, directory: str | None) -> None:
    """Run ``network`` for ``duration`` s: code generation and the run (cpp_standalone: compile and run the project)."""
    # no implicit capture of this frame's locals; progress on stderr once a run takes more than 5 s
    network.run(duration * b2.second, namespace={}, report=progress_report(duration, device),
                report_period=5 * b2.second)
    if device == "cpp_standalone":
        b2.device.build(directory=directory, run=True, compile=True)


def _split_spikes(net: SpikingNetwork, i_all: np.ndarray, t_all: np.ndarray) -> dict:
    """``spikes[population] = (neuron index within it, time s)`` of every recorded population."""
    _, offsets, _ = _network_layout(net)
    spikes = {}
    for p in net.populations:
        if p.name in net.record:
            sel = (i_all >= offsets[p.name]) & (i_all < offsets[p.name] + p.size)
            spikes[p.name] = (i_all[sel] - offsets[p.name], t_all[sel])
    return spikes


def run_brian2(net: SpikingNetwork, duration: float, *, device: str = "cpp_standalone", seed: int = 0,
               threads: int = 1, dt: float = 1e-4, directory: str | None = None) -> SpikingResult:
    """Build ``net`` in Brian2 and run it for ``duration`` s (use :func:`~colplugin.spiking.simulate_spiking`).

    The result's ``build_seconds`` is the wall time of choosing the device and constructing the
    Brian2 objects in Python (neurons, sources, synapses, monitor); ``simulate_seconds`` that of
    ``Network.run`` (code generation included) and, on cpp_standalone, of compiling and running the
    project (``device.build``), which Brian2 does not separate.
    """
    quiet_brian2_parsing()
    import brian2 as b2

    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    cleanup = device == "cpp_standalone" and directory is None
    directory = _select_device(b2, device, directory, threads)
    b2.seed(seed)  # after set_device: seeds the standalone project's generator too
    try:
        b2.defaultclock.dt = dt * b2.second
        network, M = _build_network(b2, net, duration, dt, rng)
        t1 = time.perf_counter()
        _simulate(b2, network, duration, device, directory)
        t2 = time.perf_counter()
        i_all = np.asarray(M.i[:])
        t_all = np.asarray(M.t[:] / b2.second)
    finally:
        _restore_device(b2, device, directory, cleanup)
    pops = net.populations
    settings = {"name": net.name, **dict(net.metadata), "backend": "brian2", "device": device, "seed": seed,
                "threads": threads, "dt_s": dt, "duration_s": duration, "n_neurons": net.n_neurons,
                "n_synapses": net.n_synapses, "brian2_version": b2.__version__}
    spikes = _split_spikes(net, i_all, t_all)
    t_build, t_run = t1 - t0, t2 - t1
    return SpikingResult(spikes, {p.name: p.size for p in pops if p.name in net.record}, duration, settings,
                         {p.name: dict(p.annotations) for p in pops if p.name in net.record},
                         {"build": t_build, "run": t_run, "total": time.perf_counter() - t0},
                         build_seconds=t_build, simulate_seconds=t_run)


def _poisson_plan(net: SpikingNetwork, offsets: dict, n_total: int, duration: float, dt: float):
    """How all PoissonInputs become ``I += w_m * poisson(lam(t, row_m) * dt)`` per weight slot m.

    The inputs of a population with the same weight add up to one Poisson process of rate
    ``sum n_sources * rate(t)``; each distinct weight of a population is a slot. Returns
    ``None`` without input, else ``(rates (grid, rows) Hz, grid step s, row (slots, n), w (slots, n) pA)``.
    """
    n_steps = int(round(duration / dt))
    groups: dict[str, dict[float, list]] = {}
    for inp in net.poisson_inputs:
        if inp.n_sources > 0 and inp.weight != 0 and any(r > 0 for r in inp.rate.rates):
            groups.setdefault(inp.target, {}).setdefault(float(inp.weight), []).append(inp)
    if not groups:
        return None
    changes = [int(round(t * 1e-3 / dt)) for g in groups.values() for ins in g.values() for i in ins
               for t in i.rate.times[1:]]
    step = int(np.gcd.reduce([n_steps] + [c for c in changes if 0 < c < n_steps]))
    # Brian2 aligns a TimedArray with the clock only if (step * dt) / dt is a whole number in floating
    # point; the largest divisor of step for which it is keeps every change point on the grid
    step = max(d for d in range(1, step + 1) if step % d == 0 and (d * dt) / dt == np.floor((d * dt) / dt))
    n_grid = n_steps // step + 1
    n_slots = max(len(g) for g in groups.values())
    rows = [np.zeros(n_grid)]  # row 0: no input
    row_of = np.zeros((n_slots, n_total), dtype=np.int32)
    w_of = np.zeros((n_slots, n_total))
    grid_ms = np.arange(n_grid) * step * dt * 1e3
    for target, by_weight in groups.items():
        a, n = int(offsets[target]), net.size_of(target)
        for m, (w, ins) in enumerate(by_weight.items()):
            lam = np.zeros(n_grid)
            for inp in ins:
                k = np.searchsorted(np.asarray(inp.rate.times), grid_ms + 1e-9, side="right") - 1
                lam += inp.n_sources * np.asarray(inp.rate.rates)[k]
            rows.append(lam)
            row_of[m, a:a + n] = len(rows) - 1
            w_of[m, a:a + n] = w
    return np.stack(rows, axis=1), step * dt, row_of, w_of
