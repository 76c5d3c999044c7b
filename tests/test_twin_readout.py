"""Task read-outs from rates (the spiking twin's accuracy): XOR and decision on hand-made rates."""

import numpy as np
import pytest
import torch

from colplugin.tasks.decision import Decision
from colplugin.tasks.xor import XOR
from colplugin.training import Task


def test_xor_accuracy_from_rates_by_hand():
    task = XOR()
    cond = task.evaluation_stimulus()  # 00, 01, 10, 11
    # C's L2/3E: high for 01 and 10 (XOR true), low for 00 and 11; two trials per pattern
    good = {"upper[0].L23E": np.array([[0.50, 0.52], [0.70, 0.68], [0.66, 0.71], [0.55, 0.51]])}
    assert task.accuracy_from_rates(good, cond) == 1.0
    # one 11 trial above every XOR-true trial: min-max over all 8 trials puts it at 1 -> wrong
    bad = {"upper[0].L23E": np.array([[0.50, 0.52], [0.70, 0.68], [0.66, 0.71], [0.55, 0.80]])}
    # normalised: (x - 0.5) / 0.3 > 0.5 <=> x > 0.65: 00 ok ok, 01 ok ok, 10 ok ok, 11 ok wrong
    assert task.accuracy_from_rates(bad, cond) == pytest.approx(7 / 8)
    # the "hz" read-out: threshold at (0.25 + 1.0) / 2 = 0.625 Hz
    hz = XOR(readout="hz")
    assert hz.accuracy_from_rates(bad, cond) == pytest.approx(7 / 8)
    with pytest.raises(ValueError, match="shape"):
        task.accuracy_from_rates({"upper[0].L23E": np.zeros((3, 2))}, cond)


def test_xor_read_out_agrees_with_the_trajectory_accuracy():
    """accuracy_from_rates on the DMF's final rates gives accuracy() of the same trials."""
    task = XOR()
    net = task.build_network(seed=0)
    from colplugin.solve.simulate import simulate

    batch = task.sample(8, torch.Generator().manual_seed(1))
    with torch.no_grad():
        traj = simulate(net, batch.stimulus, duration=task.duration, dt_out=task.dt_out, solver=task.solver)
    y = task.output(traj).numpy()
    # the same read-out, one trial per condition
    acc = task.accuracy_from_rates({"upper[0].L23E": y[:, None]}, batch.stimulus)
    assert acc == pytest.approx(task.accuracy(traj, batch))


def test_decision_accuracy_from_rates_by_hand():
    task = Decision()
    cond = task.evaluation_stimulus()  # mu_B = 20 (tie), 16, 12 Hz; mu_A = 20 Hz
    rates = {"mt[0].L23E": np.array([[1.0, 3.0], [5.0, 5.0], [6.0, 0.5]]),
             "mt[1].L23E": np.array([[2.0, 2.0], [1.0, 6.0], [0.5, 0.4]])}
    # the tie (condition 0) is left out; condition 1: one of two right; condition 2: both
    assert task.accuracy_from_rates(rates, cond) == pytest.approx(3 / 4)
    assert task.readout_window() == (0.9, 1.0)
    assert task.persistence_window() == pytest.approx((1.4, 1.5))  # the post-stimulus phase's last 0.1 s


def test_default_task_has_no_read_out_from_rates():
    t = XOR()  # the base class's defaults, called on a task
    assert Task.accuracy_from_rates(t, {}, t.evaluation_stimulus()) is None
    assert Task.readout_window(t) == (0.9, 1.0)
    assert Task.persistence_window(t) is None


def test_persistence_read_out_by_hand():
    """The twin's persistence block: the decision read-out over the window, the rate model's from its trajectory."""
    from colplugin.analysis.twin import _persistence, _windows

    task = Decision()
    cond = task.evaluation_stimulus()
    (w0, w1), late = _windows(task, task.duration)
    assert (w0, w1) == (0.9, 1.0) and late == pytest.approx((1.4, 1.5))
    names = ["mt[0].L23E", "mt[1].L23E"]
    t = np.arange(0, 1.5001, 0.1)
    r = np.zeros((len(t), 3, 2))
    r[t >= 1.35, 1] = [2.0, 0.5]  # condition 1: column 0 (the stronger input) holds; condition 2: column 1 wins
    r[t >= 1.35, 2] = [0.5, 2.0]
    spk = np.zeros((3, 2, 2))
    spk[1] = [[2.0, 0.5], [0.4, 0.6]]  # one of two trials holds
    spk[2] = [[2.0, 0.5], [2.0, 0.5]]
    got = _persistence(task, late, names, cond, t, r, spk)
    assert got["accuracy"] == pytest.approx(3 / 4) and got["dmf_accuracy"] == pytest.approx(1 / 2)
    assert got["per_condition"][1]["mt[0].L23E"] == {"dmf_hz": 2.0, "spiking_hz": pytest.approx(1.2)}
    with pytest.raises(ValueError, match="persistence window"):
        _windows(task, 1.2)


def test_condition_labels_name_the_stimulus_segment():
    """The twin's condition labels: XOR's input pattern; decision's stimulus phase, not its
    post-stimulus rest (the labels once read "inputs 0, 0 Hz" for every evidence level)."""
    from colplugin.analysis.twin import _condition_label

    xor = XOR().evaluation_stimulus()
    assert [_condition_label(xor, b) for b in range(4)] == [  # rest until 0.5 s, then 00, 01, 10, 11
        "inputs 0, 0 Hz (from 0.5 s)", "inputs 0, 20 Hz (from 0.5 s)", "inputs 20, 0 Hz (from 0.5 s)",
        "inputs 20, 20 Hz (from 0.5 s)"]
    dec = Decision().evaluation_stimulus()  # mu_A = 20 Hz, mu_B = 20, 16, 12 Hz from 0.5 to 1.0 s
    assert [_condition_label(dec, b) for b in range(3)] == [
        "inputs 20, 20 Hz (0.5-1 s)", "inputs 20, 16 Hz (0.5-1 s)", "inputs 20, 12 Hz (0.5-1 s)"]
