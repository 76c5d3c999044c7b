"""The task interface used by :func:`colplugin.train`."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import torch

from ..network import ColumnNetwork
from ..params import Params
from ..solve.simulate import Solver, Trajectory
from ..stimulus import Stimulus


@dataclass
class Batch:
    """Trials of a task: the stimulus and what the network should produce."""

    stimulus: Stimulus
    target: torch.Tensor
    info: dict[str, Any]


class Task(ABC):
    """Base class of a training task.

    Subclasses define :meth:`build_network`, :meth:`sample`, :meth:`loss` and
    :meth:`accuracy`; ``duration`` (s), ``dt_out`` (s) and ``solver`` say how trials are
    simulated.
    """

    name = "task"
    duration: float = 1.0
    dt_out: float = 1e-2
    batch_size: int = 16
    solver: Solver = Solver("rk4", step=1e-3)

    @abstractmethod
    def build_network(self, params: Params | None = None, seed: int | None = None) -> ColumnNetwork:
        """The task's network (learnable projections initialised from ``seed``)."""

    @abstractmethod
    def sample(self, n: int, generator: torch.Generator) -> Batch:
        """``n`` trials drawn with ``generator``."""

    def test_set(self) -> Batch:
        """A fixed evaluation set (drawn from a fixed seed)."""
        return self.sample(100, torch.Generator().manual_seed(12345))

    @abstractmethod
    def loss(self, traj: Trajectory, batch: Batch) -> torch.Tensor:
        """Scalar loss of a simulated batch."""

    def accuracy(self, traj: Trajectory, batch: Batch) -> float | None:
        return None

    def config(self) -> dict[str, Any]:
        """Plain-type settings saved with checkpoints and metrics."""
        return {"name": self.name, "duration": self.duration, "dt_out": self.dt_out,
                "batch_size": self.batch_size, "solver": self.solver.to_dict()}
