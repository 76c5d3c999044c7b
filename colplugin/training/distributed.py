"""Data-parallel training over several processes (``torch.distributed``; gloo on CPU, nccl on GPU).

Every process holds a full copy of the network. Each update, every process draws the
same batch (the trial generator is seeded alike in every process), simulates its own
contiguous share of the trials, and the gradients of the learnable parameters are summed
over the processes (an all-reduce as each parameter's gradient is accumulated, as
:class:`torch.nn.parallel.DistributedDataParallel` does). A share's loss is weighted by
its fraction of the batch, so that the summed gradient is the gradient of the whole
batch's mean loss and the optimiser steps of all processes stay identical: the results
match a single process up to the order of summation. Losses, accuracies and task metrics
are combined the same way (weighted means over the shares), so the metrics, the rollback
guard and early stopping see the whole batch.

Exactness needs (1) a loss that is a mean over trials (true for tasks whose loss averages
per-trial terms; a loss that normalises over the batch, such as XOR's min-max read-out,
changes when split), and (2) a fixed-step solver: an adaptive solver picks one step
sequence per batch, so a share's steps differ from the whole batch's (the results then
agree to the solver's tolerance only).

Usage
-----
From the command line, ``colplugin train TASK --nproc P`` spawns P processes on this
machine (``--device cuda``: process ``r`` on GPU ``r``). Under ``torchrun``, which sets
``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT`` in every process (also across
machines, e.g. ``torchrun --nnodes 2 --nproc-per-node 4 --rdzv-endpoint HOST:29500 -m
colplugin.cli train digits --seed 0 --out DIR``), the command joins the process group
that torchrun set up instead of spawning. From Python::

    from colplugin.training.distributed import train_distributed
    result = train_distributed(Digits(columns=100), nproc=2, seed=0, out="runs/digits")
"""

from __future__ import annotations

import logging
import os
import pickle
import signal
import socket
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.multiprocessing.spawn import ProcessException

from ..network import ColumnNetwork
from ..params import resolve_params
from ..solve.simulate import Trajectory
from ..stimulus import Stimulus
from .settings import check_device
from .task import Batch, Task
from .trainer import CheckpointError, check_resume, train

__all__ = ["ShardedTask", "shard_batch", "train_distributed", "all_reduce_gradients", "launched_by_torchrun",
           "compare_states", "check_resume_processes"]


def shard_batch(batch: Batch, rank: int, world: int) -> Batch:
    """Process ``rank``'s contiguous share of ``batch`` (of ``world`` shares).

    The stimulus rates, the target and every tensor in ``info`` whose first dimension is
    the batch size are sliced; everything else is shared.

    Raises
    ------
    ValueError
        If the batch has fewer trials than there are processes.
    """
    n = batch.target.shape[0] if batch.target.ndim else batch.stimulus.batch_size
    if n < world:
        raise ValueError(f"a batch of {n} trials cannot be split over {world} processes; use a batch size >= {world}")
    idx = torch.tensor_split(torch.arange(n), world)[rank]
    rates = batch.stimulus.rates
    rates = rates[idx.to(rates.device)] if rates.shape[0] == n else rates
    stim = Stimulus(batch.stimulus.times, rates)
    info = {k: (v[idx.to(v.device)] if torch.is_tensor(v) and v.ndim and v.shape[0] == n else v)
            for k, v in batch.info.items()}
    return Batch(stim, batch.target[idx.to(batch.target.device)], info)


def _share(batch: Batch) -> tuple[int, int]:
    return int(batch.info["_shard_n"]), int(batch.info["_shard_total"])


class ShardedTask(Task):
    """A task seen by one of several data-parallel processes (wraps ``task``; see the module notes).

    :meth:`sample` and :meth:`test_set` return this process's share of the task's batch;
    :meth:`loss` returns the whole batch's loss as its value (an all-reduce of the shares'
    weighted losses) with this share's weighted loss as its gradient; :meth:`accuracy` and
    :meth:`metrics` return weighted means over the shares. Everything else is the task's.

    Parameters
    ----------
    task : Task
        The task to train.
    rank, world : int
        This process's rank and the number of processes (``world = 1``: no communication).
    device : str or torch.device, optional
        Device the network is moved to by :meth:`build_network`.
    """

    def __init__(self, task: Task, rank: int = 0, world: int = 1, device: str | torch.device | None = None) -> None:
        self.task, self.rank, self.world, self.device = task, int(rank), int(world), device

    # attributes the trainer reads are the task's
    name = property(lambda self: self.task.name)  # type: ignore[assignment]
    duration = property(lambda self: self.task.duration)  # type: ignore[assignment]
    dt_out = property(lambda self: self.task.dt_out)  # type: ignore[assignment]
    solver = property(lambda self: self.task.solver)  # type: ignore[assignment]
    settings = property(lambda self: self.task.settings)  # type: ignore[assignment]
    noise = property(lambda self: self.task.noise)  # type: ignore[assignment]

    def __getattr__(self, item: str) -> Any:  # everything else (evaluate, figures, config, ...) is the task's
        if item == "task":
            raise AttributeError(item)
        return getattr(self.task, item)

    # -- collectives --------------------------------------------------------------------
    def _sum(self, values: list[float], device: torch.device | None = None) -> list[float]:
        if self.world == 1:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=device or _comm_device())
        dist.all_reduce(t)
        return t.tolist()

    def _shard(self, batch: Batch) -> Batch:
        total = batch.target.shape[0]
        part = shard_batch(batch, self.rank, self.world) if self.world > 1 else batch
        part.info = {**part.info, "_shard_n": part.target.shape[0], "_shard_total": total}
        return part

    # -- the Task protocol ---------------------------------------------------------------
    def build_network(self, params: Any = None, seed: int | None = None) -> ColumnNetwork:
        """The task's network on this process's device, with rank 0's initial weights."""
        net = self.task.build_network(params, seed=seed)
        if self.device is not None:
            net = net.to(self.device)
        if self.world > 1:
            for t in net.state_dict().values():
                dist.broadcast(t, src=0)
        return net

    def sample(self, n: int, generator: torch.Generator) -> Batch:
        return self._shard(self.task.sample(n, generator))

    def test_set(self) -> Batch:
        return self._shard(self.task.test_set())

    def loss(self, traj: Trajectory, batch: Batch) -> torch.Tensor:
        n, total = _share(batch)
        local = self.task.loss(traj, batch) * (n / total)
        if self.world == 1:
            return local
        whole = self._sum([float(local.detach())])[0]
        return local + (whole - local.detach())  # value: the whole batch's loss; gradient: this share's

    def accuracy(self, traj: Trajectory, batch: Batch) -> float | None:
        acc = self.task.accuracy(traj, batch)
        if acc is None or self.world == 1:
            return acc
        n, total = _share(batch)
        return self._sum([acc * n / total])[0]

    def metrics(self, traj: Trajectory, batch: Batch) -> dict[str, float]:
        m = self.task.metrics(traj, batch)
        if not m or self.world == 1:
            return m
        n, total = _share(batch)
        keys = sorted(m)
        return dict(zip(keys, self._sum([float(m[k]) * n / total for k in keys])))

    # methods the Task base class defines are the task's too (__getattr__ does not see them)
    def evaluation_stimulus(self) -> Stimulus:
        return self.task.evaluation_stimulus()

    def evaluate(self, network: ColumnNetwork, out: Path | None = None) -> dict[str, Any]:
        return self.task.evaluate(network, out)

    def figures(self, network: ColumnNetwork, result: Any) -> dict[str, Any]:
        return self.task.figures(network, result)

    def report_section(self, network: ColumnNetwork, result: Any, evaluation: Mapping[str, Any],
                       prefix: str = "") -> list[str]:
        return self.task.report_section(network, result, evaluation, prefix)

    def config(self) -> dict[str, Any]:
        return {**self.task.config(), "nproc": self.world}


def _comm_device() -> torch.device:
    """Device of tensors the process group communicates (CUDA for nccl)."""
    if dist.is_initialized() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_gradients(network: ColumnNetwork) -> list[Any]:
    """Sum the gradients of ``network``'s learnable parameters over all processes as they are accumulated.

    Registers a post-accumulate hook on every learnable parameter (what
    :class:`~torch.nn.parallel.DistributedDataParallel` does, without its forward
    wrapper: the ODE solve does not call ``network.forward``). Returns the hook handles.
    """
    def hook(p: torch.Tensor) -> None:
        dist.all_reduce(p.grad)

    return [p.register_post_accumulate_grad_hook(hook) for p in network.learnable_parameters()]


def launched_by_torchrun() -> bool:
    """Whether this process was started by ``torchrun`` (``RANK`` and ``WORLD_SIZE`` are set)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ and "MASTER_ADDR" in os.environ


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rank_device(device: str | torch.device | None, rank: int) -> torch.device:
    dev = check_device(device if device is not None else "cpu")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("--device cuda: no CUDA device is available; use --device cpu")
        index = dev.index if dev.index is not None else rank % torch.cuda.device_count()
        torch.cuda.set_device(index)
        return torch.device("cuda", index)
    return dev


def _run(rank: int, world: int, task: Task, seed: int, out: Path | None, device: Any, kwargs: dict,
         result_file: str | None, pipeline: Callable[..., Any] | None, threads: int | None) -> Any:
    if threads is not None:
        torch.set_num_threads(threads)
    dev = _rank_device(device, rank)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", rank=rank, world_size=world)
    sharded = ShardedTask(task, rank, world, dev)
    if rank > 0:  # one progress bar (rank 0's)
        kwargs = {**kwargs, "progress": False}
    finished = False
    try:
        if rank == 0 and pipeline is not None and out is not None:
            hooks: list[Any] = []

            def build(params: Any = None, seed: int | None = None) -> ColumnNetwork:
                net = ShardedTask.build_network(sharded, params, seed)
                if world > 1:
                    hooks.extend(all_reduce_gradients(net))
                return net

            sharded.build_network = build  # type: ignore[method-assign]
            res = pipeline(sharded, seed, out, **kwargs)
        else:
            preset = kwargs.get("preset")  # a pipeline's option: the network's parameter preset
            kwargs = {k: v for k, v in kwargs.items() if k != "preset"}
            net = sharded.build_network(resolve_params(preset) if preset else None, seed=seed)
            if world > 1:
                all_reduce_gradients(net)
            own = None
            if out is not None:  # other ranks keep their own checkpoints (for --resume), away from rank 0's files
                own = out if rank == 0 else out / "ranks" / str(rank)
                if not kwargs.get("resume"):  # a resume finds it (a failed one creates nothing)
                    own.mkdir(parents=True, exist_ok=True)
            res = train(net, sharded, seed=seed, out=own, **kwargs)
        if result_file is not None and rank == 0:
            torch.save({"metrics": res.metrics, "summary": res.summary, "evaluation": res.evaluation,
                        "state_dict": {k: v.cpu() for k, v in res.network.state_dict().items()}}, result_file)
        finished = True
        return res
    finally:
        # the last barrier only after success: a rank that failed must not wait for ranks that may be waiting in
        # a collective for it (it ends, and its launcher ends the others)
        if world > 1 and dist.is_initialized() and finished:
            dist.barrier()
            dist.destroy_process_group()


def _error_file(error_dir: str, rank: int) -> str:
    return os.path.join(error_dir, f"error{rank}.pickle")


def _save_error(error_dir: str, rank: int, exc: BaseException) -> None:
    """Leave this process's exception (or its type and message) for the parent, with the time it was raised."""
    try:
        payload = pickle.dumps((time.time(), exc, type(exc).__name__, str(exc)))
        pickle.loads(payload)  # an exception that cannot be rebuilt is sent as its type and message
    except Exception:
        payload = pickle.dumps((time.time(), None, type(exc).__name__, str(exc)))
    tmp = _error_file(error_dir, rank) + ".tmp"
    with open(tmp, "wb") as fh:
        fh.write(payload)
    os.replace(tmp, _error_file(error_dir, rank))


def _spawned(rank: int, world: int, port: int, error_dir: str, *args: Any) -> None:
    # a signal ends this process at once, even inside a collective (Python handlers - inherited from a forking
    # parent such as the command line's - would only run once the collective returns, which may be never); the
    # parent stops its processes with SIGTERM, and torch sends SIGINT when the parent dies
    for sig in (signal.SIGTERM, signal.SIGINT, getattr(signal, "SIGHUP", None)):
        if sig is not None:
            signal.signal(sig, signal.SIG_DFL)
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    try:
        _run(rank, world, *args)
    except Exception as exc:
        _save_error(error_dir, rank, exc)
        raise


def _stop(processes: list[Any], grace: float = 5.0) -> None:
    """End every process still running: SIGTERM, then SIGKILL after ``grace`` seconds."""
    for p in processes:
        if p.is_alive():
            p.terminate()
    end = time.monotonic() + grace
    for p in processes:
        p.join(max(0.0, end - time.monotonic()))
    for p in processes:
        if p.is_alive():
            p.kill()
        p.join()


def _rank_error(error_dir: str, world: int, exc: Exception) -> BaseException:
    """The error that ended a data-parallel run: the first one raised in any process, as that process raised it."""
    found = []
    for rank in range(world):
        try:
            with open(_error_file(error_dir, rank), "rb") as fh:
                when, err, kind, msg = pickle.load(fh)
        except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError):
            continue
        found.append((when, rank, err, kind, msg))
    if not found:  # no process raised: one was killed (e.g. SIGKILL for lack of memory) or exited by itself
        what = str(exc).strip() or exc.__class__.__name__
        hint = (" (a process killed with SIGKILL has usually run out of memory: use fewer processes, --nproc, or a "
                "smaller batch, --batch-size)" if "SIGKILL" in what else "")
        return RuntimeError(f"data-parallel training over {world} processes failed: {what}{hint}; the other processes "
                            "were stopped")
    _, rank, err, kind, msg = min(found, key=lambda f: (f[0], f[1]))
    if isinstance(err, Exception) and rank == 0:
        return err  # rank 0's error reads as that of a single process
    if isinstance(err, Exception):
        try:
            return type(err)(f"process {rank} of {world}: {msg}")
        except Exception:
            pass
    return RuntimeError(f"process {rank} of {world}: {kind}: {msg}")


def check_resume_processes(task: Task, out: str | Path, world: int) -> None:
    """Refuse, before any process starts, to resume the run in ``out`` over ``world`` processes where it cannot.

    Checks rank 0's checkpoint as :func:`~colplugin.training.trainer.check_resume` does (a
    run of ``task``, unfinished, trained with ``world`` processes) and that every other
    rank's checkpoint (``out/ranks/<rank>/checkpoint.pt``) is there.
    """
    out = Path(out)
    check_resume(out, ShardedTask(task, 0, world))
    missing = [out / "ranks" / str(r) / "checkpoint.pt" for r in range(1, world)
               if not (out / "ranks" / str(r) / "checkpoint.pt").is_file()]
    if missing:
        raise CheckpointError(f"cannot resume {out} over {world} processes: the checkpoint of process "
                              f"{missing[0].parent.name} ({missing[0]}) is missing, so that process cannot continue "
                              "exactly; restore the run's ranks/ directory, or start a new run with another --out")


def train_distributed(task: Task, nproc: int = 1, *, seed: int = 0, out: str | Path | None = None,
                      device: str | torch.device | None = None, pipeline: Callable[..., Any] | None = None,
                      threads: int | None = None, **train_kwargs: Any) -> dict[str, Any]:
    """Train ``task`` data-parallel over ``nproc`` processes on this machine (or under torchrun).

    Parameters
    ----------
    task : Task
        The task (it must be picklable: it is sent to every process).
    nproc : int
        Number of processes (1: train in this process, on ``device``). Ignored under
        torchrun, whose ``WORLD_SIZE`` counts the processes. On CPU (Linux) the processes
        are forked; with CUDA they are spawned, so a script that calls this function needs
        the ``if __name__ == "__main__":`` guard of :mod:`multiprocessing`.
    seed : int
        Seeds the network's initial weights and the trial sampling (alike in every process).
    out : path, optional
        Run directory: rank 0 writes the checkpoints and ``metrics.json`` there (and, with
        ``pipeline``, everything the pipeline writes); the other
        ranks keep their checkpoints in ``out/ranks/<rank>/`` so that ``resume=True``
        continues every process.
    device : str or torch.device, optional
        ``"cpu"`` (default; gloo) or ``"cuda"`` (nccl; process ``r`` on GPU ``r`` modulo the
        GPUs present).
    pipeline : callable, optional
        A function with the signature of :func:`colplugin.experiments.train_run`
        (``pipeline(task, seed, out, **train_kwargs)``: training plus evaluation and figures)
        that rank 0 runs instead of :func:`~colplugin.training.train`; the command line passes
        ``train_run``. Passed in, not imported, because pipelines stand after training.
    threads : int, optional
        ``torch.set_num_threads`` in every process.
    **train_kwargs
        Passed to :func:`~colplugin.training.train` (``updates``, ``lr``, ``progress``,
        ``resume``, ...; with ``pipeline`` those that it takes).

    Returns
    -------
    dict
        Rank 0's ``metrics`` (per update), ``summary``, ``evaluation`` and the trained
        ``state_dict`` (on the CPU).

    Raises
    ------
    CheckpointError
        With ``resume=True``, before any process starts: the run in ``out`` cannot be
        resumed over ``nproc`` processes (another number of processes, a missing rank
        checkpoint, a finished run; :func:`check_resume_processes`).
    Exception
        The first error raised in any process (another rank's prefixed ``process r of P:``);
        the other processes are stopped. An interruption of this process (KeyboardInterrupt,
        which the command line raises for SIGINT/SIGTERM) stops every process and is re-raised.
    """
    out = Path(out) if out is not None else None
    if launched_by_torchrun():
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        if train_kwargs.get("resume") and out is not None:  # every rank refuses alike, before any collective
            check_resume_processes(task, out, world)
        res = _run(rank, world, task, seed, out, device, train_kwargs, None, pipeline, threads)
        return {"metrics": res.metrics, "summary": res.summary, "evaluation": res.evaluation,
                "state_dict": {k: v.cpu() for k, v in res.network.state_dict().items()}}
    if isinstance(nproc, bool) or not isinstance(nproc, int) or nproc < 1:
        raise ValueError(f"nproc must be a whole number >= 1, got {nproc!r}")
    if nproc == 1:
        res = _run(0, 1, task, seed, out, device, train_kwargs, None, pipeline, threads)
        return {"metrics": res.metrics, "summary": res.summary, "evaluation": res.evaluation,
                "state_dict": {k: v.cpu() for k, v in res.network.state_dict().items()}}
    if train_kwargs.get("resume") and out is not None:  # refused here, before any process starts
        check_resume_processes(task, out, nproc)
    with tempfile.TemporaryDirectory() as tmp:
        result_file = os.path.join(tmp, "result.pt")
        # fork (Linux, CPU) starts the processes without re-importing torch; CUDA needs spawn
        cuda = torch.device(device if device is not None else "cpu").type == "cuda"
        method = "fork" if not cuda and "fork" in mp.get_all_start_methods() else "spawn"
        ctx = mp.start_processes(_spawned, args=(nproc, _free_port(), tmp, task, seed, out, device, train_kwargs,
                                                 result_file, pipeline, threads),
                                 nprocs=nproc, join=False, start_method=method)
        log = logging.getLogger("torch.multiprocessing.spawn")  # its "Terminating process ..." warnings: our error says
        level = log.level
        log.setLevel(logging.ERROR)
        try:
            while not ctx.join():  # returns once all ended; raises (after stopping the others) when one failed
                pass
        except BaseException as exc:  # a failed process, or this one interrupted (KeyboardInterrupt: SIGINT/SIGTERM)
            _stop(ctx.processes)
            if isinstance(exc, ProcessException):
                raise _rank_error(tmp, nproc, exc) from None
            raise
        finally:
            log.setLevel(level)
        return torch.load(result_file, weights_only=False)


def compare_states(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> float:
    """Largest relative difference between two state dicts (for checking data-parallel runs)."""
    worst = 0.0
    for k in a:
        x, y = a[k].double(), b[k].double()
        if x.numel():
            worst = max(worst, float(((x - y).abs() / y.abs().clamp_min(1e-300)).max()))
    return worst

