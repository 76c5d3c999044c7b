"""Neo on the ground floor: the builder every rate result's ``to_neo`` uses, and reading Neo back.

Imports only numpy, quantities, neo (lazily), the version and :mod:`colplugin.stimulus`, so
that result types (solve, export, spiking) can offer ``to_neo`` and tasks can read Neo
targets without importing a later module. The public entry points are re-exported by :mod:`colplugin.export.neo`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import quantities as pq

from ._version import __version__

if TYPE_CHECKING:  # annotations only; neo is imported where it is used
    import neo

__all__ = ["rate_block", "NeoError", "load_nix", "from_neo", "stimulus_from_neo", "rate_signal"]


class NeoError(ValueError):
    """A Neo object lacks units, has incompatible units or does not fit a network."""


def rate_block(network: Any, t: np.ndarray, rates: np.ndarray, *, source: str, solver: dict[str, Any],
               stimulus: Any = None, seed: int | None = None, description: str = ""):
    """A Neo Block of rate trajectories, one Segment per trial.

    Parameters
    ----------
    network : ColumnNetwork
        Supplies channel annotations, preset, spec and seed.
    t : array, shape (T,)
        Sample times, s (uniformly spaced).
    rates : array, shape (T, B, P)
        Instantaneous rates, Hz.
    source : str
        ``"torch"``, ``"brian2"``, ...
    solver : dict
        Integration settings (stored as JSON).
    stimulus : Stimulus, optional
        Input rates: stored as an ``"input"`` AnalogSignal (Hz) and ``"stimulus"`` Epochs.
    """
    import neo
    import torch

    if len(t) < 2:
        raise ValueError("need at least two samples to define a sampling rate")
    dt = float(t[1] - t[0])
    ch = network.channels
    ann = {k: np.array([c[k] for c in ch]) for k in ("area", "kind", "column", "population", "layer", "cell_type")}
    block = neo.Block(name=f"colplugin {source} run", description=description,
                      colplugin_version=__version__, preset=network.params.name, source=source,
                      network_spec=json.dumps(network.spec()), solver=json.dumps(solver),
                      seed=-1 if seed is None else int(seed),
                      network_seed=-1 if network.seed is None else int(network.seed),
                      session_start_time="", experimenter="", institution="")
    for b in range(rates.shape[1]):
        seg = neo.Segment(name=f"trial {b}", index=b)
        seg.analogsignals.append(neo.AnalogSignal(rates[:, b, :], units="Hz", sampling_period=dt * pq.s,
                                                  t_start=float(t[0]) * pq.s, name="rate",
                                                  array_annotations=ann))
        if stimulus is not None and stimulus.n_inputs:
            u = stimulus.sample(torch.as_tensor(t, dtype=stimulus.times.dtype))[:, b].cpu().numpy()
            seg.analogsignals.append(neo.AnalogSignal(u, units="Hz", sampling_period=dt * pq.s,
                                                      t_start=float(t[0]) * pq.s, name="input",
                                                      array_annotations={"channel": np.arange(u.shape[1])}))
        if stimulus is not None:
            times = stimulus.times.cpu().numpy()
            ends = np.append(times[1:], t[-1])
            r = stimulus.rates[b].cpu().numpy()
            on = [k for k in range(len(times)) if np.any(r[k] > 0)]
            if on:
                seg.epochs.append(neo.Epoch(times=times[on] * pq.s, durations=(ends[on] - times[on]) * pq.s,
                                            labels=np.array([f"input {r[k].tolist()} Hz" for k in on]),
                                            name="stimulus"))
        block.segments.append(seg)
    return block


def load_nix(path: str | Path) -> "neo.Block":
    """Read the first Block of a NIX file."""
    from neo.io import NixIO

    if isinstance(path, (str, Path)) and not str(path).strip():
        raise ValueError("load_nix(path): the path is empty; give the .nix file to read, e.g. 'rates.nix'")
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"NIX file {path} is a directory, not a NIX file; pass the .nix file (e.g. one "
                                "written by colplugin.save_nix)")
    if path.exists() and not path.is_file():
        raise NeoError(f"NIX file {path} is not a regular file (a device, FIFO or socket); pass a .nix file")
    if not path.is_file():
        raise FileNotFoundError(f"NIX file {path} does not exist")
    try:
        with NixIO(str(path), mode="ro") as io:
            block = io.read_block(lazy=False)
    except Exception as exc:
        raise NeoError(f"{path} is not a readable NIX file ({exc.__class__.__name__}: {exc}); write it with "
                       "colplugin.save_nix (or neo.io.NixIO)") from None
    if block is None:
        raise NeoError(f"{path} holds no Neo Block; write the target with colplugin.save_nix(colplugin.to_neo(...)) "
                       "or neo.io.NixIO(...).write_block(block)")
    return block


def _select(names: list[str], full: list[str], populations: Sequence[str], where: str) -> list[int]:
    idx = []
    for p in populations:
        if p in full:
            idx.append(full.index(p))
        elif p in names:
            idx.append(names.index(p))
        else:
            raise NeoError(f"no channel {p!r} in {where}; channels: {sorted(set(full or names))}")
    return idx


def _spike_rates(seg, populations: Sequence[str] | None, sampling_period: float | None):
    """Per-population (or per-train) rates of a Segment's spike trains, Elephant ``instantaneous_rate``."""
    from elephant.kernels import GaussianKernel
    from elephant.statistics import instantaneous_rate

    sp = (sampling_period or 1e-3) * pq.s
    trains = list(seg.spiketrains)
    kernel = GaussianKernel(10 * pq.ms)
    if populations is None:
        r = instantaneous_rate(trains, sampling_period=sp, kernel=kernel)
        return r.times.rescale("s").magnitude, r.rescale("Hz").magnitude
    # group the trains of each requested population ("POP" or "area[c].POP"); the population's rate is the
    # mean over its neurons, as a DMF population rate is
    labels = [(str(st.annotations.get("area", "")), st.annotations.get("column", ""),
               str(st.annotations.get("population", ""))) for st in trains]
    names = [lab[2] for lab in labels]
    full = [f"{a}[{c}].{p}" for a, c, p in labels]
    cols, times = [], None
    for p in populations:
        members = [i for i, (n, f) in enumerate(zip(names, full)) if p in (n, f)]
        if not members:
            raise NeoError(f"no spike trains of population {p!r} in segment {seg.name!r}; populations: "
                           f"{sorted(set(full))}")
        r = instantaneous_rate([trains[i] for i in members], sampling_period=sp, kernel=kernel)
        times = r.times.rescale("s").magnitude
        cols.append(r.rescale("Hz").magnitude.mean(axis=1))
    return times, np.stack(cols, 1)


def from_neo(block: "neo.Block", populations: Sequence[str] | None = None, *, sampling_period: float | None = None):
    """Rates of a Block as a training target: ``(t, rates)`` with t (T,) in s, rates (T, B, C) in Hz.

    Analog signals (the one named ``"rate"`` if present) must carry rate units (converted
    to Hz). Spike trains are turned into rates with Elephant's ``instantaneous_rate``
    (Gaussian kernel, 10 ms) at ``sampling_period`` (s, default 1 ms); with ``populations``
    the trains annotated with each population are averaged into one population rate (Hz
    per neuron), as a DMF population's rate is. ``populations`` selects channels by their
    ``population`` annotation (``"L23E"``) or by ``"area[c].POP"``.

    Raises
    ------
    NeoError
        Dimensionless signals, incompatible units, missing channels, NaN or negative rates,
        or trials of different lengths.
    """
    if not block.segments:
        raise NeoError("the Block has no segments; a target needs one Segment per trial, each with the rates as an "
                       "AnalogSignal named 'rate' (Hz) or as SpikeTrains (colplugin.to_neo writes this layout)")
    trials = []
    t_out = None
    first = None  # (name, sampling period, t_start) of the first segment
    for seg in block.segments:
        sig = rate_signal(seg)
        if sig is not None:
            if sig.dimensionality == pq.dimensionless.dimensionality:
                raise NeoError(f"segment {seg.name!r}: signal {sig.name!r} has no units; rates must be in Hz "
                               "(e.g. AnalogSignal(..., units='Hz'))")
            try:
                values = sig.rescale("Hz").magnitude
            except ValueError:
                raise NeoError(f"segment {seg.name!r}: signal {sig.name!r} is in {sig.dimensionality}, "
                               "which is not a rate; give rates in Hz (or 1/s)") from None
            if populations is not None:
                ann = sig.array_annotations
                names = [str(x) for x in ann.get("population", [])]
                full = [f"{a}[{c}].{p}" for a, c, p in zip(ann.get("area", []), ann.get("column", []), names)]
                values = values[:, _select(names, full, populations, f"segment {seg.name!r}")]
            t = sig.times.rescale("s").magnitude
        elif seg.spiketrains:
            t, values = _spike_rates(seg, populations, sampling_period)
        else:
            raise NeoError(f"segment {seg.name!r} holds neither a rate signal nor spike trains; add the trial's rates "
                           "as an AnalogSignal named 'rate' (Hz) or its SpikeTrains")
        if len(t) < 2:
            raise NeoError(f"segment {seg.name!r} has {len(t)} sample(s); a target needs at least two samples per "
                           "trial (their spacing sets the fit's output step); record or resample the rates more "
                           "finely")
        step = float(t[1] - t[0])
        if first is None:
            first = (seg.name, step, float(t[0]))
        elif not (np.isclose(step, first[1], rtol=1e-9, atol=0) and np.isclose(float(t[0]), first[2], atol=1e-12)):
            raise NeoError(f"segment {seg.name!r} is sampled every {step:g} s from {float(t[0]):g} s, the first "
                           f"segment {first[0]!r} every {first[1]:g} s from {first[2]:g} s; every trial of a target "
                           "needs the same sample times (resample the trials onto one time grid)")
        if not np.all(np.isfinite(values)):
            raise NeoError(f"segment {seg.name!r}: the rates contain NaN or inf; a training target must be finite "
                           "(interpolate or drop the bad samples first)")
        if np.any(values < 0):
            raise NeoError(f"segment {seg.name!r}: the rates contain negative values (min {values.min():.4g} Hz); "
                           "firing rates are >= 0 Hz (clip or re-estimate the rates)")
        if t_out is not None and len(t) != len(t_out):
            raise NeoError(f"segment {seg.name!r} has {len(t)} samples, the first segment {len(t_out)}; "
                           "every trial of a target needs the same sample times")
        t_out = t if t_out is None else t_out
        trials.append(values)
    return t_out, np.stack(trials, 1)


def rate_signal(seg):
    """The rate AnalogSignal of a Segment: the one named ``"rate"``, else the first that is not the ``"input"``."""
    named = [s for s in seg.analogsignals if s.name == "rate"]
    if named:
        return named[0]
    return next((s for s in seg.analogsignals if s.name != "input"), None)


def stimulus_from_neo(block: "neo.Block"):
    """The piecewise-constant stimulus stored by :func:`to_neo` (signal ``"input"``), as a Stimulus.

    Trials whose inputs change at different times are merged onto the union of their
    change points (each trial's rates repeated where it does not change). Returns ``None``
    if the Block holds no input signal.
    """
    from .stimulus import Stimulus

    per_trial = []
    with_input = [any(s.name == "input" for s in seg.analogsignals) for seg in block.segments]
    if not any(with_input):
        return None
    if not all(with_input):
        lacking = [seg.name for seg, has in zip(block.segments, with_input) if not has]
        raise NeoError(f"segment(s) {lacking} have no 'input' signal but the others do; every trial needs its "
                       "inputs as an AnalogSignal named 'input' (Hz, one channel per network input)")
    for seg in block.segments:
        sig = [s for s in seg.analogsignals if s.name == "input"]
        if sig[0].dimensionality == pq.dimensionless.dimensionality:
            raise NeoError(f"segment {seg.name!r}: the 'input' signal has no units; input rates must be in Hz "
                           "(AnalogSignal(..., units='Hz', name='input'))")
        try:
            u = sig[0].rescale("Hz").magnitude
        except ValueError:
            raise NeoError(f"segment {seg.name!r}: the 'input' signal is in {sig[0].dimensionality}, "
                           "not a rate; give input rates in Hz (AnalogSignal(..., units='Hz', name='input'))") \
                from None
        if u.ndim != 2 or len(u) < 1 or not np.all(np.isfinite(u)) or np.any(u < 0):
            raise NeoError(f"segment {seg.name!r}: the 'input' signal must hold finite rates >= 0 Hz, one column "
                           "per network input")
        t = sig[0].times.rescale("s").magnitude - float(sig[0].t_start.rescale("s"))
        change = np.nonzero(np.any(np.diff(u, axis=0) != 0, axis=1))[0] + 1
        per_trial.append((t, u, change))
    if not per_trial:
        return None
    times = np.unique(np.concatenate([[0.0]] + [t[c] for t, _, c in per_trial]))
    rates = []
    for t, u, _ in per_trial:
        idx = np.searchsorted(t, times - 1e-9 * max(1.0, float(t[-1])), side="left")
        rates.append(u[np.clip(idx, 0, len(u) - 1)])
    return Stimulus(times, np.stack(rates))
