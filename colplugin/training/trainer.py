"""Training the learnable inter-column weights (adjoint method or direct backpropagation)."""

from __future__ import annotations

import contextlib
import json
import math
import operator
import time
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch

from .._version import __version__
from .._io import atomic_path, atomic_write_text
from ..network import ColumnNetwork
from ..solve.simulate import SimulationError, simulate, solver_for_transfer
from ..solve.strategies import Direct, Gradient, Solver, check_combination
from .policies import EarlyStopping, GradientClip, KeepBest, Rollback
from .settings import OPTIMIZERS, TrainSettings, lr_factor
from .task import Batch, Task, TrainResult

__all__ = ["train", "TrainResult", "TrainingDiverged", "CheckpointError", "save_checkpoint",
           "load_checkpoint", "load_best_weights", "check_resume", "check_resume_nproc", "run_nproc",
           "stored_nproc"]

CHECKPOINT_FORMAT = 1


class TrainingDiverged(RuntimeError):
    """Training stopped because the loss or the simulation diverged; the last good checkpoint is kept."""


class CheckpointError(RuntimeError):
    """A checkpoint is corrupt or does not belong to this network/task."""


def save_checkpoint(path: str | Path, network: ColumnNetwork, task: Task, *, update: int,
                    optimizer: torch.optim.Optimizer | None = None, scheduler: Any = None,
                    generator: torch.Generator | None = None, metrics: Sequence[dict] = (),
                    seed: int | None = None, gradient: dict[str, Any] | None = None,
                    settings: dict[str, Any] | None = None, solver: dict[str, Any] | None = None,
                    rollback_best: dict[str, Any] | None = None, kept_best: dict[str, Any] | None = None,
                    early_best: dict[str, Any] | None = None) -> Path:
    """Write a checkpoint atomically (plain types only: ``torch.load(weights_only=True)`` works).

    ``gradient``, ``settings`` and ``solver`` are the resolved training settings as plain
    dictionaries; ``rollback_best`` and ``kept_best`` the state of the rollback guard and
    of ``keep_best``, so that a resumed run continues exactly. ``nproc``: the number of
    data-parallel processes that train the run (:func:`run_nproc`), which a resume must match.
    """
    ckpt = {
        "format": CHECKPOINT_FORMAT, "colplugin_version": __version__, "task": task.config(),
        "spec": json.dumps(network.spec()), "state_dict": network.state_dict(), "update": update,
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "generator": generator.get_state() if generator is not None else None,
        "metrics": json.dumps(list(metrics)), "seed": seed, "gradient": gradient,
        "settings": settings, "solver": solver, "rollback_best": rollback_best, "kept_best": kept_best,
        "early_best": early_best, "nproc": run_nproc(task),
    }
    with atomic_path(path) as tmp:
        torch.save(ckpt, tmp)
    return Path(path)


def _torch_load(path: Path, what: str, fix: str = "use an intact checkpoint (e.g. from a backup or another run) "
                                                  "or start training afresh") -> Any:
    """``torch.load(path, weights_only=True)``, or a CheckpointError that names the file and the fix.

    Plain types only: a file that needs pickle to run code (any object other than tensors,
    numbers, strings, lists and dictionaries) is refused, never unpickled.
    """
    try:
        return torch.load(path, weights_only=True, map_location="cpu")
    except Exception as exc:  # truncated zip ("central directory"), a pickle payload, garbage: all one refusal
        first = (str(exc).strip().splitlines() or [""])[0][:120]
        kind = ("it holds objects other than tensors and plain values, which colplugin never unpickles"
                if "weights_only" in str(exc) or "Unpickl" in exc.__class__.__name__ else
                f"it cannot be read: {exc.__class__.__name__}: {first}")
        raise CheckpointError(f"{path} is corrupt or not a colplugin {what} ({kind}); {fix}") from None


def _bad_checkpoint(path: Path, key: str, why: str,
                    fix: str = "use an intact checkpoint or start training afresh") -> CheckpointError:
    return CheckpointError(f"{path}: its {key!r} {why}; the file is damaged or was not written by colplugin - {fix}")


#: The remedy for a bad ``best_weights.pt``.
_BEST_FIX = "restore it from the run, or delete it to use the last weights of the run's checkpoint.pt"


def _decode_json(path: Path, ckpt: dict[str, Any], key: str, kind: type) -> Any:
    """A JSON-encoded entry of a checkpoint (``spec``, ``metrics``), checked to be a ``kind``."""
    if key not in ckpt:
        raise _bad_checkpoint(path, key, "entry is missing")
    raw = ckpt[key]
    if not isinstance(raw, str):
        raise _bad_checkpoint(path, key, f"entry is of type {type(raw).__name__}, not JSON text")
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise _bad_checkpoint(path, key, f"entry is not valid JSON ({exc})") from None
    if not isinstance(value, kind):
        raise _bad_checkpoint(path, key, f"entry holds JSON of type {type(value).__name__}, not a {kind.__name__}")
    return value


def _check_entries(path: Path, ckpt: dict[str, Any]) -> None:
    """Refuse a checkpoint whose entries have the wrong types (a hand-edited or foreign file)."""
    task = ckpt.get("task")
    if not isinstance(task, dict) or not isinstance(task.get("name"), str):
        raise _bad_checkpoint(path, "task", "entry is missing or not a task config with a name")
    sd = ckpt.get("state_dict")
    if not isinstance(sd, dict) or not sd or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in sd.items()):
        raise _bad_checkpoint(path, "state_dict", "entry is missing or not a dictionary of named tensors")
    update = ckpt.get("update")
    if isinstance(update, bool) or not isinstance(update, int) or update < 0:
        raise _bad_checkpoint(path, "update", f"entry is {update!r}, not a whole number >= 0")
    seed = ckpt.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2 ** 63):
        raise _bad_checkpoint(path, "seed", f"entry is {seed!r}, not a whole number in [0, 2^63)")
    for key in ("optimizer", "scheduler", "gradient", "settings", "solver", "rollback_best", "kept_best",
                "early_best"):
        if ckpt.get(key) is not None and not isinstance(ckpt[key], dict):
            raise _bad_checkpoint(path, key, f"entry is of type {type(ckpt[key]).__name__}, not a dictionary")
    gen = ckpt.get("generator")
    if gen is not None and not (torch.is_tensor(gen) and gen.dtype == torch.uint8 and gen.dim() == 1):
        raise _bad_checkpoint(path, "generator", "entry is not a random generator state (a 1-d uint8 tensor)")


def load_checkpoint(path: str | Path, network: ColumnNetwork | None = None, *,
                    non_finite_fix: str | None = None, finite: bool = True) -> dict[str, Any]:
    """Read a checkpoint; with ``network``, check it fits and load its weights into it.

    Returns the checkpoint dictionary, with ``"network"`` (the given network, or one
    rebuilt from the stored spec) and ``"metrics"`` decoded. ``non_finite_fix``: the
    remedy the refusal of non-finite weights gives (default: :func:`_non_finite_fix`,
    which names the run's ``best_weights.pt`` only where one exists). ``finite=False``
    loads non-finite weights too (for a caller that replaces them, e.g. with the run's
    ``best_weights.pt``).

    Raises
    ------
    CheckpointError
        If the file is missing, corrupt (truncated, a pickle payload: it is read with
        ``weights_only=True``), from another format, has entries of the wrong type (e.g. no
        network spec), or its weights do not fit or are not finite.
    """
    path = Path(path)
    _check_is_file(path)
    ckpt = _torch_load(path, "checkpoint")
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a colplugin checkpoint of format {CHECKPOINT_FORMAT}; use a "
                              "checkpoint.pt written by colplugin.train (this version) or start training afresh")
    spec = _decode_json(path, ckpt, "spec", dict)
    metrics = _decode_json(path, ckpt, "metrics", list)
    if not all(isinstance(m, dict) and isinstance(m.get("update"), int) for m in metrics):
        raise _bad_checkpoint(path, "metrics", "entry is not a list of per-update rows (each with its 'update')")
    _check_entries(path, ckpt)
    if network is None:
        try:
            network = ColumnNetwork.from_spec(spec)
        except Exception as exc:  # a spec edited by hand: any error of the builder is the spec's fault
            raise _bad_checkpoint(path, "spec", f"does not build a network ({exc.__class__.__name__}: "
                                                f"{str(exc)[:160]})") from None
    stored_transfer = spec.get("params", {}).get("transfer", {}) if isinstance(spec.get("params"), dict) else {}
    stored_transfer = stored_transfer.get("value", "dmf") if isinstance(stored_transfer, dict) else "dmf"
    if stored_transfer != network.transfer.name:
        raise CheckpointError(f"checkpoint {path} was trained with the {stored_transfer!r} transfer, this network has "
                              f"{network.transfer.name!r}; load it into a network of its own parameters "
                              "(ColumnNetwork.from_spec of its spec) or start training afresh")
    _load_weights(path, network, ckpt["state_dict"], non_finite_fix=non_finite_fix or _non_finite_fix(path),
                  finite=finite)
    ckpt["network"] = network
    ckpt["spec"] = json.dumps(spec)
    ckpt["metrics"] = metrics
    return ckpt


def _check_is_file(path: Path) -> None:
    """Refuse a checkpoint path that does not exist or is not a file (a directory in its place)."""
    if path.is_dir():
        raise CheckpointError(f"{path} is a directory, not a checkpoint file (colplugin train writes checkpoint.pt as "
                              "one file); move that directory away, or pass a run directory whose checkpoint.pt "
                              "is the file colplugin wrote")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist" + (" (it is not a regular file)"
                                                                     if path.exists() else ""))


def _non_finite_fix(path: Path) -> str:
    """The remedy for a checkpoint with non-finite weights: the run's best_weights.pt where it exists."""
    best = Path(path).parent / "best_weights.pt"
    kept = (f"the run kept finite weights in {best} (`colplugin export {Path(path).parent}` exports those), or "
            if best.is_file() and Path(path).name != "best_weights.pt" else "")
    return (f"its training diverged; {kept}start training afresh with another --out and a lower learning rate "
            "(--lr; Python: lr=...)")


def _load_weights(path: Path, network: ColumnNetwork, theirs: Any, fix: str | None = None,
                  non_finite_fix: str | None = None, finite: bool = True) -> None:
    """Load a stored state dict into ``network`` after checking that it fits and is finite."""
    if not isinstance(theirs, dict) or not all(torch.is_tensor(v) for v in theirs.values()):
        raise _bad_checkpoint(path, "state_dict", "entry is missing or not a dictionary of named tensors",
                              *([fix] if fix else []))
    own = network.state_dict()
    bad = [k for k in own if k not in theirs or theirs[k].shape != own[k].shape]
    if bad or set(theirs) - set(own):
        raise CheckpointError(f"checkpoint {path} does not fit this network (mismatched "
                              f"{bad or sorted(set(theirs) - set(own))}); "
                              + (fix or "load it into the network it was trained with (ColumnNetwork.from_spec "
                                        "of its spec)"))
    bad = [k for k, v in theirs.items() if v.is_floating_point() and not bool(v.isfinite().all())]
    if bad and finite:
        raise CheckpointError(f"checkpoint {path} holds non-finite values in {', '.join(bad)} (a diverged run); "
                              + (non_finite_fix or fix or _non_finite_fix(path)))
    network.load_state_dict(theirs)


def load_best_weights(path: str | Path, network: ColumnNetwork) -> dict[str, Any]:
    """Load a run's ``best_weights.pt`` (written with ``keep_best`` or early stopping) into ``network``.

    Read with ``weights_only=True``; returns the file's dictionary.

    Raises
    ------
    CheckpointError
        If the file is corrupt, holds anything but plain values and tensors, has no
        ``state_dict``, or its weights do not fit ``network`` or are not finite.
    """
    path = Path(path)
    data = _torch_load(path, "best_weights.pt file", _BEST_FIX)
    if not isinstance(data, dict) or "state_dict" not in data:
        raise _bad_checkpoint(path, "state_dict", "entry is missing (a best_weights.pt holds the kept weights "
                                                  "as 'state_dict')", _BEST_FIX)
    _load_weights(path, network, data["state_dict"], _BEST_FIX)
    return data


def _non_finite(value: Any, where: str) -> list[str]:
    """Where a nested structure of tensors, numbers, lists and dictionaries holds NaN or inf."""
    if torch.is_tensor(value):
        return [where] if value.is_floating_point() and not bool(value.isfinite().all()) else []
    if isinstance(value, float):
        return [] if math.isfinite(value) else [where]
    if isinstance(value, dict):
        return [w for k, v in value.items() for w in _non_finite(v, f"{where}[{k!r}]")]
    if isinstance(value, (list, tuple)):
        return [w for i, v in enumerate(value) for w in _non_finite(v, f"{where}[{i}]")]
    return []


def _check_resume_state(path: Path, ckpt: dict[str, Any]) -> None:
    """Refuse to resume from a checkpoint whose optimiser, scheduler or guard states are missing or not finite."""
    for key in ("optimizer", "generator"):
        if ckpt.get(key) is None:
            raise _bad_checkpoint(path, key, "entry is missing, so the run cannot continue exactly")
    bad = [w for key in ("optimizer", "scheduler", "rollback_best", "kept_best", "early_best")
           for w in _non_finite(ckpt.get(key), key)]
    if bad:
        shown = ", ".join(bad[:4]) + (f" and {len(bad) - 4} more" if len(bad) > 4 else "")
        raise CheckpointError(f"cannot resume from {path}: it holds non-finite values (NaN/inf) in {shown}, so the "
                              "next update would be wrong; resume from an earlier checkpoint or start training "
                              "afresh")


def _make_optimizer(optimizer: str | Callable, params: list, lr: float) -> torch.optim.Optimizer:
    if callable(optimizer):
        return optimizer(params)
    return OPTIMIZERS[optimizer](params, lr=lr)


def _check_task_config(path: Path, stored: dict[str, Any], task: Task) -> None:
    """Refuse to resume a run with other task options than it was trained with (its settings are checked apart)."""
    if stored.get("name") != task.name:
        return
    now = task.config()
    # settings are compared apart (more updates are allowed); the solver follows from the options; options that a
    # run of an older version did not record are not compared
    changed = sorted(k for k in set(stored) & set(now)
                     if k not in ("settings", "solver") and stored[k] != now[k])
    if changed:
        what = ", ".join(f"{k}: {stored.get(k)!r} -> {now.get(k)!r}" for k in changed)
        raise CheckpointError(f"cannot resume {path} with other task options ({what}); resume with the run's own "
                              "options (its checkpoint's task config) or start a new run in another directory")


def _resume_command(out: Path, name: str) -> str:
    """The command that resumes the run in ``out`` (``colplugin run`` keeps its training in ``train/``)."""
    if out.name == "train":
        return f"colplugin run {name} --resume --out {out.parent}"
    return f"colplugin train {name} --resume --out {out}"


def run_nproc(task: Task) -> int:
    """The number of data-parallel processes that train ``task`` (a ShardedTask's ``world``; else 1)."""
    world = getattr(task, "world", 1)
    return world if isinstance(world, int) and not isinstance(world, bool) and world >= 1 else 1


def stored_nproc(ckpt: Any) -> int:
    """The number of processes a checkpoint's run was trained with (1 for a run from before that was recorded)."""
    if not isinstance(ckpt, dict):
        return 1
    task = ckpt.get("task")
    for value in (ckpt.get("nproc"), task.get("nproc") if isinstance(task, dict) else None):
        if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
            return value
    return 1


def _resume_nproc_command(out: Path, name: str, nproc: int) -> str:
    """The command that resumes the run in ``out`` with its ``nproc`` processes."""
    return _resume_command(out, name) + (f" --nproc {nproc}" if nproc > 1 else "")


def check_resume_nproc(out: str | Path, raw: Any, nproc: int, name: str) -> None:
    """Refuse to resume the run in ``out`` (raw checkpoint ``raw``) with another number of processes.

    Data-parallel processes each keep their own checkpoint (rank ``r > 0`` in
    ``out/ranks/r/``) and the trials are split over them, so a run continues only with the
    number of processes it started with; a run that recorded none was trained by one process.
    """
    out = Path(out)
    theirs = stored_nproc(raw)
    if theirs == nproc:
        return
    recorded = "its checkpoint records" if isinstance(raw, dict) and (
        raw.get("nproc") is not None or isinstance(raw.get("task"), dict) and "nproc" in raw["task"]) \
        else "a run that records no process count is one of"
    procs = lambda n: f"{n} process{'' if n == 1 else 'es'}"  # noqa: E731
    raise CheckpointError(
        f"cannot resume {out} with --nproc {nproc} ({procs(nproc)}): the run was trained with {procs(theirs)} "
        f"({recorded} {theirs}), and a run continues only with the processes it started with; resume with "
        f"--nproc {theirs}: `{_resume_nproc_command(out, name, theirs)}` (Python: train_distributed(..., "
        f"nproc={theirs}, resume=True)), or start a new run with another --out")


def _stored_task_name(path: Path, default: str) -> str:
    """The task name a checkpoint records (``default`` where the file cannot be read)."""
    try:
        raw = torch.load(path, weights_only=True, map_location="cpu")
    except Exception:
        return default
    name = raw.get("task", {}).get("name") if isinstance(raw, dict) and isinstance(raw.get("task"), dict) else None
    return name if isinstance(name, str) else default


def _elsewhere(out: Path, task: Task) -> str:
    """What to do when ``out`` has no checkpoint.pt: the command of the run it holds, or a new run."""
    if (out / "train" / "checkpoint.pt").is_file():
        if (out / "report.md").is_file():
            return (f"{out} is a finished `colplugin run` directory (report.md); there is nothing to resume - "
                    "start a new run with another --out")
        name = _stored_task_name(out / "train" / "checkpoint.pt", task.name)
        return (f"{out} is a directory of `colplugin run` (its training is in {out / 'train'}); resume it with "
                f"`colplugin run {name} --resume --out {out}`")
    seeds = sorted((p for p in out.glob("seed*") if p.name[4:].isdigit() and (p / "checkpoint.pt").is_file()),
                   key=lambda p: int(p.name[4:])) if out.is_dir() else []
    if seeds:
        name = _stored_task_name(seeds[0] / "checkpoint.pt", task.name)
        return (f"{out} is a directory of `colplugin reproduce` whose runs are in "
                f"{', '.join(p.name + '/' for p in seeds[:4])}{' ...' if len(seeds) > 4 else ''}; resume one of "
                f"them, e.g. `colplugin train {name} --resume --out {seeds[0]} --seed {seeds[0].name[4:]}`")
    return ("--resume continues an interrupted run in the --out it was started with (start a new run without "
            "--resume)")


def check_resume(out: str | Path, task: Task) -> dict[str, Any]:
    """Refuse to resume ``task`` in ``out`` before anything is written there; return the raw checkpoint.

    Checks that ``out/checkpoint.pt`` exists and is a file, that the run is unfinished (no
    ``metrics.json``), that it holds a run of the same task (by name) and that it was
    trained with as many data-parallel processes as ``task`` runs on (:func:`check_resume_nproc`). The weights are
    checked where they are loaded (:func:`load_checkpoint`). A pipeline that writes into a
    run directory before training (``colplugin.experiments.train_run``) calls this first.

    Raises
    ------
    CheckpointError
        Naming the directory and the command (or task) that resumes it.
    """
    out = Path(out)
    ckpt_path = out / "checkpoint.pt"
    if not ckpt_path.exists() and not ckpt_path.is_symlink():
        raise CheckpointError(f"cannot resume: no checkpoint at {ckpt_path}; " + _elsewhere(out, task))
    _check_is_file(ckpt_path)
    if (out / "metrics.json").exists():  # written once, when a run ends
        raise CheckpointError(
            f"cannot resume {out}: that run is finished (it has metrics.json); there is nothing to continue. "
            "To train further, start a new run in another directory (e.g. with more updates)")
    raw = _torch_load(ckpt_path, "checkpoint")
    stored = raw.get("task") if isinstance(raw, dict) else None
    name = stored.get("name") if isinstance(stored, dict) else None
    if isinstance(name, str) and name != task.name:
        raise CheckpointError(f"{out} holds a run of task {name!r}, not {task.name!r}; resume with "
                              f"`{_resume_command(out, name)}`, or start a new run with another --out "
                              f"(Python: train(..., get_task({name!r}), out=..., resume=True))")
    check_resume_nproc(out, raw, run_nproc(task), name if isinstance(name, str) else task.name)
    return raw


def _out_of_memory(k: int, network: ColumnNetwork, batch_size: int, task: Task, exc: Exception) -> MemoryError:
    """A MemoryError that says what did not fit and what to change."""
    where = network.W_intra.device
    return MemoryError(
        f"update {k + 1}: one training update of {network.n_populations} populations at batch {batch_size} over "
        f"{task.duration:g} s does not fit in the memory of {where} ({str(exc).splitlines()[0][:160]}). Use a smaller "
        "batch (e.g. --batch-size), split it over processes (--nproc P), store fewer stages "
        "(Solver(checkpoint_every=M) with a small M), or use float32 (ColumnNetwork(..., dtype=torch.float32))")


def _check_seed(seed: Any) -> int:
    """``seed`` as an int that torch's generators take, or a ValueError that names it."""
    try:
        value = operator.index(seed) if not isinstance(seed, bool) else None
    except TypeError:
        value = None
    if value is None or not 0 <= value < 2 ** 63:
        raise ValueError(f"seed must be a whole number in [0, 2^63) (e.g. seed=0), got {seed!r}")
    return int(value)


def _end_bar(bar: Any, updates: int) -> None:
    """End a progress bar at ``updates`` done of ``updates`` (training stopped early)."""
    bar.total = updates
    bar.refresh()


def _batch_loss(network: ColumnNetwork, task: Task, batch: Batch, solver: Solver, seed: int, update: int) -> float:
    """The task's loss of ``batch`` (the last update's trials, same noise) with the network's current weights."""
    dev, dtype = network.W_intra.device, network.W_intra.dtype
    with torch.no_grad():
        try:
            traj = simulate(network, batch.stimulus.to(dev, dtype), task.duration, dt_out=task.dt_out, solver=solver,
                            noise=task.noise,
                            generator=None if task.noise is None else _noise_generator(seed, update, task))
        except SimulationError as exc:
            raise TrainingDiverged(f"after the last update the network diverges on its batch ({exc}). "
                                   f"{_lower_lr(None)}") from None
        return float(task.loss(traj, batch))


def _lower_lr(lr: float | None) -> str:
    """The remedy of a diverged training: the command line's --lr first, the Python keywords after."""
    now = "" if lr is None else f"now {lr:g}; "
    lower = f"e.g. --lr {lr / 10:g}" if lr is not None else "e.g. --lr 0.05"
    return (f"Lower the learning rate with --lr ({now}{lower}) "
            "(Python: lr=..., or clip the gradient with clip_grad=...)")


def _noise_generator(seed: int, update: int, task: Task) -> torch.Generator:
    """The source of update ``update``'s membrane noise: its own stream per seed, update and process.

    Apart from the trial generator, so that noise never shifts the trials each process of a
    data-parallel run draws (each process, ``task.rank``, gets its own realisations).
    """
    rank = int(getattr(task, "rank", 0))
    return torch.Generator().manual_seed((seed * 1_000_003 + update) * 1_009 + rank)


def train(network: ColumnNetwork, task: Task, updates: int | None = None, *,
          gradient: Gradient | str | None = None, lr: float | None = None,
          optimizer: str | Callable | None = None, clip_grad: float | bool | None = None,
          rollback: float | bool | None = None, stop_at_accuracy: float | bool | None = None,
          keep_best: bool | None = None, batch_size: int | None = None, lr_schedule: str | None = None,
          settings: TrainSettings | None = None, solver: Solver | None = None,
          scheduler: Callable | None = None, seed: int = 0, out: str | Path | None = None,
          resume: bool = False, progress: bool = True, evaluate: bool = True,
          callbacks: Sequence[Callable[[dict[str, Any]], None]] = ()) -> TrainResult:
    """Learn the learnable inter-column weights of ``network`` on ``task``.

    Each update simulates a batch of trials in one ODE solve, computes the task's loss
    and takes one optimiser step. Every training setting left at ``None`` comes from
    ``settings`` (default: the task's, ``task.settings``), the single place of the task's
    defaults: ``train(net, XOR())`` trains as ``colplugin train xor`` does.

    Parameters
    ----------
    network : ColumnNetwork
    task : Task
        E.g. :class:`colplugin.tasks.XOR` or :class:`colplugin.tasks.Decision`.
    updates : int, optional
        Number of optimiser steps (in total, including those of a resumed run).
    gradient : Direct, Adjoint, "direct" or "adjoint", optional
        How gradients are obtained: backpropagation through the solve (:class:`Direct`)
        or torchdiffeq's ``odeint_adjoint`` (:class:`Adjoint`, the paper's method; a fused
        task solver then runs on torchdiffeq, see :meth:`TrainSettings.solver_for`).
    lr : float, optional
        Learning rate (on the free parameters, which start near 0.54).
    optimizer : str or callable, optional
        ``"adam"``, ``"adamw"``, ``"sgd"``, ``"rmsprop"``, or ``params -> Optimizer``.
    clip_grad : float or False, optional
        Clip the gradient of the free parameters to this norm before each step
        (``False``: off even if the task's settings clip).
    rollback : float or False, optional
        Guard against a step that throws the network into a bad region (e.g. all columns
        silenced, where f underflows and the gradient vanishes): when a batch loss exceeds
        ``rollback`` times the lowest batch loss so far, no step is taken; the parameters
        and optimiser state return to those that gave the lowest loss and the learning rate
        is halved (the metrics row says ``"rolled_back": true``). Compares training-batch
        losses only, so it suits tasks whose batches are alike (XOR). With a ``scheduler``, the
        scheduler's next learning rate wins; with an ``lr_schedule``, every rollback halves
        the scheduled rate from then on. ``False``: off.
    stop_at_accuracy : float or False, optional
        Stop early once the test accuracy reaches this value (``False``: never).
    keep_best : bool, optional
        At the end, restore the parameters with the highest test accuracy (written to
        ``out/best_weights.pt``) and report that accuracy as ``final_accuracy``.
    batch_size : int, optional
        Trials per update.
    lr_schedule : {"constant", "cosine"}, optional
        Learning rate over the updates (:func:`colplugin.training.settings.lr_factor`).
    settings : TrainSettings, optional
        Base settings that the keywords above override (default ``task.settings``).
    solver : Solver, optional
        How trials are integrated (default ``task.solver``). Test solves use it as given;
        training solves use ``settings.solver_for(solver)``.
    scheduler : callable, optional
        ``optimizer -> torch.optim.lr_scheduler``, stepped after every update (default: the
        settings' ``lr_schedule``).
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
        Compute the task's test loss, accuracy and metrics after every update.
    callbacks : sequence of callables
        Called with each update's metrics dictionary.

    Returns
    -------
    TrainResult
        ``summary`` records the resolved settings, gradient and solvers as plain types;
        ``updates`` is the number of optimiser steps taken (the progress bar ends there);
        ``final_loss`` is the loss of the returned weights after the last step: their test
        loss (``final_loss_on = "test set"``; the kept or early-stopping weights' row), or
        with ``evaluate=False`` the loss of the last update's batch re-simulated once with
        them (``"last training batch"``). ``last_batch_loss`` is the last row's ``loss``,
        a batch's loss *before* its update's step.

    Raises
    ------
    TrainingDiverged
        NaN loss or a diverging simulation; the last good checkpoint is kept.
    ValueError
        An invalid setting, or a solver/gradient pair that cannot work.
    """
    from tqdm.auto import tqdm

    run = _setup(network, task, _check_seed(seed), (settings or task.settings).override(
        updates=updates, gradient=gradient, lr=lr, optimizer=optimizer if isinstance(optimizer, str) else None,
        clip_grad=clip_grad, rollback=rollback, stop_at_accuracy=stop_at_accuracy, keep_best=keep_best,
        batch_size=batch_size, lr_schedule=lr_schedule), optimizer, scheduler, solver, out)
    if resume:
        _resume(run)
    run.test = task.test_set() if evaluate else None
    run.t_start = time.perf_counter() - (float(run.metrics[-1].get("wall_seconds", 0.0)) if run.metrics else 0.0)
    if run.test is not None and run.s.evaluate_initial and run.start == 0:  # the curve starts before any update
        _initial_row(run)
    # the bar counts finished updates (updated by hand: a loop over a tqdm left by break would not count its last)
    run.bar = tqdm(total=run.s.updates, initial=run.start, disable=not progress,
                   desc=f"train {task.name} ({run.s.gradient.name})", unit="update")
    for k in range(run.start, run.s.updates):
        row = _update(run, k)
        for cb in callbacks:
            cb(row)
        if _stops(run, row):
            _end_bar(run.bar, k + 1)
            break
    run.bar.close()
    summary = _summary(run, _finish(run), optimizer)
    if run.out is not None:
        atomic_write_text(run.out / "metrics.json", json.dumps({"per_update": run.metrics, **summary}, indent=2))
    return TrainResult(network, run.metrics, summary)


@dataclass
class _Run:
    """One training run: its settings, solvers, optimiser, policies and metrics so far."""

    network: ColumnNetwork
    task: Task
    s: TrainSettings
    seed: int
    test_solver: Solver
    train_solver: Solver
    params: list
    opt: torch.optim.Optimizer
    sched: Any
    gen: torch.Generator
    out: Path | None
    rollback: Rollback | None
    keep: KeepBest | None
    early: EarlyStopping | None
    clip: GradientClip | None
    metrics: list[dict[str, Any]] = field(default_factory=list)
    start: int = 0
    test: Batch | None = None
    t_start: float = 0.0
    bar: Any = None
    last_batch: Batch | None = None  # the last update's trials (for the final loss)
    last_update: int = 0  # the index of that update

    @property
    def ckpt_path(self) -> Path | None:
        return self.out / "checkpoint.pt" if self.out is not None else None

    @property
    def record(self) -> dict[str, Any]:
        """The resolved gradient, settings and training solver as plain types."""
        return {"gradient": self.s.gradient.to_dict(), "settings": self.s.to_dict(),
                "solver": self.train_solver.to_dict()}

    def state(self, policy: Any) -> dict[str, Any] | None:
        """A policy's state (None for a policy the run does not have)."""
        return policy.state if policy is not None else None

    def kept_note(self) -> str:
        """Where the last good checkpoint is, for a divergence message."""
        return f"; the last good checkpoint is {self.ckpt_path}" if self.ckpt_path and self.ckpt_path.exists() else ""


def _setup(network: ColumnNetwork, task: Task, seed: int, s: TrainSettings, optimizer: str | Callable | None,
           scheduler: Callable | None, solver: Solver | None, out: str | Path | None) -> _Run:
    """Resolve solvers, optimiser, scheduler and policies of a run (nothing is simulated)."""
    # concrete backends, recorded as run: "auto" decided for the gradient, the network's transfer respected
    test_solver = solver_for_transfer(solver or task.solver, network).resolve(Direct())
    train_solver = solver_for_transfer(s.solver_for(test_solver), network).resolve(s.gradient)
    check_combination(train_solver, s.gradient)
    params = network.learnable_parameters()
    if not params:
        raise ValueError(f"the network has no learnable projection, so task {task.name!r} has nothing to train; "
                         "build it with one (Python: e.g. Lateral(..., learnable=True))")
    opt = _make_optimizer(optimizer if callable(optimizer) else s.optimizer, params, s.lr)
    sched = scheduler(opt) if scheduler is not None else None
    for g in opt.param_groups:  # the rate the settings' lr_schedule starts from (kept in the optimizer's state)
        g.setdefault("initial_lr", g["lr"])
    return _Run(network=network, task=task, s=s, seed=seed, test_solver=test_solver, train_solver=train_solver,
                params=params, opt=opt, sched=sched, gen=torch.Generator().manual_seed(seed),
                out=Path(out) if out is not None else None,
                rollback=Rollback(s.rollback) if s.rollback is not None else None,
                keep=KeepBest() if s.keep_best else None,
                early=EarlyStopping(s.patience) if s.patience is not None else None,
                clip=GradientClip(s.clip_grad) if s.clip_grad is not None else None)


def _load_for_resume(run: _Run) -> dict[str, Any]:
    """The checkpoint of ``run.out``, refused with the option that changed where it does not fit."""
    if run.out is None:
        raise CheckpointError("cannot resume: no checkpoint at None (pass out=, the run's directory)")
    check_resume(run.out, run.task)
    path = run.ckpt_path
    try:
        ckpt = load_checkpoint(path, run.network, non_finite_fix=(
            "the run cannot continue from it; start training afresh with another --out and a lower learning "
            "rate (--lr; Python: lr=...)"))
    except CheckpointError:
        try:  # name the option that changed, if any (a file that cannot be read keeps its own message)
            raw = torch.load(path, weights_only=True, map_location="cpu")
        except Exception:
            raw = None
        if isinstance(raw, dict) and isinstance(raw.get("task"), dict):
            _check_task_config(path, raw["task"], run.task)
        raise
    if ckpt["task"].get("name") != run.task.name:
        raise CheckpointError(f"checkpoint is for task {ckpt['task'].get('name')!r}, not {run.task.name!r}")
    _check_task_config(path, ckpt["task"], run.task)
    return ckpt


def _check_resumed_settings(run: _Run, ckpt: dict[str, Any]) -> None:
    """Refuse to resume with other training settings (more updates allowed) or another seed."""
    path, s = run.ckpt_path, run.s
    stored = ckpt.get("settings")
    if stored is not None:  # a resumed run continues with the settings it started with (more updates allowed)
        stored = {"lr_schedule": "constant", **stored}  # checkpoints from before lr_schedule
        changed = sorted(k for k, v in s.to_dict().items() if k != "updates" and stored.get(k, v) != v)
        if changed:
            raise CheckpointError(
                f"cannot resume {path} with other training settings ({', '.join(changed)}: "
                f"{', '.join(f'{stored.get(k)!r} -> {s.to_dict()[k]!r}' for k in changed)}); resume with "
                "the run's own settings or start a new run in another directory")
    if ckpt.get("seed") is not None and ckpt["seed"] != run.seed:
        raise CheckpointError(f"cannot resume {path} with seed {run.seed}: the run was started with seed "
                              f"{ckpt['seed']}; resume with seed {ckpt['seed']} (--seed {ckpt['seed']}) or "
                              "start a new run in another directory")
    _check_resume_state(path, ckpt)


def _resume(run: _Run) -> None:
    """Continue ``run`` exactly where its checkpoint stopped: optimiser, scheduler, trials, policies, metrics."""
    ckpt = _load_for_resume(run)
    _check_resumed_settings(run, ckpt)
    path = run.ckpt_path
    try:
        run.opt.load_state_dict(ckpt["optimizer"])
    except (ValueError, KeyError, TypeError, RuntimeError) as exc:
        raise _bad_checkpoint(path, "optimizer", f"state does not fit this run's optimizer "
                                                 f"({exc.__class__.__name__}: {str(exc)[:120]})") from None
    for g in run.opt.param_groups:  # a checkpoint of a constant-rate run may predate initial_lr
        g.setdefault("initial_lr", g["lr"])
    if run.sched is not None and ckpt.get("scheduler") is not None:
        run.sched.load_state_dict(ckpt["scheduler"])
    try:
        run.gen.set_state(ckpt["generator"])
    except RuntimeError as exc:
        raise _bad_checkpoint(path, "generator", f"state is not a random generator's ({str(exc)[:120]})") from None
    run.metrics, run.start, run.seed = ckpt["metrics"], ckpt["update"], ckpt["seed"]
    for policy, key in ((run.rollback, "rollback_best"), (run.keep, "kept_best"), (run.early, "early_best")):
        if policy is not None:
            policy.state = ckpt.get(key)


def _evaluate(run: _Run, row: dict[str, Any]) -> None:
    """Add the test loss, accuracy and the task's metrics of the current weights to ``row``."""
    task, dev, dtype = run.task, run.network.W_intra.device, run.network.W_intra.dtype
    with torch.no_grad():
        try:
            tt = simulate(run.network, run.test.stimulus.to(dev, dtype), task.duration, dt_out=task.dt_out,
                          solver=run.test_solver, noise=task.noise, generator=torch.Generator().manual_seed(0))
        except SimulationError as exc:  # the test set diverges with these weights: as a training divergence
            raise TrainingDiverged(f"update {row['update']}: the test set diverged ({exc}). "
                                   f"{_lower_lr(run.s.lr)}{run.kept_note()}") from None
        row["test_loss"] = float(task.loss(tt, run.test))
        row["test_accuracy"] = task.accuracy(tt, run.test)
        row.update({f"test_{key}": value for key, value in task.metrics(tt, run.test).items()})


def _initial_row(run: _Run) -> None:
    """The evaluation of the initial weights (update 0)."""
    row0: dict[str, Any] = {"update": 0}
    _evaluate(run, row0)
    row0["wall_seconds"] = time.perf_counter() - run.t_start
    run.metrics.append(row0)
    if run.early is not None:
        run.early.observe(row0, run.network)


@contextlib.contextmanager
def _update_errors(run: _Run, k: int):
    """Turn a diverging solve or an allocation failure in update ``k`` into a message that says what to do."""
    try:
        yield
    except (SimulationError, AssertionError) as exc:  # torchdiffeq asserts on non-finite adjoint states
        run.bar.close()
        raise TrainingDiverged(f"update {k + 1}: training diverged ({exc}). {_lower_lr(run.s.lr)}"
                               f"{run.kept_note()}") from None
    except torch.OutOfMemoryError as exc:  # CUDA (and some CPU allocators): the update does not fit
        run.bar.close()
        raise _out_of_memory(k, run.network, run.s.batch_size, run.task, exc) from None
    except RuntimeError as exc:  # the CPU allocator's failure; any other error passes unchanged
        if "can't allocate memory" not in str(exc) and "out of memory" not in str(exc):
            raise
        run.bar.close()
        raise _out_of_memory(k, run.network, run.s.batch_size, run.task, exc) from None


def _loss_and_gradient(run: _Run, batch: Batch, k: int) -> tuple[Any, float, bool]:
    """Simulate ``batch``, compute its loss and (unless the rollback refuses it) the clipped gradient.

    Returns the trajectory, the loss and whether the rollback refused the batch.
    """
    task, dev, dtype = run.task, run.network.W_intra.device, run.network.W_intra.dtype
    with _update_errors(run, k):
        traj = simulate(run.network, batch.stimulus.to(dev, dtype), task.duration, dt_out=task.dt_out,
                        solver=run.train_solver, gradient=run.s.gradient, noise=task.noise,
                        generator=None if task.noise is None else _noise_generator(run.seed, k, task))
        loss = task.loss(traj, batch)
        if not torch.isfinite(loss):
            raise SimulationError("the loss is NaN/inf")
        loss_value = float(loss.detach())
        rolled_back = run.rollback is not None and run.rollback.rejects(loss_value)
        if run.rollback is not None and not rolled_back:
            run.rollback.record(k, loss_value, run.network, run.opt)
        if not rolled_back:
            loss.backward()
            if not all(torch.isfinite(p.grad).all() for p in run.params if p.grad is not None):
                raise SimulationError("the gradient is NaN/inf")
            if run.clip is not None:
                run.clip(run.params)
    return traj, loss_value, rolled_back


def _schedule(run: _Run, k: int, rolled_back: bool) -> None:
    """The learning rate after update ``k``: the scheduler's, or the settings' schedule halved per rollback."""
    if run.sched is not None:
        run.sched.step()
    elif run.s.lr_schedule != "constant":  # the schedule, times 1/2 for every rollback so far
        halvings = sum(bool(m.get("rolled_back")) for m in run.metrics) + int(rolled_back)
        for g in run.opt.param_groups:
            g["lr"] = g["initial_lr"] * lr_factor(run.s.lr_schedule, k + 1, run.s.updates) * 0.5 ** halvings


def _update(run: _Run, k: int) -> dict[str, Any]:
    """Update ``k``: sample, simulate, step (or roll back), evaluate, record and checkpoint; its metrics row."""
    t_update = time.perf_counter()
    batch = run.task.sample(run.s.batch_size, run.gen)
    run.last_batch, run.last_update = batch, k
    run.opt.zero_grad()
    traj, loss_value, rolled_back = _loss_and_gradient(run, batch, k)
    train_accuracy = run.task.accuracy(traj, batch)
    if rolled_back:
        run.rollback.restore(run.network, run.opt)
    else:
        run.opt.step()
    _schedule(run, k, rolled_back)
    row: dict[str, Any] = {"update": k + 1, "loss": loss_value, "train_accuracy": train_accuracy,
                           "lr": run.opt.param_groups[0]["lr"]}
    if run.rollback is not None:
        row["rolled_back"] = rolled_back
    if run.test is not None:
        _evaluate(run, row)
        for policy in (run.keep, run.early):
            if policy is not None:
                policy.observe(row, run.network)
    row["wall_seconds"] = time.perf_counter() - run.t_start
    run.metrics.append(row)
    run.bar.set_postfix(batch_loss=f"{row['loss']:.4g}", acc=row.get("test_accuracy"),
                        trials_per_s=f"{run.s.batch_size / (time.perf_counter() - t_update):.3g}", refresh=False)
    run.bar.update(1)
    if run.ckpt_path is not None:
        save_checkpoint(run.ckpt_path, run.network, run.task, update=k + 1, optimizer=run.opt, scheduler=run.sched,
                        generator=run.gen, metrics=run.metrics, seed=run.seed,
                        rollback_best=run.state(run.rollback), kept_best=run.state(run.keep),
                        early_best=run.state(run.early), **run.record)
    return row


def _stops(run: _Run, row: dict[str, Any]) -> bool:
    """Whether training ends after ``row``: the accuracy goal reached, or no better test loss for ``patience``."""
    acc = row.get("test_accuracy")
    if run.s.stop_at_accuracy is not None and acc is not None and acc >= run.s.stop_at_accuracy:
        return True
    return run.early is not None and run.early.stops(row["update"])


def _finish(run: _Run) -> dict[str, Any]:
    """Load the weights the run returns (kept or early-stopping ones) and measure them.

    Returns the summary entries ``final_accuracy``, ``final_loss`` and ``final_loss_on``.
    """
    metrics = run.metrics
    kept, early = run.state(run.keep), run.state(run.early)
    final_accuracy = metrics[-1].get("test_accuracy") if metrics else None
    if early is not None and kept is None:  # early stopping: the parameters of the lowest test loss
        run.early.finish(run.network, run.out)
        final_accuracy = next((r.get("test_accuracy") for r in metrics if r["update"] == early["update"]),
                              final_accuracy)
    if kept is not None:
        run.keep.finish(run.network, run.out)
        final_accuracy = kept["accuracy"]
    # the loss of the weights this run returns, measured after its last step (a row's "loss" is its batch's loss
    # before that update's step)
    chosen = kept["update"] if kept is not None else early["update"] if early is not None else None
    if run.test is not None and metrics:
        row_final = next((r for r in metrics if r["update"] == chosen), metrics[-1])
        final_loss, final_loss_on = float(row_final.get("test_loss", math.nan)), "test set"
    elif run.last_batch is not None:
        final_loss, final_loss_on = _batch_loss(run.network, run.task, run.last_batch, run.train_solver, run.seed,
                                                run.last_update), "last training batch"
    else:
        final_loss, final_loss_on = math.nan, None
    return {"final_loss": final_loss, "final_loss_on": final_loss_on, "final_accuracy": final_accuracy}


def _summary(run: _Run, final: dict[str, Any], optimizer: Any) -> dict[str, Any]:
    """The run's summary (metrics.json beside ``per_update``) as plain types."""
    s, metrics = run.s, run.metrics
    kept, early = run.state(run.keep), run.state(run.early)
    return {"task": run.task.name, "seed": run.seed, "updates": metrics[-1]["update"] if metrics else 0,
            "final_loss": final["final_loss"], "final_loss_on": final["final_loss_on"],
            "last_batch_loss": next((r["loss"] for r in reversed(metrics) if "loss" in r), math.nan),
            "final_accuracy": final["final_accuracy"],
            "wall_seconds": metrics[-1]["wall_seconds"] if metrics else 0.0,
            "optimizer": s.optimizer if not callable(optimizer) else repr(optimizer), "lr": s.lr,
            "clip_grad": s.clip_grad, "rollback": s.rollback, "stop_at_accuracy": s.stop_at_accuracy,
            "keep_best": s.keep_best, "kept_best_update": kept["update"] if kept is not None else None,
            "patience": s.patience, "early_stopping_update": early["update"] if early is not None else None,
            "evaluate_initial": s.evaluate_initial,
            "batch_size": s.batch_size, "colplugin_version": __version__, **run.record,
            "test_solver": run.test_solver.to_dict()}
