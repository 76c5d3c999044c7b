"""A Rosenbrock-W solve of a network's field: large steps where the columns are stiff.

The field's fastest modes belong to each column: the membrane leak and the recurrent
coupling inside a column, whose Jacobian eigenvalues reach about -1300/s (the benchmark
network of ``benchmarks/bench_stiffness.py``) while the rates change on tens of ms. An
explicit scheme such as dopri5 is held to ``h rho < 3.3`` there, whatever the tolerance.
A Rosenbrock-W method solves one linear system per stage with a matrix ``I - h gamma A``
and is stable for any step when ``A`` carries the stiff part of the Jacobian; as a
*W*-method it keeps its order for *any* ``A`` (Steihaug & Wolfbrandt 1979), so ``A`` may be
the Jacobian's intra-column blocks alone, which the inter-column coupling (weak, learned)
leaves out. Then the systems are one small system per column and trial.

The scheme is ROS34PW2 (Rang & Angermann 2005): 4 stages, order 3, an embedded order-2
solution for the error estimate, stiffly accurate, L-stable with the exact Jacobian. In the
form of Hairer & Wanner (IV.7, eq. 7.25) with ``K_i = u_i / h``::

    L K_i = gamma (F(Y_i) + sum_{j<i} c_ij K_j),   Y_i = y + h sum_{j<i} a_ij K_j,
    L = I - h gamma A(y),   y' = y + h sum_i m_i K_i,   err = h sum_i e_i K_i,

with ``A(y) = diag(c) + W_col^T diag(sigma) E^T`` the field's Jacobian restricted to the
columns: ``c`` the state coefficients, ``W_col`` the intra-column coupling of g (source
population to V and A targets), ``sigma = d a g'(z)`` and ``E^T y = V - A``. With
``D = I - h gamma diag(c)`` and ``z = E^T x``, ``L x = r`` reduces to an 8 x 8 system per
column and trial,

    (I - h gamma U~ diag(sigma)) z = E^T D^-1 r,    U~ = E^T D^-1 W_col^T,
    x = D^-1 (r + h gamma W_col^T (sigma z)),

solved through its inverse, formed once per step (a batched LU in the eager loop, Gauss-Jordan
across the trials in the compiled kernel). The step size follows torchdiffeq's
rule (RMS error norm, safety 0.9, growth at most 10x, shrink at least 0.2x) with the
exponent 1/3 of the order-2 estimate.

Outputs between stops are the cubic Hermite interpolant of the step (y and F at both
ends; F at the new state is the next step's first stage), third order like the scheme.

The backward pass is the exact discrete adjoint of the accepted steps (step sizes held
fixed, as the fused dopri5's): the forward keeps the state before every accepted step and
the backward pass recomputes each step's stages from it, then runs, last stage first::

    kappa_i = h m_i lam + sum_{j>i} (h a_ji phi_j + gamma c_ji rho_j)     (dL/dK_i)
    rho_i   = L^-T kappa_i,   q_i = gamma rho_i,   phi_i = (dF/dy)(Y_i)^T q_i
    sigma_bar += h gamma (W_col rho_i) * z_i,     W_col_bar += h gamma (sigma z_i) rho_i^T
    lam <- lam + sum_i phi_i + (d sigma / dy)^T sigma_bar

where the last term is the dependence of the matrix on the state (through g''), which a
"frozen Jacobian" gradient would drop.

Where it runs: on the CPU each step and each step's adjoint run in the compiled kernel
(``fk_ros_step`` and ``fk_ros_adjoint`` in ``_fused_kernel.c``: chunks of 8 trials side by
side, on ``torch.get_num_threads()`` threads), the step-size control and the outputs in
Python; elsewhere (GPUs, no C compiler, ``kernel="eager"``) as tensor operations. Both are
checked against the scheme written in its original form and differentiated by autograd
(``tests/test_solve_rosenbrock.py``).

References
----------
.. [RA05] Rang & Angermann (2005), New Rosenbrock W-methods of order 3 for partial
   differential algebraic equations of index 1, BIT 45, 761-787.
.. [HW96] Hairer & Wanner (1996), Solving Ordinary Differential Equations II, 2nd ed.,
   Springer, section IV.7.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from ..field import FusedOperators, SparseFusedOperators
from . import compiled
from .tableaus import StepSizeUnderflow

__all__ = ["RosenbrockTableau", "ROSENBROCK", "rosenbrock_solve", "slope_derivative", "uses_kernel"]

_SAFETY, _IFACTOR, _DFACTOR = 0.9, 10.0, 0.2


@dataclass(frozen=True)
class RosenbrockTableau:
    """A Rosenbrock(-W) scheme in Hairer & Wanner's form.

    ``alpha`` and ``gammas``: the strictly lower rows 2..s of the stage matrices alpha_ij
    and gamma_ij; ``gamma``: the diagonal; ``b`` and ``b_hat``: the weights of the solution
    and of the embedded one; ``order``: of the embedded solution plus one (the error
    estimate's exponent is ``1 / order_err``).
    """

    gamma: float
    alpha: tuple[tuple[float, ...], ...]
    gammas: tuple[tuple[float, ...], ...]
    b: tuple[float, ...]
    b_hat: tuple[float, ...]
    order: int
    order_err: int

    @property
    def stages(self) -> int:
        return len(self.b)

    def transformed(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(a, c, m, e)`` of the form with K_i = u_i / h: a = alpha Gamma^-1, c = -(Gamma^-1)
        off the diagonal, m = b Gamma^-1, e = (b - b_hat) Gamma^-1 (float64)."""
        s = self.stages
        al, ga = np.zeros((s, s)), np.eye(s) * self.gamma
        for i in range(1, s):
            al[i, :i] = self.alpha[i - 1]
            ga[i, :i] = self.gammas[i - 1]
        G = np.linalg.inv(ga)
        c = -np.tril(G, -1)
        return al @ G, c, np.asarray(self.b) @ G, (np.asarray(self.b) - np.asarray(self.b_hat)) @ G


#: ROS34PW2 of [RA05], Table 4.
ROS34PW2 = RosenbrockTableau(
    gamma=0.435866521508459,
    alpha=((0.87173304301691801,),
           (0.84457060015369423, -0.11299064236484185),
           (0.0, 0.0, 1.0)),
    gammas=((-0.87173304301691801,),
            (-0.90338057013044082, 0.054180672388095326),
            (0.24212380706095346, -1.2232505839045147, 0.54526025533510214)),
    b=(0.24212380706095346, -1.2232505839045147, 1.5452602553351020, 0.435866521508459),
    b_hat=(0.37810903145819369, -0.096042292212423178, 0.5, 0.2179332607542295),
    order=3, order_err=3)

#: The Rosenbrock-W schemes of the fused backend.
ROSENBROCK: dict[str, RosenbrockTableau] = {"ros34pw2": ROS34PW2}


def slope_derivative(w: torch.Tensor, sat: torch.Tensor | None) -> torch.Tensor:
    """d S / d w of the slope S = dg/dz (z = -w) of the (saturated) g, analytic.

    With g(z) = z / (1 - e^-z): g' = g (1 + z - g) / z and
    g'' = (g' (1 + z - g) + g (1 - g')) / z - g (1 + z - g) / z^2, by the series
    1/6 - z^2/60 + z^4/1008 for |z| < 0.01 (where the quotients cancel). Saturated,
    S = g' / (1 + g s)^2 and dS/dz = g'' / (1 + g s)^2 - 2 s g'^2 / (1 + g s)^3.
    """
    z = torch.neg(w)
    g = torch.div(w, torch.expm1(w)).nan_to_num_(nan=1.0)
    small = z.abs() < 1e-2
    zs = torch.where(small, torch.ones_like(z), z)
    g1 = torch.where(small, 0.5 + z / 6.0 - z ** 3 / 180.0, g * (1.0 + zs - g) / zs)
    g2 = torch.where(small, 1.0 / 6.0 - z ** 2 / 60.0 + z ** 4 / 1008.0,
                     (g1 * (1.0 + zs - g) + g * (1.0 - g1)) / zs - g * (1.0 + zs - g) / zs ** 2)
    g2 = torch.where(torch.isfinite(g2), g2, torch.zeros_like(g2))  # z -> -inf: g, g', g'' -> 0
    if sat is not None:
        q = torch.mul(g, sat).add_(1.0)
        g2 = g2 / q ** 2 - 2.0 * sat * g1 ** 2 / q ** 3
    return -g2  # dS/dw = -dS/dz


def _intra_column(ops: FusedOperators | SparseFusedOperators, layout: Sequence[tuple[int, int]],
                  n: int) -> torch.Tensor:
    """The intra-column coupling of g, ``W_col`` (C, n, 2n): per column, source population to the
    V targets then the A targets of the same column (1/s, the field's units over d).

    Differentiable in the operators' tensors (the dense Wg, or the sparse field's blocks, rate
    terms and the edges that join two populations of one column), so that dense and sparse
    fields step with the same matrix.
    """
    P = ops.P
    C = P // n
    if isinstance(ops, FusedOperators):
        dev = ops.Wg.device
        pidx = torch.arange(P, device=dev).view(C, n)
        qidx = torch.cat([pidx, pidx + P], 1)
        return ops.Wg[pidx[:, :, None], qidx[:, None, :]]
    dt, dev = ops.c.dtype, ops.c.device
    parts = []
    for v in (0, 1):
        blk, rate = ops.blocks[v], ops.rates[v]
        cols = []
        for ai, (first, m) in sorted(enumerate(layout), key=lambda x: x[1][0]):  # by first population
            x = (torch.zeros(m, n, n, dtype=dt, device=dev) if blk is None
                 else blk[ai].unsqueeze(0).expand(m, n, n))
            if rate is not None:
                x = x + torch.diag_embed(rate[first:first + m * n].reshape(m, n))
            cols.append(x)
        parts.append(torch.cat(cols, 0))
    W = torch.cat(parts, 2)
    if ops.src is not None:  # edges inside a column (e.g. lateral L2/3E self-excitation): as the dense Wg has them
        same = torch.div(ops.src, n, rounding_mode="floor") == torch.div(ops.tgt, n, rounding_mode="floor")
        if bool(same.any()):
            src, tgt = ops.src[same], ops.tgt[same]
            col = torch.div(src, n, rounding_mode="floor")
            for v in (0, 1):
                if ops.w_edges[v] is not None:
                    W = W.index_put((col, src % n, tgt % n + v * n), ops.w_edges[v][same], accumulate=True)
    return W


class _Scheme:
    """The stage loop of a Rosenbrock-W step on one batch of states (forward and recomputation)."""

    def __init__(self, tab: RosenbrockTableau, ops, Wcol: torch.Tensor, n: int, B: int) -> None:
        self.tab, self.ops, self.n, self.B = tab, ops, n, B
        self.P = ops.P
        self.C = ops.P // n
        self.Wcol = Wcol  # (C, n, 2n), detached
        self.WcolT = Wcol.transpose(1, 2).contiguous()  # (C, 2n, n)
        self.da = ops.d * ops.a
        self.a, self.cc, self.m, self.e = tab.transformed()
        self.gamma = tab.gamma
        self.eye = torch.eye(n, dtype=Wcol.dtype, device=Wcol.device)

    # layout helpers: (B, 2P) <-> per column (B, C, n) of V and A
    def _cols(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        B, P, C, n = x.shape[0], self.P, self.C, self.n
        return x[:, :P].reshape(B, C, n), x[:, P:].reshape(B, C, n)

    def _flat(self, xv: torch.Tensor, xa: torch.Tensor) -> torch.Tensor:
        B = xv.shape[0]
        return torch.cat([xv.reshape(B, self.P), xa.reshape(B, self.P)], 1)

    def factor(self, h: float, sigma: torch.Tensor) -> bool:
        """Prepare the step's linear systems for h (s) and sigma = d a g'(z) (B, P); False if singular."""
        hg = h * self.gamma
        D = 1.0 - hg * self.ops.c  # (2P,)
        self.D, self.hg = D, hg
        Dv, Da = self._cols(D.unsqueeze(0))
        # U~[c, i, j] = W_col[c, j, i] / D_V[c, i] - W_col[c, j, n + i] / D_A[c, i]
        n = self.n
        self.Ut = self.WcolT[:, :n, :] / Dv[0].unsqueeze(-1) - self.WcolT[:, n:, :] / Da[0].unsqueeze(-1)
        sg = sigma.reshape(self.B, self.C, n)
        self.sigma = sg
        M = self.eye - hg * self.Ut.unsqueeze(0) * sg.unsqueeze(2)  # (B, C, n, n): I - h gamma U~ diag(sigma)
        LU, piv, info = torch.linalg.lu_factor_ex(M)
        if bool((info != 0).any()):
            return False
        self.Minv = torch.linalg.lu_solve(LU, piv, self.eye.expand_as(M))
        return bool(torch.isfinite(self.Minv).all())

    def solve(self, r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x = L^-1 r and z = E^T x (per column, (B, C, n))."""
        rD = r / self.D
        rv, ra = self._cols(rD)
        z = torch.einsum("bcij,bcj->bci", self.Minv, rv - ra)
        corr = torch.einsum("bcp,cpq->bcq", self.sigma * z, self.Wcol).mul_(self.hg)
        n = self.n
        x = rD + self._flat(corr[..., :n], corr[..., n:]) / self.D
        return x, z

    def solve_T(self, kappa: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """rho = L^-T kappa and u = W_col rho (per column, (B, C, n))."""
        kD = kappa / self.D
        kv, ka = self._cols(kD)
        s = torch.einsum("bcq,cpq->bcp", torch.cat([kv, ka], 2), self.Wcol)
        v = torch.einsum("bcji,bcj->bci", self.Minv, self.sigma * s)
        u = s + self.hg * torch.einsum("cip,bci->bcp", self.Ut, v)
        hv = v * self.hg
        rho = kD + self._flat(hv, -hv) / self.D
        return rho, u

    def step(self, y: torch.Tensor, h: float, dr: torch.Tensor, first, keep: bool = False):
        """One step of h (s) from y (B, 2P, mV) with the drive dr.

        ``first``: (F, w, g) of the first stage at y (None: evaluated here). Returns
        (y_new, err, stages, first, nfe, ok); ``stages``: per stage (F, w, g, K, z) where
        ``keep``, else K only.
        """
        ops, a, cc, m, e, gam = self.ops, self.a, self.cc, self.m, self.e, self.gamma
        nfe = 0
        if first is None:
            F0 = torch.empty_like(y)
            w0, g0 = ops.stage(y, dr, F0)
            first, nfe = (F0, w0, g0), 1
        F0, w0, g0 = first
        sigma = ops.slope(w0, g0).mul_(self.da)
        if not self.factor(h, sigma):
            return None, None, None, first, nfe, False
        Ks, stages = [], []
        for i in range(self.tab.stages):
            if i == 0:
                F, w, g = F0, w0, g0
            else:
                Y = y.clone()
                for j in range(i):
                    if a[i, j] != 0.0:
                        Y.add_(Ks[j], alpha=h * a[i, j])
                F = torch.empty_like(y)
                w, g = ops.stage(Y, dr, F)
                nfe += 1
            r = F.clone()
            for j in range(i):
                if cc[i, j] != 0.0:
                    r.add_(Ks[j], alpha=cc[i, j])
            K, z = self.solve(r.mul_(gam))
            Ks.append(K)
            stages.append((F, w, g, K, z))
        y_new, err = y.clone(), torch.zeros_like(y)
        for i, K in enumerate(Ks):
            y_new.add_(K, alpha=h * m[i])
            err.add_(K, alpha=h * e[i])
        return y_new, err, (stages if keep else None), first, nfe, True


def _hermite(theta: torch.Tensor) -> torch.Tensor:
    """The cubic Hermite basis (4, T): weights of y0, h F0, y1, h F1 at theta (T,)."""
    t2, t3 = theta ** 2, theta ** 3
    return torch.stack([2 * t3 - 3 * t2 + 1, t3 - 2 * t2 + theta, -2 * t3 + 3 * t2, t3 - t2])


class _Stepper:
    """What both steppers share: ``first`` (F, w, g) at the next step's state, ``end`` at the last
    accepted step's new state (where computed), and their views for the driver."""

    first: tuple
    end: tuple

    @property
    def F0(self) -> torch.Tensor:
        """F at the step's state (mV/s)."""
        return self.first[0]

    @property
    def w0(self) -> torch.Tensor:
        """w of the first stage (for the divergence check)."""
        return self.first[1]

    @property
    def Fn(self) -> torch.Tensor:
        """F at the new state (mV/s), where the step computed it."""
        return self.end[0]


class _EagerStepper(_Stepper):
    """Steps and step adjoints with tensor operations (any device): :class:`_Scheme` plus the
    accumulators of the parameter and drive cotangents."""

    def __init__(self, tab: RosenbrockTableau, ops, layout, n: int, y0: torch.Tensor) -> None:
        self.ops, self.layout, self.n = ops, layout, n
        self.sch = _Scheme(tab, ops, _intra_column(ops, layout, n).detach(), n, y0.shape[0])
        self.first = None  # (F, w, g) at the state of the next step
        self.end = None  # (F, w, g) at the last accepted step's new state

    def step(self, y, h, dr_k, k, fresh, want_end, rtol, atol):
        """(y_new, error ratio (NaN: reject), evaluations) of a step of h from y in segment k."""
        if fresh:
            self.first = None
        y_new, err, _, self.first, nfe, ok = self.sch.step(y, h, dr_k, self.first)
        if not ok:
            return y_new, float("nan"), nfe
        tol = torch.maximum(y.abs(), y_new.abs()).mul_(rtol).add_(atol)
        ratio = float(torch.linalg.vector_norm(err.div_(tol))) / math.sqrt(y.numel())
        if want_end and ratio <= 1.0:
            F1 = torch.empty_like(y)
            w1, g1 = self.ops.stage(y_new, dr_k, F1)
            self.end = (F1, w1, g1)
            nfe += 1
        return y_new, ratio, nfe

    def advance(self, want_end: bool) -> None:
        """After an accepted step: the end stage (if computed) is the next step's first."""
        self.first = self.end if want_end else None
        self.end = None

    # backward
    def start_backward(self, need_p, need_drive, drive_shape, B, dt, dev) -> None:
        self.need_p, self.need_drive = need_p, need_drive
        P = self.ops.P
        self.g_seg = torch.zeros((drive_shape[1], B, 2 * P), dtype=dt, device=dev) if need_drive else None
        self.g_params: list = [None] * len(need_p)
        self.Wbar = torch.zeros_like(self.sch.Wcol) if any(need_p) else None
        self.drive_shape = drive_shape

    def adjoint(self, y, h, dr_k, k, lam, extra0, qe):
        """The cotangent of y from that of the step's new state (``lam``), the step recomputed."""
        ops, sch = self.ops, self.sch
        a, cc, m, gam = sch.a, sch.cc, sch.m, sch.gamma
        s, P, n, C = sch.tab.stages, sch.P, sch.n, sch.C
        B = y.shape[0]
        with torch.no_grad():
            y_new, _, stages, first, _, ok = sch.step(y, h, dr_k, None, keep=True)
        if not ok:
            raise RuntimeError(f"the Rosenbrock-W backward pass could not recompute the accepted step of {h:.3g} s "
                               "(its linear system became singular); solve with a tighter tolerance")
        lam = lam.clone()
        Gs, Qs = [], []
        if qe is not None:
            Fe = torch.empty_like(y)
            we, ge = ops.stage(y_new, dr_k, Fe)
            phi_e = torch.empty_like(y)
            ops.vjp(qe, ops.slope(we, ge), phi_e)
            lam.add_(phi_e)
            Gs.append(ge)
            Qs.append(qe)
        phis: list = [None] * s
        rhos: list = [None] * s
        sigma_bar = torch.zeros((B, C, n), dtype=y.dtype, device=y.device)
        lam_new = lam.clone()
        for i in range(s - 1, -1, -1):
            F, w, g, K, z = stages[i]
            kappa = lam * (h * m[i])
            for j in range(i + 1, s):
                if a[j, i] != 0.0:
                    kappa.add_(phis[j], alpha=h * a[j, i])
                if cc[j, i] != 0.0:
                    kappa.add_(rhos[j], alpha=gam * cc[j, i])
            rho, u = sch.solve_T(kappa)
            rhos[i] = rho
            q = rho * gam
            if i == 0 and extra0 is not None:
                q = q + extra0
            phi = torch.empty_like(y)
            ops.vjp(q, ops.slope(w, g), phi)
            phis[i] = phi
            lam_new.add_(phi)
            sigma_bar.add_(u * z, alpha=sch.hg)
            if self.Wbar is not None:
                self.Wbar.add_(torch.einsum("bcp,bcq->cpq", sch.sigma * z, torch.cat(sch._cols(rho), 2)),
                               alpha=sch.hg)
            Gs.append(g)
            Qs.append(q)
        # the matrix's dependence on the state: sigma = d a S(w), w = d a (A - V) + d b
        da = sch.da
        wbar = (sigma_bar.reshape(B, P) * slope_derivative(first[1], ops.sat)).mul_(da)
        lam_new[:, :P].sub_(wbar, alpha=da)
        lam_new[:, P:].add_(wbar, alpha=da)
        if any(self.need_p):
            part = ops.grad_params(torch.stack(Gs), torch.stack(Qs), self.need_p)
            self.g_params = [_add(p, q) for p, q in zip(self.g_params, part)]
        if self.need_drive:
            self.g_seg[k].add_(torch.stack(Qs).sum(0))
        return lam_new

    def finish(self) -> tuple:
        """(drive cotangent, parameter cotangents) of the whole solve."""
        ops, need_p = self.ops, self.need_p
        g_params = self.g_params
        if self.Wbar is not None:
            with torch.enable_grad():
                params = [p for p, nd in zip(ops.params, need_p) if nd]
                Wd = _intra_column(ops, self.layout, self.n)
                if Wd.requires_grad:
                    it = iter(torch.autograd.grad(Wd, params, self.Wbar, allow_unused=True))
                    g_params = [_add(gp, next(it)) if nd else None for gp, nd in zip(g_params, need_p)]
        g_params = [torch.zeros_like(p) if nd and gp is None else gp for gp, p, nd in zip(g_params, ops.params,
                                                                                         need_p)]
        g_drive = None
        if self.need_drive:
            g = self.g_seg.transpose(0, 1)
            g_drive = g if self.drive_shape[0] > 1 else g.sum(0, keepdim=True)
        return g_drive, g_params


class _CompiledStepper(_Stepper):
    """Steps and step adjoints in the compiled kernel (``fk_ros_step``, ``fk_ros_adjoint``: the
    same arithmetic as :class:`_EagerStepper`, chunks of trials on several threads)."""

    def __init__(self, tab: RosenbrockTableau, ops, layout, n: int, y0: torch.Tensor, drive: torch.Tensor,
                 coupling: torch.Tensor, row_ptr, col, Wcol: torch.Tensor) -> None:
        mod, _ = compiled._module()
        self.ffi, self.lib = mod.ffi, mod.lib
        self.real, self.sfx = compiled._TYPES[y0.dtype]
        ffi, dt = self.ffi, y0.dtype
        self.md, self.keep = compiled._kernel_model(ffi, ops, "euler", y0, drive, coupling, row_ptr, col)
        a, cc, m, e = (torch.as_tensor(x, dtype=dt).contiguous() for x in tab.transformed())
        self.Wcol = Wcol.detach().to(dt).contiguous()
        rs = ffi.new(f"fk_ros{self.sfx} *")
        rs.n, rs.C, rs.s = n, ops.P // n, tab.stages
        rs.Wcol = compiled._ptr(ffi, self.Wcol, self.real)
        rs.a, rs.cc = compiled._ptr(ffi, a, self.real), compiled._ptr(ffi, cc, self.real)
        rs.m, rs.e = compiled._ptr(ffi, m, self.real), compiled._ptr(ffi, e, self.real)
        rs.gamma = float(tab.gamma)
        self.rs, self.arrays = rs, (a, cc, m, e)
        B, P = y0.shape[0], ops.P
        self.B, self.P, self.n, self.C = B, P, n, P // n
        z = lambda *shape: torch.zeros(shape, dtype=dt)  # noqa: E731
        self.first = (z(B, 2 * P), z(B, P), z(B, P))
        self.end = (z(B, 2 * P), z(B, P), z(B, P))
        self.sq = ffi.new("double *")
        # the kernel's workspace, once per solve (per thread one chunk of trials' scratch)
        size = int(getattr(self.lib, f"fk_ros_work{self.sfx}")(self.md, rs, int(self.md.threads)))
        self.work = torch.empty(max(size, 1), dtype=dt)
        self.coupling_shape, self.sparse = tuple(coupling.shape), row_ptr is not None

    def _p(self, t):
        return compiled._ptr(self.ffi, t, self.real)

    def step(self, y, h, dr_k, k, fresh, want_end, rtol, atol):
        y = y.contiguous()
        y_new = torch.empty_like(y)
        p = self._p
        rc = getattr(self.lib, f"fk_ros_step{self.sfx}")(
            self.md, self.rs, p(self.work), p(y), float(h), int(k), int(fresh), p(self.first[0]), p(self.first[1]),
            p(self.first[2]), p(y_new), int(want_end), p(self.end[0]), p(self.end[1]), p(self.end[2]),
            float(rtol), float(atol), self.sq)
        if rc == 3:
            raise MemoryError("the compiled Rosenbrock step could not allocate its workspace")
        nfe = 3 + int(bool(fresh)) + int(bool(want_end))
        ratio = float("nan") if rc else math.sqrt(self.sq[0] / y.numel())
        return y_new, ratio, nfe

    def advance(self, want_end: bool) -> None:
        if want_end:
            self.first, self.end = self.end, self.first

    def start_backward(self, need_p, need_drive, drive_shape, B, dt, dev) -> None:
        n_chunks = -(-B // 8)
        self.need_coupling, self.need_Wcol = need_p
        self.gW = (torch.zeros((n_chunks,) + self.coupling_shape, dtype=dt) if self.need_coupling else None)
        self.gWcol = torch.zeros((n_chunks,) + tuple(self.Wcol.shape), dtype=dt) if self.need_Wcol else None
        self.drive_shape = drive_shape
        self.gdrive = None
        if need_drive:
            shared = drive_shape[0] == 1
            self.gdrive = torch.zeros((n_chunks,) + drive_shape[1:] if shared else drive_shape, dtype=dt)

    def adjoint(self, y, h, dr_k, k, lam, extra0, qe):
        p = self._p
        lam = lam.contiguous()
        lam_out = torch.empty_like(lam)  # no copy between kernel calls (torch's threads would spin after one)
        extra0 = None if extra0 is None else extra0.contiguous()
        qe = None if qe is None else qe.contiguous()
        rc = getattr(self.lib, f"fk_ros_adjoint{self.sfx}")(
            self.md, self.rs, p(self.work), p(y.contiguous()), float(h), int(k), p(lam), p(lam_out), p(extra0),
            p(qe), p(self.gW), p(self.gWcol), p(self.gdrive))
        if rc == 3:
            raise MemoryError("the compiled Rosenbrock adjoint could not allocate its workspace")
        if rc == 1:
            raise RuntimeError(f"the Rosenbrock-W backward pass could not recompute the accepted step of {h:.3g} s "
                               "(its linear system became singular); solve with a tighter tolerance")
        return lam_out

    def finish(self) -> tuple:
        g_drive = None
        if self.gdrive is not None:
            g_drive = self.gdrive.sum(0, keepdim=True) if self.drive_shape[0] == 1 else self.gdrive
        gW = None if self.gW is None else self.gW.sum(0)
        gWcol = None if self.gWcol is None else self.gWcol.sum(0)
        return g_drive, [gW, gWcol]


def _hermite(theta: torch.Tensor) -> torch.Tensor:
    """The cubic Hermite basis (4, T): weights of y0, h F0, y1, h F1 at theta (T,)."""
    t2, t3 = theta ** 2, theta ** 3
    return torch.stack([2 * t3 - 3 * t2 + 1, t3 - 2 * t2 + theta, -2 * t3 + 3 * t2, t3 - t2])


def _control(ratio: float, h: float, h_next: float, last: bool, order: int) -> tuple[bool, float]:
    """(accepted, the next step to try, s) after a step of h (s) whose scaled error is ``ratio``
    (torchdiffeq's rule; a step shortened to land on a stop keeps the proposal ``h_next``)."""
    if not ratio <= 1.0:
        return False, h * (max(_DFACTOR, _SAFETY * ratio ** (-1 / order)) if math.isfinite(ratio) else _DFACTOR)
    fac = min(_IFACTOR, max(_DFACTOR, _SAFETY * ratio ** (-1 / order))) if ratio > 0 else _IFACTOR
    return True, (h * fac if not last or fac < 1.0 else h_next)


def _emit_inside(pending: list, out: torch.Tensor, st, y: torch.Tensor, y_new: torch.Tensor, t: float, h: float,
                 t_new: float) -> tuple[list[int], list[float]]:
    """Write the outputs of ``pending`` ((time, row), by time) up to t_new into ``out``: the step's
    cubic Hermite interpolant through y, F(y), y_new, F(y_new); remove them and return their rows
    and thetas."""
    n_in = 0
    while n_in < len(pending) and pending[n_in][0] <= t_new:
        n_in += 1
    rows = [j for _, j in pending[:n_in]]
    theta = [min(max((tj - t) / h, 0.0), 1.0) for tj, _ in pending[:n_in]]
    del pending[:n_in]
    H = _hermite(torch.tensor(theta, dtype=y.dtype, device=y.device))
    out[rows] = (H[0].view(-1, 1, 1) * y + (h * H[1]).view(-1, 1, 1) * st.F0
                 + H[2].view(-1, 1, 1) * y_new + (h * H[3]).view(-1, 1, 1) * st.Fn)
    return rows, theta


def _forward(ctx, st, y0, drive, stops, seg, out_idx, watch, opts, order: int):
    """The adaptive solve through ``stops`` with the stepper ``st``; records for the backward pass on ``ctx``."""
    keep = any(ctx.needs_input_grad)
    rtol, atol, h_next, watch_every = opts["rtol"], opts["atol"], opts["step"], opts["watch_every"]
    pending = list(opts.get("dense_rows", ()))
    out = torch.empty((len(out_idx),) + tuple(y0.shape), dtype=y0.dtype, device=y0.device)
    out_at: dict[int, list[int]] = {}
    for j, i in enumerate(out_idx):
        if i >= 0:
            out_at.setdefault(i, []).append(j)
    for j in out_at.get(0, ()):
        out[j] = y0
    steps: list[tuple[torch.Tensor, float, int]] = []  # (state before, h, segment) of accepted steps
    dense_at: dict[int, tuple[list[int], list[float]]] = {}
    landed: dict[int, int] = {0: 0}
    log: list[tuple[float, float, int]] = []  # (start, h, segment) of every accepted step
    n_acc, nfe, attempts = 0, 0, 0
    y = y0.detach()
    fresh = True
    for mi in range(len(stops) - 1):
        t, t_end, k = stops[mi], stops[mi + 1], seg[mi]
        dr = drive[:, k].detach()
        if mi > 0 and k != seg[mi - 1]:
            fresh = True  # the drive changed: stage 0 must be re-evaluated
        while t < t_end:
            rem = t_end - t
            last = h_next >= rem * (1 - 1e-9)
            h, t_new = (rem, t_end) if last else (h_next, t + h_next)
            want_end = bool(pending) and pending[0][0] <= t_new
            y_new, ratio, used = st.step(y, h, dr, k, fresh, want_end, rtol, atol)
            fresh = False
            nfe += used
            if attempts % watch_every == 0:
                watch(t, st.w0, watch_every)
            attempts += 1
            accepted, h_next = _control(ratio, h, h_next, last, order)
            if not accepted:  # rejected, NaN or a singular system: retry with the shrunk step
                if h_next < 1e-12 * max(abs(t_end), 1.0):
                    raise StepSizeUnderflow(f"step size underflow at t = {t:.6g} s")
                continue
            log.append((t, h, k))
            if keep:
                steps.append((y, h, k))
            if want_end:
                dense_at[n_acc] = _emit_inside(pending, out, st, y, y_new, t, h, t_new)
            st.advance(want_end)
            fresh = not want_end
            n_acc += 1
            y, t = y_new, t_new
        landed[mi + 1] = n_acc
        for j in out_at.get(mi + 1, ()):
            out[j] = y
    ctx.st, ctx.steps, ctx.dense_at = st, steps, dense_at
    rows_by: dict[int, list[int]] = {}
    for stop, js in out_at.items():
        rows_by.setdefault(landed[stop], []).extend(js)
    ctx.rows_by = rows_by
    ctx.drive_shape = tuple(drive.shape)
    opts["nfe"], opts["steps"], opts["attempts"], opts["step_log"] = nfe, n_acc, attempts, log
    if keep:
        ctx.save_for_backward(drive)
    return out


def _backward(ctx, grad_out, need_p, need_drive) -> torch.Tensor:
    """The cotangent of y0; the stepper keeps the drive's and the parameters'."""
    if torch.is_grad_enabled():  # create_graph=True: the hand-written adjoint has no derivatives of its own
        raise RuntimeError("the Rosenbrock-W solve's backward pass is not differentiable (no second derivatives, "
                           "create_graph=True); use Solver(backend='torchdiffeq') with an explicit method such as "
                           "'dopri5' for higher derivatives")
    (drive,) = ctx.saved_tensors
    st, steps = ctx.st, ctx.steps
    B = grad_out.shape[1]
    dt, dev = grad_out.dtype, grad_out.device
    st.start_backward(need_p, need_drive, ctx.drive_shape, B, dt, dev)
    lam = torch.zeros_like(grad_out[0])
    for j in ctx.rows_by.get(len(steps), ()):
        lam = lam + grad_out[j]
    for idx in range(len(steps) - 1, -1, -1):
        y, h, k = steps[idx]
        extra0 = qe = lam0_extra = None
        inside = ctx.dense_at.get(idx)
        if inside is not None:
            rows, theta = inside
            H = _hermite(torch.tensor(theta, dtype=dt, device=dev))  # (4, T)
            g_in = grad_out[rows]  # (T, B, 2P)
            lam0_extra = torch.einsum("t,tbq->bq", H[0], g_in)
            extra0 = torch.einsum("t,tbq->bq", H[1], g_in).mul_(h)
            lam = lam + torch.einsum("t,tbq->bq", H[2], g_in)
            qe = torch.einsum("t,tbq->bq", H[3], g_in).mul_(h)
        lam = st.adjoint(y, h, drive[:, k].detach(), k, lam, extra0, qe)
        if lam0_extra is not None:
            lam = lam + lam0_extra
        for j in ctx.rows_by.get(idx, ()):
            lam = lam + grad_out[j]
    return lam


class _RosenbrockSolve(torch.autograd.Function):
    """The eager loop's solve (any device); backward = discrete adjoint (module docstring)."""

    @staticmethod
    def forward(ctx, y0, drive, ops, layout, n, stops, seg, out_idx, method, watch, opts, *params):
        tab = ROSENBROCK[method]
        st = _EagerStepper(tab, ops, layout, n, y0)
        return _forward(ctx, st, y0, drive, stops, seg, out_idx, watch, opts, tab.order_err)

    @staticmethod
    def backward(ctx, grad_out):
        need_p = ctx.needs_input_grad[11:]
        lam = _backward(ctx, grad_out, need_p, ctx.needs_input_grad[1])
        g_drive, g_params = ctx.st.finish()
        return (lam, g_drive) + (None,) * 9 + tuple(g_params)


class _CompiledRosenbrockSolve(torch.autograd.Function):
    """The compiled kernel's solve: the coupling (dense Wg or the sparse entries) and the
    intra-column blocks are inputs, whose cotangents autograd carries to the weights."""

    @staticmethod
    def forward(ctx, y0, drive, ops, layout, n, stops, seg, out_idx, method, watch, opts, coupling, Wcol, row_ptr,
                col):
        tab = ROSENBROCK[method]
        st = _CompiledStepper(tab, ops, layout, n, y0, drive, coupling, row_ptr, col, Wcol)
        return _forward(ctx, st, y0, drive, stops, seg, out_idx, watch, opts, tab.order_err)

    @staticmethod
    def backward(ctx, grad_out):
        need_p = ctx.needs_input_grad[11:13]
        lam = _backward(ctx, grad_out.contiguous(), need_p, ctx.needs_input_grad[1])
        g_drive, (gW, gWcol) = ctx.st.finish()
        return (lam, g_drive) + (None,) * 9 + (gW, gWcol, None, None)


def _add(a: torch.Tensor | None, b: torch.Tensor | None) -> torch.Tensor | None:
    if a is None:
        return b
    return a if b is None else a + b


def uses_kernel(kernel: str, ops, y0: torch.Tensor) -> bool:
    """Whether a Rosenbrock-W solve runs in the compiled kernel: ``"auto"`` wherever it can (CPU,
    float32 or float64, a C compiler), ``"compiled"`` (an error where it cannot), ``"eager"`` never."""
    if kernel == "auto":
        try:
            return compiled.choose("compiled", ops, y0)
        except ValueError:
            return False
    return compiled.choose(kernel, ops, y0)


def rosenbrock_solve(ops: FusedOperators | SparseFusedOperators, layout: Sequence[tuple[int, int]], n: int,
                     y0: torch.Tensor, stops: Sequence[float], seg: Sequence[int], out_idx: Sequence[int],
                     method: str, watch: Callable[[float, torch.Tensor, int], None], opts: dict,
                     kernel: str = "auto") -> torch.Tensor:
    """Integrate the operators' field with the Rosenbrock-W ``method`` through ``stops``.

    The arguments are :func:`colplugin.solve.fused.fused_solve`'s (``ops`` from
    :meth:`Field.fused`, ``layout`` and ``n`` the field's column layout); ``opts`` holds
    ``rtol``, ``atol``, ``step`` (first step, s), ``watch_every``, ``dense_rows`` ((time, row)
    of interpolated outputs) and gets back ``nfe``, ``steps``, ``attempts`` and ``step_log``
    ((start s, h s, segment) of every accepted step). ``kernel``: as :func:`uses_kernel`.
    """
    if method not in ROSENBROCK:
        raise ValueError(f"unknown Rosenbrock method {method!r}; use one of {sorted(ROSENBROCK)}")
    args = (y0, ops.drive, ops, tuple(layout), n, list(stops), list(seg), list(out_idx), method, watch, opts)
    if uses_kernel(kernel, ops, y0):
        Wcol = _intra_column(ops, layout, n)
        if isinstance(ops, SparseFusedOperators):
            row_ptr, col, values = compiled.sparse_coupling(ops)
            return _CompiledRosenbrockSolve.apply(*args, values, Wcol, row_ptr, col)
        return _CompiledRosenbrockSolve.apply(*args, ops.Wg, Wcol, None, None)
    return _RosenbrockSolve.apply(*args, *ops.params)
