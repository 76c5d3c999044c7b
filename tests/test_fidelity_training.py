"""Training rules of the paper's code: the learning curve from update 0, early stopping on the validation loss."""

import json

import pytest
import torch

import colplugin as cp
from colplugin.training import Batch, Task, TrainSettings
from conftest import one_column_input_net, sample_constant_target


class Scripted(Task):
    """One column, one learnable input; the test (validation) loss follows a fixed script."""

    name = "scripted"
    duration = 0.02
    dt_out = 0.01
    solver = cp.Solver("rk4", step=1e-3, backend="fused")

    def __init__(self, script, updates=6, **settings):
        self.script = list(script)
        self.calls = 0
        self.settings = TrainSettings(updates=updates, lr=0.1, batch_size=2, **settings)

    def build_network(self, params=None, seed=None):
        return one_column_input_net(params, seed)

    def sample(self, n, generator):
        return sample_constant_target(n, generator)

    def test_set(self):
        stim = cp.Stimulus([0.0], torch.tensor([[[10.0]]], dtype=torch.float64))
        return Batch(stim, torch.full((1,), 3.0, dtype=torch.float64), {"test": True})

    def loss(self, traj, batch):
        if batch.info.get("test"):
            self.calls += 1
            return torch.tensor(self.script[self.calls - 1])
        return torch.mean((traj.get("rate", "mt", 0, "L23E")[-1] - batch.target) ** 2)


def test_update_zero_row_before_any_update():
    task = Scripted([1.0, 0.9, 0.8], evaluate_initial=True, updates=2)
    res = cp.train(task.build_network(seed=0), task, seed=0, progress=False)
    assert [r["update"] for r in res.metrics] == [0, 1, 2]
    assert res.metrics[0]["test_loss"] == 1.0 and "loss" not in res.metrics[0]
    assert res.summary["updates"] == 2 and res.summary["evaluate_initial"] is True


def test_early_stopping_restores_the_lowest_validation_loss(tmp_path):
    # validation losses at updates 0..: 1.0, 0.5 (best), 0.7, 0.8 -> with patience 2 stop after update 3
    task = Scripted([1.0, 0.5, 0.7, 0.8, 0.9, 0.95, 0.99], evaluate_initial=True, patience=2)
    net = task.build_network(seed=0)
    res = cp.train(net, task, seed=0, progress=False, out=tmp_path)
    assert [r["update"] for r in res.metrics] == [0, 1, 2, 3]
    assert res.summary["early_stopping_update"] == 1 and res.summary["updates"] == 3
    once = Scripted([1.0, 0.5], evaluate_initial=True, updates=1)
    ref = cp.train(once.build_network(seed=0), once, seed=0, progress=False)
    torch.testing.assert_close(net.inp_theta, ref.network.inp_theta, rtol=0, atol=0)  # the weights of update 1
    assert torch.load(tmp_path / "best_weights.pt", weights_only=True)["update"] == 1
    assert json.loads((tmp_path / "metrics.json").read_text())["patience"] == 2


def test_patience_must_be_a_positive_whole_number():
    with pytest.raises(ValueError, match="patience"):
        TrainSettings(patience=0)
    assert TrainSettings(patience=False).patience is None
