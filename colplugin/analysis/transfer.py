"""The DMF transfer function f against the LIF neuron's transfer at the same input (PD14 column).

For each population ``i`` of the ``pd14`` column and presynaptic rates ``r_j`` (Hz), a LIF
neuron with exponential current synapses receives a shot-noise current whose free membrane
potential (no threshold) has, relative to rest,

* mean ``mu_i = (tau_m / C) tau_s (sum_j K_ij J_ij r_j + K_bg,i J_E nu_bg)``;
* variance ``sigma_i^2 = sum_j K_ij <J_ij^2> r_j tau_m^2 tau_s^2 / (2 C^2 (tau_m + tau_s))``
  (Campbell's theorem for the PSP kernel of a current-based exponential synapse; the
  Poisson background adds ``K_bg J_E^2 nu_bg`` to the sum; ``<J^2> = J^2 (1 + J_rel_sd^2)``
  for PD14's normally distributed amplitudes).

The LIF rate at that input is Siegert's first-passage rate of the diffusion approximation
[Siegert51]_, [Brunel00]_,

``nu = 1 / (t_ref + tau_m sqrt(pi) int_{(V_r - mu) / s}^{(theta - mu) / s} exp(u^2) (1 + erf(u)) du)``

with Brunel's white-noise amplitude ``s^2 = sum_j K_ij <J_ij^2> r_j tau_m tau_s^2 / C^2``
(``tau_m dV = (mu - V) dt + s sqrt(tau_m) dW``, so ``s^2`` is twice the ``tau_s -> 0`` limit of
``sigma^2``) and threshold and reset shifted by
``sqrt(tau_s / tau_m) |zeta(1/2)| / sqrt(2) * s`` for the synaptic filtering
[FourcaudBrunel02]_. ``theta = V_th - E_L`` and ``V_r = V_reset - E_L`` (mV).

The DMF's potential is the same sum: at a fixed point with ``A = 0`` (``pd14``: kappa = 0),
``V_i = R tau_s (sum_j W_ij r_j + W_bg,i nu_bg)`` with ``R = tau_m / C``, ``W = K J`` and
``W_bg = K_bg J_E`` (:mod:`colplugin.field`, :func:`colplugin.column.intra_column_weights`,
:func:`colplugin.column.background_weights`), so the DMF's rate at that input is ``f(mu_i)``.
Evaluated at the spiking circuit's measured rates, ``f(mu_i)`` against ``nu_i`` isolates the
transfer function: f is a fit in ``mu`` alone and ignores ``sigma``.

References
----------
.. [Siegert51] Siegert (1951), On the first passage time probability problem. Phys Rev 81, 617.
.. [Brunel00] Brunel (2000), Dynamics of sparsely connected networks of excitatory and
   inhibitory spiking neurons. J Comput Neurosci 8, 183-208.
.. [FourcaudBrunel02] Fourcaud & Brunel (2002), Dynamics of the firing probability of noisy
   integrate-and-fire neurons. Neural Comput 14, 2057-2110.
.. [PD14] Potjans & Diesmann (2014), Cereb Cortex 24, 785-806.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..params.names import POPULATIONS

__all__ = ["input_statistics", "siegert_rate", "lif_vs_dmf", "transfer_table_md", "FB_SHIFT"]

#: |zeta(1/2)| / sqrt(2): the Fourcaud-Brunel threshold shift in units of sqrt(tau_s / tau_m) s.
FB_SHIFT = 1.4603545088095868 / math.sqrt(2.0)


def _params(params=None):
    from ..params import load_preset

    return load_preset("pd14") if params is None else params


def input_statistics(rates_hz, params=None, *, background: str = "poisson", k_scale: float = 1.0,
                     dc_rates_hz=None) -> dict[str, np.ndarray]:
    """Mean and spread of each population's free membrane potential at presynaptic rates ``rates_hz``.

    Parameters
    ----------
    rates_hz : array_like, shape (8,)
        Presynaptic rates r_j, Hz (L23E .. L6I).
    params : Params, optional
        Parameter set (default: the ``pd14`` preset); K and J of its area ``pd14`` at full scale.
    background : {"poisson", "dc"}
        ``"poisson"``: the background adds to mean and variance; ``"dc"``: to the mean only.
    k_scale : float
        In-degree scaling of a downscaled spiking circuit (:mod:`colplugin.spiking.microcircuit`):
        ``K = k K_full``, ``J = J_full / sqrt(k)`` keep the variance, and a DC current carries
        ``1 - sqrt(k)`` of the full-scale recurrent mean input computed at ``dc_rates_hz``. So the
        recurrent mean is ``sqrt(k) M r + (1 - sqrt(k)) M r_dc`` with ``M = tau_s K J``. Default 1.
    dc_rates_hz : array_like, shape (8,), optional
        Rates of that DC compensation, Hz (default: the preset's ``published_rates``).

    Returns
    -------
    dict
        ``mu_mV`` (8,) mean relative to rest; ``sigma_mV`` (8,) free-membrane sd (exponential
        synapses); ``s_white_mV`` (8,) Brunel's white-noise amplitude (sqrt(2) times the
        ``tau_s -> 0`` limit of ``sigma_mV``; the sigma of Siegert's formula), all mV.
    """
    from ..column import background_weights, in_degrees, connection_probability, synaptic_strengths

    p = _params(params)
    if background not in ("poisson", "dc"):
        raise ValueError(f"background must be 'poisson' or 'dc', got {background!r}")
    r = np.asarray(rates_hz, dtype=float)
    if r.shape != (len(POPULATIONS),) or not np.all(np.isfinite(r)) or np.any(r < 0):
        raise ValueError(f"rates_hz must be 8 finite rates >= 0 (Hz), got {rates_hz!r}")
    N = p.area_sizes("pd14").astype(float)
    K = np.asarray(in_degrees(connection_probability(p), N))
    J = np.asarray(synaptic_strengths(p, N))  # nA
    tau_m, tau_s, C = p["tau_m"], p["tau_s"], p["C"] * 1e-12  # s, s, F
    nu_bg, J_E = p["nu_bg"], p["J_E"]
    w_bg = np.asarray(background_weights(p))  # K_bg J_E, nA
    var_j2 = 1.0 + float(p["J_rel_sd"]) ** 2 if "J_rel_sd" in p else 1.0
    k = float(k_scale)
    if not 0 < k <= 1:
        raise ValueError(f"k_scale must lie in (0, 1], got {k_scale!r}")
    r_dc = np.asarray(p["published_rates"] if dc_rates_hz is None else dc_rates_hz, dtype=float)
    recurrent = math.sqrt(k) * ((K * J) @ r) + (1 - math.sqrt(k)) * ((K * J) @ r_dc)
    mean_current = tau_s * (recurrent + w_bg * nu_bg) * 1e-9  # A
    mu = tau_m / C * mean_current * 1e3  # mV
    shot = (K * J ** 2) @ r * var_j2  # nA^2 Hz
    if background == "poisson":
        shot = shot + np.asarray(p["K_bg"], dtype=float) * J_E ** 2 * nu_bg * var_j2
    shot = shot * 1e-18  # A^2 Hz
    sigma2 = shot * tau_m ** 2 * tau_s ** 2 / (2 * C ** 2 * (tau_m + tau_s))  # V^2
    s2 = shot * tau_m * tau_s ** 2 / C ** 2
    return {"mu_mV": mu, "sigma_mV": np.sqrt(sigma2) * 1e3, "s_white_mV": np.sqrt(s2) * 1e3}


def siegert_rate(mu, sigma, *, theta: float = 15.0, V_r: float = 0.0, tau_m: float = 0.01, t_ref: float = 0.002,
                 tau_s: float = 0.0) -> float:
    """Stationary rate (Hz) of a LIF neuron with diffusive input (Siegert; Fourcaud-Brunel for tau_s > 0).

    Parameters
    ----------
    mu : float
        Mean input (free membrane potential relative to rest), mV.
    sigma : float
        White-noise amplitude in Brunel's convention ``tau_m dV = (mu - V) dt + sigma sqrt(tau_m) dW``
        (sqrt(2) times the sd of the free membrane potential), mV (> 0).
    theta, V_r : float
        Threshold and reset relative to rest, mV.
    tau_m, t_ref : float
        Membrane time constant and refractory period, s.
    tau_s : float
        Synaptic time constant, s; > 0 shifts theta and V_r by
        ``sqrt(tau_s / tau_m) |zeta(1/2)| / sqrt(2) sigma`` [FourcaudBrunel02]_.

    Returns
    -------
    float
        Rate, Hz. The integrand ``exp(u^2) (1 + erf(u))`` is ``erfcx(-u)`` (no overflow for u < 0).
    """
    from scipy.integrate import quad
    from scipy.special import erfcx

    mu, sigma = float(mu), float(sigma)
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0 mV, got {sigma}")
    shift = math.sqrt(tau_s / tau_m) * FB_SHIFT * sigma
    lo, hi = (V_r + shift - mu) / sigma, (theta + shift - mu) / sigma
    if hi > 26.0:  # exp(u^2) > 1e293: the mean first-passage time is astronomically long
        return 0.0
    # split at 0: erfcx(-u) varies slowly for u < 0 and like 2 exp(u^2) for u > 0
    pts = sorted({lo, min(max(0.0, lo), hi), hi})
    integral = sum(quad(lambda u: erfcx(-u), a, b, limit=200, epsabs=0.0, epsrel=1e-10)[0]
                   for a, b in zip(pts[:-1], pts[1:]))
    return 1.0 / (t_ref + tau_m * math.sqrt(math.pi) * integral)


def lif_vs_dmf(rates_hz, params=None, *, background: str = "poisson", k_scale: float = 1.0,
               dc_rates_hz=None) -> list[dict[str, Any]]:
    """The LIF (Siegert) rate and the DMF's f at each population's input for presynaptic rates ``rates_hz``.

    Parameters
    ----------
    rates_hz : array_like, shape (8,)
        Presynaptic rates, Hz (e.g. the spiking circuit's measured rates).
    params : Params, optional
        Default: the ``pd14`` preset (LIF constants E_L, V_reset, V_th, t_ref, tau_m, C, tau_s;
        transfer constants a, b, d).
    background : {"poisson", "dc"}
        How the background enters the variance (:func:`input_statistics`).
    k_scale, dc_rates_hz
        In-degree scaling of a downscaled spiking circuit and its DC compensation's rates
        (:func:`input_statistics`); default full scale.

    Returns
    -------
    list of dict
        Per population: ``population``, ``rate_hz`` (the given rate), ``mu_mV``, ``sigma_mV``,
        ``s_white_mV``, ``lif_rate_hz`` (Siegert with the Fourcaud-Brunel shift),
        ``lif_rate_white_hz`` (without it), ``dmf_f_hz`` (f(mu)), ``f_vs_lif``
        (``dmf_f_hz / lif_rate_hz - 1``) and ``theta_mV`` (threshold relative to rest).
    """
    from ..field import transfer_numpy

    p = _params(params)
    st = input_statistics(rates_hz, p, background=background, k_scale=k_scale, dc_rates_hz=dc_rates_hz)
    theta, V_r = p["V_th"] - p["E_L"], p["V_reset"] - p["E_L"]
    lif = dict(theta=theta, V_r=V_r, tau_m=p["tau_m"], t_ref=p["t_ref"])
    f = np.asarray(transfer_numpy(st["mu_mV"], p["a"], p["b"], p["d"]), dtype=float)
    rows = []
    for i, name in enumerate(POPULATIONS):
        mu, s = float(st["mu_mV"][i]), float(st["s_white_mV"][i])
        nu = siegert_rate(mu, s, tau_s=p["tau_s"], **lif)
        rows.append({"population": name, "rate_hz": float(np.asarray(rates_hz, dtype=float)[i]), "mu_mV": mu,
                     "sigma_mV": float(st["sigma_mV"][i]), "s_white_mV": s, "lif_rate_hz": nu,
                     "lif_rate_white_hz": siegert_rate(mu, s, **lif), "dmf_f_hz": float(f[i]),
                     "f_vs_lif": float(f[i]) / nu - 1 if nu > 0 else float("nan"), "theta_mV": theta})
    return rows


def transfer_table_md(rows: list[dict[str, Any]], rate_label: str = "spiking (Hz)") -> str:
    """A markdown table of :func:`lif_vs_dmf`'s rows, and a sentence naming where f deviates most.

    "Most" is the largest ``|f(mu) - nu_LIF|`` in Hz (a relative measure is meaningless where
    both rates are near zero); populations whose LIF rate is >= 0.1 Hz and which f misses by
    more than 25 % are listed.
    """
    lines = ["| population | mu (mV) | sigma (mV) | LIF Siegert (Hz) | DMF f(mu) (Hz) | f vs LIF | "
             + rate_label + " |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['population']} | {r['mu_mV']:.2f} | {r['sigma_mV']:.2f} | {r['lif_rate_hz']:.3f} | "
              f"{r['dmf_f_hz']:.3f} | {100 * r['f_vs_lif']:+.1f} % | {r['rate_hz']:.3f} |" for r in rows]
    worst = max(rows, key=lambda r: abs(r["dmf_f_hz"] - r["lif_rate_hz"]))
    big = [r["population"] for r in rows if r["lif_rate_hz"] >= 0.1 and abs(r["f_vs_lif"]) > 0.25]
    return ("\n".join(lines) + "\n\n"
            f"f deviates most from the LIF transfer at {worst['population']} "
            f"({worst['dmf_f_hz'] - worst['lif_rate_hz']:+.3f} Hz, {100 * worst['f_vs_lif']:+.1f} %: "
            f"f(mu) = {worst['dmf_f_hz']:.3f} Hz against Siegert "
            f"{worst['lif_rate_hz']:.3f} Hz at mu = {worst['mu_mV']:.2f} mV, sigma = {worst['sigma_mV']:.2f} mV)"
            + (f"; beyond 25 %: {', '.join(big)}." if big else "; no population beyond 25 %."))
