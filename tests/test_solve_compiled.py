"""The compiled fused-solver kernel (colplugin.solve.compiled) against the eager fused loop.

The eager loop is itself tested against torchdiffeq and finite differences
(tests/test_fused.py); here the kernel must give its numbers - states, gradients with
respect to weights, learnable input (drive) and initial state, the divergence checks and
the errors - to rounding, and the machinery around it (choice, fallback, cache) must work.
"""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import colplugin as cp
from colplugin.solve import compiled
from colplugin.solve.fused import fused_solve
from colplugin.solve.simulate import SimulationError

from conftest import solve_with_gradients, two_area_net, two_column_net

pytestmark = pytest.mark.skipif(not compiled.kernel_available()[0],
                                reason=f"no compiled kernel here ({compiled.kernel_available()[1]})")


def _net(dl25, dtype=torch.float64):
    return two_area_net(dl25, dtype)


def _stim():
    rates = np.array([[[0, 0, 0], [15, 5, 3], [0, 0, 0]], [[0, 0, 0], [2, 30, 1], [10, 10, 10]],
                      [[0, 0, 0], [20, 20, 20], [5, 0, 5]]], float)
    return cp.Stimulus([0.0, 0.0203, 0.05], rates)  # a change point off the 1 ms grid


def _run(net, solver, duration=0.08, dt_out=0.005):
    return solve_with_gradients(net, solver, _stim(), duration, dt_out, a_index=4)


def _rel(a, b):
    return float((a - b).detach().abs().max() / b.detach().abs().max())


@pytest.mark.parametrize("dense", [True, False])
@pytest.mark.parametrize("method,options", [("euler", {"step": 2e-4}), ("midpoint", {"step": 1e-3}),
                                            ("rk4", {"step": 1e-3}), ("dopri5", {"rtol": 1e-6, "atol": 1e-6}),
                                            ("dopri5", {"rtol": 1e-9, "atol": 1e-9})])
def test_compiled_equals_eager_in_float64(dl25, method, options, dense):
    """States and every gradient (recurrent weights, input weights through the drive, y0) within
    1e-12, for the dense coupling and the sparse one (blocks, edges and rate terms as entries)."""
    net = _net(dl25)
    ref_s, ref_g, ref_nfe = _run(net, cp.Solver(method, backend="fused", dense=dense, kernel="eager", **options))
    s, g, nfe = _run(net, cp.Solver(method, backend="fused", dense=dense, kernel="compiled", **options))
    assert nfe == ref_nfe  # the same steps (an adaptive solve: the same accepted and rejected ones)
    assert _rel(s, ref_s) < 1e-12
    assert len(g) == len(ref_g) == 3
    for a, b in zip(g, ref_g):
        assert float(b.abs().max()) > 0
        assert _rel(a, b) < 1e-12


@pytest.mark.parametrize("dense", [True, False])
@pytest.mark.parametrize("method,options,batch", [("rk4", {"step": 1e-3}, 1),
                                                  ("dopri5", {"rtol": 1e-8, "atol": 1e-8}, 1),
                                                  ("dopri5", {"rtol": 1e-6, "atol": 1e-6}, 11)])
def test_saturated_rates_equal_the_eager_loops(dl25, method, options, batch, dense):
    """A field with r_max (r = f / (1 + f / r_max)) on three populations, one of them deep in its
    saturation: the kernel's states and gradients (the slope g_raw'(z) / (1 + g_raw sat)^2) equal
    the eager loop's within 1e-12 (1e-11 gradients), with one trial and with a chunk of 8 lanes
    plus one of 3; and float32 within 1e-5 (1e-4)."""
    r_max = np.full(8, np.inf)
    r_max[[0, 2, 4]] = [1.5, 8.0, 0.05]  # L2/3E, L4E, and L5E far beyond its r_max
    net = _net(dl25.with_overrides({"r_max": r_max}))
    rates = np.random.default_rng(3).uniform(0, 30, size=(batch, 2, 3))
    stim = cp.Stimulus([0.0, 0.0071], rates) if batch > 1 else _stim()

    def run(kernel, model=net):
        return solve_with_gradients(model, cp.Solver(method, backend="fused", dense=dense, kernel=kernel, **options),
                                    stim, 0.06, 0.005, a_index=4)

    ref_s, ref_g, ref_nfe = run("eager")
    s, g, nfe = run("compiled")
    r = net.rates(ref_s)
    assert float(r[..., 0].max()) > 0.5 * 1.5 and float(r[..., 4].max()) > 0.5 * 0.05  # in play
    assert nfe == ref_nfe and _rel(s, ref_s) < 1e-12
    for a, b in zip(g, ref_g):
        assert float(b.abs().max()) > 0 and _rel(a, b) < 1e-11
    if method == "rk4":
        net32 = _net(dl25.with_overrides({"r_max": r_max}), dtype=torch.float32)
        s32, g32, _ = run("compiled", net32)
        assert _rel(s32.double(), ref_s) < 1e-5
        for a, b in zip(g32, ref_g):
            assert _rel(a.double(), b) < 1e-4


def test_compiled_float32(dl25):
    net = _net(dl25, dtype=torch.float32)
    ref_s, ref_g, ref_nfe = _run(net, cp.Solver("rk4", step=1e-3, backend="fused", kernel="eager"))
    s, g, nfe = _run(net, cp.Solver("rk4", step=1e-3, backend="fused", kernel="compiled"))
    assert s.dtype == torch.float32 and nfe == ref_nfe
    assert _rel(s, ref_s) < 1e-5
    for a, b in zip(g, ref_g):
        assert _rel(a, b) < 1e-4


def test_watch_sees_what_the_eager_loop_shows(dl25):
    """The divergence check is called at the same times with the same largest V - A."""
    net = _net(dl25)
    field = net.field(_stim().rates, dense=True)
    calls = {}
    for kernel in ("eager", "compiled"):
        seen = calls.setdefault(kernel, [])
        fused_solve(field, net.initial_state(3), [0.0, 0.0203, 0.05, 0.08], [0, 1, 2], [1, 3], "dopri5",
                    lambda t, x, n, seen=seen: seen.append((t, float(x.max()), n)), watch_every=5, kernel=kernel)
    assert len(calls["eager"]) == len(calls["compiled"]) > 10
    for (t0, x0, n0), (t1, x1, n1) in zip(calls["eager"], calls["compiled"]):
        # x: the largest V - A, from states that differ in the order of summation (2.7e-12 relative on some CPUs)
        assert t1 == pytest.approx(t0, rel=1e-13) and x1 == pytest.approx(x0, rel=1e-11) and n1 == n0


def test_the_watch_skips_saturating_populations_and_flags_nan_and_inf(dl25):
    """With r_max on some populations the kernel's watch value is the largest V - A of the others
    (as the eager loop's masked check), -inf where every population saturates; the check flags
    NaN and +inf also with max_rate = inf, and not -inf."""
    import math

    from colplugin.solve.simulate import _ODEFunc

    r_max = np.full(8, np.inf)
    r_max[[3, 7]] = 200.0  # L4I and L6I: where the largest V - A of this run lies most of the time
    net = _net(dl25.with_overrides({"r_max": r_max}))
    field = net.field(_stim().rates, dense=True)
    sat = field.saturating.numpy()
    seen = {"eager": [], "compiled": []}
    for kernel, out in seen.items():
        fused_solve(field, net.initial_state(3), [0.0, 0.0203, 0.05, 0.08], [0, 1, 2], [1, 3], "dopri5",
                    lambda t, x, n, out=out: out.append(float(x.max()) if x.ndim == 0 else float(x[..., ~sat].max())),
                    watch_every=5, kernel=kernel)
    assert len(seen["eager"]) == len(seen["compiled"]) > 5
    np.testing.assert_allclose(seen["compiled"], seen["eager"], rtol=1e-11)  # x from w: (b - w / d) / a
    everything = []  # the unmasked maxima differ: the test sees the mask
    fused_solve(field, net.initial_state(3), [0.0, 0.0203, 0.05, 0.08], [0, 1, 2], [1, 3], "dopri5",
                lambda t, x, n: everything.append(float(x.max())), watch_every=5, kernel="eager")
    assert max(a - b for a, b in zip(everything, seen["eager"])) > 1.0
    every = _net(dl25.with_overrides({"r_max": np.full(8, 2.0)})).field(_stim().rates, dense=True)
    values = []
    fused_solve(every, net.initial_state(3), [0.0, 0.0203, 0.05, 0.08], [0, 1, 2], [1, 3], "dopri5",
                lambda t, x, n: values.append(float(x)), watch_every=5, kernel="compiled")
    assert values and all(v == -math.inf for v in values)
    watch = _ODEFunc(two_column_net(dl25), cp.Stimulus([0.0], [[1.0, 1.0]]), per_step=True, max_rate=math.inf,
                     check_every=1)
    watch._watch(0.0, torch.tensor(-math.inf))  # nothing that can run away: no alarm
    for bad in (math.nan, math.inf):
        with pytest.raises(SimulationError, match="runaway"):
            watch._watch(0.0, torch.tensor(bad))


def test_errors_are_the_eager_loops(dl25):
    """Runaway rates (raised in the watch, from inside the C loop), an exception of the
    caller's watch, and the step-size underflow reach the caller as in the eager loop."""
    net = two_column_net(dl25)
    net.set_projection_weights("lateral:mt:self", 5e4)
    messages = []
    for kernel in ("eager", "compiled"):
        with pytest.raises(SimulationError, match="runaway rates") as err:
            cp.simulate(net, cp.Stimulus.constant([20.0, 20.0]), duration=0.2,
                        solver=cp.Solver("rk4", step=1e-3, backend="fused", kernel=kernel))
        messages.append(str(err.value))
    assert messages[0] == messages[1]

    class Stop(Exception):
        pass

    def watch(t, x, n):
        if t > 0.01:
            raise Stop(t)

    calm = two_column_net(dl25)
    with pytest.raises(Stop):
        fused_solve(calm.field(dense=True), calm.initial_state(1), [0.0, 0.05], [0], [1], "dopri5", watch,
                    kernel="compiled")
    from colplugin.solve.fused import StepSizeUnderflow

    with pytest.raises(StepSizeUnderflow):  # a step too small for the tolerance at once: 1e-300 mV
        fused_solve(calm.field(dense=True), calm.initial_state(1), [0.0, 0.05], [0], [1], "dopri5",
                    lambda t, x, n: None, rtol=1e-300, atol=1e-300, kernel="compiled")


def test_choice_and_fallback(dl25, monkeypatch):
    net = _net(dl25)
    y0 = net.initial_state(2)
    dense, sparse = net.field(dense=True).fused(), net.field(dense=False).fused()
    assert compiled.choose("auto", dense, y0) and compiled.choose("auto", sparse, y0)
    assert not compiled.choose("eager", dense, y0)
    big = torch.zeros(compiled.MAX_WORK // (2 * dense.P ** 2) + 1, 2 * dense.P, dtype=torch.float64)
    with torch.no_grad():
        assert not compiled.choose("auto", dense, big)  # a large forward: BLAS (eager) wins
        assert compiled.choose("compiled", dense, big)
    assert compiled.needs_grad(dense, big)  # the network's weights are learnable: the backward's limit
    assert compiled.choose("auto", dense, big)
    # a sparse field's work per trial is its number of entries (counted from the built list)
    entries = len(compiled.sparse_coupling(sparse)[1])
    assert entries == compiled._work(sparse)
    # below SPARSE_LANES_MIN trials the work limits decide; from there on, the kernel at any size
    lanes = compiled.SPARSE_LANES_MIN
    assert lanes >= 2  # one trial is decided by the work limits (measured: the eager loop wins there)
    for name, grad in (("MAX_WORK", False), ("MAX_WORK_GRAD", True)):
        with torch.set_grad_enabled(grad):
            monkeypatch.setattr(compiled, name, entries * (lanes - 1))  # lanes - 1 trials: at the limit
            assert compiled.choose("auto", sparse, torch.zeros(lanes - 1, 2 * sparse.P))
            monkeypatch.setattr(compiled, name, entries * (lanes - 1) - 1)  # just above it: eager
            assert not compiled.choose("auto", sparse, torch.zeros(lanes - 1, 2 * sparse.P))
            assert compiled.choose("auto", sparse, torch.zeros(lanes, 2 * sparse.P))
            assert compiled.choose("auto", sparse, torch.zeros(100 * lanes, 2 * sparse.P))
        monkeypatch.undo()
    with pytest.raises(ValueError, match="meta"):
        compiled.choose("compiled", dense, y0.to("meta"))
    with pytest.raises(ValueError, match="kernel"):
        cp.Solver("dopri5", kernel="fast")
    # without a kernel (no compiler): the eager loop, same numbers; "compiled" names the reason
    ref = cp.simulate(net, _stim(), 0.06).state
    monkeypatch.setattr(compiled, "_module", lambda: (None, "no compiler found"))
    assert not compiled.choose("auto", dense, y0)
    with pytest.raises(ValueError, match="no compiler found"):
        compiled.choose("compiled", dense, y0)
    assert _rel(cp.simulate(net, _stim(), 0.06).state, ref) < 1e-12


# The cache tests build the kernel without per-CPU clones (a third of the compile time); the
# cache mechanics do not depend on the flags.
_ONE_VARIANT = "compiled._FLAGS.append('-DFK_NO_CLONES'); "


_BUILD = ("import warnings; warnings.simplefilter('error'); from colplugin.solve import compiled; " + _ONE_VARIANT
          + "ok, why = compiled.kernel_available(); assert ok, why; print(compiled._module()[0].__file__)")


@pytest.fixture(scope="module")
def fresh_build(tmp_path_factory):
    """One process that builds the kernel into a fresh cache directory: (cache directory, kernel path, mtime)."""
    cache = tmp_path_factory.mktemp("cache")
    env = dict(os.environ, COLPLUGIN_CACHE_DIR=str(cache))
    path = subprocess.run([sys.executable, "-c", _BUILD], env=env, capture_output=True, text=True,
                          check=True).stdout.strip()
    return cache, path, os.stat(path).st_mtime_ns


def test_kernel_is_built_once_into_the_cache(fresh_build):
    """A fresh cache directory: the first process compiles, the next one loads the same file."""
    cache, path, mtime = fresh_build
    env = dict(os.environ, COLPLUGIN_CACHE_DIR=str(cache))
    assert path.startswith(str(cache)) and os.path.exists(path)
    second = subprocess.run([sys.executable, "-c", _BUILD], env=env, capture_output=True, text=True, check=True)
    assert second.stdout.strip() == path and os.stat(path).st_mtime_ns == mtime
    assert not [p for p in (cache / "kernels").iterdir() if p.is_dir()]  # no build directory left behind
    off = subprocess.run([sys.executable, "-c", "from colplugin.solve import compiled; "
                          "print(compiled.kernel_available())"], capture_output=True, text=True, check=True,
                         env=dict(env, COLPLUGIN_KERNEL="eager"))
    assert "COLPLUGIN_KERNEL=eager" in off.stdout


def test_sparse_coupling_is_the_dense_matrix(dl25):
    """The compressed rows built from a sparse field's blocks, edges and rate terms, scattered
    into a matrix, are the dense field's coupling Wg (built by the dense path of Field.fused)."""
    net = _net(dl25)
    dense, sparse = net.field(dense=True).fused(), net.field(dense=False).fused()
    row_ptr, col, values = compiled.sparse_coupling(sparse)
    P = sparse.P
    rows = np.repeat(np.arange(P), np.diff(row_ptr))
    W = torch.zeros(P, 2 * P, dtype=torch.float64)
    W.index_put_((torch.as_tensor(rows), torch.as_tensor(col, dtype=torch.long)), values.detach(), accumulate=True)
    assert values.requires_grad  # cotangents flow back to the blocks and edge weights
    torch.testing.assert_close(W, dense.Wg.detach(), rtol=1e-14, atol=0)


def test_batched_sparse_products_equal_single_trials(dl25):
    """The kernel holds trials side by side in lanes (chunks of 8, trial-innermost): the same
    numbers as the eager loop, and - for a fixed-step method - each trial bit for bit what it
    is alone (one lane, the plain layout), in a full chunk and in the last one."""
    net = _net(dl25)
    rates = np.random.default_rng(1).uniform(0, 30, size=(9, 3, 3))
    rates[:, 0] = 0
    stim = cp.Stimulus([0.0, 0.0203, 0.05], rates)
    solver = cp.Solver("rk4", step=1e-3, backend="fused", dense=False, kernel="compiled")
    ref = cp.simulate(net, stim, 0.06, solver=cp.Solver("rk4", step=1e-3, dense=False, backend="fused",
                                                       kernel="eager")).state
    batched = cp.simulate(net, stim, 0.06, solver=solver).state
    assert _rel(batched, ref) < 1e-12
    for i in range(9):
        alone = cp.simulate(net, cp.Stimulus(stim.times, stim.rates[i:i + 1]), 0.06, solver=solver).state
        assert torch.equal(alone[:, 0], batched[:, i])


def test_inputs_that_do_not_fit_are_refused(dl25):
    """Both loops index with these unchecked; a wrong one must be an error, not a wrong number."""
    net = _net(dl25)
    rates = torch.full((2, 1, 3), 10.0, dtype=torch.float64)
    field = net.field(rates, dense=True)
    y0 = net.initial_state(2)
    cases = [(y0.float(), [0], 25, "dtype"), (net.initial_state(3), [0], 25, "2 trials, y0 3"),
             (y0[:, :-1], [0], 25, "shape"), (y0, [5], 25, "segment indices"), (y0, [0], 0, "watch_every")]
    for kernel in ("eager", "compiled"):
        for y, seg, every, match in cases:
            with pytest.raises(ValueError, match=match):
                fused_solve(field, y, [0.0, 0.01], seg, [1], "rk4", lambda t, x, n: None, watch_every=every,
                            kernel=kernel)


def test_no_second_derivatives_and_records_freed_after_backward(dl25):
    net = two_column_net(dl25)
    field = net.field(dense=True)
    y0 = net.initial_state(2).requires_grad_()
    out, _ = fused_solve(field, y0, [0.0, 0.01], [0], [1], "dopri5", lambda t, x, n: None, kernel="compiled")
    with pytest.raises(RuntimeError, match="second derivatives"):
        torch.autograd.grad(out.pow(2).sum(), y0, create_graph=True)
    out, _ = fused_solve(field, y0, [0.0, 0.01], [0], [1], "dopri5", lambda t, x, n: None, kernel="compiled")
    out.sum().backward()
    with pytest.raises(RuntimeError, match="second time"):  # the C records went with the saved tensors
        out.sum().backward()


@pytest.mark.parametrize("kernel", ["eager", "compiled"])
def test_outputs_at_a_repeated_stop(dl25, kernel):
    """An output that lands after zero steps is y0 itself: d out / d y0 = 1 (both loops)."""
    net = two_column_net(dl25)
    y0 = net.initial_state(1).requires_grad_()
    out, _ = fused_solve(net.field(dense=True), y0, [0.0, 0.0, 0.01], [0, 0], [1, 2], "rk4",
                         lambda t, x, n: None, kernel=kernel)
    out[0].sum().backward()
    assert torch.equal(y0.grad, torch.ones_like(y0))


def test_a_broken_cached_kernel_is_rebuilt(fresh_build, tmp_path):
    """A copy of a built cache whose kernel is truncated (as by an interrupted copy) is rebuilt, silently."""
    import shutil

    cache, built, _ = fresh_build
    shutil.copytree(cache, tmp_path / "cache")
    path = str(tmp_path / "cache" / Path(built).relative_to(cache))
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.truncate(100)
    env = dict(os.environ, COLPLUGIN_CACHE_DIR=str(tmp_path / "cache"))
    again = subprocess.run([sys.executable, "-c", _BUILD], env=env, capture_output=True, text=True, check=True)
    # loaded (the process asserts the kernel is available) from the same path, rebuilt to a full library (its
    # size differs from the original's by the build directory's name, which the library embeds)
    assert again.stdout.strip() == path and os.path.getsize(path) > 0.9 * size


def test_simulate_picks_the_loop_and_the_coupling_form(dl25, monkeypatch):
    """simulate's default: the kernel (sparse above 4 columns) within the work limits or from
    SPARSE_LANES_MIN trials on, else the eager loop with its own dense/sparse crossover; a
    differentiated solve has the larger limit."""
    from colplugin.field import FusedOperators, SparseFusedOperators
    from colplugin.solve import fused

    net = _net(dl25)  # 5 columns, 40 populations
    assert net.n_populations > compiled.KERNEL_DENSE_MAX_POPULATIONS
    seen = []
    real_compiled, real_eager = compiled.compiled_solve, fused._FusedSolve.apply
    monkeypatch.setattr(compiled, "compiled_solve",
                        lambda ops, *a, **k: seen.append(("compiled", type(ops))) or real_compiled(ops, *a, **k))
    monkeypatch.setattr(fused._FusedSolve, "apply",
                        lambda *a: seen.append(("eager", type(a[2]))) or real_eager(*a))
    cp.simulate(net, _stim(), 0.06)
    assert seen == [("compiled", SparseFusedOperators)]
    three = _stim()
    one = cp.Stimulus(three.times.tolist(), three.rates[:1].numpy())  # the work limits decide one trial
    monkeypatch.setattr(compiled, "MAX_WORK", 1)  # every forward-only solve too large for the kernel
    seen.clear()
    with torch.no_grad():
        cp.simulate(net, one, 0.06)
    assert seen == [("eager", FusedOperators)]  # 40 populations: dense in the eager loop
    seen.clear()
    with torch.no_grad():
        cp.simulate(net, three, 0.06)
    assert seen == [("compiled", SparseFusedOperators)]  # sparse, SPARSE_LANES_MIN trials or more: any size
    seen.clear()
    cp.simulate(net, one, 0.06).rate.sum().backward()  # learnable weights: the larger limit
    assert seen == [("compiled", SparseFusedOperators)]


def test_expm1_is_libms_to_a_few_ulp():
    """The kernel's expm1 (straight-line arithmetic, so that its loops vectorise) against
    Python's math.expm1 (the C library's), over the range a rate model reaches and beyond."""
    mod, _ = compiled._module()
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.uniform(-60.0, 709.7, 100_000), rng.uniform(-1.0, 1.0, 100_000),
                        rng.uniform(-1e-3, 1e-3, 20_000), 10.0 ** rng.uniform(-300, 0, 20_000),
                        -(10.0 ** rng.uniform(-300, 0, 20_000)), [709.78, -745.0, -1e300, 0.5 * np.log(2)]])
    out = np.empty_like(x)
    mod.lib.fk_expm1_array(mod.ffi.cast("double *", x.ctypes.data), mod.ffi.cast("double *", out.ctypes.data),
                           len(x))
    import math
    ref = np.array([math.expm1(v) for v in x])
    ulps = np.abs(out - ref) / np.spacing(np.abs(ref))
    assert ulps.max() <= 4, (ulps.max(), x[ulps.argmax()])
    special = np.array([np.nan, np.inf, -np.inf, 710.0, 1e300])
    out = np.empty_like(special)
    mod.lib.fk_expm1_array(mod.ffi.cast("double *", special.ctypes.data),
                           mod.ffi.cast("double *", out.ctypes.data), len(special))
    assert np.isnan(out[0]) and out[1] == np.inf and out[2] == -1.0 and out[3] == np.inf and out[4] == np.inf


@pytest.mark.parametrize("dense,checkpoint_every", [(True, None), (False, None), (False, 2)])
def test_threads_and_lanes_give_the_same_numbers(dl25, dense, checkpoint_every):
    """Trials run in chunks of 8 lanes, the chunks on torch's intra-op threads: 1, 2 and 3
    threads (more than this machine's cores: uneven chunk ownership) give the same states and
    gradients bit for bit (sums over chunks are taken in chunk order), and the eager loop's
    to rounding, with a last chunk of 3 lanes, a learnable drive that differs between trials,
    and stages kept or recomputed from checkpoints in the backward pass."""
    net = _net(dl25)
    B = 419  # 52 full chunks and one of 3; B x populations over the kernel's threshold for threads
    rates = np.random.default_rng(2).uniform(0, 30, size=(B, 2, 3))
    stim = cp.Stimulus([0.0, 0.0071], rates)
    kw = dict(rtol=1e-6, atol=1e-6, backend="fused", dense=dense, checkpoint_every=checkpoint_every)
    threads = torch.get_num_threads()
    try:
        runs = []
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            runs.append(solve_with_gradients(net, cp.Solver("dopri5", kernel="compiled", **kw), stim, 0.015, 0.005))
    finally:
        torch.set_num_threads(threads)
    ref = solve_with_gradients(net, cp.Solver("dopri5", kernel="eager", **kw), stim, 0.015, 0.005)
    s1, g1, n1 = runs[0]
    for s2, g2, n2 in runs[1:]:
        assert n1 == n2 == ref[2]
        assert torch.equal(s1, s2) and all(torch.equal(a, b) for a, b in zip(g1, g2))
    assert _rel(s1, ref[0]) < 1e-12
    for a, b in zip(g1, ref[1]):
        assert _rel(a, b) < 1e-11


def test_no_trials_is_an_error(dl25):
    with pytest.raises(ValueError, match="0 trials"):  # refused where it is made, before any solver sees it
        cp.Stimulus([0.0], np.zeros((0, 1, 3)))


_VARIANT_RUN = r"""
import sys
import numpy as np, torch
sys.path.insert(0, {tests!r})
from colplugin.solve import compiled
compiled._FLAGS.extend({flags!r})
import colplugin as cp
from conftest import solve_with_gradients, two_area_net
out = {{}}
for dtype in (torch.float64, torch.float32):
    net = two_area_net(cp.load_preset("dl25"), dtype)
    rates = np.random.default_rng(3).uniform(0, 30, size=(11, 2, 3))  # a full chunk of 8 lanes and one of 3
    stim = cp.Stimulus([0.0, 0.0071], rates)
    for dense in (False, True):
        solver = cp.Solver("dopri5", rtol=1e-6, atol=1e-6, backend="fused", dense=dense, kernel="compiled",
                           checkpoint_every=3)
        out[(str(dtype), dense)] = solve_with_gradients(net, solver, stim, 0.02, 0.005)
torch.save(out, {path!r})
"""


def test_vector_and_plain_builds_give_the_same_numbers(tmp_path):
    """On x86-64 the kernel's loops over lanes and stages are written with the compiler's vector
    extension and compiled for AVX-512, AVX2 and baseline CPUs; each element's arithmetic and
    order of summation is the plain loops'. A build with plain loops only and no per-CPU clones
    (-DFK_NO_VEC -DFK_NO_CLONES) must give the same states, gradients and steps bit for bit, in
    float64 and float32, dense and sparse, with a full chunk of lanes and a partial one."""
    tests = os.path.dirname(os.path.abspath(__file__))
    runs = {}
    for name, flags in (("default", []), ("plain", ["-DFK_NO_VEC", "-DFK_NO_CLONES"])):
        path = tmp_path / f"{name}.pt"
        code = _VARIANT_RUN.format(tests=tests, flags=flags, path=str(path))
        env = dict(os.environ, COLPLUGIN_CACHE_DIR=str(tmp_path / "cache")) if flags else None  # default: as built
        subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True, text=True)
        runs[name] = torch.load(path)
    plain = [p for p in (tmp_path / "cache" / "kernels").iterdir() if p.is_file()]
    assert len(plain) == 1 and plain[0].name != os.path.basename(compiled._module()[0].__file__)  # its own build
    assert runs["default"].keys() == runs["plain"].keys()
    for key, (s, g, nfe) in runs["default"].items():
        s2, g2, nfe2 = runs["plain"][key]
        assert nfe == nfe2
        assert torch.equal(s, s2), key
        assert len(g) == len(g2) == 3 and all(torch.equal(a, b) for a, b in zip(g, g2)), key


def test_dmf_rates_of_recorded_states_equal_the_tensor_formula():
    """The kernel's f(V - A) of strided views of a state (every third number a variance or gating state),
    float64 and float32, against the tensor formula; the limit 1/d at a x = b; NaN stays NaN; layouts
    it cannot stride through, small tensors and tensors that need autograd are left to torch (None)."""
    from colplugin.transfers import _transfer_value

    a, b, d = 0.3, 0.5, 0.1
    P = 80
    gen = torch.Generator().manual_seed(0)
    state = torch.randn(301, 11, 3 * P, dtype=torch.float64, generator=gen) * 30.0
    V, A = state[..., :P], state[..., P:2 * P]
    r = compiled.dmf_rates(V, A, a, b, d)
    ref = _transfer_value(V - A, a, b, d)
    torch.testing.assert_close(r, ref, rtol=4e-15, atol=0)
    r32 = compiled.dmf_rates(V.float(), A.float(), a, b, d)
    torch.testing.assert_close(r32, _transfer_value((V - A).float(), a, b, d), rtol=2e-6, atol=0)
    x = torch.full((70_000,), b / a, dtype=torch.float64)
    x[5] = float("nan")
    fx = compiled.dmf_rates(x, None, a, b, d)
    assert fx[0] == pytest.approx(1 / d, rel=1e-15) and torch.isnan(fx[5])
    assert compiled.dmf_rates(V.transpose(0, 1), A.transpose(0, 1), a, b, d) is None
    assert compiled.dmf_rates(V[:2], A[:2], a, b, d) is None
    assert compiled.dmf_rates(V.clone().requires_grad_(), A, a, b, d) is None
