"""Training policies: the rules that act on a training run beside its loop.

The loop of :func:`colplugin.training.train` restores, steps, evaluates and checkpoints;
each rule that changes what it does is one object here, with the state that a checkpoint
keeps (``state``) so that a resumed run continues exactly:

- :class:`Rollback`: refuse a step whose batch loss jumps, return to the best parameters,
  halve the learning rate;
- :class:`KeepBest`: return the parameters of the highest test accuracy at the end;
- :class:`EarlyStopping`: stop when the test loss has not improved for ``patience`` updates
  and return the parameters of the lowest test loss;
- :class:`GradientClip`: clip the gradient norm before each step.

Each policy sees the rows of the metrics (a dictionary per update), as the ``callbacks`` of
``train`` do.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch

from .._io import atomic_path

__all__ = ["Rollback", "KeepBest", "EarlyStopping", "GradientClip", "state_copy"]


def state_copy(network: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A detached copy of ``network``'s parameters and buffers."""
    return {k: v.detach().clone() for k, v in network.state_dict().items()}


class Rollback:
    """Refuse a step whose batch loss exceeds ``factor`` times the lowest batch loss so far.

    The parameters and optimiser state return to those of the lowest loss and the
    learning rate is halved (the metrics row says ``"rolled_back": true``).

    Parameters
    ----------
    factor : float
        Largest accepted ratio of a batch loss to the lowest batch loss so far.
    state : dict, optional
        The state a checkpoint kept (``rollback_best``): the lowest loss, its update, its
        parameters and optimiser state.
    """

    def __init__(self, factor: float, state: dict[str, Any] | None = None):
        self.factor = factor
        self.state = state

    def rejects(self, loss: float) -> bool:
        """Whether a batch loss is refused (before any gradient is computed)."""
        return self.state is not None and loss > self.factor * self.state["loss"]

    def record(self, update: int, loss: float, network: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
        """Keep the parameters and optimiser state before the step of an accepted batch of lower loss."""
        if self.state is None or loss < self.state["loss"]:
            self.state = {"loss": loss, "update": update, "state_dict": state_copy(network),
                          "optimizer": copy.deepcopy(optimizer.state_dict())}

    def restore(self, network: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
        """Return to the best parameters and optimiser state with half the current learning rate."""
        lrs = [g["lr"] * 0.5 for g in optimizer.param_groups]
        network.load_state_dict(self.state["state_dict"])
        optimizer.load_state_dict(copy.deepcopy(self.state["optimizer"]))
        for g, new_lr in zip(optimizer.param_groups, lrs):
            g["lr"] = new_lr


class KeepBest:
    """Return the parameters of the highest test accuracy at the end of a run.

    Parameters
    ----------
    state : dict, optional
        The state a checkpoint kept (``kept_best``): the accuracy, its update and parameters.
    """

    def __init__(self, state: dict[str, Any] | None = None):
        self.state = state

    def observe(self, row: dict[str, Any], network: torch.nn.Module) -> None:
        """Keep the parameters of an evaluated row of higher test accuracy."""
        acc = row.get("test_accuracy")
        if acc is not None and (self.state is None or acc > self.state["accuracy"]):
            self.state = {"accuracy": acc, "update": row["update"], "state_dict": state_copy(network)}

    def finish(self, network: torch.nn.Module, out: Path | None) -> None:
        """Load the kept parameters into ``network`` (and write ``out/best_weights.pt``)."""
        _restore_best(network, self.state, out, "accuracy", "accuracy")


class EarlyStopping:
    """Stop when the test loss has not improved for ``patience`` updates.

    Parameters
    ----------
    patience : int
        Updates without a lower test loss before training stops.
    state : dict, optional
        The state a checkpoint kept (``early_best``): the lowest test loss, its update and
        parameters.
    """

    def __init__(self, patience: int, state: dict[str, Any] | None = None):
        self.patience = patience
        self.state = state

    def observe(self, row: dict[str, Any], network: torch.nn.Module) -> None:
        """Keep the parameters of an evaluated row of lower test loss."""
        if self.state is None or row["test_loss"] < self.state["loss"]:
            self.state = {"loss": row["test_loss"], "update": row["update"], "state_dict": state_copy(network)}

    def stops(self, update: int) -> bool:
        """Whether training stops after ``update`` updates."""
        return self.state is not None and update - self.state["update"] >= self.patience

    def finish(self, network: torch.nn.Module, out: Path | None) -> None:
        """Load the parameters of the lowest test loss into ``network`` (and write ``out/best_weights.pt``)."""
        _restore_best(network, self.state, out, "test_loss", "loss")


def _restore_best(network: torch.nn.Module, state: dict[str, Any], out: Path | None, key: str, value: str) -> None:
    """Load a policy's kept parameters into ``network``; write ``out/best_weights.pt`` with ``{key: state[value]}``."""
    network.load_state_dict(state["state_dict"])
    if out is not None:
        with atomic_path(out / "best_weights.pt") as tmp:
            torch.save({"state_dict": network.state_dict(), "update": state["update"], key: state[value]}, tmp)


class GradientClip:
    """Clip the gradient of the free parameters to a norm before each step.

    Parameters
    ----------
    max_norm : float
        Largest gradient norm (of all free parameters together).
    """

    def __init__(self, max_norm: float):
        self.max_norm = max_norm

    def __call__(self, params: list[torch.Tensor]) -> None:
        torch.nn.utils.clip_grad_norm_(params, self.max_norm)
