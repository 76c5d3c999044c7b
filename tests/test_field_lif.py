"""The LIF mean-field column (Siegert transfer) in the Field: fixed points, variance, solvers, gradients.

Oracles: the INM-6 Neuronal Network Meanfield Toolbox (nnmt 1.3.0) for the PD14 column's
self-consistent rates, mean and white-noise sigma (``tests/data/nnmt_pd14_lif.json``, made by
``validation/nnmt_fixed_point.py`` in an environment of its own); hand calculations from the
in-degrees and strengths of :mod:`colplugin.column` for the variance weights.
"""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import colplugin as cp
from colplugin.column import column_sizes, in_degrees, connection_probability, synaptic_strengths
from colplugin.solve.fixed_points import resting_state

from conftest import two_column_net

NNMT = json.loads((Path(__file__).parent / "data" / "nnmt_pd14_lif.json").read_text())


@pytest.fixture(scope="module")
def pd14_lif_rest():
    net = cp.ColumnNetwork(cp.load_preset("pd14_lif"), {"pd14": ("pd14", 1)})
    return net, resting_state(net)


def test_pd14_lif_fixed_point_equals_nnmt(pd14_lif_rest):
    """Issue: within 1e-3 relative of nnmt's self-consistent rates (measured: about 1e-9)."""
    net, y = pd14_lif_rest
    with torch.no_grad():
        r = net.rates(y)[0].numpy()
    np.testing.assert_allclose(r, NNMT["rates_hz"], rtol=1e-6)


def test_pd14_lif_mean_and_sigma_at_the_fixed_point_equal_nnmt(pd14_lif_rest):
    _, y = pd14_lif_rest
    P = 8
    np.testing.assert_allclose(y[0, :P].numpy(), NNMT["mu_mV"], rtol=1e-6)
    np.testing.assert_allclose(np.sqrt(y[0, 2 * P:].numpy()), NNMT["sigma_mV"], rtol=1e-6)


def test_the_paper_presets_keep_the_dmf():
    for name in ("dl25", "pd14", "pd14_adapting", "dl25_calibrated"):
        net = cp.ColumnNetwork(cp.load_preset(name), {"a": (cp.load_preset(name).default_area, 1)})
        assert isinstance(net.transfer, cp.DMFTransfer) and net.n_state == 2 * net.n_populations
    for name in ("pd14_lif", "dl25_lif"):
        p = cp.load_preset(name)
        net = cp.ColumnNetwork(p, {"a": (p.default_area, 1)})
        assert isinstance(net.transfer, cp.SiegertTransfer) and net.n_state == 3 * net.n_populations
        assert net.transfer.theta == pytest.approx(15.0) and net.transfer.V_r == 0.0
        assert net.transfer.tau_m == p["tau_m"]  # dl25_lif: 20 ms, the twin's


def test_dl25_lif_is_dl25_with_the_siegert_transfer():
    a, b = cp.load_preset("dl25").to_dict(), cp.load_preset("dl25_lif").to_dict()
    differ = {k for k in a if k != "preset" and a[k] != b[k]}
    assert differ == {"transfer"}


def test_variance_weights_by_hand():
    """dS/dt's coupling: 2 (R tau_s / tau_m)^2 K <J^2> from the column's K and J; edges |W| J_E (1 + cv^2)."""
    p = cp.load_preset("dl25_lif")
    cv2 = 1 + p["J_rel_sd"] ** 2
    gain = 2 * (p.R * p["tau_s"] / p["tau_m"]) ** 2  # mV^2/s per nA^2 Hz
    N = column_sizes(p, "mt", 2, True)
    K, J = np.asarray(in_degrees(connection_probability(p), N)), np.asarray(synaptic_strengths(p, N))
    alone = cp.ColumnNetwork(p, {"mt": ("mt", 2)}, [cp.Input("mt")]).field(dense=True)
    Wt0 = alone.plans["S"].Wt.detach().numpy()  # [source, target]
    for c in (0, 8):
        np.testing.assert_allclose(Wt0[c:c + 8, c:c + 8].T, gain * K * J ** 2 * cv2, rtol=1e-12)
    f = two_column_net(p).field(dense=True)  # + learnable lateral edges (and L2/3E self-excitation)
    extra = f.plans["S"].Wt.detach().numpy() - Wt0
    expected = np.zeros_like(extra)
    for s_, t_, w_ in zip(*(x.detach().numpy() for x in f.edges)):
        expected[s_, t_] += gain * abs(w_) * p["J_E"] * cv2
    assert expected.max() > 0
    np.testing.assert_allclose(extra, expected, rtol=1e-12, atol=1e-12)
    # background: K_bg J_E^2 nu_bg, no spread (Poisson sources of amplitude J_E)
    S0 = f.initial_variance().numpy()
    np.testing.assert_allclose(S0[:8], p["tau_m"] / 2 * gain * np.asarray(p["K_bg"]) * p["J_E"] ** 2 * p["nu_bg"],
                               rtol=1e-12)
    # a DC background adds no variance
    dc = two_column_net(p.with_overrides({"background": "dc"}))
    assert float(dc.field().initial_variance().abs().max()) == 0.0


def test_stimulus_variance_uses_the_input_weights():
    """An input channel of weight W_in = K_in J_E adds W_in J_E u (Poisson sources of amplitude J_E) to the shot."""
    p = cp.load_preset("dl25_lif")
    net = two_column_net(p)  # Input("mt"): channel 0 onto column 0's L4E/L4I, channel 1 onto column 1's
    S_in = net.field(cp.Stimulus([0.0], [[20.0, 0.0]]).rates).plans["S"].drive[0, 0].detach().numpy()
    S_rest = net.field().plans["S"].drive.reshape(-1).detach().numpy()
    gain = 2 * (p.R * p["tau_s"] / p["tau_m"]) ** 2
    K_in = np.asarray(p["K_in"])  # onto L4E, L4I
    expected = np.zeros(net.n_populations)
    expected[2:4] = gain * K_in * p["J_E"] ** 2 * 20.0
    np.testing.assert_allclose(S_in - S_rest, expected, rtol=1e-12, atol=1e-12)


def test_dense_and_sparse_fields_agree():
    net = two_column_net(cp.load_preset("dl25_lif"))
    y = net.initial_state(3)
    y[:, :net.n_populations] = torch.linspace(0.0, 18.0, net.n_populations, dtype=y.dtype)
    u = torch.tensor([[5.0, 20.0]] * 3, dtype=y.dtype)
    torch.testing.assert_close(net.vector_field(y, u, dense=True), net.vector_field(y, u, dense=False),
                               rtol=1e-12, atol=1e-9)


def test_default_solver_announces_torchdiffeq_and_fused_is_refused():
    import importlib

    sim = importlib.import_module("colplugin.solve.simulate")
    net = two_column_net(cp.load_preset("dl25_lif"))
    stim = cp.Stimulus([0.0], [[10.0, 10.0]])
    sim._ANNOUNCED.discard("siegert")
    with pytest.warns(UserWarning, match="torchdiffeq"):
        a = cp.simulate(net, stim, duration=0.05)
    b = cp.simulate(net, stim, duration=0.05, solver=cp.Solver("dopri5", rtol=1e-6, atol=1e-6,
                                                                 backend="torchdiffeq"))
    torch.testing.assert_close(a.state, b.state, rtol=0, atol=0)
    with pytest.raises(ValueError, match="torchdiffeq"):
        cp.simulate(net, stim, duration=0.05, solver=cp.Solver("rk4", backend="fused"))
    with pytest.raises(ValueError, match=r"\[V, A, S\]"):
        cp.simulate(net, stim, duration=0.05, y0=torch.zeros(2 * net.n_populations))
    assert a.S.shape == a.V.shape and float(a.S.detach().min()) > 0


def test_adjoint_and_direct_gradients_agree():
    net = two_column_net(cp.load_preset("dl25_lif"))
    stim = cp.Stimulus([0.0, 0.02], [[0.0, 0.0], [20.0, 10.0]])
    grads = []
    for gradient in (cp.Direct(), cp.Adjoint(checkpoint=1e-3, rtol=1e-9, atol=1e-9)):
        net.zero_grad()
        traj = cp.simulate(net, stim, duration=0.05, dt_out=5e-3, gradient=gradient,
                           solver=cp.Solver("dopri5", rtol=1e-9, atol=1e-9, backend="torchdiffeq"))
        traj.rate[-1, 0, 0].backward()
        grads.append(net.rec_theta.grad.clone())
    assert float(grads[0].abs().max()) > 0
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-10)


def test_field_gradcheck_one_column():
    net = cp.ColumnNetwork(cp.load_preset("dl25_lif"), {"mt": ("mt", 1)}, [cp.Input("mt", learnable=True)])
    y = net.initial_state(2)
    y[:, :8] = torch.tensor([12.0, 14.0, 16.0, 13.0, 15.0, 11.0, 17.0, 14.5], dtype=y.dtype)
    y.requires_grad_()
    u = torch.tensor([[5.0], [20.0]], dtype=y.dtype)
    assert torch.autograd.gradcheck(lambda z: net.vector_field(z, u), (y,))


def test_spec_round_trip_keeps_the_transfer(tmp_path):
    net = two_column_net(cp.load_preset("dl25_lif"))
    again = cp.ColumnNetwork.from_spec(json.loads(json.dumps(net.spec())))
    assert again.transfer == net.transfer
    y = net.initial_state(1)
    torch.testing.assert_close(again.vector_field(y), net.vector_field(y))


def test_a_saturation_is_refused_for_the_lif_column():
    with pytest.raises(cp.ParameterError, match="r_max"):
        cp.load_preset("dl25_lif", overrides={"r_max": [100.0] + [math.inf] * 7})
    net = two_column_net(cp.load_preset("dl25_lif"))  # a field built by hand is refused too
    f = net.field()
    constants = {k: getattr(f, k) for k in cp.field.BRIAN2_CONSTANTS}
    with pytest.raises(ValueError, match="r_max"):
        cp.field.Field(constants, net.kappa, net.W_bg, net.W_intra, f.layout, transfer=net.transfer,
                       variance=net.input_variance(), r_max=torch.full((16,), 50.0, dtype=torch.float64))


def test_resume_refuses_a_checkpoint_of_another_transfer(tmp_path):
    from colplugin.tasks import XOR
    from colplugin.training.trainer import CheckpointError, load_checkpoint, save_checkpoint

    dmf = two_column_net(cp.load_preset("dl25"))
    save_checkpoint(tmp_path / "ck.pt", dmf, XOR(), update=1)
    with pytest.raises(CheckpointError, match="transfer"):
        load_checkpoint(tmp_path / "ck.pt", two_column_net(cp.load_preset("dl25_lif")))
    assert load_checkpoint(tmp_path / "ck.pt", two_column_net(cp.load_preset("dl25")))["update"] == 1


def test_old_parameter_files_resume():
    """A params.json written before the transfer existed equals today's dl25 in its values."""
    d = cp.load_preset("dl25").to_dict()
    del d["transfer"], d["sigma_floor"]
    old = cp.Params.from_dict(d)
    assert old["transfer"] == "dmf" and old.same_values(cp.load_preset("dl25"))
    assert old != cp.load_preset("dl25")  # the sources of the filled-in entries differ
    assert not old.same_values(cp.load_preset("dl25_lif"))


def test_multapse_variance_of_a_downscaled_twin_by_hand():
    """k K synapses from round(N scale) sources: a source makes Poisson(lam) synapses, lam = k K / (N scale),
    and 1 + cv^2 becomes 1 + cv^2 + lam (coincident spikes of one source's synapses)."""
    p = cp.load_preset("pd14_lif")
    net = cp.ColumnNetwork(p, {"pd14": ("pd14", 1)})
    full = net.input_variance().blocks[0].numpy()
    net.multapses = (0.1, 0.5)
    scaled = net.input_variance().blocks[0].numpy()
    N = np.asarray(p.area_sizes("pd14"), dtype=float)
    K = np.asarray(in_degrees(connection_probability(p), N))
    lam = 0.5 * K / np.round(N * 0.1)[None, :]
    cv2 = 1 + p["J_rel_sd"] ** 2
    np.testing.assert_allclose(scaled, full * (cv2 + lam) / cv2, rtol=1e-12)
    assert lam[6, 7] == pytest.approx(0.5 * K[6, 7] / 295)  # L6E <- L6I: 295 neurons at scale 0.1
    net.multapses = (0.0, 0.5)
    with pytest.raises(ValueError, match="multapses"):
        net.input_variance()
