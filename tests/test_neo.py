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
