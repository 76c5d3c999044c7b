"""The dynamic mean-field (DMF) equations: the single source of truth of colplugin's model.

Per population ``i`` (state: membrane-like potential ``V`` and adaptation ``A``, in mV)::

    r_i            = f(V_i - A_i)                                     Hz
    I_i            = tau_s * (sum_j W_ij r_j + W_bg,i nu_bg + sum_k W_in,ik u_k(t))   nA
    tau_m dV_i/dt  = -V_i + R I_i                    R = tau_m / C (MOhm)
    tau_a dA_i/dt  = -A_i + kappa_i r_i
    tau_s dr~_i/dt = -r~_i + r_i                     read-out only
    f(x)           = (a x - b) / (1 - exp(-d (a x - b)))

The torch vector field (``colplugin.network.Coupling.__call__``, which uses :func:`transfer`)
and the Brian2 equations (:data:`BRIAN2_EQUATIONS`) must agree; ``tests/test_brian2_export.py`` integrates both with the
same explicit scheme and requires agreement to 1e-12.

The filtered rate ``r~`` does not feed back. Its 0.5 ms time constant would set the step
of any explicit solver, so it is kept out of the solver state and obtained from the
instantaneous rate at the output times by the exact solution of the linear filter for a
piecewise-linear input (:func:`filter_rate`).

References
----------
.. [Evers23] Evers, Peters & Senden (2023), bioRxiv 10.1101/2023.09.19.558418.
.. [dL25] de Leeuw, Goebel & Senden, Biophysical Deep Learning: Laminar-resolved
   Cortical Columns as Neural Network Units.
"""

from __future__ import annotations

import math

import torch

__all__ = ["transfer", "transfer_value", "transfer_numpy", "slope", "g_slope", "filter_rate", "BRIAN2_EQUATIONS"]

_SERIES_Z = 1e-2  # |z| below which the derivative uses its Taylor series


_TINY = {dt: torch.finfo(dt).tiny for dt in (torch.float16, torch.bfloat16, torch.float32, torch.float64)}


def transfer_value(x: torch.Tensor, a: float, b: float, d: float) -> torch.Tensor:
    """f(x) without autograd support (see :func:`transfer`): the forward formula alone."""
    z = d * (a * x - b)
    az = z.abs().clamp_min(_TINY[z.dtype])
    # z > 0: z / (1 - e^-z);  z < 0: |z| e^z / (1 - e^z);  z = 0: the limit 1 (az / -expm1(-az))
    return az * torch.exp(z.clamp(max=0.0)) / (torch.expm1(-az) * (-d))


def transfer_numpy(x, a: float, b: float, d: float):
    """f(x) = (a x - b) / (1 - exp(-d (a x - b))) for numpy arrays (Hz), via ``scipy.special.exprel``.

    ``1 / (d exprel(-d (a x - b)))``: the form the Brian2 equations use, finite at a x = b.
    For scipy ODE solves and reference models (e.g. Wong & Wang's H, the same function
    with other constants).
    """
    from scipy.special import exprel

    return 1.0 / (d * exprel(-d * (a * x - b)))


def g_slope(z: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """g'(z) of g(z) = z / (1 - e^-z) from z and g(z), without autograd support.

    g' = g (1 + z - g) / z; for |z| < 0.01, where that quotient cancels, the Taylor series
    1/2 + z/6 - z^3/180. Branch-free (no host synchronisation on GPUs).
    """
    small = z.abs() < _SERIES_Z
    zs = torch.where(small, torch.ones_like(z), z)
    return torch.where(small, 0.5 + z / 6.0 - z ** 3 / 180.0, g * (1.0 + zs - g) / zs)


def slope(x: torch.Tensor, f: torch.Tensor, a: float, b: float, d: float) -> torch.Tensor:
    """f'(x) (Hz/mV) from x and f(x) = transfer(x), without autograd support: f' = a g'(z),
    z = d (a x - b), g = d f (see :func:`g_slope`)."""
    return a * g_slope(d * (a * x - b), d * f)


class _Transfer(torch.autograd.Function):
    """f with an analytic derivative: exact near the removable singularity, and cheaper."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, a: float, b: float, d: float) -> torch.Tensor:
        f = transfer_value(x, a, b, d)
        ctx.save_for_backward(x, f)
        ctx.abd = (a, b, d)
        return f

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        x, f = ctx.saved_tensors
        return grad_out * slope(x, f, *ctx.abd), None, None, None


def transfer(x: torch.Tensor, a: float, b: float, d: float) -> torch.Tensor:
    """Transfer function f(x) = y / (1 - exp(-d y)), y = a x - b (rate in Hz).

    Exact and overflow-free for every finite ``x``: with ``z = d y`` it is evaluated as
    ``|z| exp(min(z, 0)) / (d (1 - exp(-|z|)))`` using ``expm1``, which equals
    ``y / (1 - e^-z)`` for ``z > 0``, ``y e^z / (e^z - 1)`` for ``z < 0`` (no exponential
    of a large positive number) and its limit ``1 / d`` at the removable singularity
    ``a x = b``. The derivative ``a g'(z)``, ``g(z) = z / (1 - e^-z)``, is analytic
    (Taylor series ``1/2 + z/6 - z^3/180`` for ``|z| < 0.01``).

    Parameters
    ----------
    x : torch.Tensor
        Input potential in mV.
    a : float
        Gain in Hz/mV.
    b : float
        Threshold in Hz.
    d : float
        Noise factor in s.

    Returns
    -------
    torch.Tensor
        Rate in Hz.
    """
    return _Transfer.apply(x, a, b, d)


def filter_rate(t: torch.Tensor, r: torch.Tensor, tau_s: float, r0: torch.Tensor | None = None) -> torch.Tensor:
    """Low-pass filtered rate r~ (``tau_s dr~/dt = -r~ + r``) at the sample times ``t``.

    Exact for a rate that is linear between samples (first-order hold).

    Parameters
    ----------
    t : torch.Tensor, shape (T,)
        Sample times in s, increasing.
    r : torch.Tensor, shape (T, ...)
        Instantaneous rate in Hz.
    tau_s : float
        Filter time constant in s.
    r0 : torch.Tensor, optional
        Filtered rate at ``t[0]``; defaults to ``r[0]``.
    """
    out = [r[0] if r0 is None else r0]
    h = (t[1:] - t[:-1]).tolist()
    for k, hk in enumerate(h):
        if hk <= 0:
            out.append(out[-1])
            continue
        e = math.exp(-hk / tau_s)
        c = (1.0 - e) * tau_s / hk
        out.append(e * out[-1] + (1.0 - c) * r[k + 1] + (c - e) * r[k])
    return torch.stack(out)


#: The same equations for Brian2 (one neuron per population). ``I_rec`` is the summed
#: recurrent + inter-column drive (amp*Hz, from ``Synapses``), ``I_in`` the stimulus
#: drive (amp*Hz), ``W_bg`` the background weight (amp). ``f`` is written with Brian2's
#: ``exprel``: (a x - b)/(1 - exp(-d(a x - b))) = 1 / (d * exprel(-d (a x - b))).
BRIAN2_EQUATIONS = """
dV/dt = (-V + R * tau_s * (I_rec + W_bg * nu_bg + I_in)) / tau_m : volt
dA/dt = (-A + kappa * r) / tau_a : volt
drf/dt = (-rf + r) / tau_s : Hz
r = 1 / (d * exprel(-d * (a * (V - A) - b))) : Hz
I_rec : amp * Hz
I_in : amp * Hz
kappa : volt * second (constant)
W_bg : amp (constant)
"""
