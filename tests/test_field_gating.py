"""Synaptic gating (Wong & Wang 2006's saturating NMDA gating) on the inter-column projections.

The field's gated terms are checked against hand-written formulas (dG/dt = -G/tau + gamma (1 - G) r;
the inter-column input through G / (gamma tau)), against the ungated field where both must agree
(G / (gamma tau) = r), against Brian2's euler and the standalone script (the same scheme, to
rounding), and for what gating is for: a drive that saturates at 1 / (gamma tau) and outlasts its
source by tau.
"""

import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch

import colplugin as cp
from colplugin.export import export_brian2_script, to_brian2
from colplugin.field import SynapticGating
from colplugin.params import PRESETS, ParameterError, load_preset

TAU, GAMMA = 0.1, 0.641  # Wong & Wang (2006): tau_S = 100 ms, gamma = 0.641


def _gated(params="dl25", **over):
    return load_preset(params).with_overrides({"gating": "inter_column", **over})


def _net(params, init=20.0):
    return cp.ColumnNetwork(params, {"mt": ("mt", 2)}, [cp.Input("mt"), cp.Lateral("mt", init=init)],
                            dtype=torch.float64, seed=0)


def _random_state(net, B=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    P = net.n_populations
    y = torch.rand(B, net.n_state, generator=g, dtype=torch.float64)
    y[:, :P] = 20.0 * y[:, :P] - 2.0  # V in [-2, 18] mV: rates from ~0 to tens of Hz
    y[:, P:2 * P] *= 3.0  # A in [0, 3] mV
    return y


def test_every_shipped_preset_is_ungated():
    for name in PRESETS:
        p = load_preset(name)
        assert p["gating"] == "none"
        net = cp.ColumnNetwork(p, {"mt": ("mt", 1)})
        assert net.gating is None and net.state_variables[:2] == ("V", "A") and "G" not in net.state_variables


def test_gated_terms_are_the_formulas():
    """dG/dt and the gated input, from the field, against the equations written out here."""
    net = _net(_gated())
    P = net.n_populations
    y = _random_state(net)
    u = torch.tensor([[5.0, 0.0], [0.0, 12.0], [3.0, 3.0]], dtype=torch.float64)
    with torch.no_grad():
        dy = net.vector_field(y, u)
        r = net.rates(y)
    G = y[:, 2 * P:]
    torch.testing.assert_close(dy[:, 2 * P:], -G / TAU + GAMMA * (1 - G) * r, rtol=1e-13, atol=1e-13)
    # dV: the ungated network's dV with the inter-column input of r replaced by that of G / (gamma tau)
    ungated = _net(load_preset("dl25"))
    src, tgt, weights = [], [], []
    for name in ("lateral:mt:cross", "lateral:mt:self"):  # every learned projection is gated
        w = net.projection_weights(name)
        src += [net.channel_names.index(s) for s in w["source"]]
        tgt += [net.channel_names.index(t) for t in w["target"]]
        weights += list(w["weight"])
    assert len(src) > 0
    p = net.params
    gain = float(p.R) * float(p["tau_s"]) / float(p["tau_m"])  # mV/s per nA Hz (input_gain 1)
    correction = torch.zeros(3, P, dtype=torch.float64)
    for s, t, wst in zip(src, tgt, weights):
        correction[:, t] += gain * wst * (G[:, s] / (GAMMA * TAU) - r[:, s])
    with torch.no_grad():
        dV_ungated = ungated.vector_field(y[:, :2 * P], u)[:, :P]
    torch.testing.assert_close(dy[:, :P], dV_ungated + correction, rtol=1e-12, atol=1e-9)
    torch.testing.assert_close(dy[:, P:2 * P], ungated.vector_field(y[:, :2 * P], u)[:, P:], rtol=0, atol=0)


def test_dense_and_sparse_gated_fields_agree():
    net = _net(_gated())
    y = _random_state(net)
    rates = torch.tensor([[[5.0, 0.0]], [[0.0, 12.0]], [[3.0, 3.0]]], dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(net.field(rates, dense=True)(y), net.field(rates, dense=False)(y),
                                   rtol=1e-12, atol=1e-10)


def test_gating_saturates_and_outlasts_its_source():
    """Constant rate r: G sits at gamma tau r / (1 + gamma tau r); after the input stops and the rate has
    settled at r', G relaxes to its new equilibrium as exp(-(1/tau + gamma r') t). Integrated by the
    field, compared with the closed forms."""
    net = _net(_gated(), init=1e-6)  # the columns barely couple: each G follows its own column's rate
    stim = cp.Stimulus([0.0, 0.6], [[20.0, 20.0], [0.0, 0.0]])
    with torch.no_grad():
        traj = cp.simulate(net, stim, 0.9, dt_out=1e-3, solver=cp.Solver("dopri5", rtol=1e-9, atol=1e-9))
    assert np.all((traj.G >= 0).numpy()) and np.all((traj.G <= 1).numpy())
    t = traj.t.numpy()
    at = {x: int(round(x / 1e-3)) for x in (0.6, 0.61, 0.65, 0.75)}
    for pop in ("L4E", "L23E"):
        i = net.index("mt", 0, pop)
        G, r = traj.G[:, 0, i].numpy(), traj.rate[:, 0, i].numpy()
        assert t[at[0.6]] == pytest.approx(0.6)
        x = GAMMA * TAU * r[at[0.6]]
        assert G[at[0.6]] == pytest.approx(x / (1 + x), abs=1e-4)  # at equilibrium with its rate
        assert G[at[0.6]] / (GAMMA * TAU) < min(r[at[0.6]], 1 / (GAMMA * TAU))  # the drive saturates
        # 10 ms after the input stops the rate has fallen, the gating has not
        assert r[at[0.61]] < 0.8 * r[at[0.6]] and G[at[0.61]] > 0.95 * G[at[0.6]]
    i = net.index("mt", 0, "L23E")  # its rate settles within 50 ms of the stop
    G, r = traj.G[:, 0, i].numpy(), traj.rate[:, 0, i].numpy()
    r_end = r[at[0.75]]
    assert abs(r[at[0.65]] - r_end) < 0.01 * r_end
    x = GAMMA * TAU * r_end
    g_end = x / (1 + x)
    ratio = (G[at[0.75]] - g_end) / (G[at[0.65]] - g_end)
    assert ratio == pytest.approx(np.exp(-(1 / TAU + GAMMA * r_end) * 0.1), rel=0.02)


def test_brian2_euler_reproduces_the_gated_torch_solve():
    net = _net(_gated())
    stim = cp.Stimulus([0.0, 0.03], [[[0, 0], [15, 5]], [[0, 0], [2, 30]]])
    y0 = net.initial_state(2)
    with torch.no_grad():
        traj = cp.simulate(net, stim, 0.06, dt_out=1e-4, y0=y0, solver=cp.Solver("euler", step=1e-4))
    run = to_brian2(net, stim, 0.06, dt=1e-4, y0=y0, trial=None).run()
    ref = traj.rate.numpy()
    assert run.trial_rates.shape == ref.shape
    np.testing.assert_allclose(run.trial_rates, ref, rtol=1e-11, atol=1e-12)  # measured 1e-14
    np.testing.assert_allclose(run.G.reshape(ref.shape), traj.G.numpy(), rtol=0, atol=1e-13)
    assert float(traj.G.max()) > 0.3  # the gating is exercised, not idle


def test_standalone_script_of_a_gated_network(tmp_path):
    net = _net(_gated())
    stim = cp.Stimulus([0.0, 0.02], [[0, 0], [15, 5]])
    with torch.no_grad():
        traj = cp.simulate(net, stim, 0.04, dt_out=1e-4, solver=cp.Solver("euler", step=1e-4))
    paths = export_brian2_script(net, tmp_path / "model.py", stim, duration=0.04)
    assert "I_gat_post = wg * G_pre" in paths["script"].read_text()
    assert "`wg`" in paths["description"].read_text()
    done = subprocess.run([sys.executable, "-I", str(paths["script"]), "--out", str(tmp_path / "out.npz")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    out = np.load(tmp_path / "out.npz")
    np.testing.assert_allclose(out["rate_Hz"], traj.rate.numpy(), rtol=1e-11, atol=1e-12)
    np.testing.assert_allclose(out["G"], traj.G.numpy(), rtol=0, atol=1e-13)


def test_gradients_of_a_gated_network_direct_and_adjoint_agree():
    net = _net(_gated())
    stim = cp.Stimulus([0.0, 0.02], [[0, 0], [15, 5]])
    grads = []
    for gradient in (cp.Direct(), cp.Adjoint(checkpoint=1e-3)):
        net.zero_grad()
        traj = cp.simulate(net, stim, 0.05, solver=cp.Solver("dopri5", rtol=1e-9, atol=1e-9), gradient=gradient)
        (traj.rate[-1, 0, 0] + traj.G[-1, 0, 8]).backward()
        grads.append(net.rec_theta.grad.clone())
    assert grads[0].abs().max() > 0
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-4, atol=1e-8)


def test_the_fused_solver_hands_a_gated_network_to_torchdiffeq():
    net = _net(_gated())
    stim = cp.Stimulus([0.0], [[5.0, 5.0]])
    with pytest.raises(ValueError, match="synaptic gating"):
        cp.simulate(net, stim, 0.01, solver=cp.Solver("rk4", backend="fused"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        import importlib
        importlib.import_module("colplugin.solve.simulate")._ANNOUNCED.discard("synaptic gating")
        a = cp.simulate(net, stim, 0.02)  # default solver: backend auto
    assert any("synaptic gating" in str(w.message) for w in caught)
    b = cp.simulate(net, stim, 0.02, solver=cp.Solver("dopri5", rtol=1e-6, atol=1e-6, backend="torchdiffeq"))
    torch.testing.assert_close(a.state, b.state, rtol=0, atol=0)


def test_spec_and_checkpoint_keep_the_gating(tmp_path):
    net = _net(_gated(tau_G=0.05))
    again = cp.ColumnNetwork.from_spec(net.spec())
    assert again.gating == SynapticGating(0.05, GAMMA) and again.n_state == 3 * net.n_populations


@pytest.mark.parametrize("over, fragment", [
    ({"transfer": "siegert"}, "DMF transfer"),
    ({"gating": "nmda"}, "gating"),
    ({"tau_G": 0.0}, "tau_G"),
    ({"tau_G": 1e4}, "tau_G"),
])
def test_bad_gating_parameters_are_refused(over, fragment):
    with pytest.raises(ParameterError, match=fragment):
        p = _gated(**over)
        cp.ColumnNetwork(p, {"mt": ("mt", 1)})


def test_synaptic_gating_refuses_bad_constants():
    with pytest.raises(ValueError, match="tau"):
        SynapticGating(tau=-1.0)
    with pytest.raises(ValueError, match="one number"):
        SynapticGating(gamma=torch.ones(3))


def test_a_fixed_step_past_the_gatings_stability_limit_is_an_error():
    """Wong & Wang's gating on the decision task's axes (gamma_G 128.2, tau_G 10 ms) relaxes at ~5000/s at
    40 Hz: rk4 at 1 ms (h lambda ~ 5 > 2.8) leaves [0, 1] and is refused; the adaptive default keeps G in
    [0, 1]. The task's own slow gating (1/0.28 s + 3.6 r) is stable at 1 ms, so its noisy variant runs."""
    from colplugin.tasks.decision import Decision, gating_parameters

    task = Decision(gating=True)
    fast = load_preset("dl25").with_overrides({"gating": "inter_column", **gating_parameters(task)})
    net = task.build_network(fast, seed=0)
    stim = task.stimulus(torch.tensor([[40.0, 0.0]], dtype=torch.float64))
    with torch.no_grad(), pytest.raises(cp.SimulationError, match="gating G left"):
        cp.simulate(net, stim, task.duration, solver=cp.Solver("rk4", step=1e-3, backend="torchdiffeq"))
    with torch.no_grad():
        traj = cp.simulate(net, stim, task.duration, solver=task.solver)
    assert 0 <= float(traj.G.min()) and float(traj.G.max()) <= 1
    noisy = Decision(gating=True, noise_mV=1.0)
    with torch.no_grad():
        traj = cp.simulate(noisy.build_network(seed=0), stim, task.duration, solver=noisy.solver, noise=noisy.noise,
                           generator=torch.Generator().manual_seed(0))
    assert noisy.solver.method == "rk4" and 0 <= float(traj.G.min()) and float(traj.G.max()) <= 1
    with pytest.raises(ValueError, match="--gating"):
        task.build_network(load_preset("dl25_lif"))


def test_a_field_term_the_fused_solver_lacks_goes_to_torchdiffeq():
    from colplugin.field import Field, Term

    class Extra(Field):
        terms = Field.terms + (Term("extra_A", "A", "state_rate", lambda f: 0.5, "0.5 * A * r / second"),)

    class ExtraNet(cp.ColumnNetwork):
        field_class = Extra

    net = ExtraNet(load_preset("dl25"), {"mt": ("mt", 1)}, dtype=torch.float64)
    assert not net.fusable
    with pytest.raises(ValueError, match="extra_A"):
        net.field().fused()
    stim = cp.Stimulus([0.0], [[0.0]] * 1) if net.n_inputs else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = cp.simulate(net, stim, 0.05, solver=cp.Solver("dopri5", rtol=1e-8, atol=1e-8, backend="auto"))
    b = cp.simulate(net, stim, 0.05, solver=cp.Solver("dopri5", rtol=1e-8, atol=1e-8, backend="torchdiffeq"))
    torch.testing.assert_close(a.state, b.state, rtol=0, atol=0)
