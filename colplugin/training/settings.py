"""Training settings: the defaults of a task's training, in one frozen object.

Every task carries a :class:`TrainSettings` (``task.settings``); :func:`colplugin.train`
and the ``colplugin`` command fill every setting they are not given from it, so the
Python API and the command line train alike.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch

from ..solve.strategies import Adjoint, Direct, Gradient, Solver, as_gradient

__all__ = ["TrainSettings", "OPTIMIZERS", "LR_SCHEDULES", "MAX_LR", "lr_factor", "check_device"]

#: Optimisers by name (``TrainSettings.optimizer``).
OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD,
              "rmsprop": torch.optim.RMSprop}

#: The largest learning rate a :class:`TrainSettings` accepts. The free parameters of the learnable
#: projections are of order 1 (they start near 0.54), and Adam, the default optimiser, moves each of them by
#: about ``lr`` per update whatever the gradient's size: above 10 the first step throws every weight ten times
#: its own scale away, so the network runs away (the tasks train at 0.01 to 0.3).
MAX_LR = 10.0

#: Learning-rate schedules by name (``TrainSettings.lr_schedule``; see :func:`lr_factor`).
LR_SCHEDULES = ("constant", "cosine")


def lr_factor(schedule: str, update: int, updates: int) -> float:
    """The factor on the learning rate after ``update`` of ``updates`` optimiser steps.

    ``"constant"``: 1. ``"cosine"``: ``(1 + cos(pi k / n)) / 2`` with ``k = min(update, n)``,
    ``n = updates`` (cosine annealing to 0 at the last update, without restarts).
    """
    if schedule == "constant":
        return 1.0
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * min(update, updates) / updates))
    raise ValueError(f"unknown lr_schedule {schedule!r}; use one of {', '.join(LR_SCHEDULES)}")


@dataclass(frozen=True)
class TrainSettings:
    """How a task is trained by default.

    Parameters
    ----------
    updates : int
        Number of optimiser steps.
    lr : float
        Learning rate (on the free parameters of the learnable projections), in
        ``(0, MAX_LR]`` = (0, 10]: the free parameters are of order 1 and Adam moves each by
        about ``lr`` per update, so a larger rate throws the network out of range at the
        first step.
    optimizer : str
        ``"adam"``, ``"adamw"``, ``"sgd"`` or ``"rmsprop"``.
    gradient : Direct, Adjoint, "direct" or "adjoint"
        How gradients are obtained (stored as the strategy object).
    clip_grad : float, optional
        Clip the gradient of the free parameters to this norm before each step.
    rollback : float, optional
        Loss ratio (> 1) above which an update is undone and the learning rate halved
        (see :func:`colplugin.train`).
    stop_at_accuracy : float, optional
        Stop once the test accuracy reaches this value.
    keep_best : bool
        At the end, restore the parameters with the highest test accuracy seen.
    batch_size : int
        Trials per update.
    evaluate_initial : bool
        Record the test metrics of the initial network as a row ``update = 0`` (so that a
        learning curve starts before any update).
    patience : int, optional
        Early stopping on the test (validation) loss: stop once it has not reached a new
        minimum for ``patience`` updates, and restore the parameters of its minimum
        (written to ``best_weights.pt``, reported as ``early_stopping_update``).
    lr_schedule : {"constant", "cosine"}
        How the learning rate changes over the ``updates`` (:func:`lr_factor`): constant,
        or cosine annealing from ``lr`` to 0 at the last update. A run resumed with more
        updates follows the cosine of the new number from the update it stands at (so its
        rate steps up where the new cosine lies above the old).

    Notes
    -----
    ``False`` for ``clip_grad``, ``rollback`` or ``stop_at_accuracy`` means off (stored
    as ``None``), so that ``train(..., clip_grad=False)`` switches off an aid that the
    task's settings switch on.

    The solver of a training run is the task's solver, with one rule
    (:meth:`solver_for`): :class:`~colplugin.solve.Adjoint` is torchdiffeq's
    continuous-time adjoint, so a task solver with the fused backend is replaced by the
    torchdiffeq backend with the same method, step and tolerances. Every other pair is
    used as given.
    """

    updates: int = 50
    lr: float = 0.1
    optimizer: str = "adam"
    gradient: Gradient = Direct()
    clip_grad: float | None = None
    rollback: float | None = None
    stop_at_accuracy: float | None = None
    keep_best: bool = False
    batch_size: int = 16
    evaluate_initial: bool = False
    patience: int | None = None
    lr_schedule: str = "constant"

    def __post_init__(self) -> None:
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731 (frozen dataclass)
        set_("gradient", as_gradient(self.gradient))
        for name in ("clip_grad", "rollback", "stop_at_accuracy", "patience"):
            if getattr(self, name) is False:
                set_(name, None)
        if isinstance(self.updates, bool) or not isinstance(self.updates, int) or self.updates < 1:
            raise ValueError(f"updates must be a whole number >= 1 (optimiser steps; --updates N), got "
                             f"{self.updates!r}")
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"batch_size must be a whole number >= 1 (trials per update), got {self.batch_size!r}")
        if isinstance(self.lr, bool) or not (isinstance(self.lr, (int, float)) and 0 < self.lr <= MAX_LR):
            raise ValueError(f"lr must be a positive learning rate of at most {MAX_LR:g}, got {self.lr!r}: give e.g. "
                             f"--lr 0.1 (Python: lr=0.1). Above {MAX_LR:g} Adam's first step moves every free "
                             "parameter (of order 1) more than ten times its own size and the network runs away")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"unknown lr_schedule {self.lr_schedule!r}; use one of {', '.join(LR_SCHEDULES)}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; use one of {', '.join(OPTIMIZERS)} "
                             "(or pass a callable params -> torch.optim.Optimizer to train)")
        if self.clip_grad is not None and not (self.clip_grad > 0 and math.isfinite(self.clip_grad)):
            raise ValueError(f"clip_grad must be a positive gradient norm (or None/False: off), got {self.clip_grad!r}")
        if self.rollback is not None and not (self.rollback > 1 and math.isfinite(self.rollback)):
            raise ValueError(f"rollback must be a loss ratio > 1 (e.g. 1.5), or None/False: off; got {self.rollback}")
        if self.patience is not None and (isinstance(self.patience, bool) or not isinstance(self.patience, int)
                                          or self.patience < 1):
            raise ValueError(f"patience must be a whole number >= 1 (or None/False: off), got {self.patience!r}")
        if self.stop_at_accuracy is not None and not 0 < self.stop_at_accuracy <= 1:
            raise ValueError(f"stop_at_accuracy must be in (0, 1] (or None/False: off), got {self.stop_at_accuracy!r}")

    def override(self, **changes: Any) -> "TrainSettings":
        """A copy with the given settings changed; ``None`` values keep this object's setting."""
        given = {k: v for k, v in changes.items() if v is not None}
        return dataclasses.replace(self, **given) if given else self

    def solver_for(self, solver: Solver) -> Solver:
        """The solver a training run integrates with, given the task's ``solver``.

        :class:`~colplugin.solve.Adjoint` with a fused solver becomes the torchdiffeq
        backend with the same method, step and tolerances (the adjoint is torchdiffeq's
        continuous-time method; the fused backend has its own exact discrete adjoint,
        which :class:`~colplugin.solve.Direct` uses). Every other pair is returned as given.
        """
        if isinstance(self.gradient, Adjoint) and solver.fused:
            solver.resolve(self.gradient)  # a fused-only method (ros34pw2) is refused here, with the fix
            return solver.on("torchdiffeq")
        return solver

    def to_dict(self) -> dict[str, Any]:
        """Plain-type form (the gradient as its ``to_dict``), saved with metrics and checkpoints."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["gradient"] = self.gradient.to_dict()
        return d


def check_device(device: "str | torch.device | None", option: str = "--device") -> torch.device:
    """``device`` as a ``torch.device`` (``None``: the CPU), or a ValueError that names ``option`` and the valid values.

    Valid: ``cpu``, ``cuda``, ``cuda:N`` (N below the number of GPUs when CUDA is present) and,
    where this torch build supports it, ``mps``. Only the spelling and the device kind are
    checked here: whether a CUDA device is present is checked where the network moves there.
    """
    valid = "cpu, cuda, cuda:N" + (", mps" if _has_mps() else "")
    if device is None:
        return torch.device("cpu")
    if isinstance(device, torch.device):
        dev = device
    else:
        text = str(device).strip()
        try:
            dev = torch.device(text) if text else None
        except (RuntimeError, ValueError, TypeError):
            dev = None
        if dev is None:
            raise ValueError(f"{option} {device!r} is not a torch device; give one of {valid} "
                             f"(e.g. {option} cpu)")
    if dev.type not in ("cpu", "cuda") and not (dev.type == "mps" and _has_mps()):
        raise ValueError(f"{option} {device!s}: colplugin trains on {valid}, not on {dev.type!r} devices "
                         f"(e.g. {option} cpu)")
    if dev.type == "cuda" and dev.index is not None and torch.cuda.is_available() \
            and dev.index >= torch.cuda.device_count():
        raise ValueError(f"{option} {device!s}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                         f"cuda:0 to cuda:{torch.cuda.device_count() - 1}; give one of those or {option} cuda")
    return dev


def _has_mps() -> bool:
    """Whether this torch build has the Apple MPS backend."""
    return getattr(getattr(torch.backends, "mps", None), "is_built", lambda: False)()
