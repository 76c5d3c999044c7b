"""Torch vector field and Brian2 equations must not drift apart."""

import numpy as np
import pytest
import torch

import colplugin as cp
from colplugin.brian2 import to_brian2

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
