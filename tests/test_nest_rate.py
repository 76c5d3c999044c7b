"""NEST's siegert_neuron as a second oracle of the LIF mean-field fixed points (colplugin.export.nest_rate)."""

import warnings

import numpy as np
import pytest
import torch

import colplugin as cp
from colplugin.export.nest_rate import rate_factors, to_nest_rate
from colplugin.solve.fixed_points import jacobian, resting_state

U = [5.0, 10.0]  # Hz: the constant input of the two-column network


def _nest():
    try:
        import nest  # noqa: F401
    except ImportError:
        pytest.skip("NEST (nest-simulator) is not installed")


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():  # the torch solve says it integrates the Siegert field with torchdiffeq
        warnings.filterwarnings("ignore", message="the fused solver implements the DMF transfer")
        yield


def _column():
    return cp.ColumnNetwork(cp.load_preset("pd14_lif"), {"pd14": ("pd14", 1)})


def _two_columns():
    return cp.ColumnNetwork(cp.load_preset("pd14_lif"), {"a": ("pd14", 2)},
                            [cp.Input("a"), cp.Lateral("a", init=20.0)])


@pytest.fixture(scope="module")
def column():
    net = _column()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        y = resting_state(net)
    return net, y


@pytest.fixture(scope="module")
def two_columns():
    net = _two_columns()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        y = resting_state(net, u=U)
    return net, y


def _targets(net, y, u=None):
    """colplugin's V and S in equilibrium with the rates of the state y: V + tau_m dV/dt, S + tau_m/2 dS/dt."""
    P = net.n_populations
    uu = None if u is None else torch.tensor([u], dtype=torch.float64)
    with torch.no_grad():
        d = net.vector_field(y, uu)[0]
        tau_m = net.transfer.tau_m
        return (y[0, :P] + tau_m * d[:P]).numpy(), (y[0, 2 * P:] + tau_m / 2 * d[2 * P:]).numpy()


def _off_fixed_point(net, y):
    """A state away from the fixed point: V shifted by -1..+2 mV, S scaled by 0.7..1.3."""
    P = net.n_populations
    z = y.clone()
    z[0, :P] += torch.linspace(-1.0, 2.0, P, dtype=torch.float64)
    z[0, 2 * P:] *= torch.linspace(0.7, 1.3, P, dtype=torch.float64)
    with torch.no_grad():
        return z, net.rates(z)[0].numpy()


def test_factors_make_nest_mu_and_sigma_colplugin_V_and_S(two_columns):
    """At any rates, the drift and diffusion sums NEST forms are colplugin's V and S (no NEST needed)."""
    net, y = two_columns
    z, r = _off_fixed_point(net, y)
    V, S = _targets(net, z, U)
    mu, s2 = rate_factors(net).statistics(r, U)
    np.testing.assert_allclose(mu, V, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(s2, S, rtol=1e-12)


def test_factors_carry_the_calibration_offset_and_gain():
    """V_offset rides on the background relay's drift factor, input_gain on every factor (g and g^2)."""
    p = cp.load_preset("pd14_lif", overrides={"V_offset": [0.5, -0.3, 0.2, 0.0, 0.1, 0.0, -0.2, 0.3],
                                              "input_gain": [1.1, 0.9, 1.0, 1.05, 0.95, 1.0, 1.02, 0.98]})
    net = cp.ColumnNetwork(p, {"a": ("pd14", 2)}, [cp.Input("a"), cp.Lateral("a", init=20.0)])
    y = net.initial_state()
    y[0, :16] += torch.linspace(2.0, 8.0, 16, dtype=torch.float64)
    with torch.no_grad():
        r = net.rates(y)[0].numpy()
    V, S = _targets(net, y, U)
    mu, s2 = rate_factors(net).statistics(r, U)
    np.testing.assert_allclose(mu, V, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(s2, S, rtol=1e-12)


def test_one_nest_step_is_colplugins_siegert_of_the_same_statistics(two_columns):
    """With tau << h one NEST step gives Phi(mu(r0), sigma(r0)): NEST's Siegert of its own connection sums
    equals colplugin's transfer of V, S (same threshold convention, Fourcaud-Brunel shift, units)."""
    _nest()
    net, y = two_columns
    z, r0 = _off_fixed_point(net, y)
    V, S = _targets(net, z, U)
    run = to_nest_rate(net, cp.Stimulus([0.0], [U]), tau=1e-7, rate0=r0)
    mu, s2 = run.statistics()  # from NEST's connections (GetConnections) and its nodes' rates
    np.testing.assert_allclose(mu, V, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(s2, S, rtol=1e-12)
    _, R = run.run(1e-4)
    expected = net.transfer.value(torch.tensor(V), torch.zeros(len(V), dtype=torch.float64), torch.tensor(S))
    rel = np.max(np.abs(R[1] / expected.numpy() - 1))
    assert rel < 1e-9, rel  # measured about 1e-14 (NEST: GSL quadrature to 1.5e-8; colplugin: 1e-12)


def test_pd14_column_relaxes_to_the_torch_fixed_point(column):
    _nest()
    net, y = column
    r = net.rates(y)[0].detach().numpy()
    t, R = to_nest_rate(net).run(0.5)
    assert R.shape == (5001, 8) and t[0] == 0.0 and abs(t[-1] - 0.5) < 1e-12
    rel = np.max(np.abs(R[-1] / r - 1))
    print(f"pd14 column: NEST vs torch fixed point, max relative difference {rel:.2e}")
    assert rel < 1e-4  # measured 7e-15


def test_two_columns_with_input_relax_to_the_torch_fixed_point(two_columns):
    _nest()
    net, y = two_columns
    r = net.rates(y)[0].detach().numpy()
    run = to_nest_rate(net, cp.Stimulus([0.0], [U]))
    assert len(run.populations) == 16 and len(run.inputs) == 2
    _, R = run.run(0.5)
    rel = np.max(np.abs(R[-1] / r - 1))
    print(f"2 columns, u = {U} Hz: NEST vs torch fixed point, max relative difference {rel:.2e}")
    assert rel < 1e-4  # measured 1.5e-14


def test_nest_transient_is_the_exponential_euler_recursion_of_the_rate(two_columns):
    """NEST: r(t + h) = e^(-h/tau) r + (1 - e^(-h/tau)) Phi(mu(r), sigma(r)), the stimulus switching on time."""
    _nest()
    net, _ = two_columns
    h, tau, t_on = 1e-4, 0.01, 0.005
    stim = cp.Stimulus([0.0, t_on], [[0.0, 0.0], U])
    t, R = to_nest_rate(net, stim, tau=tau).run(0.012)
    fac, tr = rate_factors(net), net.transfer
    p1, p2 = np.exp(-h / tau), -np.expm1(-h / tau)

    def recursion(u_on):
        r = np.zeros(net.n_populations)
        out = [r]
        for n in range(len(t) - 1):
            mu, s2 = fac.statistics(r, [0.0, 0.0] if n * h < t_on - h / 2 else u_on)
            phi = tr.value(torch.tensor(mu), torch.zeros(len(mu), dtype=torch.float64), torch.tensor(s2)).numpy()
            r = p1 * r + p2 * phi
            out.append(r)
        return np.array(out)

    ref, without = recursion(U), recursion([0.0, 0.0])
    assert np.max(np.abs(R - ref)) < 1e-9 * np.max(ref)  # measured about 1e-14
    on, l4e = int(round(t_on / h)), [2, 10]
    np.testing.assert_allclose(R[on], without[on], rtol=1e-12)  # the input acts from t_on on, not before
    assert np.all(R[on + 1, l4e] - without[on + 1, l4e] > 1e-3)  # L4E of both columns answer it one step later


def test_linearised_dynamics_differ_as_documented(column):
    """NEST's Jacobian (-I + Phi' M) / tau_m and colplugin's T^-1 (-I + M Phi'), T = diag(tau_m, tau_m / 2):
    the same fixed point, other time scales; with T = tau_m I they would share NEST's spectrum."""
    net, y = column
    P, tr = net.n_populations, net.transfer
    fac = rate_factors(net)
    V = y[0, :P].clone().requires_grad_()
    S = y[0, 2 * P:].clone().requires_grad_()
    r = tr.rate(V, torch.zeros(P, dtype=torch.float64), S)
    dphi = torch.stack([torch.cat(torch.autograd.grad(r[i], (V, S), retain_graph=True)) for i in range(P)]).numpy()
    D, D2 = np.zeros((P, P)), np.zeros((P, P))
    np.add.at(D, (fac.target, fac.source), fac.drift)
    np.add.at(D2, (fac.target, fac.source), fac.diffusion)
    M = np.vstack([D, D2])
    T = np.diag(np.r_[np.full(P, tr.tau_m), np.full(P, tr.tau_m / 2)])
    J_colplugin = np.linalg.inv(T) @ (-np.eye(2 * P) + M @ dphi)
    keep = np.r_[0:P, 2 * P:3 * P]  # [V, S]; A only decays (kappa = 0)
    J_torch = jacobian(net, y).numpy()[np.ix_(keep, keep)]
    assert np.max(np.abs(J_torch - J_colplugin)) < 1e-9 * np.max(np.abs(J_torch))
    e_nest = np.sort_complex(np.linalg.eigvals((-np.eye(P) + dphi @ M) / tr.tau_m))
    e_same_tau = np.linalg.eigvals((-np.eye(2 * P) + M @ dphi) / tr.tau_m)
    extra = np.isclose(e_same_tau, -1 / tr.tau_m, rtol=1e-6)
    assert extra.sum() == P
    np.testing.assert_allclose(np.sort_complex(e_same_tau[~extra]), e_nest, rtol=1e-8)
    e_col = np.linalg.eigvals(J_colplugin)
    assert np.all(e_nest.real < 0) and np.all(e_col.real < 0)  # both stable
    slowest = lambda e: e[np.argmax(e.real)].real  # noqa: E731
    assert abs(slowest(e_col) - slowest(e_nest)) > 0.5  # 1/s: -87.4 (colplugin) vs -88.2 (NEST)


def test_nest_rate_is_zero_beyond_six_sigma():
    """NEST's siegert_neuron returns 0 where theta - mu > 6 sigma; colplugin's rate is tiny but positive."""
    _nest()
    net = _column()
    tr = net.transfer
    r0 = np.array([0.0, 20.0] * 4)  # inhibitory populations at 20 Hz push every mean 7 to 17 sigma below
    run = to_nest_rate(net, tau=1e-7, rate0=r0)
    mu, s2 = run.statistics()
    _, R = run.run(1e-4)
    z = (tr.theta - mu) / np.sqrt(s2)
    assert np.all(z > 6) and np.all(z < 20)
    colplugin = tr.value(torch.tensor(mu), torch.zeros(8, dtype=torch.float64), torch.tensor(s2)).numpy()
    assert np.all(R[1] == 0.0) and np.all(colplugin > 0)


def test_refuses_adaptation_the_dmf_and_what_nest_cannot_express():
    with pytest.raises(ValueError, match="no threshold adaptation.*kappa > 0"):
        to_nest_rate(cp.ColumnNetwork(cp.load_preset("dl25_lif"), {"c": ("mt", 1)}))
    with pytest.raises(ValueError, match="Siegert transfer.*'dmf'"):
        to_nest_rate(cp.ColumnNetwork(cp.load_preset("dl25"), {"c": ("mt", 1)}))
    with pytest.raises(ValueError, match="sigma floor.*Poisson background"):
        to_nest_rate(cp.ColumnNetwork(cp.load_preset("pd14_lif", overrides={"background": "dc"}),
                                      {"c": ("pd14", 1)}))
    with pytest.raises(ValueError, match="not a multiple of NEST's resolution"):
        to_nest_rate(_two_columns(), cp.Stimulus([0.0, 0.00005], [[0.0, 0.0], U]))
    with pytest.raises(ValueError, match="input channels"):
        to_nest_rate(_column(), cp.Stimulus([0.0], [U]))
