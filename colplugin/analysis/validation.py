"""Validation of the DMF column against the spiking PD14 microcircuit (Brian2 or NEST, Elephant)."""

from __future__ import annotations

import json
import resource
import shutil
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._io import atomic_write_text, check_memory
from .._version import __version__
from ..export.neo import check_neo_format, save_neo, to_neo
from ..network import ColumnNetwork
from ..params import load_preset
from ..params.names import POPULATIONS
from ..solve.fixed_points import resting_state
from ..solve.simulate import simulate
from ..spiking import pd14_microcircuit, simulate_spiking
from ..spiking.network import K_SCALE, SCALE, check_scaling
from ..spiking.result import timing_md, timing_summary
from ..spiking.simulate import check_run, spiking_backend
from ..stimulus import MAX_INPUT_RATE
from .figures import plot_validation, save_figure
from .spiking import compare_rate_to_spiking, comparison_table_md, dmf_rates, population_statistics
from .transfer import fixed_point_comparison, fixed_point_table_md, lif_vs_dmf, transfer_table_md

#: Simulated time (s) of the microcircuit validation: 0.5 s transient + 2 s of statistics.
VALIDATE_DURATION = 2.5

__all__ = ["validate_microcircuit", "validate_stimulus", "run_seeds", "ValidationSettings",
           "StimulusValidationSettings"]


def _run_timing(results: list, duration: float) -> dict[str, Any]:
    """``build_seconds``, ``simulate_seconds`` (s, summed over the runs) and ``simulate_seconds_per_model_second``.

    Parameters
    ----------
    results : list of SpikingResult
    duration : float
        Simulated time of each run, s.
    """
    return timing_summary([r.build_seconds for r in results], [r.simulate_seconds for r in results],
                          len(results) * float(duration))


def _check_seeds(seed: int, seeds: int) -> None:
    if isinstance(seeds, bool) or not isinstance(seeds, (int, np.integer)) or seeds < 1:
        raise ValueError(f"seeds must be a whole number >= 1 (runs with seeds seed, seed+1, ...), got {seeds!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a whole number >= 0, got {seed!r}")


def run_seeds(net, duration: float, seeds: list[int], *, backend: str = "brian2", device: str | None = None,
              threads: int = 1, progress: bool = False, label: str = "") -> list:
    """Run one spiking network with several seeds; one SpikingResult per seed.

    Brian2's cpp_standalone project is built in one directory for all seeds, so that only
    what changes is recompiled.
    """
    device = spiking_backend(backend).resolve_device(device)
    directory = spiking_backend(backend).project_directory(device)
    results = []
    try:
        t0 = time.perf_counter()
        for k, s in enumerate(seeds):
            if progress:
                left = f", about {(time.perf_counter() - t0) / k * (len(seeds) - k):.0f} s left" if k else ""
                print(f"  {label}seed {s} ({k + 1}/{len(seeds)}{left}) ...", flush=True)
            results.append(simulate_spiking(net, duration, backend=backend, device=device, seed=s, threads=threads,
                                            directory=directory))
    finally:
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)
    return results


#: The rate columns set against the spiking PD14 microcircuit: the DMF's and the LIF mean field's.
COLUMN_PRESETS = ("pd14", "pd14_lif")


#: Bytes per recorded spike on the way to the report: the simulator's index and time, Neo's
#: SpikeTrain copy and Elephant's binning (a bound, not a measurement of one backend).
BYTES_PER_SPIKE = 48


def _check_spiking_workload(net, duration: float, seeds: int, progress: bool) -> None:
    """Refuse a spiking run whose recorded spikes cannot fit in memory; announce the workload.

    The spikes expected are the published PD14 rates (Potjans & Diesmann 2014, Fig. 6)
    times the population sizes and the duration.
    """
    rates = np.asarray(load_preset("pd14")["published_rates"], dtype=float)
    spikes = float(np.dot([net.sizes[name] for name in POPULATIONS], rates)) * duration
    check_memory(BYTES_PER_SPIKE * spikes,
                 f"recording about {spikes:.3g} spikes ({net.n_neurons} neurons at the published rates for "
                 f"{duration:g} s)", "shorten --duration (2.5 s gives the published statistics) or lower --scale")
    if progress:
        print(f"workload: {seeds} seed(s) x {duration:g} s of {net.n_neurons} neurons and {net.n_synapses:.3g} "
              f"synapses, about {spikes * seeds:.3g} spikes", flush=True)


def _pd14_sizes() -> dict[str, int]:
    return dict(zip(POPULATIONS, load_preset("pd14").area_sizes("pd14")))


def _check_count(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a whole number >= 1, got {value!r}")


def _settings(cls, settings, fields: dict[str, Any]):
    """``settings`` (an instance of ``cls``, default ``cls()``) with ``fields`` replaced; checked once."""
    if settings is None:
        return cls(**fields)
    if not isinstance(settings, cls):
        raise TypeError(f"settings must be a {cls.__name__} (or None, with its fields as keywords), "
                        f"got {settings!r}")
    return replace(settings, **fields) if fields else settings


def _check_spiking_run(settings) -> None:
    """What both validations' settings share: seeds, the run (backend, device, threads, duration), the
    PD14 circuit's scaling; stores the backend's resolved device."""
    _check_seeds(settings.seed, settings.seeds)
    check_run(settings.duration, backend=settings.backend, device=settings.device,
              seed=settings.seed + settings.seeds - 1, threads=settings.threads)
    object.__setattr__(settings, "device", spiking_backend(settings.backend).resolve_device(settings.device))
    check_scaling(settings.scale, settings.k_scale, _pd14_sizes(), what="the PD14 microcircuit")


@dataclass(frozen=True)
class ValidationSettings:
    """The settings of a microcircuit validation: every default in one place, checked once when made.

    Frozen: what was checked cannot change afterwards; :func:`dataclasses.replace` makes a
    new one (and checks it again). ``colplugin validate microcircuit`` and the main run build
    one before any work.

    Parameters
    ----------
    scale, k_scale : float
        Neuron and in-degree scaling of the spiking circuit.
    duration : float
        Simulated time per seed, s; statistics after ``transient`` s.
    transient : float
        Time discarded at the start of every run, s; at least 0.1 s must remain.
    seed, seeds : int
        The runs use seeds ``seed, seed + 1, ..., seed + seeds - 1``; every decision uses the
        mean rate over seeds, and the report gives its sd.
    backend : str
        A registered spiking backend (``"brian2"``, ``"nest"``).
    device : str, optional
        The backend's device (Brian2: ``"cpp_standalone"`` or ``"runtime"``); None: the
        backend's default (stored resolved).
    threads : int
    nix_neurons : int
        Neurons per population kept in ``spiking.nix`` (statistics use all neurons).
    preset : {"pd14", "pd14_lif"}
        The column judged: the DMF's (checks ``within30``, ``ordering``) or the LIF mean
        field's (checks ``lif_mean_within10``: its mean absolute deviation from the spiking
        rates at most 10 %, and ``lif_each_within25``: every population within 25 %).
    neo_format : {"nix", "nwb", "both"}
        File format(s) of the Neo results (``--format``): ``.nix`` and/or ``.nwb``.
    """

    scale: float = SCALE
    duration: float = VALIDATE_DURATION
    transient: float = 0.5
    k_scale: float | None = K_SCALE
    seed: int = 0
    seeds: int = 3
    backend: str = "brian2"
    device: str | None = None
    threads: int = 1
    nix_neurons: int = 100
    preset: str = "pd14"
    neo_format: str = "nix"

    def __post_init__(self) -> None:
        check_neo_format(self.neo_format)
        _check_count("nix_neurons", self.nix_neurons)
        if self.preset not in COLUMN_PRESETS:
            raise ValueError(f"preset must be one of {', '.join(COLUMN_PRESETS)} (the column the checks judge), "
                             f"got {self.preset!r}")
        _check_spiking_run(self)
        if not (isinstance(self.transient, (int, float, np.integer, np.floating)) and not isinstance(
                self.transient, bool) and 0 <= self.transient < np.inf):
            raise ValueError(f"transient must be a time >= 0 s (discarded at the start of every run), got "
                             f"{self.transient!r}")
        if not 0 <= self.transient < self.duration - 0.1:
            raise ValueError(f"duration {self.duration:g} s (--duration) leaves less than 0.1 s after the transient "
                             f"of {self.transient:g} s that the statistics discard; give a longer duration, above "
                             f"{self.transient + 0.1:g} s (2.5 s gives the published statistics) or, in Python, a "
                             "shorter transient")


@dataclass(frozen=True)
class StimulusValidationSettings:
    """The settings of a stimulus validation (a thalamic step into L4), checked once when made.

    Parameters
    ----------
    scale, k_scale : float
        Neuron and in-degree scaling of the spiking circuit.
    rate : float
        Thalamic step rate, Hz, in [0, :data:`~colplugin.stimulus.MAX_INPUT_RATE`].
    duration : float
        Simulated time per seed, s.
    t_on : float
        Onset of the step, s, in (0.25, duration - 0.25): both windows get at least 0.25 s.
    seed, seeds, backend, device, threads
        As :class:`ValidationSettings`.
    """

    scale: float = SCALE
    rate: float = 8.0
    duration: float = 1.5
    t_on: float = 0.75
    k_scale: float | None = K_SCALE
    seed: int = 0
    seeds: int = 1
    backend: str = "brian2"
    device: str | None = None
    threads: int = 1

    def __post_init__(self) -> None:
        _check_spiking_run(self)
        if not 0.25 < self.t_on < self.duration - 0.25:
            raise ValueError(f"t_on must lie in (0.25, duration - 0.25) s = (0.25, {self.duration - 0.25:g}) s, "
                             f"got {self.t_on}")
        if not (np.isfinite(self.rate) and 0 <= self.rate <= MAX_INPUT_RATE):
            raise ValueError(f"rate = {self.rate!r} Hz (--rate): the thalamic rate must lie in "
                             f"[0, {MAX_INPUT_RATE:g}] Hz (a firing rate; PD14's step is 8-15 Hz)")


def validate_microcircuit(out: str | Path, settings: ValidationSettings | None = None, *, progress: bool = True,
                          **fields: Any) -> dict[str, Any]:
    """Run the spiking microcircuit with several seeds and the rate columns; compare; write a report.

    Two rate columns stand beside the spiking circuit: the DMF column (``pd14``: the paper's f
    of the input mean) and the LIF mean-field column (``pd14_lif``: the Siegert rate of the
    input mean and variance, :class:`colplugin.transfers.SiegertTransfer`), each at its fixed
    point. ``settings.preset`` says which column the checks judge and the NIX file holds
    (``dmf.nix`` or ``lif_column.nix``).

    Parameters
    ----------
    out : path
        Output directory.
    settings : ValidationSettings, optional
        What to run (scale, duration, seeds, backend, ...); default ``ValidationSettings()``.
    progress : bool
        Print the workload and a progress line per seed.
    **fields
        Fields of :class:`ValidationSettings` that replace those of ``settings``
        (``validate_microcircuit(out, scale=0.05, seeds=5)``).

    Returns
    -------
    dict
        ``rows`` (one per population: spiking_rate (mean over seeds), spiking_rate_seed_sd,
        spiking_rates_per_seed, dmf_rate, published_rate, spiking_cv, ...), ``table_md``,
        the checks ``within20``, ``within30``, ``ordering`` (or, for ``pd14_lif``,
        ``lif_mean_within10`` and ``lif_each_within25``), ``lif_mean_deviation``,
        ``lif_max_deviation``, ``seeds``, ``wall_seconds`` (the whole validation), ``build_seconds``
        and ``simulate_seconds`` (the spiking runs' wall time of building the network in the simulator
        and of simulating it, summed over seeds, s), ``simulate_seconds_per_model_second``,
        ``peak_mb``, ``settings`` (the spiking run's), ``validation_settings`` (the
        :class:`ValidationSettings`, plain types), ``transfer`` (per population: LIF (Siegert) rate
        and the DMF's f at the input of the seed-mean spiking rates,
        :func:`colplugin.analysis.transfer.lif_vs_dmf`), ``fixed_points`` (the DMF's and the LIF mean
        field's fixed points against the seed-mean spiking rates, and which population's transfer
        error moves each rate, :func:`colplugin.analysis.transfer.fixed_point_comparison`).

    Writes ``report.md``, ``comparison.json``, ``fixed_points.json``, ``rates.png`` and NIX files
    of the first seed's spiking run and of the DMF column.
    """
    vs = _settings(ValidationSettings, settings, fields)
    scale, duration, transient, k_scale = vs.scale, vs.duration, vs.transient, vs.k_scale
    seed, seeds, backend, device, threads = vs.seed, vs.seeds, vs.backend, vs.device, vs.threads
    nix_neurons, preset, neo_format = vs.nix_neurons, vs.preset, vs.neo_format
    net_spk = pd14_microcircuit(None, scale, k_scale)
    _check_spiking_workload(net_spk, duration, seeds, progress)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    seed_list = [seed + k for k in range(seeds)]
    if progress:
        print(f"spiking PD14 microcircuit: scale {scale}, k {k_scale}, {duration} s, "
              f"{spiking_backend(backend).label(device)}, seeds {seed_list} ...", flush=True)
    results = run_seeds(net_spk, duration, seed_list, backend=backend, device=device, threads=threads,
                        progress=progress)
    per_seed = [population_statistics(r.to_neo(), t_start=transient) for r in results]
    rates = np.array([[st[p]["rate"] for p in POPULATIONS] for st in per_seed])  # (seeds, 8)
    stats = {p: {"rate": float(rates[:, i].mean()),
                 "rate_seed_sd": float(rates[:, i].std(ddof=1)) if seeds > 1 else float("nan"),
                 "rates_per_seed": rates[:, i].tolist(),
                 "cv": float(np.nanmean([st[p]["cv"] for st in per_seed])),
                 "correlation": float(np.nanmean([st[p]["correlation"] for st in per_seed]))}
             for i, p in enumerate(POPULATIONS)}
    # the rate columns: one fixed point each; the judged column's trajectory from it goes to a NIX file
    params = load_preset("pd14")  # the DMF's f: the reference of the transfer analyses below
    fixed_rates, column_traj = {}, None
    for name in COLUMN_PRESETS:
        net = ColumnNetwork(load_preset(name), {"pd14": ("pd14", 1)})
        y0 = resting_state(net)
        with torch.no_grad():
            fixed_rates[name] = net.rates(y0)[0].cpu().numpy()
            if name == preset:
                column_traj = simulate(net, duration=duration, y0=y0)
    dmf, lif = fixed_rates["pd14"], fixed_rates["pd14_lif"]
    # the LIF column with the variance of the scaled circuit's multapses (ColumnNetwork.multapses): reported
    net = ColumnNetwork(load_preset("pd14_lif"), {"pd14": ("pd14", 1)})
    net.multapses = (scale, k_scale if k_scale is not None else scale)
    with torch.no_grad():
        lif_multapses = net.rates(resting_state(net))[0].cpu().numpy()
    rows = compare_rate_to_spiking(stats, dmf)
    for r, x, xm in zip(rows, lif, lif_multapses):
        r["lif_rate"] = float(x)
        r["lif_vs_spiking"] = float(x) / r["spiking_rate"] - 1 if r["spiking_rate"] else float("nan")
        r["lif_multapses_rate"] = float(xm)
        r["lif_multapses_vs_spiking"] = float(xm) / r["spiking_rate"] - 1 if r["spiking_rate"] else float("nan")
    # the other reading of pd14: dL25's L2/3E adaptation (preset pd14_adapting); reported, not checked
    adapting = dmf_rates("pd14_adapting")
    for r, a in zip(rows, adapting):
        r["dmf_adapting_rate"] = float(a)
        r["dmf_adapting_vs_spiking"] = float(a) / r["spiking_rate"] - 1 if r["spiking_rate"] else float("nan")
    atomic_write_text(out / "comparison.json", json.dumps(rows, indent=2))
    save_neo(results[0].to_neo(max_per_population=nix_neurons), out / "spiking.nix", neo_format)
    save_neo(to_neo(column_traj, seed=seed, description=f"rate column {preset} at its fixed point"),
             out / ("dmf.nix" if preset == "pd14" else "lif_column.nix"), neo_format)
    save_figure(plot_validation(results[0], per_seed[0], rows, transient), out / "rates.png")
    wall = time.perf_counter() - t0
    timing = _run_timing(results, duration)
    timing_line = timing_md(timing, spiking_backend(backend).timing_counts)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    within20 = all(abs(r["spiking_vs_published"]) <= 0.2 for r in rows)
    within30 = all(abs(r["dmf_vs_spiking"]) <= 0.3 for r in rows)
    order = all(rows[i + 1]["dmf_rate"] > rows[i]["dmf_rate"] for i in range(0, 8, 2))
    lif_dev = np.abs([r["lif_vs_spiking"] for r in rows])
    lif_mean, lif_max = float(np.mean(lif_dev)), float(np.max(lif_dev))
    checks = ({"within30": within30, "ordering": order} if preset == "pd14" else
              {"lif_mean_within10": bool(lif_mean <= 0.1), "lif_each_within25": bool(lif_max <= 0.25)})
    table = comparison_table_md(rows)
    s = results[0].settings
    spread = max(r["spiking_rate_seed_sd"] / r["spiking_rate"] for r in rows if r["spiking_rate"] > 0) \
        if seeds > 1 else float("nan")
    # the transfer function alone: LIF (Siegert) and the DMF's f at each population's input for the spiking rates
    transfer = lif_vs_dmf(rates.mean(0), params, background=s.get("background", "poisson"),
                          k_scale=s.get("k_scale", 1.0))
    # the recurrent fixed point: DMF (f) against the LIF mean field (Siegert), and whose transfer error moves whom
    fixed = fixed_point_comparison(rates.mean(0), params, background=s.get("background", "poisson"),
                                   k_scale=s.get("k_scale", 1.0))
    atomic_write_text(out / "fixed_points.json", json.dumps(fixed, indent=2))
    transfer_md = ("Transfer at each population's input (spiking rates): mean mu and sd sigma of a LIF neuron's "
                   "free membrane potential (relative to rest) at the seed-mean spiking rates, the LIF rate there "
                   "(Siegert, Fourcaud-Brunel correction for tau_s; `colplugin.analysis.transfer`) and the DMF's "
                   "f(mu) (the DMF's V has the same form, so f(mu) is the DMF's rate at the same input; f ignores "
                   "sigma). mu includes the scaled circuit's DC compensation (1 - sqrt(k) of the recurrent mean "
                   "input, at the published rates).\n\n" + transfer_table_md(transfer) + "\n\n"
                   "Recurrent fixed points: the DMF column's (f everywhere) and the LIF mean field's (every "
                   "population at the Siegert rate of its input mean and sd, solved self-consistently; full scale, "
                   "and at the spiking circuit's in-degree scale k with its DC compensation), against the seed-mean "
                   "spiking rates (`fixed_points.json`):\n\n" + fixed_point_table_md(fixed) + "\n\n")
    md = (f"# Rate model vs spiking PD14 microcircuit\n\n"
          f"Spiking: {spiking_backend(backend).label(s.get('device'))} {s.get(backend + '_version', '')}"
          + f", scale {s['scale']} ({s['n_neurons']} neurons, {s['n_synapses']} synapses, in-degree scale "
          f"k = {s['k_scale']}), {s['background']} background, seeds {seed_list}, {duration} s each "
          f"(statistics after a {transient} s transient; spiking rates are the mean over seeds ± sd). "
          "Rate columns at their fixed points: DMF (`pd14`, the paper's f of the input mean) and LIF mean field "
          "(`pd14_lif`, the Siegert rate of the input mean and variance, the same K, J and inputs); the checks "
          f"judge `{preset}`.\n\n"
          + table + "\n\n"
          f"LIF mean-field column (`pd14_lif`) against the spiking rates: mean |deviation| **{100 * lif_mean:.1f} %**, "
          f"largest **{100 * lif_max:.1f} %** ("
          + ", ".join(f"{r['population']} {100 * r['lif_vs_spiking']:+.1f} %" for r in rows) + "). "
          "With the extra input variance that the scaled circuit's multapses would add if their coincident spikes "
          f"stayed correlated (`ColumnNetwork.multapses = ({scale}, {net.multapses[1]})`, reported, not judged): mean "
          f"|deviation| {100 * np.mean(np.abs([r['lif_multapses_vs_spiking'] for r in rows])):.1f} % ("
          + ", ".join(f"{r['population']} {100 * r['lif_multapses_vs_spiking']:+.1f} %" for r in rows) + ").\n\n"
          "Adaptation: PD14's LIF neurons do not adapt, so the `pd14` preset sets kappa = 0 (the table "
          "above). With dL25's L2/3E adaptation (preset `pd14_adapting`, kappa = 1.5 mV s) the DMF gives:\n\n"
          "| population | DMF pd14 (Hz) | DMF pd14_adapting (Hz) | pd14 vs spiking | pd14_adapting vs spiking |\n"
          "|---|---|---|---|---|\n"
          + "\n".join(f"| {r['population']} | {r['dmf_rate']:.3f} | {r['dmf_adapting_rate']:.3f} | "
                      f"{100 * r['dmf_vs_spiking']:+.1f} % | {100 * r['dmf_adapting_vs_spiking']:+.1f} % |"
                      for r in rows) + "\n\n"
          + transfer_md +
          f"- every spiking rate (seed mean) within 20 % of the published full-scale rates: **{within20}**\n"
          f"- every DMF rate within 30 % of the spiking rate (seed mean): **{within30}**"
          + (" (judged)" if preset == "pd14" else "") + "\n"
          f"- DMF keeps inhibitory above excitatory in every layer: **{order}**\n"
          f"- LIF column within 10 % of the spiking rates on average: **{lif_mean <= 0.1}**, every population "
          f"within 25 %: **{lif_max <= 0.25}**" + (" (judged)" if preset == "pd14_lif" else "") + "\n"
          + (f"- largest sd over seeds relative to the mean: {100 * spread:.1f} %\n" if seeds > 1 else
             "- one seed: no spread over seeds (use seeds >= 3 to decide)\n")
          + "- mean ISI CV (asynchronous-irregular: 0.7-1.2): "
          + ", ".join(f"{r['population']} {r['spiking_cv']:.2f}" for r in rows) + "\n"
          f"- wall time {wall:.1f} s (spiking build+run per seed: "
          + ", ".join(f"{r.wall_seconds['total']:.1f}" for r in results) + " s), "
          f"peak memory {peak_mb:.0f} MB; colplugin {__version__}\n"
          + (f"- {timing_line}\n" if timing_line else "")
          + "\n![rates](rates.png)\n")
    atomic_write_text(out / "report.md", md)
    return {"rows": rows, "table_md": table, "within20": within20, **checks, "preset": preset,
            "lif_mean_deviation": lif_mean, "lif_max_deviation": lif_max, "seeds": seed_list, "wall_seconds": wall,
            **timing, "peak_mb": peak_mb, "settings": s, "validation_settings": asdict(vs), "transfer": transfer,
            "fixed_points": fixed}


def validate_stimulus(out: str | Path, settings: StimulusValidationSettings | None = None,
                      **fields: Any) -> dict[str, Any]:
    """Drive L4 of both models with a step of thalamic input and compare each population's response.

    The DMF column gets ``rate`` Hz on its input channel (weights K_in J_E); the spiking
    circuit gets the preset's thalamic population (``thalamic_size`` Poisson sources at
    ``rate`` from ``t_on``, ``K_in`` synapses per L4E and L4I neuron). Reported: per
    population the rate change in both models (spiking: mean over ``seeds`` seeds), whether
    its direction agrees, and the rank correlation of the changes; ``wall_seconds`` (the whole
    run), ``build_seconds`` and ``simulate_seconds`` (the spiking runs' build and simulation wall
    time, summed over seeds, s), ``simulate_seconds_per_model_second`` and
    ``validation_settings``. Writes ``stimulus.json`` (the returned dict) and ``report.md``.

    Parameters
    ----------
    out : path
        Output directory.
    settings : StimulusValidationSettings, optional
        What to run; default ``StimulusValidationSettings()``.
    **fields
        Fields of :class:`StimulusValidationSettings` that replace those of ``settings``.
    """
    t0 = time.perf_counter()
    from scipy.stats import spearmanr  # lazy: start-up time (scipy.stats is not loaded otherwise)

    vs = _settings(StimulusValidationSettings, settings, fields)
    scale, rate, duration, t_on, k_scale = vs.scale, vs.rate, vs.duration, vs.t_on, vs.k_scale
    seed, seeds, backend, device, threads = vs.seed, vs.seeds, vs.backend, vs.device, vs.threads
    net = pd14_microcircuit(None, scale, k_scale, thalamic=(rate, t_on))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    results = run_seeds(net, duration, [seed + k for k in range(seeds)], backend=backend, device=device,
                        threads=threads)
    d_spk = np.mean([np.array([r.rates(t_on + 0.25, duration)[p] - r.rates(0.25, t_on)[p] for p in POPULATIONS])
                     for r in results], axis=0)
    d_dmf = dmf_rates("pd14", rate) - dmf_rates("pd14", 0.0)
    agree = np.sign(d_spk) == np.sign(d_dmf)
    rho = float(spearmanr(d_spk, d_dmf).statistic)
    rows = [{"population": pop, "spiking_change_hz": float(d_spk[p]), "dmf_change_hz": float(d_dmf[p]),
             "same_direction": bool(agree[p])} for p, pop in enumerate(POPULATIONS)]
    result = {"input_rate_hz": rate, "rows": rows, "directions_agree": int(agree.sum()), "spearman_rho": rho,
              "seeds": [r.settings["seed"] for r in results], "settings": results[0].settings,
              "validation_settings": asdict(vs),
              "wall_seconds": time.perf_counter() - t0, **_run_timing(results, duration)}
    atomic_write_text(out / "stimulus.json", json.dumps(result, indent=2, default=str))
    table = "\n".join(f"| {r['population']} | {r['spiking_change_hz']:+.3f} | {r['dmf_change_hz']:+.3f} | "
                      f"{r['same_direction']} |" for r in rows)
    timing_line = timing_md(result, spiking_backend(backend).timing_counts)
    md = ("# Step input to L4: DMF vs spiking\n\n"
          "| population | spiking change (Hz) | DMF change (Hz) | same direction |\n|---|---|---|---|\n" + table
          + f"\n\nDirections agree in {int(agree.sum())}/8 populations; Spearman rank correlation of the changes "
            f"{rho:.2f} ({backend}, {len(results)} seed(s)).\n\n"
          + " ".join(x for x in (f"Wall time {result['wall_seconds']:.1f} s.", timing_line) if x)
          + "\n")
    atomic_write_text(out / "report.md", md)
    return result
