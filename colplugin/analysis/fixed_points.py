"""Fixed points and Jacobians of the DMF: they live in :mod:`colplugin.solve.fixed_points` (the tasks use them)."""

from ..solve.fixed_points import jacobian, resting_state

__all__ = ["resting_state", "jacobian"]
