"""How stiff the rate model is: explicit against implicit integrators at equal tolerance, run by hand.

    python benchmarks/bench_stiffness.py [--sizes 10 100] [--duration 0.5] [--rtols 1e-6 1e-4]

The network of ``benchmarks/bench_default.py`` (one MT area of n columns, lateral L2/3E ->
L2/3I onto ~10 other columns, 20 Hz into every L4E/L4I) from V = A = 0, its field
(:meth:`ColumnNetwork.field`, float64) integrated by SciPy's ``solve_ivp``: ``RK45`` (Dormand-
Prince 5(4), the tableau of colplugin's default), and the implicit ``Radau`` (order 5) and
``BDF`` (orders 1-5) with the field's exact Jacobian (autograd). Per method and tolerance
(``rtol = atol``): accepted steps, field evaluations, Jacobians, LU factorisations, and the
largest error of the end state against ``DOP853`` at 1e-11 (mV). An explicit scheme whose
step count barely falls when the tolerance is loosened 100x is held by stability, not by
accuracy: the evaluations an implicit or stabilised scheme would save. SciPy's wall times
(dense Jacobians in Python) are not colplugin's and are not reported.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from scipy.integrate import solve_ivp

sys.path.insert(0, str(Path(__file__).parent))
from bench_default import build  # noqa: E402  (the same network as the default-solver benchmark)


def _functions(field):
    """The field (mV/s) and its exact Jacobian (1/s) as SciPy's ``fun(t, y)`` and ``jac(t, y)``."""
    def fun(t, y):
        with torch.no_grad():
            return field(torch.from_numpy(y)[None], 0)[0].numpy()

    def jac(t, y):
        return torch.autograd.functional.jacobian(lambda z: field(z[None], 0)[0], torch.from_numpy(y).clone()).numpy()
    return fun, jac


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10, 100])
    ap.add_argument("--duration", type=float, default=0.5)
    ap.add_argument("--rtols", type=float, nargs="+", default=[1e-6, 1e-4])
    a = ap.parse_args()
    torch.set_num_threads(1)
    print("| columns | method | rtol | steps | field evaluations | Jacobians | LU | end error (mV) |\n"
          "|---|---|---|---|---|---|---|---|")
    for n in a.sizes:
        field = build(n).field(torch.tensor([[[20.0]]], dtype=torch.float64))
        y0 = field.initial(1).double().numpy()[0]
        f, jac = _functions(field)

        ref = solve_ivp(f, (0, a.duration), y0, method="DOP853", rtol=1e-11, atol=1e-11).y[:, -1]
        for method in ("RK45", "Radau", "BDF"):
            for rtol in a.rtols:
                s = solve_ivp(f, (0, a.duration), y0, method=method, rtol=rtol, atol=rtol,
                              **({} if method == "RK45" else {"jac": jac}))
                err = np.abs(s.y[:, -1] - ref).max()
                print(f"| {n} | {method} | {rtol:g} | {s.t.size - 1} | {s.nfev} | {s.njev} | {s.nlu} | {err:.1e} |",
                      flush=True)


if __name__ == "__main__":
    main()
