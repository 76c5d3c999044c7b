"""The torch Siegert rate against independent methods: scipy quadrature, scipy's Dawson function, nnmt."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.integrate import quad
from scipy.special import dawsn, erfcx

from colplugin.analysis.transfer import siegert_rate
from colplugin.siegert import SIGMA_FLOOR_MV, dawson, erfcx_integral, fourcaud_brunel_shift, siegert, siegert_value

PD14 = dict(theta=15.0, V_r=0.0, tau_m=0.01, t_ref=0.002, tau_s=0.0005)
NNMT = Path(__file__).parent / "data" / "nnmt_pd14_lif.json"


def _t(x):
    return torch.as_tensor(np.asarray(x, dtype=float), dtype=torch.float64)


def test_dawson_matches_scipy_over_twelve_decades():
    x = np.concatenate([np.linspace(0.0, 0.3, 31), np.logspace(-6, 8, 300)])
    d = dawson(_t(x)).numpy()
    assert np.max(np.abs(d - dawsn(x))) < 5e-16
    big = x > 0.05
    assert np.max(np.abs(d[big] / dawsn(x[big]) - 1)) < 1e-13


def test_erfcx_integral_matches_quadrature():
    y = np.concatenate([np.linspace(1e-3, 25.0, 40), np.logspace(-4, 4, 30)])
    ref = np.array([quad(erfcx, 0.0, v, limit=500, epsabs=0.0, epsrel=1e-13)[0] for v in y])
    assert np.max(np.abs(erfcx_integral(_t(y)).numpy() / ref - 1)) < 1e-12


def test_rate_matches_scipy_quadrature_over_the_working_range():
    """The issue's range: mu -20..60 mV, sigma 0.1..20 mV; float64 within 1e-6 (measured: ~3e-13)."""
    worst = 0.0
    for tau_m in (0.01, 0.02):
        kw = dict(PD14, tau_m=tau_m)
        for mu in np.linspace(-20.0, 60.0, 17):
            for s in np.geomspace(0.1, 20.0, 9):
                ref = siegert_rate(mu, s, **kw)
                got = float(siegert_value(_t(mu), _t(s * s), **kw))
                if ref > 1e-200:
                    worst = max(worst, abs(got / ref - 1))
                else:  # scipy's reference stops at theta + shift - mu > 26 s: the rate underflows there too
                    assert got < 1e-200
    assert worst < 1e-9


def test_rate_matches_nnmt_single_points():
    fx = json.loads(NNMT.read_text())
    for pt in fx["single_points"]:
        got = float(siegert_value(_t(pt["mu_mV"]), _t(pt["sigma_mV"] ** 2), theta=pt["theta_mV"], V_r=pt["V_r_mV"],
                                  tau_m=pt["tau_m_s"], t_ref=pt["t_ref_s"], tau_s=pt["tau_s_s"]))
        assert got == pytest.approx(pt["rate_hz"], rel=1e-10)


def test_gradient_is_exact_by_finite_differences():
    mu = _t([5.0, 12.0, 15.0, 20.0, 40.0, -10.0, 14.2]).requires_grad_()
    s2 = _t([4.0, 9.0, 1.0, 25.0, 0.5, 100.0, 2.0]).requires_grad_()
    shift = _t([0.0, 1.0, 2.0, 0.5, 0.0, 3.0, 0.1]).requires_grad_()
    assert torch.autograd.gradcheck(lambda m, s, a: siegert(m, s, a, **PD14), (mu, s2, shift))


@pytest.mark.parametrize("bound", ["hi", "lo"])
def test_gradient_is_continuous_across_the_seam(bound):
    """The integral is split at u = 0: the slope must not jump where a bound crosses it."""
    s = 3.0
    c = fourcaud_brunel_shift(PD14["tau_s"], PD14["tau_m"])
    seam = (PD14["theta"] if bound == "hi" else PD14["V_r"]) + c * s  # mu at which the bound is 0
    mu = _t([seam - 1e-7, seam + 1e-7]).requires_grad_()
    r = siegert(mu, _t(s * s), **PD14)
    (g,) = torch.autograd.grad(r.sum(), mu)
    assert abs(float(g[0]) / float(g[1]) - 1) < 1e-5
    h = 1e-4  # and it is the slope of the values on both sides
    fd = (siegert_value(_t(seam + h), _t(s * s), **PD14) - siegert_value(_t(seam - h), _t(s * s), **PD14)) / (2 * h)
    assert float(g[0]) == pytest.approx(float(fd), rel=1e-6)


def test_sigma_floor_holds_the_rate_and_zeroes_its_variance_slope():
    floor = SIGMA_FLOOR_MV
    s2 = _t([0.0, 0.25 * floor ** 2, floor ** 2]).requires_grad_()
    r = siegert(_t(14.0).expand(3), s2, **PD14)
    assert torch.allclose(r, r[2].expand(3), rtol=0, atol=0)
    (g,) = torch.autograd.grad(r.sum(), s2)
    assert g[0] == 0 and g[1] == 0


def test_extremes_stay_finite():
    mu = _t([-1e4, -50.0, 0.0, 1e3, 1e6]).requires_grad_()
    r = siegert(mu, _t(4.0), **PD14)
    assert torch.isfinite(r).all() and r[0] == 0.0
    assert float(r[-1].detach()) == pytest.approx(1 / PD14["t_ref"], rel=1e-3)  # far above threshold: 1 / t_ref
    (g,) = torch.autograd.grad(r.sum(), mu)
    assert torch.isfinite(g).all()


def test_float32_is_close_to_float64():
    mu = torch.linspace(0, 30, 61, dtype=torch.float64)
    r64 = siegert_value(mu, torch.full_like(mu, 16.0), **PD14)
    r32 = siegert_value(mu.float(), torch.full_like(mu, 16.0).float(), **PD14)
    keep = r64 > 1e-3
    assert float((r32.double()[keep] / r64[keep] - 1).abs().max()) < 1e-4


def test_white_noise_limit_is_brunels_formula():
    """tau_s = 0: no Fourcaud-Brunel shift; the formula at one point by direct quadrature."""
    mu, s = 12.0, 4.0
    lo, hi = (0.0 - mu) / s, (15.0 - mu) / s
    integral = quad(lambda u: math.exp(u * u) * (1 + math.erf(u)), lo, hi, epsabs=0, epsrel=1e-13)[0]
    ref = 1.0 / (0.002 + 0.01 * math.sqrt(math.pi) * integral)
    got = float(siegert_value(_t(mu), _t(s * s), theta=15.0, V_r=0.0, tau_m=0.01, t_ref=0.002, tau_s=0.0))
    assert got == pytest.approx(ref, rel=1e-11)
