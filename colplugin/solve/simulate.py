"""Batched simulation of a :class:`~colplugin.network.ColumnNetwork`: ``simulate`` and its :class:`Trajectory`.

The network's :class:`~colplugin.field.Field` (built once per solve) is integrated by
torchdiffeq (``odeint``, or ``odeint_adjoint`` for :class:`~colplugin.solve.strategies.Adjoint`
gradients) or by the fused Runge-Kutta loop (:mod:`colplugin.solve.fused`, dense or sparse
coupling), as the :class:`~colplugin.solve.strategies.Solver` says; without one,
:meth:`~colplugin.solve.strategies.Solver.default` (the fused loop's dopri5 for direct
gradients, torchdiffeq's for the adjoint method).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torchdiffeq import odeint, odeint_adjoint

from .._io import check_memory
from .._neo import rate_block
from ..field import filter_rate
from ..network import ColumnNetwork
from ..stimulus import MembraneNoise, Stimulus
from . import compiled
from .fused import TABLEAUS, StepSizeUnderflow, fused_solve
from .rosenbrock import ROSENBROCK
from .strategies import Adjoint, Gradient, SimulationError, Solver, as_gradient, check_combination

__all__ = ["Solver", "Trajectory", "SimulationError", "simulate", "solver_for_transfer"]


class _ODEFunc(nn.Module):
    """dy/dt = vector field of the network in the current stimulus segment (for torchdiffeq).

    With fixed-step methods the grid contains every change point, so a step never
    straddles one; the segment is then looked up once per step (``callback_step``, from
    the step's midpoint) instead of once per evaluation. Adaptive methods look it up from
    ``t`` in every evaluation (their ``jump_t`` handling perturbs ``t`` to the correct side).
    """

    def __init__(self, network: ColumnNetwork, stimulus: Stimulus, per_step: bool,
                 max_rate: float = float("inf"), max_steps: int = 10**9, check_every: int = 25,
                 dense: bool | None = None, noise: torch.Tensor | None = None) -> None:
        super().__init__()
        # the network is not a submodule: its parameters reach the solve through the field's tensors
        self.field = network.field(stimulus.rates if stimulus.n_inputs else None, dense=dense, noise=noise)
        self.params_name = network.params.name  # named in errors
        # V - A above x_max means f > max_rate (f(x) >= a x - b); saturating populations stay below r_max.
        # Other transfers are watched for NaN here and for max_rate on the result (the Siegert rate is bounded).
        tr = self.field.transfer
        self.x_max = (max_rate + tr.b) / tr.a if tr.fused else math.inf
        sat = self.field.saturating
        self.unbounded = None if sat is None else ~sat
        self.max_rate, self.max_steps, self.check_every = max_rate, max_steps, check_every
        self.steps = 0
        self.times = stimulus.times
        self.piecewise = (stimulus.n_inputs > 0 or noise is not None) and stimulus.times.numel() > 1
        self.per_step = per_step
        self.k = 0
        self.nfe = 0

    def _segment(self, t: torch.Tensor) -> int:
        return int(torch.searchsorted(self.times, t.reshape(1), right=True)[0]) - 1

    def _watch(self, t0: torch.Tensor | float, x: torch.Tensor, steps: int = 1) -> None:
        """Stop a diverging solve early instead of after it has run to the end.

        ``x = V - A`` (mV) of a recent state; ``steps``: steps taken since the last call.
        """
        self.steps += steps
        if steps == 1 and self.steps % self.check_every:
            return
        if self.steps > self.max_steps:
            raise SimulationError(
                f"the solver took more than {self.max_steps} steps (t = {float(t0):.4g} s): the "
                "dynamics diverged or are too stiff for the tolerances. Use Solver('rk4', step=1e-4), "
                "loosen rtol/atol, or lower the inter-column weights")
        if self.unbounded is not None and isinstance(x, torch.Tensor) and x.ndim:
            x = x.detach()
            bad = not bool(torch.isfinite(x).all())  # NaN or inf anywhere; saturated rates are bounded
            x = x[..., self.unbounded]
            bad = bad or (x.numel() > 0 and float(x.max()) > self.x_max)
        else:
            # a scalar: the largest V - A of the populations that can run away (the compiled
            # kernel's; -inf where every population saturates), NaN if any state is NaN
            x = float(x.detach().max()) if isinstance(x, torch.Tensor) else float(x)
            bad = math.isnan(x) or x == math.inf or x > self.x_max
        if bad:
            raise SimulationError(
                f"runaway rates at t = {float(t0):.4g} s: a population exceeded max_rate = "
                f"{self.max_rate:g} Hz (or became NaN). The network is unstable with these "
                "weights/inputs: lower the excitatory inter-column weights or the input, use a "
                "smaller solver step, or raise max_rate if such rates are intended")

    def callback_step(self, t0: torch.Tensor, y0: torch.Tensor, dt: torch.Tensor) -> None:
        P = self.field.P
        self._watch(t0, y0[..., :P] - y0[..., P:2 * P])
        if self.piecewise and self.per_step:
            self.k = self._segment(t0 + 0.5 * dt)

    def callback_step_adjoint(self, t0: torch.Tensor, y0: torch.Tensor, dt: torch.Tensor) -> None:
        if self.piecewise and self.per_step:  # the adjoint runs backwards in time from t0
            self.k = self._segment(t0 - 0.5 * dt)

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.nfe += 1
        if self.piecewise and not self.per_step:
            self.k = self._segment(t)
        return self.field(y, self.k)


@dataclass
class Trajectory:
    """The result of :func:`simulate`.

    Attributes
    ----------
    t : torch.Tensor, shape (T,)
        Output times in s.
    state : torch.Tensor, shape (T, B, n_state)
        ``[V, A]`` in mV, followed by ``S`` (mV^2) and/or ``G`` where the network has them
        (:attr:`~colplugin.network.ColumnNetwork.state_variables`).
    network : ColumnNetwork
    stimulus : Stimulus
    solver : Solver
    nfe : int
        Vector-field evaluations of the forward solve.
    """

    t: torch.Tensor
    state: torch.Tensor
    network: ColumnNetwork
    stimulus: Stimulus
    solver: Solver
    nfe: int = 0
    _filtered: torch.Tensor | None = field(default=None, repr=False)
    _rate: tuple[torch.Tensor, torch.Tensor] | None = field(default=None, repr=False)  # (state, its rates)

    @property
    def V(self) -> torch.Tensor:
        """Membrane-like potential (T, B, P), mV."""
        return self.state[..., :self.network.n_populations]

    @property
    def A(self) -> torch.Tensor:
        """Adaptation (T, B, P), mV."""
        P = self.network.n_populations
        return self.state[..., P:2 * P]

    @property
    def S(self) -> torch.Tensor:
        """Input variance (T, B, P), mV^2: Brunel's white-noise amplitude squared (transfers that need it)."""
        P = self.network.n_populations
        if "S" not in self.network.state_variables:
            raise AttributeError(f"this network's transfer ({self.network.transfer.name}) has no input variance S")
        return self.state[..., 2 * P:3 * P]

    @property
    def G(self) -> torch.Tensor:
        """Synaptic gating (T, B, P), dimensionless in [0, 1] (networks with gating)."""
        if "G" not in self.network.state_variables:
            raise AttributeError("this network has no synaptic gating G (its parameters' gating is 'none')")
        return self.state[..., -self.network.n_populations:]

    @property
    def rate(self) -> torch.Tensor:
        """Instantaneous rate f(V - A) (T, B, P), Hz.

        Computed on first use and kept while :attr:`state` is the same tensor, unless the state
        carries a graph that this read does not record (under ``torch.no_grad``): such a read
        computes the rates afresh and keeps nothing, so that a later read records the graph.
        """
        cached = self._rate
        if cached is not None and cached[0] is self.state and (cached[1].requires_grad or not self.state.requires_grad):
            return cached[1]
        rate = self.network.rates(self.state)
        if rate.requires_grad or not self.state.requires_grad:
            self._rate = (self.state, rate)
        return rate

    @property
    def rate_filtered(self) -> torch.Tensor:
        """Low-pass filtered rate r~ (T, B, P), Hz (tau_s, started at r(0))."""
        if self._filtered is None:
            self._filtered = filter_rate(self.t, self.rate, self.network.params["tau_s"])
        return self._filtered

    @property
    def input(self) -> torch.Tensor:
        """Stimulus rates at the output times (T, B, n_inputs), Hz."""
        return self.stimulus.sample(self.t)

    def get(self, variable: str, area: str, column: int, population: str) -> torch.Tensor:
        """One population's trace (T, B): ``traj.get("rate", "upper", 0, "L23E")``."""
        if variable not in ("V", "A", "S", "G", "rate", "rate_filtered"):
            raise KeyError(f"unknown variable {variable!r}; use V, A, S (input variance), G (synaptic gating), rate "
                           "or rate_filtered")
        return getattr(self, variable)[..., self.network.index(area, column, population)]

    @property
    def channel_names(self) -> list[str]:
        """``"area[column].population"`` of every population."""
        return self.network.channel_names

    def to_neo(self, *, seed: int | None = None, description: str = ""):
        """The run as a Neo Block (see :func:`colplugin.to_neo`): rates, inputs, stimulus epochs."""
        return rate_block(self.network, self.t.detach().cpu().numpy(), self.rate.detach().cpu().numpy(),
                          source="torch", solver=self.solver.to_dict(), stimulus=self.stimulus, seed=seed,
                          description=description)


def _peak_rate(state: torch.Tensor, network: ColumnNetwork) -> tuple[float, torch.Tensor | None]:
    """The largest rate (Hz) of a trajectory's states, and its rates where they had to be computed for it.

    With a transfer that increases with x = V - A alone (:attr:`Transfer.monotone
    <colplugin.transfers.Transfer.monotone>`), the rate of each population's largest x (the
    saturation, too, increases with the rate): one pass over the states instead of the
    transfer of every recorded one. Otherwise every rate, returned for the trajectory to keep.
    """
    P = network.n_populations
    if network.transfer.monotone:
        with torch.no_grad():  # in pieces of about 2^15 numbers along time: no trajectory-sized temporary
            rows = max(1, (1 << 15) * state.shape[0] // max(state.numel(), 1))
            peak = torch.zeros(network.n_state, dtype=state.dtype, device=state.device)
            x = peak[:P].fill_(-math.inf)  # the running maximum of V - A per population
            for s in state.split(rows):
                torch.maximum(x, (s[..., :P] - s[..., P:2 * P]).reshape(-1, P).amax(0), out=x)
            return float(network.rates(peak).max()), None
    with torch.no_grad():  # the trajectory keeps them where no graph is lost (Trajectory.rate records it)
        rate = network.rates(state)
    return float(rate.max()), None if state.requires_grad else rate


def _check(traj_state: torch.Tensor, network: ColumnNetwork, max_rate: float,
           solver: Solver) -> torch.Tensor | None:
    """Refuse a trajectory that diverged: a non-finite state, G outside [0, 1], a rate above ``max_rate``.

    A sum is finite exactly when every term is (NaN and inf propagate; finite states of mV do
    not overflow it), and one pass over the states costs a fraction of an elementwise test's.
    Returns the rates where the peak rate needed them all (:func:`_peak_rate`), else None.
    """
    if not math.isfinite(float(traj_state.detach().sum())):
        raise SimulationError(
            "the simulation produced NaN/inf: the network diverged. Lower the learnable weights "
            f"or the input rates, or use a smaller step (now {solver.method}, step {solver.step} s)")
    if "G" in network.state_variables:  # a fixed step past the gating's stability limit leaves [0, 1] first
        G = traj_state.detach()[..., -network.n_populations:]
        lo, hi = float(G.min()), float(G.max())
        if lo < -1e-6 or hi > 1 + 1e-6:
            gt = network.gating
            raise SimulationError(
                f"the synaptic gating G left [0, 1] (from {lo:.3g} to {hi:.3g}): the step is past its stability limit. "
                f"G relaxes at 1/tau_G + gamma_G r = {1 / float(gt.tau):g}/s + {float(gt.gamma):g} r, so at high "
                f"rates an explicit step must stay below about 2.8 / that (now {solver.method}, step {solver.step} s);"
                " use the adaptive default solver (dopri5) or a smaller step")
    rmax, rate = _peak_rate(traj_state, network)
    if rmax > max_rate:
        raise SimulationError(
            f"runaway rates: a population reached {rmax:.4g} Hz (> max_rate = {max_rate:g} Hz). "
            "The network is unstable with these weights/inputs: lower the excitatory inter-column "
            "weights or the input, or raise max_rate if such rates are intended")
    return rate


def _stuck(solver: Solver, params_name: str, stimulus: Stimulus) -> SimulationError:
    peak = float(stimulus.rates.max()) if stimulus.rates.numel() else 0.0
    return SimulationError(
        f"the adaptive solver {solver.method} got stuck (underflow in dt): the dynamics diverged or became too "
        f"stiff. The largest input rate is {peak:g} Hz and the parameters are {params_name!r}: an extreme "
        "input or parameter (a time constant of microseconds, a huge gain) does this. From the command line, "
        "lower --input or check the --preset file; in Python, Solver('rk4', step=1e-4) shows where it "
        "diverges, or loosen rtol/atol, or lower the inter-column weights")


def _check_output_memory(network: ColumnNetwork, batch: int, duration: float, dt_out: float,
                         device: torch.device) -> None:
    """Refuse a solve whose recorded trajectory cannot fit in memory, before allocating it.

    The trajectory holds ``duration / dt_out + 1`` time points of ``n_state`` states per trial
    (8 bytes each), and the rates derived from them; the solver's stages add about 12 states.
    """
    points = duration / dt_out + 1
    nbytes = 8.0 * batch * (network.n_state * (points + 12) + network.n_populations * points)
    available = None
    if device.type == "cuda":
        available = int(torch.cuda.mem_get_info(device)[0])
    check_memory(nbytes, f"recording {batch} trial(s) of {network.n_populations} populations for {duration:g} s "
                 f"every {dt_out:g} s ({points:.3g} time points)",
                 "shorten the duration, record less often (a larger dt_out) or simulate fewer trials or columns",
                 available=available)


def _solve_fused(func: _ODEFunc, y0: torch.Tensor, t: torch.Tensor, jumps: torch.Tensor,
                 stimulus: Stimulus, solver: Solver) -> torch.Tensor:
    """States at ``t`` from :func:`colplugin.solve.fused.fused_solve` (fixed grid or adaptive steps)."""
    interpolate = solver.adaptive and solver.engine.interpolate and (
        solver.method in ROSENBROCK or TABLEAUS[solver.method].interpolant is not None)
    # dense output: the steps land on the stimulus change points and the ends only, and the
    # outputs between them come from the scheme's interpolant; otherwise every output time is a stop
    extra = torch.cat([jumps.to(t), t[:1], t[-1:]] if interpolate else [jumps.to(t), t])
    stops = extra.unique(sorted=True) if solver.adaptive else solver.grid(t, extra)
    out_idx = torch.searchsorted(stops, t).clamp_max(len(stops) - 1)
    below = (out_idx - 1).clamp_min(0)
    out_idx = torch.where((stops[out_idx] - t).abs() <= (stops[below] - t).abs(), out_idx, below)
    if interpolate:  # times that are not stops (to rounding) are interpolated (-1)
        off = (stops[out_idx] - t).abs() > 1e-12 * t.abs().clamp_min(1.0)
        out_idx = torch.where(off, torch.full_like(out_idx, -1), out_idx)
    mid = 0.5 * (stops[1:] + stops[:-1])
    seg = (torch.searchsorted(stimulus.times.to(t), mid, right=True) - 1).clamp_min(0)
    if not func.piecewise:
        seg = torch.zeros_like(seg)
    try:
        state, func.nfe = fused_solve(func.field, y0, stops.tolist(), seg.tolist(), out_idx.tolist(),
                                      solver.method, func._watch, step=solver.step, **_tolerances(solver),
                                      watch_every=func.check_every,
                                      checkpoint_every=solver.checkpoint_every, kernel=solver.kernel,
                                      out_times=t.tolist() if interpolate else None)
    except StepSizeUnderflow:
        raise _stuck(solver, func.params_name, stimulus) from None
    return state


def _tolerances(solver: Solver, prefix: str = "") -> dict[str, float]:
    """``rtol`` and ``atol`` of an adaptive solver (fixed-step methods have none)."""
    return {f"{prefix}rtol": solver.rtol, f"{prefix}atol": solver.atol} if solver.adaptive else {}


_ANNOUNCED: set[str] = set()


def solver_for_transfer(solver: Solver, network: ColumnNetwork) -> Solver:
    """The solver for the network's model: the fused loop integrates the DMF's f without gating only.

    A fused solver chosen by ``backend="auto"`` becomes torchdiffeq's (the same method and
    tolerances), announced once per kind of model and process; an explicit ``backend="fused"``
    is refused with the fix.
    """
    tr = network.transfer
    if network.fusable or solver.backend == "torchdiffeq":
        return solver
    what = (f"the {tr.name!r} transfer" if not tr.fused else
            "synaptic gating" if "G" in network.state_variables else "a term the fused solver lacks")
    if solver.backend == "fused" or solver.method in ROSENBROCK:
        fix = ("Use an explicit method, e.g. Solver('dopri5') (backend='auto' integrates it with torchdiffeq here)"
               if solver.method in ROSENBROCK else
               "Use Solver(backend='torchdiffeq') (or backend='auto', which does so)")
        raise ValueError(f"Solver(backend='fused') (and {solver.method}, if it runs there only) integrates the DMF "
                         f"transfer without synaptic gating only; this network has {what}. {fix}")
    if what not in _ANNOUNCED:
        _ANNOUNCED.add(what)
        warnings.warn(f"the fused solver implements the DMF transfer without synaptic gating; this network has "
                      f"{what}, so it integrates with torchdiffeq's {solver.method} (same method and tolerances)",
                      UserWarning, stacklevel=3)
    return solver.on("torchdiffeq")


#: Output spacing (s) of :func:`simulate` when no ``dt_out`` is given: a 1 ms recording clock.
DEFAULT_DT_OUT = 1e-3
#: A ``dt_out`` that does not divide the duration is accepted only when the run holds at least this many
#: whole ``dt_out`` intervals (a recording clock finer than the run; the last interval ends at ``duration``).
MIN_INTERVALS_UNEVEN = 5


def _is_number(x: object) -> bool:
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, (bool, np.bool_))


def _as_time(name: str, value: object, fix: str) -> float:
    """A time in s from a number or a 0-d tensor; a bool, a string or anything else refused, naming ``name``."""
    if torch.is_tensor(value) and value.ndim == 0 and value.dtype.is_floating_point:
        # a float32 0.05 means 0.05 s, not 0.0500000007 s (its shortest decimal form)
        value = float(value) if value.dtype == torch.float64 else float(str(np.float32(value.item())))
    elif isinstance(value, np.ndarray) and value.ndim == 0 and value.dtype.kind in "fiu":
        value = value.item()
    if not _is_number(value):
        raise TypeError(f"{name}={value!r} ({type(value).__name__}) is not a number: {name} is a time in s, "
                        f"e.g. {fix}")
    value = float(value)
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{name}={value!r} is not a positive time in s; e.g. {fix}")
    return value


def _check_arguments(network: object, stimulus: object, duration: object, dt_out: object, y0: object,
                     solver: object, max_rate: object) -> tuple[float, float, torch.Tensor | None]:
    """Refuse arguments of :func:`simulate` of the wrong kind or value before any work.

    Returns ``(duration, dt_out, y0)``: floats in s (``dt_out`` None: :data:`DEFAULT_DT_OUT`) and ``y0`` as
    a tensor (or None).
    """
    if not isinstance(network, ColumnNetwork):
        raise TypeError(f"network must be a colplugin ColumnNetwork, got {type(network).__name__} {network!r:.80}; "
                        "build one with cp.ColumnNetwork(cp.load_preset('dl25'), {'mt': ('mt', 1)})")
    if stimulus is not None and not isinstance(stimulus, Stimulus):
        n = network.n_inputs
        how = ("this network reads no input channel (it has no Input projection), so pass stimulus=None" if n == 0
               else f"build one with cp.Stimulus(times=[0.0], rates=[[20.0] * {n}]) (rates in Hz, one per input "
                    f"channel: this network reads {n}) or cp.Stimulus.constant([20.0] * {n})")
        raise TypeError(f"stimulus must be a colplugin Stimulus (or None: no input), got {type(stimulus).__name__} "
                        f"{stimulus!r:.80}; {how}")
    if solver is not None and not isinstance(solver, Solver):
        raise TypeError(f"solver must be a Solver, e.g. Solver('rk4', step=5e-4), or None (Solver.default()), "
                        f"got {type(solver).__name__} {solver!r:.80}")
    duration = _as_time("duration", duration, "duration=1.0 (the CLI's --duration 1.0)")
    explicit = dt_out is not None
    if explicit:
        dt_out = _as_time("dt_out", dt_out, "dt_out=1e-3 (1 ms)")
    else:
        dt_out = DEFAULT_DT_OUT
    if dt_out > duration:
        given = "" if explicit else " (the default, 1 ms)"
        raise ValueError(f"duration={duration:g} s is shorter than the output spacing dt_out={dt_out:g} s{given}: "
                         f"the run would record no step. Lengthen the run to at least dt_out (duration=..., the "
                         f"CLI's --duration), or pass a dt_out <= duration, e.g. dt_out={duration:g}")
    n = duration / dt_out
    whole = max(1, round(n)) if n < MIN_INTERVALS_UNEVEN else 0
    if explicit and whole and abs(whole * dt_out - duration) > 1e-9 * duration:
        near = duration / whole
        below, above = math.floor(n) * dt_out, math.ceil(n) * dt_out
        lengths = f"{below:.6g} s or {above:.6g} s" if below > 0 else f"{above:.6g} s"
        raise ValueError(f"dt_out={dt_out:g} s does not divide duration={duration:g} s ({n:.4g} intervals), so the "
                         f"output times would not be evenly spaced (the last interval ending at {duration:g} s). "
                         f"Use dt_out={near:.6g} (duration / {whole}, the nearest that divides it), or a duration "
                         f"that dt_out divides ({lengths})")
    if not _is_number(max_rate) or math.isnan(max_rate) or max_rate <= 0:
        raise ValueError(f"max_rate={max_rate!r}: max_rate is the rate (Hz) above which a run counts as diverged, "
                         "a positive number (inf: never); e.g. max_rate=2000.0 (the default)")
    y = None
    if y0 is not None:
        try:
            y = torch.as_tensor(y0)
        except (TypeError, ValueError, RuntimeError):
            raise TypeError(f"y0 must be a tensor of initial states (mV), shape (B, {network.n_state}) or "
                            f"({network.n_state},), e.g. network.initial_state(); got {type(y0).__name__}") from None
        if not (y.is_floating_point() or y.dtype in (torch.int32, torch.int64)) or y.dtype == torch.bool:
            raise TypeError(f"y0 must hold numbers (mV), got dtype {y.dtype}; start from network.initial_state()")
        if not bool(torch.isfinite(y).all()):
            raise ValueError(f"y0 holds NaN or inf at {int((~torch.isfinite(y)).sum())} entr(ies): an initial state "
                             "is finite (V, A in mV); start from network.initial_state() (V = A = 0 mV) or the end "
                             "of an earlier run (traj.state[-1])")
    return duration, dt_out, y


def simulate(network: ColumnNetwork, stimulus: Stimulus | None = None, duration: float = 1.0, *,
             dt_out: float | None = None, y0: torch.Tensor | None = None, solver: Solver | None = None,
             gradient: Gradient | str | None = None, max_rate: float = 2000.0,
             noise: MembraneNoise | None = None, generator: torch.Generator | None = None) -> Trajectory:
    """Simulate a batch of trials in one ODE solve.

    Parameters
    ----------
    network : ColumnNetwork
    stimulus : Stimulus, optional
        Input rates (B trials); default no input, one trial.
    duration : float
        Simulated time in s (a number or a 0-d tensor; not a bool or a string).
    dt_out : float, optional
        Spacing of the output times in s: ``t = 0, dt_out, 2 dt_out, ..., duration``. It must
        divide the duration (within 1e-9 relative) so that the times are evenly spaced, with
        one exception, a recording clock much finer than the run: when the run holds at least
        :data:`MIN_INTERVALS_UNEVEN` (5) whole intervals, a ``dt_out`` that does not divide it
        is accepted and the last interval, ending at ``duration``, is shorter (read the times
        from ``Trajectory.t``). Default (None): a 1 ms clock (:data:`DEFAULT_DT_OUT`), whose
        last interval may be shorter whatever the duration (the CLI's ``--duration`` is any
        time of at least 1 ms).
    y0 : torch.Tensor, optional
        Initial state (B, 2P) or (2P,) in mV, finite; default V = A = 0 mV.
    solver : Solver, optional
        Backend, method and tolerances. Default :meth:`Solver.default`:
        ``Solver("dopri5", rtol=1e-6, atol=1e-6, backend="auto")``, the fastest correct
        path: colplugin's fused Dormand-Prince solve (no autograd graph; exact
        discrete-adjoint gradients), on the CPU as compiled loops
        (:mod:`colplugin.solve.compiled`: the whole solve and its backward pass in C, dense
        coupling up to :data:`colplugin.solve.compiled.KERNEL_DENSE_MAX_POPULATIONS` populations,
        the list of connections above), on GPUs (or without a C compiler) as eager tensor
        operations (dense up to :data:`~colplugin.field.DENSE_MAX_POPULATIONS`
        populations, per-column blocks plus an edge list above); or torchdiffeq's dopri5
        with :class:`Adjoint` gradients. Its
        rates stay within about 1e-5 Hz of a tight reference (see :meth:`Solver.default`).
        ``Solver(backend="torchdiffeq")`` selects the reference integrator; the
        ``backend="auto"`` of any solver is resolved the same way (:meth:`Solver.resolve`).
    gradient : Direct or Adjoint (or ``"direct"``, ``"adjoint"``)
        How gradients are obtained if the output is differentiated: backpropagation
        through the solve (:class:`Direct`, default), or the adjoint method (Chen et al.
        2018, :class:`Adjoint`) with the network's learnable tensors as ``adjoint_params``.
    max_rate : float
        Rate (Hz) above which the run counts as diverged: positive (``inf``: never).
    noise : MembraneNoise, optional
        Additive white noise on every membrane state (the stochastic DMF). One realisation
        is drawn per call from ``generator`` and held over ``noise.step``; the stimulus is
        split into segments of that length, so use a fixed-step solver with
        ``step = noise.step`` (``Solver("rk4", step=noise.step)``; ``"euler"`` is
        Euler-Maruyama). Gradients flow through the sampled realisation.
    generator : torch.Generator, optional
        Source of the noise (default torch's global generator).

    Returns
    -------
    Trajectory
        Its ``solver`` is the one used, with ``backend="auto"`` resolved.

    Notes
    -----
    An adaptive solver chooses one step sequence for the whole batch, so a trial's result
    depends on its batch-mates at the level of the tolerances; fixed-step methods give
    every trial the same numbers alone or in a batch.

    Raises
    ------
    SimulationError
        NaN/inf, runaway rates or a step-size underflow; the message names the remedy.
    TypeError
        Arguments of the wrong kind, refused before any work: a network that is not a
        :class:`ColumnNetwork`, a stimulus that is not a :class:`Stimulus`, a duration or
        dt_out that is a bool, a string or a tensor of more than one number.
    ValueError
        Inconsistent shapes (stimulus channels, batch, initial state), a stimulus change
        point at or after ``duration`` (it could not take effect), a duration or dt_out that
        is not a positive finite time, a dt_out longer than the duration or one that does
        not divide it (see ``dt_out``), a max_rate that is not positive, or a NaN/inf y0.
    """
    duration, dt_out, y0 = _check_arguments(network, stimulus, duration, dt_out, y0, solver, max_rate)
    gradient = as_gradient(gradient)
    solver = solver_for_transfer(solver or Solver.default(), network).resolve(gradient)
    check_combination(solver, gradient)
    dtype, dev = network.W_intra.dtype, network.W_intra.device
    if stimulus is None:
        B = 1 if y0 is None or y0.ndim == 1 else y0.shape[0]
        stimulus = Stimulus.none(B, network.n_inputs)
    stimulus.check_fits(network.n_inputs, duration)
    stimulus = stimulus.to(device=dev, dtype=dtype)
    if y0 is None:
        y0 = network.initial_state(stimulus.batch_size)
    y0 = torch.as_tensor(y0, dtype=dtype, device=dev)
    if y0.ndim == 1:
        y0 = y0.unsqueeze(0)
    if y0.shape[-1] != network.n_state:
        names = "[" + ", ".join(network.state_variables) + "]"
        raise ValueError(f"y0 must have {network.n_state // network.n_populations} * {network.n_populations} = "
                         f"{network.n_state} entries ({names} per population), got {y0.shape[-1]}")
    B = max(y0.shape[0], stimulus.batch_size)
    if y0.shape[0] not in (1, B) or stimulus.batch_size not in (1, B):
        raise ValueError(f"batch sizes do not fit: y0 has {y0.shape[0]} trials, the stimulus "
                         f"{stimulus.batch_size}")
    _check_output_memory(network, B, duration, dt_out, dev)
    y0 = y0.expand(B, -1).contiguous()
    stimulus = stimulus.expand(B)
    # the whole intervals that fit (a count within 1e-9 of an integer is that integer), then duration itself
    n = max(1, int(math.floor(duration / dt_out * (1 + 1e-9))))
    t = torch.arange(n + 1, dtype=dtype, device=dev) * dt_out
    if abs(n * dt_out - duration) <= 1e-9 * duration:
        t[-1] = duration
    else:  # the last interval, ending at duration, is shorter (see dt_out)
        t = torch.cat([t[t < duration], torch.tensor([duration], dtype=dtype, device=dev)])
    noise_drive, given = None, stimulus
    if noise is not None and noise.sigma > 0:  # the solve runs on the noise grid; the trajectory keeps the input
        stimulus, noise_drive = noise.sample(stimulus, duration, network.n_populations,
                                             float(network.params["tau_m"]), generator)
    jumps = stimulus.jump_times
    jumps = jumps[(jumps > 0) & (jumps < duration)]
    dense = solver.dense
    if dense is None and solver.fused:  # the compiled kernel's own dense/sparse crossover
        dense = compiled.default_dense(solver.kernel, network.n_populations, dev, dtype)
    func = _ODEFunc(network, stimulus, per_step=not solver.adaptive, max_rate=max_rate,
                    max_steps=solver.max_steps, dense=dense, noise=noise_drive)
    if dense is False and solver.dense is None and not compiled.choose(solver.kernel, func.field.fused(), y0):
        # too large for the kernel: the eager loop, with its own dense/sparse crossover
        func = _ODEFunc(network, stimulus, per_step=not solver.adaptive, max_rate=max_rate,
                        max_steps=solver.max_steps, dense=None, noise=noise_drive)
    opts = solver.options(jumps, t)
    kwargs = dict(method=solver.method, options=opts, **_tolerances(solver))
    try:
        if isinstance(gradient, Adjoint):
            params = func.field.tensors
            ck = gradient.checkpoint
            t_ck = torch.arange(1, int(duration / ck), dtype=dtype, device=dev) * ck
            t_fine = torch.cat([t, t_ck]).unique(sorted=True)
            keep = torch.ones_like(t_fine, dtype=torch.bool)
            keep[1:] = (t_fine[1:] - t_fine[:-1]) > 1e-9
            t_fine = t_fine[keep | torch.isin(t_fine, t)]
            pick = torch.searchsorted(t_fine, t)
            opts = solver.options(jumps, t_fine)
            kwargs["options"] = opts
            back = _tolerances(solver, "adjoint_")
            back.update({f"adjoint_{k}": v for k, v in (("rtol", gradient.rtol), ("atol", gradient.atol))
                         if v is not None and solver.adaptive})
            state = odeint_adjoint(func, y0, t_fine, adjoint_params=params, adjoint_options=dict(opts),
                                   **back, **kwargs)[pick]
        elif solver.fused:
            state = _solve_fused(func, y0, t, jumps, stimulus, solver)
        else:
            state = odeint(func, y0, t, **kwargs)
    except AssertionError as exc:
        if "non-finite" in str(exc):
            raise SimulationError("the solve produced non-finite values: the network diverged. "
                                  "Lower the inter-column weights or the input, or use a smaller step") from None
        if "underflow in dt" in str(exc):
            raise _stuck(solver, network.params.name, stimulus) from None
        raise
    rate = _check(state, network, max_rate, solver)
    return Trajectory(t, state, network, given, solver, func.nfe, _rate=None if rate is None else (state, rate))
