"""The explicit Runge-Kutta schemes of the fused solver (eager and compiled loops alike)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Tableau", "TABLEAUS", "StepSizeUnderflow"]


@dataclass(frozen=True)
class Tableau:
    """An explicit Runge-Kutta scheme.

    ``a``: rows 2..s of the lower-triangular stage matrix; ``b``: weights of the solution;
    ``b_err``: weights of the embedded error estimate (adaptive schemes; ``b - b_low``);
    ``fsal``: the last stage is evaluated at the new solution and reused as the next step's
    first stage (its weight in ``b`` is 0); ``order``: order of the solution;
    ``interpolant``: the scheme's dense output (continuous extension), one row per stage of
    its coefficients of theta, theta^2, ... in y(t + theta h) = y + h sum_i b_i(theta) k_i,
    0 <= theta <= 1 (None: the scheme has none; outputs must then be steps' ends).
    """

    a: tuple[tuple[float, ...], ...]
    b: tuple[float, ...]
    b_err: tuple[float, ...] | None = None
    fsal: bool = False
    order: int = 1
    interpolant: tuple[tuple[float, ...], ...] | None = None

    @property
    def stages(self) -> int:
        return len(self.b)

    @property
    def stage_matrix(self) -> tuple[tuple[float, ...], ...]:
        """The full s x s stage matrix (row i: a_ij for j < i, zeros elsewhere)."""
        s = self.stages
        rows = ((),) + self.a
        return tuple(tuple(row) + (0.0,) * (s - len(row)) for row in rows)

    @property
    def solution_stages(self) -> int:
        """Stages that enter the new solution (an FSAL stage only feeds the error estimate)."""
        return self.stages - 1 if self.fsal else self.stages


_DP_A = ((1 / 5,),
         (3 / 40, 9 / 40),
         (44 / 45, -56 / 15, 32 / 9),
         (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
         (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
         (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84))
_DP_B = (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0.0)
_DP_B_LOW = (5179 / 57600, 0.0, 7571 / 16695, 393 / 640, -92097 / 339200, 187 / 2100, 1 / 40)

_DP_C_MID = (6025192743 / 30085553152 / 2, 0.0, 51252292925 / 65400821598 / 2, -2691868925 / 45128329728 / 2,
             187940372067 / 1594534317056 / 2, -1776094331 / 19743644256 / 2, 11237099 / 235043384 / 2)


def _quartic_interpolant(b: tuple[float, ...], mid: tuple[float, ...]) -> tuple[tuple[float, ...], ...]:
    """The dense output of a 7-stage FSAL pair as torchdiffeq builds it (``_interp_fit``).

    The quartic through y0 and y1 with slopes k_1 and k_7 at the ends and the value
    y0 + h sum_i mid_i k_i at theta = 1/2 (Shampine 1986), written as weights of the stages:
    b_i(theta) = sum_p Q_ip theta^p, p = 1..4. At theta = 1 the weights are b.
    """
    s = len(b)
    e1 = [1.0] + [0.0] * (s - 1)
    e7 = [0.0] * (s - 1) + [1.0]
    rows = []
    for i in range(s):
        rows.append((e1[i],
                     e7[i] - 4 * e1[i] - 5 * b[i] + 16 * mid[i],
                     5 * e1[i] - 3 * e7[i] + 14 * b[i] - 32 * mid[i],
                     2 * (e7[i] - e1[i]) - 8 * b[i] + 16 * mid[i]))
    return tuple(rows)


#: The schemes, identical to torchdiffeq's of the same name (its ``rk4`` is the 3/8 rule,
#: ``rk4_alt_step_func``; ``dopri5`` is the Dormand-Prince 5(4) pair).
TABLEAUS: dict[str, Tableau] = {
    "euler": Tableau((), (1.0,), order=1),
    "midpoint": Tableau(((0.5,),), (0.0, 1.0), order=2),
    "rk4": Tableau(((1 / 3,), (-1 / 3, 1.0), (1.0, -1.0, 1.0)), (0.125, 0.375, 0.375, 0.125), order=4),
    "dopri5": Tableau(_DP_A, _DP_B, tuple(x - y for x, y in zip(_DP_B, _DP_B_LOW)), fsal=True, order=5,
                      interpolant=_quartic_interpolant(_DP_B, _DP_C_MID)),
}


class StepSizeUnderflow(RuntimeError):
    """The adaptive step shrank below 1e-12 of the interval: the solve diverged or is too stiff."""
