"""Fused explicit Runge-Kutta solves of a network's field, with a hand-derived backward pass.

torchdiffeq is the reference solver; this module integrates the *same* schemes (``euler``,
``midpoint``, torchdiffeq's ``rk4`` - the 3/8 rule - on the same fixed grid, and the
Dormand-Prince ``dopri5`` pair with torchdiffeq's error norm and step-size rule) for dense
fields (one P x P coupling matrix, :class:`~colplugin.field.FusedOperators`) and sparse
ones (per-area 8 x 8 intra-column blocks plus the inter-column edge list,
:class:`~colplugin.field.SparseFusedOperators`, whose cost grows with the number of
connections). For networks of a few columns one vector-field evaluation is a handful of
small tensor operations, so per-operation overhead, not arithmetic, sets the cost. Here

* the forward solve builds no autograd graph; for the backward pass it keeps w and g of
  every stage of every accepted step (see :class:`~colplugin.field.FusedOperators`) while
  they are small, and otherwise only the state before every M-th accepted step
  (checkpoints): the backward pass then recomputes the stages of one chunk of M steps at a
  time from its checkpoint, with the recorded step sizes and the forward's operations, so
  memory grows with sqrt(steps) instead of steps for one extra forward pass of work;
* every stage is formed with one matrix product, ``Y_i = y + h (a_i . K)``, ``K`` the stacked
  stage derivatives;
* the backward pass is the discrete adjoint of the Runge-Kutta scheme over the accepted
  steps, with the field's transposed Jacobian-vector products,

      k_i = F(Y_i),  Y_i = y + h sum_j a_ij k_j,  y' = y + h sum_i b_i k_i
      gk_i = h b_i lam + h sum_{j>i} a_ji u_j,   u_i = (dF/dy)(Y_i)^T gk_i,   lam <- lam + sum_i u_i

  which is the exact gradient of the discrete solve (for fixed grids, the number direct
  backpropagation through torchdiffeq's ``odeint`` gives; for dopri5, the gradient with the
  accepted step sizes held fixed);
* outputs between stops (``out_idx`` -1) are dopri5's dense output inside the accepted step
  that covers them, ``o = y + h sum_i b_i(theta) k_i`` over all seven stages (the FSAL stage
  included), so the steps do not depend on the output times; in the backward pass an output's
  cotangent g adds ``h b_i(theta) g`` to gk_i and g to the step's lam, and the FSAL stage,
  ``Y_7 = y + h sum_j b_j k_j``, joins the adjoint recursion of the steps that have such outputs.

Everything model-specific (the stage evaluation, its Jacobian products and the parameter
cotangents) comes from :meth:`colplugin.field.Field.fused`; this module holds the schemes.
On the CPU, :func:`fused_solve` hands small and medium solves to the same loop compiled
(:mod:`colplugin.solve.compiled`), which removes the per-operation overhead; this module's
eager loop runs everywhere else (GPUs, large batches, no C compiler) and is the kernel's
reference in the tests.
"""

from __future__ import annotations

import math
import numbers
from typing import Callable, Sequence

import torch

from ..field import Field, FusedOperators
from . import compiled
from .rosenbrock import ROSENBROCK, rosenbrock_solve
from .tableaus import TABLEAUS, StepSizeUnderflow, Tableau

__all__ = ["Tableau", "TABLEAUS", "FUSED_METHODS", "StepSizeUnderflow", "KEEP_ALL_BYTES", "fused_solve"]


# torchdiffeq's step-size controller constants (rk_common._optimal_step_size)
_SAFETY, _IFACTOR, _DFACTOR = 0.9, 10.0, 0.2
# largest h * rho accepted by the stiffness cap (dopri5's stability region reaches ~3.3 on the
# negative real axis). A step-size controller alone lets h hover at the stability boundary in
# settled phases, where the error estimate is tiny; the forward solve stays bounded there, but
# the discrete adjoint multiplies amplification factors slightly above 1 over many steps.
_STIFF_LIMIT = 0.9 * 3.3


#: Bytes of stored stage values (w and g of every stage of every accepted step, the
#: forward's share) up to which the automatic choice (``checkpoint_every=None``) keeps every
#: stage for the backward pass; beyond, the forward keeps checkpointed states only.
KEEP_ALL_BYTES = 64 * 2 ** 20

#: Every method of the fused backend: the explicit Runge-Kutta schemes (:data:`TABLEAUS`) and
#: the Rosenbrock-W schemes (:data:`colplugin.solve.rosenbrock.ROSENBROCK`, eager loop only).
FUSED_METHODS = tuple(sorted(set(TABLEAUS) | set(ROSENBROCK)))


def check_checkpoint_every(value) -> int | None:
    """``value`` as a checkpoint spacing: None (automatic), 0 (keep every stage) or a positive int.

    Raises
    ------
    ValueError
        For a negative number or anything that is not an integer.
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ValueError(f"checkpoint_every must be None (automatic), 0 (keep every stage) or a positive "
                         f"number of accepted steps between checkpoints (an int), got {value!r}")
    return int(value)


class _Scheme:
    """One explicit Runge-Kutta scheme's stage loop on one batch of states.

    The forward solve and the backward pass's recomputation of a checkpointed chunk call
    the same methods with the same step sizes, so the recomputed stages are the same
    arithmetic as the forward's (on the same device and library).
    """

    def __init__(self, tab: Tableau, ops: FusedOperators, B: int, dt: torch.dtype, dev: torch.device) -> None:
        s = tab.stages
        self.tab, self.ops, self.s, self.s_sol = tab, ops, s, tab.solution_stages
        self.P = P = ops.P
        self.B, self.N = B, B * 2 * P
        A_full = torch.tensor(tab.stage_matrix, dtype=dt, device=dev)
        self.a_rows = [A_full[i:i + 1, :i].contiguous() for i in range(s)]
        self.b_row = torch.tensor([tab.b[:self.s_sol]], dtype=dt, device=dev)
        self.e_row = None if tab.b_err is None else torch.tensor([tab.b_err], dtype=dt, device=dev)
        self.Q = None if tab.interpolant is None else torch.tensor(tab.interpolant, dtype=dt, device=dev)
        self.K = torch.empty(s, self.N, dtype=dt, device=dev)  # stacked stage derivatives
        self.Kv = [self.K[i].view(B, 2 * P) for i in range(s)]
        self.Ys: torch.Tensor | None = None  # the second-to-last stage's input (stiffness estimate)

    def stage(self, i: int, y: torch.Tensor, h: float, dr: torch.Tensor,
              Y: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Evaluate stage i of a step of h (s) from y (mV) into ``K[i]``; return its w and g."""
        if Y is None:
            Y = y if i == 0 else torch.addmm(y.view(1, self.N), self.a_rows[i], self.K[:i],
                                             alpha=h).view(self.B, 2 * self.P)
        w, g = self.ops.stage(Y, dr, self.Kv[i])
        if i == self.s - 2:
            self.Ys = Y
        return w, g

    def solution(self, y: torch.Tensor, h: float) -> torch.Tensor:
        """The new state y + h sum_i b_i k_i (mV) from the stages in ``K``."""
        return torch.addmm(y.view(1, self.N), self.b_row, self.K[:self.s_sol], alpha=h).view(self.B, 2 * self.P)

    def interpolate(self, y: torch.Tensor, h: float, theta: Sequence[float]) -> torch.Tensor:
        """The dense output y(t + theta h), (len(theta), B, 2P) mV, of the step of h (s) from y whose
        stages (the FSAL stage included) are in ``K``: y + h sum_i b_i(theta) k_i."""
        D = torch.mm(self.Q.T, self.K).mul_(h)  # coefficients of theta^1..theta^4
        th = torch.tensor(theta, dtype=y.dtype, device=y.device).view(-1, 1)
        powers = torch.cat([th, th ** 2, th ** 3, th ** 4], dim=1)
        return torch.addmm(y.view(1, self.N), powers, D).view(len(theta), self.B, 2 * self.P)

    def fsal(self, y_new: torch.Tensor, h: float, dr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The FSAL stage at the new state (into ``K[s-1]``): the next step's first stage."""
        return self.stage(self.s - 1, y_new, h, dr, Y=y_new)

    def adapt(self, y: torch.Tensor, y_new: torch.Tensor, h: float, dr: torch.Tensor, h_next: float, last: bool,
              rtol: float, atol: float) -> tuple[tuple[torch.Tensor, torch.Tensor], bool, float]:
        """Evaluate the FSAL stage at ``y_new`` and judge the adaptive step of h (s) from y to y_new (mV).

        The step-size rule is torchdiffeq's (RMS error norm, safety factor, growth and shrink
        limits) with a stiffness cap. The FSAL stage is evaluated here, not through
        :meth:`fsal`, so that a step costs no more Python calls than the error estimate needs.

        Parameters
        ----------
        h_next : float
            The step (s) the controller proposed for this step; a step shortened to land on a
            stop (``last``) keeps it unless the error asks for a smaller one.
        rtol, atol : float
            Relative and absolute tolerances (atol in mV).

        Returns
        -------
        fsal : tuple of torch.Tensor
            w and g of the FSAL stage (into ``K[s-1]``): the next step's first stage.
        accepted : bool
            Whether the error is within the tolerances (False for a NaN error).
        h_next : float
            The next step to try, s: shrunk after a rejection, else the accepted step's
            proposal, at most :data:`_STIFF_LIMIT` / rho.
        """
        s, order, Kv = self.s, self.tab.order, self.Kv
        nxt = self.stage(s - 1, y_new, h, dr, Y=y_new)  # the FSAL stage at the new solution
        err = torch.mm(self.e_row, self.K).view(self.B, 2 * self.P).mul_(h)
        tol = torch.maximum(y.abs(), y_new.abs()).mul_(rtol).add_(atol)
        # stiffness: the last two stages share c = 1, so |k_s - k_s-1| / |Y_s - Y_s-1|
        # estimates the spectral radius rho of the Jacobian (Hairer & Wanner, DOPRI5);
        # per trial, and the stiffest trial counts
        num = torch.linalg.vector_norm((Kv[s - 1] - Kv[s - 2]), dim=1)
        den = torch.linalg.vector_norm(y_new - self.Ys, dim=1)
        rho = (num / den).nan_to_num_(nan=0.0, posinf=0.0).max()
        ratio = float(torch.linalg.vector_norm(err.div_(tol))) / math.sqrt(self.N)  # RMS norm
        rho = float(rho)
        if not ratio <= 1.0:  # rejected (or NaN): shrink
            fac = max(_DFACTOR, _SAFETY * ratio ** (-1 / order)) if math.isfinite(ratio) else _DFACTOR
            return nxt, False, h * fac
        fac = min(_IFACTOR, max(_DFACTOR, _SAFETY * ratio ** (-1 / order))) if ratio > 0 else _IFACTOR
        if not last or fac < 1.0:  # a step shortened to land on a stop keeps the proposal
            h_next = h * fac
        if rho > 0:  # stay inside the stability region: h rho < 0.9 * 3.3
            h_next = min(h_next, _STIFF_LIMIT / rho)
        return nxt, True, h_next

    def replay(self, y: torch.Tensor, drive: torch.Tensor, steps: Sequence[tuple[float, int]],
               fresh: Sequence[bool], a: int, b: int, kept: int) -> tuple[torch.Tensor, torch.Tensor]:
        """w and g, each (b - a, kept, B, P), of the first ``kept`` stages (the solution stages, or
        all with the FSAL stage for dense output) of accepted steps a..b-1 from the state y before
        step a, with the forward's operations in the forward's order.

        A step's first stage is evaluated afresh where the forward did (fixed-step methods,
        a new stimulus segment); otherwise it is the previous step's FSAL stage, evaluated
        (into ``K[s-1]``, then copied) at the step's initial state, as in the forward.
        """
        s, s_sol, B, P = self.s, self.s_sol, self.B, self.P
        W = torch.empty((b - a, kept, B, P), dtype=y.dtype, device=y.device)
        G = torch.empty_like(W)
        adaptive = self.e_row is not None
        nxt = None
        for n in range(a, b):
            h, k = steps[n]
            dr = drive[:, k]
            if fresh[n] or not adaptive:
                first = self.stage(0, y, h, dr)
            elif nxt is None:  # the chunk's first step: the forward had it from the previous step
                first = self.fsal(y, h, dr)
                self.K[0].copy_(self.K[s - 1])
            else:
                first = nxt
            W[n - a, 0], G[n - a, 0] = first
            for i in range(1, s_sol):
                W[n - a, i], G[n - a, i] = self.stage(i, y, h, dr)
            y_new = self.solution(y, h)
            nxt = None
            if kept > s_sol:  # the FSAL stage enters the dense output
                W[n - a, s - 1], G[n - a, s - 1] = self.fsal(y_new, h, dr)
                if n + 1 < b and not fresh[n + 1]:
                    nxt = (W[n - a, s - 1], G[n - a, s - 1])
                    self.K[0].copy_(self.K[s - 1])
            elif adaptive and n + 1 < b and not fresh[n + 1]:
                nxt = self.fsal(y_new, h, dr)
                self.K[0].copy_(self.K[s - 1])
            y = y_new
        return W, G


def _storage_plan(every: int | None, step_bytes: int) -> tuple[bool, bool, int]:
    """What the forward keeps for the backward pass, from ``opts["checkpoint_every"]``.

    Parameters
    ----------
    every : int or None
        None (automatic), 0 (every stage) or the checkpoint spacing M (accepted steps).
    step_bytes : int
        Bytes of one accepted step's stored stages (w and g), B.

    Returns
    -------
    auto : bool
        Whether the spacing is automatic (grows with the solve).
    keep_all : bool
        Whether every stage is kept (to begin with, when automatic).
    M : int
        Checkpoint spacing, accepted steps (automatic: at least the steps whose stages fit
        :data:`KEEP_ALL_BYTES`; 0 with ``every=0``: no checkpoints).
    """
    if every is None:  # every stage while small; checkpoints (M at least what fits the budget) beyond
        return True, True, max(1, KEEP_ALL_BYTES // step_bytes)
    return False, every == 0, every


def _output_rows(out_idx: Sequence[int], y0: torch.Tensor) -> tuple[torch.Tensor, dict[int, list[int]]]:
    """The output tensor, (len(out_idx), B, 2P) with the rows at stop 0 set to ``y0`` (mV), and the
    output rows of every stop index (``{stop: [row, ...]}``; rows of index -1 are interpolated)."""
    out_at: dict[int, list[int]] = {}
    for j, n in enumerate(out_idx):
        if n >= 0:
            out_at.setdefault(n, []).append(j)
    out = torch.empty((len(out_idx),) + tuple(y0.shape), dtype=y0.dtype, device=y0.device)
    for j in out_at.get(0, ()):
        out[j] = y0
    return out, out_at


def _add_checkpoint(cks: list[torch.Tensor], y: torch.Tensor, M: int, thin: bool, s_sol: int) -> int:
    """Append the state ``y`` (mV) before accepted step ``len(cks) * M`` to the checkpoints ``cks``.

    With ``thin`` (automatic spacing), every second checkpoint is dropped and M doubled once
    the checkpoints outweigh a chunk's ``s_sol`` stages. Returns the spacing M (accepted steps).
    """
    cks.append(y)
    if thin and len(cks) > 2 * s_sol * M:  # checkpoints outweigh a chunk: halve them
        del cks[1::2]
        M *= 2
    return M


def _check_shrunk_step(h: float, t: float, t_end: float) -> None:
    """Refuse a step h (s), shrunk after a rejection at t (s), that is negligible next to the stop t_end (s).

    Raises
    ------
    StepSizeUnderflow
        If h < 1e-12 max(|t_end|, 1 s).
    """
    if h < 1e-12 * max(abs(t_end), 1.0):
        raise StepSizeUnderflow(f"step size underflow at t = {t:.6g} s")


def _save_tape(ctx, drive: torch.Tensor, wg: list[tuple[torch.Tensor, torch.Tensor]], cks: list[torch.Tensor],
               keep_all: bool, shape: tuple[int, int, int, int], y0: torch.Tensor) -> None:
    """Save the drive and either every stage's w and g (``keep_all``) or the checkpoints for the backward pass.

    ``shape`` is (accepted steps, solution stages, B, P) of the stacked w and g (mV and Hz);
    ``wg`` is emptied once stacked.
    """
    if not keep_all:
        ctx.save_for_backward(drive, *cks)
        return
    if shape[0]:
        Wst = torch.stack([w for w, _ in wg]).reshape(shape)
        Gst = torch.stack([g for _, g in wg]).reshape(shape)
    else:
        Wst = torch.empty(shape, dtype=y0.dtype, device=y0.device)
        Gst = torch.empty(shape, dtype=y0.dtype, device=y0.device)
    wg.clear()
    ctx.save_for_backward(drive, Wst, Gst)


def _emit_inside(sch: _Scheme, pending: list[tuple[float, int]], out: torch.Tensor,
                 dense_at: dict[int, tuple[list[int], list[float]]], n: int, y: torch.Tensor, t: float, h: float,
                 t_new: float) -> None:
    """Interpolate the outputs of ``pending`` ((time, row), by time) inside accepted step n, from t to
    t_new = t + h (s), into their rows of ``out``; remove them from ``pending`` and record their
    rows and thetas (places in the step, 0-1) as ``dense_at[n]`` for the backward pass."""
    n_in = 0
    while n_in < len(pending) and pending[n_in][0] <= t_new:
        n_in += 1
    if not n_in:
        return
    rows = [j for _, j in pending[:n_in]]
    theta = [min(max((tj - t) / h, 0.0), 1.0) for tj, _ in pending[:n_in]]
    del pending[:n_in]
    out[rows] = sch.interpolate(y, h, theta)
    dense_at[n] = (rows, theta)


def _dense_cotangents(inside: tuple[list[int], list[float]] | None, grad_out: torch.Tensor, Q: torch.Tensor | None,
                      h: float, Gn: torch.Tensor, U: torch.Tensor,
                      s_sol: int) -> tuple[torch.Tensor | None, torch.Tensor | None, int]:
    """What the outputs interpolated inside one accepted step of h (s) add to its backward pass.

    Returns dL/dk_i from them, ``h sum_j b_i(theta_j) g_j`` (stages, N), the sum of their
    cotangents g_j (N), and the number of stages with a cotangent. Without such outputs:
    None, None and the solution stages (a kept FSAL stage's slots in ``Gn``, the step's
    dL/dk, and ``U`` are zeroed).
    """
    if inside is None:
        if Gn.shape[0] > s_sol:
            Gn[s_sol:].zero_()
            U[s_sol:].zero_()
        return None, None, s_sol
    rows, theta = inside
    N = grad_out[0].numel()
    th = torch.tensor(theta, dtype=grad_out.dtype, device=grad_out.device).view(1, -1)
    g_in = grad_out[rows].reshape(len(rows), N)
    G_pow = torch.mm(torch.cat([th, th ** 2, th ** 3, th ** 4]), g_in)  # sum_j theta_j^p g_j
    return torch.mm(Q, G_pow).mul_(h), g_in.sum(0), Gn.shape[0]


def _rows_by_steps(out_at: dict[int, list[int]], landed: dict[int, int]) -> dict[int, list[int]]:
    """The output rows of ``out_at`` (by stop index) by the number of accepted steps before their stop."""
    rows: dict[int, list[int]] = {}
    for m, js in out_at.items():
        rows.setdefault(landed.get(m, 0), []).extend(js)
    return rows


class _FusedSolve(torch.autograd.Function):
    """States at the output stops; backward = discrete adjoint over the accepted steps.

    Storage for the backward pass: either w and g of every stage of every accepted step
    (``ctx.every == 0``), or the state before every M-th accepted step (``ctx.every == M``),
    from which the backward pass recomputes one chunk of M steps at a time, last chunk
    first. ``opts["checkpoint_every"]``: None (automatic: every stage while they take at
    most :data:`KEEP_ALL_BYTES`, then checkpoints with M of about sqrt(steps / (2 stages)),
    doubled as the solve grows), 0 (every stage) or M.
    """

    @staticmethod
    def forward(ctx, y0, drive, ops: FusedOperators, stops, seg, out_idx, method, watch, opts, *params):
        tab = TABLEAUS[method]
        s, s_sol = tab.stages, tab.solution_stages
        sch = _Scheme(tab, ops, y0.shape[0], y0.dtype, y0.device)
        K, stage = sch.K, sch.stage
        keep = any(ctx.needs_input_grad)
        adaptive = sch.e_row is not None
        rtol, atol, h_next, watch_every = opts["rtol"], opts["atol"], opts["step"], opts["watch_every"]
        pending = list(opts.get("dense_rows", ()))  # (time, row) of the interpolated outputs, by time
        dense = bool(pending)
        kept = s if dense else s_sol  # stages the backward pass needs (dense output: the FSAL stage too)
        dense_at: dict[int, tuple[list[int], list[float]]] = {}  # accepted step -> its rows and thetas

        step_bytes = kept * y0.numel() * y0.element_size()  # w and g of one accepted step's stages
        auto, keep_all, M = _storage_plan(opts.get("checkpoint_every"), step_bytes)
        wg: list[tuple[torch.Tensor, torch.Tensor]] = []  # accepted steps' stage (w, g) (for the backward pass)
        cks: list[torch.Tensor] = []  # the state before accepted step c * M, c = 0, 1, ...
        steps: list[tuple[float, int]] = []  # (h, segment) of every accepted step
        fresh: list[bool] = []  # whether its first stage was evaluated afresh (not an FSAL stage)
        landed: dict[int, int] = {}  # stop index -> number of accepted steps before it
        out, out_at = _output_rows(out_idx, y0)

        y = y0
        first: tuple[torch.Tensor, torch.Tensor] | None = None  # stage 1 (w, g) of the next step
        first_fresh = True
        nxt = first
        n_attempts = 0
        for m in range(len(stops) - 1):
            t, t_end, k = stops[m], stops[m + 1], seg[m]
            dr = drive[:, k]
            if m == 0 or k != seg[m - 1]:
                first = None  # the drive changed: stage 1 must be re-evaluated
            while t < t_end:
                if keep and M and len(steps) == len(cks) * M:
                    M = _add_checkpoint(cks, y, M, auto, kept)
                rem = t_end - t
                last = not adaptive or h_next >= rem * (1 - 1e-9)
                h, t_new = (rem, t_end) if last else (h_next, t + h_next)
                if first is None:
                    first = stage(0, y, h, dr)
                    first_fresh = True
                if n_attempts % watch_every == 0:
                    watch(t, first[0], watch_every)
                n_attempts += 1
                stage_wg = [first]
                for i in range(1, s_sol):
                    stage_wg.append(stage(i, y, h, dr))
                y_new = sch.solution(y, h)
                if adaptive:
                    nxt, accepted, h_next = sch.adapt(y, y_new, h, dr, h_next, last, rtol, atol)
                    if not accepted:  # rejected (or NaN): retry with the shrunk step
                        _check_shrunk_step(h_next, t, t_end)
                        continue
                    _emit_inside(sch, pending, out, dense_at, len(steps), y, t, h, t_new)
                    stage_wg.extend([nxt] * (kept - s_sol))  # dense output: the FSAL stage too
                    K[0].copy_(K[s - 1])
                if keep:
                    if keep_all:
                        wg.extend(stage_wg)
                    steps.append((h, k))
                    fresh.append(first_fresh)
                    if keep_all and auto and len(steps) * step_bytes > KEEP_ALL_BYTES:
                        keep_all = False  # too large to keep: from here on the checkpoints serve
                        wg.clear()
                y = y_new
                first = nxt if adaptive else None
                first_fresh = False
                t = t_new
            landed[m + 1] = len(steps)
            for j in out_at.get(m + 1, ()):
                out[j] = y
        ctx.every = 0 if keep_all else M
        if keep:
            _save_tape(ctx, drive, wg, cks, keep_all, (len(steps), kept, y0.shape[0], ops.P), y0)
        ctx.ops, ctx.steps, ctx.fresh, ctx.method = ops, steps, fresh, method
        ctx.kept, ctx.dense_at = kept, dense_at
        # output rows by the number of accepted steps before them (several stops may share one)
        ctx.out_at = _rows_by_steps(out_at, landed)
        ctx.out_at0 = ctx.out_at.pop(0, [])
        ctx.n_segments = drive.shape[1]
        opts["nfe"] = n_attempts * (s - 1 if tab.fsal else s)
        opts["checkpoint_used"] = ctx.every if keep else None
        return out

    @staticmethod
    def backward(ctx, grad_out):
        drive, *saved = ctx.saved_tensors
        need_p = ctx.needs_input_grad[9:]
        need_drive = ctx.needs_input_grad[1]
        ops, steps, tab = ctx.ops, ctx.steps, TABLEAUS[ctx.method]
        s = ctx.kept  # the solution stages, and the FSAL stage where outputs were interpolated
        s_sol = tab.solution_stages
        P = ops.P
        B = grad_out.shape[1]
        N = B * 2 * P
        dt, dev = grad_out.dtype, grad_out.device
        A_full = torch.tensor(tab.stage_matrix, dtype=dt, device=dev)[:s, :s]  # the solution stages
        a_cols = [A_full[i + 1:, i].reshape(1, -1).contiguous() for i in range(s)]  # a_ji, j > i
        Q = None if tab.interpolant is None else torch.tensor(tab.interpolant, dtype=dt, device=dev)
        U = torch.zeros(s, N, dtype=dt, device=dev)
        Uv = [U[i].view(B, 2 * P) for i in range(s)]
        n_steps = len(steps)
        M = ctx.every or max(n_steps, 1)
        if ctx.every:
            sch = _Scheme(tab, ops, B, dt, dev)
            n_chunks = len(saved)
        else:
            n_chunks = 1 if n_steps else 0
        need_pd = any(need_p) or need_drive
        g_params: list = [None] * len(need_p)
        g_seg = torch.zeros((ctx.n_segments, B, 2 * P), dtype=dt, device=dev) if need_drive else None
        seg_t = torch.tensor([k for _, k in steps], device=dev) if need_drive else None
        lam = torch.zeros_like(grad_out[0])
        for c in range(n_chunks - 1, -1, -1):  # last chunk first
            a, b = c * M, min((c + 1) * M, n_steps)
            if ctx.every:
                with torch.no_grad():
                    Wst, Gst = sch.replay(saved[c], drive, steps, ctx.fresh, a, b, s)
            else:
                Wst, Gst = saved
            # dL/dk of every stage of the chunk (forward order), or one step's worth
            Gk = torch.empty((b - a if need_pd else 1, s, B, 2 * P), dtype=dt, device=dev)
            for n in range(b - 1, a - 1, -1):
                for j in ctx.out_at.get(n + 1, ()):
                    lam.add_(grad_out[j])
                h = steps[n][0]
                S = ops.slope(Wst[n - a], Gst[n - a])  # dg/dz of the step's stages (z = -w)
                Gn = Gk[n - a if need_pd else 0]
                # the outputs interpolated inside the step (with them, the FSAL stage has a cotangent)
                extra, g_sum, top = _dense_cotangents(ctx.dense_at.get(n), grad_out, Q, h, Gn, U, s_sol)
                for i in range(top - 1, -1, -1):
                    gk = Gn[i]  # h b_i lam + h sum_{i<j<top} a_ji U_j (the last stage: h b_i lam)
                    torch.addmm(lam.view(1, N), a_cols[i][:, :top - i - 1], U[i + 1:top], beta=h * tab.b[i], alpha=h,
                                out=gk.view(1, N))
                    if extra is not None:
                        gk.view(1, N).add_(extra[i])
                    ops.vjp(gk, S[i], Uv[i])
                lam.add_(U.sum(0).view(B, 2 * P))
                if g_sum is not None:
                    lam.add_(g_sum.view(B, 2 * P))
            if any(need_p):  # sums over steps, stages and trials of g (source) times gk (target)
                part = ops.grad_params(Gst, Gk, need_p)
                g_params = [q if p is None else p.add_(q) for p, q in zip(g_params, part)]
            if need_drive:
                g_seg.index_add_(0, seg_t[a:b], Gk.sum(1))
            del Wst, Gst, Gk
        for j in ctx.out_at0:
            lam.add_(grad_out[j])
        g_drive = None
        if n_steps:
            if need_drive:
                g = g_seg.transpose(0, 1)  # (B, K, P)
                g_drive = g if drive.shape[0] > 1 else g.sum(0, keepdim=True)
        elif need_pd:
            g_params = [torch.zeros_like(p) if n else None for p, n in zip(ops.params, need_p)]
            g_drive = torch.zeros_like(drive)
        return (lam, g_drive, None, None, None, None, None, None, None) + tuple(g_params)


def _check_inputs(ops, y0: torch.Tensor, stops: Sequence[float], seg: Sequence[int], out_idx: Sequence[int],
                 watch_every: int) -> None:
    """Refuse inputs that do not fit the field (both loops index with them unchecked)."""
    P, drive = ops.P, ops.drive
    if y0.ndim != 2 or y0.shape[1] != 2 * P:
        raise ValueError(f"fused_solve: y0 must have shape (trials, 2P) = (B, {2 * P}), got {tuple(y0.shape)}")
    if y0.shape[0] == 0:
        raise ValueError("fused_solve: y0 has no trials (shape (0, 2P)); give at least one trial (a stimulus with "
                         "batch size >= 1)")
    if y0.dtype != drive.dtype or y0.device != drive.device:
        raise ValueError(f"fused_solve: y0 ({y0.dtype}, {y0.device}) must have the field's dtype and device "
                         f"({drive.dtype}, {drive.device})")
    if drive.shape[0] not in (1, y0.shape[0]):
        raise ValueError(f"fused_solve: the field's drive has {drive.shape[0]} trials, y0 {y0.shape[0]}: "
                         "they must agree (or the drive have one)")
    if len(seg) and not 0 <= min(seg) <= max(seg) < drive.shape[1]:
        raise ValueError(f"fused_solve: segment indices must lie in [0, {drive.shape[1]}) (the drive's segments)")
    if len(out_idx) and not -1 <= min(out_idx) <= max(out_idx) < len(stops):
        raise ValueError(f"fused_solve: output indices must lie in [0, {len(stops)}) (the stops), or be -1 "
                         "(interpolated at out_times)")
    if isinstance(watch_every, bool) or not isinstance(watch_every, numbers.Integral) or watch_every < 1:
        raise ValueError(f"fused_solve: watch_every must be a positive int, got {watch_every!r}")


def _dense_rows(method: str, stops: Sequence[float], out_idx: Sequence[int],
                out_times: Sequence[float] | None) -> list[tuple[float, int]]:
    """(time, row) of the interpolated output rows (``out_idx`` -1), by time; checked against the scheme and stops."""
    rows = [j for j, n in enumerate(out_idx) if n == -1]
    if not rows:
        return []
    tab = TABLEAUS.get(method)
    if tab is not None and (tab.interpolant is None or tab.b_err is None):
        raise ValueError(f"fused_solve: {method} has no dense output; pass every output time as a stop")
    if out_times is None or len(out_times) != len(out_idx):
        raise ValueError("fused_solve: interpolated rows (out_idx -1) need out_times, one entry per output row")
    dense = sorted((float(out_times[j]), j) for j in rows)
    outside = [t for t, _ in dense if not stops[0] < t <= stops[-1]]  # NaN included
    if outside:
        raise ValueError(f"fused_solve: interpolated output times must lie in ({stops[0]}, {stops[-1]}] (the solve), "
                         f"got {outside[0]}")
    return dense


def fused_solve(field: Field, y0: torch.Tensor, stops: Sequence[float], seg: Sequence[int],
                out_idx: Sequence[int], method: str, watch: Callable[[float, torch.Tensor, int], None], *,
                step: float = 5e-4, rtol: float = 1e-6, atol: float = 1e-6,
                watch_every: int = 25, edge_product: str | None = None,
                checkpoint_every: int | None = None, kernel: str = "auto",
                out_times: Sequence[float] | None = None) -> tuple[torch.Tensor, int]:
    """Integrate ``field`` through ``stops`` with an explicit Runge-Kutta ``method``.

    Parameters
    ----------
    field : colplugin.field.Field
        The network's field, dense or sparse (``field.dense``); on any device.
    y0 : torch.Tensor, shape (B, 2P)
        Initial state, mV.
    stops : sequence of float
        Increasing times in s that every solve lands on: the start, the stimulus change
        points, the output times that are not interpolated (``out_idx``) and the end.
        Fixed-step methods take exactly one step between consecutive stops (pass the whole
        grid); adaptive ones as many as needed.
    seg : sequence of int
        Stimulus segment between consecutive stops (``len(stops) - 1`` entries).
    out_idx : sequence of int
        Per output row, the index into ``stops`` of its time, or -1: the row is the scheme's
        dense output (its interpolant, :attr:`Tableau.interpolant`) at ``out_times[row]``,
        inside the accepted step that covers that time (adaptive schemes with an
        interpolant; the steps then need not land on the output times).
    method : {"euler", "midpoint", "rk4", "dopri5"}
    watch : callable
        ``watch(t, x, steps)`` every ``watch_every`` steps with ``x = V - A`` (mV) of a recent
        stage; raises to stop a diverging solve. The eager loop passes x of every trial and
        population (B, P); the compiled kernel passes only its largest value over the
        populations without a saturation ``r_max`` (a 0-d float64 tensor; NaN if any state is
        NaN, -inf if every population saturates), so a watch should look at ``x.max()``.
    step : float
        Initial step of adaptive methods (s).
    rtol, atol : float
        Tolerances of adaptive methods (torchdiffeq's RMS error norm).
    watch_every : int
    edge_product : {"index_add", "csr"}, optional
        How a sparse field applies its edge list (default
        :data:`colplugin.field.EDGE_PRODUCT`).
    checkpoint_every : int, optional
        What the forward keeps for the backward pass. None (default): every stage's w and g
        while they take at most :data:`KEEP_ALL_BYTES` bytes, otherwise the state before
        every M-th accepted step with M chosen as the solve grows (about
        sqrt(steps / (2 stages)), at least the steps whose stages fit that budget). 0: every
        stage (memory grows with the number of steps). A positive M: checkpoints every M
        accepted steps; the backward pass recomputes each chunk of M steps from its
        checkpoint (one extra forward pass in all) and the gradients equal the
        keep-everything ones up to the order of summation.
    kernel : {"auto", "compiled", "eager"}
        Whether the loop runs as compiled code (:mod:`colplugin.solve.compiled`: small
        dense fields on the CPU; the same arithmetic without per-operation overhead) or
        as the eager tensor operations of this module; ``"auto"`` decides by
        :func:`colplugin.solve.compiled.choose`.
    out_times : sequence of float, optional
        Times (s) of the rows whose ``out_idx`` is -1 (entries of other rows are ignored);
        each strictly after ``stops[0]`` and at most ``stops[-1]``.

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
        For an unknown method, inconsistent segments, a ``checkpoint_every`` that is not
        None or a non-negative int, or ``kernel="compiled"`` where the kernel cannot run.
    """
    checkpoint_every = check_checkpoint_every(checkpoint_every)
    if method not in FUSED_METHODS:
        raise ValueError(f"the fused solver supports {sorted(FUSED_METHODS)}, not {method!r}")
    if len(seg) != len(stops) - 1:
        raise ValueError("fused_solve: one stimulus segment per interval between stops is required")
    ops = field.fused(edge_product)
    _check_inputs(ops, y0, stops, seg, out_idx, watch_every)
    opts = {"rtol": rtol, "atol": atol, "step": step, "watch_every": watch_every, "checkpoint_every": checkpoint_every,
            "dense_rows": _dense_rows(method, stops, out_idx, out_times)}
    def watch_x(t: float, w: torch.Tensor, steps: int) -> None:
        watch(t, ops.potential(w), steps)

    if method in ROSENBROCK:
        out = rosenbrock_solve(ops, field.layout, field.n, y0, stops, seg, out_idx, method, watch_x, opts,
                               kernel=kernel)
        return out, opts["nfe"]
    if compiled.choose(kernel, ops, y0):
        opts["keep_all_bytes"] = KEEP_ALL_BYTES
        out = compiled.compiled_solve(ops, y0, stops, seg, out_idx, method, watch, opts)
        return out, opts["nfe"]


    out = _FusedSolve.apply(y0, ops.drive, ops, list(stops), list(seg), list(out_idx),
                            method, watch_x, opts, *ops.params)
    return out, opts["nfe"]
