"""Neo on the ground floor: the builder every rate result's ``to_neo`` uses, and reading Neo back.

Imports only numpy, quantities, neo (lazily), the version and :mod:`colplugin.stimulus`, so
that result types (solve, export, spiking) can offer ``to_neo`` and tasks can read Neo
targets without importing a later module. The public entry points are re-exported by :mod:`colplugin.export.neo`.
"""

from __future__ import annotations

import json
import warnings
from datetime import date, datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence
from uuid import uuid4

import numpy as np
import quantities as pq
import torch

from ._version import __version__
from .stimulus import Stimulus

if TYPE_CHECKING:  # annotations only; neo is imported where it is used
    import neo

__all__ = ["rate_block", "NeoError", "load_nix", "load_nwb", "write_nwb", "from_neo", "stimulus_from_neo",
           "rate_signal"]


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


# --------------------------------------------------------------------------------------------------------------------
# NWB: colplugin's layout (written with pynwb; the parts Neo's NWBIO knows are laid out as it writes them)
# --------------------------------------------------------------------------------------------------------------------

#: The processing module and table that make an NWB file colplugin's: one row per Neo object (JSON metadata).
NWB_MODULE = "neo"
NWB_TABLE = "neo_objects"
NWB_FORMAT = "colplugin-neo-nwb"
NWB_FORMAT_VERSION = 1

#: Units-table columns that NWB or Neo's NWBIO use themselves (never an annotation column).
_UNIT_RESERVED = frozenset({"spike_times", "obs_intervals", "electrodes", "electrode_group", "waveform_mean",
                            "waveform_sd", "waveforms", "id", "_name", "segment", "block", "name", "description",
                            "colnames", "columns", "fields", "parent", "object_id"})


def _encode(value: Any, where: str) -> Any:
    """A Neo annotation value as tagged JSON that :func:`_decode` turns back into an equal value."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, pq.Quantity):
        return {"__pq__": value.dimensionality.string, "v": _encode(np.asarray(value.magnitude), where)}
    if isinstance(value, np.ndarray):
        return {"__nd__": value.dtype.str, "shape": list(value.shape),
                "v": [_encode(x, where) for x in value.ravel().tolist()] if value.dtype.kind == "O"
                else value.ravel().tolist()}
    if isinstance(value, np.generic):
        return {"__np__": value.dtype.str, "v": value.item()}
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, datetime):
        return {"__dt__": value.isoformat()}
    if isinstance(value, date):
        return {"__date__": value.isoformat()}
    if isinstance(value, tuple):
        return {"__tuple__": [_encode(x, where) for x in value]}
    if isinstance(value, list):
        return [_encode(x, where) for x in value]
    if isinstance(value, dict):
        return {"__dict__": [[_encode(k, where), _encode(v, where)] for k, v in value.items()]}
    raise TypeError(f"save_nwb: {where} holds a {type(value).__name__} ({value!r:.60}), which cannot be stored in "
                    "NWB; annotations may be numbers, strings, booleans, None, datetimes, numpy arrays, quantities, "
                    "and lists, tuples or dicts of these")


def _decode(value: Any) -> Any:
    if isinstance(value, list):
        return [_decode(x) for x in value]
    if not isinstance(value, dict):
        return value
    if "__pq__" in value:
        return pq.Quantity(_decode(value["v"]), value["__pq__"])
    if "__nd__" in value:
        dtype = np.dtype(value["__nd__"])
        items = [_decode(x) for x in value["v"]] if dtype.kind == "O" else value["v"]
        out = np.empty(len(items), dtype=dtype) if dtype.kind == "O" else np.asarray(items, dtype=dtype)
        if dtype.kind == "O":
            out[:] = items
        return out.reshape(value["shape"])
    if "__np__" in value:
        return np.dtype(value["__np__"]).type(value["v"])
    if "__dt__" in value:
        return datetime.fromisoformat(value["__dt__"])
    if "__date__" in value:
        return date.fromisoformat(value["__date__"])
    if "__tuple__" in value:
        return tuple(_decode(x) for x in value["__tuple__"])
    if "__dict__" in value:
        return {_decode(k): _decode(v) for k, v in value["__dict__"]}
    return {k: _decode(v) for k, v in value.items()}


def _dumps(obj: dict[str, Any], where: str) -> str:
    return json.dumps({k: _encode(v, f"{where} {k}") for k, v in obj.items()})


def _loads(text: str) -> dict[str, Any]:
    return {k: _decode(v) for k, v in json.loads(text).items()}


def _common(obj: Any) -> dict[str, Any]:
    """What every Neo object carries besides its data."""
    return {"name": obj.name, "description": obj.description, "file_origin": obj.file_origin,
            "annotations": dict(obj.annotations)}


def _array_annotations(obj: Any) -> dict[str, Any]:
    return {k: np.asarray(v) for k, v in getattr(obj, "array_annotations", {}).items()}


def _nwb_name(text: str) -> str:
    return str(text).replace("/", "_") or "_"


#: One row of the NWB structure table: (kind, segment, index, NWB name, JSON metadata).
_Row = tuple[str, int, int, str, str]


def _refuse_unwritable(block: "neo.Block") -> None:
    """Raise NotImplementedError naming the objects of ``block`` that :func:`write_nwb` does not write."""
    unsupported = []
    for s, seg in enumerate(block.segments):
        for kind, label in (("events", "Event(s)"), ("imagesequences", "ImageSequence(s)")):
            if getattr(seg, kind, None):
                unsupported.append(f"{len(getattr(seg, kind))} {label} in segment {s} ({seg.name!r})")
    if getattr(block, "groups", None):
        unsupported.append(f"{len(block.groups)} Group(s)")
    if unsupported:
        raise NotImplementedError(f"save_nwb writes AnalogSignals, IrregularlySampledSignals, SpikeTrains and Epochs; "
                                  f"the Block has {', '.join(unsupported)} (save it with colplugin.save_nix)")


def _new_nwb_file(block: "neo.Block") -> Any:
    """An empty ``pynwb.NWBFile`` for ``block``: its description, a fresh identifier and its recording
    time as the session start (now if it has none; UTC if it has no time zone)."""
    import pynwb

    start = block.rec_datetime if isinstance(block.rec_datetime, datetime) else datetime.now(timezone.utc)
    if start.tzinfo is None:
        start = start.replace(tzinfo=timezone.utc)
    return pynwb.NWBFile(session_description=block.description or block.name or "colplugin Neo Block",
                         identifier=str(uuid4()), session_start_time=start,
                         source_script=f"colplugin {__version__} (colplugin.save_nwb)", source_script_file_name="")


def _add_nwb_columns(nwb: Any, block: "neo.Block") -> list[str]:
    """Add the units-table and epochs-table columns ``block`` needs; return the annotation columns of the units.

    The units and epochs tables get Neo's NWBIO columns (``_name``, ``segment``, ``block``);
    the units table also one column per scalar annotation that every spike train has, of
    one kind (str or number), for pynwb users.
    """
    trains = [st for seg in block.segments for st in seg.spiketrains]
    keys: list[str] = []
    if trains:
        # Neo's NWBIO columns, then one column per scalar annotation every train has (for pynwb users)
        for name, desc in (("_name", "the name attribute of the SpikeTrain"),
                           ("segment", "the name of the Neo Segment to which the SpikeTrain belongs"),
                           ("block", "the name of the Neo Block to which the SpikeTrain belongs")):
            nwb.add_unit_column(name, desc)
        keys = [k for k in trains[0].annotations if k not in _UNIT_RESERVED
                and all(isinstance(st.annotations.get(k), (str, int, float, np.integer, np.floating))
                        and not isinstance(st.annotations.get(k), (bool, np.bool_)) for st in trains)
                and len({isinstance(st.annotations[k], str) for st in trains}) == 1]
        for k in keys:
            nwb.add_unit_column(k, f"the SpikeTrain annotation {k!r}")
    if any(seg.epochs for seg in block.segments):
        for name, desc in (("_name", "the name attribute of the Epoch"),
                           ("segment", "the name of the Neo Segment to which the Epoch belongs"),
                           ("block", "the name of the Neo Block to which the Epoch belongs")):
            nwb.add_epoch_column(name, desc)
    return keys


def _add_nwb_signals(nwb: Any, seg: "neo.Segment", s: int, block_name: str, rows: list[_Row]) -> None:
    """Add segment ``s``'s analog and irregularly sampled signals as TimeSeries (stimulus or acquisition)
    and their rows to ``rows``. Sampling in Hz, times in s; data keep their units."""
    import pynwb

    where = f"segment {s} ({seg.name!r})"
    hierarchy = json.dumps({"block": block_name, "segment": seg.name or f"segment {s}"})
    signals = [("analogsignal", k, sig) for k, sig in enumerate(seg.analogsignals)]
    signals += [("irregularlysampledsignal", k, sig) for k, sig in enumerate(seg.irregularlysampledsignals)]
    for kind, k, sig in signals:
        if getattr(sig, "proxy_for", None) is not None:
            sig = sig.load()
        name = _nwb_name(f"{seg.name or 'segment'} {sig.name or kind} {s}.{k}"
                         + ("" if kind == "analogsignal" else " irregular"))
        meta = {**_common(sig), "array_annotations": _array_annotations(sig), "units": sig.units,
                "t_start": sig.t_start, "shape": list(sig.shape)}
        data = np.asarray(sig.magnitude)
        unit = sig.units.dimensionality.string
        if kind == "analogsignal":
            meta["sampling_rate"] = sig.sampling_rate
            ts = pynwb.TimeSeries(name=name, data=data, unit=unit, comments=hierarchy,
                                  starting_time=float(sig.t_start.rescale("s")),
                                  rate=float(sig.sampling_rate.rescale("Hz")),
                                  description=sig.description or f"Neo AnalogSignal {sig.name!r}")
        else:
            ts = pynwb.TimeSeries(name=name, data=data, unit=unit, comments=hierarchy,
                                  timestamps=sig.times.rescale("s").magnitude,
                                  description=sig.description or f"Neo IrregularlySampledSignal {sig.name!r}")
            meta["times_units"] = sig.times.units
        group = sig.annotations.get("nwb_group", "stimulus" if sig.name == "input" else "acquisition")
        (nwb.add_stimulus if group == "stimulus" else nwb.add_acquisition)(ts)
        meta["nwb_group"] = "stimulus" if group == "stimulus" else "acquisition"
        rows.append((kind, s, k, name, _dumps(meta, f"{where} {kind} {k} ({sig.name!r})")))


def _add_nwb_units(nwb: Any, seg: "neo.Segment", s: int, block_name: str, keys: Sequence[str], n_units: int,
                   rows: list[_Row]) -> int:
    """Add segment ``s``'s spike trains as rows of the units table (spike times in s) and their rows to
    ``rows``, the first at units-table row ``n_units``; return the number of units rows after them.

    Raises
    ------
    NotImplementedError
        For a spike train with waveforms.
    """
    where = f"segment {s} ({seg.name!r})"
    for k, st in enumerate(seg.spiketrains):
        if getattr(st, "proxy_for", None) is not None:
            st = st.load()
        if st.waveforms is not None and np.size(st.waveforms):
            raise NotImplementedError(f"save_nwb: {where} spike train {k} ({st.name!r}) has waveforms, which it "
                                      "does not write; save the Block with colplugin.save_nix")
        extra = {c: (st.annotations[c].item() if isinstance(st.annotations[c], np.generic) else
                     st.annotations[c]) for c in keys}
        nwb.add_unit(spike_times=np.asarray(st.rescale("s").magnitude, dtype=float),
                     obs_intervals=[[float(st.t_start.rescale("s")), float(st.t_stop.rescale("s"))]],
                     _name=str(st.name or f"spiketrain {k}"), segment=seg.name or f"segment {s}",
                     block=block_name, **extra)
        meta = {**_common(st), "array_annotations": _array_annotations(st), "units": st.units,
                "t_start": st.t_start, "t_stop": st.t_stop,
                "sampling_rate": st.sampling_rate, "left_sweep": st.left_sweep}
        rows.append(("spiketrain", s, k, str(n_units), _dumps(meta, f"{where} spike train {k} ({st.name!r})")))
        n_units += 1
    return n_units


def _add_nwb_epochs(nwb: Any, seg: "neo.Segment", s: int, block_name: str, n_epochs: int,
                    rows: list[_Row]) -> int:
    """Add segment ``s``'s epochs as rows of the epochs table (times in s) and their rows to ``rows``, the
    first at epochs-table row ``n_epochs``; return the number of epochs rows after them."""
    where = f"segment {s} ({seg.name!r})"
    for k, ep in enumerate(seg.epochs):
        if getattr(ep, "proxy_for", None) is not None:
            ep = ep.load()
        starts = ep.times.rescale("s").magnitude
        stops = starts + ep.durations.rescale("s").magnitude
        first = n_epochs
        for a, b, label in zip(starts, stops, ep.labels):
            # _name unique per segment: Neo's NWBIO groups epochs by it across segments
            nwb.add_epoch(float(a), float(b), [str(label)], [], _name=f"{ep.name or 'epoch'} ({s}.{k})",
                          segment=seg.name or f"segment {s}", block=block_name)
            n_epochs += 1
        meta = {**_common(ep), "array_annotations": _array_annotations(ep), "times": ep.times,
                "durations": ep.durations, "labels": np.asarray(ep.labels), "rows": [first, n_epochs]}
        rows.append(("epoch", s, k, "", _dumps(meta, f"{where} epoch {k} ({ep.name!r})")))
    return n_epochs


def _add_nwb_structure(nwb: Any, rows: Sequence[_Row]) -> None:
    """Add the ``neo`` processing module: the structure table of ``rows`` and, per analog signal with
    one-dimensional array annotations of plain types, a table of its channel annotations."""
    from hdmf.common import DynamicTable, VectorData

    cols = list(zip(*rows))
    table = DynamicTable(name=NWB_TABLE, description=f"{NWB_FORMAT} {NWB_FORMAT_VERSION}: every Neo object of the "
                         "Block (kind, segment, index within the segment, NWB object, JSON metadata: names, units, "
                         "annotations, array annotations), written by colplugin.save_nwb",
                         columns=[VectorData(name=n, description=d, data=list(c)) for n, d, c in zip(
                             ("kind", "segment", "index", "nwb_name", "metadata"),
                             ("block, segment, analogsignal, irregularlysampledsignal, spiketrain or epoch",
                              "the Segment's index in the Block (-1: the Block)", "index within its Segment's list",
                              "the TimeSeries name (signals) or units-table row (spike trains)",
                              "JSON of the object's metadata (tagged types: __nd__ numpy array, __pq__ quantity)"),
                             cols)])
    module = nwb.create_processing_module(NWB_MODULE, "Neo structure of the data (colplugin.save_nwb)")
    module.add(table)
    # per-channel annotations as tables too (readable without JSON): one per signal with array annotations
    for kind, _s, _k, name, text in rows:
        if kind != "analogsignal":
            continue
        ann = _loads(text)["array_annotations"]
        ann = {a: v for a, v in ann.items() if v.ndim == 1 and v.dtype.kind in "UiufSb"}
        if ann:
            module.add(DynamicTable(name=f"{name} channels", description=f"channel annotations of TimeSeries {name!r}",
                                    columns=[VectorData(name=a, description=f"array annotation {a!r}",
                                                        data=v.tolist()) for a, v in ann.items()]))


def write_nwb(block: "neo.Block", path: str | Path) -> None:
    """Write ``block`` to a new NWB file at ``path`` (colplugin's layout; see :func:`colplugin.save_nwb`)."""
    import pynwb

    _refuse_unwritable(block)
    nwb = _new_nwb_file(block)
    block_name = block.name or "block"
    rows: list[_Row] = []  # (kind, segment, index, nwb name, metadata JSON)
    rows.append(("block", -1, 0, "", _dumps({
        "format": NWB_FORMAT, "format_version": NWB_FORMAT_VERSION, "colplugin_version": __version__,
        **_common(block), "index": block.index, "rec_datetime": block.rec_datetime,
        "file_datetime": block.file_datetime}, "the Block's")))
    keys = _add_nwb_columns(nwb, block)

    n_units = n_epochs = 0
    for s, seg in enumerate(block.segments):
        rows.append(("segment", s, s, "", _dumps({**_common(seg), "index": seg.index,
                                                  "rec_datetime": seg.rec_datetime}, f"segment {s} ({seg.name!r})")))
        _add_nwb_signals(nwb, seg, s, block_name, rows)
        n_units = _add_nwb_units(nwb, seg, s, block_name, keys, n_units, rows)
        n_epochs = _add_nwb_epochs(nwb, seg, s, block_name, n_epochs, rows)

    _add_nwb_structure(nwb, rows)
    with warnings.catch_warnings():  # save_nwb writes a temporary file first, then renames it to FILE.nwb
        warnings.filterwarnings("ignore", message=".*does not end in '.nwb'", category=UserWarning)
        with pynwb.NWBHDF5IO(str(path), mode="w") as io:
            io.write(nwb)


def load_nwb(path: str | Path) -> "neo.Block":
    """Read an NWB file written by :func:`colplugin.save_nwb` back as the Neo Block that was saved.

    The data come from the NWB objects (TimeSeries, units table, epochs table), the Neo
    structure, units and annotations (array annotations included) from the ``neo`` processing
    module's ``neo_objects`` table. A file of another layout is read with Neo's ``NWBIO``
    when it holds a rate signal (a TimeSeries in Hz) or spike trains; otherwise a
    :class:`NeoError` names what it lacks.
    """
    import pynwb

    if isinstance(path, (str, Path)) and not str(path).strip():
        raise ValueError("load_nwb(path): the path is empty; give the .nwb file to read, e.g. 'rates.nwb'")
    if not isinstance(path, (str, Path)):
        raise TypeError(f"load_nwb(path): path must be a str or Path, got {type(path).__name__}")
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"NWB file {path} is a directory, not an NWB file; pass the .nwb file (e.g. one "
                                "written by colplugin.save_nwb)")
    if path.exists() and not path.is_file():
        raise NeoError(f"NWB file {path} is not a regular file (a device, FIFO or socket); pass a .nwb file")
    if not path.is_file():
        raise FileNotFoundError(f"NWB file {path} does not exist")
    try:
        io = pynwb.NWBHDF5IO(str(path), mode="r", load_namespaces=True)
        nwb = io.read()
    except Exception as exc:
        raise NeoError(f"{path} is not a readable NWB file ({exc.__class__.__name__}: {exc}); write it with "
                       "colplugin.save_nwb (or pynwb / neo.io.NWBIO)") from None
    try:
        module = nwb.processing.get(NWB_MODULE)
        table = module.data_interfaces.get(NWB_TABLE) if module is not None else None
        if table is None:
            return _foreign_nwb(path, nwb)
        return _block_from_nwb(path, nwb, table)
    finally:
        io.close()


def _read_structure(path: Path, table: Any) -> tuple[list[str], list[int], list[int], list[str], list[dict]]:
    """The columns of colplugin's structure table (kind, segment, index, NWB name, decoded metadata).

    Raises
    ------
    NeoError
        If the table is not colplugin's (no block row of its format) or of a later layout version.
    """
    kinds = [str(x) for x in table["kind"][:]]
    segs = [int(x) for x in table["segment"][:]]
    idxs = [int(x) for x in table["index"][:]]
    names = [str(x) for x in table["nwb_name"][:]]
    metas = [_loads(str(x)) for x in table["metadata"][:]]
    if not kinds or kinds[0] != "block" or metas[0].get("format") != NWB_FORMAT:
        raise NeoError(f"{path}: its {NWB_MODULE}/{NWB_TABLE} table is not colplugin's (no '{NWB_FORMAT}' block "
                       "row); write the file with colplugin.save_nwb")
    if int(metas[0].get("format_version", 0)) > NWB_FORMAT_VERSION:
        raise NeoError(f"{path} was written by colplugin {metas[0].get('colplugin_version')} in layout version "
                       f"{metas[0]['format_version']}; this colplugin ({__version__}) reads up to version "
                       f"{NWB_FORMAT_VERSION}: update colplugin")
    return kinds, segs, idxs, names, metas


def _restore_common(obj: Any, meta: dict[str, Any]) -> Any:
    """Set what every Neo object carries besides its data (:func:`_common`) on ``obj`` from ``meta``; return it."""
    obj.name, obj.description, obj.file_origin = meta["name"], meta["description"], meta["file_origin"]
    obj.annotations.clear()
    obj.annotations.update(meta["annotations"])
    return obj


def _neo_data_object(nwb: Any, kind: str, name: str, meta: dict[str, Any], seg: Any, where: str) -> tuple[Any, list]:
    """The Neo data object of one structure-table row (its data from the NWB object ``name``) and the list
    of ``seg`` it belongs in.

    Raises
    ------
    NeoError
        If its TimeSeries, units-table row or epochs-table rows are missing, or ``kind`` is unknown.
    """
    import neo

    if kind in ("analogsignal", "irregularlysampledsignal"):
        group = nwb.stimulus if meta.get("nwb_group") == "stimulus" else nwb.acquisition
        if name not in group:
            raise NeoError(f"{where}: the TimeSeries {name!r} is missing; the file is damaged")
        ts = group[name]
        data = np.asarray(ts.data[:]).reshape(meta["shape"])
        if kind == "analogsignal":
            return (neo.AnalogSignal(data, units=meta["units"], t_start=meta["t_start"],
                                     sampling_rate=meta["sampling_rate"]), seg.analogsignals)
        times = (np.asarray(ts.timestamps[:], dtype=float) * pq.s).rescale(meta["times_units"])
        return neo.IrregularlySampledSignal(times, data, units=meta["units"]), seg.irregularlysampledsignals
    if kind == "spiketrain":
        units = nwb.units
        if units is None or int(name) >= len(units):
            raise NeoError(f"{where}: row {name} of the units table is missing; the file is damaged")
        times = np.asarray(units.get_unit_spike_times(int(name)), dtype=float) * pq.s
        return (neo.SpikeTrain(times.rescale(meta["units"]), t_start=meta["t_start"], t_stop=meta["t_stop"],
                               sampling_rate=meta["sampling_rate"], left_sweep=meta["left_sweep"]), seg.spiketrains)
    if kind == "epoch":
        a, b = meta["rows"]
        epochs = nwb.epochs
        if epochs is None or b > len(epochs):
            raise NeoError(f"{where}: rows {a}..{b} of the epochs table are missing; the file is damaged")
        return neo.Epoch(times=meta["times"], durations=meta["durations"], labels=meta["labels"]), seg.epochs
    raise NeoError(f"{where}: unknown kind {kind!r} in {NWB_MODULE}/{NWB_TABLE}; update colplugin")


def _block_from_nwb(path: Path, nwb: Any, table: Any) -> "neo.Block":
    import neo

    kinds, segs, idxs, names, metas = _read_structure(path, table)
    m = metas[0]
    block = _restore_common(neo.Block(), m)
    block.index, block.rec_datetime, block.file_datetime = m["index"], m["rec_datetime"], m["file_datetime"]
    segments: dict[int, Any] = {}
    for kind, s, k, name, meta in zip(kinds[1:], segs[1:], idxs[1:], names[1:], metas[1:]):
        where = f"{path}: {kind} {k} of segment {s}"
        if kind == "segment":
            seg = _restore_common(neo.Segment(), meta)
            seg.index, seg.rec_datetime = meta["index"], meta["rec_datetime"]
            segments[s] = seg
            block.segments.append(seg)
            continue
        seg = segments.get(s)
        if seg is None:
            raise NeoError(f"{where}: no segment {s} precedes it in {NWB_MODULE}/{NWB_TABLE}; the file is damaged")
        sig, out = _neo_data_object(nwb, kind, name, meta, seg, where)
        _restore_common(sig, meta)
        if meta.get("array_annotations"):
            sig.array_annotate(**meta["array_annotations"])
        if len(out) != k:
            raise NeoError(f"{where}: it is object {k} but {len(out)} precede it; the file is damaged")
        out.append(sig)
        sig.segment = seg
    block.check_relationships()
    return block


def _foreign_nwb(path: Path, nwb: Any) -> "neo.Block":
    """A file not written by colplugin: Neo's NWBIO reads it if it holds rates or spike trains, else a NeoError."""
    series = {**{f"acquisition/{k}": v for k, v in nwb.acquisition.items()},
              **{f"stimulus/{k}": v for k, v in nwb.stimulus.items()}}
    found, rates = [], []
    for where, ts in series.items():
        unit = getattr(ts, "unit", None)
        try:
            dim = pq.Quantity(1.0, str(unit)).simplified.dimensionality
            is_rate = unit is not None and dim == pq.Hz.simplified.dimensionality
        except Exception:  # an NWB unit string quantities does not know
            is_rate = False
        found.append(f"TimeSeries {where!r} in {unit!r}")
        if is_rate:
            rates.append(where)
    has_units = nwb.units is not None and len(nwb.units) > 0
    if has_units:
        found.append(f"{len(nwb.units)} units (spike trains)")
    missing = []
    if not rates and not has_units:
        missing.append("no rate signal (a TimeSeries in Hz) and no spike trains (a units table)")
    missing.append(f"no '{NWB_MODULE}/{NWB_TABLE}' table, so no Neo structure: no trials (segments), no channel "
                   "annotations (area, column, population), no 'input' signal and no network_spec")
    if rates or has_units:
        from neo.io import NWBIO

        try:
            return NWBIO(str(path), mode="r").read_block(lazy=False)
        except Exception as exc:
            raise NeoError(f"{path} was not written by colplugin.save_nwb ({'; '.join(missing)}) and Neo's NWBIO "
                           f"cannot read it either ({exc.__class__.__name__}: {exc})") from None
    raise NeoError(f"{path} was not written by colplugin.save_nwb and holds nothing colplugin can use: "
                   f"{'; '.join(missing)}. It holds: {', '.join(found) or 'no TimeSeries'}. Write the rates with "
                   "colplugin.save_nwb(colplugin.to_neo(result), path), or build a neo.Block (one Segment per trial, "
                   "an AnalogSignal 'rate' in Hz annotated per channel) and save that")
