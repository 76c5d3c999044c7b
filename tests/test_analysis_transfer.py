"""LIF transfer (Siegert) against the DMF's f at each PD14 population's input: independent checks."""

import math

import numpy as np
import pytest
import torch

from colplugin.analysis.transfer import input_statistics, lif_vs_dmf, siegert_rate, transfer_table_md
from colplugin.params import load_preset

PUBLISHED = [0.903, 2.965, 4.414, 5.876, 7.569, 8.633, 1.105, 7.829]


def test_siegert_small_noise_limit_is_the_deterministic_lif():
    # sigma -> 0, mu > theta: T = t_ref + tau_m ln(mu / (mu - theta))
    mu, theta, tau_m, t_ref = 20.0, 15.0, 0.01, 0.002
    expected = 1.0 / (t_ref + tau_m * math.log(mu / (mu - theta)))
    assert siegert_rate(mu, 0.02, theta=theta, tau_m=tau_m, t_ref=t_ref) == pytest.approx(expected, rel=1e-4)
    # far below threshold with little noise: silent
    assert siegert_rate(2.0, 0.5) < 1e-200


def test_siegert_matches_a_simulated_lif_with_white_noise():
    # tau_m dV = (mu - V) dt + sigma sqrt(tau_m) dW, threshold 15, reset 0, t_ref 2 ms (Euler-Maruyama)
    mu, sigma, tau_m, t_ref, theta, dt, T, n = 10.0, 5.0, 0.01, 0.002, 15.0, 5e-5, 0.5, 2000
    rng = np.random.default_rng(1)
    V = rng.uniform(0, theta, n)
    ref = np.zeros(n)
    spikes = 0
    for _ in range(int(T / dt)):
        active = ref <= 0
        V = np.where(active, V + (mu - V) * dt / tau_m + sigma * math.sqrt(dt / tau_m) * rng.standard_normal(n), V)
        ref -= dt
        fired = V >= theta
        spikes += int(fired.sum())
        V[fired], ref[fired] = 0.0, t_ref
    simulated = spikes / (n * T)
    theory = siegert_rate(mu, sigma, theta=theta, tau_m=tau_m, t_ref=t_ref)
    # discrete time misses some crossings (rate biased low by O(sqrt(dt / tau_m)); measured -6 %)
    assert simulated == pytest.approx(theory, rel=0.1)
    # a factor sqrt(2) in sigma (sd of V instead of Brunel's amplitude) would be far off
    assert siegert_rate(mu, sigma / math.sqrt(2), theta=theta, tau_m=tau_m, t_ref=t_ref) < 0.7 * simulated
    assert 5.0 < theory < 30.0


def test_variance_by_hand_for_l5e():
    p = load_preset("pd14")
    N = p.area_sizes("pd14").astype(float)
    P = np.asarray(p["connection_probability"], dtype=float)
    i = 4  # L5E
    K = np.log(1 - P[i]) / np.log(1 - 1 / (N[i] * N)) / N[i]  # PD14 eq. 1
    J = np.array([1, p["g"]] * 4) * p["J_E"] * 1e-9  # A; L5E receives no doubled L4E weight
    r = np.array(PUBLISHED)
    tau_m, tau_s, C, nu_bg = 0.01, 0.0005, 250e-12, 8.0
    q = (K * J ** 2 * r).sum() + p["K_bg"][i] * (p["J_E"] * 1e-9) ** 2 * nu_bg
    q *= 1 + 0.1 ** 2  # PD14's 10 % sd of the amplitudes
    sigma = math.sqrt(q * tau_m ** 2 * tau_s ** 2 / (2 * C ** 2 * (tau_m + tau_s))) * 1e3
    mu = tau_m / C * tau_s * ((K * J * r).sum() + p["K_bg"][i] * p["J_E"] * 1e-9 * nu_bg) * 1e3
    st = input_statistics(PUBLISHED)
    assert st["sigma_mV"][i] == pytest.approx(sigma, rel=1e-8)  # log vs log1p
    assert st["mu_mV"][i] == pytest.approx(mu, rel=1e-8)
    # the white-noise amplitude is sqrt(2 (tau_m + tau_s) / tau_m) times the free-membrane sd
    assert st["s_white_mV"][i] == pytest.approx(sigma * math.sqrt(2 * 1.05), rel=1e-8)
    # a DC background adds to the mean only
    # a downscaled circuit (K k, J / sqrt(k), DC for 1 - sqrt(k) of the mean) at the published rates: unchanged
    scaled = input_statistics(PUBLISHED, k_scale=0.3)
    assert scaled["mu_mV"][i] == pytest.approx(mu, rel=1e-8) and scaled["sigma_mV"][i] == pytest.approx(sigma)
    # ... and at other rates only sqrt(k) of the recurrent mean follows them
    r2 = 1.5 * r
    moved = input_statistics(list(r2), k_scale=0.25)["mu_mV"][i] - mu
    assert moved == pytest.approx(0.5 * tau_m / C * tau_s * (K * J * (r2 - r)).sum() * 1e3, rel=1e-8)
    dc = input_statistics(PUBLISHED, background="dc")
    assert dc["mu_mV"][i] == pytest.approx(mu) and dc["sigma_mV"][i] < sigma


def test_mu_is_the_dmf_potential_and_f_is_the_field_transfer():
    from colplugin.analysis.fixed_points import resting_state
    from colplugin.field import transfer
    from colplugin.network import ColumnNetwork

    p = load_preset("pd14")
    net = ColumnNetwork(p, {"pd14": ("pd14", 1)})
    y0 = resting_state(net)
    with torch.no_grad():
        r0 = net.rates(y0)[0].numpy()
    # at the DMF's fixed point (A = 0), V = R tau_s (W r + W_bg nu_bg) = mu of the same rates
    np.testing.assert_allclose(input_statistics(r0)["mu_mV"], y0[0, :8].numpy(), rtol=1e-9)
    rows = lif_vs_dmf(PUBLISHED)
    mu = torch.tensor([row["mu_mV"] for row in rows], dtype=torch.float64)
    np.testing.assert_allclose([row["dmf_f_hz"] for row in rows], transfer(mu, p["a"], p["b"], p["d"]).numpy(),
                               rtol=1e-10)
    # the Siegert rate at the published rates' input is close to them (PD14 mean-field self-consistency)
    lif = np.array([row["lif_rate_hz"] for row in rows])
    assert np.all(np.abs(lif[1:] / np.array(PUBLISHED[1:]) - 1) < 0.2)
    md = transfer_table_md(rows)
    worst = max(rows, key=lambda row: abs(row["dmf_f_hz"] - row["lif_rate_hz"]))["population"]
    assert f"f deviates most from the LIF transfer at {worst}" in md


def test_bad_rates_refused():
    with pytest.raises(ValueError, match="rates_hz"):
        input_statistics([1.0] * 7)
    with pytest.raises(ValueError, match="sigma"):
        siegert_rate(5.0, 0.0)
