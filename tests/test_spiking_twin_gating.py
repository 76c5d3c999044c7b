"""The spiking twin of a network with synaptic gating: which synapses are gated, their compensation by
hand, when the twin cannot carry the gating (and says why), and a Brian2 run in which slow, weak gating
gives the ungated drive (its mean is the rate model's for any rate; the same as ungated where
gamma tau r << 1)."""

import math

import numpy as np
import pytest

import colplugin as cp
from colplugin.spiking import simulate_spiking, spiking_twin
from colplugin.spiking.network import (Connection, LIFModel, Population, SpikingNetwork, SpikingNetworkError,
                                      SynapticGatingModel)
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
    assert "below about 15.6 Hz" in note  # 1 / (gamma tau) = 1 / (0.641 * 0.1 s), by hand
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
@pytest.mark.parametrize("gating", [{}, {"gamma_G": 1 / 0.28, "tau_G": 0.28}], ids=["per-neuron", "shared"])
def test_a_gated_twin_runs_on_brian2(gating):
    net = _net(**gating)
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


def test_a_gamma_above_1_is_shared_by_the_source_population():
    """gamma_G > 1 (the gated decision network's 3.57): a neuron's own variable would overshoot 1, so the twin
    gives each source population one variable; a per-neuron model refuses such a gamma, a shared one refuses a
    population smaller than gamma (a jump gamma / N above 1)."""
    model, note = twin_gating(_net(gamma_G=1 / 0.28, tau_G=0.28))
    assert model.shared and model.gamma == pytest.approx(1 / 0.28) and model.tau == pytest.approx(280.0)
    assert "gating mapped" in note and "shares one" in note
    with pytest.raises(SpikingNetworkError, match="shared=True"):
        SynapticGatingModel(100.0, 2.0)
    lif = LIFModel(250.0, 10.0, -65.0, -65.0, -50.0, 2.0, 0.5)
    pops = (Population("a", 3, lif), Population("b", 10, lif))
    with pytest.raises(SpikingNetworkError, match="more neurons"):
        SpikingNetwork("n", pops, (Connection("a", "b", 20, 87.8, gated=True),),
                       gating=SynapticGatingModel(100.0, 3.5, shared=True))


@pytest.mark.brian2
def test_a_shared_gating_variable_follows_the_rate_models_g():
    """One population of 50 Poisson neurons at 2 Hz, its shared gating variable recorded: the time average after
    the rise matches the rate model's fixed point G* = gamma tau r / (1 + gamma tau r) at the measured rate r
    (by hand, 2/3 at 2 Hz), with gamma tau = 1 (gamma 3.57 > 1; a jump of gamma instead of gamma / N per
    spike would give about 1, a neuron's own variable overshoots 1)."""
    import brian2 as b2

    from colplugin.spiking.brian2 import _shared_gates

    b2.start_scope()
    tau, gamma, n = 0.28, 1 / 0.28, 50
    lif = LIFModel(250.0, 10.0, -65.0, -65.0, -50.0, 2.0, 0.5)
    net = SpikingNetwork("n", (Population("a", n, lif), Population("b", 5, lif)),
                         (Connection("a", "b", 100, 87.8, gated=True),),
                         gating=SynapticGatingModel(1e3 * tau, gamma, shared=True))
    G = b2.NeuronGroup(n + 5, "rate_i : Hz (constant)\nI_gat : amp", threshold="rand() < rate_i * dt",
                       name="neurons")
    G.rate_i = np.r_[np.full(n, 2.0), np.zeros(5)] * b2.Hz
    rng = np.random.default_rng(0)
    tgt = [rng.integers(0, 5, 100) + n]
    objs = _shared_gates(b2, net, G, {"a": 0, "b": n}, list(net.connections), tgt, [np.full(100, 1.0)])
    gates = objs[0]
    mon = b2.StateMonitor(gates, "G", record=0, dt=1 * b2.ms)
    spikes = b2.SpikeMonitor(G[:n])
    b2.seed(1)
    target = b2.prefs.codegen.target
    b2.prefs.codegen.target = "numpy"  # the repeated-index updates of the gates' synapses, no compilation
    try:
        b2.Network(G, *objs, mon, spikes).run(6 * b2.second)
    finally:
        b2.prefs.codegen.target = target
    t = mon.t / b2.second
    r = spikes.num_spikes / n / 6.0  # Hz, population mean rate
    g_star = gamma * tau * r / (1 + gamma * tau * r)
    assert float(np.mean(mon.G[0][t > 1.5])) == pytest.approx(g_star, rel=0.05), (r, g_star)
