"""The digits task: scikit-learn's 8x8 digits through an area of columns (tiny settings)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import colplugin.tasks.digits as digits_mod
from colplugin.solve.simulate import simulate
from colplugin.tasks import get_task
from colplugin.tasks.digits import Digits, load_split
from colplugin.training import train


def tiny(**kw) -> Digits:
    return Digits(**{"columns": 4, "duration": 0.02, "batch_size": 8, "eval_size": 20, **kw})


def test_split_is_stratified_fixed_and_80_20():
    X_train, X_test, y_train, y_test = load_split(0)
    assert X_train.shape == (1437, 64) and X_test.shape == (360, 64)
    assert X_train.max() == 16 and X_train.min() == 0
    counts = np.bincount(y_test, minlength=10) / len(y_test)
    assert np.allclose(counts, np.bincount(y_train, minlength=10) / len(y_train), atol=0.01)
    assert np.array_equal(load_split(0)[3], y_test)


def test_registered_with_settings_from_epochs():
    task = get_task("digits", columns=3, epochs=2, batch_size=100)
    assert task.settings.updates == 29 and task.settings.batch_size == 100  # ceil(2 * 1437 / 100)
    with pytest.raises(ValueError, match="columns"):
        Digits(columns=0)


def test_network_layout_dale_and_device():
    task = tiny()
    net = task.build_network(seed=0)
    assert net.n_inputs == 64 and net.area_columns("hidden") == 4 and net.area_columns("output") == 10
    assert not net.areas["hidden"].split and not net.areas["output"].split
    for name in ("input:hidden", "feedforward:hidden->output"):
        w = net.projection_weights(name)
        assert w["learnable"] and (w["weight"] > 0).all()  # excitatory sources (Dale's law)
    assert len(net.projection_weights("input:hidden")["weight"]) == 64 * 4 * 2
    assert net.W_intra.device.type == "cpu"


def test_stimulus_rates_and_batches():
    task = tiny()
    batch = task.sample(8, torch.Generator().manual_seed(0))
    assert batch.stimulus.rates.shape == (8, 1, 64) and batch.target.dtype == torch.long
    assert float(batch.stimulus.rates.max()) <= 20.0 + 1e-12
    assert len(set(batch.info["index"].tolist())) == 8  # distinct images
    assert torch.equal(task.sample(8, torch.Generator().manual_seed(0)).target, batch.target)
    test = task.test_set()
    assert test.target.shape == (20,) and len(set(test.target.tolist())) == 10  # stratified subset
    assert torch.equal(task.test_set().target, test.target)
    assert task.held_out().target.shape == (360,)


def test_loss_accuracy_and_gradient():
    task = tiny()
    net = task.build_network(seed=0)
    batch = task.sample(8, torch.Generator().manual_seed(1))
    traj = simulate(net, batch.stimulus, task.duration, dt_out=task.dt_out, solver=task.solver)
    assert task.output(traj).shape == (8, 10)
    loss = task.loss(traj, batch)
    assert torch.isfinite(loss) and loss > 0
    assert 0.0 <= task.accuracy(traj, batch) <= 1.0
    loss.backward()
    grads = [p.grad for p in net.learnable_parameters()]
    assert len(grads) == 2 and all(g is not None and torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads)


def test_train_and_evaluate_writes_held_out_accuracy(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(digits_mod, "mlp_baseline", lambda seed=0, test_size=0.2, hidden=100: {"accuracy": 0.97})
    task = tiny(eval_size=10)
    net = task.build_network(seed=0)
    res = train(net, task, updates=2, seed=0, out=tmp_path, progress=False)
    assert res.metrics[0]["update"] == 0 and len(res.metrics) == 3
    ev = task.evaluate(net, tmp_path)
    assert 0.0 <= ev["final_accuracy"] <= 1.0 and ev["mlp_accuracy"] == 0.97
    assert np.asarray(ev["confusion"]).sum() == 360
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["final_accuracy"] == ev["final_accuracy"] and m["mlp_accuracy"] == 0.97
    assert m["subset_final_accuracy"] == res.summary["final_accuracy"]
    assert "MLPClassifier 0.9700" in capsys.readouterr().out
    assert "Held-out accuracy" in task.report_section(net, res, ev)[0]
    assert "receptive_fields.png" in task.figures(net, res)


def test_cli_options_build_the_task():
    from colplugin.cli import _task_from_args, build_parser

    args = build_parser().parse_args(["train", "digits", "--columns", "7", "--epochs", "1", "--batch-size", "32",
                                      "--trial-duration", "0.05", "--eval-size", "0"])
    task = _task_from_args(args)
    assert (task.columns, task.duration, task.batch_size, task.eval_size) == (7, 0.05, 32, 0)
    assert task.settings.updates == 45
    assert task.settings.lr_schedule == "constant"
    args = build_parser().parse_args(["train", "digits", "--lr-schedule", "cosine"])
    assert _task_from_args(args).settings.lr_schedule == "cosine"
    bad = build_parser().parse_args(["train", "xor", "--columns", "7"])
    with pytest.raises(ValueError, match="belongs to task 'digits'"):
        _task_from_args(bad)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    cpu, gpu = tiny(), tiny(device="cuda")
    net_c, net_g = cpu.build_network(seed=0), gpu.build_network(seed=0)
    assert net_g.W_intra.is_cuda
    batch = cpu.sample(8, torch.Generator().manual_seed(0))
    tc = simulate(net_c, batch.stimulus, cpu.duration, dt_out=cpu.dt_out, solver=cpu.solver)
    tg = simulate(net_g, batch.stimulus.to("cuda", torch.float64), gpu.duration, dt_out=gpu.dt_out, solver=gpu.solver)
    assert torch.allclose(gpu.loss(tg, batch).cpu(), cpu.loss(tc, batch), rtol=1e-9)
    assert gpu.predict(net_g, gpu.X_test[:16]).tolist() == cpu.predict(net_c, cpu.X_test[:16]).tolist()


def test_an_image_that_runs_away_counts_as_wrong_and_is_named(tmp_path, monkeypatch, capsys):
    """A chunk whose solve fails is solved image by image; the failing image is -1, the rest as before."""
    import sys

    from colplugin.solve.simulate import SimulationError

    task = tiny()
    net = task.build_network(seed=0)
    pixels = task.X_test[:12].copy()
    pixels[5] = 16.0  # every pixel at its maximum: the image that "runs away" below
    plain = task.predict(net, pixels, chunk=8)
    module = sys.modules["colplugin.solve.simulate"]
    real = module.simulate

    def fragile(network, stim, *args, **kwargs):
        if bool((stim.rates[:, 0, :] == task.rate).all(-1).any()):
            raise SimulationError("runaway rates: a population reached 9999 Hz")
        return real(network, stim, *args, **kwargs)

    monkeypatch.setattr(module, "simulate", fragile)
    pred = task.predict(net, pixels, chunk=8)
    assert pred[5] == -1 and np.array_equal(np.delete(pred, 5), np.delete(plain, 5))
    monkeypatch.setattr(digits_mod, "mlp_baseline", lambda seed=0, test_size=0.2, hidden=100: {"accuracy": 0.97})
    monkeypatch.setattr(task, "X_test", pixels)
    monkeypatch.setattr(task, "y_test", task.y_test[:12])
    ev = task.evaluate(net, tmp_path)
    assert ev["runaway_images"] == [5] and np.asarray(ev["confusion"]).sum() == 11
    assert ev["final_accuracy"] == pytest.approx(np.mean(np.delete(plain, 5) == np.delete(task.y_test, 5)) * 11 / 12)
    assert "1 ran away" in capsys.readouterr().out
