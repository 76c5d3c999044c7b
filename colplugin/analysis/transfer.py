"""The DMF transfer function f against the LIF neuron's transfer at the same input (PD14 column).

For each population ``i`` of the ``pd14`` column and presynaptic rates ``r_j`` (Hz), a LIF
neuron with exponential current synapses receives a shot-noise current whose free membrane
potential (no threshold) has, relative to rest,

* mean ``mu_i = (tau_m / C) tau_s (sum_j K_ij J_ij r_j + K_bg,i J_E nu_bg)``;
* variance ``sigma_i^2 = sum_j K_ij <J_ij^2> r_j tau_m^2 tau_s^2 / (2 C^2 (tau_m + tau_s))``
  (Campbell's theorem for the PSP kernel of a current-based exponential synapse; the
  Poisson background adds ``K_bg J_E^2 nu_bg`` to the sum (its sources have the fixed
  amplitude ``J_E``, as in the spiking circuits); ``<J^2> = J^2 (1 + J_rel_sd^2)`` for
  PD14's normally distributed recurrent amplitudes).

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

The recurrent fixed point is the other half of the story: each population's rate feeds back
into every population's input. :func:`mean_field_fixed_point` solves ``r = phi(r)`` where
``phi_i`` is either Siegert's rate at ``(mu_i(r), s_i(r))`` (the LIF mean field of PD14) or the
DMF's ``f(mu_i(r))``, population by population. All Siegert is :func:`siegert_fixed_point`,
all f the DMF's own fixed point (:func:`dmf_fixed_point`, via
:func:`colplugin.solve.fixed_points.resting_state`). :func:`transfer_swaps` replaces one
population's transfer at a time; :func:`transfer_attribution` splits the move of every rate from
the DMF's to the LIF mean field's fixed point by the population whose transfer error causes it;
:func:`fixed_point_comparison` sets both against the spiking circuit's rates.

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
import torch
from scipy.integrate import quad
from scipy.optimize import root
from scipy.special import erfcx

from ..column import background_weights, connection_probability, in_degrees, synaptic_strengths
from ..field import transfer_numpy
from ..network import ColumnNetwork
from ..params import ParameterError, load_preset
from ..params.names import POPULATIONS
from ..solve.fixed_points import resting_state

__all__ = ["input_statistics", "siegert_rate", "lif_vs_dmf", "transfer_table_md", "FB_SHIFT", "population_rates",
           "mean_field_fixed_point", "siegert_fixed_point", "dmf_fixed_point", "transfer_swaps",
           "transfer_attribution", "fixed_point_comparison", "fixed_point_table_md"]

#: |zeta(1/2)| / sqrt(2): the Fourcaud-Brunel threshold shift in units of sqrt(tau_s / tau_m) s.
FB_SHIFT = 1.4603545088095868 / math.sqrt(2.0)
#: Floor of phi in the log-rate residual of :func:`mean_field_fixed_point`, Hz.
_TINY_RATE = 1e-300


def _params(params=None):
    p = load_preset("pd14") if params is None else params
    if np.isfinite(np.asarray(p["r_max"], dtype=float)).any():
        raise ParameterError("this parameter set saturates some rates (finite r_max), which the LIF mean field has "
                             "no counterpart for: compare a set without saturation (r_max = inf)")
    return p


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
    if background == "poisson":  # Poisson sources of amplitude J_E without spread, as the spiking circuits' inputs
        shot = shot + np.asarray(p["K_bg"], dtype=float) * J_E ** 2 * nu_bg
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
    p = _params(params)
    st = input_statistics(rates_hz, p, background=background, k_scale=k_scale, dc_rates_hz=dc_rates_hz)
    theta, V_r = p["V_th"] - p["E_L"], p["V_reset"] - p["E_L"]
    lif = dict(theta=theta, V_r=V_r, tau_m=p["tau_m"], t_ref=p["t_ref"])
    f = np.asarray(transfer_numpy(st["mu_mV"] + p["V_offset"], p["a"], p["b"], p["d"]), dtype=float)
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


def _lif_constants(p) -> dict[str, float]:
    return dict(theta=p["V_th"] - p["E_L"], V_r=p["V_reset"] - p["E_L"], tau_m=p["tau_m"], t_ref=p["t_ref"],
                tau_s=p["tau_s"])


def _lif_weights(lif) -> np.ndarray:
    w = np.asarray(lif, dtype=float)
    if w.ndim not in (0, 1) or (w.ndim == 1 and w.shape != (len(POPULATIONS),)) or not np.all((w >= 0) & (w <= 1)):
        raise ValueError(f"lif must be one value or 8 values (one per population), each a bool or a weight in "
                         f"[0, 1], got {lif!r}")
    return np.broadcast_to(w, (len(POPULATIONS),)).copy()


def population_rates(rates_hz, params=None, *, lif=True, background: str = "poisson", k_scale: float = 1.0,
                     dc_rates_hz=None) -> np.ndarray:
    """Each population's output rate phi_i(r) (Hz) at the input that presynaptic rates ``rates_hz`` give.

    Parameters
    ----------
    rates_hz : array_like, shape (8,)
        Presynaptic rates r_j, Hz.
    params : Params, optional
        Default: the ``pd14`` preset.
    lif : bool, float or sequence of 8 of them
        Per population: True (1), the LIF (Siegert, Fourcaud-Brunel shift) rate at
        ``(mu_i, s_i)``; False (0), the DMF's ``f(mu_i)``; a weight ``w`` in (0, 1) gives
        ``(1 - w) f + w nu_LIF`` (the path between the two, :func:`transfer_attribution`). One
        value applies to all.
    background, k_scale, dc_rates_hz
        As in :func:`input_statistics` (they change the DMF's ``f(mu)`` only through ``mu``).

    Returns
    -------
    numpy.ndarray, shape (8,)
        Rates, Hz.
    """
    p = _params(params)
    w = _lif_weights(lif)
    st = input_statistics(rates_hz, p, background=background, k_scale=k_scale, dc_rates_hz=dc_rates_hz)
    out = np.asarray(transfer_numpy(st["mu_mV"] + p["V_offset"], p["a"], p["b"], p["d"]), dtype=float).copy()
    lif_c = _lif_constants(p)
    for i in np.flatnonzero(w):
        out[i] += w[i] * (siegert_rate(st["mu_mV"][i], st["s_white_mV"][i], **lif_c) - out[i])
    return out


def _jacobian(phi, r: np.ndarray) -> np.ndarray:
    """d phi / d r (8, 8) at ``r`` by central differences (step 1e-5 r; one-sided at r = 0)."""
    D = np.empty((len(r), len(r)))
    for j in range(len(r)):
        h = 1e-5 * max(r[j], 1e-3)
        up, dn = r.copy(), r.copy()
        up[j] += h
        dn[j] = max(dn[j] - h, 0.0)
        D[:, j] = (phi(up) - phi(dn)) / (up[j] - dn[j])
    return D


def _leading_eigenvalue(phi, r: np.ndarray) -> float:
    """Largest real part of the eigenvalues of d phi / d r at ``r``."""
    return float(np.max(np.linalg.eigvals(_jacobian(phi, r)).real))


def mean_field_fixed_point(params=None, *, lif=True, background: str = "poisson", k_scale: float = 1.0,
                           dc_rates_hz=None, r0=None, tol: float = 1e-9, max_evaluations: int = 2000
                           ) -> dict[str, Any]:
    """Self-consistent stationary rates r = phi(r) of one column's 8 populations (:func:`population_rates`).

    Solved with Powell's hybrid method (``scipy.optimize.root``, ``hybr``) on
    ``log phi(r) - log r`` in log rates (so that every rate stays positive), started from ``r0``;
    converged when ``max |phi(r) - r| <= tol`` (Hz).

    Parameters
    ----------
    params : Params, optional
        Default: the ``pd14`` preset. Its ``kappa`` must be 0 (no adaptation: ``A = 0``).
    lif : bool, float or sequence of 8 of them
        Which populations use the LIF (Siegert) transfer; the others use the DMF's f
        (:func:`population_rates`).
    background, k_scale, dc_rates_hz
        As in :func:`input_statistics`.
    r0 : array_like, shape (8,), optional
        Start, Hz (> 0); default the preset's ``published_rates``. Where several fixed points
        exist, the one found depends on it.
    tol : float
        Convergence: ``max_i |phi_i(r) - r_i| <= tol``, Hz.
    max_evaluations : int
        Most evaluations of phi the solver may use.

    Returns
    -------
    dict
        ``rates_hz`` (8,) Hz; ``residual_hz`` = ``max |phi(r) - r|``, Hz; ``evaluations``;
        ``lif`` (8 weights of the LIF transfer); ``leading_eigenvalue``: the largest real part
        of the eigenvalues of ``d phi / d r`` (dimensionless), and ``stable`` (it is < 1: the
        fixed point is stable under the rate dynamics ``tau dr/dt = -r + phi(r)``, whose
        linearisation has the eigenvalues of the DMF's V dynamics when phi is f).

    Raises
    ------
    RuntimeError
        If the solver does not reach ``tol`` within ``max_evaluations`` (the message gives the
        residual and the rates reached).
    ValueError
        For bad arguments, or a preset with adaptation.
    """
    p = _params(params)
    if np.any(np.asarray(p["kappa"], dtype=float) != 0):
        raise ValueError("mean_field_fixed_point: the preset has adaptation (kappa != 0); these fixed points "
                         "assume A = 0 (use the pd14 preset, or ColumnNetwork and resting_state)")
    w = _lif_weights(lif)
    r0 = np.asarray(p["published_rates"] if r0 is None else r0, dtype=float)
    if r0.shape != (len(POPULATIONS),) or not np.all(np.isfinite(r0)) or np.any(r0 <= 0):
        raise ValueError(f"r0 must be 8 finite rates > 0 (Hz), got {r0!r}")
    if not (tol > 0 and int(max_evaluations) >= 1):
        raise ValueError(f"tol must be > 0 Hz and max_evaluations >= 1, got {tol!r} and {max_evaluations!r}")
    kw = dict(lif=w, background=background, k_scale=k_scale, dc_rates_hz=dc_rates_hz)
    count = [0]

    def phi(r: np.ndarray) -> np.ndarray:
        count[0] += 1
        return population_rates(r, p, **kw)

    with np.errstate(over="ignore", divide="ignore"):
        # log phi(r) - log r: the same scale for every population (a silent one, phi = 0, is pushed to r -> 0)
        sol = root(lambda x: np.log(np.maximum(phi(np.exp(x)), _TINY_RATE)) - x, np.log(r0), method="hybr",
                   options={"xtol": 1e-14, "maxfev": int(max_evaluations)})
    r = np.exp(sol.x)
    residual = float(np.max(np.abs(phi(r) - r))) if np.all(np.isfinite(r)) else float("inf")
    if not residual <= tol:
        which = "Siegert" if np.all(w == 1) else "f" if not w.any() else \
            "LIF weights " + np.array2string(w, precision=3)
        raise RuntimeError(f"mean_field_fixed_point ({which}) did not converge: max |phi(r) - r| = {residual:.3g} Hz "
                           f"> tol = {tol:g} Hz after {count[0]} evaluations ({sol.message.strip()}); rates reached "
                           f"{np.array2string(r, precision=4)} Hz. Start closer (r0), raise max_evaluations, "
                           "or the column may have no fixed point near r0")
    lead = _leading_eigenvalue(lambda z: population_rates(z, p, **kw), r)
    return {"rates_hz": r, "residual_hz": residual, "evaluations": count[0], "lif": w.tolist(),
            "leading_eigenvalue": lead, "stable": bool(lead < 1)}


def siegert_fixed_point(params=None, *, background: str = "poisson", k_scale: float = 1.0, dc_rates_hz=None,
                        r0=None, tol: float = 1e-9, max_evaluations: int = 2000) -> dict[str, Any]:
    """The LIF mean field's stationary rates: every population at the Siegert rate of its input.

    :func:`mean_field_fixed_point` with ``lif=True`` (same parameters and result; rates in
    Hz). With ``k_scale < 1`` it is the mean field of the downscaled spiking circuit (in-degrees
    ``k K``, weights ``J / sqrt(k)``, DC compensation at ``dc_rates_hz``).
    """
    return mean_field_fixed_point(params, lif=True, background=background, k_scale=k_scale,
                                  dc_rates_hz=dc_rates_hz, r0=r0, tol=tol, max_evaluations=max_evaluations)


def dmf_fixed_point(params=None, *, tol: float = 1e-10) -> dict[str, Any]:
    """The DMF column's own fixed point, in the terms of :func:`mean_field_fixed_point`.

    One column of area ``pd14`` (:class:`colplugin.network.ColumnNetwork`), solved by
    :func:`colplugin.solve.fixed_points.resting_state` (Newton on the DMF's vector field from
    the end of a simulation); its rates are ``f(mu(r))`` with ``mu`` of :func:`input_statistics`.

    Parameters
    ----------
    params : Params, optional
        Default: the ``pd14`` preset (kappa must be 0).
    tol : float
        Newton's tolerance (relative, on V in mV).

    Returns
    -------
    dict
        As :func:`mean_field_fixed_point` (``lif`` all 0; ``residual_hz`` =
        ``max |f(mu(r)) - r|``, Hz; ``evaluations`` None).
    """
    p = _params(params)
    if np.any(np.asarray(p["kappa"], dtype=float) != 0):
        raise ValueError("dmf_fixed_point: the preset has adaptation (kappa != 0); use the pd14 preset")
    net = ColumnNetwork(p, {"pd14": ("pd14", 1)})
    y = resting_state(net, tol=tol)
    with torch.no_grad():
        r = net.rates(y)[0].cpu().numpy().astype(float)
    residual = float(np.max(np.abs(population_rates(r, p, lif=False) - r)))
    lead = _leading_eigenvalue(lambda z: population_rates(z, p, lif=False), r)
    return {"rates_hz": r, "residual_hz": residual, "evaluations": None, "lif": [0.0] * len(POPULATIONS),
            "leading_eigenvalue": lead, "stable": bool(lead < 1)}


def transfer_swaps(params=None, *, background: str = "poisson", k_scale: float = 1.0, dc_rates_hz=None,
                   tol: float = 1e-9) -> dict[str, Any]:
    """Fixed points with one population's transfer swapped: which population's f moves which rate.

    Parameters
    ----------
    params : Params, optional
        Default: the ``pd14`` preset.
    background, k_scale, dc_rates_hz
        As in :func:`input_statistics`; the default (full scale) is the DMF's own circuit.
    tol : float
        Convergence of every fixed point, Hz (:func:`mean_field_fixed_point`).

    Returns
    -------
    dict
        ``dmf`` (8,) all f, Hz; ``siegert`` (8,) all Siegert, Hz; ``swap_in`` (8, 8): row p is
        the fixed point with only p's f replaced by Siegert (started from ``dmf``), Hz;
        ``swap_out`` (8, 8): row p is the fixed point with Siegert everywhere except p, which keeps
        f (started from ``siegert``), Hz; ``stable``: whether each of these 18 fixed points is
        stable (keys ``dmf``, ``siegert``, ``swap_in``, ``swap_out``).
    """
    p = _params(params)
    kw = dict(background=background, k_scale=k_scale, dc_rates_hz=dc_rates_hz, tol=tol)
    dmf = mean_field_fixed_point(p, lif=False, **kw)
    sie = mean_field_fixed_point(p, lif=True, **kw)
    n = len(POPULATIONS)
    swap_in = [mean_field_fixed_point(p, lif=np.arange(n) == i, r0=dmf["rates_hz"], **kw) for i in range(n)]
    swap_out = [mean_field_fixed_point(p, lif=np.arange(n) != i, r0=sie["rates_hz"], **kw) for i in range(n)]
    return {"dmf": dmf["rates_hz"], "siegert": sie["rates_hz"],
            "swap_in": np.array([s["rates_hz"] for s in swap_in]),
            "swap_out": np.array([s["rates_hz"] for s in swap_out]),
            "stable": {"dmf": dmf["stable"], "siegert": sie["stable"], "swap_in": [s["stable"] for s in swap_in],
                       "swap_out": [s["stable"] for s in swap_out]}}


def transfer_attribution(params=None, *, background: str = "poisson", k_scale: float = 1.0, dc_rates_hz=None,
                         nodes: int = 8, tol: float = 1e-9) -> dict[str, Any]:
    """Split the move from the all-f to the all-Siegert fixed point into each population's transfer error.

    Along the path ``phi_t = f + t (nu_LIF - f)`` (every population at once, ``t`` from 0 to 1),
    the fixed point ``r(t)`` moves as ``dr/dt = (I - D_t)^-1 e_t`` with ``D_t = d phi_t / d r``
    and ``e_t = nu_LIF - f`` (8,) at ``r(t)`` (implicit function theorem). Population p's transfer
    error contributes ``C_qp = int_0^1 [(I - D_t)^-1]_qp e_t,p dt`` to population q's move; the
    contributions add up to ``r_Siegert - r_f`` exactly (up to the quadrature: Gauss-Legendre with
    ``nodes`` points, checked by ``completeness_error_hz``). Unlike a single swap
    (:func:`transfer_swaps`), this keeps the other populations' errors, which partly cancel, in play.

    Parameters
    ----------
    params : Params, optional
        Default: the ``pd14`` preset.
    background, k_scale, dc_rates_hz
        As in :func:`input_statistics`; default full scale (the DMF's circuit).
    nodes : int
        Gauss-Legendre points on ``t``.
    tol : float
        Convergence of every fixed point, Hz.

    Returns
    -------
    dict
        ``contributions_hz`` (8, 8): ``[q, p]`` = move of q's rate caused by p's transfer error, Hz;
        ``dmf`` and ``siegert`` (8,) the two end points, Hz; ``completeness_error_hz``:
        ``max_q |sum_p C_qp - (r_Siegert - r_f)_q|``, Hz; ``path_stable``: every ``r(t)`` at the
        nodes is stable.
    """
    p = _params(params)
    kw = dict(background=background, k_scale=k_scale, dc_rates_hz=dc_rates_hz)
    if int(nodes) < 2:
        raise ValueError(f"nodes must be >= 2, got {nodes!r}")
    t, wq = np.polynomial.legendre.leggauss(int(nodes))
    t, wq = (t + 1) / 2, wq / 2
    start = mean_field_fixed_point(p, lif=0.0, tol=tol, **kw)
    end = mean_field_fixed_point(p, lif=1.0, tol=tol, **kw)
    n = len(POPULATIONS)
    C = np.zeros((n, n))
    r = start["rates_hz"]
    stable = True
    for tk, wk in zip(t, wq):
        r = mean_field_fixed_point(p, lif=tk, r0=r, tol=tol, **kw)["rates_hz"]
        D = _jacobian(lambda z, w=tk: population_rates(z, p, lif=w, **kw), r)
        stable &= bool(np.max(np.linalg.eigvals(D).real) < 1)
        e = population_rates(r, p, lif=1.0, **kw) - population_rates(r, p, lif=0.0, **kw)
        C += wk * np.linalg.solve(np.eye(n) - D, np.diag(e))
    move = end["rates_hz"] - start["rates_hz"]
    return {"contributions_hz": C, "dmf": start["rates_hz"], "siegert": end["rates_hz"],
            "completeness_error_hz": float(np.max(np.abs(C.sum(1) - move))), "path_stable": stable}


def fixed_point_comparison(spiking_rates_hz, params=None, *, background: str = "poisson", k_scale: float = 1.0,
                           tolerance: float = 0.25, nodes: int = 8) -> dict[str, Any]:
    """Spiking rates against the DMF's and the LIF mean field's fixed points, and what moves them apart.

    Parameters
    ----------
    spiking_rates_hz : array_like, shape (8,)
        The spiking circuit's rates (e.g. the mean over seeds), Hz.
    params : Params, optional
        Default: the ``pd14`` preset (kappa 0).
    background : {"poisson", "dc"}
        The spiking circuit's background (:func:`input_statistics`).
    k_scale : float
        The spiking circuit's in-degree scale; its LIF mean field (``siegert_scaled``) uses it,
        with the DC compensation at the published rates. The DMF, the full-scale LIF mean field
        and the attribution are at full scale (the DMF's circuit).
    tolerance : float
        Relative miss above which a population's DMF rate is explained (``causes``).
    nodes : int
        Quadrature points of :func:`transfer_attribution`.

    Returns
    -------
    dict
        ``rows`` (per population: ``population``, ``spiking_rate_hz``, ``dmf_rate_hz``,
        ``siegert_rate_hz`` (full scale), ``siegert_scaled_rate_hz`` (at ``k_scale``), Hz;
        ``dmf_vs_spiking``, ``siegert_vs_spiking``, ``siegert_scaled_vs_spiking`` (relative);
        ``transfer_share``: ``(siegert - dmf) / (spiking - dmf)``, the part of the DMF's miss that
        replacing f by the LIF transfer closes); ``contributions_hz`` (8, 8) and
        ``completeness_error_hz`` of :func:`transfer_attribution`; ``swap_in_hz``, ``swap_out_hz``
        (8, 8) of :func:`transfer_swaps`; ``stable`` (each fixed point); ``k_scale``,
        ``background``, ``tolerance``; ``causes`` (one dict per population whose DMF rate misses
        the spiking rate by more than ``tolerance``) and ``cause_md`` (one sentence per cause).
        Arrays are nested lists (JSON).
    """
    p = _params(params)
    spk = np.asarray(spiking_rates_hz, dtype=float)
    if spk.shape != (len(POPULATIONS),) or not np.all(np.isfinite(spk)) or np.any(spk < 0):
        raise ValueError(f"spiking_rates_hz must be 8 finite rates >= 0 (Hz), got {spiking_rates_hz!r}")
    dmf = dmf_fixed_point(p)
    att = transfer_attribution(p, background=background, nodes=nodes)
    if not np.allclose(att["dmf"], dmf["rates_hz"], rtol=1e-6, atol=1e-9):
        raise RuntimeError("fixed_point_comparison: the mean-field solver found another fixed point with f than the "
                           f"DMF column ({att['dmf']} against {dmf['rates_hz']} Hz)")
    swaps = transfer_swaps(p, background=background)
    scaled = siegert_fixed_point(p, background=background, k_scale=k_scale) if k_scale != 1 else \
        {"rates_hz": att["siegert"], "stable": swaps["stable"]["siegert"]}
    r_d, r_s, r_k = dmf["rates_hz"], att["siegert"], scaled["rates_hz"]

    def rel(x: float, ref: float) -> float:
        return float(x / ref - 1) if ref > 0 else float("nan")

    rows = [{"population": q, "spiking_rate_hz": float(spk[i]), "dmf_rate_hz": float(r_d[i]),
             "siegert_rate_hz": float(r_s[i]), "siegert_scaled_rate_hz": float(r_k[i]),
             "dmf_vs_spiking": rel(r_d[i], spk[i]), "siegert_vs_spiking": rel(r_s[i], spk[i]),
             "siegert_scaled_vs_spiking": rel(r_k[i], spk[i]),
             "transfer_share": float((r_s[i] - r_d[i]) / (spk[i] - r_d[i])) if spk[i] != r_d[i] else float("nan")}
            for i, q in enumerate(POPULATIONS)]
    C = att["contributions_hz"]
    causes, sentences = [], []
    for i, row in enumerate(rows):
        if not abs(row["dmf_vs_spiking"]) > tolerance:
            continue
        q = row["population"]
        move = r_s[i] - r_d[i]
        order = np.argsort(-np.abs(C[i]))
        along = [j for j in order if np.sign(C[i, j]) == np.sign(move)]
        against = [j for j in order if np.sign(C[i, j]) == -np.sign(move)]
        top = int(along[0]) if along else int(order[0])
        opp = int(against[0]) if against else None
        lif_ok = abs(row["siegert_scaled_vs_spiking"]) <= tolerance
        cause = {"population": q, "dmf_vs_spiking": row["dmf_vs_spiking"],
                 "siegert_scaled_vs_spiking": row["siegert_scaled_vs_spiking"], "transfer_share": row["transfer_share"],
                 "lif_mean_field_within_tolerance": lif_ok, "move_hz": float(move),
                 "largest_contribution": {"population": POPULATIONS[top], "hz": float(C[i, top])},
                 "largest_opposing": None if opp is None else {"population": POPULATIONS[opp], "hz": float(C[i, opp])},
                 "own_swap_in_hz": float(swaps["swap_in"][i, i])}
        causes.append(cause)
        text = (f"{q}: the DMF misses the spiking rate by {100 * row['dmf_vs_spiking']:+.1f} %, the LIF mean field "
                f"(Siegert fixed point, k = {k_scale:g}) by {100 * row['siegert_scaled_vs_spiking']:+.1f} %")
        if lif_ok:
            text += (f", so the DMF's transfer function f is what takes it beyond {100 * tolerance:.0f} %: with the "
                     f"LIF transfer in every population "
                     f"{q}'s fixed point moves by {move:+.3f} Hz ({100 * move / r_d[i]:+.1f} %; "
                     f"{100 * row['transfer_share']:.0f} % of the DMF's miss). Of that move, {POPULATIONS[top]}'s "
                     f"transfer error contributes {C[i, top]:+.3f} Hz")
            text += (f", offset by {POPULATIONS[opp]}'s {C[i, opp]:+.3f} Hz" if opp is not None else "")
            rest = C[i].sum() - C[i, top] - (C[i, opp] if opp is not None else 0.0)
            text += (f", all other populations {rest:+.3f} Hz (replacing {q}'s f alone, the others keeping f, would "
                     f"put {q} at {swaps['swap_in'][i, i]:.3f} Hz).")
        else:
            text += (f", so the LIF mean field misses too and the cause lies beyond the transfer function f "
                     f"(replacing f by the LIF transfer in every population moves {q} by {move:+.3f} Hz).")
        sentences.append(text)
    if not causes:
        sentences.append(f"Every population's DMF rate lies within {100 * tolerance:.0f} % of the spiking rate.")
    others = [i for i, row in enumerate(rows) if not abs(row["dmf_vs_spiking"]) > tolerance and r_d[i] > 0]
    if causes and others:
        moved = max(others, key=lambda i: abs(r_s[i] / r_d[i] - 1))
        sentences.append(f"In the other populations the LIF transfer moves the fixed point by at most "
                         f"{100 * (r_s[moved] / r_d[moved] - 1):+.1f} % of the DMF's rate ({POPULATIONS[moved]}).")
    return {"rows": rows, "contributions_hz": C.tolist(), "completeness_error_hz": att["completeness_error_hz"],
            "swap_in_hz": swaps["swap_in"].tolist(), "swap_out_hz": swaps["swap_out"].tolist(),
            "stable": {"dmf": dmf["stable"], "siegert": swaps["stable"]["siegert"], "siegert_scaled": scaled["stable"],
                       "attribution_path": att["path_stable"], "swap_in": swaps["stable"]["swap_in"],
                       "swap_out": swaps["stable"]["swap_out"]},
            "k_scale": float(k_scale), "background": background, "tolerance": float(tolerance),
            "causes": causes, "cause_md": " ".join(sentences)}


def fixed_point_table_md(result: dict[str, Any], rate_label: str = "spiking (Hz)") -> str:
    """Markdown of :func:`fixed_point_comparison`: the rates table, the attribution table and the causes."""
    k = result["k_scale"]
    scaled = k != 1  # the downscaled circuit's LIF mean field gets its own columns
    lines = ["| population | " + rate_label + " | DMF f (Hz) | LIF mean field (Hz) | "
             + (f"LIF mean field k = {k:g} (Hz) | " if scaled else "") + "DMF vs spiking | LIF vs spiking |"
             + (" LIF k vs spiking |" if scaled else ""), "|---" * (6 + 2 * scaled) + "|"]
    for r in result["rows"]:
        lines.append(f"| {r['population']} | {r['spiking_rate_hz']:.3f} | {r['dmf_rate_hz']:.3f} | "
                     f"{r['siegert_rate_hz']:.3f} | " + (f"{r['siegert_scaled_rate_hz']:.3f} | " if scaled else "")
                     + f"{100 * r['dmf_vs_spiking']:+.1f} % | {100 * r['siegert_vs_spiking']:+.1f} % |"
                     + (f" {100 * r['siegert_scaled_vs_spiking']:+.1f} % |" if scaled else ""))
    C = np.asarray(result["contributions_hz"])
    att = ["| rate (row) / transfer error of (column) | " + " | ".join(POPULATIONS) + " | sum (Hz) |",
           "|---" * (len(POPULATIONS) + 2) + "|"]
    att += [f"| {q} | " + " | ".join(f"{c:+.3f}" for c in C[i]) + f" | {C[i].sum():+.3f} |"
            for i, q in enumerate(POPULATIONS)]
    return ("\n".join(lines) + "\n\nMove of each population's fixed-point rate (row) from the DMF's (f everywhere) to "
            "the LIF mean field's (Siegert everywhere), full scale, split by the population whose transfer error "
            "causes it (column; Hz; path integral along f + t (Siegert - f), the sums equal the move to "
            f"{result['completeness_error_hz']:.1e} Hz):\n\n" + "\n".join(att) + "\n\n" + result["cause_md"])
