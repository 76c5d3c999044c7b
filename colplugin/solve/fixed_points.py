"""Fixed points and Jacobians of a network's DMF vector field."""

from __future__ import annotations

import math
from typing import Sequence

import torch

from ..network import ColumnNetwork
from ..stimulus import Stimulus
from .simulate import simulate
from .strategies import Solver

__all__ = ["resting_state", "jacobian"]


def _inputs(network: ColumnNetwork, u: Sequence[float] | torch.Tensor | None) -> torch.Tensor:
    dtype, dev = network.W_intra.dtype, network.W_intra.device
    if u is None:
        return torch.zeros(1, network.n_inputs, dtype=dtype, device=dev)
    uu = torch.as_tensor(u, dtype=dtype, device=dev).reshape(1, -1)
    if uu.shape[1] != network.n_inputs:
        raise ValueError(f"u has {uu.shape[1]} input rates but the network reads {network.n_inputs} channels")
    return uu


def resting_state(network: ColumnNetwork, u: Sequence[float] | torch.Tensor | None = None,
                  tol: float = 1e-10, settle: float = 2.0) -> torch.Tensor:
    """The fixed point y* = [V*, A*] (1, 2P), mV, under constant input rates ``u`` (Hz; default none).

    Newton's method on dy/dt = 0, started from the end of a simulation of ``settle`` seconds
    from the zero state (default 2 s). Newton converges to the fixed point nearest that
    state, stable or not: a shorter ``settle`` finds the undecided state of a network whose
    symmetric state is a saddle (the gated decision network), a longer one the state it
    decides into.

    Raises
    ------
    RuntimeError
        If Newton's method does not converge.
    """
    uu = _inputs(network, u)
    with torch.no_grad():
        solver = Solver.default()  # torchdiffeq's for a transfer the fused loop lacks, without the user notice
        solver = solver if network.fusable else solver.on("torchdiffeq")
        if not (isinstance(settle, (int, float)) and 0 < settle < math.inf):
            raise ValueError(f"resting_state(settle={settle!r}): give the settling time as a positive number of "
                             "seconds (default 2)")
        traj = simulate(network, Stimulus.constant(uu, dtype=uu.dtype, device=uu.device), duration=float(settle),
                        dt_out=float(settle) / 20, solver=solver)
        y = traj.state[-1].clone()

        def f(z: torch.Tensor) -> torch.Tensor:
            return network.vector_field(z, uu)

        for _ in range(50):
            J = torch.autograd.functional.jacobian(lambda z: f(z.unsqueeze(0))[0], y[0])
            step = torch.linalg.solve(J, f(y)[0])
            y = y - step.unsqueeze(0)
            if float(step.abs().max()) < tol * (1 + float(y.abs().max())):
                return y
    raise RuntimeError("resting_state: Newton's method did not converge; the network may have no "
                       "stable fixed point under this input (simulate it to see)")


def jacobian(network: ColumnNetwork, y: torch.Tensor, u: Sequence[float] | torch.Tensor | None = None) -> torch.Tensor:
    """Jacobian d(dy/dt)/dy (2P, 2P), 1/s, at the state ``y`` (1, 2P) under input rates ``u`` (Hz)."""
    uu = _inputs(network, u)
    return torch.autograd.functional.jacobian(lambda z: network.vector_field(z.unsqueeze(0), uu)[0],
                                              y.reshape(-1))
