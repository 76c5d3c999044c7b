"""Torch vector field and Brian2 equations must not drift apart."""

import numpy as np
import pytest
import torch

import colplugin as cp
from colplugin.export import to_brian2

from conftest import two_column_net

pytestmark = pytest.mark.brian2


T_ON = 0.0625  # s: a change point on the 0.1 ms grid that float32 holds exactly (2^-4 = 625 * 1e-4)


def _stim(*rates):
    return cp.Stimulus([0.0, T_ON], np.array(rates, float))


def _max_rel(a, b):
    return float(np.max(np.abs(a - b) / np.abs(b)))


def test_euler_on_both_sides_agrees():
    """The default export (euler) reproduces torch's euler at the same dt to rounding, every trial."""
    net = two_column_net(cp.load_preset("dl25"))
    stim = _stim([[0, 0], [20, 10]], [[0, 0], [3, 30]])
    run = to_brian2(net, stim, duration=0.08, trial=None).run()
    assert run.method == "euler"
    with torch.no_grad():
        traj = cp.simulate(net, stim, duration=0.08, dt_out=1e-4, solver=cp.Solver("euler", step=1e-4))
    rb, rt = run.trial_rates, traj.rate[: len(run.t)].numpy()
    assert rb.shape == rt.shape == (801, 2, 16)  # the state at the end included, as torch
    np.testing.assert_allclose(run.t, traj.t.numpy(), rtol=0, atol=1e-12)
    assert _max_rel(rb, rt) < 1e-11  # measured 3e-14


def test_rk4_must_be_asked_for_and_is_not_exact():
    """Brian2's rk4 holds the summed coupling fixed within a step: far from torch's rk4."""
    net = two_column_net(cp.load_preset("dl25"))
    stim = _stim([[0, 0], [20, 10]])
    run = to_brian2(net, stim, duration=0.07, method="rk4").run()
    with torch.no_grad():
        traj = cp.simulate(net, stim, duration=0.07, dt_out=1e-4, solver=cp.Solver("rk4", step=1e-4))
    assert _max_rel(run.rate, traj.rate[: len(run.t), 0].numpy()) > 1e-6


def test_units_are_checked_by_brian2():
    import brian2 as b2

    net = two_column_net(cp.load_preset("dl25"))
    run = to_brian2(net, duration=0.001)
    assert run.group.V.dim == b2.volt.dim
    assert run.synapses.w.dim == b2.amp.dim
    assert run.group.kappa.dim == (b2.mV * b2.second).dim and run.group.W_bg.dim == b2.amp.dim
    assert b2.get_dimensions(run.group.r[:]) == b2.Hz.dim


@pytest.mark.parametrize("kwargs, error, fragment", [
    (dict(method="exponential_euler"), ValueError, "exponential_euler"),
    (dict(method="foo"), ValueError, "euler, rk2, rk4, heun"),
    (dict(trial=7), IndexError, "0..3"),
    (dict(trial=-1), IndexError, "0..3"),
    (dict(dt=0.0), ValueError, "dt"),
])
def test_bad_arguments_fail_before_anything_is_built(tmp_path, kwargs, error, fragment):
    from colplugin.export import export_brian2_script

    net = two_column_net(cp.load_preset("dl25"))
    stim = cp.Stimulus([0.0], np.ones((4, 1, 2)))
    with pytest.raises(error, match=fragment):
        to_brian2(net, stim, duration=0.01, **kwargs)
    with pytest.raises(error, match=fragment):
        export_brian2_script(net, tmp_path / "model.py", stim, duration=0.01, **kwargs)
    assert not list(tmp_path.iterdir())


def test_standalone_script_runs_without_colplugin(tmp_path):
    import subprocess
    import sys

    from colplugin.export import export_brian2_script

    net = two_column_net(cp.load_preset("dl25"))
    stim = _stim([[0, 0], [20, 10]], [[0, 0], [3, 30]])
    paths = export_brian2_script(net, tmp_path / "model.py", stim, duration=0.07)
    text = paths["script"].read_text()
    assert "colplugin" not in "\n".join(ln for ln in text.splitlines() if ln.startswith(("import", "from")))
    assert "brian2 >= 2.9 with numpy < 2.4" in text
    assert "## Parameters" in paths["description"].read_text()
    ref = to_brian2(net, stim, duration=0.07, trial=None).run()
    # a clean interpreter (-I: no user site, no PYTHONPATH) in another directory
    for args, trials in (([], [0, 1]), (["--trial", "1"], [1])):
        done = subprocess.run([sys.executable, "-I", str(paths["script"]), "--out", str(tmp_path / "out.npz"),
                               *args], cwd=tmp_path, check=True, capture_output=True, text=True, timeout=300)
        assert f"running trial(s) {trials}" in done.stdout
        out = np.load(tmp_path / "out.npz")
        assert out["trials"].tolist() == trials
        np.testing.assert_allclose(out["rate_Hz"], ref.trial_rates[:, trials], rtol=1e-12, atol=1e-12)
    bad = subprocess.run([sys.executable, "-I", str(paths["script"]), "--trial", "2"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0 and "0..1" in bad.stderr


@pytest.mark.standalone
def test_cpp_standalone_matches_runtime():
    net = two_column_net(cp.load_preset("dl25"))
    stim = _stim([[0, 0], [20, 10]])
    rt = to_brian2(net, stim, duration=0.07).run()
    sa = to_brian2(net, stim, duration=0.07, device="cpp_standalone").run(report_period=1e-6)  # compiles the report
    np.testing.assert_allclose(sa.rate, rt.rate, rtol=1e-10, atol=1e-10)
    again = to_brian2(net, stim, duration=0.07).run()  # runtime device restored
    np.testing.assert_array_equal(again.rate, rt.rate)


def test_all_trials_in_one_run_match_single_trials():
    net = two_column_net(cp.load_preset("dl25"))
    stim = _stim([[0, 0], [20, 10]], [[0, 0], [3, 30]])
    both = to_brian2(net, stim, duration=0.07, trial=None).run()
    assert both.trial_rates.shape[1:] == (2, 16)
    assert both.stimulus.batch_size == 2
    for b in range(2):
        single = to_brian2(net, stim, duration=0.07, trial=b).run()
        assert single.stimulus.batch_size == 1
        np.testing.assert_array_equal(both.trial_rates[:, b], single.rate)


def test_brian2_run_to_neo():
    net = two_column_net(cp.load_preset("dl25"))
    stim = _stim([[0, 0], [20, 10]], [[0, 0], [3, 30]])
    block = to_brian2(net, stim, duration=0.07, trial=None).run().to_neo()
    assert len(block.segments) == 2
    assert block.annotations["source"] == "brian2"
    # one run, the same samples in every file: torch's trajectory at the same dt has them too
    with torch.no_grad():
        traj = cp.simulate(net, stim, duration=0.07, dt_out=1e-4, solver=cp.Solver("euler", step=1e-4))
    tblock = traj.to_neo()
    for seg, tseg in zip(block.segments, tblock.segments):
        assert seg.analogsignals[0].shape == tseg.analogsignals[0].shape == (701, 16)
        assert float(seg.analogsignals[0].t_stop) == pytest.approx(float(tseg.analogsignals[0].t_stop))


def test_progress_only_for_long_runs(capsys):
    """``report="auto"`` is silent for a short run; a run past ``report_period`` reports to stderr."""
    net = two_column_net(cp.load_preset("dl25"))
    to_brian2(net, duration=0.01).run()
    assert capsys.readouterr().err == ""
    to_brian2(net, duration=0.05).run(report_period=1e-6)
    assert "Brian2:" in capsys.readouterr().err


def test_change_point_after_the_end_is_refused():
    net = two_column_net(cp.load_preset("dl25"))
    with pytest.raises(ValueError, match="0.0625 s.*duration = 0.01 s"):
        to_brian2(net, _stim([[0, 0], [20, 10]]), duration=0.01)
