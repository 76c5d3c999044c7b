"""LIF transfer (Siegert) against the DMF's f at each PD14 population's input: independent checks."""

import math

import numpy as np
import pytest
import torch

from colplugin.analysis.transfer import (dmf_fixed_point, fixed_point_comparison, fixed_point_table_md,
                                         input_statistics, lif_vs_dmf, mean_field_fixed_point, siegert_fixed_point,
                                         siegert_rate, transfer_attribution, transfer_swaps, transfer_table_md)
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
    # PD14's 10 % sd of the recurrent amplitudes; the Poisson background's sources have amplitude J_E
    q = (K * J ** 2 * r).sum() * (1 + 0.1 ** 2) + p["K_bg"][i] * (p["J_E"] * 1e-9) ** 2 * nu_bg
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
    from colplugin.solve.fixed_points import resting_state
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


def _lif(p):
    return dict(theta=p["V_th"] - p["E_L"], V_r=p["V_reset"] - p["E_L"], tau_m=p["tau_m"], t_ref=p["t_ref"],
                tau_s=p["tau_s"])


def _f(x, p):
    y = p["a"] * x - p["b"]
    return y / (1 - math.exp(-p["d"] * y))


@pytest.mark.parametrize("k_scale", [1.0, 0.5])
def test_siegert_fixed_point_is_self_consistent_and_near_pd14(k_scale):
    p = load_preset("pd14")
    fp = siegert_fixed_point(k_scale=k_scale)
    r = fp["rates_hz"]
    st = input_statistics(r, k_scale=k_scale)
    by_hand = np.array([siegert_rate(st["mu_mV"][i], st["s_white_mV"][i], **_lif(p)) for i in range(8)])
    assert np.max(np.abs(by_hand - r)) < 1e-8
    assert fp["stable"] and fp["residual_hz"] < 1e-8
    # PD14's mean field reproduces its simulated full-scale rates roughly (diffusion approximation): within 20 %
    # at full scale, 25 % for the downscaled circuit (its L2/3E: -22 %)
    assert np.all(np.abs(r / np.array(PUBLISHED) - 1) < (0.2 if k_scale == 1 else 0.25))


def test_dmf_fixed_point_two_ways_and_by_hand():
    p = load_preset("pd14")
    newton = dmf_fixed_point()["rates_hz"]  # torch: resting_state of the ColumnNetwork
    hybr = mean_field_fixed_point(lif=False)["rates_hz"]  # scipy on f(mu(r)) = r
    np.testing.assert_allclose(hybr, newton, rtol=1e-8)
    mu = input_statistics(hybr)["mu_mV"]
    assert max(abs(_f(mu[i], p) - hybr[i]) for i in range(8)) < 1e-8


def test_no_recurrence_gives_the_single_neuron_rates():
    # P = 0: every population sees only its Poisson background; the fixed point is the rate at that input
    p = load_preset("pd14", {"connection_probability": np.zeros((8, 8)).tolist()})
    tau_m, tau_s, C, nu, J = p["tau_m"], p["tau_s"], p["C"] * 1e-12, p["nu_bg"], p["J_E"] * 1e-9
    K = np.asarray(p["K_bg"], dtype=float)
    mu = tau_m / C * tau_s * K * J * nu * 1e3  # mV
    s = np.sqrt(K * J ** 2 * nu * tau_m * tau_s ** 2 / C ** 2) * 1e3  # mV; background amplitudes: no spread
    lif = [siegert_rate(mu[i], s[i], **_lif(p)) for i in range(8)]
    np.testing.assert_allclose(siegert_fixed_point(p)["rates_hz"], lif, rtol=1e-9)
    f = [_f(mu[i], p) for i in range(8)]
    np.testing.assert_allclose(mean_field_fixed_point(p, lif=False)["rates_hz"], f, rtol=1e-9)
    # without recurrence each population's transfer error moves only its own rate, by exactly that error
    att = transfer_attribution(p, nodes=3)
    np.testing.assert_allclose(att["contributions_hz"], np.diag(np.subtract(lif, f)), atol=1e-7)


def test_swaps_are_fixed_points_of_the_mixed_transfer():
    p = load_preset("pd14")
    sw = transfer_swaps()
    i = 4  # L5E on Siegert, the others on f
    r = sw["swap_in"][i]
    st = input_statistics(r)
    want = [siegert_rate(st["mu_mV"][j], st["s_white_mV"][j], **_lif(p)) if j == i else _f(st["mu_mV"][j], p)
            for j in range(8)]
    assert np.max(np.abs(np.array(want) - r)) < 1e-8
    r = sw["swap_out"][i]  # L5E on f, the others on Siegert
    st = input_statistics(r)
    want = [_f(st["mu_mV"][j], p) if j == i else siegert_rate(st["mu_mV"][j], st["s_white_mV"][j], **_lif(p))
            for j in range(8)]
    assert np.max(np.abs(np.array(want) - r)) < 1e-8
    # the attribution's contributions add up to the move between the two independent end points
    att = transfer_attribution()
    move = siegert_fixed_point()["rates_hz"] - dmf_fixed_point()["rates_hz"]
    np.testing.assert_allclose(np.sum(att["contributions_hz"], axis=1), move, atol=1e-6)


def test_fixed_point_comparison_names_the_misses_from_the_numbers():
    ref = np.array(PUBLISHED)
    res = fixed_point_comparison(ref)
    dmf = dmf_fixed_point()["rates_hz"]
    missed = [pop for pop, d, s in zip(("L23E", "L23I", "L4E", "L4I", "L5E", "L5I", "L6E", "L6I"), dmf, ref)
              if abs(d / s - 1) > 0.25]
    assert [c["population"] for c in res["causes"]] == missed
    md = fixed_point_table_md(res)
    C = np.array(res["contributions_hz"])
    for c in res["causes"]:
        q = ("L23E", "L23I", "L4E", "L4I", "L5E", "L5I", "L6E", "L6I").index(c["population"])
        along = [j for j in range(8) if np.sign(C[q, j]) == np.sign(C[q].sum())]
        top = max(along, key=lambda j: abs(C[q, j]))
        assert c["largest_contribution"]["hz"] == pytest.approx(C[q, top])
        assert f"{c['population']}: the DMF misses" in md
    json = pytest.importorskip("json")
    json.dumps(res)  # the validation writes it as JSON
    loose = fixed_point_comparison(ref, tolerance=10.0)
    assert loose["causes"] == [] and "Every population's DMF rate lies within" in loose["cause_md"]
    # a reference that no mean field reaches (L6E doubled): not blamed on f
    far = fixed_point_comparison(ref * np.where(np.arange(8) == 6, 2.0, 1.0))
    l6e = [c for c in far["causes"] if c["population"] == "L6E"][0]
    assert not l6e["lif_mean_field_within_tolerance"] and "L6E: the DMF misses" in far["cause_md"]
    assert "so the LIF mean field misses too" in far["cause_md"]


def test_fixed_point_refusals():
    with pytest.raises(RuntimeError, match="did not converge"):
        siegert_fixed_point(max_evaluations=2)
    with pytest.raises(ValueError, match="kappa"):
        mean_field_fixed_point(load_preset("pd14_adapting"))
    with pytest.raises(ValueError, match="lif"):
        mean_field_fixed_point(lif=[True] * 7)
    with pytest.raises(ValueError, match="r0"):
        siegert_fixed_point(r0=[0.0] * 8)
