"""How to integrate and how to differentiate: small strategy objects passed to ``simulate``.

* :class:`Solver` says how the ODE is integrated, in three independent parts: the ``method``
  (how to step), its step control (:class:`FixedStep` or :class:`ErrorControl`: how the
  step is chosen) and the :class:`Engine` (where the arithmetic runs: torchdiffeq,
  colplugin's fused Runge-Kutta loop, or ``"auto"``: the fused loop wherever it applies;
  compiled or eager; dense or sparse coupling; memory of the backward pass).
  :meth:`Solver.default` is what ``simulate`` uses when given no solver (fused dopri5;
  torchdiffeq's for :class:`Adjoint` gradients).
* :class:`Direct` and :class:`Adjoint` say how gradients are obtained when the output of
  a solve is differentiated: backpropagation through the solve, or the adjoint method
  (Chen et al. 2018).

Every valid combination works; :func:`check_combination` refuses the invalid ones with
a message that names the fix.

References
----------
.. [Chen18] Chen, Rubanova, Bettencourt & Duvenaud (2018), Neural ordinary differential
   equations, arXiv 1806.07366.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any, Union

import numpy as np
import torch

from .compiled import KERNELS
from .fused import FUSED_METHODS, check_checkpoint_every
from .rosenbrock import ROSENBROCK

__all__ = ["Solver", "FixedStep", "ErrorControl", "Engine", "StepControl", "Direct", "Adjoint", "Gradient",
           "SimulationError", "as_gradient", "check_combination", "BACKENDS"]

_FIXED = {"euler", "midpoint", "rk4", "heun3", "explicit_adams", "implicit_adams"}
_ADAPTIVE = {"dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun"} | set(ROSENBROCK)
#: Integration backends: torchdiffeq's ``odeint`` (the reference), the fused loop, or
#: ``"auto"``: the fused loop wherever it applies (its methods, :class:`Direct` gradients),
#: torchdiffeq otherwise.
BACKENDS = ("torchdiffeq", "fused", "auto")


def _is_number(x: Any) -> bool:
    """A real number that is not a bool (``True`` is an int to Python, never a number here)."""
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, (bool, np.bool_))


class SimulationError(RuntimeError):
    """The ODE solve diverged, produced NaN, or got stuck; the message says what to change."""


def _check_time(name: str, v: Any, what: str) -> None:
    if not _is_number(v):
        raise TypeError(f"{what} {name}={v!r} ({type(v).__name__}) is not a number; e.g. "
                        f"Solver('rk4', step=5e-4) or Solver('dopri5', rtol=1e-6, atol=1e-6)")
    if not (v > 0 and math.isfinite(v)):
        raise ValueError(f"{what} {name} must be a positive time in s, got {v}")


@dataclass(frozen=True)
class FixedStep:
    """Step-size control of fixed-step methods: one step ``step`` (s).

    The grid is the multiples of ``step`` plus every stimulus change point and output time
    (:meth:`Solver.grid`).
    """

    step: float = 5e-4

    def __post_init__(self) -> None:
        _check_time("step", self.step, "FixedStep")


@dataclass(frozen=True)
class ErrorControl:
    """Step-size control of adaptive methods: local error within ``atol + rtol |y|``.

    Parameters
    ----------
    rtol, atol : float
        Relative and absolute tolerance of the local error (atol in mV).
    first_step : float
        Initial step (s) of the fused backend's adaptive solve (torchdiffeq picks its own).
    """

    rtol: float = 1e-6
    atol: float = 1e-6
    first_step: float = 5e-4

    def __post_init__(self) -> None:
        for name in ("rtol", "atol"):
            v = getattr(self, name)
            if not _is_number(v):
                raise TypeError(f"Solver {name}={v!r} ({type(v).__name__}) is not a number; e.g. "
                                f"Solver('dopri5', rtol=1e-6, atol=1e-6)")
        if not (self.rtol > 0 and self.atol > 0 and math.isfinite(self.rtol) and math.isfinite(self.atol)):
            raise ValueError(f"Solver tolerances rtol and atol must be positive and finite, got rtol={self.rtol!r}, "
                             f"atol={self.atol!r}; e.g. rtol=1e-6, atol=1e-6")
        _check_time("step", self.first_step, "Solver")


StepControl = Union[FixedStep, ErrorControl]


@dataclass(frozen=True)
class Engine:
    """Where and how the arithmetic of a solve runs: backend, kernel, coupling layout, memory.

    Parameters
    ----------
    backend : {"torchdiffeq", "fused", "auto"}
        ``"torchdiffeq"`` (default): torchdiffeq's ``odeint``. ``"auto"``: ``"fused"`` for
        the methods it integrates with :class:`Direct` gradients, ``"torchdiffeq"``
        otherwise (other methods, :class:`Adjoint`); see :meth:`Solver.resolve`. ``"fused"``:
        colplugin's fused explicit Runge-Kutta loop (:mod:`colplugin.solve.fused`), for dense
        and sparse couplings and the methods ``euler``, ``midpoint``, ``rk4`` (same scheme
        and grid as torchdiffeq), ``dopri5`` (torchdiffeq's error norm and step-size
        rule, plus a stiffness cap) and the Rosenbrock-W ``ros34pw2``; it builds no autograd
        graph and its backward pass is the exact gradient of the discrete solve.
    kernel : {"auto", "compiled", "eager"}
        How the fused backend runs its loop (other backends ignore it). ``"auto"``
        (default): as compiled code (:mod:`colplugin.solve.compiled`, a C kernel built once
        with cffi) on the CPU where per-operation overhead would otherwise dominate
        (:func:`colplugin.solve.compiled.choose`); as eager tensor operations otherwise.
        ``"compiled"``: always compiled (an error where it cannot run: GPUs, no C compiler).
        ``"eager"``: never. Both compute the same arithmetic; results agree up to the order
        of summation.
    dense : bool, optional
        How the field couples populations: one dense P x P matrix (``True``) or per-area
        8 x 8 blocks plus an edge list (``False``; cost and memory grow with the
        connections). Both backends take both. Default (``None``): dense up to
        :data:`~colplugin.field.DENSE_MAX_POPULATIONS` populations, where one matrix
        product beats the sparse form's several small operations; sparse above. Where the
        fused backend runs in the compiled kernel, dense up to
        :data:`colplugin.solve.compiled.KERNEL_DENSE_MAX_POPULATIONS` (its loops touch only
        the connections, so the sparse form wins from a few columns on).
    checkpoint_every : int, optional
        Memory of the fused backend's backward pass (other backends ignore it). ``None``
        (default, automatic): the forward keeps w and g of every stage of every accepted
        step while they take at most :data:`~colplugin.solve.fused.KEEP_ALL_BYTES` bytes
        (small networks and short trials: no recomputation); beyond, it keeps only the
        state (B x 2P numbers, mV) before every M-th accepted step, M about
        sqrt(steps / (2 stages)) and at least the steps whose stages fit that budget, and
        the backward pass recomputes the stages of one chunk of M steps at a time from it
        (one extra forward pass of work), so peak memory grows with sqrt(steps) instead of
        steps. ``0``: keep every stage (memory grows linearly with the number of steps). A
        positive int M: checkpoints every M accepted steps (M at or past the number of
        steps: one chunk, recomputed once). The recomputed stages are the forward's
        arithmetic, so the gradients agree with ``0``'s up to the order of summation. The
        Rosenbrock-W ``ros34pw2`` ignores it: it keeps the state before every accepted step
        (B x 2P numbers; its steps are few) and recomputes each step in the backward pass.
    interpolate : bool
        How the fused backend records output times between the stimulus change points.
        ``True`` (default): with an adaptive method that has dense output (``dopri5``), the
        steps go where the error control puts them and the outputs come from the scheme's
        own interpolant (torchdiffeq's quartic; the gradients are its exact adjoint), so
        recording at a fine ``dt_out`` costs few extra steps. ``False``: every output time
        is a stop the solve steps onto (more steps; the outputs are step ends). Fixed-step
        methods and torchdiffeq's backend (which interpolates on its own) ignore it.
    """

    backend: str = "torchdiffeq"
    kernel: str = "auto"
    dense: bool | None = None
    checkpoint_every: int | None = None
    interpolate: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "checkpoint_every", check_checkpoint_every(self.checkpoint_every))
        if self.kernel not in KERNELS:
            raise ValueError(f"unknown solver kernel {self.kernel!r}; use one of {', '.join(KERNELS)}")
        if self.backend not in BACKENDS:
            raise ValueError(f"unknown solver backend {self.backend!r}; use one of {', '.join(BACKENDS)}")
        if self.dense is not None and not isinstance(self.dense, (bool, np.bool_)):
            raise TypeError(f"Solver dense={self.dense!r} must be True, False or None (automatic)")
        if not isinstance(self.interpolate, (bool, np.bool_)):
            raise TypeError(f"Engine interpolate={self.interpolate!r} must be True or False")


#: The shorthand keywords of :class:`Solver` and the part each one sets.
_SHORTHANDS = {"step": "control", "rtol": "control", "atol": "control",
               "backend": "engine", "kernel": "engine", "dense": "engine", "checkpoint_every": "engine",
               "interpolate": "engine"}


def _check_backend(method: str, engine: Engine) -> None:
    """Refuse a method that the engine's backend does not integrate, naming the backend that does."""
    if engine.backend == "fused" and method not in FUSED_METHODS:
        raise ValueError(f"Solver(backend='fused') integrates {', '.join(FUSED_METHODS)} only, not "
                         f"{method!r}; use backend='torchdiffeq' for torchdiffeq's {method}")
    if engine.backend == "torchdiffeq" and method in ROSENBROCK:
        raise ValueError(f"{method} is colplugin's Rosenbrock-W scheme, which torchdiffeq does not have: it runs in "
                         f"the fused backend (Solver({method!r}), backend 'auto' or 'fused') with gradient=Direct() "
                         "(its exact discrete adjoint). Adjoint(), which runs torchdiffeq's odeint_adjoint, needs "
                         "an explicit method such as Solver('dopri5')")


@dataclass(frozen=True, init=False)
class Solver:
    """How to integrate: the method (how to step), its step control, and the engine (where to run).

    Three independent choices, as diffrax separates solver, step-size controller and adjoint:
    ``method`` is the Runge-Kutta scheme; ``control`` a :class:`FixedStep` or an
    :class:`ErrorControl`; ``engine`` an :class:`Engine` (backend, kernel, coupling layout,
    memory of the backward pass). How gradients are obtained is the fourth choice, passed to
    ``simulate`` beside the solver (:class:`Direct`, :class:`Adjoint`).

    The keywords ``step``, ``rtol``, ``atol``, ``backend``, ``kernel``, ``dense``,
    ``checkpoint_every`` and ``interpolate`` are shorthands that set the field of the same name in ``control``
    or ``engine`` (and are read back as attributes): ``Solver("dopri5", rtol=1e-8,
    backend="auto")`` is ``Solver("dopri5", ErrorControl(rtol=1e-8), Engine(backend="auto"))``.

    ``Solver()`` is torchdiffeq's rk4 at 0.5 ms, the reference; ``simulate`` without a
    solver uses :meth:`Solver.default` instead (fused dopri5, ``backend="auto"``).

    Parameters
    ----------
    method : str
        ``"rk4"`` (fixed step, default), ``"euler"``, ``"midpoint"``, or an adaptive
        method (``"dopri5"``, ``"bosh3"``, ...), or ``"ros34pw2"``: colplugin's stiff-aware
        Rosenbrock-W scheme (:mod:`colplugin.solve.rosenbrock`; order 3, stable at any step
        for the columns' own fast modes, so the step follows the tolerance instead of the
        stiffness), fused backend only (its engine defaults to ``backend="auto"``), with
        :class:`Direct` gradients (its exact discrete adjoint).
    control : FixedStep or ErrorControl, optional
        Default: ``FixedStep()`` (0.5 ms) for fixed-step methods, ``ErrorControl()``
        (rtol = atol = 1e-6) for adaptive ones. A fixed-step method with an
        :class:`ErrorControl` (or the reverse) is refused.
    engine : Engine, optional
        Default: ``Engine()`` (torchdiffeq).
    max_steps : int
        Steps after which a solve counts as stuck (adaptive methods shrinking their step).
    step : float, optional
        Shorthand: the step of a :class:`FixedStep`, the ``first_step`` of an
        :class:`ErrorControl` (s).
    rtol, atol : float, optional
        Shorthand: the tolerances of an :class:`ErrorControl` (adaptive methods only).
    backend, kernel, dense, checkpoint_every, interpolate : optional
        Shorthand: the fields of :class:`Engine`.
    """

    method: str
    control: StepControl
    engine: Engine
    max_steps: int

    def __init__(self, method: str = "rk4", control: StepControl | None = None, engine: Engine | None = None,
                 *, max_steps: int = 1_000_000, step: float | None = None, rtol: float | None = None,
                 atol: float | None = None, backend: str | None = None, kernel: str | None = None,
                 dense: bool | None = None, checkpoint_every: int | None = None,
                 interpolate: bool | None = None) -> None:
        if method not in _FIXED | _ADAPTIVE:
            raise ValueError(f"unknown solver method {method!r}; use one of {', '.join(sorted(_FIXED | _ADAPTIVE))}")
        adaptive = method in _ADAPTIVE
        if control is None:
            control = ErrorControl() if adaptive else FixedStep()
        if not isinstance(control, (FixedStep, ErrorControl)):
            raise TypeError(f"Solver control must be FixedStep(step) or ErrorControl(rtol, atol), got {control!r}")
        if isinstance(control, ErrorControl) != adaptive:
            raise ValueError(f"{method} is {'an adaptive' if adaptive else 'a fixed-step'} method; give it "
                             f"{'ErrorControl(rtol, atol)' if adaptive else 'FixedStep(step)'}, not {control!r}")
        if not adaptive and (rtol is not None or atol is not None):
            raise ValueError(f"rtol and atol are tolerances of adaptive methods; {method} steps at a fixed step "
                             f"(Solver({method!r}, step=...)), or use an adaptive method such as 'dopri5'")
        if step is not None:
            control = replace(control, **({"first_step": step} if adaptive else {"step": step}))
        tols = {k: v for k, v in (("rtol", rtol), ("atol", atol)) if v is not None}
        if tols:
            control = replace(control, **tols)
        if engine is None:  # torchdiffeq's by default; a Rosenbrock-W method runs in the fused backend only
            engine = Engine(backend="auto") if method in ROSENBROCK else Engine()
        if not isinstance(engine, Engine):
            raise TypeError(f"Solver engine must be an Engine(backend, kernel, dense, checkpoint_every, interpolate), "
                            f"got {engine!r}")
        given = {k: v for k, v in (("backend", backend), ("kernel", kernel), ("checkpoint_every", checkpoint_every),
                                   ("dense", dense), ("interpolate", interpolate)) if v is not None}
        if given:
            engine = replace(engine, **given)
        _check_backend(method, engine)
        if not _is_number(max_steps):
            raise TypeError(f"Solver max_steps={max_steps!r} ({type(max_steps).__name__}) must be a whole number "
                            "of steps >= 1, e.g. max_steps=1_000_000 (the default)")
        if not (math.isfinite(max_steps) and float(max_steps).is_integer() and max_steps >= 1):
            raise ValueError(f"Solver max_steps={max_steps!r}: a solve needs at least one step, so max_steps must be "
                             "a whole number >= 1 (the default is 1_000_000; it only stops a stuck solve)")
        for name, value in (("method", method), ("control", control), ("engine", engine),
                            ("max_steps", int(max_steps))):
            object.__setattr__(self, name, value)

    # the shorthands, read back
    @property
    def step(self) -> float:
        """The fixed step, or the first step of an adaptive method (s)."""
        c = self.control
        return c.step if isinstance(c, FixedStep) else c.first_step

    @property
    def rtol(self) -> float | None:
        """Relative tolerance (None for fixed-step methods)."""
        return getattr(self.control, "rtol", None)

    @property
    def atol(self) -> float | None:
        """Absolute tolerance in mV (None for fixed-step methods)."""
        return getattr(self.control, "atol", None)

    @property
    def backend(self) -> str:
        """The engine's backend."""
        return self.engine.backend

    @property
    def kernel(self) -> str:
        """The engine's kernel."""
        return self.engine.kernel

    @property
    def dense(self) -> bool | None:
        """The engine's coupling layout."""
        return self.engine.dense

    @property
    def checkpoint_every(self) -> int | None:
        """The engine's checkpoint spacing of the fused backward pass."""
        return self.engine.checkpoint_every

    @property
    def interpolate(self) -> bool:
        """Whether the fused backend takes outputs from the scheme's dense output."""
        return self.engine.interpolate

    @property
    def fused(self) -> bool:
        """Whether the fused backend integrates."""
        return self.engine.backend == "fused"

    @property
    def adaptive(self) -> bool:
        """Whether the method chooses its own steps."""
        return self.method in _ADAPTIVE

    @classmethod
    def default(cls) -> "Solver":
        """What :func:`~colplugin.solve.simulate.simulate` integrates with when given no solver.

        ``Solver("dopri5", rtol=1e-6, atol=1e-6, backend="auto")``: the fused Dormand-Prince
        solve for :class:`Direct` gradients (dense or sparse coupling), torchdiffeq's dopri5
        for :class:`Adjoint`. The step size of these dynamics is set by stability, not
        accuracy: the fastest time scale (membrane and recurrent coupling, a few ms, against
        the 10 s adaptation) caps dopri5's step through the fused solver's stiffness
        estimate, so tightening the tolerances costs few extra steps. With states of tens of
        mV (V) and below 1 mV (A, early on), rtol 1e-6 and atol 1e-6 mV keep the rates within
        about 1e-5 Hz (2e-6 relative) of a tight reference (rtol 1e-10) on one to a hundred
        columns and within about 1e-4 Hz on the paper's XOR network
        (``tests/test_solve_default.py``); for publication-grade numbers pass
        ``Solver("dopri5", rtol=1e-8, atol=1e-8)``.
        """
        return cls("dopri5", ErrorControl(rtol=1e-6, atol=1e-6), Engine(backend="auto"))

    def resolve(self, gradient: "Gradient | None" = None) -> "Solver":
        """This solver with a concrete backend for a gradient strategy (``"auto"`` decided).

        ``"auto"`` becomes ``"fused"`` for the fused solver's methods (:data:`~colplugin.solve.fused.FUSED_METHODS`)
        with :class:`Direct` gradients, and ``"torchdiffeq"`` otherwise; other backends are
        returned unchanged.
        """
        if self.method in ROSENBROCK and isinstance(gradient, Adjoint):
            check_combination(self, gradient)  # refused, with the fix
        if self.backend != "auto":
            return self
        fused = self.method in FUSED_METHODS and not isinstance(gradient, Adjoint)
        return self.on("fused" if fused else "torchdiffeq")

    def on(self, backend: str) -> "Solver":
        """This solver with another engine backend (method, control and the rest unchanged)."""
        return replace(self, engine=replace(self.engine, backend=backend))

    def options(self, jump_times: torch.Tensor, t_out: torch.Tensor) -> dict[str, Any]:
        """torchdiffeq ``options`` for this solver and these change points."""
        if self.adaptive:
            return {"jump_t": jump_times} if jump_times.numel() else {}
        extra = torch.cat([jump_times.to(t_out), t_out])

        def grid(func, y0, t):  # called with descending t during the adjoint's backward solve
            g = self.grid(t, extra)
            return g if t[0] <= t[-1] else g.flip(0)

        return {"grid_constructor": grid}

    def grid(self, t: torch.Tensor, extra: torch.Tensor) -> torch.Tensor:
        """Increasing fixed-step grid over [min t, max t]: multiples of ``step`` plus the
        points ``extra`` (change points, output times) inside; points closer than
        step/1e6 are merged."""
        step = self.step
        lo, hi = float(t.min()), float(t.max())
        k0, k1 = math.floor(lo / step) + 1, math.ceil(hi / step) - 1
        base = torch.arange(k0, k1 + 1, dtype=t.dtype, device=t.device) * step
        inner = extra[(extra > lo) & (extra < hi)].to(t)
        g = torch.cat([t.min().reshape(1), base, inner, t.max().reshape(1)]).unique(sorted=True)
        keep = torch.ones_like(g, dtype=torch.bool)
        keep[1:] = (g[1:] - g[:-1]) > step * 1e-6
        keep[-1] = True
        keep[-2] = keep[-2] & ((g[-1] - g[-2]) > step * 1e-6) if len(g) > 2 else keep[-2]
        return g[keep]

    def to_dict(self) -> dict[str, Any]:
        """Plain-type form, saved with metrics and checkpoints; :meth:`from_dict` reads it back."""
        control = {"type": type(self.control).__name__, **asdict(self.control)}
        return {"method": self.method, "control": control, "engine": asdict(self.engine),
                "max_steps": self.max_steps}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Solver":
        """A solver from :meth:`to_dict`'s form (or the flat form of earlier versions)."""
        if not isinstance(data, dict) or "method" not in data:
            raise ValueError(f"a solver record must be a dict with a 'method', got {data!r}")
        if "control" not in data:  # flat form: method, step, rtol, atol, max_steps and the engine's fields
            flat = {k: v for k, v in data.items() if k not in ("adjoint_rtol", "adjoint_atol")}  # the earliest form
            method = flat.pop("method")
            if method not in _ADAPTIVE:
                flat.pop("rtol", None), flat.pop("atol", None)
            return cls(method, **flat)
        if not isinstance(data["control"], dict) or not isinstance(data.get("engine", {}), dict):
            raise ValueError(f"a solver record's control and engine must be dicts, got {data!r}")
        control = dict(data["control"])
        kinds = {"FixedStep": FixedStep, "ErrorControl": ErrorControl}
        kind = control.pop("type", None)
        if kind not in kinds:
            raise ValueError(f"unknown step control {kind!r} in a solver record; known: {', '.join(kinds)}")
        return cls(data["method"], kinds[kind](**control), Engine(**data.get("engine", {})),
                   max_steps=data.get("max_steps", 1_000_000))


@dataclass(frozen=True)
class Direct:
    """Gradients by backpropagation through the solve.

    With the torchdiffeq backend, autograd records every step; with the fused backend, the
    hand-derived discrete adjoint of the Runge-Kutta scheme runs instead (the same numbers,
    without a per-step graph).
    """

    name = "direct"

    def to_dict(self) -> dict[str, Any]:
        """Plain-type form, saved with metrics and checkpoints."""
        return {"name": self.name}


@dataclass(frozen=True)
class Adjoint:
    """Gradients by the adjoint method (torchdiffeq's ``odeint_adjoint``; the paper's method).

    Parameters
    ----------
    checkpoint : float
        Spacing (s) of the forward states the adjoint resets to during its backward solve.
        The backward re-integration of these dissipative, stiff dynamics amplifies errors
        exponentially in time; resetting at a fine spacing keeps them bounded (torchdiffeq
        resets at every output time, so the solve uses this finer output grid).
    rtol, atol : float, optional
        Tolerances of the backward solve (default: those of the forward :class:`Solver`).
    """

    checkpoint: float = 1e-3
    rtol: float | None = None
    atol: float | None = None
    name = "adjoint"

    def __post_init__(self) -> None:
        if not (self.checkpoint > 0 and math.isfinite(self.checkpoint)):
            raise ValueError(f"Adjoint checkpoint must be a positive time in s, got {self.checkpoint}")

    def to_dict(self) -> dict[str, Any]:
        """Plain-type form, saved with metrics and checkpoints."""
        return {"name": self.name, "checkpoint": self.checkpoint, "rtol": self.rtol, "atol": self.atol}


Gradient = Union[Direct, Adjoint]


def as_gradient(gradient: Gradient | str | None) -> Gradient:
    """A gradient strategy from an object or its name (``"direct"``, ``"adjoint"``)."""
    if gradient is None:
        return Direct()
    if isinstance(gradient, (Direct, Adjoint)):
        return gradient
    if gradient == "direct":
        return Direct()
    if gradient == "adjoint":
        return Adjoint()
    raise ValueError(f"gradient must be Direct(), Adjoint(), 'direct' or 'adjoint', got {gradient!r}")


def check_combination(solver: Solver, gradient: Gradient) -> None:
    """Refuse a solver/gradient pair that cannot work, with the fix in the message."""
    if isinstance(gradient, Adjoint) and solver.method in ROSENBROCK:
        raise ValueError(f"Adjoint() runs torchdiffeq's odeint_adjoint, which has no {solver.method}; the "
                         f"Rosenbrock-W solve has its own exact discrete adjoint: use gradient=Direct() with "
                         f"Solver({solver.method!r}), or Adjoint() with an explicit method such as 'dopri5'")
    if isinstance(gradient, Adjoint) and solver.fused:
        raise ValueError("Adjoint() is a continuous-time method run by torchdiffeq's odeint_adjoint; "
                         "Solver(backend='fused') has its own exact discrete adjoint. Use "
                         "gradient=Direct() with the fused backend, or Solver(backend='torchdiffeq') "
                         "with Adjoint()")
