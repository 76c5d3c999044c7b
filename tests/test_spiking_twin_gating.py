"""The spiking twin of a network with synaptic gating: which synapses are gated, their compensation by
hand, when the twin cannot carry the gating (and says why), and a Brian2 run in which slow, weak gating
gives the ungated drive (its mean is the rate model's for any rate; the same as ungated where
gamma tau r << 1)."""

import math

import numpy as np
import pytest

import colplugin as cp
from colplugin.spiking import simulate_spiking, spiking_twin
from colplugin.spiking.network import Connection, LIFModel, Population, SpikingNetwork, SpikingNetworkError
from colplugin.spiking.twin import twin_gating


def _net(**gating):
    p = cp.load_preset("dl25").with_overrides({"gating": "inter_column", **gating})
    return cp.ColumnNetwork(p, {"mt": ("mt", 2)}, [cp.Input("mt"), cp.Lateral("mt", init=20.0)], seed=0)


def test_the_inter_column_synapses_are_gated():
    net = _net()
    tw = spiking_twin(net, scale=0.05, k_scale=0.5, reference_rates=np.full(net.n_populations, 2.0))
    assert tw.gating is not None and (tw.gating.tau, tw.gating.gamma) == (100.0, 0.641)  # ms; Wong & Wang
    assert "gating mapped" in tw.metadata["gating"]
    inter = {(s, t) for proj in ("lateral:mt:cross", "lateral:mt:self")
             for s, t in zip(net.projection_weights(proj)["source"], net.projection_weights(proj)["target"])}
    for c in tw.connections:
        learned = (c.source, c.target) in inter and c.source.split(".")[0] != c.target.split(".")[0]
        if learned:
            assert c.gated, (c.source, c.target)
    assert any(c.gated for c in tw.connections) and not all(c.gated for c in tw.connections)


def test_gated_dc_compensation_by_hand():
    """Column 1's L2/3I gets column 0's L2/3E through the gated lateral projection only:
    DC = tau_s (1 - sqrt k) W nu / (1 + gamma tau nu)."""
    net = _net()
    k, nu = 0.25, 3.0
    ref = np.zeros(net.n_populations)
    ref[net.index("mt", 0, "L23E")] = nu
    tw0 = spiking_twin(net, scale=0.05, k_scale=k, reference_rates=np.zeros(net.n_populations))
    tw = spiking_twin(net, scale=0.05, k_scale=k, reference_rates=ref)
    w = net.projection_weights("lateral:mt:cross")
    W = [x for x, s, t in zip(w["weight"], w["source"], w["target"]) if (s, t) == ("mt[0].L23E", "mt[1].L23I")][0]
    dI = tw.population("mt[1].L23I").I_dc - tw0.population("mt[1].L23I").I_dc
    gated_rate = nu / (1 + 0.641 * 0.1 * nu)
    assert dI == pytest.approx(0.5e-3 * (1 - math.sqrt(k)) * 1e3 * W * gated_rate, rel=1e-9)


def test_the_twin_says_why_it_cannot_gate():
    net = _net()
    model, note = twin_gating(net, backend_gating=False)
    assert model is None and "NEST" in note and "ungated" in note
    tw = spiking_twin(net, scale=0.05, k_scale=0.5, reference_rates=np.full(net.n_populations, 2.0),
                      backend_gating=False)
    assert tw.gating is None and not any(c.gated for c in tw.connections) and "not mapped" in tw.metadata["gating"]
    model, note = twin_gating(_net(gamma_G=128.2, tau_G=0.01))
    assert model is None and "exceeds 1" in note and "below about 0.78 Hz" in note
    assert twin_gating(cp.ColumnNetwork(cp.load_preset("dl25"), {"mt": ("mt", 1)}))[1] == "no synaptic gating"


def test_gated_connections_need_a_gating_model_and_brian2():
    lif = LIFModel(250.0, 10.0, -65.0, -65.0, -50.0, 2.0, 0.5)
    pops = (Population("a", 10, lif), Population("b", 10, lif))
    with pytest.raises(SpikingNetworkError, match="no gating model"):
        SpikingNetwork("n", pops, (Connection("a", "b", 20, 87.8, gated=True),))
    net = _net()
    tw = spiking_twin(net, scale=0.05, k_scale=0.5, reference_rates=np.full(net.n_populations, 2.0))
    with pytest.raises(ValueError, match="NESTML"):
        simulate_spiking(tw, 0.05, backend="nest")


@pytest.mark.brian2
def test_a_gated_twin_runs_on_brian2():
    net = _net()
    stim = cp.Stimulus([0.0], [[30.0, 0.0]])
    tw = spiking_twin(net, stim, scale=0.02, k_scale=0.1, duration=0.2)
    res = simulate_spiking(tw, 0.15, backend="brian2", device="runtime", seed=1)
    rates = res.rates(0.05, 0.15)
    assert rates["mt[0].L4E"] > rates["mt[1].L4E"]  # the input reaches column 0
    assert "gating mapped" in res.settings["gating"]


@pytest.mark.slow
@pytest.mark.brian2
def test_slow_weak_gating_carries_the_ungated_mean_drive():
    """gamma tau r << 1: each gated synapse carries J tau_s s / (gamma tau) with <s> = gamma tau r, the ungated
    mean current (but smoothed over tau instead of 0.5 ms PSCs, so with less variance: a LIF neuron near
    threshold gains less from it). The target of a lateral projection moves the ungated way, by a comparable
    amount; a gated drive scaled wrongly by gamma tau (1e-4 s here) would vanish or run away."""
    stim = cp.Stimulus([0.0], [[40.0, 0.0]])  # column 0 active; column 1 gets column 0's L2/3E laterally
    base = cp.load_preset("dl25")

    def rate(params, init):
        net = cp.ColumnNetwork(params, {"mt": ("mt", 2)}, [cp.Input("mt"), cp.Lateral("mt", init=init)], seed=0)
        res = simulate_spiking(spiking_twin(net, stim, scale=0.05, k_scale=1.0), 0.6, backend="brian2",
                               device="runtime", seed=3)
        return res.rates(0.2, 0.6)["mt[1].L23I"]

    ungated = rate(base, 100.0)
    gated = rate(base.with_overrides({"gating": "inter_column", "tau_G": 0.02, "gamma_G": 0.005}), 100.0)
    without = rate(base, 1e-6)
    assert ungated - without > 0.5  # the projection matters (measured 3.8 -> 5.0 Hz)
    assert 0.2 < (gated - without) / (ungated - without) < 1.5, (gated, ungated, without)  # measured 0.4
