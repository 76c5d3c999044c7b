"""The spiking twin of a ColumnNetwork: the K x J mapping by hand, and a tiny twin on Brian2 and NEST."""

import math

import numpy as np
import pytest

import colplugin as cp
from colplugin.spiking import simulate_spiking, spiking_twin


@pytest.fixture(scope="module")
def two_columns():
    net = cp.ColumnNetwork(cp.load_preset("dl25"), {"mt": ("mt", 2)}, [cp.Input("mt"), cp.Lateral("mt", init=20.0)],
                           seed=0)
    w = net.projection_weights("lateral:mt:cross")
    return net, w


def test_inter_column_weight_becomes_k_synapses_of_j_by_hand(two_columns):
    net, w = two_columns
    scale, k = 0.05, 0.5
    ref = np.full(net.n_populations, 2.0)
    tw = spiking_twin(net, scale=scale, k_scale=k, reference_rates=ref)
    # one learned weight: L2/3E of column 0 -> L2/3I of column 1 (nA per Hz)
    i = [n for n, (s, t) in enumerate(zip(w["source"], w["target"])) if (s, t) == ("mt[0].L23E", "mt[1].L23I")][0]
    W = w["weight"][i]
    assert W > 0  # Dale: excitatory source
    J_E = 0.0878  # nA, the dl25 preset (dL25, PD14's 87.81 pA rounded)
    n_target = round(17095 / 2 * scale)  # MT L2/3I, split between the 2 columns
    c = tw.connection("mt[0].L23E", "mt[1].L23I")
    assert c.n_synapses == round(W / J_E * k * n_target)  # K = |W| / J_E, times k
    assert c.weight == pytest.approx(87.8 / math.sqrt(k))  # +J_E / sqrt(k), pA
    # so K x J is kept: (n / N) * w * sqrt(k) / k = W (up to rounding of n)
    assert c.n_synapses / n_target * c.weight * 1e-3 / math.sqrt(k) == pytest.approx(W, rel=2 / c.n_synapses + 1e-9)
    assert c.delay == 1.5


def test_twin_keeps_the_column(two_columns):
    net, _ = two_columns
    stim = cp.Stimulus([0.0, 0.2], [[0.0, 0.0], [20.0, 5.0]])
    k = 0.5
    tw = spiking_twin(net, stim, trial=0, scale=0.1, k_scale=k, reference_rates=np.zeros(net.n_populations))
    # intra-column: MT at N/2 gives K[L23E, L23E] = 3223.1 (PD14 Table 5 probabilities and sizes, N/2 per column)
    n = round(60606 / 2 * 0.1)
    c = tw.connection("mt[0].L23E", "mt[0].L23E")
    assert c.n_synapses == pytest.approx(3223.1 * k * n, abs=0.05 * k * n + 0.5)
    # dL25's layer-specific inhibition: -(N_E / N_I) J_E for L2/3I, 3.5452 for MT
    assert tw.connection("mt[0].L23I", "mt[0].L23E").weight == pytest.approx(-3.5452 * 87.8 / math.sqrt(k), rel=1e-4)
    # input channel 1 drives column 1's L4E with K_in = 295 Poisson sources at the stimulus rate
    (inp,) = [i for i in tw.poisson_inputs if i.name == "input[1]" and i.target == "mt[1].L4E"]
    assert inp.n_sources == pytest.approx(295.0) and inp.weight == pytest.approx(87.8)
    assert inp.rate.times == (0.0, 200.0) and inp.rate.rates == (0.0, 5.0)
    # background 2510 x 8 Hz, adaptation of L2/3E: jump kappa / tau_a = 1.5 mV s / 10 s, decay 10 s
    bg = [i for i in tw.poisson_inputs if i.target == "mt[0].L5E" and i.name.startswith("background")][0]
    assert bg.n_sources == 2510 and bg.rate.rates == (8.0,)
    m = tw.population("mt[1].L23E").model
    assert m.threshold_jump == pytest.approx(0.15) and m.tau_threshold == pytest.approx(1e4)
    assert m.tau_m == pytest.approx(20.0) and not tw.population("mt[1].L23I").model.adapting
    assert tw.population("mt[1].L4I").annotations == {"area": "mt", "kind": "mt", "column": 1, "population": "L4I",
                                                       "layer": "L4", "cell_type": "I"}
    # zero reference rates: the DC compensation is zero
    assert all(p.I_dc == 0 for p in tw.populations)


def test_dc_compensation_uses_reference_rates(two_columns):
    net, _ = two_columns
    ref = np.zeros(net.n_populations)
    ref[net.index("mt", 0, "L23E")] = 3.0
    k = 0.25
    tw0 = spiking_twin(net, scale=0.05, k_scale=k, reference_rates=np.zeros(net.n_populations))
    tw = spiking_twin(net, scale=0.05, k_scale=k, reference_rates=ref)
    # column 0 L2/3E -> L2/3E: K = 3223.1 synapses of J_E inside the column plus the learned
    # self-excitation W_self (nA/Hz); DC = tau_s (1 - sqrt k) (K J_E + W_self) nu
    w = net.projection_weights("lateral:mt:self")
    W_self = [x for x, s, t in zip(w["weight"], w["source"], w["target"]) if s == t == "mt[0].L23E"][0]
    dI = tw.population("mt[0].L23E").I_dc - tw0.population("mt[0].L23E").I_dc
    assert dI == pytest.approx(0.5e-3 * (1 - math.sqrt(k)) * (3223.1 * 87.8 + 1e3 * W_self) * 3.0, rel=1e-4)
    # column 1 L2/3I gets column 0's L2/3E through the lateral projection only
    w = net.projection_weights("lateral:mt:cross")
    W = [x for x, s, t in zip(w["weight"], w["source"], w["target"]) if (s, t) == ("mt[0].L23E", "mt[1].L23I")][0]
    dI = tw.population("mt[1].L23I").I_dc - tw0.population("mt[1].L23I").I_dc
    assert dI == pytest.approx(0.5e-3 * (1 - math.sqrt(k)) * 1e3 * W * 3.0, rel=1e-9)


@pytest.mark.parametrize("kwargs, fragment", [
    ({"scale": 0.0}, "scale"), ({"k_scale": 1.5}, "k_scale"), ({"trial": 3}, "trial"),
    ({"reference_rates": [1.0, 2.0]}, "reference_rates"), ({"background": "pink"}, "background"),
])
def test_bad_twin_arguments(two_columns, kwargs, fragment):
    net, _ = two_columns
    stim = cp.Stimulus([0.0], [[1.0, 2.0]])
    with pytest.raises(ValueError, match=fragment):
        spiking_twin(net, stim, **kwargs)
    with pytest.raises(ValueError, match="input channels"):
        spiking_twin(net, cp.Stimulus([0.0], [[1.0]]))


@pytest.fixture(scope="module")
def tiny_twin():
    net = cp.ColumnNetwork(cp.load_preset("dl25"), {"mt": ("mt", 1)}, [cp.Input("mt")])
    stim = cp.Stimulus([0.0, 0.15], [[0.0], [30.0]])
    return spiking_twin(net, stim, scale=0.02, k_scale=0.05, duration=0.3)


def _check_twin_run(res):
    assert set(res.sizes) == {f"mt[0].{p}" for p in cp.POPULATIONS}
    before, after = res.rates(0.05, 0.15), res.rates(0.15, 0.3)
    assert after["mt[0].L4E"] > before["mt[0].L4E"] + 2.0  # 30 Hz thalamic input drives L4E
    block = res.to_neo(max_per_population=2)
    assert {st.annotations["area"] for st in block.segments[0].spiketrains} == {"mt"}


@pytest.mark.brian2
def test_tiny_twin_brian2_runtime(tiny_twin):
    _check_twin_run(simulate_spiking(tiny_twin, 0.3, backend="brian2", device="runtime", seed=1))


def test_tiny_twin_nest(tiny_twin):
    pytest.importorskip("nest")
    _check_twin_run(simulate_spiking(tiny_twin, 0.3, backend="nest", seed=1))
