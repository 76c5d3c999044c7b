"""Spiking PD14 microcircuit: scaling rules, DC compensation, synapse counts, Neo/Elephant path."""

import numpy as np
import pytest
import quantities as pq

from colplugin.spiking.microcircuit import PD14_SIZES, PUBLISHED_RATES, microcircuit_connectivity


def test_full_scale_synapse_count_matches_pd14():
    c = microcircuit_connectivity(1.0, 1.0)
    assert c["N"].sum() == 77169
    # PD14 report ~0.3 billion synapses for the full model
    assert 2.9e8 < c["n_syn"].sum() < 3.1e8
    assert np.allclose(c["dc_pA"], 0)  # nothing to compensate at full in-degree


def test_scaling_rules():
    c = microcircuit_connectivity(0.1, 0.25)
    np.testing.assert_array_equal(c["N"], np.round(PD14_SIZES * 0.1))
    np.testing.assert_allclose(c["K"], c["K_full"] * 0.25)
    assert c["J_pA"][0, 0] == pytest.approx(87.81 / 0.5)  # J / sqrt(k)
    assert c["J_pA"][0, 2] == pytest.approx(2 * 87.81 / 0.5)  # L4E -> L2/3E doubled
    assert c["J_pA"][0, 1] == pytest.approx(-4 * 87.81 / 0.5)
    np.testing.assert_array_equal(c["n_syn"], np.round(c["K"] * c["N"][:, None]))


def test_dc_compensation_by_hand():
    k = 0.25
    c = microcircuit_connectivity(0.1, k)
    K, J = c["K_full"], c["J_pA"] * np.sqrt(k)
    # by hand for L2/3E: tau_syn * (1 - sqrt k) * sum_j K_0j J_0j nu_j
    expected = 0.5e-3 * (1 - 0.5) * sum(K[0, j] * J[0, j] * PUBLISHED_RATES[j] for j in range(8))
    assert c["dc_pA"][0] == pytest.approx(expected)
    # the compensation restores the full-scale mean input: k K (J/sqrt k) tau nu + DC = K J tau nu
    mean_scaled = 0.5e-3 * (c["K"] * c["J_pA"] * PUBLISHED_RATES).sum(1) + c["dc_pA"]
    np.testing.assert_allclose(mean_scaled, 0.5e-3 * (K * J * PUBLISHED_RATES).sum(1))


def test_bad_scales():
    with pytest.raises(ValueError, match="scale"):
        microcircuit_connectivity(0.0)
    with pytest.raises(ValueError, match="k_scale"):
        microcircuit_connectivity(0.1, 2.0)


@pytest.mark.brian2
def test_tiny_circuit_to_neo_and_elephant():
    from colplugin.analysis import population_statistics
    from colplugin.spiking.microcircuit import simulate_microcircuit

    res = simulate_microcircuit(0.01, 0.6, k_scale=0.2, seed=3, device="runtime")
    block = res.to_neo()
    trains = block.segments[0].spiketrains
    assert len(trains) == res.N.sum()
    assert {st.annotations["population"] for st in trains} == {"L23E", "L23I", "L4E", "L4I", "L5E", "L5I", "L6E", "L6I"}
    assert trains[0].units == pq.s
    stats = population_statistics(block, t_start=0.1)
    # independent count: spikes after 0.1 s / (N * 0.5 s)
    for p, pop in enumerate(["L23E", "L23I", "L4E", "L4I", "L5E", "L5I", "L6E", "L6I"]):
        _, ts = res.spikes[pop]
        assert stats[pop]["rate"] == pytest.approx((ts >= 0.1).sum() / res.N[p] / 0.5, rel=1e-9)
    assert stats["L4I"]["rate"] > 0
