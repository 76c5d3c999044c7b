"""The stationary rate of a LIF neuron under diffusive input (Siegert), in torch, with an exact gradient.

A LIF neuron (membrane time constant ``tau_m``, threshold ``theta`` and reset ``V_r`` relative
to rest, refractory period ``t_ref``) whose free membrane potential follows
``tau_m dV = (mu - V) dt + s sqrt(tau_m) dW`` fires at [Siegert51]_, [Brunel00]_::

    nu = 1 / (t_ref + tau_m sqrt(pi) I),    I = int_lo^hi exp(u^2) (1 + erf u) du
    lo = (V_r - mu) / s + c,   hi = (theta - mu) / s + c,   c = sqrt(tau_s / tau_m) |zeta(1/2)| / sqrt(2)

where ``c`` is the Fourcaud-Brunel shift of both bounds for exponential synaptic currents
with time constant ``tau_s`` [FourcaudBrunel02]_ (``c = 0`` for white noise) and ``s`` is
Brunel's white-noise amplitude (``sqrt(2)`` times the sd of the free membrane potential in
the ``tau_s -> 0`` limit). The integrand is ``erfcx(-u)``.

Evaluation (float64, about 1e-12 relative over mu -20..60 mV, s 0.1..20 mV; float32 is
limited to about 1e-6 by its own rounding). With ``H(y) = int_0^y erfcx(v) dv`` (``y >= 0``)
and Dawson's function ``F(y) = exp(-y^2) int_0^y exp(t^2) dt``::

    int_0^y erfcx(-u) du = 2 exp(y^2) F(y) - H(y)      (y >= 0)
    int_y^0 erfcx(-u) du = H(-y)                       (y < 0)

``H`` is Gauss-Legendre quadrature (:data:`QUADRATURE_NODES` nodes) after the substitution
``t = log(1 + v)`` for ``v <= 20`` and the integrated asymptotic series of ``erfcx`` beyond;
``F`` is Rybicki's exponentially convergent sum (step 1/4: error below 1e-16) with its
asymptotic series far out. Every term is scaled by
``q = exp(-max(hi, 0)^2)``, so ``exp(hi^2)`` is never formed: far below threshold the rate
underflows to 0 instead of overflowing.

The gradient is written by hand from ``dI/dhi = erfcx(-hi)`` and ``dI/dlo = -erfcx(-lo)``
(the exact derivative of the integral, continuous everywhere; differentiating the quadrature
nodes would not be). ``s`` has a floor (:data:`SIGMA_FLOOR_MV`): the slope of the rate grows
like ``1 / s`` at threshold, and a solve must not start from a noiseless, infinitely steep
neuron. Above the floor the rate is exact; below it, ``s`` is held at the floor.

References
----------
.. [Siegert51] Siegert (1951), On the first passage time probability problem. Phys Rev 81, 617.
.. [Brunel00] Brunel (2000), J Comput Neurosci 8, 183-208.
.. [FourcaudBrunel02] Fourcaud & Brunel (2002), Neural Comput 14, 2057-2110.
.. [Rybicki89] Rybicki (1989), Dawson's integral and the sampling theorem. Computers in
   Physics 3, 85-87.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch
from torch.autograd.function import once_differentiable

__all__ = ["siegert", "siegert_value", "dawson", "erfcx_integral", "fourcaud_brunel_shift", "FB_ALPHA_HALF",
           "SIGMA_FLOOR_MV", "QUADRATURE_NODES"]

#: |zeta(1/2)| / sqrt(2) = alpha / 2 with alpha = sqrt(2) |zeta(1/2)| (Fourcaud & Brunel 2002).
FB_ALPHA_HALF = 1.4603545088095868 / math.sqrt(2.0)
#: Floor of the white-noise amplitude s (mV): below it, s is held at the floor.
SIGMA_FLOOR_MV = 0.1
#: Gauss-Legendre nodes of the integral H on [0, log(1 + 20)].
QUADRATURE_NODES = 16

_SQRT_PI = math.sqrt(math.pi)
_H_SPLIT = 20.0  # H(y) for y > 20 from the integrated asymptotic series of erfcx
_RYBICKI_H = 0.25  # Rybicki's step: truncation error exp(-(pi / (2 h))^2) = 7e-18
_RYBICKI_M = np.arange(-25, 26, 2, dtype=float)  # odd offsets: |x - n h| up to 6.25 (exp(-39) beyond)
_DAWSON_ASYMPTOTIC = 1e4


def fourcaud_brunel_shift(tau_s: float, tau_m: float) -> float:
    """The bound shift ``c = sqrt(tau_s / tau_m) |zeta(1/2)| / sqrt(2)`` (in units of s), dimensionless."""
    return math.sqrt(tau_s / tau_m) * FB_ALPHA_HALF


@lru_cache(maxsize=16)
def _nodes(dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    x, w = np.polynomial.legendre.leggauss(QUADRATURE_NODES)
    return (torch.as_tensor((x + 1.0) / 2.0, dtype=dtype, device=device),
            torch.as_tensor(w / 2.0, dtype=dtype, device=device))


def _h_tail(v: torch.Tensor) -> torch.Tensor:
    """sqrt(pi) times an antiderivative of erfcx for v >= 20: ln v + sum_k (-1)^(k+1) (2k-1)!! / (2^k 2k) v^-2k."""
    inv2 = 1.0 / (v * v)
    acc = torch.zeros_like(v)
    term = torch.ones_like(v)
    double_fact = 1.0
    for k in range(1, 8):
        double_fact *= 2 * k - 1
        term = term * inv2
        acc = acc + ((-1) ** (k + 1)) * double_fact / (2 ** k * 2 * k) * term
    return torch.log(v) + acc


def erfcx_integral(y: torch.Tensor) -> torch.Tensor:
    """``H(y) = int_0^y erfcx(v) dv`` for ``y >= 0`` (no autograd; dH/dy = erfcx(y))."""
    x, w = _nodes(y.dtype, y.device)
    yc = y.clamp(max=_H_SPLIT)
    T = torch.log1p(yc)
    t = T.unsqueeze(-1) * x  # (..., nodes)
    et = torch.exp(t)
    gl = (torch.special.erfcx(et - 1.0) * et * w).sum(-1) * T
    tail = y > _H_SPLIT
    if bool(tail.any()):
        h_split = _h_split(y.dtype, y.device)
        big = y.clamp(min=_H_SPLIT)
        extra = (_h_tail(big) - _h_tail(torch.full_like(big, _H_SPLIT))) / _SQRT_PI
        gl = torch.where(tail, h_split + extra, gl)
    return gl


@lru_cache(maxsize=16)
def _h_split(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    return erfcx_integral(torch.tensor(_H_SPLIT, dtype=dtype, device=device))


def dawson(x: torch.Tensor) -> torch.Tensor:
    """Dawson's function ``F(x) = exp(-x^2) int_0^x exp(t^2) dt`` for ``x >= 0`` (no autograd).

    Rybicki's sum ``F(x) = pi^(-1/2) sum_{n odd} exp(-(x - n h)^2) / n`` [Rybicki89]_ with
    ``h = 1/4`` around the nearest even multiple of ``h`` (absolute error below 1e-16; near
    ``x = 0``, where ``F(x) ~ x``, that is the error of the terms' cancellation) and
    ``F ~ 1/(2x) (1 + 1/(2x^2) + 3/(4x^4))`` beyond 1e4.
    """
    h = _RYBICKI_H
    xm = x.clamp(max=_DAWSON_ASYMPTOTIC)
    k0 = torch.round(xm / (2 * h))
    xp = xm - 2 * h * k0  # |xp| <= h
    m = torch.as_tensor(_RYBICKI_M, dtype=x.dtype, device=x.device)
    n = (2 * k0).unsqueeze(-1) + m
    ryb = (torch.exp(-(xp.unsqueeze(-1) - m * h) ** 2) / n).sum(-1) / _SQRT_PI
    xa = x.clamp(min=_DAWSON_ASYMPTOTIC)
    inv = 1.0 / (2.0 * xa * xa)
    asym = (1.0 + inv * (1.0 + 3.0 * inv)) / (2.0 * xa)
    return torch.where(x > _DAWSON_ASYMPTOTIC, asym, ryb)


def _parts(mu, theta_shift, s2, theta, V_r, c, floor):
    """The bounds, the scale q, the scaled integral J = q I and s (all no-grad tensors)."""
    s = torch.sqrt(s2.clamp(min=floor * floor))
    hi = (theta + theta_shift - mu) / s + c
    lo = (V_r - mu) / s + c
    hi_p = hi.clamp(min=0.0)
    q = torch.exp(-hi_p * hi_p)

    # q P(y) for y = hi, lo, P(y) = int_0^y erfcx(-u) du: both bounds in one evaluation
    y = torch.stack([hi, lo])
    a = y.abs()
    qH = q * erfcx_integral(a)
    pos = 2.0 * torch.exp((y * y - hi_p * hi_p).clamp(max=0.0)) * dawson(a) - qH
    qP = torch.where(y >= 0, pos, -qH)
    return s, hi, lo, hi_p, q, qP[0] - qP[1]


def _q2_erfcx_neg(y, hi_p, q):
    """q^2 erfcx(-y) without overflow, for y <= hi."""
    e = torch.special.erfcx(y.abs())
    pos = 2.0 * torch.exp((y * y - 2.0 * hi_p * hi_p).clamp(max=0.0)) - q * q * e
    return torch.where(y > 0, pos, q * q * e)


def siegert_value(mu: torch.Tensor, s2: torch.Tensor, theta_shift: torch.Tensor | float = 0.0, *,
                  theta: float, V_r: float, tau_m: float, t_ref: float, tau_s: float = 0.0,
                  sigma_floor: float = SIGMA_FLOOR_MV) -> torch.Tensor:
    """The Siegert rate (Hz) without autograd support; arguments as :func:`siegert`."""
    c = fourcaud_brunel_shift(tau_s, tau_m)
    theta_shift = torch.as_tensor(theta_shift, dtype=mu.dtype, device=mu.device)
    _, _, _, _, q, J = _parts(mu, theta_shift, s2, theta, V_r, c, sigma_floor)
    return q / (t_ref * q + tau_m * _SQRT_PI * J)


class _Siegert(torch.autograd.Function):
    @staticmethod
    def forward(ctx, mu, theta_shift, s2, consts):
        theta, V_r, tau_m, t_ref, c, floor = consts
        s, hi, lo, hi_p, q, J = _parts(mu, theta_shift, s2, theta, V_r, c, floor)
        D = t_ref * q + tau_m * _SQRT_PI * J
        nu = q / D
        ctx.save_for_backward(s, hi, lo, hi_p, q, D, s2)
        ctx.consts = consts
        return nu

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        s, hi, lo, hi_p, q, D, s2 = ctx.saved_tensors
        theta, V_r, tau_m, t_ref, c, floor = ctx.consts
        k = tau_m * _SQRT_PI / (D * D)
        dnu_dhi = -k * _q2_erfcx_neg(hi, hi_p, q)
        dnu_dlo = k * _q2_erfcx_neg(lo, hi_p, q)
        g_mu = g_shift = g_s2 = None
        if ctx.needs_input_grad[0]:
            g_mu = -grad * (dnu_dhi + dnu_dlo) / s
        if ctx.needs_input_grad[1]:
            g_shift = grad * dnu_dhi / s
        if ctx.needs_input_grad[2]:
            # d hi / d s = -(hi - c) / s, d lo / d s = -(lo - c) / s; d s / d s2 = 1 / (2 s) above the floor
            ds = -(dnu_dhi * (hi - c) + dnu_dlo * (lo - c)) / s
            g_s2 = torch.where(s2 > floor * floor, grad * ds / (2.0 * s), torch.zeros_like(s))
        return g_mu, g_shift, g_s2, None


def siegert(mu: torch.Tensor, s2: torch.Tensor, theta_shift: torch.Tensor | float = 0.0, *, theta: float,
            V_r: float, tau_m: float, t_ref: float, tau_s: float = 0.0,
            sigma_floor: float = SIGMA_FLOOR_MV) -> torch.Tensor:
    """Stationary LIF rate (Hz) at mean input ``mu`` and white-noise variance ``s2``, differentiable.

    Parameters
    ----------
    mu : torch.Tensor
        Mean free membrane potential relative to rest, mV.
    s2 : torch.Tensor
        Brunel's white-noise amplitude squared, ``s^2`` (mV^2); broadcast against ``mu``.
        ``s`` below ``sigma_floor`` is held at the floor.
    theta_shift : torch.Tensor or float
        Shift of the threshold (mV), e.g. a spike-triggered adaptive threshold; the reset stays.
    theta, V_r : float
        Threshold and reset relative to rest, mV.
    tau_m, t_ref : float
        Membrane time constant and refractory period, s.
    tau_s : float
        Synaptic time constant, s (Fourcaud-Brunel shift of both bounds; 0: white noise).
    sigma_floor : float
        Floor of ``s``, mV (default :data:`SIGMA_FLOOR_MV`).

    Returns
    -------
    torch.Tensor
        Rate in Hz, shape of the broadcast inputs.
    """
    mu, s2 = torch.broadcast_tensors(mu, s2)
    theta_shift = torch.as_tensor(theta_shift, dtype=mu.dtype, device=mu.device).expand_as(mu)
    consts = (float(theta), float(V_r), float(tau_m), float(t_ref), fourcaud_brunel_shift(tau_s, tau_m),
              float(sigma_floor))
    return _Siegert.apply(mu, theta_shift, s2, consts)
