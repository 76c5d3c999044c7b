"""Spike-triggered threshold adaptation: Brian2 (a threshold variable) and NEST (gif_psc_exp) agree."""

import pytest

from colplugin.spiking import LIFModel, PoissonInput, Population, RateProfile, SpikingNetwork, simulate_spiking


def uncoupled(jump, theta0):
    lif = LIFModel(250.0, 10.0, -65.0, -65.0, -50.0, 2.0, 0.5, threshold_jump=jump, tau_threshold=200.0)
    return SpikingNetwork("adapting", [Population("A", 500, lif, I_dc=300.0, theta0=theta0)],
                          poisson_inputs=[PoissonInput("A", 100, RateProfile.constant(50.0), 87.81)])


@pytest.mark.brian2
@pytest.mark.parametrize("theta0", [0.0, 5.0])
def test_adaptation_brian2_and_nest_agree(theta0):
    pytest.importorskip("nest")
    net = uncoupled(2.0, theta0)
    rates = {}
    for backend in ("brian2", "nest"):
        r = simulate_spiking(net, 1.0, backend=backend, device="runtime", seed=2)
        rates[backend] = (r.rates(0.0, 0.2)["A"], r.rates(0.5)["A"])
    b, n = rates["brian2"], rates["nest"]
    assert n[0] == pytest.approx(b[0], rel=0.05) and n[1] == pytest.approx(b[1], rel=0.05)
    assert b[1] < b[0]  # the threshold builds up: the rate adapts
    if theta0:  # a raised initial threshold lowers the early rate in both (NEST: V_T_star decayed by hand)
        assert b[0] < 25 and n[0] < 25


def test_adaptation_lowers_the_rate_nest():
    pytest.importorskip("nest")
    plain = simulate_spiking(uncoupled(0.0, 0.0), 0.5, backend="nest", seed=2).rates(0.2)["A"]
    adapted = simulate_spiking(uncoupled(2.0, 0.0), 0.5, backend="nest", seed=2).rates(0.2)["A"]
    assert adapted < 0.5 * plain
