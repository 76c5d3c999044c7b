"""XOR with three MT columns (dL25, Figure 1).

Columns A and B (area ``lower``, N/2 each) receive the two inputs through learnable
weights onto L4E and L4I; their L2/3E drive L4E/L4I of column C (area ``upper``, full N)
through learnable feedforward weights. A trial is 0.5 s without input, then 0.5 s with
``x_k`` in {0, 1} given as 0 Hz or 20 Hz * U(0.975, 1.025). The output is C's final
L2/3E rate.
"""

from __future__ import annotations

import json
import math
import statistics
from collections import Counter
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from .._io import atomic_write_text
from ..column import input_weights
from ..network import ColumnNetwork, Feedforward, Input
from ..params import Params, load_preset
from ..params.names import pop_index
from ..plotting import plot_training, plot_weights, save_figure
from ..solve.simulate import Solver, Trajectory, simulate
from ..stimulus import Stimulus
from ..training.settings import TrainSettings
from ..training.task import Batch, Task, register_task

__all__ = ["XOR", "PATTERNS", "truth_table", "margin", "PAPER_FUNCTIONS"]

#: The four input patterns (x1, x2), in the order 00, 01, 10, 11.
PATTERNS = torch.tensor([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=torch.float64)

#: The solution dL25 reports: A (lower[0]) = OR, B (lower[1]) = AND, C = OR and not AND (= XOR).
PAPER_FUNCTIONS = {"lower[0]": "OR", "lower[1]": "AND", "upper[0]": "XOR"}

#: The paper code's factor on the lower columns' L2/3E rates into column C ("pump up firing rates"):
#: the feedforward weights onto C start at this factor times the thalamic weights.
FEEDFORWARD_GAIN = 10.0


def margin(output: torch.Tensor, label: torch.Tensor) -> float:
    """Classification margin: (min over XOR-true - max over XOR-false) / (max - min) of ``output``.

    Positive exactly when a threshold separates the classes; 1 for two tight clusters at
    the ends of the range. ``nan`` when a class is missing or the output is constant.
    """
    y = output.detach().to(torch.float64).reshape(-1)
    lab = label.to(y.device).bool().reshape(-1)
    span = float(y.max() - y.min())
    if lab.all() or not lab.any() or span == 0:
        return math.nan
    return float(y[lab].min() - y[~lab].max()) / span


@register_task
class XOR(Task):
    """The dL25 XOR task, initialised and trained as the paper's code does.

    Parameters
    ----------
    rate : float
        Input rate (Hz) of a logical 1 (default 20 Hz).
    jitter : float
        Relative uniform jitter of input rates (default 0.025).
    readout : {"minmax", "hz"}
        ``"minmax"`` (default, the paper's text): C's final L2/3E rates of a batch are
        min-max normalised to [0, 1] and fitted to the targets 0 / 1 (mean squared error);
        a trial is class 1 when its normalised output exceeds 0.5. ``"hz"`` (the paper's
        code): the raw rate is fitted to ``low`` / ``high`` Hz, class 1 above their midpoint.
        The text's read-out is the default because it is what the paper states and it
        needs no assumption about C's absolute rate (which the initialisation sets);
        the code's targets are kept as an option.
    low, high : float
        Target rates (Hz) of classes 0 and 1 for ``readout="hz"`` (default 0.25 / 1.0, the
        paper's code).
    init_jitter : float
        Standard deviation (nA) of the additive Gaussian jitter of the initial input
        weights (default 0.1 nA). Every input weight starts at its nominal thalamic value
        ``K_in * J_E`` (25.90 nA onto L4E, 16.33 nA onto L4I) plus this jitter; the
        feedforward weights onto C start at :data:`FEEDFORWARD_GAIN` (10) times the same
        nominal values (259.0 / 163.3 nA: the paper's code multiplies the lower columns'
        rates by 10 before its thalamic-valued weights) plus 10 times the jitter.
        Magnitudes are taken as absolute values (the code's ``abs(normal(...))``).
    solver : Solver, optional
        Default: fused dopri5 (rtol 1e-5, atol 1e-4).
    batch_size : int
        Trials per update (default 16).

    Notes
    -----
    Default training (:attr:`settings`): up to 50 Adam updates at lr 0.2 with direct
    gradients (the same gradient as the paper's adjoint, see ``gradient="adjoint"``), no
    gradient clipping and no rollback (the paper used neither; both remain options of
    :func:`colplugin.train`), the test set evaluated before the first update (update 0),
    stop at 100 % test accuracy. The test metrics include ``margin`` (:func:`margin`).
    """

    name = "xor"
    duration = 1.0
    dt_out = 0.5
    reproduce_seeds = 10

    def __init__(self, rate: float = 20.0, jitter: float = 0.025, readout: str = "minmax", low: float = 0.25,
                 high: float = 1.0, init_jitter: float = 0.1, solver: Solver | None = None,
                 batch_size: int = 16) -> None:
        if readout not in ("minmax", "hz"):
            raise ValueError(f"XOR(readout={readout!r}): use 'minmax' (the paper's text) or 'hz' (its code)")
        checks = (("rate", rate, rate > 0, "a positive input rate in Hz (default 20)"),
                  ("jitter", jitter, 0 <= jitter < 1, "a relative jitter in [0, 1) (default 0.025)"),
                  ("init_jitter", init_jitter, init_jitter >= 0, "a standard deviation >= 0 nA (default 0.1)"),
                  ("low", low, low >= 0, "a target rate >= 0 Hz (default 0.25)"),
                  ("high", high, high > low, f"a target rate above low = {low!r} Hz (default 1.0)"))
        for name, value, ok, what in checks:
            if not (ok and math.isfinite(value)):
                raise ValueError(f"XOR({name}={value!r}): give {what}")
        self.rate, self.jitter, self.readout, self.low, self.high = rate, jitter, readout, low, high
        self.init_jitter = init_jitter
        self.solver = solver or Solver("dopri5", rtol=1e-5, atol=1e-4, backend="auto")
        self.settings = TrainSettings(updates=50, lr=0.2, gradient="direct", clip_grad=None, rollback=None,
                                      stop_at_accuracy=1.0, evaluate_initial=True, batch_size=batch_size)
        self.t_on = 0.5

    def build_network(self, params: Params | None = None, seed: int | None = None) -> ColumnNetwork:
        """The three columns with the paper's initialisation (see ``init_jitter``)."""
        params = params or load_preset("dl25")
        w_thal = np.asarray(input_weights(params))
        w_e, w_i = float(w_thal[pop_index("L4E")]), float(w_thal[pop_index("L4I")])
        net = ColumnNetwork(params, {"lower": ("mt", 2), "upper": ("mt", 1)},
                            [Input("lower", channels=[0, 1], to="all", learnable=True, jitter=0.0),
                             Feedforward("lower", "upper", init=FEEDFORWARD_GAIN * w_e, jitter=0.0)],
                            seed=seed)
        gen = torch.Generator()
        gen.manual_seed(seed) if seed is not None else gen.seed()
        for name, gain in (("input:lower", 1.0), ("feedforward:lower->upper", FEEDFORWARD_GAIN)):
            targets = net.projection_weights(name)["target"]
            nominal = torch.tensor([w_e if t.endswith("L4E") else w_i for t in targets], dtype=torch.float64)
            noise = self.init_jitter * torch.randn(len(targets), generator=gen, dtype=torch.float64)
            net.set_projection_weights(name, gain * (nominal + noise).abs())
        return net

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

    def readout_values(self, traj: Trajectory) -> torch.Tensor:
        """What the loss and the threshold see: C's output min-max normalised over the batch, or in Hz."""
        return self._normalise(self.output(traj))

    def _normalise(self, y: torch.Tensor) -> torch.Tensor:
        if self.readout == "hz":
            return y
        return (y - y.min()) / (y.max() - y.min()).clamp_min(1e-12)

    def _targets(self, label: torch.Tensor) -> tuple[torch.Tensor, float]:
        lo, hi = (self.low, self.high) if self.readout == "hz" else (0.0, 1.0)
        return lo + (hi - lo) * label, 0.5 * (lo + hi)

    def loss(self, traj: Trajectory, batch: Batch) -> torch.Tensor:
        target, _ = self._targets(batch.target)
        return torch.mean((self.readout_values(traj) - target.to(traj.state)) ** 2)

    def accuracy(self, traj: Trajectory, batch: Batch) -> float:
        _, threshold = self._targets(batch.target)
        pred = self.readout_values(traj) > threshold
        return float((pred == batch.target.to(pred.device).bool()).to(torch.float64).mean())

    def readout_window(self) -> tuple[float, float]:
        """The last 0.2 s of the trial (the pattern is on from ``t_on``): C's L2/3E rate there."""
        return self.duration - 0.2, self.duration

    def accuracy_from_rates(self, rates: Mapping[str, Any], conditions: Stimulus) -> float:
        """The XOR accuracy of C's L2/3E rates (``rates["upper[0].L23E"]``, shape (conditions, trials), Hz).

        The label of a condition is the XOR of its inputs in the last stimulus segment;
        every trial is one sample of the batch that the read-out (min-max normalisation
        over all trials, threshold 0.5; or the ``"hz"`` threshold) classifies, as in
        :meth:`accuracy`.
        """
        y = torch.as_tensor(np.asarray(rates["upper[0].L23E"], dtype=float), dtype=torch.float64)
        if y.ndim != 2 or y.shape[0] != conditions.batch_size:
            raise ValueError(f"rates['upper[0].L23E'] must have shape (conditions={conditions.batch_size}, trials), "
                             f"got {tuple(y.shape)}")
        x = conditions.rates[:, -1].cpu() > 0
        label = (x[:, 0] != x[:, 1]).to(torch.float64)[:, None].expand_as(y).reshape(-1)
        _, threshold = self._targets(label)
        pred = self._normalise(y.reshape(-1)) > threshold
        return float((pred == label.bool()).to(torch.float64).mean())

    def metrics(self, traj: Trajectory, batch: Batch) -> dict[str, float]:
        """``margin`` (:func:`margin`) of C's output, recorded as ``test_margin`` per update."""
        return {"margin": margin(self.output(traj), batch.target)}

    def evaluation_stimulus(self) -> Stimulus:
        """The four patterns without jitter (00, 01, 10, 11): no input for ``t_on``, then the pattern."""
        rates = torch.stack([torch.zeros(4, 2, dtype=torch.float64), PATTERNS * self.rate], 1)
        return Stimulus([0.0, self.t_on], rates)

    def evaluate(self, network: ColumnNetwork, out: Path | None = None) -> dict[str, Any]:
        """Every column's truth table (:func:`truth_table`) and, on the 100 jittered test trials, the
        test accuracy and ``margin``; written to ``interpretation.json``."""
        table = truth_table(network, self)
        test = self.test_set()
        with torch.no_grad():
            traj = simulate(network, test.stimulus, duration=self.duration, dt_out=self.dt_out, solver=self.solver)
        table["test_accuracy"] = self.accuracy(traj, test)
        table["margin"] = margin(self.output(traj), test.target)
        table["paper_solution"] = all(table[c]["function"] == f for c, f in PAPER_FUNCTIONS.items())
        if out is not None:
            atomic_write_text(Path(out) / "interpretation.json", json.dumps(table, indent=2))
        return table

    def figures(self, network: ColumnNetwork, result: Any) -> dict[str, Any]:
        """Figure 1A: the learned weights (blue onto E, red onto I, line width to scale)."""
        return {"weights.png": plot_weights(network, title="XOR: learned weights (dL25 Figure 1A)")}

    def report_section(self, network: ColumnNetwork, result: Any, evaluation: Mapping[str, Any],
                       prefix: str = "") -> list[str]:
        """The truth table: each column's logical function, E/I input ratio and responses; the margin."""
        lines = ["| column | function | E/I input ratio | L2/3E responses (Hz) to 00, 01, 10, 11 |",
                 "|---|---|---|---|"]
        lines += [f"| {k} | {v['function']} | {v['EI_ratio']:.3g} | "
                  f"{', '.join(f'{x:.3g}' for x in v['responses_hz'])} |"
                  for k, v in evaluation.items() if isinstance(v, Mapping)]
        if "margin" in evaluation:
            lines += ["", f"Test accuracy {evaluation['test_accuracy']:.3g}, classification margin "
                          f"{evaluation['margin']:.3g} of C's output range (100 jittered test trials; goal >= 0.2); "
                          f"the paper's solution (A = OR, B = AND, C = XOR): "
                          f"{'yes' if evaluation.get('paper_solution') else 'no'}."]
        return lines

    def reproduce(self, runs: Mapping[int, Any], out: Path) -> dict[str, Any]:
        """dL25 Figure 1B: test accuracy per update from update 0, one line per seed; Figure 1A of a solution.

        Writes ``figure1b.png``, ``figure1a.png`` (the first seed that learned the paper's
        solution, else the first solved seed) and ``summary.json``: solved seeds (100 % test
        accuracy), updates to solve and their median, accuracy at update 0, the learned
        function of every column per seed and how often each appears, and the margins.
        """
        fig = plot_training({seed: r.metrics for seed, r in runs.items()},
                            title="XOR: test accuracy per update (one line per seed)")
        save_figure(fig, Path(out) / "figure1b.png")
        per_seed = {}
        for seed, r in runs.items():
            rows = r.metrics
            first = next((row["update"] for row in rows if (row.get("test_accuracy") or 0) >= 1.0), None)
            ev = r.evaluation or {}
            per_seed[seed] = {
                "initial_accuracy": rows[0].get("test_accuracy") if rows and rows[0]["update"] == 0 else None,
                "initial_margin": rows[0].get("test_margin") if rows and rows[0]["update"] == 0 else None,
                "updates_to_solve": first, "updates": r.summary["updates"],
                "final_accuracy": r.summary["final_accuracy"], "margin": ev.get("margin"),
                "functions": {c: ev[c]["function"] for c in PAPER_FUNCTIONS if c in ev},
                "paper_solution": ev.get("paper_solution")}
        solved = [s for s, x in per_seed.items() if x["updates_to_solve"] is not None]
        updates = [per_seed[s]["updates_to_solve"] for s in solved]
        combos = Counter(" / ".join(f"{c}={f}"
                                    for c, f in x["functions"].items()) for x in per_seed.values())
        by_column = {c: dict(Counter(x["functions"].get(c) for x in per_seed.values())) for c in PAPER_FUNCTIONS}
        margins = [x["margin"] for x in per_seed.values() if x["margin"] is not None]
        summary = [r.summary for r in runs.values()]
        result = {"seeds": len(runs), "solved": len(solved), "updates_to_solve": updates,
                  "median_updates_to_solve": statistics.median(updates) if updates else None,
                  "solved_at_update_0": sum(1 for x in per_seed.values() if (x["initial_accuracy"] or 0) >= 1.0),
                  "paper_solution": sum(1 for x in per_seed.values() if x["paper_solution"]),
                  "functions_by_column": by_column, "function_combinations": dict(combos),
                  "margins": margins, "median_margin": statistics.median(margins) if margins else None,
                  "margin_at_least_0.2": sum(1 for m in margins if m >= 0.2),
                  "per_seed": per_seed, "total_wall_seconds": sum(x["wall_seconds"] for x in summary),
                  "settings": summary[0]["settings"] if summary else None, "runs": summary}
        pick = next((s for s in per_seed if per_seed[s]["paper_solution"]), solved[0] if solved else None)
        if pick is not None:
            save_figure(plot_weights(runs[pick].network, title=f"XOR seed {pick}: learned weights (dL25 Figure 1A)"),
                        Path(out) / "figure1a.png")
            result["figure1a_seed"] = pick
        atomic_write_text(Path(out) / "summary.json", json.dumps(result, indent=2))
        result["headline"] = (f"XOR: {result['solved']}/{result['seeds']} seeds reached 100 % test accuracy "
                              f"(updates: {updates}, median {result['median_updates_to_solve']}), "
                              f"{result['paper_solution']} with A = OR, B = AND, C = XOR; margins "
                              f"{', '.join(f'{m:.2f}' for m in margins)}; {result['total_wall_seconds']:.1f} s in all")
        return result

    def config(self) -> dict[str, Any]:
        return {**super().config(), "t_on": self.t_on}


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
    from ..solve.simulate import simulate as run  # looked up per call: tests replace colplugin.solve.simulate.simulate

    with torch.no_grad():
        traj = run(network, task.evaluation_stimulus(), duration=task.duration,
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
