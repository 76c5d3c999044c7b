"""The PD14 microcircuit description against independent numbers, and tiny runs on Brian2 and NEST.

Independent values are typed from Potjans & Diesmann (2014), Table 5 (sizes, probabilities,
87.81 pA, g = -4, tau_syn 0.5 ms, K_ext) and the published full-scale rates (NEST reference
run): none is imported from colplugin.
"""

import math

import numpy as np
import pytest
import quantities as pq

import colplugin as cp
from colplugin.spiking import Connection, SpikingResult, microcircuit_connectivity, pd14_microcircuit

POPS = ["L23E", "L23I", "L4E", "L4I", "L5E", "L5I", "L6E", "L6I"]
PD14_N = [20683, 5834, 21915, 5479, 4850, 1065, 14395, 2948]  # PD14 Table 5
PUBLISHED = [0.903, 2.965, 4.414, 5.876, 7.569, 8.633, 1.105, 7.829]  # Hz, PD14 / NEST reference run


def k_by_hand(p, n_target, n_source):
    """PD14 eq. 1: total synapses ln(1 - p) / ln(1 - 1/(N_t N_s)), per target neuron."""
    return math.log1p(-p) / math.log1p(-1 / (n_target * n_source)) / n_target


def test_full_scale_synapse_count_matches_pd14():
    net = pd14_microcircuit(scale=1.0, k_scale=1.0)
    assert net.n_neurons == 77169 == sum(PD14_N)
    assert 2.9e8 < net.n_synapses < 3.1e8  # PD14: ~0.3 billion synapses
    assert all(p.I_dc == 0 for p in net.populations)  # nothing to compensate, Poisson background


def test_in_degree_weights_and_delays_by_hand():
    scale, k = 0.1, 0.25
    net = pd14_microcircuit(scale=scale, k_scale=k)
    assert [p.size for p in net.populations] == [round(n * scale) for n in PD14_N]
    # L2/3E -> L2/3E: P = 0.1009 between the full-scale populations, times k
    c = net.connection("L23E", "L23E")
    K = k_by_hand(0.1009, 20683, 20683) * k
    assert c.n_synapses == round(K * round(20683 * scale))
    assert c.weight == pytest.approx(87.81 / math.sqrt(k))
    assert c.weight_rel_sd == 0.1 and c.delay == 1.5 and c.delay_rel_sd == 0.5
    # L4E -> L2/3E: PD14 doubles the weight (not the probability)
    c = net.connection("L4E", "L23E")
    assert c.weight == pytest.approx(2 * 87.81 / math.sqrt(k))
    assert c.n_synapses == round(k_by_hand(0.0437, 20683, 21915) * k * round(20683 * scale))
    assert net.connection("L23E", "L4E").weight == pytest.approx(87.81 / math.sqrt(k))  # transposed cell untouched
    # inhibitory: g = -4, delay 0.75 ms
    c = net.connection("L23I", "L23E")
    assert c.weight == pytest.approx(-4 * 87.81 / math.sqrt(k)) and c.delay == 0.75
    # no connection where P = 0 (L5I -> L2/3E)
    with pytest.raises(KeyError):
        net.connection("L5I", "L23E")


def test_lif_and_background_by_hand():
    net = pd14_microcircuit(scale=0.05, k_scale=0.5)
    m = net.population("L4I").model
    assert (m.C_m, m.tau_m, m.E_L, m.V_reset, m.V_th, m.t_ref, m.tau_syn) == pytest.approx(
        (250.0, 10.0, -65.0, -65.0, -50.0, 2.0, 0.5))
    bg = {i.target: i for i in net.poisson_inputs}
    assert bg["L23E"].n_sources == 1600 and bg["L6E"].n_sources == 2900  # K_ext, PD14 Table 5
    assert bg["L23E"].rate.rates == (8.0,) and bg["L23E"].weight == pytest.approx(87.81)
    dc = pd14_microcircuit(scale=1.0, k_scale=1.0, background="dc")
    assert not dc.poisson_inputs
    # DC background: tau_syn K_ext J nu_bg = 0.5 ms * 1600 * 87.81 pA * 8 Hz
    assert dc.population("L23E").I_dc == pytest.approx(0.5e-3 * 1600 * 87.81 * 8)


def test_dc_compensation_by_hand():
    k = 0.25
    pd14 = cp.load_preset("pd14")
    P = pd14["connection_probability"]
    net = pd14_microcircuit(scale=0.1, k_scale=k)
    # L2/3E: tau_syn (1 - sqrt k) sum_j K_0j J_0j nu_j with full-scale K from PD14's formula
    J = [87.81, -4 * 87.81, 2 * 87.81, -4 * 87.81, 87.81, -4 * 87.81, 87.81, -4 * 87.81]
    expected = 0.5e-3 * (1 - math.sqrt(k)) * sum(
        k_by_hand(P[0, j], PD14_N[0], PD14_N[j]) * J[j] * PUBLISHED[j] for j in range(8))
    assert net.population("L23E").I_dc == pytest.approx(expected, rel=1e-9)
    # and it restores the full-scale mean input of every population (up to synapse rounding)
    c = microcircuit_connectivity(0.1, k)
    mean_scaled = 0.5e-3 * (c["K"] * c["J_pA"] * np.array(PUBLISHED)).sum(1) + c["dc_pA"]
    np.testing.assert_allclose(mean_scaled, 0.5e-3 * (c["K_full"] * c["J_full_pA"] * np.array(PUBLISHED)).sum(1))


def test_thalamic_population():
    net = pd14_microcircuit(scale=0.1, k_scale=0.5, thalamic=(15.0, 0.2))
    (th,) = net.sources
    assert th.size == 3000 and th.rate.times == (0.0, 200.0) and th.rate.rates == (0.0, 15.0)
    # K_in = 0.0983 * 3000 = 295 onto L4E (PD14 thalamic probability), amplitude J
    c = net.connection("thalamus", "L4E")
    assert c.n_synapses == round(295 * round(21915 * 0.1)) and c.weight == pytest.approx(87.81)


@pytest.mark.parametrize("kwargs, fragment", [
    ({"scale": 0.0}, "scale"), ({"scale": 1.5}, "scale"), ({"k_scale": 2.0}, "k_scale"),
    ({"background": "white"}, "background"), ({"thalamic": (5.0,)}, "thalamic"),
    ({"thalamic": (-1.0, 0.1)}, "thalamic"),
])
def test_bad_microcircuit_arguments(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        pd14_microcircuit(**kwargs)


@pytest.mark.parametrize("kwargs, fragment", [
    ({"backend": "neuron"}, "backend"), ({"device": "gpu"}, "device"), ({"duration": 0.0}, "duration"),
    ({"dt": 0.1}, "dt"), ({"seed": -1}, "seed"), ({"threads": 0}, "threads"), ({"scale": 0}, "scale"),
])
def test_bad_run_arguments_refused_before_work(kwargs, fragment):
    from colplugin.spiking import simulate_microcircuit

    args = {"scale": 0.01, "duration": 0.3, **kwargs}
    with pytest.raises(ValueError, match=fragment):
        simulate_microcircuit(args.pop("scale"), args.pop("duration"), **args)


def _check_tiny_run(res: SpikingResult, t_from: float = 0.1):
    from colplugin.analysis import population_statistics

    block = res.to_neo()
    trains = block.segments[0].spiketrains
    assert len(trains) == sum(res.sizes.values())
    assert {st.annotations["population"] for st in trains} == set(POPS)
    assert {st.annotations["area"] for st in trains} == {"pd14"}
    assert trains[0].units == pq.s and trains[0].annotations["layer"] == "L23"
    stats = population_statistics(block, t_start=t_from)
    for pop in POPS:  # independent count: spikes after t_from / (N * time)
        _, ts = res.spikes[pop]
        assert stats[pop]["rate"] == pytest.approx((ts >= t_from).sum() / res.sizes[pop] / (res.duration - t_from),
                                                   rel=1e-9)
    assert stats["L4I"]["rate"] > 0
    assert all(0 <= t.min() and t.max() < res.duration for _, t in res.spikes.values() if len(t))
    small = res.to_neo(max_per_population=3)
    assert len(small.segments[0].spiketrains) == 24
    return stats


@pytest.mark.brian2
def test_tiny_circuit_brian2_runtime_to_neo_and_elephant():
    from colplugin.export.neo import to_neo
    from colplugin.spiking import simulate_microcircuit

    res = simulate_microcircuit(0.01, 0.4, k_scale=0.3, seed=3, backend="brian2", device="runtime")
    assert res.settings["backend"] == "brian2" and res.settings["device"] == "runtime"
    _check_tiny_run(res)
    assert to_neo(res, seed=3).annotations["seed"] == 3  # the export protocol calls the result's to_neo


def test_tiny_circuit_nest():
    pytest.importorskip("nest")
    from colplugin.spiking import simulate_microcircuit

    res = simulate_microcircuit(0.01, 0.4, k_scale=0.3, seed=3, backend="nest")
    assert res.settings["backend"] == "nest"
    _check_tiny_run(res)


def test_custom_network_nest_counts_and_weights():
    """A hand-made description: NEST builds exactly the synapse counts, signs and delay bounds asked for."""
    nest = pytest.importorskip("nest")
    from colplugin.spiking import LIFModel, Population, SpikingNetwork, simulate_spiking

    lif = LIFModel(250.0, 10.0, -65.0, -65.0, -50.0, 2.0, 0.5)
    net = SpikingNetwork("two", [Population("E", 40, lif), Population("I", 10, lif)],
                         [Connection("E", "I", 123, 50.0, 0.5, 1.0, 0.9),
                          Connection("I", "E", 77, -80.0, 0.9, 0.5, 0.9)])
    simulate_spiking(net, 0.01, backend="nest", seed=1)
    conns = nest.GetConnections(synapse_model="static_synapse").get(["weight", "delay", "target"])
    neuron = np.asarray(conns["target"]) <= 50  # the 50 neurons are created first; then the recorders
    w = np.asarray(conns["weight"])[neuron]
    d = np.asarray(conns["delay"])[neuron]
    assert len(w) == 200 and (w > 0).sum() == 123 and (w < 0).sum() == 77
    assert d.min() >= 0.1


def test_neuron_rates_count_spikes_in_the_window():
    """Spikes counted by hand: 3 spikes in [0, 1) s is 3 Hz, 2 of them in [0.15, 0.65) is 4 Hz, none is 0 Hz."""
    import neo
    import quantities as pq

    from colplugin.analysis.spiking import neuron_rates

    trains = [neo.SpikeTrain([0.1, 0.2, 0.6] * pq.s, t_start=0 * pq.s, t_stop=1 * pq.s),
              neo.SpikeTrain([] * pq.s, t_start=0 * pq.s, t_stop=1 * pq.s)]
    assert neuron_rates(trains, 0.0, 1.0).tolist() == pytest.approx([3.0, 0.0])
    assert neuron_rates(trains, 0.15, 0.65).tolist() == pytest.approx([4.0, 0.0])
    assert neuron_rates(trains, 0.7, 0.9).tolist() == [0.0, 0.0]
