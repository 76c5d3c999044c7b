"""Calibrating the DMF against its spiking twin: per population an input gain and an offset of f's argument.

The DMF's f is a fit (Evers/dL25), not the transfer of the LIF neurons of the spiking twin,
so a trained network's rates drift when its populations become spiking neurons
(:mod:`colplugin.analysis.twin`). :func:`calibrate` measures the twin of one column of a
preset at rest and under input steps into L4E/L4I (Neo spike trains, rates with Elephant),
fits per population a gain of every input current (``input_gain``) and an offset ``V_offset``
(mV) of f's argument so that the DMF's rates match the spiking rates at the fit levels, checks the fit on held-out
levels, and writes the result as a preset (``base = <preset>``) that every command takes
(``colplugin train TASK --preset NAME``; shipped: ``dl25_calibrated``).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from scipy.optimize import least_squares

from .._io import atomic_write_text
from ..export.neo import check_neo_format, save_neo
from ..network import ColumnNetwork, Input
from ..params import DEFAULT_PRESET, PRESETS, Params, resolve_params
from ..params.names import POPULATIONS
from ..plotting import save_figure
from ..solve.simulate import SimulationError, Solver, simulate
from ..spiking import simulate_spiking, spiking_twin
from ..spiking.network import SCALE
from ..stimulus import Stimulus
from .spiking import neuron_rates
from .twin import check_twin_scale

__all__ = ["FIT_LEVELS", "HELD_OUT_LEVELS", "STAIRCASE_K_SCALE", "RUNAWAY_RESIDUAL", "calibration_network",
           "dmf_step_rates", "block_rates", "spiking_step_rates", "staircase_axes", "column_words",
           "fit_calibration", "calibrate", "calibrated_preset_toml"]

#: Input rates (Hz into L4E and L4I) whose spiking rates the offsets are fitted to.
FIT_LEVELS: tuple[float, ...] = (0.0, 10.0, 20.0, 40.0)
#: Input rates (Hz) that only check the fit.
HELD_OUT_LEVELS: tuple[float, ...] = (5.0, 15.0, 30.0)
#: Rates below this (Hz) count as equal in the fit's log-rate residuals.
FLOOR_HZ = 0.1
#: In-degree scale of the staircase's spiking twin: 1, the full in-degrees. Below 1 PD14's
#: method replaces the missing synapses by a DC current computed from the DMF's rates averaged
#: over the whole run, one current for every level of the staircase, which moves the twin's
#: working point: one split MT column (NEST, scale 0.1, 0-100 Hz) at rest had L4E at 3.4 Hz
#: with k = 0.5 against 8.5 Hz with k = 1 (DMF 8.6 Hz; ``validation/column_transfer.py``).
STAIRCASE_K_SCALE = 1.0
#: Log-rate residual of every rate at a trial point of the fit where the column runs away
#: (e^10: far beyond any rate the fit could accept).
RUNAWAY_RESIDUAL = 10.0


def read_saved_calibration(path: str | Path) -> dict[str, Any]:
    """The ``calibration.json`` of an earlier calibration (for a refit), checked before any work."""
    try:
        saved = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"--spiking {path}: cannot read it as the calibration.json of an earlier calibration "
                         f"({exc}); pass that file, or leave --spiking out to run the twin") from None
    if not isinstance(saved, dict) or not {"spiking_hz", "run"} <= set(saved):
        raise ValueError(f"--spiking {path} is not the calibration.json of an earlier calibration (it lacks "
                         "'spiking_hz' or 'run'); pass that file, or leave --spiking out to run the twin")
    return saved


def calibration_network(params: Params, columns: int = 1) -> ColumnNetwork:
    """The preset's default area as ``columns`` uncoupled columns, one input channel onto every L4E and L4I.

    The weights are the fixed thalamic ones. ``columns = 1`` is one full column. The
    paper's tasks split the area in 2 (dL25's rule gives each column half the area's
    neurons), so ``columns = 2`` calibrates the column they are built from; both columns get
    the same input and their rates are averaged.
    """
    if int(columns) != columns or columns < 1:
        raise ValueError(f"columns must be a whole number >= 1, got {columns!r}")
    area = params.default_area
    return ColumnNetwork(params, {area: (area, int(columns))}, [Input(area, to="all")], seed=0)


def dmf_step_rates(params: Params, levels: Sequence[float], V_offset: Sequence[float] | None = None,
                   segment: float = 0.5, window: float = 0.3,
                   input_gain: Sequence[float] | None = None, columns: int = 1) -> np.ndarray:
    """DMF rates (levels, 8), Hz, of one column under the staircase of :func:`spiking_step_rates`.

    The same protocol as the spiking run (each level for ``segment`` s, in order, rates over
    the last ``window`` s of each), so that slow adaptation carries over alike. ``columns``:
    see :func:`calibration_network` (the rates are averaged over the columns).
    """
    over = {k: np.asarray(v, dtype=float) for k, v in (("V_offset", V_offset), ("input_gain", input_gain))
            if v is not None}
    if over:
        params = params.with_overrides(over)
    net = calibration_network(params, columns)
    stim = Stimulus([segment * i for i in range(len(levels))], [[float(u)] for u in levels])
    with torch.no_grad():
        traj = simulate(net, stim, segment * len(levels),
                        solver=Solver("dopri5", rtol=1e-7, atol=1e-7, backend="auto"))
    t = traj.t.cpu().numpy()
    r = traj.rate[:, 0].cpu().numpy().reshape(len(t), int(columns), len(POPULATIONS)).mean(axis=1)
    return np.stack([r[(t >= segment * (i + 1) - window - 1e-9) & (t < segment * (i + 1) - 1e-9)].mean(0)
                     for i in range(len(levels))])


def block_rates(block, windows: Sequence[tuple[float, float]]) -> np.ndarray:
    """Population rates (windows, 8), Hz, of a Neo Block of annotated SpikeTrains (first Segment).

    Elephant's ``mean_firing_rate`` of every neuron over each window ``[t0, t1)`` (s)
    (:func:`colplugin.analysis.spiking.neuron_rates`), averaged over the neurons of each
    population (silent neurons count as 0 Hz).
    """
    trains = block.segments[0].spiketrains
    out = np.zeros((len(windows), len(POPULATIONS)))
    for p, pop in enumerate(POPULATIONS):
        mine = [st for st in trains if st.annotations.get("population") == pop]
        if not mine:
            raise ValueError(f"the Block has no spike trains of population {pop}")
        for w, (t0, t1) in enumerate(windows):
            out[w, p] = neuron_rates(mine, t0, t1).mean()
    return out


def spiking_step_rates(params: Params, levels: Sequence[float], *, scale: float = SCALE,
                       k_scale: float = STAIRCASE_K_SCALE,
                       backend: str = "nest", seed: int = 0, threads: int = 1, segment: float = 0.5,
                       window: float = 0.3, out: Path | None = None,
                       columns: int = 1, neo_format: str = "nix") -> tuple[np.ndarray, dict[str, Any]]:
    """Rates (levels, 8), Hz, of the spiking twin of one column under a staircase of input levels.

    One run: each level holds for ``segment`` s; the rates are Elephant's mean firing rates
    (:func:`colplugin.analysis.spiking.population_statistics` on the run's Neo Block) over the
    last ``window`` s of each level. The twin is built as every twin is
    (:func:`colplugin.spiking.spiking_twin`: PD14 scaling, DC compensation from the DMF's
    rates). With ``out``, the Block (10 neurons per population) goes to ``out/spikes.nix``.
    ``columns``: see :func:`calibration_network` (the rates pool the columns' neurons).

    Returns
    -------
    (np.ndarray, dict)
        The rates and the run's facts (neurons, wall time).

    Raises
    ------
    ValueError
        A ``scale`` below the twin's floor (:func:`colplugin.analysis.twin.check_twin_scale`:
        fewer than ``MIN_POPULATION_NEURONS`` neurons in a population), before any work.
    """
    net = calibration_network(params, columns)
    check_twin_scale(net, scale, k_scale)  # the floor of MIN_POPULATION_NEURONS, before any work
    check_neo_format(neo_format)
    stim = Stimulus([segment * i for i in range(len(levels))], [[float(u)] for u in levels])
    duration = segment * len(levels)
    t0 = time.perf_counter()
    twin = spiking_twin(net, stim, scale=scale, k_scale=k_scale, duration=duration)
    result = simulate_spiking(twin, duration, backend=backend, seed=seed, threads=threads)
    wall = time.perf_counter() - t0
    rates = block_rates(result.to_neo(), [(segment * (i + 1) - window, segment * (i + 1)) for i in range(len(levels))])
    if out is not None:
        save_neo(result.to_neo(max_per_population=10), Path(out) / "spikes.nix", neo_format)
    return rates, {"neurons": int(sum(result.sizes.values())), "wall_seconds": wall, "backend": backend,
                   "scale": scale, "k_scale": k_scale, "seed": seed, "segment_s": segment, "window_s": window,
                   "columns": int(columns)}


def fit_calibration(params: Params, levels: Sequence[float], target: np.ndarray, *, floor: float = FLOOR_HZ,
                bound: float = 15.0, ridge: float = 0.02, segment: float = 0.5, window: float = 0.3,
                gains: bool = True, max_gain: float = 3.0, columns: int = 1) -> tuple[np.ndarray, dict[str, Any]]:
    """Offsets (8,), mV, and input gains (8,) that bring the DMF's rates (:func:`dmf_step_rates`) to ``target``.

    Least squares (scipy's trust-region reflective) on ``log((r_DMF + floor) / (r_target +
    floor))`` over the ``levels`` (Hz) and populations: relative errors above ``floor`` Hz,
    absolute ones below it. The unknowns are ``V_offset`` within +-``bound`` mV and, with
    ``gains``, the log of each population's input gain within +-log(``max_gain``); a small
    ridge (``ridge`` per mV and per unit of log gain) keeps what the data do not constrain
    (silent populations) at 0 mV and gain 1. A trial point at which the column runs away
    (:class:`~colplugin.solve.simulate.SimulationError`) costs :data:`RUNAWAY_RESIDUAL` per
    rate, so the fit steps back from it instead of stopping. ``segment`` and ``window`` (s): the staircase of
    :func:`dmf_step_rates`, which must be the one that produced ``target`` (levels, 8), and
    ``columns`` the column type it measured (:func:`calibration_network`).

    Returns
    -------
    (np.ndarray, dict)
        ``[V_offset (8), input_gain (8)]`` and the fit's costs and evaluations.
    """
    target = np.asarray(target, dtype=float)
    n = len(POPULATIONS)

    def split(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return x[:n], np.exp(x[n:]) if gains else np.ones(n)

    def residual(x: np.ndarray) -> np.ndarray:
        offset, gain = split(x)
        try:
            r = dmf_step_rates(params, levels, offset, segment=segment, window=window, input_gain=gain,
                               columns=columns)
        except SimulationError:  # a trial point where the column runs away: far from any target
            return np.concatenate([np.full(target.size, RUNAWAY_RESIDUAL), ridge * x])
        return np.concatenate([(np.log(r + floor) - np.log(target + floor)).ravel(), ridge * x])

    m = 2 * n if gains else n
    lim = np.array([bound] * n + [np.log(max_gain)] * (m - n))
    x0 = np.zeros(m)
    sol = least_squares(residual, x0, bounds=(-lim, lim), diff_step=1e-3, xtol=1e-6, ftol=1e-8)
    if not sol.success:
        raise RuntimeError(f"calibration: the fit did not converge ({sol.message})")
    offset, gain = split(sol.x)
    return np.concatenate([offset, gain]), {"cost_before": float(0.5 * np.sum(residual(x0) ** 2)),
                                            "cost_after": float(sol.cost), "evaluations": int(sol.nfev)}


def calibrated_preset_toml(preset: str, offsets: np.ndarray, source: str, gains: np.ndarray | None = None,
                           name: str | None = None) -> str:
    """A preset file (``base = preset``, a preset's name or a file's path) setting ``V_offset`` and ``input_gain``.

    ``name``: the calibrated preset is called ``<name>_calibrated`` (default: ``preset``).
    """
    name = preset if name is None else name
    base = json.dumps(str(preset))  # a TOML basic string (JSON's escapes are TOML's)
    values = ", ".join(f"{x:.6g}" for x in offsets)
    text = (f'# Preset "{name}_calibrated": {preset} with each population\'s input currents scaled and f\'s\n'
            f"# argument shifted so that the DMF's rates match its spiking twin (written by `colplugin calibrate`).\n\n"
            f'base = {base}\n\n[preset]\nname = "{name}_calibrated"\n'
            f'description = "{name} calibrated against its spiking twin"\n\n'
            f'[V_offset]\nvalue = [{values}]\nunit = "mV"\nsource = "{source}"\n')
    if gains is not None:
        text += (f'\n[input_gain]\nvalue = [{", ".join(f"{x:.6g}" for x in gains)}]\nunit = "dimensionless"\n'
                 f'source = "{source}"\n')
    return text


def calibrate(out: str | Path, preset: str | Path = DEFAULT_PRESET, *, scale: float = SCALE,
              k_scale: float = STAIRCASE_K_SCALE,
              backend: str = "nest", seed: int = 0, threads: int = 1, fit_levels: Sequence[float] = FIT_LEVELS,
              held_out: Sequence[float] = HELD_OUT_LEVELS, gains: bool = False,
              spiking_from: str | Path | None = None, columns: int = 1,
              neo_format: str = "nix") -> dict[str, Any]:
    """Calibrate a preset's DMF against its spiking twin and write the calibrated preset.

    ``preset`` is a shipped preset's name or a parameter file. Writes into ``out``:
    ``<preset>_calibrated.toml`` (``base =`` the preset, or the file by its absolute path; load
    it with :func:`colplugin.params.load_params` or ``--preset``), ``calibration.json`` (spiking, DMF and calibrated
    rates per level and population, relative differences, the offsets), ``calibration.png``
    and ``report.md``, and ``spikes.nix``.

    With ``gains`` each population's input gain is fitted beside its offset (it fits one
    column better, but gains above 1 can make a larger network run away from its initial
    state: the XOR network on gains fitted at scale 0.1 diverged at update 0);
    ``spiking_from`` (a ``calibration.json`` of an earlier run with the same preset, levels
    and columns) refits its spiking rates without running the twin again. ``columns``: the
    column type (:func:`calibration_network`; 2 for the columns of the XOR and decision
    tasks, an area split in two). ``neo_format``: ``"nix"``, ``"nwb"`` or ``"both"``, the
    file format(s) of the spikes (``--format``).

    Returns
    -------
    dict
        The contents of ``calibration.json``; ``max_rel_fit`` and ``max_rel_held_out`` are the
        largest relative differences (over populations above 0.1 Hz) of the calibrated DMF.

    Raises
    ------
    ValueError
        A LIF preset, a bad column count, or (without ``spiking_from``) a ``scale`` below the
        twin's floor (:func:`colplugin.analysis.twin.check_twin_scale`), before ``out`` is created.
    """
    out = Path(out)
    params = resolve_params(preset)
    preset = str(preset) if str(preset) in PRESETS else str(Path(preset).resolve())  # as the result's base names it
    label = preset if preset in PRESETS else Path(preset).stem  # the name of the calibrated preset
    if params["transfer"] != "dmf":
        raise ValueError(f"calibrate fits the DMF's f to its spiking twin; preset {preset!r} has the "
                         f"{params['transfer']!r} transfer, the LIF neuron's own rate, which has nothing to fit "
                         "(compare it with validation/column_transfer.py --preset instead)")
    net = calibration_network(params, columns)  # a bad column count fails before any work
    if spiking_from is None:  # so does a scale below the twin's floor (MIN_POPULATION_NEURONS per population)
        check_twin_scale(net, scale, k_scale)
    levels = [*fit_levels, *held_out]
    if spiking_from is not None:  # check the saved rates before any work
        old = read_saved_calibration(spiking_from)
        old_columns = old.get("run", {}).get("columns", 1)
        old_levels = old.get("fit_levels_hz", []) + old.get("held_out_levels_hz", [])
        if old.get("preset") != preset or old_levels != levels or old_columns != columns:
            raise ValueError(f"{spiking_from} holds the spiking rates of preset {old.get('preset')!r} at "
                             f"{old_levels} Hz with {old_columns} "
                             f"column(s); refit needs preset {preset!r} at {levels} Hz with {columns} column(s) "
                             "(or run the twin again: no --spiking)")
    out.mkdir(parents=True, exist_ok=True)
    if spiking_from is None:
        spk, run = spiking_step_rates(params, levels, scale=scale, k_scale=k_scale, backend=backend, seed=seed,
                                      threads=threads, out=out, columns=columns, neo_format=neo_format)
    else:
        spk, run = np.asarray(old["spiking_hz"], dtype=float), {**old["run"], "refit_from": str(spiking_from)}
        scale, k_scale, backend, seed = run["scale"], run["k_scale"], run["backend"], run["seed"]
    n_fit = len(fit_levels)
    x, fit = fit_calibration(params, fit_levels, spk[:n_fit], gains=gains, columns=columns)
    offsets, gain = x[:8], x[8:]
    before = dmf_step_rates(params, levels, columns=columns)
    after = dmf_step_rates(params, levels, offsets, input_gain=gain, columns=columns)

    def rel(x: np.ndarray) -> np.ndarray:
        return (x - spk) / np.maximum(spk, FLOOR_HZ)

    active = spk >= FLOOR_HZ
    source = (f"fit to the {backend} spiking twin of {column_words(columns)} ({params.default_area}, scale {scale}, "
              f"k {k_scale}, seed {seed}) at {', '.join(f'{u:g}' for u in fit_levels)} Hz input; colplugin calibrate")
    numbers = {"preset": preset, "calibrated_preset": f"{label}_calibrated", "V_offset_mV": offsets.tolist(),
               "input_gain": gain.tolist(),
               "fit_levels_hz": list(fit_levels), "held_out_levels_hz": list(held_out), "populations": POPULATIONS,
               "spiking_hz": spk.tolist(), "dmf_hz": before.tolist(), "calibrated_hz": after.tolist(),
               "rel_before": rel(before).tolist(), "rel_after": rel(after).tolist(),
               "max_rel_fit": float(np.abs(rel(after)[:n_fit][active[:n_fit]]).max()),
               "max_rel_held_out": float(np.abs(rel(after)[n_fit:][active[n_fit:]]).max()),
               "max_rel_before": float(np.abs(rel(before)[active]).max()),
               "columns": int(columns), "fit": fit, "run": run, "source": source}
    atomic_write_text(out / f"{label}_calibrated.toml",
                      calibrated_preset_toml(preset, offsets, source, gain if gains else None, name=label))
    atomic_write_text(out / "calibration.json", json.dumps(numbers, indent=2))
    save_figure(_figure(levels, n_fit, spk, before, after), out / "calibration.png")
    atomic_write_text(out / "report.md", _report(numbers))
    return numbers


def staircase_axes(title: str):
    """A figure of eight panels, one per population (rate in Hz against input in Hz), titled."""
    import matplotlib.pyplot as plt  # lazy: start-up time

    fig, axes = plt.subplots(2, 4, figsize=(13, 6), sharex=True, layout="constrained")
    for p, ax in enumerate(axes.ravel()):
        ax.set_title(POPULATIONS[p])
        if p >= 4:
            ax.set_xlabel("input (Hz into L4E, L4I)")
        if p % 4 == 0:
            ax.set_ylabel("rate (Hz)")
    fig.suptitle(title)
    return fig, axes


def _figure(levels, n_fit, spk, before, after):
    fig, axes = staircase_axes("Steady rates of one column: spiking twin vs DMF before and after calibration")
    x = np.asarray(levels)
    order = np.argsort(x)
    for p, ax in enumerate(axes.ravel()):
        ax.plot(x[order], spk[order, p], "k-o", ms=3, label="spiking twin")
        ax.plot(x[order], before[order, p], "--", color="tab:red", label="DMF")
        ax.plot(x[order], after[order, p], "-", color="tab:blue", label="calibrated DMF")
        ax.plot(x[n_fit:], spk[n_fit:, p], "s", mfc="none", color="k", ms=7, label="held out")
    axes[0, 0].legend(fontsize=7)
    return fig


def column_words(columns: int) -> str:
    """``"one column"``, or ``"one column of the area split into N"``."""
    return "one column" if columns == 1 else f"one column of the area split into {columns}"


def _report(n: dict[str, Any]) -> str:
    lines = [f"# Calibration of {n['preset']} against its spiking twin", "",
             f"Spiking twin: {n['run']['backend']}, {column_words(n.get('columns', 1))}, scale {n['run']['scale']}, "
             f"k {n['run']['k_scale']}, "
             f"{n['run']['neurons']} neurons, seed {n['run']['seed']} ({n['run']['wall_seconds']:.0f} s). Fit levels "
             f"{n['fit_levels_hz']} Hz, held-out levels {n['held_out_levels_hz']} Hz.", "",
             "Offsets V_offset (mV): " + ", ".join(f"{p} {x:+.3g}" for p, x in zip(n["populations"],
                                                                                  n["V_offset_mV"])), "",
             "Input gains: " + ", ".join(f"{p} {x:.3g}" for p, x in zip(n["populations"], n["input_gain"])), "",
             f"Largest relative difference from the spiking rates (populations above {FLOOR_HZ} Hz): "
             f"before {n['max_rel_before']:.3g}; calibrated {n['max_rel_fit']:.3g} at the fit levels, "
             f"**{n['max_rel_held_out']:.3g}** at the held-out levels (goal 0.1).", "",
             "| input (Hz) | population | spiking (Hz) | DMF (Hz) | calibrated (Hz) | DMF diff | calibrated diff |",
             "|---|---|---|---|---|---|---|"]
    levels = n["fit_levels_hz"] + n["held_out_levels_hz"]
    for i, u in enumerate(levels):
        tag = "" if i < len(n["fit_levels_hz"]) else " (held out)"
        for p, pop in enumerate(n["populations"]):
            lines.append(f"| {u:g}{tag} | {pop} | {n['spiking_hz'][i][p]:.3g} | {n['dmf_hz'][i][p]:.3g} | "
                         f"{n['calibrated_hz'][i][p]:.3g} | {100 * n['rel_before'][i][p]:+.0f} % | "
                         f"{100 * n['rel_after'][i][p]:+.0f} % |")
    return "\n".join(lines + ["", "![calibration](calibration.png)", ""])
