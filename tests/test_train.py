import json

import pytest
import torch

import colplugin as cp
from colplugin.tasks import XOR, Decision
from colplugin.training import TrainSettings
from colplugin.training.trainer import CheckpointError, TrainingDiverged, load_checkpoint, train

from conftest import two_column_net


def _grads(net, gradient):
    stim = cp.Stimulus([0.0, 0.02], [[[0, 0], [20, 10]], [[0, 0], [5, 30]]])
    for p in net.learnable_parameters():
        p.grad = None
    traj = cp.simulate(net, stim, duration=0.04, dt_out=0.01, gradient=gradient,
                       solver=cp.Solver("dopri5", rtol=1e-10, atol=1e-10))
    (traj.rate[-1] ** 2).sum().backward()
    return torch.cat([p.grad.reshape(-1) for p in net.learnable_parameters()])


def test_adjoint_and_direct_gradients_agree(dl25):
    net = two_column_net(dl25)
    g_direct = _grads(net, "direct")
    g_adjoint = _grads(net, "adjoint")
    rel = (g_adjoint - g_direct).norm() / g_direct.norm()
    assert rel < 1e-4
    assert g_direct.norm() > 0


class TinyXOR(XOR):
    """XOR with a shorter trial, for fast tests; plain training settings (adjoint, lr 0.1, no aids)."""

    def __init__(self):
        super().__init__()
        self.settings = TrainSettings(updates=50, lr=0.1, gradient="adjoint", batch_size=4)
        self.t_on, self.duration, self.dt_out = 0.05, 0.15, 0.15

    def test_set(self):
        return self.sample(8, torch.Generator().manual_seed(1))


def test_training_lowers_the_loss(tmp_path):
    task = TinyXOR()
    net = task.build_network(seed=0)
    test = task.test_set()
    with torch.no_grad():
        before = float(task.loss(cp.simulate(net, test.stimulus, task.duration, dt_out=task.dt_out,
                                             solver=task.solver), test))
    res = train(net, task, updates=4, gradient="adjoint", lr=0.05, seed=0, progress=False, out=tmp_path)
    losses = [m["test_loss"] for m in res.metrics]
    assert losses[-1] < 0.5 * before
    assert all(b < a for a, b in zip(losses, losses[1:]))
    data = json.loads((tmp_path / "metrics.json").read_text())
    for key in ("final_accuracy", "updates", "wall_seconds", "seed", "gradient"):
        assert key in data
    assert data["updates"] == 4 and data["gradient"] == {"name": "adjoint", "checkpoint": 1e-3, "rtol": None,
                                                         "atol": None}
    # the adjoint integrates on torchdiffeq (TrainSettings.solver_for); test solves on the fused loop, which
    # the task's backend="auto" picks for the DMF (the records hold the concrete backends)
    assert cp.Solver.from_dict(data["solver"]) == task.solver.on("torchdiffeq")
    assert cp.Solver.from_dict(data["test_solver"]) == task.solver.on("fused")
    assert data["settings"]["lr"] == 0.05 and data["settings"]["clip_grad"] is None


class _Interrupt(Exception):
    """Stands for a killed process: raised by a callback after the checkpoint of an update is written."""


def _interrupt_after(n):
    def cb(row):
        if row["update"] == n:
            raise _Interrupt

    return cb


def _interrupted(task, net, updates, n, out, **kw):
    with pytest.raises(_Interrupt):
        train(net, task, updates=updates, out=out, callbacks=[_interrupt_after(n)], **kw)
    assert not (out / "metrics.json").exists()  # an interrupted run has no metrics.json


def test_resume_continues_exactly(tmp_path):
    task = TinyXOR()
    full = task.build_network(seed=1)
    train(full, task, updates=3, gradient="direct", seed=5, progress=False, evaluate=False, out=tmp_path / "a")
    _interrupted(task, task.build_network(seed=1), 3, 2, tmp_path / "b", gradient="direct", seed=5,
                 progress=False, evaluate=False)
    resumed = task.build_network(seed=1)
    train(resumed, task, updates=3, gradient="direct", seed=5, progress=False, evaluate=False,
          out=tmp_path / "b", resume=True)
    for a, b in zip(full.learnable_parameters(), resumed.learnable_parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    ckpt = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)
    assert ckpt["update"] == 3
    assert ckpt["gradient"] == {"name": "direct"} and ckpt["solver"]["engine"]["backend"] == "fused"
    assert ckpt["settings"]["batch_size"] == 4 and ckpt["task"]["settings"]["gradient"] == {"name": "adjoint",
                                                                                          "checkpoint": 1e-3,
                                                                                          "rtol": None,
                                                                                          "atol": None}


def test_corrupt_and_incompatible_checkpoints(tmp_path, dl25):
    task = TinyXOR()
    net = task.build_network(seed=0)
    train(net, task, updates=1, gradient="direct", progress=False, evaluate=False, out=tmp_path)
    path = tmp_path / "checkpoint.pt"
    with pytest.raises(CheckpointError, match="does not fit"):
        load_checkpoint(path, two_column_net(dl25))
    rebuilt = load_checkpoint(path)["network"]
    torch.testing.assert_close(rebuilt.inp_theta, net.inp_theta)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")


def test_divergence_stops_and_keeps_last_checkpoint(tmp_path):
    task = TinyXOR()
    net = task.build_network(seed=0)
    train(net, task, updates=1, gradient="direct", progress=False, evaluate=False, out=tmp_path)
    before = (tmp_path / "checkpoint.pt").read_bytes()
    net.set_projection_weights("feedforward:lower->upper", 1e7)
    with pytest.raises(TrainingDiverged, match="last good checkpoint"):
        train(net, task, updates=3, gradient="direct", progress=False, evaluate=False, out=tmp_path, resume=False)
    assert (tmp_path / "checkpoint.pt").read_bytes() == before


def test_decision_task_shapes():
    task = Decision()
    batch = task.sample(3, torch.Generator().manual_seed(0))
    mu = batch.info["mu"]
    ratio = (mu[:, 1] / mu[:, 0] - 1).abs()
    assert torch.all((mu[:, 0] >= 15) & (mu[:, 0] <= 40))
    assert torch.all((ratio >= 1 / 15 - 1e-12) & (ratio <= 1 / 7.5 + 1e-12))
    assert batch.target.shape == (151, 3, 2)


def test_clip_grad_bounds_the_step():
    task = TinyXOR()
    net = task.build_network(seed=0)
    before = [p.detach().clone() for p in net.learnable_parameters()]
    train(net, task, updates=1, gradient="direct", optimizer="sgd", lr=1.0, clip_grad=1e-6,
          progress=False, evaluate=False)
    step = torch.sqrt(sum(((p.detach() - b) ** 2).sum() for p, b in zip(net.learnable_parameters(), before)))
    assert 0 < float(step) <= 1e-6 * (1 + 1e-9)  # SGD step = lr * clipped gradient


def test_rollback_restores_the_best_parameters_and_halves_the_rate():
    """Gradient *ascent* raises the loss; the next update must undo it exactly and halve lr."""
    task = TinyXOR()
    net = task.build_network(seed=0)
    start = [p.detach().clone() for p in net.learnable_parameters()]
    res = train(net, task, updates=2, gradient="direct", lr=3.0, rollback=1.02, progress=False, evaluate=False,
                optimizer=lambda params: torch.optim.SGD(params, lr=3.0, maximize=True))
    first, second = res.metrics
    assert second["loss"] > 1.02 * first["loss"]  # the ascent step made things worse ...
    assert not first["rolled_back"] and second["rolled_back"]  # ... so it was rolled back
    assert second["lr"] == pytest.approx(1.5)
    for p, s in zip(net.learnable_parameters(), start):
        torch.testing.assert_close(p.detach(), s, rtol=0, atol=0)
    with pytest.raises(ValueError, match="rollback"):
        train(net, task, updates=1, rollback=0.9, progress=False, evaluate=False)


def test_resume_keeps_the_rollback_state(tmp_path):
    """A run resumed after update 1 must still roll update 2 back to update 1's parameters."""
    task = TinyXOR()
    kw = dict(gradient="direct", lr=3.0, rollback=1.02, progress=False, evaluate=False, seed=2,
              optimizer=lambda params: torch.optim.SGD(params, lr=3.0, maximize=True))
    full = task.build_network(seed=1)
    res = train(full, task, updates=3, out=tmp_path / "a", **kw)
    assert res.metrics[1]["rolled_back"]
    _interrupted(task, task.build_network(seed=1), 3, 1, tmp_path / "b", **kw)
    resumed = task.build_network(seed=1)
    res2 = train(resumed, task, updates=3, out=tmp_path / "b", resume=True, **kw)
    assert [m["rolled_back"] for m in res2.metrics] == [m["rolled_back"] for m in res.metrics]
    for a, b in zip(full.learnable_parameters(), resumed.learnable_parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_resume_refuses_other_settings(tmp_path):
    task = TinyXOR()
    _interrupted(task, task.build_network(seed=0), 3, 1, tmp_path, gradient="direct", progress=False,
                 evaluate=False)
    with pytest.raises(CheckpointError, match="other training settings.*gradient"):
        train(task.build_network(seed=0), task, updates=2, gradient="adjoint", progress=False, evaluate=False,
              out=tmp_path, resume=True)
    with pytest.raises(CheckpointError, match="lr: 0.1 -> 0.3"):
        train(task.build_network(seed=0), task, updates=2, gradient="direct", lr=0.3, progress=False,
              evaluate=False, out=tmp_path, resume=True)
    res = train(task.build_network(seed=0), task, updates=2, gradient="direct", progress=False, evaluate=False,
                out=tmp_path, resume=True)  # more updates with the same settings: fine
    assert len(res.metrics) == 2


def test_resume_refuses_a_finished_run(tmp_path):
    task = TinyXOR()
    train(task.build_network(seed=0), task, updates=1, gradient="direct", progress=False, evaluate=False,
          out=tmp_path)
    before = (tmp_path / "checkpoint.pt").read_bytes()
    with pytest.raises(CheckpointError, match="finished"):
        train(task.build_network(seed=0), task, updates=3, gradient="direct", progress=False, evaluate=False,
              out=tmp_path, resume=True)
    assert (tmp_path / "checkpoint.pt").read_bytes() == before  # nothing rewritten


def test_a_diverging_test_set_is_a_training_divergence(tmp_path, monkeypatch):
    """A SimulationError while evaluating the test set ends training like any divergence (TrainingDiverged)."""
    import colplugin.training.trainer as trainer
    from colplugin.solve import SimulationError
    from colplugin.training import TrainingDiverged

    task = TinyXOR()
    real = trainer.simulate

    def diverges_on_test(network, stimulus, *a, **kw):
        if stimulus.batch_size == task.test_set().stimulus.batch_size and not torch.is_grad_enabled():
            raise SimulationError("runaway rates (test)")
        return real(network, stimulus, *a, **kw)

    monkeypatch.setattr(trainer, "simulate", diverges_on_test)
    with pytest.raises(TrainingDiverged, match="test set diverged"):
        train(task.build_network(seed=0), task, updates=1, gradient="direct", progress=False, out=tmp_path)


def test_resume_refuses_another_seed(tmp_path):
    task = TinyXOR()
    _interrupted(task, task.build_network(seed=0), 3, 1, tmp_path, gradient="direct", seed=7, progress=False,
                 evaluate=False)
    with pytest.raises(CheckpointError, match="started with seed 7"):
        train(task.build_network(seed=0), task, updates=3, gradient="direct", seed=99, progress=False,
              evaluate=False, out=tmp_path, resume=True)


def test_an_update_that_does_not_fit_in_memory_says_what_to_change(monkeypatch):
    """The allocator's error becomes a MemoryError that names the network, the batch and the fixes."""
    import colplugin.training.trainer as trainer
    from colplugin.tasks import XOR

    def no_memory(*args, **kwargs):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory: "
                           "you tried to allocate 94371840000 bytes")

    monkeypatch.setattr(trainer, "simulate", no_memory)
    task = XOR()
    net = task.build_network(seed=0)
    B = task.settings.batch_size
    with pytest.raises(MemoryError, match=rf"update 1: .*24 populations at batch {B} .*--nproc"):
        trainer.train(net, task, updates=2, progress=False, evaluate=False)


def test_cosine_schedule_anneals_to_zero_and_resumes_exactly(tmp_path):
    """lr after update k of n is lr0 (1 + cos(pi k / n)) / 2, written out here; a resumed run follows it."""
    import math

    task = TinyXOR()
    kw = dict(updates=4, gradient="direct", lr=0.2, lr_schedule="cosine", seed=3, progress=False, evaluate=False)
    full = task.build_network(seed=1)
    res = train(full, task, out=tmp_path / "a", **kw)
    expected = [0.2 * (1 + math.cos(math.pi * k / 4)) / 2 for k in (1, 2, 3, 4)]
    assert [m["lr"] for m in res.metrics] == pytest.approx(expected, abs=1e-15)
    assert res.metrics[-1]["lr"] == pytest.approx(0.0, abs=1e-15) and res.summary["settings"]["lr_schedule"] == "cosine"
    _interrupted(task, task.build_network(seed=1), 4, 2, tmp_path / "b", **{k: v for k, v in kw.items()
                                                                          if k != "updates"})
    resumed = task.build_network(seed=1)
    res2 = train(resumed, task, out=tmp_path / "b", resume=True, **kw)
    assert [m["lr"] for m in res2.metrics] == [m["lr"] for m in res.metrics]
    for a, b in zip(full.learnable_parameters(), resumed.learnable_parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    _interrupted(task, task.build_network(seed=1), 4, 1, tmp_path / "c", **{k: v for k, v in kw.items()
                                                                          if k != "updates"})
    with pytest.raises(CheckpointError, match="lr_schedule: 'cosine' -> 'constant'"):
        train(task.build_network(seed=1), task, out=tmp_path / "c", resume=True, **{**kw, "lr_schedule": "constant"})


def test_a_rollback_halves_the_scheduled_rate():
    """Cosine over 3 updates with a rollback at update 2: lr = 3 (1 + cos(2 pi / 3)) / 2 / 2 = 0.375."""
    task = TinyXOR()
    net = task.build_network(seed=0)
    res = train(net, task, updates=3, gradient="direct", lr=3.0, rollback=1.02, lr_schedule="cosine",
                progress=False, evaluate=False, optimizer=lambda params: torch.optim.SGD(params, lr=3.0, maximize=True))
    first, second = res.metrics[:2]
    assert not first["rolled_back"] and second["rolled_back"]
    assert first["lr"] == pytest.approx(3.0 * 0.75) and second["lr"] == pytest.approx(0.375)
