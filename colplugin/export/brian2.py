"""Build a trained :class:`~colplugin.network.ColumnNetwork` as Brian2 objects with units.

One ``NeuronGroup`` (one rate unit per population) runs the DMF equations of
:data:`colplugin.dynamics.BRIAN2_EQUATIONS`; one ``Synapses`` object carries every
connection (intra-column blocks and inter-column projections) through the summed
variable ``I_rec_post = w * r_pre``; the stimulus enters as a ``TimedArray`` of the
input drive per population.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .._neo import rate_block
from ..field import BRIAN2_EQUATIONS
from ..network import ColumnNetwork
from ..stimulus import Stimulus

__all__ = ["to_brian2", "Brian2Run"]


@dataclass
class Brian2Run:
    """Brian2 objects of an exported network: ``network`` (a ``brian2.Network``), the
    ``group``, ``synapses``, ``monitor`` and the ``duration`` (s) to run.

    After :meth:`run`, ``t`` (s), ``rate`` (T, P, Hz), ``V`` and ``A`` (mV) hold the
    recorded values as numpy arrays (also for ``cpp_standalone``, whose device is reset
    to the runtime device after the run).
    """

    network: Any
    group: Any
    synapses: Any
    monitor: Any
    duration: float
    source: ColumnNetwork
    device: str = "runtime"
    method: str = "rk4"
    t: np.ndarray | None = None
    rate: np.ndarray | None = None
    V: np.ndarray | None = None
    A: np.ndarray | None = None
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

    def run(self, report: str | None = None) -> "Brian2Run":
        """Run for ``duration`` and collect the recordings."""
        import time

        import brian2 as b2

        t0 = time.perf_counter()
        try:
            self.network.run(self.duration * b2.second, report=report)
            m = self.monitor
            self.t = np.asarray(m.t / b2.second)
            self.rate = np.asarray(m.r / b2.Hz).T  # (T, B * P); see trial_rates
            self.V = np.asarray(m.V / b2.mV).T
            self.A = np.asarray(m.A / b2.mV).T
            if self.device == "cpp_standalone":  # time of the compiled simulation loop alone
                self.run_seconds = float(getattr(b2.device, "_last_run_time", float("nan")))
        finally:
            if self.device == "cpp_standalone":
                b2.device.reinit()
                b2.device.activate()
                b2.set_device("runtime")
        self.wall_seconds = time.perf_counter() - t0
        return self


def _connections(network: ColumnNetwork) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(source, target, weight in nA) of every connection, intra- and inter-column."""
    with torch.no_grad():
        rows, cols, vals = network._intra_index()
        w_rec = network._weights("rec") if network.rec_src.numel() else torch.zeros(0, dtype=vals.dtype)
    src = np.concatenate([cols.cpu().numpy(), network.rec_src.cpu().numpy()])
    tgt = np.concatenate([rows.cpu().numpy(), network.rec_tgt.cpu().numpy()])
    w = np.concatenate([vals.cpu().numpy(), w_rec.cpu().numpy()])
    keep = w != 0
    return src[keep], tgt[keep], w[keep]


def input_drive(network: ColumnNetwork, stimulus: Stimulus, trial: int, dt: float, duration: float) -> np.ndarray:
    """Input drive ``sum_k W_in,ik u_k(t)`` (nA*Hz) on the Brian2 time grid, shape (n_steps, P)."""
    n = int(round(duration / dt)) + 1
    t = torch.arange(n, dtype=torch.float64) * dt
    u = stimulus.to(dtype=torch.float64).sample(t + 1e-9 * dt)[:, trial]  # (n, n_inputs)
    drive = torch.zeros(n, network.n_populations, dtype=torch.float64)
    if network.inp_src.numel() and stimulus.n_inputs:
        with torch.no_grad():
            w = network._weights("inp").cpu().to(torch.float64)
        drive = drive.index_add(1, network.inp_tgt.cpu(), u[:, network.inp_src.cpu()] * w)
    return drive.numpy()


def to_brian2(network: ColumnNetwork, stimulus: Stimulus | None = None, duration: float = 1.0, *,
              trial: int | None = 0, dt: float = 1e-4, method: str = "rk4", record_dt: float | None = None,
              y0: np.ndarray | torch.Tensor | None = None, target: str = "numpy",
              device: str = "runtime", directory: str | None = None) -> Brian2Run:
    """Build Brian2 objects (with units) that simulate ``network`` under one trial of ``stimulus``.

    Parameters
    ----------
    network : ColumnNetwork
    stimulus : Stimulus, optional
        Input rates. Default: no input.
    trial : int or None
        The trial of ``stimulus`` to export, or ``None`` for all of them: B independent
        copies of the network in one ``NeuronGroup`` (B x P rate units), run at once.
    duration : float
        Run time (s).
    dt : float
        Brian2 time step (s), default 0.1 ms.
    method : str
        Brian2 integration method (``"rk4"`` default, ``"euler"``). ``exponential_euler``
        mis-handles these equations and is refused.
    record_dt : float, optional
        Monitor spacing (s); default every step.
    y0 : array (2P,), optional
        Initial ``[V, A]`` in mV; default 0.
    target : str
        Brian2 code-generation target for the runtime device (``"numpy"`` default, ``"cython"``).
    device : {"runtime", "cpp_standalone"}
        Brian2 device. ``cpp_standalone`` compiles the network to C++ (in ``directory``, a
        temporary one by default) when it runs; the device is reset afterwards.

    Returns
    -------
    Brian2Run
        Call ``.run()``; results in ``.t`` (s), ``.rate`` (T, P) Hz of the first exported
        trial and ``.trial_rates`` (T, B, P) Hz.
    """
    import brian2 as b2

    if method == "exponential_euler":
        raise ValueError("exponential_euler mis-handles the DMF equations in Brian2 2.9; use 'rk4' or 'euler'")
    if device not in ("runtime", "cpp_standalone"):
        raise ValueError(f"device must be 'runtime' or 'cpp_standalone', got {device!r}")
    if device == "cpp_standalone":
        import tempfile

        b2.set_device("cpp_standalone", directory=directory or tempfile.mkdtemp(prefix="colplugin_b2_"),
                      build_on_run=True)  # a temporary project (kept: it can be re-run with new weights)
    else:
        b2.prefs.codegen.target = target
    p = network.params
    P1 = network.n_populations
    stimulus = stimulus or Stimulus.none(1, network.n_inputs)
    trials = list(range(stimulus.batch_size)) if trial is None else [int(trial)]
    nT = len(trials)
    P = P1 * nT
    drive = np.concatenate([input_drive(network, stimulus, k, dt, duration) for k in trials], 1)
    drive_ta = b2.TimedArray(drive * b2.nA * b2.Hz, dt=dt * b2.second, name="drive_ta")
    ns = {"tau_m": p["tau_m"] * b2.second, "tau_a": p["tau_a"] * b2.second, "tau_s": p["tau_s"] * b2.second,
          "R": p.R * b2.Mohm, "a": p["a"] * b2.Hz / b2.mV, "b": p["b"] * b2.Hz, "d": p["d"] * b2.second,
          "nu_bg": p["nu_bg"] * b2.Hz, "drive_ta": drive_ta}
    eqs = BRIAN2_EQUATIONS.replace("I_in : amp * Hz", "I_in = drive_ta(t, i) : amp * Hz")
    G = b2.NeuronGroup(P, eqs, method=method, namespace=ns, dt=dt * b2.second, name="columns")
    G.kappa = np.tile(np.asarray(network.kappa.cpu()), nT) * b2.mV * b2.second
    G.W_bg = np.tile(np.asarray(network.bg_drive.cpu()) / p["nu_bg"], nT) * b2.nA if p["nu_bg"] else 0 * b2.nA
    y = np.zeros((nT, 2 * P1)) if y0 is None else np.broadcast_to(
        np.asarray(torch.as_tensor(y0).cpu(), dtype=float).reshape(-1, 2 * P1), (nT, 2 * P1))
    G.V = y[:, :P1].reshape(-1) * b2.mV
    G.A = y[:, P1:].reshape(-1) * b2.mV
    with torch.no_grad():
        G.rf = np.asarray(network.rates(torch.as_tensor(y, dtype=network.W_intra.dtype)).cpu()).reshape(-1) * b2.Hz
    src1, tgt1, w1 = _connections(network)
    src = np.concatenate([src1 + k * P1 for k in range(nT)])
    tgt = np.concatenate([tgt1 + k * P1 for k in range(nT)])
    w = np.tile(w1, nT)
    S = b2.Synapses(G, G, model="w : amp\nI_rec_post = w * r_pre : amp * Hz (summed)", namespace=ns,
                    dt=dt * b2.second, name="connections")
    S.connect(i=src.astype(np.int64), j=tgt.astype(np.int64))
    S.w = w * b2.nA
    M = b2.StateMonitor(G, ["V", "A", "r", "rf"], record=True,
                        dt=(record_dt or dt) * b2.second, name="rates")
    net = b2.Network(G, S, M)
    exported = stimulus if trial is None else stimulus.select([int(trial)])
    return Brian2Run(net, G, S, M, duration, network, device=device, method=method, n_trials=nT,
                     stimulus=exported)
