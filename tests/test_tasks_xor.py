"""XOR's loss, accuracy, trials and truth table against values computed by hand."""

import importlib
import math

import numpy as np
import pytest
import torch

from colplugin.tasks import XOR
from colplugin.tasks.xor import PATTERNS, margin, truth_table
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
    task = XOR()  # the paper's text: C's output min-max normalised over the batch, targets 0 / 1, threshold 0.5
    traj = FakeTrajectory({("upper", 0): [0.1, 0.9, 0.5, 0.6]})
    # normalised: 0, 1, 0.5, 0.625 against 0, 1, 1, 0 -> errors 0, 0, -0.5, 0.625 -> (0.25 + 0.390625) / 4
    assert float(task.loss(traj, _batch())) == pytest.approx(0.16015625, rel=1e-12)
    # predictions (> 0.5): 0, 1, 0, 1 against 0, 1, 1, 0 -> 2 of 4 right
    assert task.accuracy(traj, _batch()) == 0.5
    perfect = FakeTrajectory({("upper", 0): [0.3, 2.0, 2.0, 0.3]})
    assert float(task.loss(perfect, _batch())) == 0.0 and task.accuracy(perfect, _batch()) == 1.0


def test_loss_and_accuracy_with_the_codes_hz_targets():
    task = XOR(readout="hz")  # the paper's code: targets 0.25 Hz (class 0) and 1.0 Hz (class 1), threshold 0.625 Hz
    traj = FakeTrajectory({("upper", 0): [0.1, 0.9, 0.5, 0.7]})
    # errors -0.15, -0.1, -0.5, 0.45 -> 0.0225 + 0.01 + 0.25 + 0.2025 = 0.485 -> mean 0.12125
    assert float(task.loss(traj, _batch())) == pytest.approx(0.12125, rel=1e-12)
    assert task.accuracy(traj, _batch()) == 0.5  # 0, 1, 0, 1 against 0, 1, 1, 0
    with pytest.raises(ValueError, match="readout"):
        XOR(readout="sigmoid")


def test_margin_by_hand():
    label = torch.tensor([0.0, 1.0, 1.0, 0.0], dtype=torch.float64)
    # XOR-true min 0.9, XOR-false max 0.6, range 1.0 - 0.0 -> 0.3
    assert margin(torch.tensor([0.0, 0.9, 1.0, 0.6]), label) == pytest.approx(0.3)
    assert margin(torch.tensor([0.0, 0.5, 1.0, 0.6]), label) == pytest.approx(-0.1)  # not separable
    assert math.isnan(margin(torch.ones(4), label))
    traj = FakeTrajectory({("upper", 0): [0.0, 0.9, 1.0, 0.6]})
    assert XOR().metrics(traj, _batch()) == {"margin": pytest.approx(0.3)}


def test_paper_initialisation():
    """Every input weight at K_in * J_E (25.90 / 16.33 nA) + N(0, 0.1 nA); C's at 10 times that."""
    task = XOR()
    net = task.build_network(seed=3)
    w = net.projection_weights("input:lower")
    nominal = np.array([25.901 if t.endswith("L4E") else 16.331 for t in w["target"]])
    dev = w["weight"] - nominal
    assert len(dev) == 8 and np.all(np.abs(dev) < 0.5) and 0.02 < dev.std() < 0.3
    ff = net.projection_weights("feedforward:lower->upper")
    nominal_ff = np.array([259.01 if t.endswith("L4E") else 163.31 for t in ff["target"]])
    assert np.all(np.abs(ff["weight"] - nominal_ff) < 5.0)
    again = task.build_network(seed=3).projection_weights("input:lower")["weight"]
    np.testing.assert_array_equal(again, w["weight"])  # repeatable from the seed
    other = task.build_network(seed=4).projection_weights("input:lower")["weight"]
    assert not np.array_equal(other, w["weight"])


def test_no_seed_solves_xor_before_training():
    """Update 0 (one test-set simulation per seed): none of the 10 seeds is at 100 % before any update."""
    from colplugin.solve.simulate import simulate

    task = XOR()
    test = task.test_set()
    for seed in range(10):
        net = task.build_network(seed=seed)
        with torch.no_grad():
            traj = simulate(net, test.stimulus, task.duration, dt_out=task.dt_out, solver=task.solver)
        assert task.accuracy(traj, test) < 1.0, seed
        assert margin(task.output(traj), test.target) < 0, seed


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
    """XOR trains without the aids the paper did not use (no clipping, no rollback), from update 0."""
    s = XOR().settings
    assert (s.updates, s.lr, s.optimizer, s.gradient.name, s.clip_grad, s.rollback, s.stop_at_accuracy,
            s.batch_size, s.evaluate_initial) == (50, 0.2, "adam", "direct", None, None, 1.0, 16, True)
    from colplugin.tasks import Decision

    d = Decision().settings
    assert (d.updates, d.lr, d.gradient.name, d.clip_grad, d.rollback, d.stop_at_accuracy, d.patience) == \
        (400, 0.2, "direct", None, None, None, 15)  # early stopping on the validation loss
