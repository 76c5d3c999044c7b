"""Checkpointed backward pass of the fused solver: the same gradients, less stored memory."""

import math

import numpy as np
import pytest
import torch

import colplugin as cp
from colplugin.solve import compiled, fused
from colplugin.solve.fused import TABLEAUS, fused_solve

from conftest import solve_with_gradients, two_area_net


def _net(dl25):
    return two_area_net(dl25)


def _stim():
    rates = np.array([[[0, 0, 0], [15, 5, 3], [0, 0, 0]], [[0, 0, 0], [2, 30, 1], [10, 10, 10]]], float)
    return cp.Stimulus([0.0, 0.0203, 0.05], rates)  # a change point off the grid


def _grads(net, solver, duration=0.06, dt_out=0.007):
    """States and gradients (network tensors, y0) of a loss on outputs at 7 ms spacing."""
    return solve_with_gradients(net, solver, _stim(), duration, dt_out)[:2]


def _close(a, b, rtol=1e-12):
    scale = float(b.abs().max())
    assert scale > 0
    assert float((a - b).abs().max()) <= rtol * scale


@pytest.mark.parametrize("dense", [True, False])
@pytest.mark.parametrize("method,options", [("rk4", {"step": 1e-3}), ("dopri5", {"rtol": 1e-7, "atol": 1e-9})])
def test_checkpointed_gradients_equal_keep_everything(dl25, dense, method, options):
    """Parameters, drive (learnable input) and y0, for M = 1, M = 7, 10 and M past the end.

    rk4's grid (1 ms plus the 20.3 ms change point) puts the outputs at 7 and 14 ms after
    7 and 14 steps: at chunk edges for M = 1 and 7, inside a chunk for M = 10; later
    outputs, and dopri5's, fall where they fall. 61 steps: neither 7 nor 10 divides them.
    """
    net = _net(dl25)
    ref_s, ref_g = _grads(net, cp.Solver(method, backend="fused", dense=dense, checkpoint_every=0, **options))
    assert len(ref_g) == 3  # recurrent (lateral, feedforward) and input weights (through the drive), y0
    for every in (1, 7, 10, 10_000):
        s, g = _grads(net, cp.Solver(method, backend="fused", dense=dense, checkpoint_every=every, **options))
        assert torch.equal(s, ref_s)  # the forward is untouched
        for a, b in zip(g, ref_g):
            _close(a, b)


def _saved(net, rates, y0, stops, every, kernel="eager"):
    """Bytes the forward (rk4) saves for the backward pass besides the drive, the checkpoint
    spacing it used, and the gradients (network tensors, y0). The bytes count the eager
    loop's saved tensors (the compiled kernel keeps its records in C)."""
    packed = []

    def pack(t):
        packed.append(t.numel() * t.element_size())
        return t

    opts = {}
    function = fused._FusedSolve if kernel == "eager" else compiled._CompiledSolve
    original = function.forward

    def forward(ctx, *args):
        out = original(ctx, *args)
        opts.update(args[8])
        return out

    for p in net.parameters():
        p.grad = None
    y0 = y0.clone().requires_grad_()
    field = net.field(rates, dense=True)
    function.forward = staticmethod(forward)
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out, _ = fused_solve(field, y0, stops, [0] * (len(stops) - 1), [len(stops) // 3, len(stops) - 1],
                                 "rk4", lambda t, x, n: None, checkpoint_every=every, kernel=kernel)
    finally:
        function.forward = original
    drive = field.fused().drive
    out.pow(2).sum().backward()
    grads = [p.grad.clone() for p in net.parameters() if p.grad is not None] + [y0.grad]
    if kernel != "eager":
        return None, opts["checkpoint_used"], grads
    return max(packed) if every == 0 else sum(packed) - drive.numel() * drive.element_size(), \
        opts["checkpoint_used"], grads


def test_stored_memory_drops_by_the_expected_factor(dl25):
    """rk4 over 400 steps: every stage (4 stages x (w, g) = 4 states a step) against one state
    every M steps, counted from the tensors the forward saves; gradients unchanged."""
    net = _net(dl25)
    rates = torch.full((4, 1, 3), 10.0, dtype=torch.float64)
    B, P = 4, net.field(rates).P
    y0 = net.initial_state(B)
    n = 400
    stops = [i * 5e-4 for i in range(n + 1)]
    s = TABLEAUS["rk4"].stages
    state = B * 2 * P * 8  # bytes of one state
    w_bytes, used_keep, g_keep = _saved(net, rates, y0, stops, 0)  # the largest saved tensor: w of every stage
    assert used_keep == 0 and 2 * w_bytes == n * s * state
    for every in (1, 25, 37):
        kept, used, g = _saved(net, rates, y0, stops, every)
        assert used == every and kept == math.ceil(n / every) * state
        for a, b in zip(g, g_keep):
            _close(a, b)
    # automatic: every stage while small; past the budget, checkpoints about sqrt(2 s n) apart
    assert _saved(net, rates, y0, stops, None)[1] == 0
    budget = fused.KEEP_ALL_BYTES
    for fit in (1, 20):  # steps whose stages fit the budget
        try:
            fused.KEEP_ALL_BYTES = fit * s * state
            kept, used, g = _saved(net, rates, y0, stops, None)
        finally:
            fused.KEEP_ALL_BYTES = budget
        assert used >= fit and kept == math.ceil(n / used) * state
        assert kept <= max(2 * math.sqrt(2 * s * n), n / fit) * state
        for a, b in zip(g, g_keep):
            _close(a, b)


def test_checkpoint_every_must_be_a_non_negative_int(dl25):
    for bad in (-1, 2.5, "10", True):
        with pytest.raises(ValueError, match="checkpoint_every must be None"):
            cp.Solver("rk4", backend="fused", checkpoint_every=bad)
    net = _net(dl25)
    with pytest.raises(ValueError, match="checkpoint_every must be None"):
        fused_solve(net.field(dense=False), net.initial_state(1), [0.0, 0.01], [0], [1], "rk4",
                    lambda t, x, n: None, checkpoint_every=-3)
    assert type(cp.Solver("rk4", checkpoint_every=np.int64(5)).to_dict()["engine"]["checkpoint_every"]) is int


@pytest.mark.skipif(not compiled.kernel_available()[0],
                    reason=f"no compiled kernel here ({compiled.kernel_available()[1]})")
def test_compiled_kernel_records_what_the_eager_loop_records(dl25):
    """The same checkpoint spacing (0: every stage; M; automatic, also past a shrunken
    budget) and the same gradients as the eager loop, from the compiled kernel."""
    net = _net(dl25)
    rates = torch.full((4, 1, 3), 10.0, dtype=torch.float64)
    y0 = net.initial_state(4)
    stops = [i * 5e-4 for i in range(401)]
    state = 4 * 2 * net.field(rates).P * 8
    budget = fused.KEEP_ALL_BYTES
    for every, fit in ((0, None), (25, None), (None, None), (None, 20)):
        try:
            if fit:
                fused.KEEP_ALL_BYTES = fit * TABLEAUS["rk4"].stages * state
            _, used_e, g_e = _saved(net, rates, y0, stops, every)
            _, used_c, g_c = _saved(net, rates, y0, stops, every, kernel="compiled")
        finally:
            fused.KEEP_ALL_BYTES = budget
        assert used_c == used_e
        for a, b in zip(g_c, g_e):
            _close(a, b)
