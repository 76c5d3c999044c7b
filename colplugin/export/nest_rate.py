"""A LIF mean-field network (``pd14_lif``, ``dl25_lif``) as a NEST rate network of ``siegert_neuron`` s.

:func:`to_nest_rate` builds one ``siegert_neuron`` per population, joined by
``diffusion_connection`` s, in a fresh NEST kernel: a second, independent implementation of
the Siegert fixed points of the torch field (:mod:`colplugin.field`), with NEST's own
Siegert integral (GSL quadrature) and NEST's own rate dynamics.

The mapping
-----------
At given presynaptic rates ``r`` (Hz) colplugin's mean and variance relax to (the field's
``V`` and ``S`` equations without their leak; ``g`` is the calibration ``input_gain``,
``V_off`` the calibration ``V_offset``, ``R = tau_m / C`` in MOhm, times in s)::

    V_i = V_off,i + g_i R tau_s (sum_j W_ij r_j + W_bg,i nu_bg + sum_k W_in,ik u_k)          mV
    S_i = (g_i R tau_s)^2 / tau_m (sum_j W2_ij r_j + W2_bg,i nu_bg + sum_k W2_in,ik u_k)    mV^2

with the weights ``W`` (nA) and the variance weights ``W2`` (nA^2) of
:class:`~colplugin.field.InputVariance`. NEST's ``siegert_neuron`` (``models/siegert_neuron.cpp``)
sums its incoming ``DiffusionConnectionEvent`` s into ``mu_i = sum_c drift_factor_c r_c`` and
``sigma2_i = sum_c diffusion_factor_c r_c``, with the presynaptic rates ``r_c`` in Hz (its
rates are 1/s; its times are ms and it converts kHz to Hz itself), and fires at::

    Phi = 1 / (t_ref + tau_m sqrt(pi) int_{y_r}^{y_th} exp(u^2) (1 + erf u) du)
    y_th = (theta - mu) / sigma + alpha / 2 sqrt(tau_syn / tau_m),  y_r = (V_reset - mu) / sigma + (the same),
    alpha = sqrt(2) |zeta(1/2)|

which is colplugin's :func:`colplugin.siegert.siegert` with ``mu = V`` and ``sigma = s = sqrt(S)``:
NEST's ``sigma`` is Brunel's white-noise amplitude (``sqrt(2)`` times the sd of the free
membrane potential), as colplugin's ``s`` is, and its Fourcaud-Brunel shift
``alpha / 2 sqrt(tau_syn / tau_m)`` is colplugin's ``c``. So ``mu = V`` and ``sigma2 = S``
at the same rates where, for a connection ``j -> i``::

    drift_factor     = g_i R tau_s W_ij                (mV s = mV per Hz)
    diffusion_factor = (g_i R tau_s)^2 W2_ij / tau_m   (mV^2 s = mV^2 per Hz)

In the multi-area model's terms (``J`` the PSP amplitude in mV of an equivalent delta synapse,
``J = R tau_s J_I / tau_m`` for a current ``J_I`` in nA, ``K`` the in-degree, ``W = K J_I``):
``drift_factor = tau_m K J`` and ``diffusion_factor = tau_m K J^2`` (``tau_m`` in s), the
convention of NEST's documentation (Hahne et al. 2017, eqs. 28, 29). The
neuron parameters are ``theta = V_th - E_L``, ``V_reset = V_reset - E_L`` (mV), ``tau_m``,
``t_ref``, ``tau_syn = tau_s`` (ms).

Constant and external inputs. NEST's ``mean`` parameter is added to the *rate*
(``tau dr/dt = -r + mean + Phi``), not to ``mu``, so it cannot carry an input current. The
background is a ``siegert_neuron`` without inputs held at ``rate = mean = nu_bg``: with no
input its own Siegert term is exactly 0 (NEST returns 0 where ``theta - mu > 6 sigma``, here
``mu = sigma = 0``), so it stays at ``nu_bg``; it projects to population ``i`` with
``drift_factor = g_i R tau_s W_bg,i + V_off,i / nu_bg`` and
``diffusion_factor = (g_i R tau_s)^2 W2_bg,i / tau_m`` (``W2_bg = K_bg J_E^2``, the Poisson
background's variance). NEST's ``step_rate_generator`` cannot drive a ``siegert_neuron``
(it sends no ``DiffusionConnectionEvent``; NEST refuses the connection: "The source node
does not support diffusion output"), so each stimulus channel is such a relay neuron too,
whose ``rate`` and ``mean`` are set to the stimulus's rate at each change point of the
piecewise-constant stimulus, between ``Simulate`` calls (change points must lie on the
time grid, as NEST's ``step_rate_generator`` requires of its own times); its connections
carry ``g_i R tau_s W_in,ik`` and ``(g_i R tau_s)^2 W_in,ik J_E / tau_m``.

How the rate dynamics differ (same fixed points, different transients)
---------------------------------------------------------------------
NEST relaxes the *rate*; colplugin relaxes the *input statistics*:

* NEST: ``tau dr_i/dt = -r_i + Phi_i(mu_i(r), sigma_i(r))`` with ``mu``, ``sigma``
  instantaneous in the presynaptic rates, integrated by exponential Euler at the
  resolution ``h``: ``r(t + h) = e^{-h/tau} r(t) + (1 - e^{-h/tau}) Phi(mu(r(t)), sigma(r(t)))``.
  Zero-delay connections are solved by waveform relaxation; with ``wfr_comm_interval = h``
  (set here) NEST's trajectory is this explicit recursion to about 1e-13
  (``tests/test_nest_rate.py``). With the default 1 ms interval and ``wfr_tol = 1e-4`` it
  deviates from it by about 1e-6 Hz; with ``use_wfr = False`` the coupling is not this
  scheme at all. ``tau`` is a free parameter of the export (default ``tau_m``).
* colplugin: ``tau_m dV/dt = -V + mu(r)``, ``(tau_m / 2) dS/dt = -S + sigma2(r)`` and
  ``r = Phi(V, S)`` instantaneous (adaptive solvers, no fixed step).

Both have the fixed points ``r = Phi(mu(r), sigma(r))``. Linearised there, with ``M`` the
(2P, P) matrix of the drift and diffusion factors and ``Phi'`` the (P, 2P) slopes
``[dPhi/dmu, dPhi/dsigma2]``, NEST's Jacobian is ``(-I + Phi' M) / tau`` and colplugin's (in
``[V, S]``) ``T^-1 (-I + M Phi')`` with ``T = diag(tau_m, tau_m / 2)``. Were ``S`` to relax
with ``tau_m`` too, the two spectra would coincide for ``tau = tau_m`` (``Phi' M`` and
``M Phi'`` share their nonzero eigenvalues) up to ``P`` extra modes at ``-1 / tau_m``; the
variance's faster relaxation makes the time scales, the damping and, near an instability,
the stability of the two differ. Transients therefore differ in shape and speed (and by the
``O(h / tau)`` error of NEST's fixed step), not in where they end.

What is refused
---------------
A transfer other than ``"siegert"`` (the DMF's ``f`` is not a Siegert rate), threshold
adaptation (``kappa > 0``, as ``dl25_lif``'s L2/3E: ``siegert_neuron`` has no adaptive
threshold or any other second state), a saturation ``r_max`` (the field refuses it already),
fields with terms beyond the standard ones (a :class:`~colplugin.field.Field` subclass), and
a variance at rest below colplugin's ``sigma_floor`` (e.g. a ``"dc"`` background): colplugin
holds ``s`` at its floor, NEST has none (at ``sigma = 0`` it returns 0 below threshold and
divides by zero above). :func:`to_nest_rate` resets NEST's kernel: one export lives at a time.

Other differences of NEST's ``siegert_neuron``: its rate is 0 wherever
``theta - mu > 6 sigma`` (the Fourcaud-Brunel shift not counted), where colplugin's is tiny
but positive (``tests/test_nest_rate.py`` shows it at 7 to 17 sigma); its integral is GSL's
adaptive quadrature to a requested 1.49e-8 relative, in practice within about 1e-14 of
colplugin's (fixed points of ``pd14_lif`` and of two coupled columns with input agree to 1e-14).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..field import DMF_TERMS, VARIANCE_TERMS, Field
from ..network import ColumnNetwork
from ..stimulus import Stimulus

__all__ = ["to_nest_rate", "NestRateRun", "RateFactors", "rate_factors", "check_nest_rate"]


def _import_nest():
    os.environ.setdefault("PYNEST_QUIET", "1")
    try:
        import nest
    except ImportError:
        raise ImportError("the NEST rate export needs NEST 3.10: pip install 'colplugin[nest]' "
                          "(or pip install nest-simulator)") from None
    return nest


def _np(x: Any) -> np.ndarray:
    return (x.detach().cpu().to(torch.float64).numpy() if isinstance(x, torch.Tensor)
            else np.asarray(x, dtype=float))


@dataclass
class RateFactors:
    """The drift and diffusion factors of every ``diffusion_connection`` of the export (no NEST needed).

    Attributes
    ----------
    source, target : np.ndarray (int)
        Populations of the recurrent connections (intra- and inter-column).
    drift, diffusion : np.ndarray
        Their ``drift_factor`` (mV s) and ``diffusion_factor`` (mV^2 s).
    background_drift, background_diffusion : np.ndarray, shape (P,)
        The factors of the background relay (held at ``nu_bg``) onto each population.
    nu_bg : float
        The background relay's rate (Hz).
    channel, input_target : np.ndarray (int)
        Stimulus connections: channel and target population.
    input_drift, input_diffusion : np.ndarray
        Their factors.
    """

    source: np.ndarray
    target: np.ndarray
    drift: np.ndarray
    diffusion: np.ndarray
    background_drift: np.ndarray
    background_diffusion: np.ndarray
    nu_bg: float
    channel: np.ndarray
    input_target: np.ndarray
    input_drift: np.ndarray
    input_diffusion: np.ndarray

    def statistics(self, rates: np.ndarray, u: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """NEST's ``mu`` (mV) and ``sigma^2`` (mV^2) of each population at presynaptic rates ``rates``
        (P,) and input rates ``u`` (n_inputs,), Hz: the sums the ``siegert_neuron`` s form."""
        r = np.asarray(rates, dtype=float)
        P = len(self.background_drift)
        mu = self.background_drift * self.nu_bg
        s2 = self.background_diffusion * self.nu_bg
        mu = mu + np.bincount(self.target, self.drift * r[self.source], minlength=P)
        s2 = s2 + np.bincount(self.target, self.diffusion * r[self.source], minlength=P)
        if u is not None and len(self.channel):
            u = np.asarray(u, dtype=float)
            mu = mu + np.bincount(self.input_target, self.input_drift * u[self.channel], minlength=P)
            s2 = s2 + np.bincount(self.input_target, self.input_diffusion * u[self.channel], minlength=P)
        return mu, s2


def check_nest_rate(network: ColumnNetwork, f: Field | None = None) -> Field:
    """The network's field, after checking that NEST's ``siegert_neuron`` can express it.

    Raises
    ------
    ValueError
        A transfer other than ``"siegert"``, threshold adaptation (``kappa > 0``), terms beyond
        the standard ones, or a variance at rest below the transfer's ``sigma_floor``.
    """
    name = network.transfer.name
    if name != "siegert":
        raise ValueError(f"the NEST rate export needs the LIF neuron's Siegert transfer (transfer = 'siegert', "
                         f"presets pd14_lif, dl25_lif); this network's transfer is {name!r}, which NEST's "
                         "siegert_neuron cannot compute: export it with colplugin.export.to_brian2 instead")
    f = network.field() if f is None else f
    kappa = _np(f.kappa)
    if np.any(kappa != 0):
        idx = [n for n, k in zip(network.channel_names, kappa) if k != 0]
        raise ValueError(f"NEST's siegert_neuron has no threshold adaptation (no adaptive threshold, no second "
                         f"state), but this network adapts (kappa > 0) in {', '.join(idx[:4])}"
                         f"{' ...' if len(idx) > 4 else ''}; export a network without adaptation: "
                         "load_preset(..., overrides={'kappa': [0.0] * 8}) or the pd14_lif preset")
    if tuple(f.terms) != tuple(DMF_TERMS) + tuple(VARIANCE_TERMS):
        extra = [t.name for t in f.terms if t not in DMF_TERMS and t not in VARIANCE_TERMS]
        raise ValueError(f"the NEST rate export knows colplugin's standard terms only; this field "
                         f"({type(f).__name__}) has others ({', '.join(extra) or 'changed'}), which a "
                         "siegert_neuron cannot express: export a plain ColumnNetwork")
    if f.noise is not None:
        raise ValueError("the NEST rate export is deterministic; build the field without MembraneNoise")
    with torch.no_grad():
        s_rest = _np(f.initial_variance())
    floor = network.transfer.sigma_floor
    if np.any(s_rest < floor ** 2):
        raise ValueError(f"the input variance at rest is below colplugin's sigma floor ({floor:g} mV) in some "
                         "population (min s^2 = {:.3g} mV^2): colplugin holds s at the floor, NEST's "
                         "siegert_neuron has none (at sigma = 0 it divides by zero); use a Poisson background "
                         "(background = 'poisson')".format(float(s_rest.min())))
    return f


def rate_factors(network: ColumnNetwork, f: Field | None = None) -> RateFactors:
    """The drift and diffusion factors that make NEST's ``mu``, ``sigma^2`` colplugin's ``V``, ``S``.

    See the module docstring for the derivation; :meth:`RateFactors.statistics` forms NEST's sums.
    """
    f = check_nest_rate(network, f)
    with torch.no_grad():
        g = _np(f.input_gain)
        k = g * (f.R * f.tau_s)  # mV per (nA Hz): g R tau_s, per target
        k2 = k ** 2 / f.tau_m
        src, tgt, w, w2, _ = f._connections()
        if np.any(np.isnan(w2)) or np.any(w2 < 0):
            raise ValueError("the field's variance weights are missing or negative; the NEST export needs "
                             "ColumnNetwork.input_variance()")
        nu_bg = float(f.nu_bg)
        W_bg, W2_bg, V_off = _np(f.W_bg), _np(f.variance.background), _np(f.V_offset)
        if nu_bg > 0:
            bg_drift = k * W_bg + V_off / nu_bg
        elif np.any(V_off != 0):
            raise ValueError("a calibration V_offset needs a background rate nu_bg > 0 to carry it in NEST "
                             "(the offset rides on the background relay's drift factor)")
        else:
            bg_drift = k * W_bg
        if f.inputs is not None:
            ch, itgt, iw = (_np(x) for x in f.inputs)
            ch, itgt = ch.astype(np.int64), itgt.astype(np.int64)
        else:
            ch = itgt = np.zeros(0, np.int64)
            iw = np.zeros(0)
    return RateFactors(src, tgt, k[tgt] * w, k2[tgt] * w2, bg_drift, k2 * W2_bg, nu_bg,
                       ch, itgt, k[itgt] * iw, k2[itgt] * iw * f.variance.input_amplitude)


def _steps(t_s: float, resolution_ms: float, what: str) -> int:
    x = t_s * 1e3 / resolution_ms
    n = int(round(x))
    if abs(x - n) > 1e-6 * max(1.0, abs(x)):
        raise ValueError(f"{what} ({t_s:g} s) is not a multiple of NEST's resolution ({resolution_ms:g} ms); "
                         "choose a resolution that divides it")
    return n


@dataclass
class NestRateRun:
    """The NEST nodes of an exported network and a :meth:`run` that simulates it.

    Attributes
    ----------
    populations : NodeCollection
        One ``siegert_neuron`` per population, in the network's order.
    background : NodeCollection
        The ``siegert_neuron`` held at ``nu_bg`` that carries the background (and ``V_offset``).
    inputs : NodeCollection or None
        One relay ``siegert_neuron`` per stimulus channel, set to the stimulus's rate.
    multimeter : NodeCollection
        Records ``rate`` of the populations at every step.
    factors : RateFactors
        The drift and diffusion factors of every connection.
    network : ColumnNetwork
    times, rates_in : np.ndarray
        The exported trial's change points (s) and input rates (K, n_inputs), Hz.
    resolution : float
        NEST's time step, ms.
    tau : np.ndarray
        The rate time constant of each population, s.
    """

    nest: Any
    populations: Any
    background: Any
    inputs: Any
    multimeter: Any
    factors: RateFactors
    network: ColumnNetwork
    times: np.ndarray
    rates_in: np.ndarray
    resolution: float
    tau: np.ndarray
    step: int = 0
    _segment: int = field(default=-1, repr=False)

    @property
    def time(self) -> float:
        """The simulated time, s."""
        return self.step * self.resolution * 1e-3

    def rates(self) -> np.ndarray:
        """The populations' current rates (P,), Hz."""
        return np.asarray(self.populations.get("rate"), dtype=float).reshape(-1)

    def set_rates(self, rates: np.ndarray | torch.Tensor) -> None:
        """Set the populations' rates (P,), Hz (e.g. to start a run elsewhere than at 0 Hz)."""
        r = _np(rates).reshape(-1)
        if r.shape != (len(self.populations),) or np.any(~np.isfinite(r)) or np.any(r < 0):
            raise ValueError(f"rates must be {len(self.populations)} finite rates >= 0 Hz")
        self.populations.set(rate=r.tolist())

    def connection_factors(self) -> dict[str, np.ndarray]:
        """Every ``diffusion_connection`` as NEST holds it: ``source``, ``target`` (node ids),
        ``drift_factor``, ``diffusion_factor``."""
        conns = self.nest.GetConnections(synapse_model="diffusion_connection")
        d = conns.get(["source", "target", "drift_factor", "diffusion_factor"])
        return {k: np.atleast_1d(np.asarray(v)) for k, v in d.items()}

    def statistics(self, rates: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``mu`` (mV) and ``sigma^2`` (mV^2) of each population from NEST's own connections and the
        current rates of every node (or the populations at ``rates``, Hz), as ``siegert_neuron`` sums them."""
        c = self.connection_factors()
        r_all = np.zeros(int(self.nest.GetKernelStatus("network_size")) + 1)
        for n in (self.populations, self.background) + ((self.inputs,) if self.inputs is not None else ()):
            ids = np.atleast_1d(np.asarray(n.global_id))
            r_all[ids] = np.atleast_1d(np.asarray(n.get("rate"), dtype=float))
        if rates is not None:
            r_all[np.asarray(self.populations.global_id)] = _np(rates).reshape(-1)
        pos = {gid: i for i, gid in enumerate(np.atleast_1d(np.asarray(self.populations.global_id)))}
        tgt = np.array([pos[t] for t in c["target"]])
        P = len(self.populations)
        mu = np.bincount(tgt, c["drift_factor"] * r_all[c["source"]], minlength=P)
        s2 = np.bincount(tgt, c["diffusion_factor"] * r_all[c["source"]], minlength=P)
        return mu, s2

    def _apply_stimulus(self) -> None:
        if self.inputs is None:
            return
        steps = [_steps(float(t), self.resolution, "a stimulus change point") for t in self.times]
        k = max(i for i, s in enumerate(steps) if s <= self.step)
        if k != self._segment:
            u = self.rates_in[k].tolist()
            self.inputs.set(rate=u, mean=u)
            self._segment = k

    def run(self, duration: float) -> tuple[np.ndarray, np.ndarray]:
        """Simulate ``duration`` s more; return the times (T,), s, and rates (T, P), Hz.

        The samples are every step of the run, its start and end included (``T`` = steps + 1;
        a run continues where the last one stopped). The stimulus's rates switch at its change
        points (the relays are set between ``Simulate`` calls).
        """
        if not (duration > 0 and math.isfinite(duration)):
            raise ValueError(f"duration must be a positive time in s, got {duration}")
        nest, h = self.nest, self.resolution
        n = _steps(duration, h, "the duration")
        start, end = self.step, self.step + n
        self.multimeter.n_events = 0
        r0 = self.rates()
        changes = sorted({_steps(float(t), h, "a stimulus change point") for t in self.times[1:]}
                         if self.inputs is not None else set())
        while self.step < end:
            self._apply_stimulus()
            nxt = min([s for s in changes if s > self.step] + [end])
            nest.Simulate((nxt - self.step) * h)
            self.step = nxt
        ev = self.multimeter.events
        t = np.asarray(ev["times"], dtype=float)
        order = np.lexsort((np.asarray(ev["senders"]), t))
        t, r, s = t[order], np.asarray(ev["rate"], dtype=float)[order], np.asarray(ev["senders"])[order]
        step_of = np.rint(t / h).astype(np.int64)
        keep = (step_of > start) & (step_of < end)
        P = len(self.populations)
        pos = {gid: i for i, gid in enumerate(np.atleast_1d(np.asarray(self.populations.global_id)))}
        rates = np.full((n + 1, P), np.nan)
        rates[0], rates[-1] = r0, self.rates()
        rates[step_of[keep] - start, [pos[x] for x in s[keep]]] = r[keep]
        if np.isnan(rates).any():
            raise RuntimeError("the multimeter missed samples of the run; this is a bug of the export")
        self.multimeter.n_events = 0
        return (start + np.arange(n + 1)) * h * 1e-3, rates


def to_nest_rate(network: ColumnNetwork, stimulus: Stimulus | None = None, *, trial: int = 0,
                 tau: float | np.ndarray | None = None, resolution: float = 0.1,
                 rate0: np.ndarray | torch.Tensor | None = None) -> NestRateRun:
    """Build a LIF mean-field network as NEST ``siegert_neuron`` s in a fresh NEST kernel.

    Parameters
    ----------
    network : ColumnNetwork
        A network with the Siegert transfer and no adaptation (``pd14_lif``; see the module
        docstring for what is refused and why).
    stimulus : Stimulus, optional
        Piecewise-constant input rates; default none (every channel at 0 Hz).
    trial : int
        The stimulus's trial to export.
    tau : float or array (P,), optional
        The rate time constant of NEST's ``tau dr/dt = -r + Phi``, s; default the membrane
        time constant ``tau_m`` (the fixed points do not depend on it, the transients do).
    resolution : float
        NEST's time step, **ms** (NEST's unit); the stimulus's change points must lie on its grid.
    rate0 : array (P,), optional
        Initial rates, Hz (default 0 Hz, NEST's).

    Returns
    -------
    NestRateRun
        Its :meth:`~NestRateRun.run` gives times (s) and rates (Hz).

    Raises
    ------
    ValueError
        A network NEST's ``siegert_neuron`` cannot express (:func:`check_nest_rate`), a
        stimulus that does not fit, or change points off NEST's grid.
    """
    f = check_nest_rate(network)
    if not (resolution > 0 and math.isfinite(resolution)):
        raise ValueError(f"resolution must be a positive time step in ms, got {resolution}")
    factors = rate_factors(network, f)
    stimulus = stimulus or Stimulus.none(1, network.n_inputs)
    if stimulus.n_inputs != network.n_inputs:
        raise ValueError(f"the stimulus has {stimulus.n_inputs} input channels but the network reads "
                         f"{network.n_inputs} (one per Input projection channel)")
    if isinstance(trial, bool) or not isinstance(trial, (int, np.integer)):
        raise TypeError(f"trial must be an int, got {trial!r}")
    if not 0 <= trial < stimulus.batch_size:
        raise IndexError(f"trial {trial} is out of range: the stimulus has {stimulus.batch_size} trial(s)")
    times = _np(stimulus.times)
    rates_in = _np(stimulus.rates[trial])
    for t in times:
        _steps(float(t), resolution, "a stimulus change point")
    tr = network.transfer
    P = f.P
    tau_s = np.broadcast_to(np.asarray(tr.tau_m if tau is None else tau, dtype=float), (P,))
    if np.any(~(tau_s > 0)) or np.any(~np.isfinite(tau_s)):
        raise ValueError(f"tau must be positive and finite (s), got {tau!r}")

    nest = _import_nest()
    nest.ResetKernel()
    if hasattr(nest, "VerbosityLevel"):
        nest.verbosity = nest.VerbosityLevel.ERROR
    else:  # NEST < 3.10
        nest.set_verbosity("M_ERROR")
    # zero-delay rate connections: waveform relaxation over one step per interval (the explicit recursion)
    nest.SetKernelStatus({"resolution": float(resolution), "use_wfr": True, "print_time": False})
    nest.SetKernelStatus({"wfr_comm_interval": float(resolution)})
    neuron = {"tau_m": tr.tau_m * 1e3, "tau_syn": tr.tau_s * 1e3, "t_ref": tr.t_ref * 1e3, "theta": tr.theta,
              "V_reset": tr.V_r, "mean": 0.0}
    pops = nest.Create("siegert_neuron", P, params=neuron)
    pops.set(tau=(tau_s * 1e3).tolist())
    if rate0 is not None:
        r0 = _np(rate0).reshape(-1)
        if r0.shape != (P,) or np.any(~np.isfinite(r0)) or np.any(r0 < 0):
            raise ValueError(f"rate0 must hold {P} finite rates >= 0 Hz")
        pops.set(rate=r0.tolist())
    bg = nest.Create("siegert_neuron", 1, params={"mean": factors.nu_bg, "rate": factors.nu_bg})
    ids = np.asarray(pops.global_id, dtype=np.int64).reshape(-1)

    def connect(pre: np.ndarray, post: np.ndarray, drift: np.ndarray, diffusion: np.ndarray) -> None:
        if len(pre):
            nest.Connect(np.asarray(pre, dtype=np.int64), np.asarray(post, dtype=np.int64), "one_to_one",
                         {"synapse_model": "diffusion_connection", "drift_factor": np.asarray(drift, float),
                          "diffusion_factor": np.asarray(diffusion, float)})

    connect(ids[factors.source], ids[factors.target], factors.drift, factors.diffusion)
    bg_on = (factors.background_drift != 0) | (factors.background_diffusion != 0)
    connect(np.full(int(bg_on.sum()), bg.global_id), ids[bg_on], factors.background_drift[bg_on],
            factors.background_diffusion[bg_on])
    inputs = None
    if network.n_inputs:
        inputs = nest.Create("siegert_neuron", network.n_inputs, params={"mean": 0.0, "rate": 0.0})
        in_ids = np.asarray(inputs.global_id, dtype=np.int64).reshape(-1)
        connect(in_ids[factors.channel], ids[factors.input_target], factors.input_drift, factors.input_diffusion)
    mm = nest.Create("multimeter", params={"record_from": ["rate"], "interval": float(resolution)})
    nest.Connect(mm, pops)
    run = NestRateRun(nest, pops, bg, inputs, mm, factors, network, times, rates_in, float(resolution), tau_s)
    run._apply_stimulus()
    return run
