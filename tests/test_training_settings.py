"""Training settings: one place for every default, the API and the command line train alike."""

import dataclasses
import json

import pytest
import torch

import colplugin as cp
from colplugin.cli import main
from colplugin.solve.strategies import Adjoint, Direct, Solver
from colplugin.tasks import XOR
from colplugin.training import TrainSettings


def test_settings_validate_and_override():
    s = TrainSettings(updates=3, lr=0.5, gradient="adjoint", clip_grad=False)
    assert isinstance(s.gradient, Adjoint) and s.clip_grad is None
    assert s.override(lr=None, updates=7) == dataclasses.replace(s, updates=7)
    assert s.override(gradient=Direct()).gradient == Direct()
    assert s.to_dict()["gradient"] == {"name": "adjoint", "checkpoint": 1e-3, "rtol": None, "atol": None}
    json.dumps(s.to_dict())  # plain types only
    for bad, match in (({"updates": 0}, "updates"), ({"updates": 2.5}, "updates"), ({"lr": 0}, "lr"),
                       ({"lr": float("nan")}, "lr"), ({"rollback": 0.9}, "rollback"), ({"clip_grad": -1}, "clip"),
                       ({"stop_at_accuracy": 1.5}, "stop_at_accuracy"), ({"batch_size": 0}, "batch_size"),
                       ({"optimizer": "lbfgs"}, "optimizer"), ({"gradient": "backprop"}, "gradient"),
                       ({"lr_schedule": "linear"}, "lr_schedule")):
        with pytest.raises(ValueError, match=match):
            TrainSettings(**bad)


def test_solver_rule_of_the_adjoint():
    fused = Solver("dopri5", rtol=1e-5, atol=1e-4, backend="fused")
    assert TrainSettings(gradient="direct").solver_for(fused) is fused
    moved = TrainSettings(gradient=Adjoint()).solver_for(fused)
    assert moved == dataclasses.replace(fused, backend="torchdiffeq")
    plain = Solver("rk4")
    assert TrainSettings(gradient="adjoint").solver_for(plain) is plain


def test_train_refuses_bad_overrides_before_work():
    task = XOR()
    net = task.build_network(seed=0)
    before = [p.detach().clone() for p in net.learnable_parameters()]
    for bad in ({"lr": 0}, {"updates": -5}, {"rollback": 1.0}, {"gradient": "adjont"}):
        with pytest.raises(ValueError):
            cp.train(net, task, progress=False, **bad)
    for p, b in zip(net.learnable_parameters(), before):
        assert torch.equal(p.detach(), b)


def test_api_trains_as_the_cli(tmp_path, capsys):
    """`cp.train(net, XOR())` and `colplugin train xor` give the same numbers for the same seed."""
    seed, updates = 1, 2  # seed 1 is not solved after one update, so both updates run
    assert main(["train", "xor", "--seed", str(seed), "--updates", str(updates), "--out", str(tmp_path / "cli"),
                 "--no-progress"]) == 0
    cli = json.loads((tmp_path / "cli" / "metrics.json").read_text())
    task = XOR()
    net = task.build_network(seed=seed)
    api = cp.train(net, task, updates, seed=seed, progress=False)
    strip = lambda rows: [{k: v for k, v in r.items() if k != "wall_seconds"} for r in rows]  # noqa: E731
    assert len(api.metrics) == updates and strip(cli["per_update"]) == strip(api.metrics)
    for key in ("gradient", "settings", "solver", "test_solver", "lr", "clip_grad", "rollback", "stop_at_accuracy",
                "optimizer", "batch_size", "seed"):
        assert cli[key] == api.summary[key], key
    ckpt = torch.load(tmp_path / "cli" / "checkpoint.pt", weights_only=True)
    for name, value in net.state_dict().items():
        torch.testing.assert_close(ckpt["state_dict"][name], value, rtol=0, atol=0)
