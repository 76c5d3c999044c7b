"""Dense output of the fused solve: dopri5's own interpolant between steps, and its adjoint.

With ``Engine(interpolate=True)`` (the default) the fused dopri5 solve steps only onto the
stimulus change points and the ends, and the output times in between come from the scheme's
quartic interpolant. Checked here against independent numbers: the Butcher-form weights
against torchdiffeq's own ``_interp_fit`` and against exp(t) (order 4), the outputs against a
solve that steps onto every output time, the gradients against finite differences, and the
compiled kernel against the eager loop.
"""

import numpy as np
import pytest
import torch
from torchdiffeq._impl.dopri5 import DPS_C_MID
from torchdiffeq._impl.interp import _interp_evaluate, _interp_fit

import colplugin as cp
from colplugin.solve import compiled
from colplugin.solve.fused import fused_solve
from colplugin.solve.strategies import Engine
from colplugin.solve.tableaus import TABLEAUS

from conftest import solve_with_gradients, two_area_net, two_column_net

DOPRI5 = TABLEAUS["dopri5"]
KERNELS = ["eager"] + (["compiled"] if compiled.kernel_available()[0] else [])


def _weights(theta: float) -> np.ndarray:
    """b_i(theta) of the interpolant (stages,)."""
    Q = np.array(DOPRI5.interpolant)
    return Q @ np.array([theta, theta ** 2, theta ** 3, theta ** 4])


def test_interpolant_is_torchdiffeqs_quartic():
    """The stage weights give torchdiffeq's interpolation (its _interp_fit through y0, y1, the
    midpoint and the end slopes) for random stages, and the solution weights at theta = 1."""
    gen = torch.Generator().manual_seed(0)
    k = torch.randn(7, 5, dtype=torch.float64, generator=gen)
    y0 = torch.randn(5, dtype=torch.float64, generator=gen)
    h = 0.37
    b = torch.tensor(DOPRI5.b, dtype=torch.float64)
    coeffs = _interp_fit(y0, y0 + h * (b @ k), y0 + h * (DPS_C_MID @ k), k[0], k[-1], h)
    for theta in (0.0, 0.13, 0.5, 0.81, 1.0):
        ref = _interp_evaluate(coeffs, torch.tensor(0.0), torch.tensor(1.0), torch.tensor(theta, dtype=torch.float64))
        mine = y0 + h * (torch.tensor(_weights(theta)) @ k)
        torch.testing.assert_close(mine, ref, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(_weights(1.0), DOPRI5.b, atol=1e-14)


def test_interpolant_has_order_four():
    """y' = y over one dopri5 step of h: the interpolant's error at theta = 0.4 against exp(0.4 h)
    falls as h^5 (local error of a 4th-order continuous extension)."""
    A = np.array(DOPRI5.stage_matrix)
    errors = []
    for h in (0.2, 0.1, 0.05):
        k = np.zeros(7)
        for i in range(7):  # k_i = f(Y_i) = Y_i for y' = y from y0 = 1
            k[i] = 1.0 + h * A[i, :i] @ k[:i]
        errors.append(abs(1.0 + h * _weights(0.4) @ k - np.exp(0.4 * h)))
    ratios = [errors[0] / errors[1], errors[1] / errors[2]]
    assert all(25 < r < 40 for r in ratios), ratios  # 2^5 = 32


def _stim():
    rates = np.array([[[0, 0, 0], [15, 5, 3], [0, 0, 0]], [[0, 0, 0], [2, 30, 1], [10, 10, 10]],
                      [[0, 0, 0], [20, 20, 20], [5, 0, 5]]], float)
    return cp.Stimulus([0.0, 0.0203, 0.05], rates)  # a change point off the output grid


def _solver(interpolate: bool, tol: float, **kw) -> cp.Solver:
    return cp.Solver("dopri5", rtol=tol, atol=tol, engine=Engine(backend="fused", interpolate=interpolate, **kw))


@pytest.mark.parametrize("kernel", KERNELS)
def test_outputs_and_gradients_converge_to_the_stepped_solve(dl25, kernel):
    """Against the solve that steps onto every output time (0.1 ms): states and gradients agree within
    the tolerance and converge with it (rtol 1e-6 -> 1e-9: the difference shrinks by 100x or more)."""
    net = two_area_net(dl25)
    diffs = []
    for tol in (1e-6, 1e-9):
        ref_s, ref_g, ref_nfe = solve_with_gradients(net, _solver(False, tol, kernel=kernel), _stim(), 0.08, 1e-4)
        s, g, nfe = solve_with_gradients(net, _solver(True, tol, kernel=kernel), _stim(), 0.08, 1e-4)
        assert nfe < ref_nfe / 2  # 801 output times no longer cap the step
        diffs.append((float((s - ref_s).abs().max()), max(float((a - b).norm() / b.norm()) for a, b in zip(g, ref_g))))
    (s6, g6), (s9, g9) = diffs
    assert s6 < 1e-3 and g6 < 1e-4
    assert s9 < s6 / 100 and g9 < g6 / 100 and s9 < 1e-6


@pytest.mark.parametrize("kernel", KERNELS)
def test_recording_adds_no_steps(dl25, kernel):
    """The steps do not depend on the output times: recording every 0.1 ms evaluates the field as often as
    recording only the ends, and the end state is the same solve (bit for bit)."""
    net = two_column_net(dl25)
    stim = cp.Stimulus.constant([[20.0, 5.0]])
    solver = cp.Solver("dopri5", backend="fused", kernel=kernel)
    with torch.no_grad():
        bare = cp.simulate(net, stim, 0.05, dt_out=0.05, solver=solver)
        fine = cp.simulate(net, stim, 0.05, dt_out=1e-4, solver=solver)
    assert fine.nfe == bare.nfe
    assert fine.state.shape[0] == 501
    assert torch.equal(fine.state[-1], bare.state[-1])


@pytest.mark.parametrize("checkpoint_every", [None, 2])
def test_gradients_of_interpolated_outputs_match_finite_differences(dl25, checkpoint_every):
    """float64 gradcheck of outputs inside steps (0.7 ms apart, off every stop) with respect to the
    weights and the initial state, kept stages and recomputed checkpoints alike. Tight
    tolerances make the step sizes' own (ignored) dependence on the inputs negligible. The
    compiled kernel where it builds (the eager loop's gradients equal its own to 1e-12, below;
    the eager loop at these tolerances takes a minute), else the eager loop."""
    kernel = KERNELS[-1]
    net = two_column_net(dl25)
    theta = net.rec_theta.detach().clone()
    del net.rec_theta
    stim = cp.Stimulus([0.0, 0.004], [[0, 0], [20, 5]])
    solver = _solver(True, 1e-11, kernel=kernel, checkpoint_every=checkpoint_every)

    def of_weights(th):
        net.rec_theta = th
        return cp.simulate(net, stim, duration=0.008, dt_out=7e-4, solver=solver).rate[1:]

    y0 = net.initial_state(1)
    y0[:, 0] = 2.0

    def of_y0(y):
        net.rec_theta = theta
        return cp.simulate(net, stim, duration=0.008, dt_out=7e-4, solver=solver, y0=y).state[1:]

    assert torch.autograd.gradcheck(of_weights, (theta.clone().requires_grad_(),))
    assert torch.autograd.gradcheck(of_y0, (y0.clone().requires_grad_(),))


@pytest.mark.skipif(not compiled.kernel_available()[0], reason="no compiled kernel here")
@pytest.mark.parametrize("dense", [True, False])
@pytest.mark.parametrize("batch,checkpoint_every", [(1, None), (11, None), (11, 3)])
def test_compiled_dense_output_equals_the_eager_loops(dl25, dense, batch, checkpoint_every):
    """States and every gradient within 1e-12 with outputs inside steps: dense and sparse coupling,
    lanes (11 trials), kept stages and checkpoints."""
    net = two_area_net(dl25)
    rates = _stim().rates.numpy()[:1]  # (1, K, inputs): trial 0, scaled per trial
    scaled = np.repeat(rates, batch, axis=0) * np.linspace(0.8, 1.2, batch)[:, None, None]
    stim = cp.Stimulus([0.0, 0.0203, 0.05], scaled)
    runs = [solve_with_gradients(net, _solver(True, 1e-6, kernel=k, dense=dense, checkpoint_every=checkpoint_every),
                                 stim, 0.08, 3.3e-4) for k in ("eager", "compiled")]
    (ref_s, ref_g, ref_nfe), (s, g, nfe) = runs
    assert nfe == ref_nfe
    assert float((s - ref_s).abs().max() / ref_s.abs().max()) < 1e-12
    for a, b in zip(g, ref_g):
        assert float(b.abs().max()) > 0
        assert float((a - b).abs().max() / b.abs().max()) < 1e-12


def test_bad_dense_requests_are_refused(dl25):
    net = two_column_net(dl25)
    field = net.field(torch.tensor([[[20.0, 5.0]]], dtype=torch.float64))
    y0 = net.initial_state(1)
    watch = lambda t, x, n: None  # noqa: E731
    with pytest.raises(ValueError, match="no dense output"):
        fused_solve(field, y0, [0.0, 0.01], [0], [0, -1], "rk4", watch, out_times=[0.0, 0.005])
    with pytest.raises(ValueError, match="need out_times"):
        fused_solve(field, y0, [0.0, 0.01], [0], [0, -1], "dopri5", watch)
    with pytest.raises(ValueError, match="must lie in"):
        fused_solve(field, y0, [0.0, 0.01], [0], [0, -1], "dopri5", watch, out_times=[0.0, 0.02])
    with pytest.raises(ValueError, match="got nan"):  # not only the first and last are checked
        fused_solve(field, y0, [0.0, 0.01], [0], [0, -1, -1, -1, 1], "dopri5", watch,
                    out_times=[0.0, 0.002, float("nan"), 0.007, 0.01])
    with pytest.raises(TypeError, match="interpolate"):
        Engine(interpolate="yes")
    solver = _solver(False, 1e-6)
    assert cp.Solver.from_dict(solver.to_dict()) == solver
    assert cp.Solver("dopri5", interpolate=False).engine == Engine(interpolate=False)
    assert not cp.Solver("dopri5", interpolate=False).interpolate


def test_trajectory_rates_keep_their_graph(dl25):
    """A rate read under no_grad first (a log line) does not take the graph from a later read, and the
    rates follow a replaced state: gradients as from rates computed afresh from the state."""
    net = two_column_net(dl25)
    stim = cp.Stimulus.constant([[20.0, 5.0]])
    traj = cp.simulate(net, stim, 0.02, dt_out=1e-3)
    with torch.no_grad():
        peak = float(traj.rate.max())
    loss = traj.rate.sum()
    (grad,) = torch.autograd.grad(loss, net.rec_theta)
    fresh = cp.simulate(net, stim, 0.02, dt_out=1e-3)
    (ref,) = torch.autograd.grad(net.rates(fresh.state).sum(), net.rec_theta)
    assert peak > 0 and torch.allclose(grad, ref, rtol=1e-12, atol=0)
    traj.state = traj.state.detach() + 1.0
    torch.testing.assert_close(traj.rate, net.rates(traj.state))
