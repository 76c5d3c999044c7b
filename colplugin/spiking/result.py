"""The result of a spiking run, whatever the backend: spikes per population, and Neo."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import quantities as pq

from .._version import __version__

__all__ = ["SpikingResult", "timing_summary", "timing_md"]


@dataclass
class SpikingResult:
    """Spikes of a spiking run.

    Attributes
    ----------
    spikes : dict
        ``spikes[population] = (neuron index, spike time s)``, two 1-d arrays.
    sizes : dict
        Neurons per recorded population.
    duration : float
        Simulated time, s.
    settings : dict
        Backend, device, seed, threads, dt and the description's metadata.
    annotations : dict
        Per population: area, column, population, layer, cell_type (copied to Neo).
    wall_seconds : dict
        ``build``, ``run`` (compile and run for cpp_standalone) and ``total``, s.
    build_seconds : float or None
        Wall time of building the network in the simulator (neurons, connections, devices), s;
        ``None``: not measured. Default: ``wall_seconds["build"]`` where given.
    simulate_seconds : float or None
        Wall time of simulating it, s (Brian2: code generation, and for cpp_standalone the
        project's compilation, included); ``None``: not measured. Default: ``wall_seconds["run"]``
        where given.
    """

    spikes: dict[str, tuple[np.ndarray, np.ndarray]]
    sizes: dict[str, int]
    duration: float
    settings: dict[str, Any]
    annotations: dict[str, dict[str, Any]] = field(default_factory=dict)
    wall_seconds: dict[str, float] = field(default_factory=dict)
    build_seconds: float | None = None
    simulate_seconds: float | None = None

    def __post_init__(self) -> None:
        if self.build_seconds is None and "build" in self.wall_seconds:
            self.build_seconds = float(self.wall_seconds["build"])
        if self.simulate_seconds is None and "run" in self.wall_seconds:
            self.simulate_seconds = float(self.wall_seconds["run"])

    @property
    def populations(self) -> list[str]:
        """Recorded population names, in the description's order."""
        return list(self.sizes)

    @property
    def N(self) -> np.ndarray:
        """Neurons per recorded population, in order."""
        return np.array([self.sizes[p] for p in self.sizes])

    def rates(self, t_start: float = 0.0, t_stop: float | None = None) -> dict[str, float]:
        """Mean firing rate (Hz) of each population over ``[t_start, t_stop)`` s (counting spikes)."""
        stop = self.duration if t_stop is None else t_stop
        if not 0 <= t_start < stop <= self.duration:
            raise ValueError(f"need 0 <= t_start < t_stop <= duration ({self.duration} s), "
                             f"got t_start={t_start}, t_stop={stop}")
        return {p: float(((t >= t_start) & (t < stop)).sum()) / self.sizes[p] / (stop - t_start)
                for p, (_, t) in self.spikes.items()}

    def to_neo(self, *, seed: int | None = None, description: str = "", max_per_population: int | None = None,
               t_start: float = 0.0):
        """A Neo Block with one Segment of SpikeTrains, one per neuron.

        Parameters
        ----------
        seed : int, optional
            Recorded in the Block annotations (default: the run's seed).
        description : str
        max_per_population : int, optional
            Keep only the first neurons of each population (NIX files of large runs).
        t_start : float
            Drop spikes before this time, s.

        Each SpikeTrain (s) is annotated ``area``, ``column``, ``population``, ``layer``,
        ``cell_type`` and ``neuron`` (index within its population); the Block records the
        backend, the settings (JSON) and the seed.
        """
        import neo

        if max_per_population is not None and max_per_population < 1:
            raise ValueError(f"max_per_population must be >= 1, got {max_per_population}")
        if not 0 <= t_start < self.duration:
            raise ValueError(f"t_start must lie in [0, {self.duration}) s, got {t_start}")
        run_seed = self.settings.get("seed", -1) if seed is None else seed
        backend = self.settings.get("backend", "?")
        block = neo.Block(name=f"{self.settings.get('name', 'spiking network')} ({backend})",
                          description=description, colplugin_version=__version__,
                          source=f"{backend} spiking", preset=str(self.settings.get("preset", "")),
                          seed=-1 if run_seed is None else int(run_seed),
                          settings=json.dumps(self.settings, default=str))
        seg = neo.Segment(name="spiking run", index=0)
        for name, n_all in self.sizes.items():
            idx, ts = self.spikes[name]
            keep = ts >= t_start
            idx, ts = idx[keep], ts[keep]
            n = n_all if max_per_population is None else min(n_all, max_per_population)
            order = np.lexsort((ts, idx))
            idx, ts = idx[order], ts[order]
            bounds = np.searchsorted(idx, np.arange(n + 1))
            ann = dict(self.annotations.get(name, {}))
            ann.setdefault("population", name)
            for i in range(n):
                seg.spiketrains.append(neo.SpikeTrain(ts[bounds[i]:bounds[i + 1]] * pq.s, t_start=t_start * pq.s,
                                                      t_stop=self.duration * pq.s, name=f"{name}[{i}]",
                                                      neuron=i, **ann))
        block.segments.append(seg)
        return block



def timing_summary(build: Sequence[float | None], simulate: Sequence[float | None],
                   model_seconds: float) -> dict[str, float | None]:
    """Build and simulation wall time of several spiking runs, summed.

    Parameters
    ----------
    build, simulate : sequence of float or None
        ``build_seconds`` and ``simulate_seconds`` of each run (:class:`SpikingResult`), s.
    model_seconds : float
        Simulated time of all runs together, s.

    Returns
    -------
    dict
        ``build_seconds`` and ``simulate_seconds`` (s, summed over the runs) and
        ``simulate_seconds_per_model_second`` (simulation wall time per second of simulated
        time); ``None`` where a run did not measure it.
    """
    b = None if any(x is None for x in build) else float(sum(build))
    s = None if any(x is None for x in simulate) else float(sum(simulate))
    per = s / model_seconds if s is not None and model_seconds > 0 else None
    return {"build_seconds": b, "simulate_seconds": s, "simulate_seconds_per_model_second": per}


def timing_md(timing: dict[str, Any], counts: tuple[str, str] = ("", "")) -> str:
    """The build and simulation time of spiking runs as a sentence (``""`` where not measured).

    Parameters
    ----------
    timing : dict
        With ``build_seconds``, ``simulate_seconds`` (s, summed over the runs) and
        ``simulate_seconds_per_model_second`` (:func:`timing_summary`);
        missing or ``None``: not measured.
    counts : (str, str)
        What the build and the simulation time count (the backend's
        :attr:`~colplugin.spiking.SpikingBackend.timing_counts`); empty: not said.
    """
    build, sim = timing.get("build_seconds"), timing.get("simulate_seconds")
    if build is None or sim is None:
        return ""
    what_build, what_sim = counts
    per = timing.get("simulate_seconds_per_model_second")
    return (f"Spiking runs in all: build {build:.2f} s" + (f" ({what_build})" if what_build else "")
            + f", simulation {sim:.2f} s" + (f" ({what_sim})" if what_sim else "")
            + (f"; {per:.3g} s of simulation per simulated second" if per is not None else "") + ".")
