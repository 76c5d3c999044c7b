"""Figures of spiking runs and of the rate-vs-spiking validation.

Every function returns a :class:`matplotlib.figure.Figure` (never shows it);
:func:`save_figure` writes one atomically.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from ..params.names import POPULATIONS
from ..plotting import new_figure, save_figure

if TYPE_CHECKING:  # annotations only; matplotlib is imported when a figure is drawn
    from matplotlib.figure import Figure

__all__ = ["save_figure", "plot_raster", "plot_validation", "plot_backend_rates", "plot_twin_rasters",
           "plot_twin_overlay", "plot_twin_rates"]


def plot_raster(ax: Any, result: Any, t_from: float, t_to: float, n_show: int = 100,
                populations: Sequence[str] | None = None) -> None:
    """Raster of the first ``n_show`` neurons of each population of a SpikingResult on ``ax``."""
    offset = 0
    pops = list(result.sizes) if populations is None else list(populations)
    for pop in pops:
        idx, ts = result.spikes[pop]
        n = min(result.sizes[pop], n_show)
        sel = (idx < n) & (ts >= t_from) & (ts < t_to)
        color = "tab:red" if result.annotations.get(pop, {}).get("cell_type", pop[-1]) == "E" else "tab:blue"
        ax.plot(ts[sel], offset + idx[sel], ",", color=color)
        ax.text(t_from - 0.005 * (t_to - t_from), offset + n / 2, pop, ha="right", va="center", fontsize=7)
        offset += n
    ax.set_xlim(t_from, t_to)
    ax.set_ylim(offset, 0)
    ax.set_xlabel("time (s)")
    ax.set_yticks([])


def plot_validation(result: Any, stats: dict, rows: list[dict], transient: float = 0.5) -> Figure:
    """Raster, rates by population (published, DMF, spiking with its sd over seeds), ISI CVs, DMF vs spiking.

    Parameters
    ----------
    result : SpikingResult
        One spiking run (for the raster).
    stats : dict
        ``population_statistics`` of that run (for the CV histograms).
    rows : list of dict
        ``compare_rate_to_spiking`` output (rates averaged over seeds).
    transient : float
        Start of the raster window, s.
    """
    fig = new_figure(figsize=(12, 8), constrained_layout=True)
    (ax_r, ax_b), (ax_c, ax_d) = fig.subplots(2, 2)
    plot_raster(ax_r, result, transient, min(transient + 0.2, result.duration), populations=POPULATIONS)
    ax_r.set_title("raster (100 neurons per population)")
    x = np.arange(len(POPULATIONS))
    backend = result.settings.get("backend", "spiking")
    sd = [r.get("spiking_rate_seed_sd", float("nan")) for r in rows]
    n_seeds = len(rows[0].get("spiking_rates_per_seed", [0])) if rows else 1
    lif = bool(rows) and all("lif_rate" in r for r in rows)
    bars = [("spiking_rate", f"spiking ({backend}, {n_seeds} seed{'s' if n_seeds > 1 else ''})"),
            ("dmf_rate", "DMF column (pd14)")] + ([("lif_rate", "LIF mean-field column (pd14_lif)")] if lif else []) \
        + [("published_rate", "published (PD14/NEST)")]
    width = 0.8 / len(bars)
    for k, (key, label) in enumerate(bars):
        ax_b.bar(x + (k - (len(bars) - 1) / 2) * width, [r[key] for r in rows], width, label=label,
                 **({"yerr": None if not np.all(np.isfinite(sd)) else sd, "capsize": 2} if k == 0 else {}))
    ax_b.set_xticks(x, POPULATIONS)
    ax_b.set_ylabel("rate (Hz)")
    ax_b.legend(fontsize=7)
    ax_b.set_title("rates by population")
    for p, pop in enumerate(POPULATIONS):
        cvs = stats.get(pop, {}).get("cvs", [])
        if cvs:
            ax_c.hist(cvs, bins=30, range=(0, 2), histtype="step", label=pop, color=f"C{p}")
    ax_c.axvspan(0.7, 1.2, color="grey", alpha=0.15)
    ax_c.set_xlabel("ISI CV")
    ax_c.legend(fontsize=6)
    ax_c.set_title("ISI CV per neuron (grey: asynchronous-irregular range)")
    colors = ["tab:red" if p.endswith("E") else "tab:blue" for p in POPULATIONS]
    if lif:
        ax_d.bar(x - 0.2, [100 * r["dmf_vs_spiking"] for r in rows], 0.4, color=colors, label="DMF")
        ax_d.bar(x + 0.2, [100 * r["lif_vs_spiking"] for r in rows], 0.4, color=colors, hatch="//", alpha=0.6,
                 label="LIF column")
        ax_d.legend(fontsize=7)
    else:
        ax_d.bar(x, [100 * r["dmf_vs_spiking"] for r in rows], color=colors)
    ax_d.axhspan(-30, 30, color="grey", alpha=0.15)
    ax_d.set_xticks(x, POPULATIONS)
    ax_d.set_ylabel("column vs spiking (%)")
    ax_d.set_title("relative deviation of the rate columns (grey: +/- 30 %)")
    return fig


def plot_backend_rates(rates: dict[str, np.ndarray], published: Sequence[float] | None = None) -> Figure:
    """Population rates per backend: bars of the mean over seeds with the seeds as dots.

    Parameters
    ----------
    rates : dict
        ``{backend label: array (seeds, 8)}`` of rates, Hz.
    published : sequence of 8 floats, optional
        Reference rates drawn as black ticks, Hz.
    """
    fig = new_figure(figsize=(9, 4), constrained_layout=True)
    ax = fig.subplots()
    x = np.arange(len(POPULATIONS))
    width = 0.8 / max(1, len(rates))
    for k, (label, r) in enumerate(rates.items()):
        r = np.atleast_2d(np.asarray(r, float))
        pos = x - 0.4 + width * (k + 0.5)
        ax.bar(pos, r.mean(0), width, label=label, color=f"C{k}", alpha=0.7)
        for row in r:
            ax.plot(pos, row, ".", color="k", ms=3)
    if published is not None:
        ax.plot(x, published, "_", color="k", ms=14, mew=2, label="published")
    ax.set_xticks(x, POPULATIONS)
    ax.set_ylabel("rate (Hz)")
    ax.legend(fontsize=8)
    return fig


def _column_groups(names: Sequence[str]) -> dict[str, list[int]]:
    """Channel indices by column label (``"area[c]"`` of ``"area[c].POP"``), in order."""
    groups: dict[str, list[int]] = {}
    for i, name in enumerate(names):
        groups.setdefault(name.rsplit(".", 1)[0], []).append(i)
    return groups


def plot_twin_rasters(result: Any, t_from: float, t_to: float, n_show: int = 50, title: str = "") -> Figure:
    """Rasters of a spiking twin's run, one panel per column (``n_show`` neurons per population).

    Parameters
    ----------
    result : SpikingResult
        One trial of a twin (populations named ``"area[c].POP"``).
    t_from, t_to : float
        Time window, s.
    n_show : int
        Neurons shown per population.
    title : str
    """
    groups = _column_groups(result.populations)
    fig = new_figure(figsize=(4.2 * len(groups), 4.5), constrained_layout=True)
    axes = np.atleast_1d(fig.subplots(1, len(groups), sharey=False))
    names = result.populations
    for ax, (col, idx) in zip(axes, groups.items()):
        pops = [names[i] for i in idx]
        plot_raster(ax, result, t_from, t_to, n_show=n_show, populations=pops)
        for txt, pop in zip(ax.texts, pops):
            txt.set_text(pop.rsplit(".", 1)[1])
        ax.set_title(col)
    if title:
        fig.suptitle(title)
    return fig


def plot_twin_overlay(t_dmf: np.ndarray, dmf: np.ndarray, t_spk: np.ndarray, spk: np.ndarray,
                      names: Sequence[str], window: tuple[float, float] | None = None, title: str = "") -> Figure:
    """DMF rates (lines) and a spiking twin's binned population rates (steps) over time, one panel per column.

    Parameters
    ----------
    t_dmf : array (T,)
        Times of the DMF rates, s.
    dmf : array (T, P)
        DMF rates, Hz, one column per population (``names``).
    t_spk : array (T',)
        Bin centres of the spiking rates, s.
    spk : array (T', P)
        Spiking population rates per bin (mean over trials), Hz.
    names : sequence of str
        Population names ``"area[c].POP"``.
    window : (float, float), optional
        The read-out window, shaded.
    title : str
    """
    groups = _column_groups(names)
    fig = new_figure(figsize=(4.2 * len(groups), 4.0), constrained_layout=True)
    axes = np.atleast_1d(fig.subplots(1, len(groups), sharey=True))
    for ax, (col, idx) in zip(axes, groups.items()):
        for k, i in enumerate(idx):
            pop = names[i].rsplit(".", 1)[1]
            ax.plot(t_dmf, dmf[:, i], color=f"C{k}", lw=1.5, label=pop)
            ax.step(t_spk, spk[:, i], where="mid", color=f"C{k}", lw=0.7, alpha=0.8)
        if window is not None:
            ax.axvspan(*window, color="grey", alpha=0.15)
        ax.set_title(f"{col} (lines: DMF, steps: spiking)", fontsize=9)
        ax.set_xlabel("time (s)")
        ax.set_yscale("symlog", linthresh=1.0)
    axes[0].set_ylabel("rate (Hz)")
    axes[-1].legend(fontsize=7, ncol=2)
    if title:
        fig.suptitle(title)
    return fig


def plot_twin_rates(dmf: np.ndarray, spk: np.ndarray, spk_sd: np.ndarray, names: Sequence[str],
                    title: str = "") -> Figure:
    """Spiking against DMF rate of every population and condition in the read-out window (one panel per column).

    Parameters
    ----------
    dmf, spk, spk_sd : array (conditions, P)
        DMF rate, spiking rate (mean over trials) and its sd over trials, Hz.
    names : sequence of str
        Population names ``"area[c].POP"``.
    title : str
    """
    groups = _column_groups(names)
    fig = new_figure(figsize=(3.8 * len(groups), 3.8), constrained_layout=True)
    axes = np.atleast_1d(fig.subplots(1, len(groups)))
    dmf, spk, spk_sd = (np.atleast_2d(np.asarray(a, float)) for a in (dmf, spk, spk_sd))
    hi = max(1.0, float(np.nanmax([dmf.max(), spk.max()]))) * 1.5
    lo = 0.05
    for ax, (col, idx) in zip(axes, groups.items()):
        ax.plot([lo, hi], [lo, hi], color="k", lw=0.7)
        ax.fill_between([lo, hi], [0.7 * lo, 0.7 * hi], [1.3 * lo, 1.3 * hi], color="grey", alpha=0.15)
        for k, i in enumerate(idx):
            ax.errorbar(np.maximum(dmf[:, i], lo), np.maximum(spk[:, i], lo), yerr=spk_sd[:, i], fmt="o", ms=4,
                        color=f"C{k}", label=names[i].rsplit(".", 1)[1], capsize=2)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        ax.set_xlabel("DMF rate (Hz)")
        ax.set_title(col, fontsize=9)
    axes[0].set_ylabel("spiking rate (Hz; grey: +/- 30 %)")
    axes[-1].legend(fontsize=7, ncol=2)
    if title:
        fig.suptitle(title)
    return fig
