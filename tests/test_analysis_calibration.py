"""Calibration against the spiking twin: the offset term, the fit, the Neo rates and the preset it writes."""

import numpy as np
import pytest
import torch

import colplugin as cp
from colplugin.analysis.calibration import (block_rates, calibrated_preset_toml, dmf_step_rates, fit_calibration)

from conftest import one_euler_step, two_column_net

DT = 1e-4
OFFSET = np.array([2.0, -1.0, 0.5, 0.0, 3.0, 0.0, -2.0, 1.0])  # mV


def _step(net, backend, dense=None):
    y0 = net.initial_state(1)
    y0[0, :net.n_populations] = torch.linspace(-2.0, 12.0, net.n_populations, dtype=y0.dtype)
    return one_euler_step(net, backend, y0, DT, dense=dense)


@pytest.mark.parametrize("backend", ["torchdiffeq", "fused", pytest.param("brian2", marks=pytest.mark.brian2)])
def test_the_offset_moves_V_by_dt_offset_over_tau_m_on_every_backend(backend):
    base = two_column_net(cp.load_preset("dl25"))
    shifted = two_column_net(cp.load_preset("dl25", overrides={"V_offset": OFFSET}))
    P = base.n_populations
    expected = np.zeros(2 * P)
    expected[:P] = DT * np.tile(OFFSET, P // 8) / 0.02  # dt V_offset / tau_m (dl25: tau_m = 20 ms)
    np.testing.assert_allclose(_step(shifted, backend) - _step(base, backend), expected, rtol=0, atol=1e-11)


GAIN = np.array([1.5, 1.0, 0.8, 1.2, 2.0, 1.0, 1.0, 0.9])


@pytest.mark.parametrize("backend", ["torchdiffeq", "fused", pytest.param("brian2", marks=pytest.mark.brian2)])
@pytest.mark.parametrize("dense", [True, False], ids=["dense", "sparse"])
def test_the_input_gain_scales_every_input_current_on_every_backend(backend, dense):
    """One Euler step: V moves by dt (g - 1) R tau_s I / tau_m more, I the summed input current at y0."""
    base = two_column_net(cp.load_preset("dl25"))
    gained = two_column_net(cp.load_preset("dl25", overrides={"input_gain": GAIN}))
    P = base.n_populations
    y0 = base.initial_state(1)
    y0[0, :P] = torch.linspace(-2.0, 12.0, P, dtype=y0.dtype)
    with torch.no_grad():  # R tau_s I / tau_m = dV/dt + V / tau_m of the base network (no offset)
        drive = base.vector_field(y0, torch.tensor([[20.0, 10.0]], dtype=y0.dtype))[0, :P] + y0[0, :P] / 0.02
    expected = np.zeros(2 * P)
    expected[:P] = DT * (np.tile(GAIN, P // 8) - 1) * drive.numpy()
    got = _step(gained, backend, dense) - _step(base, backend, dense)
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-11)


def test_steady_rates_are_f_of_the_shifted_argument():
    """At a fixed point V* = g R I* + V_offset: the rates equal f(g R I* + V_offset), by hand (no adaptation)."""
    from colplugin.field import transfer_numpy

    params = cp.load_preset("dl25", overrides={"V_offset": OFFSET, "kappa": np.zeros(8), "input_gain": GAIN})
    r = dmf_step_rates(params, [20.0], segment=1.0)[0]
    net = cp.ColumnNetwork(params, {"mt": ("mt", 1)}, [cp.Input("mt")], seed=0)
    W = net.W_intra[0].numpy()
    w_in = np.zeros(8)
    src = net.projection_weights("input:mt")
    for t, w in zip(src["target"], src["weight"]):
        w_in[cp.POPULATIONS.index(t.split(".")[1])] += w
    current = params["tau_s"] * (W @ r + net.W_bg.numpy() * params["nu_bg"] + w_in * 20.0)  # nA
    V = GAIN * params.R * current + OFFSET  # mV (R in MOhm)
    A = np.asarray(params["kappa"]) * r
    expected = transfer_numpy(V - A, params["a"], params["b"], params["d"])
    np.testing.assert_allclose(r, expected, rtol=1e-4, atol=1e-6)


def test_the_fit_recovers_known_offsets():
    """Targets made by the DMF itself with known offsets (no ridge): the fit finds them again."""
    params = cp.load_preset("dl25")
    truth = np.array([1.5, -1.0, 0.8, 0.0, 2.0, -0.5, 0.0, 0.7])
    levels = [0.0, 20.0, 40.0]
    target = dmf_step_rates(params, levels, truth, segment=0.15, window=0.05)
    active = target.max(0) > 0.05  # L6E is silent in dl25: its offset is not identifiable
    x, info = fit_calibration(params, levels, target, ridge=0.0, segment=0.15, window=0.05, gains=False)
    np.testing.assert_allclose(x[:8][active], truth[active], atol=0.05)
    np.testing.assert_array_equal(x[8:], np.ones(8))
    assert info["cost_after"] < 1e-6 * info["cost_before"]


def test_block_rates_by_hand():
    import neo
    import quantities as pq

    seg = neo.Segment()
    for pop in cp.POPULATIONS:
        for n in range(2):  # neuron 0 fires 4 spikes in [0, 1) s, neuron 1 none: 2 Hz per population there
            times = [0.1, 0.3, 0.5, 0.7] if n == 0 else []
            seg.spiketrains.append(neo.SpikeTrain(times * pq.s, t_stop=2.0 * pq.s, population=pop))
    block = neo.Block()
    block.segments.append(seg)
    r = block_rates(block, [(0.0, 1.0), (0.2, 0.6), (1.0, 2.0)])
    np.testing.assert_allclose(r[0], 2.0)
    np.testing.assert_allclose(r[1], 2.5)  # 2 spikes in 0.4 s from one of two neurons
    np.testing.assert_allclose(r[2], 0.0)


def test_the_calibrated_preset_file_round_trips(tmp_path):
    path = tmp_path / "dl25_calibrated.toml"
    path.write_text(calibrated_preset_toml("dl25", OFFSET, "a test"))
    p = cp.load_params(path)
    np.testing.assert_allclose(p["V_offset"], OFFSET)
    assert p["tau_m"] == cp.load_preset("dl25")["tau_m"]  # everything else from the base


def test_resume_refuses_another_preset(tmp_path):
    from colplugin.experiments import train_run

    train_run("xor", 0, tmp_path, updates=1, progress=False)
    (tmp_path / "metrics.json").unlink()
    with pytest.raises(ValueError, match="--preset dl25"):
        train_run("xor", 0, tmp_path, updates=2, progress=False, resume=True, preset="pd14")


def test_the_shipped_calibrated_preset_is_dl25_with_offsets():
    cal, base = cp.load_preset("dl25_calibrated"), cp.load_preset("dl25")
    assert np.any(cal["V_offset"] != 0) and np.all(np.abs(cal["V_offset"]) <= 15.0)  # within the fit's bounds
    for key in base:
        if key != "V_offset":
            np.testing.assert_array_equal(np.asarray(cal[key]), np.asarray(base[key]))


def test_old_parameter_sets_without_V_offset_still_load():
    d = cp.load_preset("dl25").to_dict()
    d.pop("V_offset")
    p = cp.Params.from_dict(d)
    np.testing.assert_array_equal(p["V_offset"], np.zeros(8))


def test_cli_refuses_bad_calibration_input_before_any_work(tmp_path, capsys):
    from colplugin.cli import main

    assert main(["calibrate", "--preset", "nope", "--out", str(tmp_path / "a")]) == 2
    assert "nope" in capsys.readouterr().err and not (tmp_path / "a").exists()
    assert main(["calibrate", "--spiking", str(tmp_path / "missing.json"), "--out", str(tmp_path / "b")]) == 2
    assert "--spiking" in capsys.readouterr().err and not (tmp_path / "b").exists()
    assert main(["train", "xor", "--preset", "nope.toml", "--out", str(tmp_path / "c"), "--no-progress"]) == 2
    assert "neither a preset" in capsys.readouterr().err and not (tmp_path / "c").exists()
    assert main(["calibrate", "--columns", "0", "--out", str(tmp_path / "d")]) == 2
    assert "--columns 0" in capsys.readouterr().err and not (tmp_path / "d").exists()
    assert main(["calibrate", "--fit-levels", "0", "-5", "--out", str(tmp_path / "e")]) == 2
    assert "--fit-levels 0 -5" in capsys.readouterr().err and not (tmp_path / "e").exists()


def test_a_refit_needs_the_same_preset_and_levels(tmp_path):
    import json

    from colplugin.analysis.calibration import calibrate

    saved = tmp_path / "calibration.json"
    saved.write_text(json.dumps({"preset": "pd14", "fit_levels_hz": [0.0], "held_out_levels_hz": [],
                                 "spiking_hz": [[1.0] * 8], "run": {}}))
    with pytest.raises(ValueError, match="refit needs preset 'dl25'"):
        calibrate(tmp_path / "out", "dl25", spiking_from=saved)
    assert not (tmp_path / "out").exists()
    # the same preset and levels, measured on a full column, refused for the split column
    saved.write_text(json.dumps({"preset": "dl25", "fit_levels_hz": [0.0], "held_out_levels_hz": [5.0],
                                 "spiking_hz": [[1.0] * 8] * 2, "run": {"columns": 1}}))
    with pytest.raises(ValueError, match="with 2 column"):
        calibrate(tmp_path / "out", "dl25", spiking_from=saved, fit_levels=[0.0], held_out=[5.0], columns=2)
    assert not (tmp_path / "out").exists()


def test_the_split_column_is_the_xor_and_decision_tasks_column():
    """columns = 2: the column the XOR and decision networks are built from (the area split in two by
    dL25's rule, so each recurrent in-degree, and with it each intra-column weight, is half a full
    column's), and the rates of two identical columns are those of either."""
    from colplugin.analysis.calibration import calibration_network
    from colplugin.tasks.decision import Decision

    params = cp.load_preset("dl25")
    full, split = calibration_network(params), calibration_network(params, columns=2)
    dec = Decision().build_network(seed=0)
    np.testing.assert_array_equal(split.W_intra.numpy(), dec.W_intra.numpy())
    np.testing.assert_allclose(2 * split.W_intra.numpy(), full.W_intra.numpy(), rtol=1e-3, atol=1e-3)
    r2 = dmf_step_rates(params, [0.0, 30.0], segment=0.15, window=0.05, columns=2)
    r1 = dmf_step_rates(params, [0.0, 30.0], segment=0.15, window=0.05)
    assert r2.shape == r1.shape == (2, 8)
    assert np.abs(r2 - r1).max() > 0.1  # a half column is another column
    net = calibration_network(params, columns=2)
    stim = cp.Stimulus([0.0, 0.15], [[0.0], [30.0]])
    with torch.no_grad():
        tr = cp.simulate(net, stim, 0.3, dt_out=1e-3, solver=cp.Solver("dopri5", rtol=1e-7, atol=1e-7, backend="fused"))
    last = tr.rate[(tr.t >= 0.25 - 1e-9) & (tr.t < 0.3 - 1e-9), 0].mean(0).numpy()
    np.testing.assert_allclose(last[:8], last[8:], rtol=1e-12)  # the two columns are alike
    np.testing.assert_allclose(r2[1], last[:8], rtol=1e-3)
    with pytest.raises(ValueError, match="columns"):
        calibration_network(params, columns=0)


def test_a_trial_point_that_runs_away_does_not_stop_the_fit(monkeypatch):
    """The optimiser may try offsets and gains at which the column runs away; the fit steps back
    (a residual of RUNAWAY_RESIDUAL per rate there) and still recovers the offsets."""
    from colplugin.analysis import calibration
    from colplugin.solve.simulate import SimulationError

    params = cp.load_preset("dl25")
    truth = np.array([1.5, -1.0, 0.8, 0.0, 2.0, -0.5, 0.0, 0.7])
    levels = [0.0, 20.0, 40.0]
    real = calibration.dmf_step_rates
    target = real(params, levels, truth, segment=0.15, window=0.05)
    calls = {"n": 0, "raised": 0}

    def guarded(params, levels, V_offset=None, **kw):
        calls["n"] += 1
        if calls["n"] == 10:  # the first trial step (after the start and its 8-column Jacobian) runs away
            calls["raised"] += 1
            raise SimulationError("runaway rates (test)")
        return real(params, levels, V_offset, **kw)

    monkeypatch.setattr(calibration, "dmf_step_rates", guarded)
    x, info = calibration.fit_calibration(params, levels, target, ridge=0.0, segment=0.15, window=0.05,
                                          gains=False)
    active = target.max(0) > 0.05
    assert calls["raised"] == 1 and calls["n"] > 12  # it ran into the runaway and went on
    np.testing.assert_allclose(x[:8][active], truth[active], atol=0.05)
    assert calibration.RUNAWAY_RESIDUAL == 10.0


def test_calibrating_a_parameter_file_writes_a_file_based_on_it(tmp_path):
    """--preset FILE as on every other command: the calibrated file starts from the user's file."""
    import json

    from colplugin.analysis.calibration import calibrate

    mine = tmp_path / "params" / "mine.toml"
    mine.parent.mkdir()
    mine.write_text('base = "dl25"\ntau_m = "25 ms"\n')
    saved = tmp_path / "calibration.json"  # spiking rates to refit (no spiking run): 2 Hz everywhere, 3 levels
    saved.write_text(json.dumps({"preset": str(mine.resolve()), "fit_levels_hz": [0.0, 10.0],
                                 "held_out_levels_hz": [5.0], "spiking_hz": [[2.0] * 8] * 3,
                                 "run": {"columns": 1, "scale": 0.1, "k_scale": 1.0, "backend": "nest", "seed": 0,
                                         "neurons": 7717, "wall_seconds": 1.0, "segment_s": 0.5, "window_s": 0.3}}))
    r = calibrate(tmp_path / "out", mine, spiking_from=saved, fit_levels=[0.0, 10.0], held_out=[5.0])
    out = tmp_path / "out" / "mine_calibrated.toml"
    assert r["calibrated_preset"] == "mine_calibrated" and out.is_file()
    cal = cp.load_params(out)
    assert cal["tau_m"] == pytest.approx(0.025)  # from mine.toml, through the file's base
    np.testing.assert_allclose(cal["V_offset"], r["V_offset_mV"], rtol=1e-5)
    assert cal.name == "mine_calibrated"
