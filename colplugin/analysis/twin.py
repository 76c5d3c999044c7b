"""The spiking twin of a trained run: run the task's conditions in spiking neurons, compare, report.

:func:`twin_run` builds the spiking twin (:func:`colplugin.spiking.spiking_twin`) of a
trained network for every condition (trial) of the task's evaluation stimulus, runs each
``trials`` times on a spiking backend, and compares with
the DMF (here and below: the network's rate model, the DMF or, for a network of the Siegert
transfer, the LIF column; ``rate_model`` names it, and the keys keep the name ``dmf_``).
Where the backend can (NEST) each condition's network is built once and its trials run in
it from a fresh state (``network_reused``: one draw of connectivity, weights and delays with
``seed``; new initial potentials and Poisson input per trial); otherwise (Brian2, or
``reuse=False``) trial ``j`` is a new build with seed ``seed + j``, a new draw of everything.

- ``accuracy``: the task's own metric (:meth:`Task.accuracy_from_rates`) of the spiking
  population rates over the task's read-out window (:meth:`Task.readout_window`), all
  trials of all conditions together; ``dmf_accuracy`` is the same read-out of the DMF's
  rates in that window (one trial per condition). ``None`` for tasks without a read-out
  from rates.
- ``persistence``: for tasks with a persistence window (:meth:`Task.persistence_window`,
  after the stimulus: the decision task), the same read-out over that window (``accuracy``,
  ``dmf_accuracy``, the rates per condition); ``None`` otherwise.
- ``per_population``: for every column and population, the DMF rate and the spiking rate
  (Elephant's ``mean_firing_rate`` over all neurons of the population, mean over trials)
  in the read-out window, and the relative difference ``(spiking - DMF) / max(DMF,
  0.1 Hz)``; per condition and averaged over conditions.
- ``build_seconds``, ``simulate_seconds``: wall time of building the spiking networks in the
  simulator and of simulating them, summed over all runs (:class:`~colplugin.spiking.SpikingResult`
  says what each backend counts where), and ``simulate_seconds_per_model_second``, the
  simulation's wall time per second of simulated time; ``wall_seconds`` is the whole command's.

Written into the output directory: ``twin.json``, ``report.md``, ``spikes.nix`` (Neo: one
Segment per condition and kept trial, SpikeTrains annotated with area, column, population,
layer, cell type and neuron; the first ``nix_neurons`` neurons of each population and the
first ``nix_trials`` trials of each condition, as NIX writes one object per SpikeTrain),
``rates.png`` (spiking vs DMF per population and condition), ``overlay_condition<b>.png``
(DMF rates and binned spiking rates over time) and ``raster_condition<b>.png`` (the
first trial of each condition, one panel per column).
"""

from __future__ import annotations

import json
import numbers
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import quantities as pq
import torch

from .._io import atomic_write_text
from .._version import __version__
from ..export.neo import check_neo_format, save_neo
from ..network import ColumnNetwork
from ..solve.simulate import simulate
from ..spiking import spiking_twin
from ..spiking.network import K_SCALE, SCALE, check_scaling
from ..spiking.result import timing_md, timing_summary
from ..spiking.simulate import check_run, iter_spiking_trials, spiking_backend
from ..spiking.twin import twin_full_sizes, twin_gating
from ..stimulus import Stimulus
from .figures import plot_twin_overlay, plot_twin_rasters, plot_twin_rates, save_figure

__all__ = ["TwinSettings", "twin_run", "check_twin", "check_twin_scale", "twin_full_sizes", "twin_report_section",
           "RATE_FLOOR_HZ"]

#: DMF rates below this (Hz) count as this in the relative difference (silent populations).
RATE_FLOOR_HZ = 0.1

#: Most spiking trials per condition a twin runs (1 / sqrt(1000) = 3 % of one trial's spread).
MAX_TRIALS = 1000

#: Width (s) of the bins of the spiking rates in the overlay figures.
BIN_S = 0.01


def check_twin_scale(network, scale: float, k_scale: float | None = K_SCALE) -> float:
    """Refuse a scale whose twin of ``network`` keeps fewer than MIN_POPULATION_NEURONS in a population.

    The floor of :func:`colplugin.spiking.network.check_scaling` (its reason is at
    :data:`colplugin.spiking.network.MIN_POPULATION_NEURONS`) with the twin's full-size
    populations; returns ``k_scale`` (``None``: ``scale``).
    """
    if not isinstance(network, ColumnNetwork):
        raise TypeError(f"network must be a ColumnNetwork, got {type(network).__name__}")
    return check_scaling(scale, k_scale, twin_full_sizes(network), what="this network's spiking twin")


def check_twin(*, backend: str, device: str | None, scale: float, k_scale: float | None, trials: int, seed: int,
               threads: int, nix_neurons: int, nix_trials: int, reuse: bool = True) -> None:
    """Refuse bad twin settings (before any work) with a message that names the value and the fix.

    :class:`TwinSettings` calls it when made (its defaults are the twin's); the floor of a
    particular network is :func:`check_twin_scale` (:meth:`TwinSettings.check_network`).

    Raises
    ------
    ValueError
        Unknown backend or device, scale or k_scale outside (0, 1] (nan and inf included),
        a scale below the network's floor, trials < 1, bad seed, threads or nix_neurons.
    RuntimeError
        ``backend="nest"`` without the NEST simulator installed.
    """
    check_run(1.0, backend=backend, device=device, seed=seed, threads=threads)
    check_scaling(scale, k_scale)
    if isinstance(trials, bool) or not isinstance(trials, numbers.Integral) or trials < 1:
        raise ValueError(f"trials must be a whole number >= 1 (spiking trials per condition), got {trials!r}")
    if trials > MAX_TRIALS:
        raise ValueError(f"trials = {trials} (--trials) is more than {MAX_TRIALS} spiking runs per condition, each "
                         f"a full network simulation; the trial mean's standard error at {MAX_TRIALS} trials is "
                         "already 3 % of one trial's spread. Give fewer trials (or run several commands with "
                         "other --seed values)")
    for name, value in (("nix_neurons", nix_neurons), ("nix_trials", nix_trials)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise ValueError(f"{name} must be a whole number >= 1, got {value!r}")
    if seed + trials - 1 >= 2 ** 31 - 1:
        raise ValueError(f"seed + trials - 1 must stay below 2**31 - 1, got seed {seed} and {trials} trials")
    if not isinstance(reuse, bool):
        raise ValueError(f"reuse must be True or False, got {reuse!r}")
    spiking_backend(backend).check_installed()


@dataclass(frozen=True)
class TwinSettings:
    """The settings of a spiking twin run: every default in one place, checked once when made.

    Frozen: what was checked cannot change afterwards. The command line, the main run and
    :func:`twin_run` build one and pass it on; the floor of a particular network's smallest
    population is checked with :meth:`check_network`.

    Parameters
    ----------
    backend : str
        A registered spiking backend (``"brian2"``, ``"nest"``).
    device : str, optional
        The backend's device; None: its default (stored resolved).
    scale, k_scale : float
        Neuron and in-degree scaling of the twin (:func:`~colplugin.spiking.spiking_twin`).
    trials : int
        Spiking trials per condition.
    seed, threads : int
        As :func:`~colplugin.spiking.simulate_spiking`.
    nix_neurons, nix_trials : int
        Neurons per population and trials per condition kept in the spike file.
    reuse : bool
        Build each condition's network once and run its trials in it, where the backend can
        (NEST): the trials share one draw of connectivity (seed ``seed``) and differ in initial
        potentials and Poisson input. Otherwise (``False``, or Brian2) trial ``j`` is a new build
        with seed ``seed + j`` (:func:`~colplugin.spiking.simulate.iter_spiking_trials`).

    Raises
    ------
    ValueError, RuntimeError
        As :func:`check_twin`.
    """

    backend: str = "brian2"
    device: str | None = None
    scale: float = SCALE
    k_scale: float | None = K_SCALE
    trials: int = 5
    seed: int = 0
    threads: int = 1
    nix_neurons: int = 10
    nix_trials: int = 1
    reuse: bool = True

    def __post_init__(self) -> None:
        check_twin(**asdict(self))
        object.__setattr__(self, "device", spiking_backend(self.backend).resolve_device(self.device))

    def check_network(self, network: ColumnNetwork) -> None:
        """Refuse a scale whose twin of ``network`` keeps too few neurons in a population (:func:`check_twin_scale`)."""
        check_twin_scale(network, self.scale, self.k_scale)


def _annotate_as_target(block, network, conditions: Stimulus, duration: float) -> None:
    """Make the twin's Block a fit target the package reads back: the network spec and each trial's input.

    ``colplugin train fit --target spikes.nix`` needs the network (``network_spec``, as
    :func:`colplugin.to_neo` writes it) and the inputs of every trial (an ``"input"``
    AnalogSignal, Hz, on a 1 ms clock).
    """
    import neo  # lazy: start-up time

    block.annotate(network_spec=json.dumps(network.spec()))
    t = torch.arange(int(round(duration / 1e-3)) + 1, dtype=conditions.times.dtype) * 1e-3
    u = conditions.sample(t).cpu().numpy()  # (T, conditions, inputs)
    for k, seg in enumerate(block.segments):
        seg.index = k
        if conditions.n_inputs:
            b = int(seg.annotations.get("condition", k))
            seg.analogsignals.append(neo.AnalogSignal(u[:, b], units="Hz", sampling_period=1e-3 * pq.s,
                                                      t_start=0 * pq.s, name="input",
                                                      array_annotations={"channel": np.arange(u.shape[2])}))


def _population_rates(result, t0: float, t1: float) -> np.ndarray:
    """Mean rate (Hz) of every population of a SpikingResult over [t0, t1): Elephant's mean_firing_rate / N."""
    from elephant.statistics import mean_firing_rate  # lazy: start-up time

    out = []
    for name in result.populations:
        ts = result.spikes[name][1]
        ts = ts[(ts >= t0) & (ts < t1)]
        out.append(float(mean_firing_rate(ts * pq.s, t_start=t0 * pq.s, t_stop=t1 * pq.s).rescale("Hz"))
                   / result.sizes[name] if len(ts) else 0.0)
    return np.array(out)


def _binned_rates(result, duration: float, bin_s: float = BIN_S) -> np.ndarray:
    """(bins, populations) population rates (Hz) in bins of ``bin_s``."""
    edges = np.arange(0.0, duration + 1e-12, bin_s)
    return np.stack([np.histogram(result.spikes[n][1], edges)[0] / result.sizes[n] / bin_s
                     for n in result.populations], 1)


def _windows(task, duration: float) -> tuple[tuple[float, float], tuple[float, float] | None]:
    """The task's read-out window (default: the trial's last tenth) and its persistence window (or None), checked."""
    window = task.readout_window() if task is not None else (0.9 * duration, duration)
    late = task.persistence_window() if task is not None else None
    out = []
    for what, w in (("read-out", window), ("persistence", late)):
        if w is None:
            out.append(None)
            continue
        a, b = float(w[0]), float(w[1])
        if not 0 <= a < b <= duration:
            raise ValueError(f"the {what} window [{a}, {b}) s must lie within the trial [0, {duration}] s")
        out.append((a, b))
    return out[0], out[1]


def _persistence(task, late: tuple[float, float], names: list[str], conditions: Stimulus, t_dmf: np.ndarray,
                 r_dmf: np.ndarray, spk_late: np.ndarray) -> dict[str, Any]:
    """The task's read-out over its persistence window: spiking (every trial) and rate model, per condition."""
    dmf_late = r_dmf[(t_dmf >= late[0]) & (t_dmf <= late[1])].mean(0)  # (C, P)
    return {"window_s": list(late),
            "accuracy": task.accuracy_from_rates({n: spk_late[:, :, i] for i, n in enumerate(names)}, conditions),
            "dmf_accuracy": task.accuracy_from_rates({n: dmf_late[:, i:i + 1] for i, n in enumerate(names)},
                                                     conditions),
            "per_condition": [{n: {"dmf_hz": float(dmf_late[b, i]), "spiking_hz": float(spk_late[b, :, i].mean())}
                               for i, n in enumerate(names)} for b in range(len(dmf_late))]}


def twin_run(out: str | Path, network, conditions: Stimulus, duration: float, task=None, *,
             settings: TwinSettings | None = None, dt: float = 1e-4, progress: bool = True,
             source: str = "", neo_format: str = "nix", **options: Any) -> dict[str, Any]:
    """Run a trained network's conditions as spiking twins, compare with the DMF, write the results.

    Parameters
    ----------
    out : path
        Output directory (created).
    network : ColumnNetwork
        The trained network.
    conditions : Stimulus
        One stimulus trial per condition (e.g. the task's evaluation stimulus).
    duration : float
        Length of a trial, s.
    task : Task, optional
        For the read-out window and :meth:`~colplugin.training.Task.accuracy_from_rates`;
        without one, rates are read over the last tenth of the trial and no accuracy is
        given.
    settings : TwinSettings, optional
        Backend, device, scale, k_scale, trials, seed, threads, nix_neurons and nix_trials
        (:class:`TwinSettings`; rates use all neurons and trials). Without it, ``options``
        (the same names as keywords) make one.
    dt : float
        Time step, s (:func:`~colplugin.spiking.simulate_spiking`).
    progress : bool
        Print a line per spiking run.
    neo_format : {"nix", "nwb", "both"}
        File format(s) of ``spikes``: ``spikes.nix`` and/or ``spikes.nwb`` (``--format``).
    source : str
        Where the network came from (recorded in ``twin.json``).

    Returns
    -------
    dict
        The content of ``twin.json`` (module docstring) plus ``table_md``.
    """
    if settings is not None and options:
        raise TypeError(f"twin_run takes its settings either as settings=TwinSettings(...) or as keywords, not both "
                        f"(got settings and {', '.join(sorted(options))})")
    settings = settings if settings is not None else TwinSettings(**options)
    settings.check_network(network)
    check_neo_format(neo_format)
    backend, device, scale, k_scale = settings.backend, settings.device, settings.scale, settings.k_scale
    trials, seed, threads = settings.trials, settings.seed, settings.threads
    nix_neurons, nix_trials = settings.nix_neurons, settings.nix_trials
    if not isinstance(conditions, Stimulus) or conditions.n_inputs != network.n_inputs:
        raise ValueError(f"conditions must be a Stimulus with the network's {network.n_inputs} input channels")
    t0_wall = time.perf_counter()
    (w0, w1), late = _windows(task, duration)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    names = list(network.channel_names)
    C, P = conditions.batch_size, len(names)
    with torch.no_grad():
        traj = simulate(network, conditions, duration=duration)
    t_dmf = traj.t.cpu().numpy()
    r_dmf = traj.rate.cpu().numpy()  # (T, C, P)
    in_win = (t_dmf >= w0) & (t_dmf <= w1)
    dmf_win = r_dmf[in_win].mean(0)  # (C, P)
    reference = r_dmf.mean(0)  # what spiking_twin's DC compensation uses (the trial mean)

    spk = np.zeros((C, trials, P))
    spk_late = np.zeros((C, trials, P))
    binned = []
    first_results = []
    block = None
    run_walls, run_builds, run_simulates = [], [], []
    directory = spiking_backend(backend).project_directory(device)
    n_neurons = n_synapses = 0
    reused = False
    try:
        for b in range(C):
            net_b = spiking_twin(network, conditions, trial=b, scale=scale, k_scale=k_scale, duration=duration,
                                 reference_rates=reference[b], backend_gating=spiking_backend(backend).gating)
            n_neurons, n_synapses = net_b.n_neurons, net_b.n_synapses
            bins_b = []
            runs = iter_spiking_trials(net_b, duration, trials, backend=backend, device=device, seed=seed,
                                       threads=threads, dt=dt, directory=directory, reuse=settings.reuse)
            for j in range(trials):
                if progress:
                    walls = [w for w in run_walls if np.isfinite(w)]
                    left = (f", about {np.mean(walls) * (C * trials - len(run_walls)):.0f} s left" if walls else "")
                    print(f"  twin ({backend}, scale {scale}): condition {b + 1}/{C}, trial {j + 1}/{trials} "
                          f"({n_neurons} neurons, {n_synapses} synapses{left}) ...", flush=True)
                res = next(runs)
                reused = reused or bool(res.settings.get("network_reused"))
                run_walls.append(res.wall_seconds.get("total", float("nan")))
                run_builds.append(res.build_seconds)
                run_simulates.append(res.simulate_seconds)
                spk[b, j] = _population_rates(res, w0, w1)
                if late is not None:
                    spk_late[b, j] = _population_rates(res, *late)
                bins_b.append(_binned_rates(res, duration))
                if j == 0:
                    first_results.append(res)
                if j >= nix_trials:
                    continue
                part = res.to_neo(max_per_population=nix_neurons, description=f"condition {b}, trial {j}")
                seg = part.segments[0]
                seg.name = f"condition {b} trial {j}"
                seg.annotate(condition=b, trial=j, seed=int(res.settings["seed"]),
                             network_reused=bool(res.settings.get("network_reused")))
                if block is None:
                    block = part
                    block.name = "spiking twin"
                    block.annotate(task=task.name if task is not None else "", scale=float(scale),
                                   trials=int(trials))
                else:
                    block.segments.append(seg)
                    seg.block = block
            binned.append(np.mean(bins_b, 0))
    finally:
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)
    _annotate_as_target(block, network, conditions, duration)
    save_neo(block, out / "spikes.nix", neo_format)

    spk_mean, spk_sd = spk.mean(1), (spk.std(1, ddof=1) if trials > 1 else np.zeros((C, P)))
    rel = (spk_mean - dmf_win) / np.maximum(dmf_win, RATE_FLOOR_HZ)
    accuracy = dmf_accuracy = None
    if task is not None:
        accuracy = task.accuracy_from_rates({n: spk[:, :, i] for i, n in enumerate(names)}, conditions)
        dmf_accuracy = task.accuracy_from_rates({n: dmf_win[:, i:i + 1] for i, n in enumerate(names)}, conditions)
    persistence = None if late is None else _persistence(task, late, names, conditions, t_dmf, r_dmf, spk_late)
    channels = network.channels
    per_population = {}
    for i, n in enumerate(names):
        d, s = float(dmf_win[:, i].mean()), float(spk_mean[:, i].mean())
        per_population[n] = {
            "area": channels[i]["area"], "column": int(channels[i]["column"]), "population": n.rsplit(".", 1)[1],
            "dmf_hz": d, "spiking_hz": s, "relative_difference": (s - d) / max(d, RATE_FLOOR_HZ),
            "per_condition": [{"dmf_hz": float(dmf_win[b, i]), "spiking_hz": float(spk_mean[b, i]),
                               "spiking_sd_hz": float(spk_sd[b, i]), "relative_difference": float(rel[b, i]),
                               "spiking_trials_hz": spk[b, :, i].tolist()} for b in range(C)]}
    files = ["twin.json", "report.md", "spikes.nix", "rates.png"]
    save_figure(plot_twin_rates(dmf_win, spk_mean, spk_sd, names,
                                title=f"spiking twin ({backend}, scale {scale}) vs {network.transfer.label}, "
                                      "read-out window "
                                      f"[{w0:g}, {w1:g}) s"), out / "rates.png")
    t_spk = np.arange(binned[0].shape[0]) * BIN_S + BIN_S / 2
    for b in range(C):
        label = _condition_label(conditions, b)
        save_figure(plot_twin_overlay(t_dmf, r_dmf[:, b], t_spk, binned[b], names, window=(w0, w1),
                                      title=f"condition {b} ({label}): {network.transfer.label} vs spiking twin, "
                                            f"mean of {trials} "
                                            f"trial{'s' if trials > 1 else ''}"), out / f"overlay_condition{b}.png")
        save_figure(plot_twin_rasters(first_results[b], 0.0, duration,
                                      title=f"condition {b} ({label}), trial 0 ({backend}, seed {seed})"),
                    out / f"raster_condition{b}.png")
        files += [f"overlay_condition{b}.png", f"raster_condition{b}.png"]
    wall = time.perf_counter() - t0_wall
    result: dict[str, Any] = {
        "task": task.name if task is not None else None, "backend": backend,
        "device": device if spiking_backend(backend).devices else None, "scale": float(scale),
        "k_scale": None if k_scale is None else float(k_scale), "trials": int(trials), "seed": int(seed),
        "network_reused": reused, "mpi_processes": int(res.settings.get("mpi_processes", 1)),
        "virtual_processes": int(res.settings.get("virtual_processes", res.settings.get("threads", threads))),
        "threads": int(threads), "dt_s": float(dt), "duration_s": float(duration), "readout_window_s": [w0, w1],
        "conditions": [{"index": b, "label": _condition_label(conditions, b),
                        "segment_times_s": conditions.times.tolist(),
                        "input_rates_hz": conditions.rates[b].tolist()} for b in range(C)],
        "accuracy": accuracy, "dmf_accuracy": dmf_accuracy, "persistence": persistence,
        "rate_floor_hz": RATE_FLOOR_HZ,
        "rate_model": network.transfer.label,
        "gating": twin_gating(network, spiking_backend(backend).gating)[1],
        "per_population": per_population, "n_neurons": int(n_neurons), "n_synapses": int(n_synapses),
        "spiking_wall_seconds": run_walls, "wall_seconds": wall,
        **timing_summary(run_builds, run_simulates, len(run_walls) * float(duration)),
        "source": source, "files": files, "colplugin_version": __version__}
    result["table_md"] = _table_md(result)
    atomic_write_text(out / "twin.json", json.dumps({k: v for k, v in result.items() if k != "table_md"}, indent=2))
    atomic_write_text(out / "report.md", "\n".join(["# Spiking twin", ""] + twin_report_section(result)) + "\n")
    return result


def _condition_label(conditions: Stimulus, b: int) -> str:
    """The input rates of a condition's strongest segment, e.g. ``"inputs 20, 0 Hz"``.

    With several segments (decision: rest, stimulus, rest) the segment with the largest summed
    input rate is named (the last of equals), with its interval:
    ``"inputs 20, 16 Hz (0.5-1 s)"``, ``"inputs 0, 0 Hz (from 0.5 s)"``.
    """
    rates = conditions.rates[b if conditions.batch_size > 1 else 0].detach().cpu()
    sums = rates.sum(dim=1).tolist()
    k = max(range(len(sums)), key=lambda i: (sums[i], i))
    label = "inputs " + ", ".join(f"{x:.3g}" for x in rates[k].tolist()) + " Hz"
    if len(sums) > 1:
        times = conditions.times.detach().cpu().tolist()
        label += f" ({times[k]:g}-{times[k + 1]:g} s)" if k + 1 < len(times) else f" (from {times[k]:g} s)"
    return label


def _table_md(result: dict[str, Any]) -> str:
    """Populations as rows, columns as column groups: DMF, spiking and relative difference (mean over conditions)."""
    pp = result["per_population"]
    model = result.get("rate_model", "DMF")
    cols: dict[str, dict[str, dict[str, Any]]] = {}
    for name, row in pp.items():
        cols.setdefault(name.rsplit(".", 1)[0], {})[row["population"]] = row
    head = "| population | " + " | ".join(f"{c}: {model} / spiking (Hz), diff" for c in cols) + " |"
    lines = [head, "|---|" + "---|" * len(cols)]
    for pop in next(iter(cols.values())):
        cells = [f"{r['dmf_hz']:.3g} / {r['spiking_hz']:.3g}, {100 * r['relative_difference']:+.0f} %"
                 for r in (c[pop] for c in cols.values())]
        lines.append(f"| {pop} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _trials_md(result: dict[str, Any]) -> str:
    """How the trials were drawn, in words."""
    if result.get("network_reused"):
        return (f"each condition's network built once with seed {result['seed']} and its trials run in it from a fresh "
                "state: new initial potentials and Poisson input, the same connectivity")
    return f"trial j: a new build with seed {result['seed']} + j"


def twin_report_section(result: dict[str, Any], prefix: str = "") -> list[str]:
    """Markdown lines of a twin's results (``prefix``: path of its files relative to the report)."""
    acc, dacc = result["accuracy"], result["dmf_accuracy"]
    model = result.get("rate_model", "DMF")  # the rate model the twin is of (twin.json keeps the keys dmf_*)
    w0, w1 = result["readout_window_s"]
    C = len(result["conditions"])
    rel = {n: r["relative_difference"] for n, r in result["per_population"].items()}
    drift = sorted((n for n in rel if abs(rel[n]) > 0.3), key=lambda n: -abs(rel[n]))
    dev = result["backend"] + (f" {result['device']}" if result["device"] else "")
    lines = [f"The trained network in spiking LIF neurons ({dev}, neuron scale {result['scale']}, in-degree scale "
             f"{result['k_scale']}; {result['n_neurons']} neurons, {result['n_synapses']} synapses per condition): "
             f"{C} conditions x {result['trials']} trials ({_trials_md(result)}). Rates are read "
             f"over [{w0:g}, {w1:g}) s (the task's read-out window).", ""]
    if result.get("gating", "no synaptic gating") != "no synaptic gating":
        lines += [f"Synaptic gating: {result['gating']}.", ""]
    if acc is None:
        lines += ["The task defines no read-out from rates: no accuracy.", ""]
    else:
        lines += [f"Task accuracy of the spiking twin: **{acc:.3g}** (all trials; the {model}'s own read-out in the "
                  f"same window: {dacc if dacc is None else f'{dacc:.3g}'}).", ""]
    late = result.get("persistence")
    if late and late.get("accuracy") is not None:
        p0, p1 = late["window_s"]
        dl = late["dmf_accuracy"]
        lines += [f"After the stimulus, over [{p0:g}, {p1:g}) s, the choice holds in **{late['accuracy']:.3g}** of "
                  f"the spiking trials (the {model}: {dl if dl is None else f'{dl:.3g}'}).", ""]
    lines += [f"{model} vs spiking rate per population (mean over conditions; difference (spiking - {model}) / "
              f"max({model}, {RATE_FLOOR_HZ} Hz)); per condition and trial in `{prefix}twin.json`:", "",
              result.get("table_md") or _table_md(result), ""]
    if drift:
        lines += ["Populations that drift by more than 30 %: "
                  + ", ".join(f"{n} {100 * rel[n]:+.0f} %" for n in drift) + ".", ""]
    else:
        lines += [f"Every population within 30 % of the {model}.", ""]
    lines += [f"![rates]({prefix}rates.png)", ""]
    for b in range(C):
        lines += [f"Condition {b} ({result['conditions'][b]['label']}):", "",
                  f"![overlay {b}]({prefix}overlay_condition{b}.png)", "",
                  f"![raster {b}]({prefix}raster_condition{b}.png)", ""]
    walls = result["spiking_wall_seconds"]
    timing = timing_md(result, spiking_backend(result["backend"]).timing_counts)
    lines += [f"Wall time {result['wall_seconds']:.1f} s ({len(walls)} spiking runs, "
              f"{np.mean(walls):.1f} s each on average).{' ' + timing if timing else ''} Spikes: "
              f"`{prefix}spikes.nix` (Neo, one Segment per condition and trial)."]
    return lines
