"""Shared test problems."""

import numpy as np
import pytest
import torch

import colplugin as cp

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def dl25():
    return cp.load_preset("dl25")


@pytest.fixture(scope="session")
def pd14():
    return cp.load_preset("pd14")


def two_column_net(params, dtype=torch.float64, seed=0):
    """Two MT columns (N/2 each) with learnable lateral projections and fixed inputs."""
    return cp.ColumnNetwork(params, {"mt": ("mt", 2)},
                            [cp.Input("mt"), cp.Lateral("mt", init=20.0)], dtype=dtype, seed=seed)


def two_area_net(params, dtype=torch.float64):
    """Two areas (3 + 2 MT columns): learnable input (drive), lateral and feedforward edges."""
    return cp.ColumnNetwork(params, {"a": ("mt", 3), "b": ("mt", 2)},
                            [cp.Input("a", learnable=True, jitter=0.1), cp.Lateral("a", init=20.0),
                             cp.Feedforward("a", "b", init=10.0)], dtype=dtype, seed=0)


def solve_with_gradients(net, solver, stim, duration, dt_out, a_index=2):
    """One solve from V(L2/3E) = 2 mV and the gradients of a loss on rates, V and A.

    Returns the states, the gradients (the network's tensors, then y0) and the number of
    vector-field evaluations; shared by the fused-solver tests that compare two ways of
    computing the same solve.
    """
    for p in net.parameters():
        p.grad = None
    y0 = net.initial_state(stim.batch_size)
    y0[:, 0] = 2.0
    y0.requires_grad_()
    traj = cp.simulate(net, stim, duration, dt_out=dt_out, solver=solver, y0=y0)
    ((traj.rate ** 2).mean() + traj.V[-1].sum() * 1e-3 + traj.A[a_index].sum() * 1e-2).backward()
    grads = [p.grad.clone() for p in net.parameters() if p.grad is not None] + [y0.grad.clone()]
    return traj.state.detach(), grads, traj.nfe


def one_column_input_net(params=None, seed=None):
    """One MT column with a learnable input onto L4E/L4I (the test-only tasks' network)."""
    return cp.ColumnNetwork(params or cp.load_preset("dl25"), {"mt": ("mt", 1)},
                            [cp.Input("mt", learnable=True)], seed=seed)


def sample_constant_target(n, generator, target_hz=3.0):
    """``n`` trials of one constant input (5-15 Hz) with a constant target rate (the test-only tasks' batches)."""
    from colplugin.training import Batch

    rates = 5.0 + 10.0 * torch.rand(n, 1, 1, generator=generator, dtype=torch.float64)
    return Batch(cp.Stimulus([0.0], rates), torch.full((n,), target_hz, dtype=torch.float64), {})


def assert_help_on_every_option():
    """Every option of every ``colplugin`` subcommand has help text; returns the subparsers."""
    import argparse

    from colplugin.cli import build_parser

    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, sub in subparsers.choices.items():
        for action in sub._actions:
            if not isinstance(action, argparse._HelpAction):
                assert action.help, f"colplugin {name} {action.dest} has no help text"
    return subparsers


def numpy_column_rhs(params, N, area_inputs=None):
    """An independent numpy implementation of one column's DMF equations (dL25 Methods)."""
    P = np.array(params["connection_probability"], dtype=float)
    if params["l4e_to_l23e_mode"] == "probability":
        P[0, 2] *= params["l4e_to_l23e_factor"]
    K = np.log(1 - P) / np.log(1 - 1 / np.outer(N, N)) / N[:, None]
    JE = params["J_E"]
    J = np.tile(JE, (8, 8)).astype(float)
    for j in (1, 3, 5, 7):
        J[:, j] = -(N[j - 1] / N[j]) * JE if params["inhibition"] == "layer_ratio" else params["g"] * JE
    if params["l4e_to_l23e_mode"] == "weight":
        J[0, 2] *= params["l4e_to_l23e_factor"]
    W = K * J
    bg = np.asarray(params["K_bg"]) * JE * params["nu_bg"]
    R = params["tau_m"] / (params["C"] * 1e-12) / 1e6
    a, b, d = params["a"], params["b"], params["d"]
    kappa = np.asarray(params["kappa"])
    ext = np.zeros(8) if area_inputs is None else area_inputs

    def f(x):
        y = a * x - b
        return y / (1 - np.exp(-d * y))

    def rhs(t, s):
        V, A = s[:8], s[8:]
        r = f(V - A)
        I_syn = params["tau_s"] * (W @ r + bg + ext)
        return np.concatenate([(-V + R * I_syn) / params["tau_m"], (-A + kappa * r) / params["tau_a"]])

    return rhs, f


def one_euler_step(net, backend, y0, dt=1e-4, dense=None):
    """The state (2P,) after one Euler step of ``dt`` from ``y0`` (1, 2P) with 20 and 10 Hz on the two inputs.

    ``backend``: "torchdiffeq" or "fused" (cp.simulate, dense or sparse coupling: ``dense``), or "brian2"
    (the export, runtime device).
    """
    stim = cp.Stimulus([0.0], [[20.0, 10.0]])
    if backend == "brian2":
        from colplugin.export import to_brian2

        run = to_brian2(net, stim, duration=2 * dt, dt=dt, y0=y0[0], method="euler").run()
        return np.concatenate([run.V[1], run.A[1]])
    with torch.no_grad():
        traj = cp.simulate(net, stim, duration=dt, dt_out=dt, y0=y0,
                           solver=cp.Solver("euler", step=dt, backend=backend, dense=dense))
    return traj.state[1, 0].numpy()
