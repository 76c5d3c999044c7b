"""Building Neo Blocks of rate runs: the one builder every rate result's ``to_neo`` uses.

Ground floor (imports only numpy, quantities, neo and the version), so that result types
in any subpackage can offer ``to_neo`` without importing a later module. Writing, reading
and converting back live in :mod:`colplugin.export.neo`.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import quantities as pq

from ._version import __version__

__all__ = ["rate_block", "NeoConvertible"]


class NeoConvertible:
    """Protocol of every result type: ``to_neo(*, seed=None, description="") -> neo.Block``."""

    def to_neo(self, *, seed: int | None = None, description: str = ""):  # pragma: no cover - protocol
        raise NotImplementedError


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
