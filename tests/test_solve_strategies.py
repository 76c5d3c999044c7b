"""The Solver's three parts: method, step control, engine; shorthands, records and their round trip."""

import dataclasses
import json

import pytest
import torch

import colplugin as cp
from colplugin.solve.strategies import Engine, ErrorControl, FixedStep

from conftest import two_column_net


def test_shorthands_set_the_parts():
    s = cp.Solver("dopri5", rtol=1e-8, atol=1e-7, step=1e-4, backend="auto", kernel="eager", dense=False,
                  checkpoint_every=3, max_steps=50)
    assert s.control == ErrorControl(rtol=1e-8, atol=1e-7, first_step=1e-4)
    assert s.engine == Engine(backend="auto", kernel="eager", dense=False, checkpoint_every=3)
    assert s == cp.Solver("dopri5", ErrorControl(1e-8, 1e-7, 1e-4), Engine("auto", "eager", False, 3), max_steps=50)
    assert (s.rtol, s.atol, s.step, s.backend, s.kernel, s.dense, s.checkpoint_every, s.max_steps) == (
        1e-8, 1e-7, 1e-4, "auto", "eager", False, 3, 50)
    fixed = cp.Solver("rk4", step=2e-3)
    assert fixed.control == FixedStep(2e-3) and fixed.rtol is None and fixed.atol is None
    # a shorthand overrides the given part's field, the rest of the part stays
    s2 = cp.Solver("dopri5", ErrorControl(rtol=1e-3, atol=1e-3), atol=1e-9)
    assert s2.control == ErrorControl(rtol=1e-3, atol=1e-9)


def test_parts_are_independent_choices():
    """Changing the engine keeps method and control; dataclasses.replace takes parts and shorthands."""
    s = cp.Solver("midpoint", step=1e-3, backend="auto")
    on = s.on("torchdiffeq")
    assert (on.method, on.control, on.backend) == ("midpoint", FixedStep(1e-3), "torchdiffeq")
    assert dataclasses.replace(s, backend="fused") == s.on("fused")
    assert dataclasses.replace(s, control=FixedStep(2e-3)).step == 2e-3
    assert cp.Solver.default().resolve(cp.Adjoint()).backend == "torchdiffeq"
    assert cp.Solver.default().resolve(cp.Direct()).backend == "fused"


@pytest.mark.parametrize("solver", [
    cp.Solver(), cp.Solver.default(), cp.Solver("euler", step=1e-4, backend="fused", kernel="eager"),
    cp.Solver("dopri5", rtol=1e-8, atol=1e-8, dense=True, checkpoint_every=0, max_steps=10),
])
def test_record_round_trip(solver):
    assert cp.Solver.from_dict(json.loads(json.dumps(solver.to_dict()))) == solver


def test_flat_records_of_earlier_versions_read_back():
    """Records written before the split were flat (every field at top level, tolerances also for fixed steps)."""
    flat = {"method": "rk4", "step": 1e-3, "rtol": 1e-6, "atol": 1e-6, "max_steps": 1000000, "backend": "fused",
            "dense": None, "checkpoint_every": None, "kernel": "auto"}
    assert cp.Solver.from_dict(flat) == cp.Solver("rk4", step=1e-3, backend="fused")
    flat = dict(flat, method="dopri5", rtol=1e-5, atol=1e-4, step=5e-4, backend="auto")
    assert cp.Solver.from_dict(flat) == cp.Solver("dopri5", rtol=1e-5, atol=1e-4, backend="auto")
    with pytest.raises(ValueError, match="unknown step control"):
        cp.Solver.from_dict({"method": "rk4", "control": {"type": "PID"}})


def test_split_solver_integrates_like_the_shorthand(dl25):
    """Same numbers from the parts as from the shorthand (and the fixed step is the one given)."""
    net = two_column_net(dl25)
    stim = cp.Stimulus([0.0, 0.01], [[0, 0], [20, 10]])
    a = cp.simulate(net, stim, 0.02, solver=cp.Solver("rk4", FixedStep(1e-3), Engine("fused")))
    b = cp.simulate(net, stim, 0.02, solver=cp.Solver("rk4", step=1e-3, backend="fused"))
    torch.testing.assert_close(a.rate, b.rate, rtol=0, atol=0)
    c = cp.simulate(net, stim, 0.02, solver=cp.Solver("rk4", step=5e-4, backend="fused"))
    assert not torch.equal(a.rate, c.rate)


def test_the_earliest_flat_records_and_bad_records():
    flat = {"method": "dopri5", "step": 5e-4, "rtol": 1e-6, "atol": 1e-6, "adjoint_rtol": None, "adjoint_atol": None}
    assert cp.Solver.from_dict(flat) == cp.Solver("dopri5", rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="dicts"):
        cp.Solver.from_dict({"method": "rk4", "control": {"type": "FixedStep", "step": 1e-3}, "engine": None})
    with pytest.raises(ValueError, match="method"):
        cp.Solver.from_dict({"step": 1e-3})
