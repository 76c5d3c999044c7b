"""Torch vector field and Brian2 equations must not drift apart."""

import numpy as np
import pytest
import torch

import colplugin as cp
from colplugin.export import to_brian2

from conftest import two_column_net

pytestmark = pytest.mark.brian2


def test_euler_on_both_sides_agrees():
    net = two_column_net(cp.load_preset("dl25"))
    stim = cp.Stimulus([0.0, 0.02], [[0, 0], [20, 10]])
    run = to_brian2(net, stim, duration=0.04, method="euler").run()
    with torch.no_grad():
        traj = cp.simulate(net, stim, duration=0.04, dt_out=1e-4, solver=cp.Solver("euler", step=1e-4))
    rb, rt = run.rate, traj.rate[: len(run.rate), 0].numpy()
    assert rb.shape == rt.shape
    np.testing.assert_allclose(rb, rt, rtol=1e-5, atol=1e-6)


def test_units_are_checked_by_brian2():
    import brian2 as b2

    net = two_column_net(cp.load_preset("dl25"))
    run = to_brian2(net, duration=0.001)
    assert run.group.V.dim == b2.volt.dim
    assert run.synapses.w.dim == b2.amp.dim
    assert b2.get_dimensions(run.group.r[:]) == b2.Hz.dim
    with pytest.raises(ValueError, match="exponential_euler"):
        to_brian2(net, method="exponential_euler")


def test_standalone_script_runs_without_colplugin(tmp_path):
    import subprocess
    import sys

    from colplugin.export import export_brian2_script

    net = two_column_net(cp.load_preset("dl25"))
    stim = cp.Stimulus([0.0, 0.01], [[0, 0], [20, 10]])
    paths = export_brian2_script(net, tmp_path / "model.py", stim, duration=0.02, method="euler")
    text = paths["script"].read_text()
    assert "colplugin" not in "\n".join(l for l in text.splitlines() if l.startswith(("import", "from")))
    assert "## Parameters" in paths["description"].read_text()
    # a clean interpreter (-I: no user site, no PYTHONPATH) in another directory
    subprocess.run([sys.executable, "-I", str(paths["script"]), "--out", str(tmp_path / "out.npz")],
                   cwd=tmp_path, check=True, capture_output=True, timeout=300)
    out = np.load(tmp_path / "out.npz")
    ref = to_brian2(net, stim, duration=0.02, method="euler").run()
    np.testing.assert_allclose(out["rate_Hz"], ref.rate, rtol=1e-12, atol=1e-12)


@pytest.mark.standalone
def test_cpp_standalone_matches_runtime():
    net = two_column_net(cp.load_preset("dl25"))
    stim = cp.Stimulus([0.0, 0.01], [[0, 0], [20, 10]])
    rt = to_brian2(net, stim, duration=0.02, method="euler").run()
    sa = to_brian2(net, stim, duration=0.02, method="euler", device="cpp_standalone").run()
    np.testing.assert_allclose(sa.rate, rt.rate, rtol=1e-10, atol=1e-10)
    again = to_brian2(net, stim, duration=0.02, method="euler").run()  # runtime device restored
    np.testing.assert_array_equal(again.rate, rt.rate)


def test_all_trials_in_one_run_match_single_trials():
    net = two_column_net(cp.load_preset("dl25"))
    stim = cp.Stimulus([0.0, 0.01], [[[0, 0], [20, 10]], [[0, 0], [3, 30]]])
    both = to_brian2(net, stim, duration=0.02, trial=None, method="euler").run()
    assert both.trial_rates.shape[1:] == (2, 16)
    for b in range(2):
        single = to_brian2(net, stim, duration=0.02, trial=b, method="euler").run()
        np.testing.assert_array_equal(both.trial_rates[:, b], single.rate)
