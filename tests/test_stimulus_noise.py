"""MembraneNoise: the stochastic DMF, checked against Euler-Maruyama by hand and the linear (Lyapunov) theory."""

import numpy as np
import pytest
import torch

from colplugin.solve.fixed_points import jacobian, resting_state
from colplugin.solve.simulate import Solver, simulate
from colplugin.stimulus import MembraneNoise, Stimulus
from colplugin.tasks import Decision


@pytest.fixture(scope="module")
def net():
    return Decision().build_network(seed=0)


def test_euler_maruyama_by_hand(net):
    """Fixed-step euler at the noise step is Euler-Maruyama: y += h f(y) + sigma sqrt(2 h / tau_m) xi on V."""
    h, n, sigma, B = 1e-3, 40, 0.8, 3
    P = net.n_populations
    tau_m = float(net.params["tau_m"])
    u = torch.tensor([[20.0, 16.0], [0.0, 0.0], [35.0, 30.0]], dtype=torch.float64)
    traj = simulate(net, Stimulus.constant(u), n * h, dt_out=h, solver=Solver("euler", step=h, backend="fused"),
                    noise=MembraneNoise(sigma, h), generator=torch.Generator().manual_seed(7))
    xi = torch.randn(B, n, P, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    y = net.initial_state(B)
    with torch.no_grad():
        for k in range(n):
            dW = torch.cat([xi[:, k] * np.sqrt(h), torch.zeros(B, P, dtype=torch.float64)], 1)
            y = y + h * net.vector_field(y, u) + sigma * np.sqrt(2 / tau_m) * dW
    torch.testing.assert_close(traj.state[-1].detach(), y, rtol=1e-12, atol=1e-10)


def test_stationary_variance_matches_the_lyapunov_equation(net):
    """Around the rest state the linearised SDE has covariance S with J S + S J^T + Q = 0 (Q = 2 sigma^2 / tau_m on V).

    A small sigma (0.5 mV) keeps the rates near the linear regime; 64 trials of 1.5 s after 0.5 s of burn-in.
    The fused solver and torchdiffeq integrate the same realisation.
    """
    from scipy.linalg import solve_continuous_lyapunov

    P, sigma, B = net.n_populations, 0.5, 64
    tau_m = float(net.params["tau_m"])
    y_rest = resting_state(net, [0.0, 0.0])
    J = jacobian(net, y_rest, [0.0, 0.0]).numpy()
    Q = np.zeros_like(J)
    Q[np.arange(P), np.arange(P)] = 2 * sigma ** 2 / tau_m
    S = solve_continuous_lyapunov(J, -Q)
    runs = {}
    for backend in ("fused", "torchdiffeq"):
        with torch.no_grad():
            runs[backend] = simulate(net, Stimulus.none(B, net.n_inputs), 2.0, dt_out=1e-3,
                                     y0=y_rest.expand(B, -1), solver=Solver("euler", step=2e-4, backend=backend),
                                     noise=MembraneNoise(sigma, 2e-4), generator=torch.Generator().manual_seed(1)).V
    torch.testing.assert_close(runs["fused"], runs["torchdiffeq"], rtol=0, atol=1e-9)
    ratio = runs["fused"][500:].var(dim=(0, 1)).numpy() / np.diag(S)[:P]
    assert np.all((ratio > 0.85) & (ratio < 1.25)), ratio  # sampling error ~3 %, step and nonlinearity ~10 %
    assert abs(ratio.mean() - 1) < 0.12


def test_zero_noise_is_the_deterministic_solve_and_small_noise_is_close(net):
    """sigma = 0 is the deterministic solve; sigma = 1e-6 mV moves V by about that much (linear response)."""
    stim = Stimulus([0.0, 0.3], [[0.0, 0.0], [20.0, 16.0]])
    solver = Solver("rk4", step=1e-3, backend="fused")
    with torch.no_grad():
        a = simulate(net, stim, 0.6, solver=solver)
        b = simulate(net, stim, 0.6, solver=solver, noise=MembraneNoise(0.0))
        c = simulate(net, stim, 0.6, solver=solver, noise=MembraneNoise(1e-6),
                     generator=torch.Generator().manual_seed(0))
    assert torch.equal(a.state, b.state)
    dV = (c.V - a.V)[200:].abs().max()
    assert 1e-8 < float(dV) < 1e-5
    assert torch.equal(c.stimulus.times, stim.times.to(c.stimulus.times))  # the trajectory keeps the given input


def test_noise_with_a_float32_stimulus():
    """A change point that is also on the noise grid (0.3 s) merges with it in float32 too."""
    net32 = Decision().build_network(seed=0).to(torch.float32)
    stim = Stimulus([0.0, 0.3, 0.7], [[0.0, 0.0], [20.0, 16.0], [0.0, 0.0]], dtype=torch.float32)
    with torch.no_grad():
        traj = simulate(net32, stim, 1.0, solver=Solver("rk4", step=1e-3, backend="fused"),
                        noise=MembraneNoise(0.5), generator=torch.Generator().manual_seed(0))
    assert traj.state.dtype == torch.float32 and bool(torch.isfinite(traj.state).all())


def test_gradients_flow_through_the_realisation(net):
    """d loss / d theta through the noisy solve equals a central finite difference with the same realisation."""
    task = Decision(noise_mV=1.0)
    batch = task.sample(2, torch.Generator().manual_seed(3))
    theta = net.learnable_parameters()[0]

    def loss():
        traj = simulate(net, batch.stimulus, 1.1, dt_out=task.dt_out, solver=task.solver, noise=task.noise,
                        generator=torch.Generator().manual_seed(5))
        return task.output(traj).pow(2).sum()

    g, = torch.autograd.grad(loss(), theta)
    eps = 1e-6
    with torch.no_grad():
        theta[0] += eps
        up = float(loss())
        theta[0] -= 2 * eps
        down = float(loss())
        theta[0] += eps
    assert float(g[0]) == pytest.approx((up - down) / (2 * eps), rel=1e-5)


def test_bad_noise_and_the_brian2_view_refuse():
    with pytest.raises(ValueError, match="sigma"):
        MembraneNoise(-1.0)
    with pytest.raises(ValueError, match="step"):
        MembraneNoise(1.0, step=0.0)
    with pytest.raises(ValueError, match="lateral_columns"):
        Decision(lateral_columns="none")


def test_brian2_view_refuses_a_noisy_field(net):
    P = net.n_populations
    field = net.field(torch.zeros(1, 2, net.n_inputs, dtype=torch.float64),
                      noise=torch.zeros(1, 2, P, dtype=torch.float64))
    with pytest.raises(ValueError, match="MembraneNoise"):
        field.brian2()
