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
    first stage (its weight in ``b`` is 0); ``order``: order of the solution.
    """

    a: tuple[tuple[float, ...], ...]
    b: tuple[float, ...]
    b_err: tuple[float, ...] | None = None
    fsal: bool = False
    order: int = 1

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

#: The schemes, identical to torchdiffeq's of the same name (its ``rk4`` is the 3/8 rule,
#: ``rk4_alt_step_func``; ``dopri5`` is the Dormand-Prince 5(4) pair).
TABLEAUS: dict[str, Tableau] = {
    "euler": Tableau((), (1.0,), order=1),
    "midpoint": Tableau(((0.5,),), (0.0, 1.0), order=2),
    "rk4": Tableau(((1 / 3,), (-1 / 3, 1.0), (1.0, -1.0, 1.0)), (0.125, 0.375, 0.375, 0.125), order=4),
    "dopri5": Tableau(_DP_A, _DP_B, tuple(x - y for x, y in zip(_DP_B, _DP_B_LOW)), fsal=True, order=5),
}


class StepSizeUnderflow(RuntimeError):
    """The adaptive step shrank below 1e-12 of the interval: the solve diverged or is too stiff."""
