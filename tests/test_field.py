"""f, its derivative, the rate filter, and the Field's Jacobian products."""

import pytest
import torch

import colplugin as cp

from colplugin.field import filter_rate, transfer

A, B, D = 48.0, 981.0, 0.0089


# f(x) = y / (1 - exp(-d y)), y = a x - b, by hand: the limit 1/d = 112.36 Hz at a x = b;
# f(0) = 981 / (exp(8.7309) - 1) = 0.1585; f(15) = -261 / (1 - exp(2.3229)) = 28.35;
# f(20) = -21 / (1 - exp(0.1869)) = 102.19 Hz
@pytest.mark.parametrize("x, expected", [
    (B / A, 1 / D), (0.0, 0.1585), (15.0, 28.35), (20.0, 102.19),
])
def test_design_values(x, expected):
    f = float(transfer(torch.tensor(x, dtype=torch.float64), A, B, D))
    assert f == pytest.approx(expected, abs=5e-3 if x else 5e-5)


def test_matches_textbook_formula_and_is_finite():
    x = torch.linspace(-50, 60, 2001, dtype=torch.float64)
    y = A * x - B
    naive = y / (1 - torch.exp(-D * y))
    ok = (D * y).abs() > 1e-6
    torch.testing.assert_close(transfer(x, A, B, D)[ok], naive[ok], rtol=1e-12, atol=0)
    extreme = torch.tensor([-1e6, -1e4, 1e4, 1e6], dtype=torch.float64)
    for dtype in (torch.float32, torch.float64):
        fx = transfer(extreme.to(dtype), A, B, D)
        assert torch.isfinite(fx).all() and (fx >= 0).all()


def test_gradient_matches_finite_differences_near_singularity():
    x = (B / A + torch.tensor([-1e-3, -1e-7, 0.0, 1e-9, 1e-4, 2.0], dtype=torch.float64)).requires_grad_()
    transfer(x, A, B, D).sum().backward()
    h = 1e-6
    with torch.no_grad():
        fd = (transfer(x + h, A, B, D) - transfer(x - h, A, B, D)) / (2 * h)
    torch.testing.assert_close(x.grad, fd, rtol=1e-6, atol=0)
    assert torch.autograd.gradcheck(lambda v: transfer(v, A, B, D),
                                    (torch.linspace(-30, 60, 50, dtype=torch.float64).requires_grad_(),))


def test_filter_rate_exact_for_a_ramp():
    tau = 5e-4
    t = torch.linspace(0, 0.01, 41, dtype=torch.float64)
    r = 100.0 * t  # ramp of slope 100 Hz/s; exact filtered response from r~(0) = 0:
    exact = 100.0 * (t - tau * (1 - torch.exp(-t / tau)))
    torch.testing.assert_close(filter_rate(t, r, tau), exact, rtol=1e-10, atol=1e-12)


def test_field_jacobian_products_match_autograd(dl25):
    """The fused view's (dF/dy) v and (dF/dy)^T q equal autograd's products of the torch view."""
    from conftest import two_column_net

    net = two_column_net(dl25)
    u = torch.tensor([[[20.0, 5.0]]], dtype=torch.float64)
    field = net.field(u)
    ops = field.fused()
    gen = torch.Generator().manual_seed(0)
    y = 10 * torch.rand(3, 2 * field.P, generator=gen, dtype=torch.float64) - 2
    v, q = (torch.randn(3, 2 * field.P, generator=gen, dtype=torch.float64) for _ in range(2))
    with torch.no_grad():
        k = torch.empty_like(y)
        w, g = ops.stage(y, ops.drive[:, 0], k)
        torch.testing.assert_close(k, field(y, 0), rtol=1e-13, atol=1e-9)  # the same vector field
        S = ops.slope(w, g)
        jvp, vjp = ops.jvp(v, S), ops.vjp(q, S, torch.empty_like(q))
    J = torch.stack([torch.autograd.functional.jacobian(lambda z: field(z.unsqueeze(0), 0)[0], yb) for yb in y])
    ref_jvp, ref_vjp = torch.einsum("bij,bj->bi", J, v), torch.einsum("bij,bi->bj", J, q)
    torch.testing.assert_close(jvp, ref_jvp, rtol=1e-10, atol=1e-9)
    torch.testing.assert_close(vjp, ref_vjp, rtol=1e-10, atol=1e-9)


def test_dense_choice_is_explicit(dl25):
    net = cp.ColumnNetwork(dl25, {"a": ("mt", 2)})
    assert net.field().dense and not net.field(dense=False).dense
    with pytest.raises(AttributeError):
        net.dense_max_populations = 0  # read-only: pass dense= instead
