"""The Task protocol and the task registry.

A task owns everything that differs between experiments: its network, its stimuli, its
loss and metrics, its default training settings, its evaluation, figures and report
section, its command-line options and, optionally, a reproduction of a figure over
seeds. The training loop (:func:`colplugin.train`), the pipelines of
:mod:`colplugin.experiments` and the ``colplugin`` command only call these methods.

Adding a task
-------------
Write one module in ``colplugin/tasks/`` with a :class:`Task` subclass decorated with
:func:`register_task`::

    @register_task
    class MyTask(Task):
        name = "mytask"                      # the command-line name
        duration, dt_out = 1.0, 0.01         # s
        settings = TrainSettings(updates=20, lr=0.2)

        def build_network(self, params=None, seed=None): ...
        def sample(self, n, generator): ...   # -> Batch
        def loss(self, traj, batch): ...      # -> scalar tensor

Every module of ``colplugin.tasks`` is imported with the package, so the task is then
known to :func:`get_task`, ``colplugin train mytask`` and ``colplugin run mytask``.

Options are declared once, as keywords of the constructor: a keyword's name is its key in
:meth:`Task.config` (saved with every checkpoint, from which :meth:`Task.from_config`
rebuilds the task), its default is the default everywhere, and an :class:`Option` in its
annotation gives it a command-line flag::

        def __init__(self, rate: Annotated[float, Option("--my-rate", "input rate of task mytask, Hz")] = 20.0):
            self.rate = rate
"""

from __future__ import annotations

import argparse
import inspect
import typing
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Callable, ClassVar, Mapping

import torch

from ..network import ColumnNetwork
from ..params import Params
from ..plotting import plot_weights
from ..solve.simulate import Trajectory
from ..solve.strategies import Solver
from ..stimulus import MembraneNoise, Stimulus
from .settings import TrainSettings

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure


__all__ = ["Batch", "Option", "Task", "TrainResult", "TASKS", "register_task", "get_task", "task_class"]

#: Plain values that a task's config records and :meth:`Task.from_config` passes back.
_PLAIN = (int, float, str, bool, type(None))


@dataclass(frozen=True)
class Option:
    """The command-line form of one keyword of a task's constructor.

    Put it in the keyword's annotation, ``Annotated[float, Option("--parity-rate", "...")]``:
    the keyword's default becomes the option's default (shown in the help), its value is
    passed to the constructor, and :meth:`Task.config` records it.

    Parameters
    ----------
    flag : str
        The command-line flag (``"--parity-rate"``); flags must differ between tasks.
    help : str
        What the option sets, with its unit.
    metavar : str, optional
        The value's name in the help.
    choices : tuple, optional
        The values allowed.
    type : callable, optional
        Converts the command line's text (default: the type of the keyword's default). A
        keyword whose default is ``False`` becomes a switch (``--flag`` sets it ``True``).
    """

    flag: str
    help: str
    metavar: str | None = None
    choices: tuple | None = None
    type: Callable[[str], Any] | None = None

    @property
    def dest(self) -> str:
        """The attribute of the parsed arguments (argparse's rule: ``--parity-rate`` -> ``parity_rate``)."""
        return self.flag.lstrip("-").replace("-", "_")


@dataclass
class Batch:
    """Trials of a task: the stimulus and what the network should produce."""

    stimulus: Stimulus
    target: torch.Tensor
    info: dict[str, Any]


@dataclass
class TrainResult:
    """What :func:`~colplugin.training.train` returns: the trained network and per-update metrics.

    :func:`colplugin.experiments.train_run` adds the task's ``evaluation`` numbers and the
    names of the ``files`` (figures) it wrote.
    """

    network: ColumnNetwork
    metrics: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    evaluation: dict[str, Any] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)


class Task(ABC):
    """Base class of a training task.

    Subclasses define :meth:`build_network`, :meth:`sample` and :meth:`loss`, and set
    ``name``, ``duration`` (s), ``dt_out`` (s), ``solver`` and ``settings``. Every other
    method has a default that a task may override.

    Attributes
    ----------
    name : str
        Registry and command-line name.
    duration : float
        Simulated time of one trial (s).
    dt_out : float
        Output spacing of training and test solves (s).
    solver : Solver
        How trials are integrated (training runs apply :meth:`TrainSettings.solver_for`).
    settings : TrainSettings
        Default training settings: the single place of every training default.
    noise : MembraneNoise or None
        Membrane noise of every training and test solve (the stochastic variant of the
        network); ``None`` (default) for the deterministic DMF. Training draws a new
        realisation per update, the test set the same one at every evaluation.
    reproduce_seeds : int or None
        Number of seeds :meth:`reproduce` summarises by default (runs in ``seed<k>/``
        subdirectories); ``None``: one run, written directly into the output directory.
    """

    name: ClassVar[str] = "task"
    duration: float = 1.0
    dt_out: float = 1e-2
    solver: Solver = Solver("rk4", step=1e-3)
    settings: TrainSettings = TrainSettings()
    noise: MembraneNoise | None = None
    reproduce_seeds: ClassVar[int | None] = None

    # -- network and stimuli ----------------------------------------------------------
    @abstractmethod
    def build_network(self, params: Params | None = None, seed: int | None = None) -> ColumnNetwork:
        """The task's network (learnable projections initialised from ``seed``)."""

    @abstractmethod
    def sample(self, n: int, generator: torch.Generator) -> Batch:
        """``n`` training trials drawn with ``generator``."""

    def test_set(self) -> Batch:
        """A fixed evaluation set (100 trials drawn from a fixed seed)."""
        return self.sample(100, torch.Generator().manual_seed(12345))

    def evaluation_stimulus(self) -> Stimulus:
        """The noiseless trials that exports and reports simulate (default: the test set's)."""
        return self.test_set().stimulus

    @property
    def batch_size(self) -> int:
        """Trials per update (``settings.batch_size``)."""
        return self.settings.batch_size

    @batch_size.setter
    def batch_size(self, value: int) -> None:
        self.settings = self.settings.override(batch_size=int(value))

    # -- loss and metrics -------------------------------------------------------------
    @abstractmethod
    def loss(self, traj: Trajectory, batch: Batch) -> torch.Tensor:
        """Scalar loss of a simulated batch."""

    def accuracy(self, traj: Trajectory, batch: Batch) -> float | None:
        """Fraction of trials solved (``None``: the task has no accuracy)."""
        return None

    def metrics(self, traj: Trajectory, batch: Batch) -> dict[str, float]:
        """Further task metrics of a test solve, recorded as ``test_<key>`` per update."""
        return {}

    # -- read-out of spiking twins ----------------------------------------------------
    def readout_window(self) -> tuple[float, float]:
        """Window ``(t_start, t_stop)`` (s) over which a spiking twin's rates are read out.

        :meth:`accuracy_from_rates` receives the mean rates of this window; the default is
        the last tenth of the trial.
        """
        return 0.9 * self.duration, self.duration

    def persistence_window(self) -> tuple[float, float] | None:
        """A second read-out window ``(t_start, t_stop)`` (s), after the stimulus, where the task's
        choice should persist (a spiking twin reports :meth:`accuracy_from_rates` over it too);
        ``None`` (the default): the task asks for no persistence."""
        return None

    def accuracy_from_rates(self, rates: Mapping[str, Any], conditions: Stimulus) -> float | None:
        """The task's accuracy computed from population rates (e.g. those of a spiking twin).

        Parameters
        ----------
        rates : mapping
            ``rates[channel]`` (a name of ``network.channel_names``, e.g. ``"upper[0].L23E"``):
            array of shape ``(conditions, trials)``, the mean rate (Hz) of the population
            over :meth:`readout_window` in each trial of each condition.
        conditions : Stimulus
            The conditions (one stimulus trial each, usually :meth:`evaluation_stimulus`).

        Returns
        -------
        float or None
            Fraction of trials solved; ``None`` (the default): the task has no read-out
            from rates.
        """
        return None

    # -- evaluation, figures, report -------------------------------------------------
    def evaluate(self, network: ColumnNetwork, out: Path | None = None) -> dict[str, Any]:
        """Evaluate a trained network; write the task's result files into ``out``.

        Returns plain-type numbers that :meth:`report_section` formats.
        """
        return {}

    def figures(self, network: ColumnNetwork, result: "TrainResult") -> dict[str, "Figure"]:
        """Figures of a trained run by file name (default: the learned weights)."""
        return {"weights.png": plot_weights(network)}

    def report_section(self, network: ColumnNetwork, result: "TrainResult", evaluation: Mapping[str, Any],
                       prefix: str = "") -> list[str]:
        """Markdown lines of the task's part of a run report (``prefix``: path of the run's files)."""
        return []

    # -- reproduction of a figure over seeds -------------------------------------------
    def reproduce(self, runs: Mapping[int, "TrainResult"], out: Path) -> dict[str, Any]:
        """Summarise trained runs (one per seed) into the task's figure; write it into ``out``.

        Returns a plain-type summary with a one-line ``"headline"``. The default raises
        :class:`NotImplementedError`: the task has no figure to reproduce.
        """
        raise NotImplementedError(f"task {self.name!r} defines no reproduction")

    @classmethod
    def can_reproduce(cls) -> bool:
        """Whether the task overrides :meth:`reproduce`."""
        return cls.reproduce is not Task.reproduce

    # -- options: declared once, as constructor keywords -------------------------------
    @classmethod
    def keywords(cls) -> dict[str, inspect.Parameter]:
        """The constructor's keywords (its options) by name."""
        params = inspect.signature(cls.__init__).parameters
        return {k: p for k, p in params.items()
                if k != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}

    @classmethod
    def options(cls) -> list[tuple[str, Option, Any]]:
        """The keywords with a command-line form: ``(keyword, Option, default)``."""
        if cls.__init__ is object.__init__:
            return []
        try:
            hints = typing.get_type_hints(cls.__init__, include_extras=True)
        except NameError:  # an annotation names something imported for type checkers only: read the options alone
            scope = vars(inspect.getmodule(cls.__init__))
            hints = {name: eval(text, scope) if isinstance(text, str) else text  # noqa: S307
                     for name, text in cls.__init__.__annotations__.items()
                     if not isinstance(text, str) or "Option(" in text}
        found = []
        for name, param in cls.keywords().items():
            hint = hints.get(name)
            if typing.get_origin(hint) is Annotated:
                found += [(name, meta, param.default) for meta in hint.__metadata__ if isinstance(meta, Option)]
        return found

    @classmethod
    def add_arguments(cls, group: argparse._ArgumentGroup) -> None:
        """Add the task's command-line options (its :class:`Option` keywords) to ``group``.

        The ``colplugin`` command offers every task's options on ``train``, ``run`` and
        ``reproduce`` (in a group per task) and refuses one given for another task, so
        flags must differ between tasks.
        """
        for name, opt, default in cls.options():
            if isinstance(default, bool) and opt.type is None:  # a switch: off by default, the flag turns it on
                if default:
                    raise TypeError(f"task {cls.name!r}: the switch {opt.flag} of keyword {name!r} must default to "
                                    "False (the flag turns it on)")
                group.add_argument(opt.flag, dest=opt.dest, action="store_true", default=None, help=opt.help)
                continue
            if opt.type is None and not isinstance(default, str) and \
                    (isinstance(default, bool) or not isinstance(default, (int, float))):
                raise TypeError(f"task {cls.name!r}: the option {opt.flag} of keyword {name!r} (default {default!r}) "
                                "needs Option(..., type=...): its command-line text cannot be converted from the "
                                "default's type")
            kind = opt.type or (type(default) if not isinstance(default, str) else None)
            shown = f" (default {default})" if default is not inspect.Parameter.empty else ""
            group.add_argument(opt.flag, dest=opt.dest, type=kind, choices=opt.choices, metavar=opt.metavar,
                               help=opt.help + shown)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "Task":
        """Build the task from parsed command-line options (the ones given; the rest keep their defaults)."""
        given = {name: getattr(args, opt.dest, None) for name, opt, _ in cls.options()}
        return cls(**{k: v for k, v in given.items() if v is not None})

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "Task":
        """Rebuild the task of a checkpoint's config: every plain constructor keyword it records.

        Raises
        ------
        TypeError
            A task that cannot be built from plain options (e.g. a fit target, built from data).
        ValueError
            A recorded option the task refuses.
        """
        return cls(**{k: config[k] for k in cls.keywords() if k in config and isinstance(config[k], _PLAIN)})

    def config(self) -> dict[str, Any]:
        """Plain-type settings saved with checkpoints and metrics: every constructor keyword's value and more.

        Keywords are recorded by name from the attribute of the same name (``solver`` and
        ``device``, where to run, apart); a task adds what its constructor derives.
        """
        options = {k: getattr(self, k) for k in self.keywords()
                   if k not in ("solver", "device") and isinstance(getattr(self, k, None), _PLAIN) and hasattr(self, k)}
        return {**options, "name": self.name, "duration": self.duration, "dt_out": self.dt_out,
                "batch_size": self.batch_size, "solver": self.solver.to_dict(),
                "settings": self.settings.to_dict()}


#: Registered tasks by name (filled by :func:`register_task`).
TASKS: dict[str, type[Task]] = {}


def register_task(cls: type[Task]) -> type[Task]:
    """Class decorator: make a :class:`Task` subclass known by its ``name``.

    Raises
    ------
    ValueError
        If another class already holds the name.
    """
    if not (isinstance(cls, type) and issubclass(cls, Task)) or cls.name == Task.name:
        raise ValueError(f"register_task needs a Task subclass with its own name, got {cls!r}")
    old = TASKS.get(cls.name)
    if old is not None and (old.__module__, old.__qualname__) != (cls.__module__, cls.__qualname__):
        raise ValueError(f"task name {cls.name!r} is taken by {old.__module__}.{old.__qualname__}")
    TASKS[cls.name] = cls
    return cls


def task_class(name: str) -> type[Task]:
    """The registered task class called ``name``."""
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; use one of {', '.join(sorted(TASKS))}") from None


def get_task(name: str, **kwargs: Any) -> Task:
    """A task by name, built with ``kwargs`` (e.g. ``get_task("xor", batch_size=4)``)."""
    return task_class(name)(**kwargs)
