"""XOR with three MT columns (dL25, Figure 1).

Columns A and B (area ``lower``, N/2 each) receive the two inputs through learnable
weights onto L4E and L4I; their L2/3E drive L4E/L4I of column C (area ``upper``, full N)
through learnable feedforward weights. A trial is 0.5 s without input, then 0.5 s with
``x_k`` in {0, 1} given as 0 Hz or 20 Hz * U(0.975, 1.025). The output is C's final
L2/3E rate: class 1 when it exceeds the midpoint between the two target rates.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import torch

from .._io import atomic_write_text
from ..network import ColumnNetwork, Feedforward, Input
from ..params import Params, load_preset
from ..solve.simulate import Solver, Trajectory
from ..stimulus import Stimulus
from ..training.settings import TrainSettings
from ..training.task import Batch, Task, register_task

__all__ = ["XOR", "PATTERNS", "truth_table"]

#: The four input patterns (x1, x2), in the order 00, 01, 10, 11.
PATTERNS = torch.tensor([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=torch.float64)


@register_task
class XOR(Task):
    """The dL25 XOR task.

    Parameters
    ----------
    rate : float
        Input rate (Hz) of a logical 1 (default 20 Hz).
    jitter : float
        Relative uniform jitter of input rates (default 0.025).
    low, high : float
        Target output rates (Hz) of classes 0 and 1. The loss is the mean squared error
        on C's final L2/3E rate; accuracy thresholds it at ``(low + high) / 2``.
    solver : Solver, optional
        Default: fused dopri5 (rtol 1e-5, atol 1e-4).
    batch_size : int
        Trials per update (default 16).

    Notes
    -----
    Default training (:attr:`settings`): up to 50 Adam updates at lr 0.2 with direct
    gradients, the gradient clipped to norm 0.1, ``rollback=1.5`` (a step that silences
    both lower columns, where f underflows and the gradient vanishes, is undone), stop at
    100 % test accuracy. ``gradient="adjoint"`` gives the paper's method.
    """

    name = "xor"
    duration = 1.0
    dt_out = 0.5
    reproduce_seeds = 10

    def __init__(self, rate: float = 20.0, jitter: float = 0.025, low: float = 0.15, high: float = 1.0,
                 solver: Solver | None = None, batch_size: int = 16) -> None:
        self.rate, self.jitter, self.low, self.high = rate, jitter, low, high
        self.solver = solver or Solver("dopri5", rtol=1e-5, atol=1e-4, backend="fused")
        self.settings = TrainSettings(updates=50, lr=0.2, gradient="direct", clip_grad=0.1, rollback=1.5,
                                      stop_at_accuracy=1.0, batch_size=batch_size)
        self.t_on = 0.5

    def build_network(self, params: Params | None = None, seed: int | None = None) -> ColumnNetwork:
        params = params or load_preset("dl25")
        return ColumnNetwork(params, {"lower": ("mt", 2), "upper": ("mt", 1)},
                             [Input("lower", channels=[0, 1], to="all", learnable=True, jitter=0.5),
                              Feedforward("lower", "upper", init=300.0, jitter=0.5)],
                             seed=seed)

    def sample(self, n: int, generator: torch.Generator) -> Batch:
        """``n`` trials cycling through the four patterns, with jittered input rates."""
        x = PATTERNS[torch.arange(n) % 4]
        jit = 1 + self.jitter * (2 * torch.rand(n, 2, generator=generator, dtype=torch.float64) - 1)
        on = x * self.rate * jit
        rates = torch.stack([torch.zeros_like(on), on], 1)  # (n, 2 segments, 2 inputs)
        label = (x[:, 0] != x[:, 1]).to(torch.float64)
        return Batch(Stimulus([0.0, self.t_on], rates), label, {"x": x})

    def output(self, traj: Trajectory) -> torch.Tensor:
        """C's L2/3E rate at the end of the trial (Hz), one per trial."""
        return traj.get("rate", "upper", 0, "L23E")[-1]

    def loss(self, traj: Trajectory, batch: Batch) -> torch.Tensor:
        target = self.low + (self.high - self.low) * batch.target
        return torch.mean((self.output(traj) - target.to(traj.state)) ** 2)

    def accuracy(self, traj: Trajectory, batch: Batch) -> float:
        pred = self.output(traj) > 0.5 * (self.low + self.high)
        return float((pred == batch.target.to(pred.device).bool()).to(torch.float64).mean())

    def evaluation_stimulus(self) -> Stimulus:
        """The four patterns without jitter (00, 01, 10, 11): no input for ``t_on``, then the pattern."""
        rates = torch.stack([torch.zeros(4, 2, dtype=torch.float64), PATTERNS * self.rate], 1)
        return Stimulus([0.0, self.t_on], rates)

    def evaluate(self, network: ColumnNetwork, out: Path | None = None) -> dict[str, Any]:
        """The truth table of every column (:func:`truth_table`), written to ``interpretation.json``."""
        table = truth_table(network, self)
        if out is not None:
            atomic_write_text(Path(out) / "interpretation.json", json.dumps(table, indent=2))
        return table

    def report_section(self, network: ColumnNetwork, result: Any, evaluation: Mapping[str, Any],
                       prefix: str = "") -> list[str]:
        """The truth table: each column's logical function, E/I input ratio and responses."""
        lines = ["| column | function | E/I input ratio | L2/3E responses (Hz) to 00, 01, 10, 11 |",
                 "|---|---|---|---|"]
        lines += [f"| {k} | {v['function']} | {v['EI_ratio']:.3g} | "
                  f"{', '.join(f'{x:.3g}' for x in v['responses_hz'])} |" for k, v in evaluation.items()]
        return lines

    def reproduce(self, runs: Mapping[int, Any], out: Path) -> dict[str, Any]:
        """dL25 Figure 1B: test accuracy per update, one line per seed (``figure1b.png``, ``summary.json``)."""
        from ..plotting import plot_training, save_figure

        fig = plot_training({seed: r.metrics for seed, r in runs.items()},
                            title="XOR: test accuracy per update (one line per seed)")
        save_figure(fig, Path(out) / "figure1b.png")
        summary = [r.summary for r in runs.values()]
        solved = [x for x in summary if (x["final_accuracy"] or 0) >= 1.0]
        result = {"seeds": len(runs), "solved": len(solved), "updates_to_solve": [x["updates"] for x in solved],
                  "total_wall_seconds": sum(x["wall_seconds"] for x in summary), "runs": summary}
        atomic_write_text(Path(out) / "summary.json", json.dumps(result, indent=2))
        result["headline"] = (f"XOR: {result['solved']}/{result['seeds']} seeds reached 100 % test accuracy "
                              f"(updates: {result['updates_to_solve']}), {result['total_wall_seconds']:.1f} s in all")
        return result

    def config(self) -> dict[str, Any]:
        return {**super().config(), "rate": self.rate, "jitter": self.jitter, "low": self.low,
                "high": self.high, "t_on": self.t_on}


def truth_table(network: ColumnNetwork, task: XOR | None = None) -> dict[str, Any]:
    """Responses of every column to the four input patterns and the logical function each computes.

    A column's L2/3E rate at the end of a noiseless trial is thresholded at the midpoint
    between its lowest and highest response; the resulting 4-bit table is matched to
    OR, AND, XOR, NAND, ... (``"other"`` if none). The E/I input ratio of a column is the
    summed weight onto its L4E divided by that onto its L4I.
    """
    task = task or XOR()
    names = {(0, 0, 0, 1): "AND", (0, 1, 1, 1): "OR", (0, 1, 1, 0): "XOR", (1, 1, 1, 0): "NAND",
             (1, 0, 0, 0): "NOR", (1, 0, 0, 1): "XNOR", (0, 0, 0, 0): "FALSE", (1, 1, 1, 1): "TRUE",
             (0, 1, 0, 0): "x2 AND NOT x1", (0, 0, 1, 0): "x1 AND NOT x2", (0, 1, 0, 1): "x2",
             (0, 0, 1, 1): "x1"}
    from ..solve.simulate import simulate

    with torch.no_grad():
        traj = simulate(network, task.evaluation_stimulus(), duration=task.duration,
                        dt_out=task.dt_out, solver=task.solver)
    out: dict[str, Any] = {}
    for area, col in (("lower", 0), ("lower", 1), ("upper", 0)):
        r = traj.get("rate", area, col, "L23E")[-1].numpy()
        thr = 0.5 * (r.min() + r.max())
        bits = tuple(int(v > thr) for v in r)
        label = f"{area}[{col}]"
        w_e = w_i = 0.0
        for name in network.slices:
            pw = network.projection_weights(name)
            for w, t in zip(pw["weight"], pw["target"]):
                if t == f"{label}.L4E":
                    w_e += float(w)
                elif t == f"{label}.L4I":
                    w_i += float(w)
        out[label] = {"responses_hz": r.tolist(), "function": names.get(bits, "other"),
                      "bits": list(bits), "input_E_nA": w_e, "input_I_nA": w_i,
                      "EI_ratio": w_e / w_i if w_i else float("inf")}
    return out
