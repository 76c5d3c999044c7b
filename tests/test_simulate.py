import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

import colplugin as cp
from colplugin.analysis import jacobian, resting_state
from colplugin.solve.simulate import SimulationError

from conftest import numpy_column_rhs, two_column_net


def test_batch_equals_single_trials(dl25):
    net = two_column_net(dl25)
    rates = np.array([[[0, 0], [15, 5]], [[0, 0], [2, 30]], [[0, 0], [20, 20]]], dtype=float)
    stim = cp.Stimulus([0.0, 0.05], rates)
    fixed = cp.Solver("rk4", step=5e-4)  # a fixed grid: the same steps for one trial or many
    batch = cp.simulate(net, stim, duration=0.1, solver=fixed)
    default = cp.simulate(net, stim, duration=0.1)  # adaptive: the batch shares its steps
    for b in range(3):
        one = cp.Stimulus([0.0, 0.05], rates[b])
        single = cp.simulate(net, one, duration=0.1, solver=fixed)
        torch.testing.assert_close(batch.state[:, b], single.state[:, 0], rtol=1e-12, atol=1e-10)
        single = cp.simulate(net, one, duration=0.1)
        torch.testing.assert_close(default.state[:, b], single.state[:, 0], rtol=1e-5, atol=1e-4)


def test_fixed_and_adaptive_solvers_agree(dl25):
    net = two_column_net(dl25)
    stim = cp.Stimulus([0.0, 0.03], [[0, 0], [20, 10]])
    fixed = cp.simulate(net, stim, duration=0.06, solver=cp.Solver("rk4", step=5e-5))
    adaptive = cp.simulate(net, stim, duration=0.06, solver=cp.Solver("dopri5", rtol=1e-9, atol=1e-9))
    torch.testing.assert_close(fixed.rate, adaptive.rate, rtol=1e-5, atol=1e-6)


def test_matches_independent_scipy_integration(dl25):
    """Column response to a step input, against scipy's LSODA on a numpy re-implementation."""
    net = cp.ColumnNetwork(dl25, {"mt": ("mt", 1)}, [cp.Input("mt")])
    u = 15.0
    stim = cp.Stimulus([0.0, 0.1], [[0.0], [u]])
    traj = cp.simulate(net, stim, duration=0.2, dt_out=0.01)
    N = dl25.area_sizes("mt").astype(float)
    rhs0, f = numpy_column_rhs(dl25, N)
    ext = np.zeros(8)
    ext[2], ext[3] = 295 * 0.0878 * u, 186 * 0.0878 * u
    rhs1, _ = numpy_column_rhs(dl25, N, ext)
    s1 = solve_ivp(rhs0, (0, 0.1), np.zeros(16), method="LSODA", rtol=1e-10, atol=1e-10)
    s2 = solve_ivp(rhs1, (0.1, 0.2), s1.y[:, -1], method="LSODA", rtol=1e-10, atol=1e-10,
                   t_eval=[0.15, 0.2])
    for i, t in enumerate((0.15, 0.2)):
        k = int(round(t / 0.01))
        s = s2.y[:, i]
        np.testing.assert_allclose(traj.rate[k, 0].numpy(), f(s[:8] - s[8:]), rtol=2e-4, atol=1e-5)


def test_resting_state_is_a_stable_fixed_point(dl25):
    from conftest import numpy_column_rhs

    net = cp.ColumnNetwork(dl25, {"mt": ("mt", 1)})
    y = resting_state(net)
    rhs, f = numpy_column_rhs(dl25, dl25.area_sizes("mt").astype(float))
    # a fixed point, checked independently (terms are ~1e4 mV/s, so 1e-3 is a relative 1e-7)
    np.testing.assert_allclose(rhs(0, y[0].numpy()), 0, atol=1e-3)
    J = jacobian(net, y)
    ev = torch.linalg.eigvals(J)
    assert ev.real.max() < 0  # stable
    assert ev.real.max() == pytest.approx(-1 / dl25["tau_a"], rel=1e-3)  # slowest: pure adaptation modes
    rates = net.rates(y)[0]
    assert torch.all(rates[1::2] > rates[0::2])  # inhibitory above excitatory in every layer
    # one stable fixed point: Newton from a shorter settling run finds the same one
    torch.testing.assert_close(resting_state(net, settle=0.3), y, rtol=1e-9, atol=1e-9)
    for bad in (0.0, -1.0, float("inf"), "2 s"):
        with pytest.raises(ValueError, match="settle"):
            resting_state(net, settle=bad)


def test_gradcheck_through_the_solver(dl25):
    """float64 gradcheck of the rates after 10 ms w.r.t. the learnable lateral parameters."""
    net = two_column_net(dl25)
    theta = net.rec_theta.detach().clone()
    del net.rec_theta  # replace the Parameter by a plain tensor that gradcheck perturbs
    stim = cp.Stimulus([0.0, 0.005], [[0, 0], [20, 5]])

    def output(th):
        net.rec_theta = th
        return cp.simulate(net, stim, duration=0.01, solver=cp.Solver("rk4", step=1e-3)).rate[-1]

    assert torch.autograd.gradcheck(output, (theta.requires_grad_(),))


def test_divergence_raises_clear_error(dl25):
    net = two_column_net(dl25)
    net.set_projection_weights("lateral:mt:self", 5e4)
    with pytest.raises(SimulationError, match="runaway rates|NaN"):
        cp.simulate(net, cp.Stimulus.constant([20.0, 20.0]), duration=0.2)
    with pytest.raises(SimulationError, match="underflow in dt|runaway|NaN"):
        cp.simulate(net, cp.Stimulus.constant([20.0, 20.0]), duration=0.2,
                    solver=cp.Solver("dopri5", rtol=1e-12, atol=1e-12))


@pytest.mark.parametrize("stim, fragment", [
    (lambda: cp.Stimulus.constant([1.0, 2.0, 3.0]), "3 input channels"),
    (lambda: cp.Stimulus([0.0, 0.1], np.ones((2, 3, 2))), "shape"),
    (lambda: cp.Stimulus([0.1], [[1.0, 1.0]]), "start at 0"),
    (lambda: cp.Stimulus([0.0, 0.2, 0.1], np.ones((3, 2))), "increasing"),
    (lambda: cp.Stimulus([0.0], [[-1.0, 1.0]]), ">= 0 Hz"),
])
def test_bad_stimuli(dl25, stim, fragment):
    net = two_column_net(dl25)
    with pytest.raises(ValueError) as info:
        cp.simulate(net, stim(), duration=0.01)
    assert fragment in str(info.value)


def test_bad_initial_state_and_duration(dl25):
    net = two_column_net(dl25)
    with pytest.raises(ValueError, match="32"):
        cp.simulate(net, duration=0.01, y0=torch.zeros(10))
    with pytest.raises(ValueError, match="duration"):
        cp.simulate(net, duration=-1.0)
    with pytest.raises(ValueError, match="unknown solver"):
        cp.Solver("rk5")


def test_a_change_point_at_or_after_the_end_is_refused(dl25):
    net = two_column_net(dl25)
    stim = cp.Stimulus([0.0, 0.02], [[0.0, 0.0], [20.0, 0.0]])
    for duration in (0.01, 0.02):
        with pytest.raises(ValueError, match=rf"t = 0.02 s.*duration = {duration:g} s"):
            cp.simulate(net, stim, duration=duration)
    assert cp.simulate(net, stim, duration=0.03).t[-1] == pytest.approx(0.03)


@pytest.mark.parametrize("r_max", [None, 5.0])
def test_peak_rate_is_the_largest_recorded_rate(dl25, r_max):
    """The runaway check's peak (the rate of each population's largest V - A) equals the maximum over
    every recorded rate, with and without a saturation r_max on L2/3E; a LIF column's transfer
    depends on S too and keeps every rate instead."""
    from colplugin.solve.simulate import _peak_rate

    params = dl25
    if r_max is not None:
        r = np.full(8, np.inf)
        r[0] = r_max
        params = dl25.with_overrides({"r_max": r})
    net = cp.ColumnNetwork(params, {"a": ("mt", 2)}, [cp.Lateral("a", init=20.0)], seed=0)
    gen = torch.Generator().manual_seed(1)
    state = torch.randn(7, 3, net.n_state, dtype=torch.float64, generator=gen) * 6.0
    peak, rates = _peak_rate(state, net)
    assert rates is None
    assert peak == pytest.approx(float(net.rates(state).max()), rel=1e-14)
    lif = cp.ColumnNetwork(cp.load_preset("dl25_lif"), {"a": ("mt", 1)}, [], seed=0)
    assert not lif.transfer.monotone
    s = torch.rand(4, 1, lif.n_state, dtype=torch.float64, generator=gen) * 10.0
    peak, rates = _peak_rate(s, lif)
    assert torch.equal(rates, lif.rates(s)) and peak == float(rates.max())
