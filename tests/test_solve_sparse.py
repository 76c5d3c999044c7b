"""The fused solver on sparse coupling (8 x 8 blocks + edge list) against dense fused and torchdiffeq."""

import numpy as np
import pytest
import torch

import colplugin as cp
import colplugin.field as cf


def _net(dl25, seed=0, learnable_input=True):
    """Two areas (3 + 2 MT columns): learnable input, lateral and feedforward edges."""
    return cp.ColumnNetwork(dl25, {"a": ("mt", 3), "b": ("mt", 2)},
                            [cp.Input("a", learnable=learnable_input, jitter=0.1), cp.Lateral("a", init=20.0),
                             cp.Feedforward("a", "b", init=10.0)], seed=seed)


def _stim():
    rates = np.array([[[0, 0, 0], [15, 5, 3], [0, 0, 0]], [[0, 0, 0], [2, 30, 1], [10, 10, 10]]], float)
    return cp.Stimulus([0.0, 0.0203, 0.05], rates)


def _run(net, solver, duration=0.08):
    for p in net.parameters():
        p.grad = None
    y0 = net.initial_state(2)
    y0[:, 0] = 2.0
    y0.requires_grad_()
    traj = cp.simulate(net, _stim(), duration, dt_out=0.005, solver=solver, y0=y0)
    ((traj.rate ** 2).mean() + traj.V[-1].sum() * 1e-3).backward()
    return traj.state.detach(), [p.grad.clone() for p in net.parameters() if p.grad is not None] + [y0.grad.clone()]


@pytest.mark.parametrize("edge_product", cf.EDGE_PRODUCTS)
def test_sparse_fused_matches_dense_fused_and_torchdiffeq(dl25, edge_product, monkeypatch):
    """States to 1e-10 and gradients (edge weights, input weights, y0) to 1e-9 relative, rk4."""
    monkeypatch.setattr(cf, "EDGE_PRODUCT", edge_product)
    net = _net(dl25)
    ref_s, ref_g = _run(net, cp.Solver("rk4", step=1e-3, dense=True))  # autograd through torchdiffeq
    dense_s, dense_g = _run(net, cp.Solver("rk4", step=1e-3, backend="fused", dense=True))
    s, g = _run(net, cp.Solver("rk4", step=1e-3, backend="fused", dense=False))
    assert len(g) == len(ref_g) == 3  # recurrent and input weights, y0
    for other in (ref_s, dense_s):
        torch.testing.assert_close(s, other, rtol=1e-12, atol=1e-10)
    for a, b, c in zip(g, dense_g, ref_g):
        assert float(c.norm()) > 0
        torch.testing.assert_close(a, c, rtol=1e-9, atol=1e-13)
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-13)


def test_sparse_dopri5_matches_dense_dopri5(dl25):
    """The adaptive solve takes the same steps on both couplings (errors differ by rounding only)."""
    net = _net(dl25)
    solver = dict(method="dopri5", rtol=1e-7, atol=1e-9, backend="fused")
    s_d, g_d = _run(net, cp.Solver(dense=True, **solver))
    s_s, g_s = _run(net, cp.Solver(dense=False, **solver))
    torch.testing.assert_close(s_s, s_d, rtol=1e-10, atol=1e-10)
    for a, b in zip(g_s, g_d):
        torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-12)


def test_sparse_gradcheck(dl25):
    """float64 gradcheck of the sparse fused backward pass (rk4, dopri5): edge and input weights."""
    net = _net(dl25)
    rec, inp = net.rec_theta.detach().clone(), net.inp_theta.detach().clone()
    del net.rec_theta, net.inp_theta
    stim = cp.Stimulus([0.0, 0.004], [[0, 0, 0], [20, 5, 12]])
    for solver in (cp.Solver("rk4", step=1e-3, backend="fused", dense=False),
                   cp.Solver("dopri5", backend="fused", dense=False)):
        def output(r, i, solver=solver):
            net.rec_theta, net.inp_theta = r, i
            return cp.simulate(net, stim, duration=0.008, dt_out=0.004, solver=solver).rate[1:]

        assert torch.autograd.gradcheck(output, (rec.clone().requires_grad_(), inp.clone().requires_grad_()))


def test_sparse_operators_jacobian_products_match_autograd(dl25):
    net = _net(dl25)
    u = torch.tensor([[[20.0, 5.0, 7.0]]], dtype=torch.float64)
    field = net.field(u, dense=False)
    ops = field.fused()
    assert isinstance(ops, cf.SparseFusedOperators)
    gen = torch.Generator().manual_seed(0)
    y = 10 * torch.rand(3, 2 * field.P, generator=gen, dtype=torch.float64) - 2
    v, q = (torch.randn(3, 2 * field.P, generator=gen, dtype=torch.float64) for _ in range(2))
    with torch.no_grad():
        k = torch.empty_like(y)
        w, g = ops.stage(y, ops.drive[:, 0], k)
        torch.testing.assert_close(k, field(y, 0), rtol=1e-13, atol=1e-9)
        S = ops.slope(w, g)
        jvp, vjp = ops.jvp(v, S), ops.vjp(q, S, torch.empty_like(q))
    J = torch.stack([torch.autograd.functional.jacobian(lambda z: field(z.unsqueeze(0), 0)[0], yb) for yb in y])
    torch.testing.assert_close(jvp, torch.einsum("bij,bj->bi", J, v), rtol=1e-10, atol=1e-9)
    torch.testing.assert_close(vjp, torch.einsum("bij,bi->bj", J, q), rtol=1e-10, atol=1e-9)


def test_sparse_memory_grows_with_connections(dl25):
    """64 columns forced sparse: no tensor of the operators has P x P entries."""
    n = 64
    pairs = np.array([(s, (s + k) % n) for s in range(n) for k in (1, 2, 3)])
    net = cp.ColumnNetwork(dl25, {"a": cp.Area("mt", n, split=False)},
                           [cp.Input("a", to="all"), cp.Lateral("a", columns=pairs, self_excitation=False)])
    assert not net.field().dense  # above DENSE_MAX_POPULATIONS: sparse by default
    ops = net.field(torch.full((1, 1, 1), 20.0, dtype=torch.float64)).fused()
    P = 8 * n
    sizes = [t.numel() for t in vars(ops).values() if isinstance(t, torch.Tensor)]
    sizes += [t.numel() for group in (ops.blocks, ops.w_edges, ops.rates) for t in group if t is not None]
    assert max(sizes) <= 2 * P < P * P // 8


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("edge_product", cf.EDGE_PRODUCTS)
def test_sparse_fused_on_cuda_matches_cpu(dl25, edge_product, monkeypatch):
    """The sparse fused solve and its backward pass on CUDA give the CPU numbers (float64)."""
    monkeypatch.setattr(cf, "EDGE_PRODUCT", edge_product)
    solver = cp.Solver("dopri5", rtol=1e-7, atol=1e-9, backend="fused", dense=False)
    cpu_s, cpu_g = _run(_net(dl25), solver)
    gpu_s, gpu_g = _run(_net(dl25).to("cuda"), solver)
    torch.testing.assert_close(gpu_s.cpu(), cpu_s, rtol=1e-9, atol=1e-9)
    for a, b in zip(gpu_g, cpu_g):
        torch.testing.assert_close(a.cpu(), b, rtol=1e-6, atol=1e-12)
