"""NWB beside NIX: save_nwb / load_nwb round trips, fit from an NWB target, foreign files."""

from datetime import datetime, timezone

import neo
import numpy as np
import pytest
import quantities as pq
import torch

import colplugin as cp
from colplugin.export.neo import NeoError


def _equal(a, b):
    """Deep equality of annotation values (numpy arrays by value and dtype)."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return (isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.dtype == b.dtype
                and np.array_equal(a, b))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


def assert_same_block(a: neo.Block, b: neo.Block, rtol=0.0):
    """Numbers, units, names and annotations (array annotations included) equal, object by object.

    NWB keeps spike times in s: spike trains in other units come back rescaled (``rtol`` 1e-15).
    """
    assert (b.name, b.description, b.rec_datetime) == (a.name, a.description, a.rec_datetime)
    assert _equal(a.annotations, b.annotations)
    assert len(a.segments) == len(b.segments)
    for sa, sb in zip(a.segments, b.segments):
        assert (sb.name, sb.index) == (sa.name, sa.index) and _equal(sa.annotations, sb.annotations)
        for kind in ("analogsignals", "irregularlysampledsignals", "spiketrains", "epochs"):
            la, lb = getattr(sa, kind), getattr(sb, kind)
            assert len(la) == len(lb), kind
            for x, y in zip(la, lb):
                assert y.name == x.name and y.units == x.units, (kind, x.name)
                np.testing.assert_allclose(y.magnitude, x.magnitude, rtol=rtol, atol=0)
                np.testing.assert_allclose(y.times.magnitude, x.times.magnitude, rtol=rtol, atol=0)
                assert y.times.units == x.times.units
                assert _equal(x.annotations, y.annotations), (kind, x.name)
                assert _equal(dict(x.array_annotations), dict(y.array_annotations)), (kind, x.name)
                if kind == "analogsignals":
                    assert y.sampling_rate == x.sampling_rate and y.t_start == x.t_start
                if kind == "spiketrains":
                    assert (y.t_start, y.t_stop) == (x.t_start, x.t_stop)
                if kind == "epochs":
                    np.testing.assert_array_equal(y.durations, x.durations)
                    assert list(y.labels) == list(x.labels) and y.labels.dtype == x.labels.dtype


def _net(seed):
    return cp.ColumnNetwork(cp.load_preset("dl25"), {"mt": ("mt", 2)},
                            [cp.Input("mt"), cp.Lateral("mt", init=50.0, learnable=True)], seed=seed)


@pytest.fixture(scope="module")
def traj():
    truth = _net(1)
    truth.set_projection_weights("lateral:mt:cross", 250.0)
    stim = cp.Stimulus([0.0, 0.1], [[[0, 0], [30, 20]], [[0, 0], [15, 35]]])
    with torch.no_grad():
        return cp.simulate(truth, stim, 0.3, dt_out=0.01)


def test_a_trajectory_round_trips_through_nwb(traj, tmp_path):
    import pynwb

    block = cp.to_neo(traj, seed=4, description="two trials")
    path = cp.save_nwb(block, tmp_path / "rates.nwb")
    again = cp.load_nwb(path)
    assert_same_block(block, again)
    assert again.annotations["network_spec"] == block.annotations["network_spec"]
    sig = again.segments[1].analogsignals[0]
    assert sig.name == "rate" and sig.units == pq.Hz
    assert list(sig.array_annotations["population"][:2]) == ["L23E", "L23I"]
    # the same numbers for a fit as the NIX file gives
    t, rates = cp.from_neo(again, ["mt[1].L23E"])
    np.testing.assert_array_equal(rates[:, :, 0], traj.get("rate", "mt", 1, "L23E").numpy())
    # pynwb reads it directly: the rate TimeSeries holds the same array, in Hz, with its channel table
    with pynwb.NWBHDF5IO(str(path), mode="r") as io:
        nwb = io.read()
        rate = [ts for name, ts in nwb.acquisition.items() if "rate" in name]
        assert len(rate) == 2 and {ts.unit for ts in rate} == {"Hz"}
        ts = nwb.acquisition["trial 1 rate 1.0"]
        np.testing.assert_array_equal(ts.data[:], block.segments[1].analogsignals[0].magnitude)
        assert ts.rate == pytest.approx(100.0) and ts.starting_time == 0.0
        chans = nwb.processing["neo"]["trial 1 rate 1.0 channels"].to_dataframe()
        assert list(chans["population"][:2]) == ["L23E", "L23I"]
        assert len(nwb.epochs) == 2 and "trial 0 input 0.0" not in nwb.acquisition
        assert not pynwb.validate(io=io)
    # Neo's own NWB reader reads the file as well (signals and epochs per trial)
    from neo.io import NWBIO

    neo_block = NWBIO(str(path), mode="r").read_block()
    assert [s.name for s in neo_block.segments] == ["trial 0", "trial 1"]
    np.testing.assert_array_equal(neo_block.segments[0].analogsignals[0].magnitude,
                                  block.segments[0].analogsignals[0].magnitude)


def test_a_spiking_result_round_trips_through_nwb(tmp_path):
    import pynwb

    from colplugin.spiking import pd14_microcircuit, simulate_spiking

    res = simulate_spiking(pd14_microcircuit(None, 0.02, 0.1), 0.2, backend="brian2", device="runtime", seed=3)
    block = res.to_neo()
    path = cp.save_nwb(block, tmp_path / "spikes.nwb")
    again = cp.load_nwb(path)
    assert_same_block(block, again)
    st = again.segments[0].spiketrains[0]
    assert st.annotations["population"] == "L23E" and st.annotations["neuron"] == 0
    with pynwb.NWBHDF5IO(str(path), mode="r") as io:
        units = io.read().units
        n = len(block.segments[0].spiketrains)
        assert len(units) == n and list(units["population"][:1]) == ["L23E"]
        for i in (0, n // 2, n - 1):
            np.testing.assert_array_equal(units.get_unit_spike_times(i),
                                          block.segments[0].spiketrains[i].rescale("s").magnitude)


def test_a_hand_made_block_keeps_its_types(tmp_path):
    """Units other than Hz and s, irregular signals, numpy and datetime annotations come back as they were."""
    when = datetime(2024, 5, 1, 12, 30, tzinfo=timezone.utc)
    block = neo.Block(name="hand", rec_datetime=when, seed=np.int64(3), gains=np.array([1.5, 2.0]),
                      window=0.25 * pq.ms, tags=("a", "b"), meta={"k": [1, None]}, flag=True)
    seg = neo.Segment(name="only", index=0, trial=2)
    seg.analogsignals.append(neo.AnalogSignal(np.arange(12.0).reshape(6, 2), units="mV", sampling_period=0.5 * pq.ms,
                                              t_start=3 * pq.ms, name="vm", array_annotations={"ch": np.array([4, 7])}))
    seg.irregularlysampledsignals.append(neo.IrregularlySampledSignal([0.1, 0.4, 0.45] * pq.s, [1.0, 2.0, 5.0] * pq.Hz,
                                                                      name="sparse"))
    seg.spiketrains.append(neo.SpikeTrain([1.0, 2.5, 9.0] * pq.ms, t_stop=10 * pq.ms, name="u0", population="L4E",
                                          array_annotations={"amp": np.array([0.1, 0.2, 0.3])}))
    seg.spiketrains.append(neo.SpikeTrain([] * pq.s, t_stop=0.01 * pq.s, name="silent", population="L4I"))
    seg.epochs.append(neo.Epoch([0.1, 0.3] * pq.s, durations=[0.2, 0.1] * pq.s, labels=["x", "yy"], name="ep"))
    block.segments.append(seg)
    again = cp.load_nwb(cp.save_nwb(block, tmp_path / "hand.nwb"))
    assert_same_block(block, again, rtol=1e-15)  # the spike train in ms went through s
    np.testing.assert_array_equal(again.segments[0].analogsignals[0].magnitude, np.arange(12.0).reshape(6, 2))
    with pytest.raises(NotImplementedError, match=r"1 Event\(s\)"):
        seg.events.append(neo.Event([0.1] * pq.s, labels=["e"]))
        cp.save_nwb(block, tmp_path / "events.nwb")
    assert not (tmp_path / "events.nwb").exists()


def test_save_nwb_checks_its_arguments(traj, tmp_path):
    with pytest.raises(TypeError, match="one neo.Block"):
        cp.save_nwb([cp.to_neo(traj)], tmp_path / "x.nwb")
    with pytest.raises(ValueError):
        cp.save_nwb(cp.to_neo(traj), tmp_path)
    with pytest.raises(FileNotFoundError):
        cp.load_nwb(tmp_path / "missing.nwb")
    (tmp_path / "junk.nwb").write_text("not hdf5")
    with pytest.raises(NeoError, match="not a readable NWB file"):
        cp.load_nwb(tmp_path / "junk.nwb")


def test_fit_reads_an_nwb_target(traj, tmp_path, capsys):
    from colplugin.cli import main

    nwb = cp.save_nwb(cp.to_neo(traj), tmp_path / "target.nwb")
    assert main(["train", "fit", "--target", str(nwb), "--updates", "1", "--no-progress",
                 "--out", str(tmp_path / "fit")]) == 0
    assert (tmp_path / "fit" / "metrics.json").is_file()


def _foreign(path, unit):
    import pynwb

    nwb = pynwb.NWBFile(session_description="another tool", identifier="x",
                        session_start_time=datetime(2024, 1, 1, tzinfo=timezone.utc))
    nwb.add_acquisition(pynwb.TimeSeries(name="lfp", data=np.random.default_rng(0).random((50, 3)), unit=unit,
                                         rate=1000.0, starting_time=0.0))
    with pynwb.NWBHDF5IO(str(path), mode="w") as io:
        io.write(nwb)
    return path


def test_a_foreign_nwb_file_is_refused_with_what_it_lacks(tmp_path, capsys):
    from colplugin.cli import main

    volts = _foreign(tmp_path / "lfp.nwb", "volts")
    lacks = r"not written by colplugin.save_nwb.*no rate signal.*no network_spec.*'acquisition/lfp' in 'volts'"
    with pytest.raises(NeoError, match=lacks):
        cp.load_nwb(volts)
    assert main(["train", "fit", "--target", str(volts), "--updates", "1", "--no-progress",
                 "--out", str(tmp_path / "a")]) != 0
    err = capsys.readouterr().err
    assert "--target" in err and "no rate signal" in err
    # rates in Hz without colplugin's layout: Neo's reader gives a Block, and fit names the missing network spec
    rates = _foreign(tmp_path / "rates.nwb", "Hz")
    block = cp.load_nwb(rates)
    assert block.segments[0].analogsignals[0].units == pq.Hz
    assert main(["train", "fit", "--target", str(rates), "--updates", "1", "--no-progress",
                 "--out", str(tmp_path / "b")]) != 0
    assert "network spec" in capsys.readouterr().err
