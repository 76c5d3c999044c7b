"""XOR's loss, accuracy, trials and truth table against values computed by hand."""

import importlib

import pytest
import torch

from colplugin.tasks import XOR
from colplugin.tasks.xor import PATTERNS, truth_table
from colplugin.training import Batch


class FakeTrajectory:
    """Only what XOR reads: ``get("rate", area, column, "L23E")`` (T, B) and ``state``."""

    def __init__(self, responses: dict[tuple[str, int], list[float]]):
        self.responses = {k: torch.tensor([v], dtype=torch.float64) for k, v in responses.items()}
        self.state = torch.zeros(1, dtype=torch.float64)

    def get(self, kind, area, column, population):
        assert (kind, population) == ("rate", "L23E")
        return self.responses[(area, column)]


def _batch():  # the four patterns 00, 01, 10, 11 -> labels 0, 1, 1, 0
    return Batch(None, torch.tensor([0.0, 1.0, 1.0, 0.0], dtype=torch.float64), {})


def test_loss_and_accuracy_by_hand():
    task = XOR()  # targets 0.15 Hz (class 0) and 1.0 Hz (class 1), threshold 0.575 Hz
    traj = FakeTrajectory({("upper", 0): [0.1, 0.9, 0.5, 0.6]})
    # errors -0.05, -0.1, -0.5, 0.45 -> squares 0.0025 + 0.01 + 0.25 + 0.2025 = 0.465 -> mean 0.11625
    assert float(task.loss(traj, _batch())) == pytest.approx(0.11625, rel=1e-12)
    # predictions (> 0.575): 0, 1, 0, 1 against 0, 1, 1, 0 -> 2 of 4 right
    assert task.accuracy(traj, _batch()) == 0.5
    perfect = FakeTrajectory({("upper", 0): [0.15, 1.0, 1.0, 0.15]})
    assert float(task.loss(perfect, _batch())) == 0.0 and task.accuracy(perfect, _batch()) == 1.0


def test_sample_cycles_the_patterns_with_bounded_jitter():
    task = XOR()
    batch = task.sample(8, torch.Generator().manual_seed(0))
    x = PATTERNS[torch.arange(8) % 4]
    torch.testing.assert_close(batch.info["x"], x)
    torch.testing.assert_close(batch.target, torch.tensor([0, 1, 1, 0] * 2, dtype=torch.float64))
    rates = batch.stimulus.rates  # (8 trials, 2 segments, 2 inputs)
    assert rates.shape == (8, 2, 2) and torch.all(rates[:, 0] == 0)
    on = rates[:, 1]
    assert torch.all(on[x == 0] == 0)
    assert torch.all((on[x == 1] >= 20 * 0.975) & (on[x == 1] <= 20 * 1.025))
    assert batch.stimulus.times.tolist() == [0.0, 0.5]


def test_truth_table_by_hand(monkeypatch):
    task = XOR()
    net = task.build_network(seed=0)
    # input weights (nA): targets lower[0].L4E, lower[1].L4E, lower[0].L4E, lower[1].L4E, then the same onto L4I
    net.set_projection_weights("input:lower", [10.0, 20.0, 30.0, 40.0, 5.0, 6.0, 7.0, 8.0])
    net.set_projection_weights("feedforward:lower->upper", [100.0, 200.0, 50.0, 25.0])  # L4E, L4E, L4I, L4I
    responses = {("lower", 0): [0.1, 2.0, 2.0, 2.1],   # threshold 1.1 -> 0111: OR
                 ("lower", 1): [0.1, 0.2, 0.3, 3.0],   # threshold 1.55 -> 0001: AND
                 ("upper", 0): [0.2, 1.0, 1.0, 0.2]}   # threshold 0.6 -> 0110: XOR
    seen = {}

    def fake_simulate(network, stimulus, duration, **kw):
        seen["rates"], seen["duration"] = stimulus.rates, duration
        return FakeTrajectory(responses)

    # the module, not the function of the same name that colplugin.solve re-exports
    monkeypatch.setattr(importlib.import_module("colplugin.solve.simulate"), "simulate", fake_simulate)
    table = truth_table(net, task)
    assert seen["duration"] == 1.0
    torch.testing.assert_close(seen["rates"][:, 1].double(), 20.0 * PATTERNS)  # the four noiseless patterns
    assert [table[c]["function"] for c in ("lower[0]", "lower[1]", "upper[0]")] == ["OR", "AND", "XOR"]
    assert table["lower[0]"]["bits"] == [0, 1, 1, 1]
    # E/I input ratios: (10 + 30) / (5 + 7), (20 + 40) / (6 + 8), (100 + 200) / (50 + 25)
    assert table["lower[0]"]["input_E_nA"] == pytest.approx(40.0)
    assert table["lower[0]"]["input_I_nA"] == pytest.approx(12.0)
    assert table["lower[0]"]["EI_ratio"] == pytest.approx(40 / 12)
    assert table["lower[1]"]["EI_ratio"] == pytest.approx(60 / 14)
    assert table["upper[0]"]["EI_ratio"] == pytest.approx(4.0)
    lines = task.report_section(net, None, table)
    assert lines[2].startswith("| lower[0] | OR | 3.33 |")


def test_default_training_settings():
    """The defaults that `colplugin train` used before they moved onto the tasks."""
    s = XOR().settings
    assert (s.updates, s.lr, s.optimizer, s.gradient.name, s.clip_grad, s.rollback, s.stop_at_accuracy,
            s.batch_size) == (50, 0.2, "adam", "direct", 0.1, 1.5, 1.0, 16)
    from colplugin.tasks import Decision

    d = Decision().settings
    assert (d.updates, d.lr, d.gradient.name, d.clip_grad, d.rollback, d.stop_at_accuracy) == \
        (60, 0.2, "direct", None, None, None)
