"""Fit the learnable weights of a network to rates stored in a Neo Block (the Neo pipeline back in)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from .._io import atomic_path
from ..network import ColumnNetwork
from ..export.neo import NeoError, from_neo, stimulus_from_neo
from ..solve.simulate import Solver, Trajectory
from ..stimulus import Stimulus
from ..training.task import Batch, Task
from ..training.trainer import TrainResult, train

__all__ = ["FitTarget", "fit"]


class FitTarget(Task):
    """A task whose target is a set of recorded rate trajectories.

    Parameters
    ----------
    t : array (T,)
        Sample times (s) of the target, starting at 0.
    rates : array (T, B, C)
        Target rates (Hz) of C channels in B trials.
    indices : sequence of int
        Network population index of each channel.
    stimulus : Stimulus
        The B trials' inputs.
    """

    name = "fit"

    def __init__(self, t: np.ndarray, rates: np.ndarray, indices: Sequence[int], stimulus: Stimulus,
                 solver: Solver | None = None) -> None:
        self.t = np.asarray(t, dtype=float)
        self.rates = torch.as_tensor(rates, dtype=torch.float64)
        self.indices = list(indices)
        self.stim = stimulus
        self.duration = float(self.t[-1])
        self.dt_out = float(self.t[1] - self.t[0])
        self.batch_size = stimulus.batch_size
        self.solver = solver or Solver("dopri5", rtol=1e-5, atol=1e-4)

    def build_network(self, params=None, seed=None) -> ColumnNetwork:  # the network is given to fit()
        raise TypeError("FitTarget has no network of its own; pass one to colplugin.fit")

    def sample(self, n: int, generator: torch.Generator) -> Batch:
        return Batch(self.stim, self.rates, {})

    def test_set(self) -> Batch:
        return Batch(self.stim, self.rates, {})

    def output(self, traj: Trajectory) -> torch.Tensor:
        """The fitted channels' rates (T, B, C) in Hz."""
        return traj.rate[: self.rates.shape[0], :, self.indices]

    def loss(self, traj: Trajectory, batch: Batch) -> torch.Tensor:
        return torch.mean((self.output(traj) - batch.target.to(traj.state)) ** 2)

    def accuracy(self, traj: Trajectory, batch: Batch) -> float:
        """1 - relative RMS error (RMS of the difference over RMS of the target)."""
        out = self.output(traj).detach()
        tgt = batch.target.to(out)
        return float(1 - torch.sqrt(torch.mean((out - tgt) ** 2)) / torch.sqrt(torch.mean(tgt ** 2)))

    def config(self) -> dict[str, Any]:
        return {**super().config(), "channels": self.indices}


def fit(network: ColumnNetwork, block, populations: Sequence[str] | None = None, *,
        mapping: Mapping[str, str] | None = None, stimulus: Stimulus | None = None, updates: int = 60,
        lr: float = 0.3, gradient: str = "direct", out: str | Path | None = None, progress: bool = True,
        seed: int = 0, keep_best: bool = True, **train_kwargs) -> TrainResult:
    """Fit ``network``'s learnable weights so that chosen populations reproduce a Neo Block's rates.

    Parameters
    ----------
    network : ColumnNetwork
    block : neo.Block
        Rates as AnalogSignals (Hz) or spike trains (turned into rates with Elephant), one
        Segment per trial, e.g. from :func:`colplugin.to_neo` / :func:`colplugin.load_nix`.
    populations : sequence of str, optional
        Channels to fit, as network channel names (``"mt[0].L23E"``), matched to the
        signals through their array annotations (area, column, population). Default: every
        channel of the signal that the network has.
    mapping : mapping, optional
        Explicit ``{signal channel name: network channel name}`` when annotations differ.
    stimulus : Stimulus, optional
        The trials' inputs; default the ``"input"`` signal that :func:`to_neo` stores.

    keep_best : bool
        Restore the weights with the lowest error seen (Adam at a high learning rate
        overshoots near the optimum) and report that error as ``final_accuracy``.

    Returns
    -------
    TrainResult
        ``metrics`` hold ``test_accuracy`` = 1 - relative RMS error of the fitted channels.
    """
    names = network.channel_names
    seg0 = block.segments[0]
    sig = next((s for s in seg0.analogsignals if s.name == "rate"), seg0.analogsignals[0] if seg0.analogsignals else None)
    if sig is not None and "population" in sig.array_annotations:
        ann = sig.array_annotations
        sig_names = [f"{a}[{c}].{p}" for a, c, p in zip(ann["area"], ann["column"], ann["population"])]
    else:
        sig_names = None
    if mapping:
        wanted_sig, wanted_net = list(mapping), list(mapping.values())
    else:
        if sig_names is None:
            raise NeoError("the signals carry no area/column/population annotations; pass mapping="
                           "{signal channel: network channel}")
        wanted_net = list(populations) if populations else [n for n in sig_names if n in names]
        wanted_sig = wanted_net
    missing = [n for n in wanted_net if n not in names]
    if missing:
        raise NeoError(f"network has no channel(s) {missing}; its channels: {names}")
    t, rates = from_neo(block, wanted_sig)
    t = t - t[0]
    stim = stimulus if stimulus is not None else stimulus_from_neo(block)
    if stim is None:
        stim = Stimulus.none(rates.shape[1], network.n_inputs)
    if stim.batch_size != rates.shape[1]:
        raise NeoError(f"the stimulus has {stim.batch_size} trials but the Block {rates.shape[1]} segments")
    dense = network.n_populations <= network.dense_max_populations  # the fused solve needs a dense coupling
    task = FitTarget(t, rates, [names.index(n) for n in wanted_net], stim,
                     solver=Solver("dopri5", rtol=1e-5, atol=1e-4, backend="fused" if dense else "torchdiffeq"))
    best: dict[str, Any] = {"acc": -np.inf, "state": None}

    def remember(row: dict[str, Any]) -> None:
        if keep_best and row.get("test_accuracy", -np.inf) > best["acc"]:
            best["acc"] = row["test_accuracy"]
            best["state"] = {k: v.detach().clone() for k, v in network.state_dict().items()}

    callbacks = list(train_kwargs.pop("callbacks", ())) + [remember]
    res = train(network, task, updates, gradient=gradient, lr=lr, seed=seed, out=out, progress=progress,
                callbacks=callbacks, **train_kwargs)
    if keep_best and best["state"] is not None:
        network.load_state_dict(best["state"])
        res.summary["final_accuracy"] = best["acc"]
        res.summary["kept_best"] = True
        if out is not None:
            with atomic_path(Path(out) / "best_weights.pt") as tmp:
                torch.save({"state_dict": network.state_dict()}, tmp)
    return res
