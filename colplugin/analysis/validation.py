"""Validation of the DMF column against the spiking PD14 microcircuit (Brian2 + Elephant)."""

from __future__ import annotations

import json
import resource
import time
from pathlib import Path
from typing import Any

import numpy as np

from .._io import atomic_write_text
from ..params.names import POPULATIONS

__all__ = ["validate_microcircuit", "validate_stimulus"]


def validate_microcircuit(out: str | Path, scale: float = 0.1, duration: float = 2.5, *, transient: float = 0.5,
                          k_scale: float | None = 0.5, seed: int = 0, device: str = "cpp_standalone",
                          progress: bool = True, nix_neurons: int = 100) -> dict[str, Any]:
    """Run the spiking microcircuit and the ``pd14`` DMF column, compare them, write a report.

    Writes ``report.md``, ``comparison.json`` (one object per population: population,
    spiking_rate, dmf_rate, published_rate, spiking_cv, ...), figures (raster, rates by
    population, CV histograms, DMF vs spiking bars) and NIX files of both runs
    (``spiking.nix`` keeps the first ``nix_neurons`` neurons of each population;
    statistics use all neurons).
    """
    import torch

    from .._version import __version__
    from . import compare_rate_to_spiking, comparison_table_md, dmf_rates, population_statistics
    from ..spiking.microcircuit import simulate_microcircuit
    from ..export.neo import save_nix, to_neo
    from ..network import ColumnNetwork
    from ..params import load_preset
    from ..plotting import plot_validation, save_figure
    from ..solve.simulate import simulate
    from .fixed_points import resting_state

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if progress:
        print(f"spiking PD14 microcircuit: scale {scale}, k {k_scale}, {duration} s (Brian2 {device}) ...", flush=True)
    res = simulate_microcircuit(scale, duration, k_scale=k_scale, seed=seed, device=device)
    block = res.to_neo()
    stats = population_statistics(block, t_start=transient)
    params = load_preset("pd14")
    dmf = dmf_rates("pd14")
    rows = compare_rate_to_spiking(stats, dmf)
    atomic_write_text(out / "comparison.json", json.dumps(rows, indent=2))
    # NIX files of both runs
    small = res.to_neo(max_per_population=nix_neurons)
    save_nix(small, out / "spiking.nix")
    net = ColumnNetwork(params, {"pd14": ("pd14", 1)})
    with torch.no_grad():
        traj = simulate(net, duration=duration, dt_out=1e-3, y0=resting_state(net))
    save_nix(to_neo(traj, seed=seed), out / "dmf.nix")
    save_figure(plot_validation(res, stats, rows, transient), out / "rates.png")
    wall = time.perf_counter() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    within20 = all(abs(r["spiking_vs_published"]) <= 0.2 for r in rows)
    within30 = all(abs(r["dmf_vs_spiking"]) <= 0.3 for r in rows)
    order = all(rows[i + 1]["dmf_rate"] > rows[i]["dmf_rate"] for i in range(0, 8, 2))
    table = comparison_table_md(rows)
    s = res.settings
    md = (f"# Rate model vs spiking PD14 microcircuit\n\n"
          f"Spiking: Brian2 {s['device']}, scale {s['scale']} ({s['n_neurons']} neurons, {s['n_synapses']} synapses, "
          f"in-degree scale k = {s['k_scale']}), {s['background']} background, seed {s['seed']}, {duration} s "
          f"(statistics after a {transient} s transient). DMF: one column with the `pd14` preset (fixed point).\n\n"
          + table + "\n\n"
          f"- every spiking rate within 20 % of the published full-scale rates: **{within20}**\n"
          f"- every DMF rate within 30 % of the spiking rate: **{within30}**\n"
          f"- DMF keeps inhibitory above excitatory in every layer: **{order}**\n"
          f"- mean ISI CV (asynchronous-irregular: 0.7-1.2): "
          + ", ".join(f"{r['population']} {r['spiking_cv']:.2f}" for r in rows) + "\n"
          f"- wall time {wall:.1f} s (spiking build+compile+run {res.wall_seconds['total']:.1f} s), "
          f"peak memory {peak_mb:.0f} MB; colplugin {__version__}\n\n![rates](rates.png)\n")
    atomic_write_text(out / "report.md", md)
    return {"rows": rows, "table_md": table, "within20": within20, "within30": within30, "ordering": order,
            "wall_seconds": wall, "peak_mb": peak_mb, "settings": s}


def validate_stimulus(out: str | Path, scale: float = 0.1, rate: float = 8.0, *, duration: float = 1.5,
                      t_on: float = 0.75, k_scale: float | None = 0.5, seed: int = 0,
                      device: str = "cpp_standalone") -> dict[str, Any]:
    """Drive L4 of both models with a step of thalamic input and compare each population's response.

    The DMF column gets ``rate`` Hz on its input channel (weights K_in J_E); the spiking
    circuit gets PD14's thalamic population (3000 Poisson neurons at ``rate`` from ``t_on``,
    295 synapses onto each L4E and 186 onto each L4I neuron on average). Reported: per population the rate change in both models,
    whether its direction agrees, and the rank correlation of the changes.
    """
    from scipy.stats import spearmanr

    from . import dmf_rates
    from ..spiking.microcircuit import simulate_microcircuit

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    res = simulate_microcircuit(scale, duration, k_scale=k_scale, seed=seed, device=device,
                                thalamic=(rate, t_on))
    before, after = [], []
    for p, pop in enumerate(POPULATIONS):
        _, ts = res.spikes[pop]
        n = res.N[p]
        before.append(((ts >= 0.25) & (ts < t_on)).sum() / n / (t_on - 0.25))
        after.append(((ts >= t_on + 0.25) & (ts < duration)).sum() / n / (duration - t_on - 0.25))
    d_spk = np.array(after) - np.array(before)
    d_dmf = dmf_rates("pd14", rate) - dmf_rates("pd14", 0.0)
    agree = np.sign(d_spk) == np.sign(d_dmf)
    rho = float(spearmanr(d_spk, d_dmf).statistic)
    rows = [{"population": pop, "spiking_change_hz": float(d_spk[p]), "dmf_change_hz": float(d_dmf[p]),
             "same_direction": bool(agree[p])} for p, pop in enumerate(POPULATIONS)]
    result = {"input_rate_hz": rate, "rows": rows, "directions_agree": int(agree.sum()), "spearman_rho": rho,
              "settings": res.settings}
    atomic_write_text(out / "stimulus.json", json.dumps(result, indent=2))
    md = ("# Step input to L4: DMF vs spiking\n\n| population | spiking change (Hz) | DMF change (Hz) | same direction |\n"
          "|---|---|---|---|\n" + "\n".join(f"| {r['population']} | {r['spiking_change_hz']:+.3f} | "
                                              f"{r['dmf_change_hz']:+.3f} | {r['same_direction']} |" for r in rows)
          + f"\n\nDirections agree in {int(agree.sum())}/8 populations; Spearman rank correlation of the changes "
            f"{rho:.2f}.\n")
    atomic_write_text(out / "report.md", md)
    return result
