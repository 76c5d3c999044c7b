"""The fused Runge-Kutta solves (colplugin.fused) against torchdiffeq and finite differences."""

import numpy as np
import pytest
import torch

import colplugin as cp
from colplugin.solve import compiled
from colplugin.solve.fused import TABLEAUS, fused_solve
from colplugin.solve.simulate import SimulationError

from conftest import two_column_net


def _stim():
    rates = np.array([[[0, 0], [15, 5], [0, 0]], [[0, 0], [2, 30], [10, 10]], [[0, 0], [20, 20], [0, 0]]], float)
    return cp.Stimulus([0.0, 0.0203, 0.05], rates)  # a change point off the 1 ms grid


def _run(net, solver, stim, duration=0.08, dt_out=0.005):
    for p in net.parameters():
        p.grad = None
    y0 = net.initial_state(3)
    y0[:, 0] = 2.0
    y0.requires_grad_()
    traj = cp.simulate(net, stim, duration, dt_out=dt_out, solver=solver, y0=y0)
    loss = (traj.rate ** 2).mean() + traj.V[-1].sum() * 1e-3
    loss.backward()
    return traj.state.detach(), [p.grad.clone() for p in net.parameters() if p.grad is not None] + [y0.grad.clone()]


@pytest.mark.parametrize("method", ["euler", "midpoint", "rk4"])
def test_same_scheme_as_torchdiffeq(dl25, method):
    """Same states and the same gradients (w.r.t. weights, inputs and y0) as autograd through torchdiffeq."""
    net = two_column_net(dl25)
    net.rec_theta.data += 0.3 * torch.randn_like(net.rec_theta)
    step = 2e-4 if method == "euler" else 1e-3
    ref_s, ref_g = _run(net, cp.Solver(method, step=step), _stim())
    s, g = _run(net, cp.Solver(method, step=step, backend="fused"), _stim())
    torch.testing.assert_close(s, ref_s, rtol=1e-11, atol=1e-10)
    assert len(g) == len(ref_g) == 2  # lateral weights and y0
    for a, b in zip(g, ref_g):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_adaptive_dopri5_agrees_with_a_fine_fixed_grid(dl25):
    """Second method: fused dopri5 (rtol 1e-7) vs torchdiffeq rk4 at 0.1 ms, states and gradients."""
    net = two_column_net(dl25)
    ref_s, ref_g = _run(net, cp.Solver("rk4", step=1e-4), _stim())
    s, g = _run(net, cp.Solver("dopri5", rtol=1e-7, atol=1e-7, backend="fused"), _stim())
    torch.testing.assert_close(s, ref_s, rtol=1e-5, atol=1e-5)
    for a, b in zip(g, ref_g):
        assert float((a - b).norm() / b.norm()) < 1e-4


@pytest.mark.parametrize("kernel", ["eager", "compiled"])
def test_gradcheck_finite_differences(dl25, kernel):
    """float64 gradcheck of the fused backward pass (rk4 and dopri5; the eager loop and the
    compiled kernel) against finite differences."""
    if kernel == "compiled" and not compiled.kernel_available()[0]:
        pytest.skip(f"no compiled kernel here ({compiled.kernel_available()[1]})")
    net = two_column_net(dl25)
    theta = net.rec_theta.detach().clone()
    del net.rec_theta
    stim = cp.Stimulus([0.0, 0.004], [[0, 0], [20, 5]])
    for solver in (cp.Solver("rk4", step=1e-3, backend="fused", kernel=kernel),
                   cp.Solver("dopri5", backend="fused", kernel=kernel)):
        def output(th, solver=solver):
            net.rec_theta = th
            return cp.simulate(net, stim, duration=0.008, dt_out=0.004, solver=solver).rate[1:]

        assert torch.autograd.gradcheck(output, (theta.clone().requires_grad_(),))


def test_no_graph_without_gradients(dl25):
    net = two_column_net(dl25)
    stim = _stim()
    stim = cp.Stimulus(stim.times[:2], stim.rates[:, :2])  # the change at 50 ms lies after this run's end
    with torch.no_grad():
        traj = cp.simulate(net, stim, 0.03, solver=cp.Solver("rk4", step=1e-3, backend="fused"))
    assert not traj.state.requires_grad
    assert traj.nfe == 31 * 4  # 30 grid steps plus one extra step at the 20.3 ms change point


def test_divergence_and_stiffness_errors(dl25):
    net = two_column_net(dl25)
    net.set_projection_weights("lateral:mt:self", 5e4)
    for solver in (cp.Solver("rk4", step=1e-3, backend="fused"), cp.Solver("dopri5", backend="fused"),
                   cp.Solver("dopri5", rtol=1e-12, atol=1e-12, backend="fused")):
        with pytest.raises(SimulationError, match="runaway rates|NaN|underflow in dt"):
            cp.simulate(net, cp.Stimulus.constant([20.0, 20.0]), duration=0.2, solver=solver)


def test_configuration_errors(dl25):
    with pytest.raises(ValueError, match="backend=.fused."):
        cp.Solver("bosh3", backend="fused")
    net = two_column_net(dl25)
    with pytest.raises(ValueError, match="supports"):
        fused_solve(net.field(dense=False), net.initial_state(1), [0.0, 0.01], [0], [1], "bosh3",
                    lambda t, x, n: None)


def test_tableaus_have_their_order():
    """Butcher conditions: sum b = 1, and b.c = 1/2, b.c^2 = 1/3, b.A c = 1/6 up to the order (to 4)."""
    for tab in TABLEAUS.values():
        s = tab.stages
        A = np.zeros((s, s))
        for i, row in enumerate(tab.a, start=1):
            A[i, :len(row)] = row
        b, c = np.array(tab.b), A.sum(1)
        assert b.sum() == pytest.approx(1.0)
        if tab.order >= 2:
            assert b @ c == pytest.approx(0.5)
        if tab.order >= 3:
            assert b @ c ** 2 == pytest.approx(1 / 3) and b @ A @ c == pytest.approx(1 / 6)
        if tab.order >= 4:
            assert b @ c ** 3 == pytest.approx(0.25) and b @ A @ A @ c == pytest.approx(1 / 24)
        if tab.b_err is not None:  # the embedded pair's weights also sum to 1
            assert (b - np.array(tab.b_err)).sum() == pytest.approx(1.0)


def test_learnable_input_and_feedforward_gradients():
    """XOR's network: gradients w.r.t. input (per-segment drive) and feedforward weights match torchdiffeq."""
    from colplugin.tasks import XOR

    task = XOR()
    net = task.build_network(seed=3)
    batch = task.sample(4, torch.Generator().manual_seed(0))
    grads = []
    for solver in (cp.Solver("rk4", step=1e-3), cp.Solver("rk4", step=1e-3, backend="fused")):
        for p in net.parameters():
            p.grad = None
        traj = cp.simulate(net, batch.stimulus, 0.52, dt_out=0.01, solver=solver)
        task.loss(traj, batch).backward()
        grads.append([p.grad.clone() for p in net.parameters() if p.grad is not None])
    assert len(grads[0]) == len(grads[1]) == 2
    for a, b in zip(*grads):
        assert float(b.norm()) > 0
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-14)
