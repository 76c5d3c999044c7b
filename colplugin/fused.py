"""Fused fixed-step Runge-Kutta solve of a dense network, with a hand-derived backward pass.

torchdiffeq's fixed-grid solvers are the reference; this module integrates the *same*
schemes on the *same* grid (``euler``, ``midpoint`` and torchdiffeq's ``rk4``, the 3/8 rule)
for networks whose coupling is one dense matrix (:class:`~colplugin.network.Coupling` with
``dense=True``). It exists for speed: for the few-column networks of the paper's tasks one
vector-field evaluation is ~15 tiny tensor operations, so per-operation overhead, not
arithmetic, sets the cost. Here

* the forward solve runs without building an autograd graph and keeps only the state at
  every grid point;
* the backward pass is the discrete adjoint of the Runge-Kutta scheme, written out with the
  analytic vector-field Jacobian: per step, the stages are recomputed from the stored state
  and the cotangent is pulled back through them in reverse,

      k_i = F(Y_i),  Y_i = y + h sum_j a_ij k_j,  y' = y + h sum_i b_i k_i
      gk_i = h b_i lam + h sum_{m>i} a_mi u_m,   u_i = (dF/dy)(Y_i)^T gk_i,   lam <- lam + sum_i u_i

  which is exactly the gradient of the discrete solve (the same number direct
  backpropagation through ``odeint`` gives, without its graph of ~100 nodes per step).

For F (see :mod:`colplugin.dynamics`), with x = V - A, r = f(x):

    F_V = drive_k + r W^T c - V / tau_m,     F_A = (kappa / tau_a) r - A / tau_a
    (dF/dy)^T g = [ -g_V / tau_m + s,  -g_A / tau_a - s ],   s = f'(x) (g_V W c + g_A kappa / tau_a)

and the parameter cotangents are r^T g_V (for the coupling matrix) and g_V (for the drive of
the current stimulus segment).
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch

from .dynamics import slope

__all__ = ["TABLEAUS", "fused_solve"]

#: Explicit Butcher tableaus (a: lower triangle by rows, b: weights), identical to torchdiffeq's
#: fixed-grid methods (its ``rk4`` is the 3/8 rule, ``rk4_alt_step_func``).
TABLEAUS: dict[str, tuple[tuple[tuple[float, ...], ...], tuple[float, ...]]] = {
    "euler": ((), (1.0,)),
    "midpoint": (((0.5,),), (0.0, 1.0)),
    "rk4": (((1 / 3,), (-1 / 3, 1.0), (1.0, -1.0, 1.0)), (0.125, 0.375, 0.375, 0.125)),
}


def _rate(x: torch.Tensor, da: float, b_over_a: float, d: float, out: torch.Tensor | None = None) -> torch.Tensor:
    """f(x) in 6 operations (hot loop): z / (d (1 - e^-z)), z = d (a x - b).

    Overflow-free: for z << 0, e^-z = inf and the quotient is +0 (the exact value
    underflows). At z = 0 the quotient is 0/0, replaced by the limit 1/d; a NaN ``x``
    also maps to 1/d here, but it stays in the state, where the divergence checks see it.
    """
    z = torch.sub(x, b_over_a).mul_(da)
    den = torch.neg(z).expm1_().mul_(-d)
    return torch.div(z, den, out=out).nan_to_num_(nan=1.0 / d)


class _FusedSolve(torch.autograd.Function):
    """States at the output grid points; backward = discrete adjoint of the RK scheme."""

    @staticmethod
    def forward(ctx, y0, Wt, drive, coupling, grid, seg, out_idx, method, watch):
        a_tab, b_tab = TABLEAUS[method]
        n_st = len(b_tab)
        P = coupling.P
        a, b, d = coupling.abd
        da, boa = d * a, b / a
        inv_m, inv_a, kr = coupling.inv_tau_m, coupling.inv_tau_a, coupling.kappa_over_tau_a
        keep = any(ctx.needs_input_grad[:3])
        n_steps = len(grid) - 1
        B = y0.shape[0]
        # stage inputs x = V - A and rates r = f(x), kept for the backward pass (n_steps, stages, B, P)
        X = torch.empty((n_steps if keep else 1, n_st, B, P), dtype=y0.dtype, device=y0.device)
        R = torch.empty_like(X)
        out_at: dict[int, list[int]] = {}
        for j, n in enumerate(out_idx):
            out_at.setdefault(n, []).append(j)
        out = torch.empty((len(out_idx),) + tuple(y0.shape), dtype=y0.dtype, device=y0.device)
        for j in out_at.get(0, ()):
            out[j] = y0
        V, A = y0[:, :P], y0[:, P:]
        for n in range(n_steps):
            h = grid[n + 1] - grid[n]
            dr = drive[:, seg[n]]
            kV, kA = [], []
            Xn, Rn = X[n if keep else 0], R[n if keep else 0]
            for i in range(n_st):
                VY, AY = V, A
                if i:
                    for j, aij in enumerate(a_tab[i - 1]):
                        if aij:
                            VY = torch.add(VY, kV[j], alpha=h * aij)
                            AY = torch.add(AY, kA[j], alpha=h * aij)
                x = torch.sub(VY, AY, out=Xn[i])
                r = _rate(x, da, boa, d, out=Rn[i])
                kV.append(torch.addmm(dr, r, Wt).add_(VY, alpha=-inv_m))
                kA.append(torch.mul(r, kr).add_(AY, alpha=-inv_a))
            for bi, k1, k2 in zip(b_tab, kV, kA):
                if bi:
                    V = torch.add(V, k1, alpha=h * bi)
                    A = torch.add(A, k2, alpha=h * bi)
            for j in out_at.get(n + 1, ()):
                out[j, :, :P] = V
                out[j, :, P:] = A
            watch(n, grid[n + 1], V, A)
        if keep:
            ctx.save_for_backward(X, R, Wt, drive)
        ctx.coupling, ctx.grid, ctx.seg, ctx.out_at, ctx.method = coupling, grid, seg, out_at, method
        return out

    @staticmethod
    def backward(ctx, grad_out):
        X, R, Wt, drive = ctx.saved_tensors
        coupling, grid, seg, out_at, method = ctx.coupling, ctx.grid, ctx.seg, ctx.out_at, ctx.method
        a_tab, b_tab = TABLEAUS[method]
        n_st = len(b_tab)
        P = coupling.P
        inv_m, inv_a, kr = coupling.inv_tau_m, coupling.inv_tau_a, coupling.kappa_over_tau_a
        W = Wt.T
        n_steps = len(grid) - 1
        GV = torch.zeros_like(X)  # dL/dk_V of every stage: the coupling's and drive's cotangents
        gy = grad_out.sum(0) * 0
        lamV, lamA = gy[:, :P].clone(), gy[:, P:].clone()
        for n in range(n_steps, -1, -1):
            for j in out_at.get(n, ()):
                lamV.add_(grad_out[j, :, :P])
                lamA.add_(grad_out[j, :, P:])
            if n == 0:
                break
            n -= 1
            h = grid[n + 1] - grid[n]
            Sn = slope(X[n], R[n], *coupling.abd)  # f'(x) of the step's stages
            gkV = [lamV * (h * bi) if bi else None for bi in b_tab]
            gkA = [lamA * (h * bi) if bi else None for bi in b_tab]
            for i in range(n_st - 1, -1, -1):
                gV, gA = gkV[i], gkA[i]
                if gV is None:
                    continue
                GV[n, i] = gV
                s = torch.addmm(gA * kr, gV, W).mul_(Sn[i])
                uV = torch.add(s, gV, alpha=-inv_m)
                uA = torch.mul(gA, -inv_a).sub_(s)
                lamV.add_(uV)
                lamA.add_(uA)
                for m in range(i):
                    aim = a_tab[i - 1][m]
                    if aim:
                        if gkV[m] is None:
                            gkV[m], gkA[m] = uV * (h * aim), uA * (h * aim)
                        else:
                            gkV[m].add_(uV, alpha=h * aim)
                            gkA[m].add_(uA, alpha=h * aim)
        g_Wt = g_drive = None
        if ctx.needs_input_grad[1]:  # sum over steps, stages and trials of r^T gV
            g_Wt = R.reshape(-1, P).T @ GV.reshape(-1, P)
        if ctx.needs_input_grad[2]:
            per_step = GV.sum(1)  # (n_steps, B, P)
            seg_t = torch.as_tensor(seg, device=X.device)
            g = torch.zeros((drive.shape[1],) + tuple(per_step.shape[1:]), dtype=X.dtype, device=X.device)
            g = g.index_add_(0, seg_t, per_step).transpose(0, 1)  # (B, K, P)
            g_drive = g if drive.shape[0] > 1 else g.sum(0, keepdim=True)
        return torch.cat([lamV, lamA], 1), g_Wt, g_drive, None, None, None, None, None, None


def fused_solve(coupling, y0: torch.Tensor, grid: Sequence[float], seg: Sequence[int],
                out_idx: Sequence[int], method: str,
                watch: Callable[[int, float, torch.Tensor], None]) -> torch.Tensor:
    """Integrate ``coupling``'s vector field on ``grid`` with an explicit RK ``method``.

    Parameters
    ----------
    coupling : colplugin.network.Coupling
        A dense coupling (``coupling.dense``).
    y0 : torch.Tensor, shape (B, 2P)
        Initial state, mV.
    grid : sequence of float
        Increasing grid times in s (contains every stimulus change point and output time).
    seg : sequence of int
        Stimulus segment of each step (``len(grid) - 1`` entries).
    out_idx : sequence of int
        Grid indices of the output times.
    method : {"euler", "midpoint", "rk4"}
    watch : callable
        ``watch(step, t, V, A)`` after every step; raises to stop a diverging solve.

    Returns
    -------
    torch.Tensor, shape (len(out_idx), B, 2P)
        Differentiable with respect to ``y0`` and the coupling's tensors.
    """
    if not coupling.dense:
        raise ValueError("the fused solver needs a dense coupling (networks of at most "
                         "ColumnNetwork.dense_max_populations populations); use Solver(fused=False)")
    if method not in TABLEAUS:
        raise ValueError(f"the fused solver supports {sorted(TABLEAUS)}, not {method!r}")
    if len(seg) != len(grid) - 1 or any(math.isnan(g) for g in grid):
        raise ValueError("fused_solve: one stimulus segment per grid step is required")
    return _FusedSolve.apply(y0, coupling.Wt, coupling.drive, coupling, list(grid), list(seg),
                             list(out_idx), method, watch)
