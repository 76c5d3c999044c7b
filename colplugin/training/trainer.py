"""Training the learnable inter-column weights (adjoint method or direct backpropagation)."""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from .._version import __version__
from .._io import atomic_path, atomic_write_text
from ..network import ColumnNetwork
from ..solve.simulate import SimulationError, simulate
from .task import Task

__all__ = ["train", "TrainResult", "TrainingDiverged", "CheckpointError", "save_checkpoint",
           "load_checkpoint"]

CHECKPOINT_FORMAT = 1
_OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD,
               "rmsprop": torch.optim.RMSprop}


class TrainingDiverged(RuntimeError):
    """Training stopped because the loss or the simulation diverged; the last good checkpoint is kept."""


class CheckpointError(RuntimeError):
    """A checkpoint is corrupt or does not belong to this network/task."""


@dataclass
class TrainResult:
    """What :func:`train` returns: the trained network and per-update metrics."""

    network: ColumnNetwork
    metrics: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)


def save_checkpoint(path: str | Path, network: ColumnNetwork, task: Task, *, update: int,
                    optimizer: torch.optim.Optimizer | None = None, scheduler: Any = None,
                    generator: torch.Generator | None = None, metrics: Sequence[dict] = (),
                    seed: int | None = None, gradient: str = "adjoint",
                    rollback_best: dict[str, Any] | None = None) -> Path:
    """Write a checkpoint atomically (plain types only: ``torch.load(weights_only=True)`` works)."""
    ckpt = {
        "format": CHECKPOINT_FORMAT, "colplugin_version": __version__, "task": task.config(),
        "spec": json.dumps(network.spec()), "state_dict": network.state_dict(), "update": update,
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "generator": generator.get_state() if generator is not None else None,
        "metrics": json.dumps(list(metrics)), "seed": seed, "gradient": gradient,
        "rollback_best": rollback_best,
    }
    with atomic_path(path) as tmp:
        torch.save(ckpt, tmp)
    return Path(path)


def load_checkpoint(path: str | Path, network: ColumnNetwork | None = None) -> dict[str, Any]:
    """Read a checkpoint; with ``network``, check it fits and load its weights into it.

    Returns the checkpoint dictionary, with ``"network"`` (the given network, or one
    rebuilt from the stored spec) and ``"metrics"`` decoded.

    Raises
    ------
    CheckpointError
        If the file is missing, corrupt, from another format, or its weights do not fit.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as exc:  # torch raises several types for truncated/garbled files
        raise CheckpointError(f"checkpoint {path} is corrupt or not a colplugin checkpoint ({exc.__class__.__name__}: "
                              f"{str(exc)[:120]}); use an intact checkpoint or start training afresh") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a colplugin checkpoint of format {CHECKPOINT_FORMAT}")
    if network is None:
        from ..network import ColumnNetwork as _CN

        network = _CN.from_spec(json.loads(ckpt["spec"]))
    own = network.state_dict()
    theirs = ckpt["state_dict"]
    bad = [k for k in own if k not in theirs or theirs[k].shape != own[k].shape]
    if bad or set(theirs) - set(own):
        raise CheckpointError(f"checkpoint {path} does not fit this network (mismatched {bad or sorted(set(theirs) - set(own))}); "
                              "load it into the network it was trained with (ColumnNetwork.from_spec of its spec)")
    network.load_state_dict(theirs)
    ckpt["network"] = network
    ckpt["metrics"] = json.loads(ckpt["metrics"])
    return ckpt


def _make_optimizer(optimizer: str | Callable, params: list, lr: float) -> torch.optim.Optimizer:
    if callable(optimizer):
        return optimizer(params)
    try:
        return _OPTIMIZERS[optimizer](params, lr=lr)
    except KeyError:
        raise ValueError(f"unknown optimizer {optimizer!r}; use one of {', '.join(_OPTIMIZERS)} "
                         "or a callable params -> torch.optim.Optimizer") from None


def train(network: ColumnNetwork, task: Task, updates: int = 50, *, gradient: str = "adjoint",
          optimizer: str | Callable = "adam", lr: float = 0.1, scheduler: Callable | None = None,
          batch_size: int | None = None, seed: int = 0, out: str | Path | None = None,
          resume: bool = False, progress: bool = True, evaluate: bool = True,
          stop_at_accuracy: float | None = None, clip_grad: float | None = None,
          rollback: float | None = None, callbacks: Sequence[Callable[[dict[str, Any]], None]] = ()) -> TrainResult:
    """Learn the learnable inter-column weights of ``network`` on ``task``.

    Each update simulates a batch of trials in one ODE solve, computes the task's loss
    and takes one optimiser step. Gradients come from torchdiffeq's ``odeint_adjoint``
    (``gradient="adjoint"``, the paper's method; the adjoint parameters are the tensors
    built from the learnable parameters) or from backpropagation through ``odeint``
    (``"direct"``).

    Parameters
    ----------
    network : ColumnNetwork
    task : Task
        E.g. :class:`colplugin.tasks.XOR` or :class:`colplugin.tasks.Decision`.
    updates : int
        Number of optimiser steps (in total, including those of a resumed run).
    gradient : {"adjoint", "direct"}
    optimizer : str or callable
        ``"adam"`` (default), ``"adamw"``, ``"sgd"``, ``"rmsprop"``, or ``params -> Optimizer``.
    lr : float
        Learning rate (on the free parameters, which start near 0.54).
    scheduler : callable, optional
        ``optimizer -> torch.optim.lr_scheduler``, stepped after every update.
    batch_size : int, optional
        Trials per update (default: the task's).
    seed : int
        Seeds trial sampling (and nothing global); together with the network's own seed
        a run is repeatable.
    out : path, optional
        Directory for ``checkpoint.pt`` (written atomically after every update) and
        ``metrics.json``.
    resume : bool
        Continue from ``out/checkpoint.pt`` exactly where it stopped.
    progress : bool
        Show a tqdm progress bar.
    evaluate : bool
        Compute the task's test accuracy after every update.
    stop_at_accuracy : float, optional
        Stop early once the test accuracy reaches this value.
    clip_grad : float, optional
        Clip the gradient of the free parameters to this norm before each step.
    rollback : float, optional
        Guard against a step that throws the network into a bad region (e.g. all columns
        silenced, where f underflows and the gradient vanishes): when a batch loss exceeds
        ``rollback`` times the lowest batch loss so far, no step is taken; the parameters
        and optimiser state return to those that gave the lowest loss and the learning rate
        is halved (the metrics row says ``"rolled_back": true``). Compares training-batch
        losses only, so it suits tasks whose batches are alike (XOR). With a scheduler, the
        scheduler's next learning rate wins.
    callbacks : sequence of callables
        Called with each update's metrics dictionary.

    Raises
    ------
    TrainingDiverged
        NaN loss or a diverging simulation; the last good checkpoint is kept.
    """
    from tqdm.auto import tqdm

    if gradient not in ("adjoint", "direct"):
        raise ValueError(f"gradient must be 'adjoint' or 'direct', got {gradient!r}")
    solver = task.solver
    if gradient == "adjoint" and solver.fused:  # the adjoint is torchdiffeq's continuous-time method
        solver = dataclasses.replace(solver, backend="torchdiffeq")
    params = network.learnable_parameters()
    if not params:
        raise ValueError("the network has no learnable projections; add one (e.g. Lateral(..., learnable=True))")
    batch_size = batch_size or task.batch_size
    opt = _make_optimizer(optimizer, params, lr)
    sched = scheduler(opt) if scheduler is not None else None
    gen = torch.Generator().manual_seed(seed)
    metrics: list[dict[str, Any]] = []
    start = 0
    best: dict[str, Any] | None = None  # lowest batch loss so far, with its parameters (rollback)
    if rollback is not None and not rollback > 1:
        raise ValueError(f"rollback must be a loss ratio > 1 (e.g. 1.5), got {rollback}")
    out = Path(out) if out is not None else None
    ckpt_path = out / "checkpoint.pt" if out is not None else None
    if resume:
        if ckpt_path is None or not ckpt_path.exists():
            raise CheckpointError(f"cannot resume: no checkpoint at {ckpt_path}")
        ckpt = load_checkpoint(ckpt_path, network)
        if ckpt["task"].get("name") != task.name:
            raise CheckpointError(f"checkpoint is for task {ckpt['task'].get('name')!r}, not {task.name!r}")
        opt.load_state_dict(ckpt["optimizer"])
        if sched is not None and ckpt["scheduler"] is not None:
            sched.load_state_dict(ckpt["scheduler"])
        gen.set_state(ckpt["generator"])
        metrics = ckpt["metrics"]
        start = ckpt["update"]
        seed = ckpt["seed"]
        best = ckpt.get("rollback_best")
    test = task.test_set() if evaluate else None
    dev, dtype = network.W_intra.device, network.W_intra.dtype
    t_start = time.perf_counter() - (metrics[-1]["wall_seconds"] if metrics else 0.0)
    bar = tqdm(range(start, updates), total=updates, initial=start, disable=not progress,
               desc=f"train {task.name} ({gradient})", unit="update")
    for k in bar:
        batch = task.sample(batch_size, gen)
        opt.zero_grad()
        try:
            traj = simulate(network, batch.stimulus.to(dev, dtype), task.duration, dt_out=task.dt_out,
                            solver=solver, gradient=gradient)
            loss = task.loss(traj, batch)
            if not torch.isfinite(loss):
                raise SimulationError("the loss is NaN/inf")
            loss_value = float(loss.detach())
            rolled_back = rollback is not None and best is not None and loss_value > rollback * best["loss"]
            if rollback is not None and not rolled_back and (best is None or loss_value < best["loss"]):
                best = {"loss": loss_value, "update": k,
                        "state_dict": {n: t.detach().clone() for n, t in network.state_dict().items()},
                        "optimizer": copy.deepcopy(opt.state_dict())}
            if not rolled_back:
                loss.backward()
                grads_ok = all(torch.isfinite(p.grad).all() for p in params if p.grad is not None)
                if not grads_ok:
                    raise SimulationError("the gradient is NaN/inf")
                if clip_grad is not None:
                    torch.nn.utils.clip_grad_norm_(params, clip_grad)
        except (SimulationError, AssertionError) as exc:  # torchdiffeq asserts on non-finite adjoint states
            bar.close()
            kept = f"; the last good checkpoint is {ckpt_path}" if ckpt_path and ckpt_path.exists() else ""
            raise TrainingDiverged(f"update {k + 1}: training diverged ({exc}). Lower the learning rate "
                                   f"(now {lr}) or clip the gradient (clip_grad=...){kept}") from None
        train_accuracy = task.accuracy(traj, batch)
        if rolled_back:
            lrs = [g["lr"] * 0.5 for g in opt.param_groups]
            network.load_state_dict(best["state_dict"])
            opt.load_state_dict(copy.deepcopy(best["optimizer"]))
            for g, new_lr in zip(opt.param_groups, lrs):
                g["lr"] = new_lr
        else:
            opt.step()
        if sched is not None:
            sched.step()
        row: dict[str, Any] = {"update": k + 1, "loss": loss_value, "train_accuracy": train_accuracy,
                               "lr": opt.param_groups[0]["lr"]}
        if rollback is not None:
            row["rolled_back"] = rolled_back
        if test is not None:
            with torch.no_grad():
                tt = simulate(network, test.stimulus.to(dev, dtype), task.duration, dt_out=task.dt_out,
                              solver=task.solver)
                row["test_loss"] = float(task.loss(tt, test))
                row["test_accuracy"] = task.accuracy(tt, test)
        row["wall_seconds"] = time.perf_counter() - t_start
        metrics.append(row)
        bar.set_postfix(loss=f"{row['loss']:.4g}", acc=row.get("test_accuracy"))
        if ckpt_path is not None:
            save_checkpoint(ckpt_path, network, task, update=k + 1, optimizer=opt, scheduler=sched,
                            generator=gen, metrics=metrics, seed=seed, gradient=gradient, rollback_best=best)
        for cb in callbacks:
            cb(row)
        if stop_at_accuracy is not None and row.get("test_accuracy") is not None \
                and row["test_accuracy"] >= stop_at_accuracy:
            break
    bar.close()
    summary = {"task": task.name, "seed": seed, "gradient": gradient, "updates": len(metrics),
               "final_loss": metrics[-1]["loss"] if metrics else math.nan,
               "final_accuracy": metrics[-1].get("test_accuracy") if metrics else None,
               "wall_seconds": metrics[-1]["wall_seconds"] if metrics else 0.0,
               "optimizer": optimizer if isinstance(optimizer, str) else repr(optimizer), "lr": lr,
               "clip_grad": clip_grad, "rollback": rollback,
               "batch_size": batch_size, "colplugin_version": __version__, "solver": task.solver.to_dict()}
    if out is not None:
        atomic_write_text(out / "metrics.json", json.dumps({"per_update": metrics, **summary}, indent=2))
    return TrainResult(network, metrics, summary)
