"""The paper's experiments end to end: train, evaluate, write run directories and figures."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ._io import atomic_write_text
from .populations import pop_index
from .simulate import simulate
from .stimulus import Stimulus
from .tasks import get_task
from .train import TrainResult, train

__all__ = ["train_run", "figure2", "reproduce_xor"]


def _save_fig(fig, path: Path) -> None:
    from ._io import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format=path.suffix[1:])


def train_run(task_name: str, seed: int, out: Path, *, updates: int | None = None, gradient: str = "adjoint",
              lr: float | None = None, progress: bool = True, resume: bool = False) -> TrainResult:
    """Train one seed of a paper task into ``out`` (checkpoint, metrics, parameters, figures)."""
    from .plotting import plot_training, plot_weights

    task = get_task(task_name)
    defaults = {"xor": (50, 0.05), "decision": (60, 0.05)}[task_name]
    updates = updates or defaults[0]
    lr = lr or defaults[1]
    net = task.build_network(seed=seed)
    out.mkdir(parents=True, exist_ok=True)
    net.params.save(out / "params.json")
    atomic_write_text(out / "network.json", json.dumps(net.spec(), indent=2))
    res = train(net, task, updates, gradient=gradient, lr=lr, seed=seed, out=out, progress=progress,
                resume=resume, stop_at_accuracy=1.0 if task_name == "xor" else None)
    _save_fig(plot_training({seed: res.metrics}, title=f"{task_name}: test accuracy per update"),
              out / "training.png")
    _save_fig(plot_weights(net), out / "weights.png")
    if task_name == "xor":
        from .tasks.xor import truth_table

        atomic_write_text(out / "interpretation.json", json.dumps(truth_table(net, task), indent=2))
    else:
        figure2(net, task, out)
    return res


def figure2(net, task, out: Path, evidence: np.ndarray | None = None) -> dict[str, Any]:
    """dL25 Figure 2 protocol: mu_A = 20 Hz, mu_B = 20 - c, c = 0, 2, ..., 20; stimulus held."""
    from .plotting import plot_decision

    c = np.arange(0, 21, 2.0) if evidence is None else np.asarray(evidence, dtype=float)
    mu = torch.tensor(np.stack([np.full_like(c, 20.0), 20.0 - c], 1))
    z = torch.zeros_like(mu)
    stim = Stimulus([0.0, task.phase], torch.stack([z, mu], 1))
    with torch.no_grad():
        traj = simulate(net, stim, task.duration, dt_out=task.dt_out, solver=task.solver)
    E = [pop_index(p) for p in ("L23E", "L4E", "L5E", "L6E")]
    idx = [[net.index("mt", col, p) for p in E] for col in (0, 1)]
    rates = traj.rate[..., idx].numpy()  # (T, levels, 2 columns, 4 layers)
    t = traj.t.numpy()
    end = rates[-1, :, :, 0]
    winner = np.argmax(end, axis=1)
    sep = np.abs(rates[:, :, 0, 0] - rates[:, :, 1, 0])  # L2/3E separation (T, levels)
    onset = []
    for k in range(len(c)):
        above = np.nonzero((t > task.phase) & (sep[:, k] > 0.5 * max(sep[-1, k], 1e-12)))[0]
        onset.append(float(t[above[0]] - task.phase) if len(above) and sep[-1, k] > 1e-3 else None)
    numbers = {"evidence_hz": c.tolist(), "t_s": t.tolist(), "winner_column": winner.tolist(),
               "stronger_input_wins": [bool(w == 0) for w in winner[1:]],
               "final_L23E_separation_hz": sep[-1].tolist(), "half_separation_time_s": onset,
               "final_rates_hz": {lay: rates[-1, :, :, i].tolist() for i, lay in enumerate(("L23E", "L4E", "L5E", "L6E"))},
               "rates_hz": rates.tolist()}
    atomic_write_text(out / "figure2.json", json.dumps(numbers))
    _save_fig(plot_decision(t, rates, c, winner), out / "figure2.png")
    return numbers


def reproduce_xor(seeds: int, out: Path, progress: bool = True, gradient: str = "adjoint") -> dict[str, Any]:
    """Train ``seeds`` XOR networks and draw dL25 Figure 1B (test accuracy per update)."""
    from .plotting import plot_training

    by_seed = {}
    summary = []
    for s in range(seeds):
        res = train_run("xor", s, out / f"seed{s}", progress=progress, gradient=gradient)
        by_seed[s] = res.metrics
        summary.append(res.summary)
    _save_fig(plot_training(by_seed, title="XOR: test accuracy per update (one line per seed)"),
              out / "figure1b.png")
    solved = [s for s in summary if (s["final_accuracy"] or 0) >= 1.0]
    result = {"seeds": seeds, "solved": len(solved),
              "updates_to_solve": [s["updates"] for s in solved],
              "total_wall_seconds": sum(s["wall_seconds"] for s in summary), "runs": summary}
    atomic_write_text(out / "summary.json", json.dumps(result, indent=2))
    return result
