"""Figures. Every function returns a :class:`matplotlib.figure.Figure` (never shows it)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from ._io import atomic_path
from .params.names import POPULATIONS as POPS

if TYPE_CHECKING:  # annotations only; matplotlib is imported when a figure is drawn
    from matplotlib.figure import Figure


__all__ = ["new_figure", "save_figure", "show", "plot_rates", "plot_training", "plot_weights", "plot_decision",
           "plot_figure2", "plot_overlay"]


def new_figure(**kwargs: Any) -> Figure:
    """A new :class:`~matplotlib.figure.Figure` (no pyplot state); matplotlib is imported by the first one."""
    from matplotlib.figure import Figure  # lazy: start-up time

    return Figure(**kwargs)


def save_figure(fig: Figure, path: Any, dpi: int = 110) -> Any:
    """Write a figure atomically (the format follows the file suffix) and return the path."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format=path.suffix[1:])
    return path


def show(fig: Figure) -> Any:
    """Hand a Figure of these functions to pyplot, which displays it (and sphinx-gallery, which draws it).

    The plotting functions return Figures that pyplot does not manage (they work without a
    display); in an interactive session or a gallery example, ``show(plot_rates(traj))``
    displays one. Returns the pyplot figure.
    """
    import matplotlib.pyplot as plt  # lazy: start-up time

    try:
        return plt.figure(fig)  # matplotlib >= 3.11 adopts a Figure made without pyplot
    except (ValueError, TypeError):  # older matplotlib: display a rendering of it
        from matplotlib.backends.backend_agg import FigureCanvasAgg  # lazy: start-up time

        canvas = FigureCanvasAgg(fig)
        canvas.draw()
        shown = plt.figure(figsize=fig.get_size_inches(), dpi=fig.dpi)
        shown.figimage(np.asarray(canvas.buffer_rgba()))
        return shown


def plot_rates(traj: Any, trial: int = 0, title: str | None = None, max_legend: int = 8) -> Figure:
    """Rates (Hz) of every population of every column, one panel per layer (E solid, I dashed).

    With more than ``max_legend`` columns the per-column legend collapses into one line
    that says how many columns are drawn (colours then repeat).
    """
    fig = new_figure(figsize=(10, 6), constrained_layout=True)
    axes = fig.subplots(2, 2, sharex=True).ravel()
    t = traj.t.detach().cpu().numpy()
    r = traj.rate[:, trial].detach().cpu().numpy()
    n_cols = traj.network.n_columns
    for ax, layer in zip(axes, ("L23", "L4", "L5", "L6")):
        for ch, info in enumerate(traj.network.channels):
            if info["layer"] != layer:
                continue
            ls = "-" if info["cell_type"] == "E" else "--"
            ax.plot(t, r[:, ch], ls, lw=1.0 if n_cols <= max_legend else 0.5,
                    label=f"{info['area']}[{info['column']}] {info['population']}")
        ax.set_title(layer.replace("L23", "L2/3"))
        ax.set_ylabel("rate (Hz)")
        if n_cols <= max_legend:
            ax.legend(fontsize=6)
        else:
            ax.text(0.99, 0.97, f"{n_cols} columns (E solid, I dashed)", transform=ax.transAxes, ha="right",
                    va="top", fontsize=7)
    for ax in axes[2:]:
        ax.set_xlabel("time (s)")
    if title:
        fig.suptitle(title)
    return fig


def plot_training(metrics_by_seed: dict[Any, list[dict]], key: str = "test_accuracy",
                  title: str = "Test accuracy per update") -> Figure:
    """One line per initialisation (dL25 Figure 1B style)."""
    fig = new_figure(figsize=(6, 4), constrained_layout=True)
    ax = fig.subplots()
    for seed, rows in metrics_by_seed.items():
        xs = [0] + [r["update"] for r in rows]
        ys = [rows[0].get("initial_" + key, np.nan)] + [r.get(key, np.nan) for r in rows]
        ax.plot(xs[1:], ys[1:], marker=".", label=f"seed {seed}")
    ax.set_xlabel("update")
    ax.set_ylabel(key.replace("_", " "))
    ax.set_title(title)
    if len(metrics_by_seed) <= 12:
        ax.legend(fontsize=7)
    return fig


def plot_weights(network: Any, title: str = "Learned inter-column weights") -> Figure:
    """A Figure 1A-like diagram: inputs and columns as nodes, learned weights as arrows.

    Arrow width grows with ``|w|`` (nA; a legend gives the scale); as in dL25 Figure 1A, blue
    arrows target E populations, red ones I.
    """
    fig = new_figure(figsize=(7, 5), constrained_layout=True)
    ax = fig.subplots()
    cols = sorted({c["area"] + f"[{c['column']}]" for c in network.channels},
                  key=lambda s: (list(network.areas).index(s.split("[")[0]), s))
    levels = {a: i + 1 for i, a in enumerate(network.areas)}
    pos: dict[str, tuple[float, float]] = {}
    for a in network.areas:
        members = [c for c in cols if c.startswith(a + "[")]
        for j, c in enumerate(members):
            pos[c] = ((j + 1) / (len(members) + 1), levels[a])
    for k in range(network.n_inputs):
        pos[f"input[{k}]"] = ((k + 1) / (network.n_inputs + 1), 0)
    wmax = 1e-12
    edges = []
    for name in network.slices:
        pw = network.projection_weights(name)
        for w, s, t in zip(pw["weight"], pw["source"], pw["target"]):
            src = s.split(".")[0]
            tgt, tpop = t.split(".")
            edges.append((src, tgt, tpop, float(w)))
            wmax = max(wmax, abs(float(w)))
    for src, tgt, tpop, w in edges:
        (x0, y0), (x1, y1) = pos[src], pos[tgt]
        off = 0.02 if tpop.endswith("I") else -0.02
        color = "tab:red" if tpop.endswith("I") else "tab:blue"
        if src == tgt:
            ax.annotate("", xy=(x1 + 0.05, y1 + 0.05), xytext=(x0 + 0.05, y0 - 0.05),
                        arrowprops=dict(arrowstyle="->", lw=0.5 + 4 * abs(w) / wmax, color=color,
                                        connectionstyle="arc3,rad=1.5"))
        else:
            ax.annotate("", xy=(x1 + off, y1 - 0.12), xytext=(x0 + off, y0 + 0.12),
                        arrowprops=dict(arrowstyle="->", lw=0.5 + 4 * abs(w) / wmax, color=color))
    for name, (x, y) in pos.items():
        ax.text(x, y, name, ha="center", va="center", fontsize=9,
                bbox=dict(boxstyle="round", fc="white" if name.startswith("input") else "lightgrey"))
    ax.set_xlim(0, 1)
    ax.set_ylim(-0.5, max(levels.values()) + 0.5)
    ax.axis("off")
    from matplotlib.lines import Line2D  # lazy: start-up time

    scale = [Line2D([], [], color="tab:blue", lw=0.5 + 4 * f, label=f"{f * wmax:.3g} nA") for f in (1.0, 0.5, 0.1)]
    scale += [Line2D([], [], color="tab:blue", lw=2, label="onto E"), Line2D([], [], color="tab:red", lw=2,
                                                                               label="onto I")]
    ax.legend(handles=scale, loc="upper right", fontsize=7, title="line width", title_fontsize=7)
    ax.set_title(title + "  (blue: onto E, red: onto I; width ~ |w|)")
    return fig


def plot_decision(t: np.ndarray, rates: np.ndarray, evidence: Sequence[float], winner: np.ndarray,
                  title: str = "E rates per layer (winner solid, loser dashed)") -> Figure:
    """dL25 Figure 2: E rates of every layer for each evidence level.

    Parameters
    ----------
    t : (T,) s
    rates : (T, n_levels, 2 columns, 4 layers) Hz, excitatory populations
    evidence : n_levels values of c (Hz)
    winner : (n_levels,) index of the winning column
    """
    import matplotlib as mpl  # lazy: start-up time

    cmap = mpl.colormaps["viridis"]
    colors = [cmap(k / max(1, len(evidence) - 1)) for k in range(len(evidence))]
    return _winner_loser_panels(t, rates, evidence, winner, colors, ("L2/3E", "L4E", "L5E", "L6E"), "rate (Hz)",
                                title)


def _winner_loser_panels(t: np.ndarray, rates: np.ndarray, evidence: Sequence[float], winner: np.ndarray,
                         colors: Sequence[Any], layers: Sequence[str], ylabel: str, title: str,
                         stimulus: tuple[float, float] | None = None, sharey: bool = False) -> Figure:
    """Four panels (one per layer) of both columns' rates per evidence level: winner solid, loser dashed."""
    fig = new_figure(figsize=(11, 7), constrained_layout=True)
    axes = fig.subplots(2, 2, sharex=True, sharey=sharey).ravel()
    for li, (ax, layer) in enumerate(zip(axes, layers)):
        if stimulus is not None:
            ax.axvspan(stimulus[0], stimulus[1], color="0.92", zorder=0)
        for k, c in enumerate(evidence):
            w = int(winner[k])
            ax.plot(t, rates[:, k, w, li], "-", color=colors[k], lw=1.2, label=f"c = {c:g} Hz" if li == 0 else None)
            ax.plot(t, rates[:, k, 1 - w, li], "--", color=colors[k], lw=1.0)
        ax.set_title(layer)
        ax.set_ylabel(ylabel)
    for ax in axes[2:]:
        ax.set_xlabel("time (s)")
    axes[0].legend(fontsize=6, ncol=2)
    fig.suptitle(title)
    return fig


def plot_figure2(t: np.ndarray, layer_rates: np.ndarray, evidence: Sequence[float], winner: np.ndarray,
                 stimulus: tuple[float, float] | None = None,
                 title: str = "Normalised layer rates (winner solid, loser dashed)") -> Figure:
    """dL25 Figure 2 as the paper draws it: one panel per layer, rates normalised, evidence in colour.

    Parameters
    ----------
    t : (T,) s
    layer_rates : (T, n_levels, 2 columns, 4 layers)
        Each layer's rate (mean of its E and I populations), normalised to [0, 1] per layer.
    evidence : n_levels values of c (Hz), coloured from high (red) to low (purple)
    winner : (n_levels,) index of the winning column (solid; the loser dashed)
    stimulus : (on, off) s, optional
        Shaded.
    """
    import matplotlib as mpl  # lazy: start-up time

    cmap = mpl.colormaps["rainbow"]  # purple (low) ... red (high)
    top = max(float(np.max(evidence)), 1e-12)
    return _winner_loser_panels(t, layer_rates, evidence, winner, [cmap(float(c) / top) for c in evidence],
                                ("L2/3", "L4", "L5", "L6"), "normalised rate", title, stimulus, sharey=True)


def _input_pattern(stimulus: Any, trial: int) -> str:
    """``"inputs 0-0.5 s: [0, 0] Hz; from 0.5 s: [20, 20] Hz"`` of one trial of a Stimulus."""
    if stimulus is None or not stimulus.n_inputs:
        return "no input"
    times = stimulus.times.detach().cpu().numpy()
    rates = stimulus.rates[trial if stimulus.batch_size > 1 else 0].detach().cpu().numpy()
    parts = []
    for k, t0 in enumerate(times):
        when = f"{t0:g}-{times[k + 1]:g} s" if k + 1 < len(times) else f"from {t0:g} s"
        parts.append(f"{when}: [{', '.join(f'{x:.3g}' for x in rates[k])}] Hz")
    return "inputs " + "; ".join(parts)


def plot_overlay(traj: Any, run: Any, trial: int = 0, max_columns: int = 12) -> Figure:
    """Torch (solid) and Brian2 (dashed) rates: one panel per column, one colour per population.

    The title gives the trial's input pattern; one legend (the eight populations) serves
    every panel, so it fits however many columns there are. Networks with more than
    ``max_columns`` columns show the first ``max_columns``.
    """
    net = traj.network
    t = traj.t.detach().cpu().numpy()
    r = traj.rate[:, trial].detach().cpu().numpy()
    n = min(len(t), len(run.t))
    rb = run.trial_rates[:, trial if run.n_trials > 1 else 0]
    cols = [(c["area"], c["column"]) for c in net.channels[::len(POPS)]][:max_columns]
    ncol = min(3, len(cols))
    nrow = -(-len(cols) // ncol)
    fig = new_figure(figsize=(4.2 * ncol, 2.9 * nrow + 0.6), constrained_layout=True)
    axes = fig.subplots(nrow, ncol, sharex=True, squeeze=False).ravel()
    for ax, (area, col) in zip(axes, cols):
        for p, pop in enumerate(POPS):
            i = net.index(area, col, pop)
            ax.plot(t[:n], r[:n, i], lw=1.0, color=f"C{p}", label=pop)
            ax.plot(run.t[:n], rb[:n, i], "--", lw=1.0, color=f"C{p}")
        ax.set_yscale("symlog", linthresh=0.1)
        ax.set_title(f"{area}[{col}]", fontsize=9)
        ax.set_ylabel("rate (Hz)")
    for ax in axes[len(cols):]:
        ax.set_visible(False)
    for ax in axes[-ncol:]:
        ax.set_xlabel("time (s)")
    more = f" (first {max_columns} of {net.n_columns} columns)" if net.n_columns > max_columns else ""
    fig.suptitle(f"trial {trial}, {_input_pattern(traj.stimulus, trial)} - torch solid, Brian2 dashed{more}",
                 fontsize=9)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=len(POPS), fontsize=7)
    return fig
