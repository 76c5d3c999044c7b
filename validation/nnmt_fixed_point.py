"""Independent oracle: the LIF mean-field (Siegert) fixed point of the PD14 column, by nnmt.

    /tmp/nnmt-venv/bin/python validation/nnmt_fixed_point.py --out tests/data/nnmt_pd14_lif.json

Computes, with the INM-6 Neuronal Network Meanfield Toolbox ``nnmt`` (PyPI ``nnmt``, 1.3.0), the
self-consistent stationary rates of the 8 populations of the Potjans & Diesmann (2014) column
(full scale) as LIF neurons with exponential current synapses (Fourcaud & Brunel 2002: the
white-noise Siegert formula with threshold and reset shifted by
``sigma |zeta(1/2)| / sqrt(2) * sqrt(tau_s / tau_m)``), and writes them as a JSON fixture that
the package's tests read (``tests/data/nnmt_pd14_lif.json``).

Environment
-----------
This script needs its OWN virtual environment with nnmt, e.g.::

    python3 -m venv /tmp/nnmt-venv && /tmp/nnmt-venv/bin/pip install nnmt==1.3.0

nnmt 1.3.0 pulls numpy >= 2.4, which Brian2 2.9 (a dependency of colplugin) cannot use, so nnmt
cannot share colplugin's environment. For the same reason this script does NOT import
colplugin: it reads the raw numbers (values + units) from ``colplugin/params/pd14.toml`` and the
pd14 population sizes from ``colplugin/params/areas.toml`` with :mod:`tomllib` (Python >= 3.11)
and converts the units itself.

Model
-----
* N: the pd14 area's population sizes (L23E L23I L4E L4I L5E L5I L6E L6I).
* In-degrees ``K_ij = ln(1 - P_ij) / ln(1 - 1 / (N_i N_j)) / N_i`` (P = connection_probability,
  rows target, columns source; computed with log1p).
* PSC amplitudes (pA): ``+J_E`` from excitatory sources, ``g J_E`` from inhibitory ones,
  ``J[L23E, L4E]`` times ``l4e_to_l23e_factor``; converted to PSP-charge weights in V as nnmt's
  own Microcircuit model does: ``J [V] = J [A] * tau_s / C``.
* Background: ``K_bg`` Poisson sources at ``nu_bg`` with amplitude ``J_E`` (no spread).
* Recurrent amplitudes have relative sd ``J_rel_sd`` (cv); it enters only the variance,
  ``<J^2> = J^2 (1 + cv^2)``. nnmt's mean is ``tau_m sum_j K_ij J_ij nu_j`` and its variance
  ``tau_m sum_j K_ij J_ij^2 nu_j`` (``nnmt.lif._general._mean_input`` / ``_std_input``; K and J
  are used nowhere else in ``nnmt.lif.exp._firing_rates``), so passing
  ``K' = K / (1 + cv^2)`` and ``J' = J (1 + cv^2)`` keeps the mean and multiplies the recurrent
  variance by ``1 + cv^2``. The script checks this numerically.
* LIF: tau_m, C, tau_s, t_ref, E_L, V_reset, V_th of the preset; ``theta = V_th - E_L`` and
  ``V_r = V_reset - E_L`` (relative to rest).

nnmt functions used
-------------------
* ``nnmt.lif.exp._firing_rates(J, K, V_0_rel, V_th_rel, tau_m, tau_r, tau_s, J_ext, K_ext,
  nu_ext, method='shift', nu_0=..., fixpoint_method='ODE', eps_tol=...)`` -- the fixed point
  (all SI: V, s, Hz), started from the published rates;
* ``nnmt.lif.exp._firing_rates_for_given_input(mu, sigma, V_0_rel, V_th_rel, tau_m, tau_r,
  tau_s, method='shift')`` -- the single-point rate (residual and test points);
* ``nnmt.lif._general._mean_input`` / ``_std_input`` -- mu and sigma at the solution.

sigma convention (nnmt's, Brunel's): ``sigma^2 = tau_m sum_j K_j <w_j^2> nu_j`` with
``w = J tau_s / C`` (V), i.e. the white-noise amplitude of ``tau_m dV = (mu - V) dt + sigma
sqrt(tau_m) dW``: sqrt(2) times the sd of the free membrane potential in the tau_s -> 0 limit.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import tomllib
from pathlib import Path

import numpy as np

import nnmt
import nnmt.lif._general as nnmt_general
import nnmt.lif.exp as nnmt_exp

ROOT = Path(__file__).resolve().parents[1]
POPULATIONS = ["L23E", "L23I", "L4E", "L4I", "L5E", "L5I", "L6E", "L6I"]
L23E, L4E = POPULATIONS.index("L23E"), POPULATIONS.index("L4E")

#: Factor to SI for each unit the preset file uses.
_SI = {"ms": 1e-3, "s": 1.0, "pF": 1e-12, "pA": 1e-12, "mV": 1e-3, "Hz": 1.0, "dimensionless": 1.0}

#: Single test points (mu, sigma) in mV for the package's Siegert check.
TEST_POINTS_MV = [(10.0, 5.0), (15.0, 3.0), (20.0, 1.0), (5.0, 8.0)]


def _si(table: dict, key: str):
    """The preset entry ``key`` in SI units (float or numpy array)."""
    entry = table[key]
    unit = entry.get("unit", "dimensionless")
    if unit not in _SI:
        raise ValueError(f"{key}: unit {unit!r} has no conversion here")
    value = entry["value"]
    return np.asarray(value, dtype=float) * _SI[unit] if isinstance(value, list) else float(value) * _SI[unit]


def load_parameters(preset_path: Path, areas_path: Path) -> dict:
    """Every number of the model, SI units, from the preset and area TOML files."""
    with open(preset_path, "rb") as f:
        p = tomllib.load(f)
    with open(areas_path, "rb") as f:
        areas = tomllib.load(f)
    if p["inhibition"]["value"] != "g":
        raise ValueError("expected inhibition = 'g' (PD14)")
    if p["l4e_to_l23e_mode"]["value"] != "weight":
        raise ValueError("expected l4e_to_l23e_mode = 'weight' (PD14)")
    if p["background"]["value"] != "poisson":
        raise ValueError("expected background = 'poisson' (PD14)")
    N = _si(areas["areas"], "pd14")
    P = _si(p, "connection_probability")
    out = {
        "N": N, "P": P,
        "J_E_A": _si(p, "J_E"), "g": _si(p, "g"), "l4e_to_l23e_factor": _si(p, "l4e_to_l23e_factor"),
        "K_bg": _si(p, "K_bg"), "nu_bg_hz": _si(p, "nu_bg"), "J_rel_sd": _si(p, "J_rel_sd"),
        "tau_m_s": _si(p, "tau_m"), "C_F": _si(p, "C"), "tau_s_s": _si(p, "tau_s"), "t_ref_s": _si(p, "t_ref"),
        "E_L_V": _si(p, "E_L"), "V_reset_V": _si(p, "V_reset"), "V_th_V": _si(p, "V_th"),
        "published_rates_hz": _si(p, "published_rates"),
    }
    if N.shape != (8,) or P.shape != (8, 8) or out["K_bg"].shape != (8,):
        raise ValueError("expected 8 populations")
    return out


def build_network(q: dict) -> dict:
    """K, J (V), K_ext, J_ext (V) and the nnmt arguments with the amplitude spread in the variance only."""
    N, P = q["N"], q["P"]
    K = np.log1p(-P) / np.log1p(-1.0 / np.outer(N, N)) / N[:, None]
    J_pA = np.empty((8, 8))
    for j in range(8):
        J_pA[:, j] = q["J_E_A"] if j % 2 == 0 else q["g"] * q["J_E_A"]  # A
    J_pA[L23E, L4E] *= q["l4e_to_l23e_factor"]
    to_V = q["tau_s_s"] / q["C_F"]  # A -> V (PSP charge / C), as nnmt.models.Microcircuit
    J = J_pA * to_V
    var_factor = 1.0 + q["J_rel_sd"] ** 2
    return {
        "K": K, "J_A": J_pA, "J_V": J,
        "K_nnmt": K / var_factor, "J_nnmt": J * var_factor,
        "K_ext": q["K_bg"].copy(), "J_ext": np.full(8, q["J_E_A"] * to_V), "nu_ext": np.array([q["nu_bg_hz"]]),
        "var_factor": var_factor,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="tests/data/nnmt_pd14_lif.json")
    ap.add_argument("--preset", default=str(ROOT / "colplugin" / "params" / "pd14.toml"))
    ap.add_argument("--areas", default=str(ROOT / "colplugin" / "params" / "areas.toml"))
    ap.add_argument("--eps-tol", type=float, default=1e-13,
                    help="nnmt ODE fixpoint tolerance: max rate change over the last unit of pseudo-time, Hz")
    a = ap.parse_args(argv)

    q = load_parameters(Path(a.preset), Path(a.areas))
    net = build_network(q)
    tau_m, tau_s, t_ref = q["tau_m_s"], q["tau_s_s"], q["t_ref_s"]
    theta, V_r = q["V_th_V"] - q["E_L_V"], q["V_reset_V"] - q["E_L_V"]
    # nu_ext is one external population at nu_bg; K_ext J_ext per target is then a column (8, 1)
    K_ext, J_ext, nu_ext = net["K_ext"][:, None], net["J_ext"][:, None], net["nu_ext"]
    inputs = dict(J=net["J_nnmt"], K=net["K_nnmt"], tau_m=tau_m, J_ext=J_ext, K_ext=K_ext, nu_ext=nu_ext)
    lif = dict(V_0_rel=V_r, V_th_rel=theta, tau_m=tau_m, tau_r=t_ref, tau_s=tau_s)

    # the K' J' trick: mean unchanged, recurrent variance times (1 + cv^2)
    r_test = q["published_rates_hz"]
    mu_ref = tau_m * (net["K"] * net["J_V"]) @ r_test + tau_m * net["K_ext"] * net["J_ext"] * q["nu_bg_hz"]
    var_ref = (tau_m * (net["K"] * net["J_V"] ** 2) @ r_test * net["var_factor"]
               + tau_m * net["K_ext"] * net["J_ext"] ** 2 * q["nu_bg_hz"])
    mu_n = nnmt_general._mean_input(r_test, **inputs)
    sd_n = nnmt_general._std_input(r_test, **inputs)
    assert np.allclose(mu_n, mu_ref, rtol=1e-12, atol=0), (mu_n, mu_ref)
    assert np.allclose(sd_n ** 2, var_ref, rtol=1e-12, atol=0), (sd_n ** 2, var_ref)

    rates = nnmt_exp._firing_rates(**inputs, **{k: v for k, v in lif.items() if k != "tau_m"}, method="shift",
                                   nu_0=np.array(r_test, dtype=float), fixpoint_method="ODE", eps_tol=a.eps_tol)
    rates = np.asarray(rates, dtype=float)
    mu = nnmt_general._mean_input(rates, **inputs)
    sigma = nnmt_general._std_input(rates, **inputs)
    phi = np.asarray(nnmt_exp._firing_rates_for_given_input(mu, sigma, **lif, method="shift"), dtype=float)
    residual = float(np.max(np.abs(phi - rates)))
    if not residual < 1e-8:
        raise RuntimeError(f"nnmt fixed point not converged: max|phi(r) - r| = {residual:.3g} Hz")

    singles = []
    for mu_mV, s_mV in TEST_POINTS_MV:
        nu = nnmt_exp._firing_rates_for_given_input(mu_mV * 1e-3, s_mV * 1e-3, V_0_rel=V_r, V_th_rel=theta,
                                                    tau_m=tau_m, tau_r=t_ref, tau_s=tau_s, method="shift")
        singles.append({"mu_mV": mu_mV, "sigma_mV": s_mV, "tau_m_s": tau_m, "tau_s_s": tau_s, "t_ref_s": t_ref,
                        "theta_mV": theta * 1e3, "V_r_mV": V_r * 1e3, "rate_hz": float(nu)})

    out = Path(a.out)
    command = "/tmp/nnmt-venv/bin/python validation/nnmt_fixed_point.py --out " + a.out
    report = {
        "source": f"nnmt {nnmt.__version__}",
        "command": command,
        "python": sys.version.split()[0], "numpy": np.__version__,
        "populations": POPULATIONS,
        "nnmt_functions": {
            "fixed_point": "nnmt.lif.exp._firing_rates(method='shift', fixpoint_method='ODE', "
                           f"eps_tol={a.eps_tol:g}, nu_0=published_rates)",
            "single_point": "nnmt.lif.exp._firing_rates_for_given_input(method='shift') "
                            "(= nnmt.lif.exp._firing_rate_shift)",
            "mu_sigma": "nnmt.lif._general._mean_input, nnmt.lif._general._std_input",
        },
        "parameters": {
            "N": q["N"].tolist(),
            "connection_probability": q["P"].tolist(),
            "K": net["K"].tolist(),
            "K_formula": "K_ij = ln(1 - P_ij) / ln(1 - 1/(N_i N_j)) / N_i (rows target, columns source)",
            "J_pA": (net["J_A"] * 1e12).tolist(),
            "J_mV": (net["J_V"] * 1e3).tolist(),
            "J_E_pA": q["J_E_A"] * 1e12, "g": q["g"], "l4e_to_l23e_factor": q["l4e_to_l23e_factor"],
            "pA_to_mV": "J_mV = J_pA * tau_s / C (PSP charge over C, as nnmt.models.Microcircuit)",
            "J_rel_sd": q["J_rel_sd"],
            "spread": "recurrent only: nnmt gets K' = K / (1 + J_rel_sd^2), J' = J (1 + J_rel_sd^2) "
                      "(mean unchanged, recurrent variance times 1 + J_rel_sd^2); background without spread",
            "K_bg": q["K_bg"].tolist(), "nu_bg_hz": q["nu_bg_hz"], "J_ext_pA": q["J_E_A"] * 1e12,
            "J_ext_mV": float(net["J_ext"][0] * 1e3),
            "tau_m_s": tau_m, "C_pF": q["C_F"] * 1e12, "tau_s_s": tau_s, "t_ref_s": t_ref,
            "E_L_mV": q["E_L_V"] * 1e3, "V_reset_mV": q["V_reset_V"] * 1e3, "V_th_mV": q["V_th_V"] * 1e3,
            "theta_mV": theta * 1e3, "V_r_mV": V_r * 1e3,
            "start_rates_hz": list(map(float, r_test)),
            "eps_tol_hz": a.eps_tol,
        },
        "rates_hz": rates.tolist(),
        "mu_mV": (mu * 1e3).tolist(),
        "sigma_mV": (sigma * 1e3).tolist(),
        "residual_hz": residual,
        "single_points": singles,
        "sigma_convention": (
            "nnmt's (Brunel's) white-noise amplitude: sigma^2 = tau_m * sum_j K_j <w_j^2> nu_j with "
            "w = J_pA * tau_s / C (mV) and <w^2> = w^2 (1 + J_rel_sd^2) for recurrent, w^2 for background "
            "sources, i.e. tau_m dV = (mu - V) dt + sigma sqrt(tau_m) dW; sigma = sqrt(2) * the sd of the "
            "free membrane potential in the tau_s -> 0 limit. mu = tau_m * sum_j K_j w_j nu_j, relative to "
            "rest. The rate uses Fourcaud-Brunel's shift: theta and V_r + sigma * |zeta(1/2)|/sqrt(2) * "
            "sqrt(tau_s/tau_m) in Siegert's white-noise formula."),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=out.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(report, f, indent=1)
            f.write("\n")
        os.replace(tmp, out)
    except BaseException:
        os.unlink(tmp)
        raise
    print(f"nnmt {nnmt.__version__}: rates (Hz) " + " ".join(f"{p}={r:.4f}" for p, r in zip(POPULATIONS, rates)))
    print(f"residual max|phi(r) - r| = {residual:.3g} Hz; wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
