"""A transfer is one object: a test-only transfer moves torch, the solver choice and Brian2 together.

The test-only transfer is a softplus, ``r = g w log(1 + exp((V - A - x0) / w))``: no backend
knows it, so every view must take it from the object. Its rates are computed by hand here
(numpy), the field's dV/dt from them by hand (``-V / tau_m + R tau_s / tau_m (W r + W_bg nu_bg)``).
"""

import math

import numpy as np
import pytest
import torch

import colplugin as cp
from colplugin.transfers import DMFTransfer, SiegertTransfer, Transfer, transfer_for

G, X0, W = 2.0, 12.0, 3.0  # Hz/mV, mV, mV


class Softplus(Transfer):
    name = "softplus_test"
    needs_variance = False
    fused = False

    def rate(self, V, A, S=None):
        return G * W * torch.nn.functional.softplus((V - A - X0) / W)

    def constants(self):
        return {"g": G, "x0": X0, "w": W}

    def brian2_rate(self):
        return ("r = g_sp * w_sp * log(1 + exp((V - A - x0_sp) / w_sp)) : Hz",)

    def brian2_namespace(self):
        import brian2 as b2

        return {"g_sp": G * b2.Hz / b2.mV, "x0_sp": X0 * b2.mV, "w_sp": W * b2.mV}


def _net():
    net = cp.ColumnNetwork(cp.load_preset("dl25"), {"mt": ("mt", 1)}, [cp.Input("mt")])
    net.transfer = Softplus()
    return net


def _y0(net):
    y = net.initial_state(1)
    y[0, :8] = torch.linspace(4.0, 20.0, 8, dtype=y.dtype)
    y[0, 8:] = 0.5
    return y


def test_the_field_uses_the_transfer_object():
    net = _net()
    p = net.params
    y = _y0(net)
    V, A = y[0, :8].numpy(), y[0, 8:].numpy()
    r = G * W * np.log1p(np.exp((V - A - X0) / W))
    W_intra = net.W_intra[0].numpy()
    dV = -V / p["tau_m"] + p.R * p["tau_s"] / p["tau_m"] * (W_intra @ r + net.W_bg.numpy() * p["nu_bg"])
    dA = (-A + np.asarray(p["kappa"]) * r) / p["tau_a"]
    with torch.no_grad():
        got = net.vector_field(y)[0].numpy()
        np.testing.assert_allclose(net.rates(y)[0].numpy(), r, rtol=1e-13)
    np.testing.assert_allclose(got, np.concatenate([dV, dA]), rtol=1e-11, atol=1e-9)


def test_a_transfer_the_fused_loop_lacks_runs_on_torchdiffeq_announced():
    import importlib

    sim = importlib.import_module("colplugin.solve.simulate")
    net = _net()
    stim = cp.Stimulus([0.0], [[10.0]])
    sim._ANNOUNCED.discard("softplus_test")
    with pytest.warns(UserWarning, match="softplus_test"):
        traj = cp.simulate(net, stim, duration=0.02, y0=_y0(net))
    assert traj.solver.backend == "torchdiffeq"
    ref = cp.simulate(net, stim, duration=0.02, y0=_y0(net), solver=cp.Solver("rk4", step=1e-5))
    torch.testing.assert_close(traj.rate, ref.rate, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="softplus_test"):
        net.field().fused()


@pytest.mark.brian2
def test_brian2_follows_the_transfer_exactly():
    from colplugin.export import to_brian2

    net = _net()
    stim = cp.Stimulus([0.0, 0.0125], [[0.0], [15.0]])
    y0 = _y0(net)
    run = to_brian2(net, stim, duration=0.025, dt=1e-4, y0=y0[0], method="euler").run()
    with torch.no_grad():
        traj = cp.simulate(net, stim, duration=0.025, dt_out=1e-4, y0=y0, solver=cp.Solver("euler", step=1e-4))
    rt = traj.rate[: len(run.t), 0].numpy()
    assert np.max(np.abs(run.rate - rt) / rt) < 1e-11


def test_the_dmf_transfer_is_the_papers_f():
    """f(b/a) = 1/d, f(0) = 0.1585 Hz, f(15 mV) = 28.35 Hz, f(20 mV) = 102.19 Hz.

    Computed by hand from the DMF's f (dL25 Methods) with a = 48, b = 981, d = 8.9e-3 s.
    """
    f = DMFTransfer(48.0, 981.0, 0.0089)
    x = torch.tensor([981.0 / 48.0, 0.0, 15.0, 20.0], dtype=torch.float64)
    r = f.rate(x, torch.zeros_like(x)).numpy()
    np.testing.assert_allclose(r, [1 / 0.0089, 0.1585, 28.35, 102.19], rtol=2e-4)
    np.testing.assert_allclose(f.numpy(x.numpy(), 0.0), r, rtol=1e-13)


def test_transfer_for_reads_the_parameters():
    assert transfer_for(cp.load_preset("dl25")) == DMFTransfer(48.0, 981.0, 0.0089)
    t = transfer_for(cp.load_preset("pd14_lif", overrides={"sigma_floor": "0.5 mV"}))
    assert isinstance(t, SiegertTransfer) and t.sigma_floor == 0.5 and t.t_ref == 0.002
    assert t.shift == pytest.approx(math.sqrt(0.05) * 1.4603545088095868 / math.sqrt(2))
    with pytest.raises(cp.ParameterError, match="transfer"):
        cp.load_preset("dl25", overrides={"transfer": "lif"})
    with pytest.raises(ValueError, match="threshold"):
        SiegertTransfer(theta=0.0, V_r=0.0, tau_m=0.01, t_ref=0.002, tau_s=0.0005)


def test_transfer_in_pieces_keeps_type_promotion():
    """f of a trajectory-sized tensor (evaluated in pieces, or by the compiled kernel's loop) has the
    dtype of a small one's and its numbers to a few ulp."""
    from colplugin.transfers import DMFTransfer, transfer_value

    for n in (1000, 100_000):
        assert transfer_value(torch.arange(n), 0.3, 0.5, 0.1).dtype == torch.get_default_dtype()
        V = torch.linspace(-5, 5, n, dtype=torch.float32)
        A = torch.zeros(n, dtype=torch.float64)
        assert DMFTransfer(0.3, 0.5, 0.1).rate(V, A).dtype == torch.float64
    x = torch.linspace(-20, 20, 300_100, dtype=torch.float64).reshape(3001, 100)
    small = torch.cat([transfer_value(row, 0.3, 0.5, 0.1) for row in x.unbind(0)]).view_as(x)
    torch.testing.assert_close(transfer_value(x, 0.3, 0.5, 0.1), small, rtol=4e-15, atol=0)
