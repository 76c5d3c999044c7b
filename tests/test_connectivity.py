import numpy as np
import pytest

from colplugin.column import (background_weights, column_sizes, connection_probability,
                                     in_degrees, input_weights, intra_column_weights,
                                     synaptic_strengths)


def test_in_degree_checks(dl25):
    # by hand: PD14's K = ln(1 - P) / ln(1 - 1 / (N_pre N_post)) / N_post with P = 0.1009 (PD14 Table 5) and
    # the MT area's L2/3E of 60,606 neurons (areas.toml): 6446.1; the area split in two halves N: 3223.1
    P = connection_probability(dl25)
    assert in_degrees(P, column_sizes(dl25, "mt", 1))["L23E", "L23E"] == pytest.approx(6446.1, abs=0.05)
    assert in_degrees(P, column_sizes(dl25, "mt", 2))["L23E", "L23E"] == pytest.approx(3223.1, abs=0.05)
    # the formula, not P * N_source
    N = column_sizes(dl25, "mt")
    assert abs(in_degrees(P, N)["L23E", "L23E"] - 0.1009 * N["L23E"]) > 300


def test_l4e_to_l23e_doubling_by_name(dl25, pd14):
    P = connection_probability(dl25)
    assert P["L23E", "L4E"] == pytest.approx(0.0874)
    assert P["L4E", "L23E"] == pytest.approx(0.0077)  # the transposed cell is untouched
    assert connection_probability(pd14)["L23E", "L4E"] == pytest.approx(0.0437)
    J = synaptic_strengths(pd14, column_sizes(pd14, "pd14"))
    # PD14 Table 5: J = 87.81 pA, g = -4, L4E -> L2/3E weight doubled
    assert J["L23E", "L4E"] == pytest.approx(2 * 0.08781)
    assert J["L4E", "L23E"] == pytest.approx(0.08781)
    assert J["L23E", "L23I"] == pytest.approx(-4 * 0.08781)


def test_inhibitory_factors_mt(dl25):
    J = synaptic_strengths(dl25, column_sizes(dl25, "mt"))
    # by hand: N_E / N_I of each MT layer (areas.toml): 60606/17095, 28202/7050, 14176/3113, 15837/3243
    factors = [-J["L23E", p] / 0.0878 for p in ("L23I", "L4I", "L5I", "L6I")]
    assert factors == pytest.approx([3.5452, 4.0003, 4.5538, 4.8834], abs=5e-5)


def test_external_weights(dl25):
    w = input_weights(dl25)
    # by hand: K_th J_E with PD14's thalamic in-degrees 295 (L4E) and 186 (L4I) and dL25's J_E = 0.0878 nA;
    # the background onto L6I: K_bg = 2510 (dL25) x 0.0878 nA
    assert [w["L4E"], w["L4I"]] == pytest.approx([25.901, 16.331], abs=5e-4)
    assert np.count_nonzero(w) == 2
    assert background_weights(dl25)["L6I"] == pytest.approx(220.38, abs=5e-3)


def test_weight_matrix_is_k_times_j(dl25):
    N = column_sizes(dl25, "mt")
    W = intra_column_weights(dl25, N)
    K = in_degrees(connection_probability(dl25), N)
    assert W["L5E", "L5I"] == pytest.approx(-K["L5E", "L5I"] * 4.5538 * 0.0878, rel=1e-4)
    assert np.all(W[:, 0::2] >= 0) and np.all(W[:, 1::2] <= 0)
