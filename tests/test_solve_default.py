"""simulate's default solver: the fused dopri5 path, its accuracy against a tight reference, and Adjoint."""

import numpy as np
import pytest
import torch

import colplugin as cp


def _mt(n, fan_out=3):
    """One MT area of n full-size columns, lateral L2/3E -> L2/3I onto fan_out others, 20 Hz into L4E/L4I."""
    pairs = np.array([(s, (s + k) % n) for s in range(n) for k in range(1, fan_out + 1)])
    return cp.ColumnNetwork(cp.load_preset("dl25"), {"a": cp.Area("mt", n, split=False)},
                            [cp.Input("a", to="all"), cp.Lateral("a", columns=pairs, self_excitation=False, init=5.0)],
                            seed=0)


def test_default_resolves_to_the_fused_solver_and_to_torchdiffeq_for_adjoint():
    default = cp.Solver.default()
    assert (default.method, default.backend) == ("dopri5", "auto")
    assert default.resolve(cp.Direct()).backend == "fused"
    assert default.resolve(cp.Adjoint()).backend == "torchdiffeq"
    assert cp.Solver("bosh3", backend="auto").resolve().backend == "torchdiffeq"  # not a fused method
    assert cp.Solver("rk4").resolve().backend == "torchdiffeq"  # explicit solvers keep their backend
    net = _mt(2)
    with torch.no_grad():
        traj = cp.simulate(net, cp.Stimulus.constant([20.0]), duration=0.01)
    assert traj.solver.backend == "fused" and traj.solver.method == "dopri5"


@pytest.mark.parametrize("n", [10, 30])  # dense (80 populations) and sparse (240) coupling
def test_default_error_against_a_tight_reference(n):
    """0.15 s with 20 Hz input: the default's rates within 1e-4 Hz (V within 1e-4 mV) of torchdiffeq rtol 1e-8."""
    net = _mt(n)
    stim = cp.Stimulus.constant([20.0])
    with torch.no_grad():
        ref = cp.simulate(net, stim, 0.15, dt_out=0.005,
                          solver=cp.Solver("dopri5", rtol=1e-8, atol=1e-8, backend="torchdiffeq"))
        traj = cp.simulate(net, stim, 0.15, dt_out=0.005)
    assert traj.solver.backend == "fused" and net.field().dense == (n == 10)
    assert float(ref.rate.max()) > 5.0  # the input drives the columns
    assert float((traj.rate - ref.rate).abs().max()) < 1e-4
    assert float((traj.V - ref.V).abs().max()) < 1e-4


def test_default_error_on_xor_with_stimulus_changes():
    """The paper's XOR network (0.5 s silence, 0.5 s input): rates within 1e-3 Hz of the reference."""
    from colplugin.tasks import XOR

    task = XOR()
    net = task.build_network(seed=3)
    batch = task.sample(4, torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = cp.simulate(net, batch.stimulus, 1.0, dt_out=0.01,
                          solver=cp.Solver("dopri5", rtol=1e-8, atol=1e-8, backend="torchdiffeq"))
        traj = cp.simulate(net, batch.stimulus, 1.0, dt_out=0.01)
    assert float((traj.rate - ref.rate).abs().max()) < 1e-3


def test_default_gradients_direct_and_adjoint_agree():
    """Adjoint() with the default solver runs torchdiffeq's odeint_adjoint; its gradient matches Direct()'s."""
    from conftest import two_column_net

    net = two_column_net(cp.load_preset("dl25"))
    stim = cp.Stimulus([0.0, 0.01], [[0.0, 0.0], [20.0, 10.0]])
    grads = []
    for gradient in (cp.Direct(), cp.Adjoint()):
        net.zero_grad()
        traj = cp.simulate(net, stim, 0.03, dt_out=0.005, gradient=gradient)
        traj.rate[-1].sum().backward()
        grads.append(net.rec_theta.grad.clone())
    assert float((grads[0] - grads[1]).norm() / grads[1].norm()) < 1e-4
