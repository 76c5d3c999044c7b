import neo
import numpy as np
import pytest
import quantities as pq
import torch

import colplugin as cp
from colplugin.export.neo import NeoError, from_neo, load_nix, save_nix, to_neo

from conftest import two_column_net


@pytest.fixture(scope="module")
def traj():
    net = two_column_net(cp.load_preset("dl25"))
    stim = cp.Stimulus([0.0, 0.02], [[[0, 0], [20, 10]], [[0, 0], [5, 5]]])
    with torch.no_grad():
        return cp.simulate(net, stim, duration=0.05, dt_out=1e-3)


def test_block_structure(traj):
    block = to_neo(traj, seed=7)
    assert len(block.segments) == 2
    sig = block.segments[0].analogsignals[0]
    assert sig.units == pq.Hz and sig.shape == (51, 16)
    assert float(sig.sampling_rate.rescale("Hz")) == pytest.approx(1000.0)
    assert list(sig.array_annotations["population"][:2]) == ["L23E", "L23I"]
    assert sig.array_annotations["cell_type"][1] == "I"
    ep = block.segments[0].epochs[0]
    assert float(ep.times[0]) == pytest.approx(0.02) and float(ep.durations[0]) == pytest.approx(0.03)
    assert block.annotations["seed"] == 7 and block.annotations["preset"] == "dl25"
    np.testing.assert_allclose(sig.magnitude, traj.rate[:, 0].numpy())


def test_nix_round_trip_is_lossless(traj, tmp_path):
    block = to_neo(traj, seed=1)
    path = save_nix(block, tmp_path / "run.nix")
    again = load_nix(path)
    a, b = block.segments[1].analogsignals[0], again.segments[1].analogsignals[0]
    np.testing.assert_array_equal(a.magnitude, b.magnitude)
    assert b.units == pq.Hz and b.t_start == a.t_start and b.sampling_rate == a.sampling_rate
    assert list(b.array_annotations["population"]) == list(a.array_annotations["population"])
    assert again.annotations["preset"] == "dl25"
    t, rates = from_neo(again, populations=["mt[1].L23E"])
    np.testing.assert_allclose(rates[:, :, 0], traj.get("rate", "mt", 1, "L23E").numpy())


def test_bad_neo_input():
    seg = neo.Segment(name="s")
    seg.analogsignals.append(neo.AnalogSignal(np.ones((5, 2)), units="dimensionless", sampling_rate=1 * pq.kHz))
    blk = neo.Block()
    blk.segments.append(seg)
    with pytest.raises(NeoError, match="no units"):
        from_neo(blk)
    seg.analogsignals[0] = neo.AnalogSignal(np.ones((5, 2)), units="mV", sampling_rate=1 * pq.kHz)
    with pytest.raises(NeoError, match="not a rate"):
        from_neo(blk)


def test_spike_trains_become_rates():
    st = neo.SpikeTrain(np.arange(0.0, 1.0, 0.01) * pq.s, t_start=0 * pq.s, t_stop=1 * pq.s)
    seg = neo.Segment()
    seg.spiketrains.append(st)
    blk = neo.Block()
    blk.segments.append(seg)
    t, r = from_neo(blk)
    assert r[len(t) // 2, 0, 0] == pytest.approx(100.0, rel=0.05)  # 100 Hz regular train


def _population_block(rates_hz, duration=2.0, n_per_pop=5):
    """Regular spike trains annotated like a spiking run: rates_hz = {population: Hz}."""
    seg = neo.Segment(name="spontaneous")
    for pop, rate in rates_hz.items():
        for i in range(n_per_pop):
            # regular train with a per-neuron phase; its rate is exactly `rate`
            times = (np.arange(0.0, duration, 1.0 / rate) + (i + 0.5) / (n_per_pop * rate)) % duration
            seg.spiketrains.append(neo.SpikeTrain(np.sort(times) * pq.s, t_stop=duration * pq.s, area="pd14",
                                                  column=0, population=pop, neuron=i))
    blk = neo.Block()
    blk.segments.append(seg)
    return blk


def test_spike_trains_grouped_by_population():
    blk = _population_block({"L23E": 5.0, "L4E": 20.0})
    t, r = from_neo(blk, populations=["L23E", "pd14[0].L4E"])
    assert r.shape == (len(t), 1, 2)  # one channel per population, not one per neuron
    mid = slice(len(t) // 4, 3 * len(t) // 4)  # away from the kernel's edge effects
    assert r[mid, 0, 0].mean() == pytest.approx(5.0, rel=0.02)
    assert r[mid, 0, 1].mean() == pytest.approx(20.0, rel=0.02)
    with pytest.raises(NeoError, match="L5E"):
        from_neo(blk, populations=["L5E"])


def test_bad_target_values_are_refused():
    cases = ((np.array([[1.0, np.nan], [1.0, 2.0]]), "NaN"), (np.array([[1.0, -0.5], [1.0, 2.0]]), "negative"))
    for values, msg in cases:
        seg = neo.Segment(name="s")
        seg.analogsignals.append(neo.AnalogSignal(values, units="Hz", sampling_rate=1 * pq.kHz, name="rate"))
        blk = neo.Block()
        blk.segments.append(seg)
        with pytest.raises(NeoError, match=msg):
            from_neo(blk)


def test_inputs_changing_at_different_times_round_trip(tmp_path):
    from colplugin.export.neo import stimulus_from_neo

    net = two_column_net(cp.load_preset("dl25"))
    # trial 0 changes at 10 ms and 30 ms, trial 1 only at 30 ms
    stim = cp.Stimulus([0.0, 0.01, 0.03], [[[0, 0], [20, 10], [5, 5]], [[0, 0], [0, 0], [8, 2]]])
    with torch.no_grad():
        traj = cp.simulate(net, stim, duration=0.05, dt_out=1e-3)
    # the file holds each trial's input signal; the change points are recovered from the samples
    back = stimulus_from_neo(load_nix(save_nix(to_neo(traj), tmp_path / "in.nix")))
    np.testing.assert_allclose(back.times.numpy(), [0.0, 0.01, 0.03])
    np.testing.assert_allclose(back.rates.numpy(), stim.rates.numpy())
    one = cp.Stimulus([0.0, 0.03], [[[0, 0], [8, 2]]])
    with torch.no_grad():
        t1 = cp.simulate(net, one, duration=0.05, dt_out=1e-3)
    back1 = stimulus_from_neo(to_neo(t1))
    np.testing.assert_allclose(back1.times.numpy(), [0.0, 0.03])


def test_to_neo_refuses_other_objects():
    with pytest.raises(TypeError, match="to_neo"):
        to_neo(np.zeros(3))


def test_annotations_are_json(traj):
    import json

    block = to_neo(traj, seed=3)
    assert json.loads(block.annotations["solver"])["method"] == traj.solver.method
    assert isinstance(block.annotations["seed"], int)
