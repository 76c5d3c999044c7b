"""Elephant-based statistics of spiking runs, and the rate-vs-spiking comparison.

All functions take Neo objects (``SpikeTrain``s annotated with ``population``) and use
Elephant: ``mean_firing_rate``, ``cv(isi(...))`` and ``correlation_coefficient`` on a
``BinnedSpikeTrain``. Published full-scale rates come from the ``pd14`` preset.

References
----------
.. [PD14] Potjans & Diesmann (2014), Cereb Cortex 24:785.
"""

from __future__ import annotations

import warnings
from typing import Any, Sequence

import numpy as np
import quantities as pq
import torch

from ..network import ColumnNetwork, Input
from ..params import load_preset
from ..params.names import POPULATIONS
from ..solve.fixed_points import resting_state

__all__ = ["neuron_rates", "population_statistics", "dmf_rates", "compare_rate_to_spiking", "comparison_table_md"]


def _seconds(trains: Sequence) -> list[np.ndarray]:
    """Spike times of each SpikeTrain in s as plain arrays (one unit conversion per unit, not per train)."""
    factors: dict[str, float] = {}
    out = []
    for st in trains:
        key = st.dimensionality.string
        if key not in factors:
            factors[key] = float(pq.Quantity(1.0, st.units).rescale(pq.s).magnitude)
        out.append(np.asarray(st.magnitude, dtype=float) * factors[key])
    return out


def _window(times: Sequence[np.ndarray], t_start: float, t_stop: float) -> list[np.ndarray]:
    return [t[(t >= t_start) & (t < t_stop)] for t in times]


def neuron_rates(trains: Sequence, t_start: float, t_stop: float) -> np.ndarray:
    """Elephant's mean firing rate (Hz) of each SpikeTrain over ``[t_start, t_stop)`` s.

    A neuron without spikes in the window fires at 0 Hz. The spike times enter Elephant as
    arrays in s (the same numbers as the SpikeTrains, without Neo's per-train slicing).
    """
    from elephant.statistics import mean_firing_rate  # lazy: start-up time (Elephant loads in seconds)

    cut = _window(_seconds(trains), t_start, t_stop)
    return np.array([float(mean_firing_rate(t, t_start, t_stop)) if len(t) else 0.0 for t in cut])


def population_statistics(block, t_start: float = 0.5, t_stop: float | None = None, *,
                          n_corr: int = 200, corr_bin: float = 5e-3, seed: int = 0) -> dict[str, dict[str, Any]]:
    """Per-population statistics of a Block of annotated SpikeTrains (first Segment).

    Returns, per population: ``rate`` (mean firing rate over all neurons, Hz), ``cv``
    (mean ISI CV over neurons with >= 3 spikes) and the CVs themselves, ``correlation``
    (mean pairwise spike-count correlation of up to ``n_corr`` active neurons, bins of
    ``corr_bin`` s), ``rate_sd`` (sd over neurons) and ``n_neurons``.
    """
    import neo  # lazy: start-up time (Neo and Elephant load in seconds)
    from elephant.conversion import BinnedSpikeTrain
    from elephant.spike_train_correlation import correlation_coefficient
    from elephant.statistics import cv, isi, mean_firing_rate

    seg = block.segments[0]
    if not seg.spiketrains:
        raise ValueError("the Block holds no spike trains; pass the result of a spiking run (to_neo())")
    rng = np.random.default_rng(seed)
    stop = t_stop if t_stop is not None else float(seg.spiketrains[0].t_stop.rescale("s"))
    out: dict[str, dict[str, Any]] = {}
    for pop in POPULATIONS:
        members = [st for st in seg.spiketrains if st.annotations.get("population") == pop]
        if not members:
            continue
        times = _window(_seconds(members), t_start, stop)
        rates = np.array([float(mean_firing_rate(t, t_start, stop)) if len(t) else 0.0 for t in times])
        cvs = np.array([cv(isi(t)) for t in times if len(t) >= 3])
        active = [t for t in times if len(t) > 0]
        corr = float("nan")
        if len(active) >= 2:
            pick = rng.choice(len(active), min(n_corr, len(active)), replace=False)
            # spikes lie on the simulation grid, so some sit on bin edges up to rounding; which neighbour bin
            # takes them does not matter for a correlation coefficient (tolerance=None: no per-train
            # "correcting rounding errors" log lines)
            picked = [neo.SpikeTrain(active[i], t_start=t_start, t_stop=stop, units="s") for i in pick]
            with warnings.catch_warnings():  # spikes in a last partial bin do not change a correlation
                warnings.filterwarnings("ignore", message="Binning discarded")
                binned = BinnedSpikeTrain(picked, bin_size=corr_bin * pq.s, tolerance=None)
            c = correlation_coefficient(binned)
            corr = float(np.nanmean(c[~np.eye(len(c), dtype=bool)]))
        out[pop] = {"rate": float(rates.mean()), "rate_sd": float(rates.std()), "n_neurons": len(members),
                    "cv": float(np.mean(cvs)) if len(cvs) else float("nan"), "cvs": cvs.tolist(),
                    "correlation": corr}
    return out


def dmf_rates(preset: str = "pd14", input_rate: float = 0.0) -> np.ndarray:
    """Fixed-point rates (Hz) of one DMF column (preset's default area) under a constant L4 input."""
    params = load_preset(preset)
    area = params.default_area
    net = ColumnNetwork(params, {area: (area, 1)}, [Input(area)])
    y = resting_state(net, u=[input_rate])
    with torch.no_grad():
        return net.rates(y)[0].numpy()


def compare_rate_to_spiking(spiking: dict[str, dict[str, Any]], dmf: Sequence[float],
                            published: Sequence[float] | None = None) -> list[dict[str, Any]]:
    """One row per population: spiking, DMF and published rates (Hz), spiking CV, relative deviations.

    Parameters
    ----------
    spiking : dict
        Per population (``population_statistics`` output, or the mean over seeds): ``rate``
        (Hz), ``cv``, ``correlation``; optional ``rate_seed_sd`` (sd of the rate over seeds,
        Hz) and ``rates_per_seed`` (Hz), copied to the rows.
    dmf : sequence of 8 floats
        DMF rates, Hz.
    published : sequence of 8 floats, optional
        Reference rates, Hz (default: the ``pd14`` preset's ``published_rates``).
    """
    published = load_preset("pd14")["published_rates"] if published is None else np.asarray(published, float)
    rows = []
    for p, pop in enumerate(POPULATIONS):
        s = spiking.get(pop, {})
        sr = s.get("rate", float("nan"))
        rows.append({"population": pop, "spiking_rate": sr, "dmf_rate": float(dmf[p]),
                     "published_rate": float(published[p]), "spiking_cv": s.get("cv", float("nan")),
                     "spiking_correlation": s.get("correlation", float("nan")),
                     "spiking_rate_seed_sd": s.get("rate_seed_sd", float("nan")),
                     "spiking_rates_per_seed": list(s.get("rates_per_seed", [sr])),
                     "spiking_vs_published": sr / published[p] - 1,
                     "dmf_vs_spiking": float(dmf[p]) / sr - 1 if sr else float("nan"),
                     "dmf_vs_published": float(dmf[p]) / published[p] - 1})
    return rows


def comparison_table_md(rows: list[dict[str, Any]]) -> str:
    """The comparison as a Markdown table."""
    lif = all("lif_rate" in r for r in rows)
    head = ("| population | spiking (Hz) | DMF (Hz) | " + ("LIF column (Hz) | " if lif else "")
            + "published (Hz) | spiking vs published | DMF vs spiking | " + ("LIF column vs spiking | " if lif else "")
            + "ISI CV |\n|---|---|---|---|---|---|---|" + ("---|---|" if lif else "") + "\n")

    def spk(r: dict[str, Any]) -> str:
        sd = r.get("spiking_rate_seed_sd", float("nan"))
        return f"{r['spiking_rate']:.3f}" + (f" ± {sd:.3f}" if np.isfinite(sd) else "")
    return head + "\n".join(
        f"| {r['population']} | {spk(r)} | {r['dmf_rate']:.3f} | " + (f"{r['lif_rate']:.3f} | " if lif else "")
        + f"{r['published_rate']:.3f} | {100 * r['spiking_vs_published']:+.1f} % | "
        + f"{100 * r['dmf_vs_spiking']:+.1f} % | "
        + (f"{100 * r['lif_vs_spiking']:+.1f} % | " if lif else "") + f"{r['spiking_cv']:.2f} |"
        for r in rows)
