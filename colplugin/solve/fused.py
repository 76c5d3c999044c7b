"""Fused explicit Runge-Kutta solves of a network's field, with a hand-derived backward pass.

torchdiffeq is the reference solver; this module integrates the *same* schemes (``euler``,
``midpoint``, torchdiffeq's ``rk4`` - the 3/8 rule - on the same fixed grid, and the
Dormand-Prince ``dopri5`` pair with torchdiffeq's error norm and step-size rule) for dense
fields (one P x P coupling matrix, :class:`~colplugin.field.FusedOperators`) and sparse
ones (per-area 8 x 8 intra-column blocks plus the inter-column edge list,
:class:`~colplugin.field.SparseFusedOperators`, whose cost grows with the number of
connections). For networks of a few columns one vector-field evaluation is a handful of
small tensor operations, so per-operation overhead, not arithmetic, sets the cost. Here

* the forward solve builds no autograd graph; it keeps w and g of every stage of every
  accepted step (see :class:`~colplugin.field.FusedOperators`);
* every stage is formed with one matrix product, ``Y_i = y + h (a_i . K)``, ``K`` the stacked
  stage derivatives;
* the backward pass is the discrete adjoint of the Runge-Kutta scheme over the accepted
  steps, with the field's transposed Jacobian-vector products,

      k_i = F(Y_i),  Y_i = y + h sum_j a_ij k_j,  y' = y + h sum_i b_i k_i
      gk_i = h b_i lam + h sum_{j>i} a_ji u_j,   u_i = (dF/dy)(Y_i)^T gk_i,   lam <- lam + sum_i u_i

  which is the exact gradient of the discrete solve (for fixed grids, the number direct
  backpropagation through torchdiffeq's ``odeint`` gives; for dopri5, the gradient with the
  accepted step sizes held fixed).

Everything model-specific (the stage evaluation, its Jacobian products and the parameter
cotangents) comes from :meth:`colplugin.field.Field.fused`; this module holds the schemes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from ..field import Field, FusedOperators

__all__ = ["Tableau", "TABLEAUS", "StepSizeUnderflow", "fused_solve"]


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

# torchdiffeq's step-size controller constants (rk_common._optimal_step_size)
_SAFETY, _IFACTOR, _DFACTOR = 0.9, 10.0, 0.2
# largest h * rho accepted by the stiffness cap (dopri5's stability region reaches ~3.3 on the
# negative real axis). A step-size controller alone lets h hover at the stability boundary in
# settled phases, where the error estimate is tiny; the forward solve stays bounded there, but
# the discrete adjoint multiplies amplification factors slightly above 1 over many steps.
_STIFF_LIMIT = 0.9 * 3.3


class StepSizeUnderflow(RuntimeError):
    """The adaptive step shrank below 1e-12 of the interval: the solve diverged or is too stiff."""


class _FusedSolve(torch.autograd.Function):
    """States at the output stops; backward = discrete adjoint over the accepted steps."""

    @staticmethod
    def forward(ctx, y0, drive, ops: FusedOperators, stops, seg, out_idx, method, watch, opts, *params):
        tab = TABLEAUS[method]
        s, s_sol = tab.stages, tab.solution_stages
        P = ops.P
        dt, dev = y0.dtype, y0.device
        B, N = y0.shape[0], y0.numel()
        A_full = torch.zeros(s, s, dtype=dt, device=dev)
        for i, row in enumerate(tab.a, start=1):
            A_full[i, :len(row)] = torch.tensor(row, dtype=dt)
        a_rows = [A_full[i:i + 1, :i].contiguous() for i in range(s)]
        b_row = torch.tensor([tab.b[:s_sol]], dtype=dt, device=dev)
        e_row = None if tab.b_err is None else torch.tensor([tab.b_err], dtype=dt, device=dev)
        K = torch.empty(s, N, dtype=dt, device=dev)
        Kv = [K[i].view(B, 2 * P) for i in range(s)]
        keep = any(ctx.needs_input_grad)
        adaptive = e_row is not None
        rtol, atol, h_next, watch_every = opts["rtol"], opts["atol"], opts["step"], opts["watch_every"]

        ws: list[torch.Tensor] = []  # accepted steps' stage w and g (for the backward pass)
        gv: list[torch.Tensor] = []
        steps: list[tuple[float, int]] = []  # (h, segment) of every accepted step
        landed: dict[int, int] = {}  # stop index -> number of accepted steps before it
        out_at: dict[int, list[int]] = {}
        for j, n in enumerate(out_idx):
            out_at.setdefault(n, []).append(j)
        out = torch.empty((len(out_idx),) + tuple(y0.shape), dtype=dt, device=dev)
        for j in out_at.get(0, ()):
            out[j] = y0

        def stage(i: int, y: torch.Tensor, h: float, dr: torch.Tensor, Y: torch.Tensor | None = None):
            if Y is None:
                Y = y if i == 0 else torch.addmm(y.view(1, N), a_rows[i], K[:i], alpha=h).view(B, 2 * P)
            w, g = ops.stage(Y, dr, Kv[i])
            if i == s - 2:
                Ys[0] = Y
            return w, g

        Ys: list[torch.Tensor] = [y0]  # the second-to-last stage's input (stiffness estimate)

        y = y0
        first: tuple[torch.Tensor, torch.Tensor] | None = None  # stage 1 (w, g) of the next step
        nxt = first
        n_attempts = 0
        for m in range(len(stops) - 1):
            t, t_end, k = stops[m], stops[m + 1], seg[m]
            dr = drive[:, k]
            if m == 0 or k != seg[m - 1]:
                first = None  # the drive changed: stage 1 must be re-evaluated
            while t < t_end:
                rem = t_end - t
                last = not adaptive or h_next >= rem * (1 - 1e-9)
                h = rem if last else h_next
                if first is None:
                    first = stage(0, y, h, dr)
                if n_attempts % watch_every == 0:
                    watch(t, first[0], watch_every)
                n_attempts += 1
                stage_wg = [first]
                for i in range(1, s_sol):
                    stage_wg.append(stage(i, y, h, dr))
                y_new = torch.addmm(y.view(1, N), b_row, K[:s_sol], alpha=h).view(B, 2 * P)
                if adaptive:
                    nxt = stage(s - 1, y, h, dr, Y=y_new)  # FSAL stage at the new solution
                    err = torch.mm(e_row, K).view(B, 2 * P).mul_(h)
                    tol = torch.maximum(y.abs(), y_new.abs()).mul_(rtol).add_(atol)
                    # stiffness: the last two stages share c = 1, so |k_s - k_s-1| / |Y_s - Y_s-1|
                    # estimates the spectral radius rho of the Jacobian (Hairer & Wanner, DOPRI5);
                    # per trial, and the stiffest trial counts
                    num = torch.linalg.vector_norm((Kv[s - 1] - Kv[s - 2]), dim=1)
                    den = torch.linalg.vector_norm(y_new - Ys[0], dim=1)
                    rho = (num / den).nan_to_num_(nan=0.0, posinf=0.0).max()
                    ratio = float(torch.linalg.vector_norm(err.div_(tol))) / math.sqrt(N)  # RMS norm
                    rho = float(rho)
                    if not ratio <= 1.0:  # rejected (or NaN): shrink and retry
                        fac = max(_DFACTOR, _SAFETY * ratio ** (-1 / tab.order)) if math.isfinite(ratio) else _DFACTOR
                        h_next = h * fac
                        if h_next < 1e-12 * max(abs(t_end), 1.0):
                            raise StepSizeUnderflow(f"step size underflow at t = {t:.6g} s")
                        continue
                    fac = min(_IFACTOR, max(_DFACTOR, _SAFETY * ratio ** (-1 / tab.order))) if ratio > 0 else _IFACTOR
                    if not last or fac < 1.0:  # a step shortened to land on a stop keeps the proposal
                        h_next = h * fac
                    if rho > 0:  # stay inside the stability region: h rho < 0.9 * 3.3
                        h_next = min(h_next, _STIFF_LIMIT / rho)
                    K[0].copy_(K[s - 1])
                if keep:
                    for wi, gi in stage_wg:
                        ws.append(wi)
                        gv.append(gi)
                    steps.append((h, k))
                y = y_new
                first = nxt if adaptive else None
                t = t_end if last else t + h
            landed[m + 1] = len(steps)
            for j in out_at.get(m + 1, ()):
                out[j] = y
        if keep:
            n = len(steps)
            shape = (n, s_sol, B, P)
            Wst = torch.stack(ws).reshape(shape) if n else torch.empty(shape, dtype=dt, device=dev)
            Gst = torch.stack(gv).reshape(shape) if n else torch.empty(shape, dtype=dt, device=dev)
            ctx.save_for_backward(Wst, Gst, drive)
        ctx.ops, ctx.steps, ctx.method = ops, steps, method
        ctx.out_at = {landed[m]: js for m, js in out_at.items() if m > 0}
        ctx.out_at0 = out_at.get(0, [])
        ctx.n_segments = drive.shape[1]
        opts["nfe"] = n_attempts * (s - 1 if tab.fsal else s)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        Wst, Gst, drive = ctx.saved_tensors  # w and g of every stage (steps, stages, B, P)
        need_p = ctx.needs_input_grad[9:]
        ops, steps, tab = ctx.ops, ctx.steps, TABLEAUS[ctx.method]
        s = tab.solution_stages
        P = ops.P
        B = grad_out.shape[1]
        N = B * 2 * P
        dt, dev = Wst.dtype, Wst.device
        A_full = torch.zeros(s, s, dtype=dt, device=dev)
        for i, row in enumerate(tab.a[:s - 1], start=1):
            A_full[i, :len(row)] = torch.tensor(row, dtype=dt)
        a_cols = [A_full[i + 1:, i].reshape(1, -1).contiguous() for i in range(s)]  # a_ji, j > i
        U = torch.empty(s, N, dtype=dt, device=dev)
        Uv = [U[i].view(B, 2 * P) for i in range(s)]
        gs: list[torch.Tensor] = []  # dL/dk of every stage, last step first
        lam = torch.zeros_like(grad_out[0])
        for n in range(len(steps) - 1, -1, -1):
            for j in ctx.out_at.get(n + 1, ()):
                lam.add_(grad_out[j])
            h = steps[n][0]
            S = ops.slope(Wst[n], Gst[n])  # dg/dz of the step's stages (z = -w)
            for i in range(s - 1, -1, -1):
                bi = tab.b[i]
                if i == s - 1:
                    gk = lam * (h * bi)
                else:
                    gk = torch.addmm(lam.view(1, N), a_cols[i], U[i + 1:], beta=h * bi, alpha=h).view(B, 2 * P)
                gs.append(gk)
                ops.vjp(gk, S[i], Uv[i])
            lam.add_(U.sum(0).view(B, 2 * P))
        for j in ctx.out_at0:
            lam.add_(grad_out[j])
        g_params: tuple = (None,) * len(need_p)
        g_drive = None
        if steps and (any(need_p) or ctx.needs_input_grad[1]):
            G = torch.stack(gs[::-1]).reshape(len(steps), s, B, 2 * P)  # forward order
            if any(need_p):  # sums over steps, stages and trials of g (source) times gk (target)
                g_params = ops.grad_params(Gst, G, need_p)
            if ctx.needs_input_grad[1]:
                seg_t = torch.tensor([k for _, k in steps], device=dev)
                g = torch.zeros((ctx.n_segments, B, 2 * P), dtype=dt, device=dev).index_add_(0, seg_t, G.sum(1))
                g = g.transpose(0, 1)  # (B, K, P)
                g_drive = g if drive.shape[0] > 1 else g.sum(0, keepdim=True)
        elif any(need_p) or ctx.needs_input_grad[1]:
            g_params = tuple(torch.zeros_like(p) if n else None for p, n in zip(ops.params, need_p))
            g_drive = torch.zeros_like(drive)
        return (lam, g_drive, None, None, None, None, None, None, None) + tuple(g_params)


def fused_solve(field: Field, y0: torch.Tensor, stops: Sequence[float], seg: Sequence[int],
                out_idx: Sequence[int], method: str, watch: Callable[[float, torch.Tensor, int], None], *,
                step: float = 5e-4, rtol: float = 1e-6, atol: float = 1e-6,
                watch_every: int = 25, edge_product: str | None = None) -> tuple[torch.Tensor, int]:
    """Integrate ``field`` through ``stops`` with an explicit Runge-Kutta ``method``.

    Parameters
    ----------
    field : colplugin.field.Field
        The network's field, dense or sparse (``field.dense``); on any device.
    y0 : torch.Tensor, shape (B, 2P)
        Initial state, mV.
    stops : sequence of float
        Increasing times in s that every solve lands on: the start, the stimulus change
        points, the output times and the end. Fixed-step methods take exactly one step
        between consecutive stops (pass the whole grid); adaptive ones as many as needed.
    seg : sequence of int
        Stimulus segment between consecutive stops (``len(stops) - 1`` entries).
    out_idx : sequence of int
        Indices into ``stops`` of the output times.
    method : {"euler", "midpoint", "rk4", "dopri5"}
    watch : callable
        ``watch(t, x, steps)`` every ``watch_every`` steps with ``x = V - A`` (mV) of a recent
        stage; raises to stop a diverging solve.
    step : float
        Initial step of adaptive methods (s).
    rtol, atol : float
        Tolerances of adaptive methods (torchdiffeq's RMS error norm).
    watch_every : int
    edge_product : {"index_add", "csr"}, optional
        How a sparse field applies its edge list (default
        :data:`colplugin.field.EDGE_PRODUCT`).

    Returns
    -------
    states : torch.Tensor, shape (len(out_idx), B, 2P)
        Differentiable with respect to ``y0`` and the field's tensors.
    nfe : int
        Vector-field evaluations.

    Raises
    ------
    StepSizeUnderflow
        If an adaptive step shrinks to nothing.
    ValueError
        For an unknown method or inconsistent segments.
    """
    if method not in TABLEAUS:
        raise ValueError(f"the fused solver supports {sorted(TABLEAUS)}, not {method!r}")
    if len(seg) != len(stops) - 1:
        raise ValueError("fused_solve: one stimulus segment per interval between stops is required")
    ops = field.fused(edge_product)
    opts = {"rtol": rtol, "atol": atol, "step": step, "watch_every": watch_every}

    def watch_x(t: float, w: torch.Tensor, steps: int) -> None:
        watch(t, ops.potential(w), steps)

    out = _FusedSolve.apply(y0, ops.drive, ops, list(stops), list(seg), list(out_idx),
                            method, watch_x, opts, *ops.params)
    return out, opts["nfe"]
