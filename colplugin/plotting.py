"""Figures. Every function returns a :class:`matplotlib.figure.Figure` (never shows it)."""

from __future__ import annotations

from typing import Any

import numpy as np
from matplotlib.figure import Figure

from .populations import LAYERS, POPULATIONS

__all__ = ["plot_rates"]


def plot_rates(traj: Any, trial: int = 0, title: str | None = None) -> Figure:
    """Rates (Hz) of every population of every column, one panel per layer."""
    fig = Figure(figsize=(10, 6), constrained_layout=True)
    axes = fig.subplots(2, 2, sharex=True).ravel()
    t = traj.t.detach().cpu().numpy()
    r = traj.rate[:, trial].detach().cpu().numpy()
    for ax, layer in zip(axes, ("L23", "L4", "L5", "L6")):
        for ch, info in enumerate(traj.network.channels):
            if info["layer"] != layer:
                continue
            ls = "-" if info["cell_type"] == "E" else "--"
            ax.plot(t, r[:, ch], ls, label=f"{info['area']}[{info['column']}] {info['population']}")
        ax.set_title(layer.replace("L23", "L2/3"))
        ax.set_ylabel("rate (Hz)")
        ax.legend(fontsize=6)
    for ax in axes[2:]:
        ax.set_xlabel("time (s)")
    if title:
        fig.suptitle(title)
    return fig
