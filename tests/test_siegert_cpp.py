"""The compiled Siegert rate (colplugin/_siegert.cpp, for Brian2's C++ code generation).

``_siegert.cpp`` ports :func:`colplugin.siegert.siegert_value` step for step; it is written
to be valid C99 and C++11, and it is compiled here both ways with cffi (API mode: the file's
text plus an array wrapper, built into a pytest temporary directory): as C, and as C++ inside an
anonymous namespace after ``#include <cmath>``, the way Brian2 pastes a user function's
support code (included twice there, to check the include guard). Both must give the torch
rate to 1e-12 relative wherever it is above 1e-250 Hz (measured: below 1e-14), 0 or tiny
where it is not, and the scipy quadrature (:func:`colplugin.analysis.transfer.siegert_rate`)
to 1e-9. Skipped only where no C compiler (or cffi) is available.
"""

import importlib.util
import shlex
import shutil
import subprocess
import sysconfig
from pathlib import Path

import numpy as np
import pytest
import torch

import colplugin
from colplugin.siegert import fourcaud_brunel_shift, siegert_value

SOURCE = Path(colplugin.__file__).parent / "_siegert.cpp"
THETA, V_R, T_REF, TAU_S, FLOOR = 15.0, 0.0, 0.002, 0.0005, 0.1

_CDEF = """
double colplugin_siegert(double mu, double s2, double theta_shift, double theta, double V_r, double tau_m,
                         double t_ref, double c, double sigma_floor);
void test_siegert_array(const double *mu, const double *s2, const double *shift, long n, double theta,
                        double V_r, double tau_m, double t_ref, double c, double floor, double *out);
void test_erfcx_array(const double *x, long n, double *out);
"""
_WRAPPERS = """
static void test_siegert_array(const double *mu, const double *s2, const double *shift, long n, double theta,
                               double V_r, double tau_m, double t_ref, double c, double floor, double *out)
{
    long i;
    for (i = 0; i < n; ++i)
        out[i] = colplugin_siegert(mu[i], s2[i], shift[i], theta, V_r, tau_m, t_ref, c, floor);
}
static void test_erfcx_array(const double *x, long n, double *out)
{
    long i;
    for (i = 0; i < n; ++i)
        out[i] = colplugin_erfcx(x[i]);
}
"""


def _compiler(var: str, default: str) -> list[str] | None:
    cmd = shlex.split(sysconfig.get_config_var(var) or default) or [default]
    return cmd if shutil.which(cmd[0]) else None


def _build(tmp: Path, name: str, cplusplus: bool):
    cffi = pytest.importorskip("cffi", reason="cffi is not installed")
    if _compiler("CC", "cc") is None:
        pytest.skip("no C compiler available")
    text = SOURCE.read_text()
    if cplusplus:  # as Brian2 does: <cmath> first, the support code in an anonymous namespace
        source = "#include <cmath>\nnamespace {\n" + text + "\n" + text + "\n}\n" + _WRAPPERS
        args = ["-std=c++11"]
    else:
        source = text + _WRAPPERS
        args = ["-std=c99"]
    ffi = cffi.FFI()
    ffi.cdef(_CDEF)
    ffi.set_source(name, source, source_extension=".cpp" if cplusplus else ".c",
                   extra_compile_args=args + ["-O2", "-ffp-contract=off"], libraries=["m"])
    path = ffi.compile(tmpdir=str(tmp), verbose=False)
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module", params=["c99", "c++11"])
def lib(request, tmp_path_factory):
    cplusplus = request.param == "c++11"
    if cplusplus and _compiler("CXX", "c++") is None:
        pytest.skip("no C++ compiler available")
    name = "_colplugin_siegert_test_" + ("cxx" if cplusplus else "c")
    return _build(tmp_path_factory.mktemp(name), name, cplusplus)


def _ptr(mod, a):
    return mod.ffi.cast("double *", a.ctypes.data)


def _rates(mod, mu, s2, shift, tau_m):
    mu, s2, shift = (np.ascontiguousarray(np.broadcast_to(a, np.broadcast(mu, s2, shift).shape), dtype=float)
                     for a in (mu, s2, shift))
    out = np.empty_like(mu)
    mod.lib.test_siegert_array(_ptr(mod, mu), _ptr(mod, s2), _ptr(mod, shift), mu.size, THETA, V_R, tau_m, T_REF,
                               fourcaud_brunel_shift(TAU_S, tau_m), FLOOR, _ptr(mod, out))
    return out


def test_erfcx_against_scipy(lib):
    special = pytest.importorskip("scipy.special")
    x = np.concatenate([np.linspace(0.0, 30.0, 300_001), np.geomspace(25.0, 1e150, 2000)])
    out = np.empty_like(x)
    lib.lib.test_erfcx_array(_ptr(lib, x), x.size, _ptr(lib, out))
    rel = np.abs(out / special.erfcx(x) - 1.0)
    # measured: 1.1e-15 (exp(x*x) * erfc(x) without splitting x*x: 6e-14 near x = 23)
    assert rel.max() < 4e-15, (rel.max(), x[rel.argmax()])
    # x < 0: 2 exp(x^2) - erfcx(-x)
    xn = -np.linspace(0.0, 5.0, 51)
    lib.lib.test_erfcx_array(_ptr(lib, xn), xn.size, _ptr(lib, out[:51]))
    assert np.allclose(out[:51], special.erfcx(xn), rtol=1e-14, atol=0)


@pytest.mark.parametrize("tau_m", [0.01, 0.02])
@pytest.mark.parametrize("theta_shift", [0.0, 3.0])
def test_siegert_against_torch(lib, tau_m, theta_shift):
    mu, s = np.meshgrid(np.linspace(-20.0, 60.0, 321), np.geomspace(0.1, 20.0, 121), indexing="ij")
    s = np.concatenate([s, np.full((321, 1), 0.05)], axis=1)  # below the floor: held at 0.1
    mu = np.concatenate([mu, mu[:, :1]], axis=1)
    ref = siegert_value(torch.tensor(mu), torch.tensor(s ** 2), theta_shift, theta=THETA, V_r=V_R, tau_m=tau_m,
                        t_ref=T_REF, tau_s=TAU_S, sigma_floor=FLOOR).numpy()
    got = _rates(lib, mu, s ** 2, theta_shift, tau_m)
    assert np.all(np.isfinite(got)) and np.all(got >= 0.0)
    big = ref > 1e-250
    assert big.sum() > 0.8 * big.size  # most of the grid fires: the comparison has teeth
    rel = np.abs(got[big] / ref[big] - 1.0)
    assert rel.max() < 1e-12, (rel.max(), mu[big][rel.argmax()], s[big][rel.argmax()])  # measured: 7e-15
    assert np.all(got[~big] < 1e-245)  # both underflowing: 0 or subnormal-ish
    assert np.array_equal(got[:, -1], got[:, 0])  # s = 0.05 is held at the floor 0.1


def test_siegert_against_scipy_quadrature(lib):
    pytest.importorskip("scipy")
    from colplugin.analysis.transfer import siegert_rate

    mu = np.linspace(-20.0, 60.0, 17)
    s = np.geomspace(0.1, 20.0, 7)
    for tau_m in (0.01, 0.02):
        for shift in (0.0, 3.0):
            M, S = np.meshgrid(mu, s, indexing="ij")
            got = _rates(lib, M, S ** 2, shift, tau_m)
            ref = np.array([siegert_rate(m, x, theta=THETA + shift, V_r=V_R, tau_m=tau_m, t_ref=T_REF, tau_s=TAU_S)
                            for m, x in zip(M.ravel(), S.ravel())]).reshape(M.shape)
            ok = ref > 0.0  # siegert_rate returns 0 for hi > 26 (rate below 1e-280)
            assert ok.sum() > 0.5 * ok.size
            assert np.all(got[~ok] < 1e-250)
            rel = np.abs(got[ok] / ref[ok] - 1.0)
            assert rel.max() < 1e-9, (tau_m, shift, rel.max(), M[ok][rel.argmax()], S[ok][rel.argmax()])


@pytest.mark.parametrize("lang,var,default,std", [("c", "CC", "cc", "-std=c99"),
                                                   ("c++", "CXX", "c++", "-std=c++11")])
def test_source_is_strict_c99_and_cxx11(lang, var, default, std):
    """The file alone compiles warning-free as ISO C99 and ISO C++11 (-pedantic -Wall -Wextra)."""
    cmd = _compiler(var, default)
    if cmd is None:
        pytest.skip(f"no {lang} compiler available")
    res = subprocess.run(cmd + ["-x", lang, std, "-pedantic", "-Wall", "-Wextra", "-Werror", "-fsyntax-only",
                                str(SOURCE)], capture_output=True, text=True)
    if res.returncode != 0 and "-pedantic" not in res.stderr and "error:" not in res.stderr:
        pytest.skip(f"{cmd[0]} does not take GCC-style options: {res.stderr.strip()[:200]}")
    assert res.returncode == 0, res.stderr
