"""colplugin's default simulate beside the authors' own code, recording 1501 points, run by hand.

    git clone https://github.com/ccnmaastricht/ODE-Column
    python benchmarks/bench_paper.py --paper ODE-Column [--sizes 10 100 1000] [--duration 0.15]

One MT area of n full-size columns (no connections between them), 20 Hz into L4E and L4I of
every column (the authors' feedforward synapse counts 295 and 186), from rest, ``--duration``
s recorded at 0.1 ms (1501 points at 0.15 s), one thread, best of ``--repeat`` runs below 1000
columns and one run above:

* ``paper``: the authors' code as their scripts run it: their ``ColumnArea`` built from their
  ``config/model.toml`` for n columns (``small_network=False``: full sizes), their column
  dynamics (``ColumnAreaWTA.forward``, called on that area: the state V, A and the filtered
  rate, float32), the stimulus through their ``torch_interp``, and ``torchdiffeq.odeint`` with
  its defaults (dopri5, rtol 1e-7, atol 1e-9) over the 1501 output times;
* ``colplugin``: ``cp.simulate(net, stim, duration, dt_out=1e-4)`` with the default solver
  (float64, the compiled kernel, dense output), states and rates read.

Both integrate the same equations with the same parameters (dL25's: tau_m 20 ms, the same
connection probabilities, sizes and input; the background in-degrees of the authors' full-size
columns, ``synapse_counts.background`` of their config, where the preset has the 2510 of
their small networks), which the benchmark checks first: every rate of the last output must
agree within 2 % (of the rate, or of 1 Hz below it; measured: 0.5 % at most, the authors'
float32 against float64 over a transient, where a background of 2510 gives 110x). Nothing of
the authors' code is copied: it is imported from ``--paper``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

import colplugin as cp


def _paper_modules(path: Path):
    if not (path / "src" / "coupled_columns.py").is_file():
        sys.exit(f"{path} is not a clone of the authors' code (no src/coupled_columns.py): "
                 "git clone https://github.com/ccnmaastricht/ODE-Column")
    sys.path.insert(0, str(path))
    from src import coupled_columns, utils  # the authors' package

    return coupled_columns, utils


def _paper_run(cc, utils, params: dict, n: int, duration: float, points: int) -> tuple[float, np.ndarray]:
    from torchdiffeq import odeint

    area = cc.ColumnArea(params, "mt", n, small_network=False)
    time_vec = torch.linspace(0.0, duration, points)
    area.time_vec = time_vec
    area.stim = torch.full((points, 1), 20.0)  # Hz; their feedforward weights pick L4E and L4I

    def dynamics(t, state):
        return cc.ColumnAreaWTA.forward(area, t, state)

    y0 = torch.zeros(1, 3 * 8 * n)
    t0 = time.perf_counter()
    with torch.no_grad():
        out = odeint(dynamics, y0, time_vec)
    wall = time.perf_counter() - t0
    V, A = out[-1, 0, :8 * n], out[-1, 0, 8 * n:16 * n]
    return wall, utils.compute_firing_rate(V - A).numpy()


def _colplugin_run(n: int, duration: float, k_bg: list) -> tuple[float, np.ndarray]:
    params = cp.load_preset("dl25", overrides={"K_bg": k_bg})  # the authors' background of full-size columns
    net = cp.ColumnNetwork(params, {"mt": cp.Area("mt", n, split=False)}, [cp.Input("mt", to="all")], seed=0)
    stim = cp.Stimulus.constant([20.0])
    t0 = time.perf_counter()
    with torch.no_grad():
        traj = cp.simulate(net, stim, duration, dt_out=1e-4)
        traj.rate  # noqa: B018 - the outputs a user reads: states (traj.V, traj.A) and rates
    wall = time.perf_counter() - t0
    return wall, traj.rate[-1, 0].numpy()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--paper", type=Path, required=True, help="a clone of github.com/ccnmaastricht/ODE-Column")
    ap.add_argument("--sizes", type=int, nargs="+", default=[10, 100, 1000])
    ap.add_argument("--duration", type=float, default=0.15)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    cc, utils = _paper_modules(a.paper)
    params = utils.load_config(str(a.paper / "config" / "model.toml"))
    torch.set_num_threads(1)
    points = int(round(a.duration / 1e-4)) + 1
    print("| columns | paper s | colplugin s | speed-up | rate check (max rel. diff) |\n|---|---|---|---|---|")
    for n in a.sizes:
        repeat = a.repeat if n < 1000 else 1
        paper = min((_paper_run(cc, utils, params, n, a.duration, points) for _ in range(repeat)), key=lambda r: r[0])
        ours = min((_colplugin_run(n, a.duration, params["synapse_counts"]["background"]) for _ in range(repeat)),
                   key=lambda r: r[0])
        rel = np.abs(ours[1] - paper[1]) / np.maximum(np.abs(paper[1]), 1.0)
        print(f"| {n} | {paper[0]:.3f} | {ours[0]:.3f} | {paper[0] / ours[0]:.1f}x | {rel.max():.1e} |", flush=True)
        if rel.max() > 0.02:
            sys.exit(f"the two runs disagree at {n} columns (max relative difference {rel.max():.2e}): "
                     "they do not solve the same network, and their times are not comparable")


if __name__ == "__main__":
    main()
