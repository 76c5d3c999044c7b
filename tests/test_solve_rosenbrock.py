"""The Rosenbrock-W solve (``Solver("ros34pw2")``): its steps, outputs and exact gradients.

Checked against independent numbers: one step of the scheme in Hairer & Wanner's original
form (coefficients as printed by Rang & Angermann, the W-matrix from autograd's Jacobian
masked to the columns, dense linear solves), replayed on the accepted steps with autograd
for the gradients; a tight torchdiffeq dopri5 solve for the accuracy; autograd for g''.
"""

import numpy as np
import pytest
import torch

import colplugin as cp
from colplugin.field import _g, _saturate_g, _slope_g
from colplugin.solve import compiled
from colplugin.solve.rosenbrock import ROS34PW2, rosenbrock_solve, slope_derivative

from conftest import two_area_net

KERNELS = ["eager"] + (["compiled"] if compiled.kernel_available()[0] else [])

GAMMA = 0.435866521508459
ALPHA = np.zeros((4, 4))
GAM = np.zeros((4, 4))
ALPHA[1, 0] = 0.87173304301691801
ALPHA[2, :2] = 0.84457060015369423, -0.11299064236484185
ALPHA[3, 2] = 1.0
GAM[1, 0] = -0.87173304301691801
GAM[2, :2] = -0.90338057013044082, 0.054180672388095326
GAM[3, :3] = 0.24212380706095346, -1.2232505839045147, 0.54526025533510214
B_SOL = np.array([0.24212380706095346, -1.2232505839045147, 1.5452602553351020, 0.435866521508459])


def _setup(dense: bool, batch: int = 2, saturated: bool = False, dtype=torch.float64):
    params = cp.load_preset("dl25")
    if saturated:  # L2/3E saturates at 20 Hz: the slope and its derivative take the saturated form
        r_max = np.full(8, np.inf)
        r_max[0] = 20.0
        params = params.with_overrides({"r_max": r_max})
    net = two_area_net(params, dtype=dtype)
    rates = torch.tensor([[20.0], [6.0]], dtype=dtype).expand(batch, 2, net.n_inputs).clone()
    rates[1] *= 0.5  # trials of their own drive, two segments each
    y0 = net.initial_state(batch)
    y0[:, 0] = 2.0
    y0.requires_grad_()
    return net, net.field(rates, dense=dense), y0


def _solve(field, y0, rtol=1e-4, kernel="eager"):
    stops, seg = [0.0, 0.03, 0.06], [0, 1]
    out_idx, out_times = [0, 1, -1, -1, 2], [0.0, 0.03, 0.0117, 0.045, 0.06]
    opts = {"rtol": rtol, "atol": rtol, "step": 5e-4, "watch_every": 25,
            "dense_rows": sorted((out_times[j], j) for j, i in enumerate(out_idx) if i == -1)}
    out = rosenbrock_solve(field.fused(), field.layout, field.n, y0, stops, seg, out_idx, "ros34pw2",
                           lambda t, w, s: None, opts, kernel=kernel)
    return out, opts, out_times


def _reference(field, y0, log, out_times):
    """The same steps in the original form: (I - h g A) k_i = h F(Y_i) + h A sum_j g_ij k_j."""
    B, N = y0.shape
    P = N // 2
    col = (torch.arange(N) % P) // field.n
    mask = (col[:, None] == col[None, :]).to(y0.dtype)
    eye = torch.eye(N, dtype=y0.dtype)
    y, states = y0, [(0.0, y0)]
    segments = []
    for t, h, k in log:
        def F(z, k=k):
            return field(z, k)
        J = torch.autograd.functional.jacobian(F, y, create_graph=True)  # (B, N, B, N)
        A = torch.stack([J[b, :, b, :] for b in range(B)]) * mask
        M = eye - h * GAMMA * A
        ks = []
        for i in range(4):
            Y = y + sum(ALPHA[i, j] * ks[j] for j in range(i)) if i else y
            rhs = h * F(Y)
            if i:
                rhs = rhs + h * torch.einsum("bij,bj->bi", A, sum(GAM[i, j] * ks[j] for j in range(i)))
            ks.append(torch.linalg.solve(M, rhs))
        y_new = y + sum(B_SOL[i] * ks[i] for i in range(4))
        segments.append((t, h, y, y_new, F(y), F(y_new)))
        y = y_new
        states.append((t + h, y))
    out = []
    for to in out_times:
        hit = [s for tt, s in states if abs(tt - to) < 1e-12]
        if hit:
            out.append(hit[0])
            continue
        t, h, ya, yb, fa, fb = next(s for s in segments if s[0] < to <= s[0] + s[1] + 1e-15)
        th = (to - t) / h
        out.append((2 * th ** 3 - 3 * th ** 2 + 1) * ya + (th ** 3 - 2 * th ** 2 + th) * h * fa
                   + (-2 * th ** 3 + 3 * th ** 2) * yb + (th ** 3 - th ** 2) * h * fb)
    return torch.stack(out)


def _loss(out):
    P = out.shape[-1] // 2
    return (out[..., :P] ** 2).mean() * 1e-2 + out[2:4, :, P:].sum() * 10.0 + out[-1, :, 3].sum()


CASES = [(True, "eager", False), (False, "eager", False), (True, "eager", True)]
if "compiled" in KERNELS:
    CASES += [(True, "compiled", False), (False, "compiled", False), (False, "compiled", True)]


@pytest.mark.parametrize("dense, kernel, saturated", CASES)
def test_steps_and_gradients_equal_the_original_form(dense, kernel, saturated):
    """Outputs (stops and interpolated times) and the gradients of a loss with respect to every
    learnable weight (input, lateral, feedforward) and the initial state equal those of the
    scheme written in its original form and differentiated by autograd, step for step; with a
    saturating population too."""
    net, field, y0 = _setup(dense, saturated=saturated)
    out, opts, out_times = _solve(field, y0, kernel=kernel)
    assert opts["steps"] > 10 and opts["attempts"] >= opts["steps"]
    params = [p for p in net.parameters() if p.requires_grad]
    g_mine = torch.autograd.grad(_loss(out), params + [y0], retain_graph=True)
    ref = _reference(field, y0, opts["step_log"], out_times)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    g_ref = torch.autograd.grad(_loss(ref), params + [y0])
    for a, b in zip(g_mine, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-10)
        assert float(b.abs().max()) > 0


def test_dense_and_sparse_fields_take_the_same_steps():
    """Lateral self-excitation is an edge of the sparse field and an entry of the dense one; the
    W-matrix holds it in both, so both fields step alike."""
    outs = []
    for dense in (True, False):
        _, field, y0 = _setup(dense)
        out, opts, _ = _solve(field, y0)
        outs.append((out.detach(), opts["step_log"]))
    assert [h for _, h, _ in outs[0][1]] == pytest.approx([h for _, h, _ in outs[1][1]], rel=1e-9)
    torch.testing.assert_close(outs[0][0], outs[1][0], rtol=1e-9, atol=1e-9)


def test_slope_derivative_is_g_second_derivative():
    """dS/dw, S = g'(z) at z = -w (saturated and not), equals autograd's derivative of the slope,
    also across the series branch near z = 0."""
    w = torch.cat([torch.linspace(-30, 30, 301), torch.linspace(-0.02, 0.02, 41)]).double()
    for sat in (None, torch.tensor(0.05, dtype=torch.float64)):
        x = w.clone().requires_grad_()
        g = _saturate_g(_g(x), sat)
        S = _slope_g(x, g, sat)
        (ref,) = torch.autograd.grad(S.sum(), x)
        mask = w.abs() > 1e-3  # autograd of g = w / expm1(w) is unstable at w -> 0; compare by differences there
        torch.testing.assert_close(slope_derivative(w, sat)[mask], ref[mask], rtol=1e-7, atol=1e-10)
        h = 1e-5
        near = w[~mask]
        fd = (_slope_g(near + h, _saturate_g(_g(near + h), sat), sat)
              - _slope_g(near - h, _saturate_g(_g(near - h), sat), sat)) / (2 * h)
        torch.testing.assert_close(slope_derivative(near, sat), fd, rtol=1e-6, atol=1e-9)


def _bench_net(n=6):
    rng = np.random.default_rng(0)
    pairs = np.array([(s, t) for s in range(n) for t in rng.choice(np.delete(np.arange(n), s), 3, replace=False)])
    return cp.ColumnNetwork(cp.load_preset("dl25"), {"a": cp.Area("mt", n, split=False)},
                            [cp.Input("a", to="all"), cp.Lateral("a", columns=pairs, self_excitation=False,
                                                                  init=5.0)], seed=0)


def test_accuracy_follows_the_tolerance():
    """Against torchdiffeq's dopri5 at 1e-11 over 0.3 s (outputs every 10 ms, interpolated): the
    largest state error shrinks with the tolerance and stays within 30 rtol |V| scale."""
    net = _bench_net()
    stim = cp.Stimulus.constant([20.0])
    with torch.no_grad():
        ref = cp.simulate(net, stim, 0.3, dt_out=0.01,
                          solver=cp.Solver("dopri5", rtol=1e-11, atol=1e-11, backend="torchdiffeq")).state
    errs = []
    for tol in (1e-4, 1e-6):
        with torch.no_grad():
            tr = cp.simulate(net, stim, 0.3, dt_out=0.01, solver=cp.Solver("ros34pw2", rtol=tol, atol=tol))
        errs.append(float((tr.state - ref).abs().max()))
        assert errs[-1] < 30 * tol * float(ref.abs().max())
    assert errs[1] < errs[0] / 20


def test_large_steps_where_dopri5_is_held_by_stability():
    """Over 0.5 s the stiff modes cap dopri5 (the default) at h rho < 3; the Rosenbrock-W solve at
    rtol 1e-3 takes under a fifth of its evaluations with rates within 1e-3 Hz of dopri5 at 1e-10."""
    net = _bench_net()
    stim = cp.Stimulus.constant([20.0])
    with torch.no_grad():
        ref = cp.simulate(net, stim, 0.5, dt_out=0.05, solver=cp.Solver("dopri5", rtol=1e-10, atol=1e-10,
                                                                         backend="fused"))
        default = cp.simulate(net, stim, 0.5, dt_out=0.05)
        ros = cp.simulate(net, stim, 0.5, dt_out=0.05, solver=cp.Solver("ros34pw2", rtol=1e-3, atol=1e-3))
    assert ros.nfe < default.nfe / 5
    assert float((ros.rate - ref.rate).abs().max()) < 1e-3


@pytest.mark.parametrize("kernel", KERNELS)
def test_second_derivatives_are_refused(kernel):
    """create_graph=True would differentiate a hand-written adjoint that has no derivatives of its
    own: refused with the fix, not answered with a silent wrong Hessian."""
    net, field, y0 = _setup(True)
    out, _, _ = _solve(field, y0, kernel=kernel)
    params = [p for p in net.parameters() if p.requires_grad]
    with pytest.raises(RuntimeError, match="second derivatives"):
        torch.autograd.grad(_loss(out), params, create_graph=True)


def test_refusals_name_the_fix():
    with pytest.raises(ValueError, match="torchdiffeq does not have"):
        cp.Solver("ros34pw2", backend="torchdiffeq")
    with pytest.raises(ValueError, match="Direct"):
        cp.solve.strategies.check_combination(cp.Solver("ros34pw2"), cp.Adjoint())
    with pytest.raises(ValueError, match="gradient=Direct"):  # the path simulate and the trainer take
        cp.Solver("ros34pw2").resolve(cp.Adjoint())
    net = two_area_net(cp.load_preset("dl25"))
    with pytest.raises(ValueError, match="gradient=Direct"):
        cp.simulate(net, cp.Stimulus.constant([20.0]), 0.01, solver=cp.Solver("ros34pw2"), gradient=cp.Adjoint())
    assert cp.Solver("ros34pw2").resolve(cp.Direct()).backend == "fused"
    assert cp.Solver.from_dict(cp.Solver("ros34pw2", rtol=1e-4).to_dict()) == cp.Solver("ros34pw2", rtol=1e-4)


def test_scheme_coefficients_solve_the_order_conditions():
    """The transformed coefficients give back b and the first order conditions of the scheme:
    sum b = 1 and sum b_i (alpha_i + gamma_i) = 1/2 - gamma (Hairer & Wanner IV.7, Table 7.1)."""
    a, c, m, e = ROS34PW2.transformed()
    G = np.linalg.inv(np.tril(GAM, -1) + GAMMA * np.eye(4))
    np.testing.assert_allclose(m, B_SOL @ G, atol=1e-14)
    np.testing.assert_allclose(a, ALPHA @ G, atol=1e-14)
    assert B_SOL.sum() == pytest.approx(1.0, abs=1e-14)
    beta = (ALPHA + GAM).sum(1)
    assert B_SOL @ beta == pytest.approx(0.5 - GAMMA, abs=1e-14)


@pytest.mark.skipif("compiled" not in KERNELS, reason="no C compiler for the kernel")
def test_kernel_in_float32_follows_float64():
    """The compiled step in float32 lands within float32's reach of the float64 solve (same steps
    up to the controller's rounding)."""
    outs = []
    for dtype in (torch.float64, torch.float32):
        _, field, y0 = _setup(False, dtype=dtype)
        with torch.no_grad():
            out, opts, _ = _solve(field, y0.detach(), kernel="compiled")
        outs.append(out.double())
    torch.testing.assert_close(outs[1], outs[0], rtol=2e-3, atol=2e-3)
