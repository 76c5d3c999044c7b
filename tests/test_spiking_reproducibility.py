"""Same seed, same spikes: on Brian2 (runtime and cpp_standalone) and on NEST."""

import numpy as np
import pytest

from colplugin.spiking import pd14_microcircuit, simulate_spiking


def tiny(thalamic=None):
    # the settings of test_microcircuit's tiny run, so that Brian2 reuses its compiled code
    return pd14_microcircuit(scale=0.01, k_scale=0.3, thalamic=thalamic)


def same_spikes(a, b):
    return a.spikes.keys() == b.spikes.keys() and all(
        np.array_equal(a.spikes[p][0], b.spikes[p][0]) and np.array_equal(a.spikes[p][1], b.spikes[p][1])
        for p in a.spikes)


def n_spikes(res):
    return sum(len(t) for _, t in res.spikes.values())


@pytest.mark.brian2
def test_brian2_runtime_same_seed_same_spikes():
    net = tiny()
    a, b, c = (simulate_spiking(net, 0.3, seed=s, backend="brian2", device="runtime") for s in (5, 5, 6))
    assert n_spikes(a) > 100
    assert same_spikes(a, b) and not same_spikes(a, c)


@pytest.mark.standalone
def test_brian2_standalone_same_seed_same_spikes(tmp_path):
    # the seed must reach the compiled project (it used to seed itself from the clock)
    net = tiny()
    a, b = (simulate_spiking(net, 0.3, seed=5, backend="brian2", device="cpp_standalone",
                             directory=str(tmp_path / "b2")) for _ in range(2))
    assert n_spikes(a) > 100
    assert same_spikes(a, b)


def test_nest_same_seed_same_spikes():
    pytest.importorskip("nest")
    net = tiny(thalamic=(10.0, 0.1))  # every kind of random draw: connectivity, V0, Poisson input and sources
    a, b, c = (simulate_spiking(net, 0.3, seed=s, backend="nest") for s in (5, 5, 6))
    assert n_spikes(a) > 100
    assert same_spikes(a, b) and not same_spikes(a, c)
