"""Brian2 export of a network with the Siegert transfer (dl25_lif): every target reproduces torch's euler.

The network is the XOR architecture (three columns, 72 state variables) with the XOR
evaluation patterns (00, 01, 10, 11: four trials), switched on at 62.5 ms instead of 0.5 s
to keep the runs short. Rates at or above :data:`FLOOR` Hz are compared relatively (within
1e-10 on every trial and population); below it, where a relative error says little, the
absolute difference must stay under ``1e-10 * FLOOR`` Hz.
"""

import subprocess
import sys

import numpy as np
import pytest
import torch

import colplugin as cp
from colplugin.export import export_brian2_script, to_brian2
from colplugin.tasks.xor import XOR
from colplugin.transfers import SiegertTransfer

pytestmark = pytest.mark.brian2

T_ON = 0.0625  # s: the patterns' onset, on the 0.1 ms grid
DURATION = 0.07
FLOOR = 1e-3  # Hz
TOL = 1e-10


@pytest.fixture(scope="module")
def lif():
    """(network, stimulus, torch's euler rates (T, 4, 24) and S (T, 4, 24))."""
    net = XOR().build_network(cp.load_preset("dl25_lif"), seed=0)
    stim = cp.Stimulus([0.0, T_ON], XOR().evaluation_stimulus().rates.numpy())
    with torch.no_grad():
        traj = cp.simulate(net, stim, duration=DURATION, dt_out=1e-4,
                           solver=cp.Solver("euler", step=1e-4, backend="torchdiffeq"))
    P = net.n_populations
    return net, stim, traj.rate.numpy(), traj.state[..., 2 * P:].numpy()


def assert_agrees(rates, ref):
    """Relative difference <= TOL where ref >= FLOOR Hz, absolute <= TOL * FLOOR below, per trial and population."""
    assert rates.shape == ref.shape == (int(round(DURATION / 1e-4)) + 1, 4, 24)
    big = ref >= FLOOR
    assert big[-1].sum() > 48 and (~big).any()  # both regimes are exercised
    rel = np.where(big, np.abs(rates - ref) / np.where(big, ref, 1.0), 0.0).max(0)  # (trials, populations)
    small = np.where(big, 0.0, np.abs(rates - ref)).max(0)
    worst = np.unravel_index(rel.argmax(), rel.shape)
    assert rel.max() <= TOL, f"max relative difference {rel.max():.3g} (trial, population {worst})"
    assert small.max() <= TOL * FLOOR, f"max absolute difference below {FLOOR} Hz: {small.max():.3g} Hz"
    return float(rel.max())


def _poisoned(monkeypatch):
    """Make the transfer function's Python implementation raise, as if a numpy run had registered it."""
    original = SiegertTransfer.brian2_function

    def brian2_function(self):
        f = original(self)

        def refuse(*args):
            raise AssertionError("the Python implementation ran under a compiled target")

        f.pyfunc = refuse
        f.implementations.add_numpy_implementation(refuse)
        return f

    monkeypatch.setattr(SiegertTransfer, "brian2_function", brian2_function)


def test_runtime_numpy_matches_torch_euler(lif):
    net, stim, ref, ref_S = lif
    run = to_brian2(net, stim, duration=DURATION, trial=None).run()  # euler, numpy: the torch Siegert
    assert run.target == "numpy"
    assert_agrees(run.trial_rates, ref)  # measured 2.5e-14
    np.testing.assert_allclose(run.S.reshape(ref_S.shape), ref_S, rtol=1e-11, atol=0)


@pytest.mark.standalone
@pytest.mark.parametrize("kwargs", [dict(target="cython"), dict(device="cpp_standalone")], ids=["cython", "cpp"])
def test_compiled_targets_match_torch_euler_without_python(lif, monkeypatch, kwargs):
    """Cython and cpp_standalone run the C code of ``_siegert.cpp``, never the Python implementation,
    even with a numpy implementation registered (which Brian2 would otherwise call from Cython)."""
    net, stim, ref, _ = lif
    _poisoned(monkeypatch)
    run = to_brian2(net, stim, duration=DURATION, trial=None, **kwargs).run()
    assert run.target == kwargs.get("target", "cpp")
    assert_agrees(run.trial_rates, ref)  # measured 2.6e-14 (both)


def test_a_target_without_an_implementation_is_refused(lif, monkeypatch):
    import brian2 as b2

    net, stim, _, _ = lif
    with pytest.raises(ValueError, match="'auto'"):
        to_brian2(net, stim, duration=DURATION, target="auto")
    original = SiegertTransfer.brian2_function

    def numpy_only(self):
        f = original(self)
        for key in ("cpp", "cython"):
            f.implementations._implementations.pop(key)
        return f

    monkeypatch.setattr(SiegertTransfer, "brian2_function", numpy_only)
    with pytest.raises(ValueError, match="'siegert_rate' has no implementation for target 'cython'"):
        to_brian2(net, stim, duration=DURATION, target="cython")
    with pytest.raises(ValueError, match="'siegert_rate' has no implementation for the cpp_standalone device"):
        to_brian2(net, stim, duration=DURATION, device="cpp_standalone")
    assert b2.get_device().__class__.__name__ == "RuntimeDevice"  # refused before the device was switched


def test_standalone_script_carries_the_siegert_transfer(lif, tmp_path):
    net, stim, ref, ref_S = lif
    paths = export_brian2_script(net, tmp_path / "model.py", stim, duration=DURATION)
    text = paths["script"].read_text()
    assert "colplugin" not in "\n".join(ln for ln in text.splitlines() if ln.startswith(("import", "from")))
    assert "SIEGERT_C = r'''" in text and "def siegert_numpy(" in text and "drive2_name" in text
    assert "siegert_rate" in paths["description"].read_text()
    # a clean interpreter (-I: no user site, no PYTHONPATH) in another directory, runtime numpy
    done = subprocess.run([sys.executable, "-I", str(paths["script"]), "--out", str(tmp_path / "out.npz")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    out = np.load(tmp_path / "out.npz")
    assert out["trials"].tolist() == [0, 1, 2, 3]
    assert_agrees(out["rate_Hz"], ref)  # measured 1.0e-13
    np.testing.assert_allclose(out["S_mV2"], ref_S, rtol=1e-11, atol=0)


def test_script_numpy_siegert_is_the_torch_siegert():
    """The script's numpy port agrees with colplugin.siegert.siegert_value (float64) to rounding."""
    from colplugin.export.brian2_script import SIEGERT_NUMPY
    from colplugin.siegert import siegert_value

    ns = {"np": np}
    exec(SIEGERT_NUMPY, ns)
    tr = SiegertTransfer(15.0, 0.0, 0.02, 0.002, 0.0005)
    rng = np.random.default_rng(0)
    mu = np.concatenate([rng.uniform(-20, 60, 4000), rng.uniform(-200, 200, 500)])
    s = np.concatenate([10 ** rng.uniform(-2, 1.5, 4000), 10 ** rng.uniform(-2, 2, 500)])
    shift = rng.uniform(-5, 20, mu.size)
    ref = siegert_value(torch.tensor(mu), torch.tensor(s * s), torch.tensor(shift), **tr._kw()).numpy()
    got = ns["siegert_numpy"](mu, s * s, shift, tr.theta, tr.V_r, tr.tau_m, tr.t_ref, tr.shift, tr.sigma_floor)
    live = ref > 1e-250
    assert live.sum() > 3000
    np.testing.assert_array_equal(got[~live] == 0, ref[~live] == 0)
    np.testing.assert_allclose(got[live], ref[live], rtol=1e-13, atol=0)  # measured 1.0e-14
