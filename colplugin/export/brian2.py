"""Build a trained :class:`~colplugin.network.ColumnNetwork` as Brian2 objects with units.

Everything model-specific comes from the Brian2 view of the network's field
(:meth:`colplugin.field.Field.brian2`): one ``NeuronGroup`` (one rate unit per population
and trial) runs its ``Equations``; one ``Synapses`` object carries every connection
(intra-column blocks and inter-column projections) through the summed variable
``I_rec_post = w * r_pre``; the stimulus enters as a ``TimedArray`` of the input drive.
A field whose transfer needs the input variance (the LIF networks' Siegert transfer) adds
the state ``S``, a second summed variable ``I2_rec_post = w2 * r_pre``, a second
``TimedArray`` of the variance drive and the transfer's Brian2 ``Function`` objects. A field
with synaptic gating adds the state ``G`` and a third summed variable ``I_gat_post = wg * G_pre``
that carries the inter-column connections (their ``w`` is 0).

Code targets are never swapped silently: the runtime device runs ``numpy`` or ``cython``
as asked, and a transfer function without its own implementation for the requested target
(numpy: its Python code; cython: Cython code; cpp_standalone: C++) is refused before
anything is built (:func:`check_target`). Brian2 2.9 itself would look a Cython code
object's function up through ``NumpyCodeObject`` (its base class) and so call the Python
implementation from Cython once one has been registered.

Brian2 updates a summed variable once per time step, so its multi-stage methods (``rk2``,
``rk4``, ``heun``) hold the coupling fixed within a step and differ from any torch solve
(about 1e-2 to 1 relative for these stiff dynamics). ``euler`` (the default) is the same
scheme as torch's ``Solver("euler", step=dt)`` and reproduces it to rounding (about 1e-12
relative).
"""

from __future__ import annotations

import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .._neo import rate_block
from ..field import BRIAN2_METHODS, Brian2Model
from ..network import ColumnNetwork
from ..stimulus import Stimulus
from .._warnings import quiet_brian2_parsing

__all__ = ["to_brian2", "Brian2Run"]


@dataclass
class Brian2Run:
    """Brian2 objects of an exported network: ``network`` (a ``brian2.Network``), the
    ``group``, ``synapses``, ``monitor`` and the ``duration`` (s) to run.

    After :meth:`run`, ``t`` (s), ``rate`` (T, P, Hz), ``V`` and ``A`` (mV) hold the
    recorded values as numpy arrays (also for ``cpp_standalone``, whose device is reset
    to the runtime device after the run), ``S`` (mV^2) for a field with the input variance, and
    ``G`` (dimensionless) for a field with synaptic gating.
    """

    network: Any
    group: Any
    synapses: Any
    monitor: Any
    duration: float
    source: ColumnNetwork
    device: str = "runtime"
    method: str = "euler"
    t: np.ndarray | None = None
    rate: np.ndarray | None = None
    V: np.ndarray | None = None
    A: np.ndarray | None = None
    S: np.ndarray | None = None
    G: np.ndarray | None = None
    target: str = "numpy"
    wall_seconds: float = 0.0
    run_seconds: float = float("nan")
    n_trials: int = 1
    stimulus: Stimulus | None = None

    @property
    def trial_rates(self) -> np.ndarray:
        """Recorded rates of every exported trial, (T, B, P) in Hz."""
        T = self.rate.shape[0]
        return self.rate.reshape(T, self.n_trials, -1)

    def to_neo(self, *, seed: int | None = None, description: str = ""):
        """The recorded run as a Neo Block (see :func:`colplugin.to_neo`): rates, inputs, stimulus epochs."""
        if self.rate is None:
            raise RuntimeError("this Brian2Run has not run yet; call .run() before .to_neo()")
        return rate_block(self.source, self.t, self.trial_rates, source="brian2",
                          solver={"method": self.method, "device": self.device}, stimulus=self.stimulus,
                          seed=seed, description=description)

    def run(self, report: Any = "auto", report_period: float = 5.0) -> "Brian2Run":
        """Run for ``duration`` and collect the recordings, the state at ``duration`` included.

        Brian2's ``StateMonitor`` records at the start of each step, so a run of ``duration``
        alone would stop one sample short of the end; the network runs one more recording
        interval and the samples after ``duration`` are dropped. A run of n steps thus gives
        n + 1 samples at ``0, dt, ..., duration``, as :func:`colplugin.simulate` does.

        Parameters
        ----------
        report : "auto", None, "text", "stdout", "stderr" or a Brian2 report callable
            Progress reports. ``"auto"`` (default) prints to stderr only once a run has
            taken ``report_period`` seconds of wall time (silent for short runs); ``None``
            never reports; the others are passed to Brian2.
        report_period : float
            Seconds of wall time between reports.
        """
        quiet_brian2_parsing()

        import brian2 as b2

        if report == "auto":
            report = (_cpp_progress(report_period, self.duration) if self.device == "cpp_standalone"
                      else _Progress(report_period, self.duration))
        t0 = time.perf_counter()
        try:
            rec = float(self.monitor.clock.dt / b2.second)
            self.network.run((self.duration + rec) * b2.second, report=report,
                             report_period=report_period * b2.second)
            m = self.monitor
            t = np.asarray(m.t / b2.second)
            keep = t <= self.duration * (1 + 1e-9) + 1e-12
            self.t = t[keep]
            self.rate = np.asarray(m.r / b2.Hz).T[keep]  # (T, B * P); see trial_rates
            self.V = np.asarray(m.V / b2.mV).T[keep]
            self.A = np.asarray(m.A / b2.mV).T[keep]
            if "S" in m.record_variables:
                self.S = np.asarray(m.S / b2.mV ** 2).T[keep]
            if "G" in m.record_variables:
                self.G = np.asarray(m.G).T[keep]
            if self.device == "cpp_standalone":  # time of the compiled simulation loop alone
                self.run_seconds = float(getattr(b2.device, "_last_run_time", float("nan")))
        finally:
            if self.device == "cpp_standalone":
                b2.device.reinit()
                b2.device.activate()
                b2.set_device("runtime")
        self.wall_seconds = time.perf_counter() - t0
        return self


class _Progress:
    """Brian2 report callable: prints to stderr once a run has taken ``after`` s of wall time."""

    def __init__(self, after: float, duration: float) -> None:
        self.after, self.duration, self.shown = after, duration, False

    def __call__(self, elapsed: Any, completed: float, start: Any, duration: Any) -> None:
        seconds = float(elapsed)
        if seconds < self.after and not self.shown:
            return
        self.shown = True
        left = f", about {seconds * (1 - completed) / completed:.0f} s left" if 0 < completed < 1 else ""
        print(f"Brian2: {completed:.0%} of {self.duration:g} s simulated in {seconds:.0f} s{left}",
              file=sys.stderr, flush=True)


def _cpp_progress(after: float, duration: float) -> str:
    """The C++ body of a Brian2 standalone report function that is silent for the first ``after`` s."""
    return ("if (elapsed >= %r) { std::cerr << \"Brian2: \" << (int)(completed * 100.) << \"%% of %g s simulated in "
            "\" << (int)elapsed << \" s\" << std::endl << std::flush; }" % (float(after), duration))


def progress_report(duration: float, device: str, after: float = 5.0) -> Any:
    """A Brian2 ``report`` for ``Network.run`` that is silent for the first ``after`` s of wall time.

    A Python callable on the runtime device, the C++ body of a report function on
    ``cpp_standalone``; pass it with ``report_period=after * second``.
    """
    return _cpp_progress(after, duration) if device == "cpp_standalone" else _Progress(after, duration)


def check_export(network: ColumnNetwork, stimulus: Stimulus | None, duration: float, trial: int | None,
                 dt: float, method: str) -> Stimulus:
    """Validate the export arguments before anything is built; return the stimulus (default: none).

    Raises
    ------
    ValueError
        Unknown ``method``, a non-positive ``dt`` or ``duration``, a stimulus that does not
        fit the network, or one that changes at or after ``duration``.
    IndexError
        ``trial`` outside the stimulus's trials.
    """
    if method == "exponential_euler":
        raise ValueError("exponential_euler mis-handles the DMF equations in Brian2 2.9; use 'euler' "
                         "(exact, the default) or one of " + ", ".join(BRIAN2_METHODS))
    if method not in BRIAN2_METHODS:
        raise ValueError(f"unknown Brian2 method {method!r}; use one of {', '.join(BRIAN2_METHODS)} "
                         "('euler' reproduces torch exactly)")
    if not (dt > 0 and np.isfinite(dt)):
        raise ValueError(f"dt must be a positive time in s, got {dt}")
    if not (duration > 0 and np.isfinite(duration)):
        raise ValueError(f"duration must be a positive time in s, got {duration}")
    stimulus = stimulus or Stimulus.none(1, network.n_inputs)
    stimulus.check_fits(network.n_inputs, duration)
    if trial is not None:
        if isinstance(trial, bool) or not isinstance(trial, (int, np.integer)):
            raise TypeError(f"trial must be an int or None (all trials), got {trial!r}")
        B = stimulus.batch_size
        if not 0 <= trial < B:
            raise IndexError(f"trial {trial} is out of range: the stimulus has {B} trial(s), 0..{B - 1} "
                             "(or trial=None for all of them)")
    return stimulus


#: Code-generation targets of the runtime device (``to_brian2(target=...)``).
RUNTIME_TARGETS = ("numpy", "cython")


def _implementation_names(function: Any) -> set[str]:
    """The targets a Brian2 ``Function`` has its own implementation for (``numpy`` for its Python code)."""
    names = {getattr(k, "class_name", None) or str(k) for k in function.implementations}
    if getattr(function, "pyfunc", None) is not None:
        names.add("numpy")
    return names


def check_target(functions: dict[str, Any], device: str, target: str) -> str:
    """The code target a run will use, after checking that every function has an implementation for it.

    ``device="runtime"``: ``target`` (``"numpy"`` or ``"cython"``; ``"auto"``, which lets Brian2
    fall back to numpy, is refused). ``device="cpp_standalone"``: ``"cpp"`` (``target`` is not used).

    Raises
    ------
    ValueError
        An unknown device or target, or a function with no implementation of its own for the
        target (Brian2 would refuse it only when the network runs, or, for ``cython``, call
        its Python implementation).
    """
    if device not in ("runtime", "cpp_standalone"):
        raise ValueError(f"device must be 'runtime' or 'cpp_standalone', got {device!r}")
    if device == "cpp_standalone":
        code, accepted = "cpp", {"cpp", "cpp_standalone"}
    elif target in RUNTIME_TARGETS:
        code, accepted = target, {target}
    else:
        raise ValueError(f"target {target!r} is not a code-generation target of the runtime device; use one of "
                         f"{', '.join(RUNTIME_TARGETS)} (or device='cpp_standalone')")
    for name, fn in functions.items():
        have = _implementation_names(fn)
        if not have & accepted:
            where = "the cpp_standalone device" if device == "cpp_standalone" else f"target {target!r}"
            raise ValueError(f"the transfer function {name!r} has no implementation for {where} (it has: "
                             f"{', '.join(sorted(have)) or 'none'}); pick another target instead of letting "
                             "Brian2 fall back")
    return code


def brian2_model(network: ColumnNetwork, stimulus: Stimulus, duration: float, trials: list[int], dt: float,
                 y0: np.ndarray | torch.Tensor | None = None) -> Brian2Model:
    """The Brian2 view of ``network``'s field for ``trials`` of ``stimulus`` on the grid of step ``dt``.

    A ``TimedArray`` looks up sample floor(t / dt); the stimulus is sampled just after each
    grid point, so a change point on the grid takes effect at that step.
    """
    n = int(round(duration / dt)) + 1
    t = torch.arange(n, dtype=torch.float64) * dt + 1e-9 * dt
    times, rates = stimulus.times.cpu().to(torch.float64), stimulus.rates.cpu().to(torch.float64)
    seg = torch.searchsorted(times, t, right=True) - 1
    u = rates[trials][:, seg].transpose(0, 1)  # (n, trials, n_inputs), Hz
    with torch.no_grad():
        return network.field().brian2(u, y0)


def to_brian2(network: ColumnNetwork, stimulus: Stimulus | None = None, duration: float = 1.0, *,
              trial: int | None = 0, dt: float = 1e-4, method: str = "euler", record_dt: float | None = None,
              y0: np.ndarray | torch.Tensor | None = None, target: str = "numpy",
              device: str = "runtime", directory: str | None = None) -> Brian2Run:
    """Build Brian2 objects (with units) that simulate ``network`` under ``stimulus``.

    Parameters
    ----------
    network : ColumnNetwork
    stimulus : Stimulus, optional
        Input rates. Default: no input.
    duration : float
        Run time (s).
    trial : int or None
        The trial of ``stimulus`` to export (0 .. B - 1), or ``None`` for all of them: B
        independent copies of the network in one ``NeuronGroup`` (B x P rate units), run at once.
    dt : float
        Brian2 time step (s), default 0.1 ms.
    method : str
        Brian2 integration method. ``"euler"`` (default) is exact: it is the scheme of
        torch's ``Solver("euler", step=dt)`` and agrees with it to about 1e-12 relative.
        ``"rk2"``, ``"rk4"`` and ``"heun"`` must be asked for and are *not* exact: Brian2
        updates the summed coupling ``I_rec`` once per step, so these methods hold it fixed
        within a step (about 1e-2 to 1 relative off for these stiff dynamics).
        ``exponential_euler`` mis-handles these equations and is refused.
    record_dt : float, optional
        Monitor spacing (s); default every step.
    y0 : array (2P,) or (B, 2P), optional
        Initial ``[V, A]`` in mV; default 0.
    target : str
        Brian2 code-generation target for the runtime device (``"numpy"`` default, ``"cython"``),
        used as asked: a transfer function without an implementation for it is refused
        (:func:`check_target`), never run with another target.
    device : {"runtime", "cpp_standalone"}
        Brian2 device. ``cpp_standalone`` compiles the network to C++ (in ``directory``, a
        temporary one by default) when it runs; the device is reset afterwards.

    Returns
    -------
    Brian2Run
        Call ``.run()``; results in ``.t`` (s), ``.rate`` (T, B P) Hz and ``.trial_rates``
        (T, B, P) Hz.

    Raises
    ------
    ValueError, IndexError, TypeError
        An unknown ``method``, ``device`` or ``target``, a transfer function without an
        implementation for the target, a ``trial`` outside the stimulus, or a stimulus that
        does not fit (checked before anything is built).
    """
    quiet_brian2_parsing()
    import brian2 as b2

    stimulus = check_export(network, stimulus, duration, trial, dt, method)
    check_target({}, device, target)
    b2.prefs.core.stop_on_keyboard_interrupt = False  # Ctrl+C interrupts; never a silently shortened run
    trials = list(range(stimulus.batch_size)) if trial is None else [int(trial)]
    model = brian2_model(network, stimulus, duration, trials, dt, y0)
    code = check_target(model.functions, device, target)
    if device == "cpp_standalone":
        b2.set_device("cpp_standalone", directory=directory or tempfile.mkdtemp(prefix="colplugin_b2_"),
                      build_on_run=True)  # a temporary project (kept: it can be re-run with new weights)
    else:
        b2.prefs.codegen.target = target
    arrays = model.for_trials()
    step = dt * b2.second
    ns = {**model.namespace, **model.functions}
    ns[model.drive_name] = b2.TimedArray(arrays["drive"], dt=step, name=model.drive_name)
    if "drive2" in arrays:
        ns[model.drive2_name] = b2.TimedArray(arrays["drive2"], dt=step, name=model.drive2_name)
    G = b2.NeuronGroup(model.n_trials * model.n_populations, model.equations, method=method, namespace=ns,
                       dt=step, name="columns")
    for name, value in {**arrays["values"], **arrays["initial"]}.items():
        setattr(G, name, value)
    S = b2.Synapses(G, G, model=model.synapse_model, namespace=ns, dt=step, name="connections")
    S.connect(i=arrays["source"], j=arrays["target"])
    S.w = arrays["weight"]
    recorded = ["V", "A", "r", "rf"]
    if "weight2" in arrays:
        S.w2 = arrays["weight2"]
        recorded.append("S")
    if "weight_gated" in arrays:
        S.wg = arrays["weight_gated"]
        recorded.append("G")
    M = b2.StateMonitor(G, recorded, record=True, dt=(record_dt or dt) * b2.second, name="rates")
    net = b2.Network(G, S, M)
    return Brian2Run(net, G, S, M, duration, network, device=device, method=method, target=code,
                     n_trials=model.n_trials,
                     stimulus=stimulus if trial is None else stimulus.select([int(trial)]))
