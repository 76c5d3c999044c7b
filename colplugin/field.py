"""The dynamic mean-field (DMF) equations, and the one vector field every backend uses.

Per population ``i`` (state: membrane-like potential ``V`` and adaptation ``A``, in mV)::

    r_i            = f(V_i - A_i)                                     Hz, the field's Transfer
                     (/ (1 + f / r_max,i) where a saturation r_max,i is set; default none)
    I_i            = tau_s * (sum_j W_ij r_j + W_bg,i nu_bg + sum_k W_in,ik u_k(t))   nA
    tau_m dV_i/dt  = -V_i + R I_i + V_offset,i       R = tau_m / C (MOhm); V_offset: calibration, 0 unless set
    tau_a dA_i/dt  = -A_i + kappa_i r_i
    tau_s dr~_i/dt = -r~_i + r_i                     read-out only
    f(x)           = (a x - b) / (1 - exp(-d (a x - b)))

Every additive term of dV/dt and dA/dt is declared once, in :data:`DMF_TERMS`: a
:class:`Term` holds its torch coefficient and its Brian2 expression side by side. A
:class:`Field`, built from arrays (:meth:`colplugin.network.ColumnNetwork.field` builds one
per solve), assembles the terms into the views the backends use:

* ``field(y, k)``: the torch right-hand side (torchdiffeq, autograd, ``odeint_adjoint`` with
  :attr:`Field.tensors`);
* :meth:`Field.fused`: the operators of the fused Runge-Kutta solver
  (:mod:`colplugin.solve.fused`) and its Jacobian-vector products, dense
  (:class:`FusedOperators`) or sparse (:class:`SparseFusedOperators`);
* :meth:`Field.brian2`: Brian2 ``Equations``, the unit namespace, per-neuron parameters,
  the synapse model with its connections, and the input drive.

A new term of the model is one more :class:`Term` (in :data:`DMF_TERMS`, or in the
``terms`` of a :class:`Field` subclass); torch, the fused solver and Brian2 all follow.

The rate is the field's :class:`~colplugin.transfers.Transfer`: the DMF's f of the input mean
(the paper's, default) or the LIF neuron's Siegert rate of the input mean and variance
(:class:`~colplugin.transfers.SiegertTransfer`, presets ``pd14_lif`` and ``dl25_lif``). A
transfer that needs the variance gives the field a third state, ``S`` (mV^2, Brunel's
white-noise amplitude squared; :data:`VARIANCE_TERMS`)::

    r_i              = Phi(mu = V_i, s^2 = S_i, threshold + A_i)         Hz
    (tau_m / 2) dS_i/dt = -S_i + (g_in R tau_s)^2 / tau_m (sum_j K_ij <J_ij^2> r_j + K_bg J_E^2 nu_bg
                                                          + sum_k K_in,ik J_E^2 u_k(t))

whose fixed point is the input variance of the spiking twin's LIF neurons (:class:`InputVariance`),
so the fixed points are those of the LIF mean field (nnmt's). The fused solver implements the
DMF's f only; a field of another transfer integrates with torchdiffeq (``simulate`` says so).
``tests/test_brian2_export.py`` integrates torch and Brian2 with the same explicit scheme
and requires agreement to 1e-11; ``tests/test_field_terms.py`` adds a term and checks that
every backend moves with it.

The saturation ``r_max`` (off unless a parameter set gives it, see :func:`saturate`) bounds
a population's rate as the saturating NMDA gating of Wong & Wang (2006) bounds their pools'
synaptic drive, so that a self-exciting population can hold a high state.

The filtered rate ``r~`` does not feed back. Its 0.5 ms time constant would set the step
of any explicit solver, so it is kept out of the solver state and obtained from the
instantaneous rate at the output times by the exact solution of the linear filter for a
piecewise-linear input (:func:`filter_rate`).

References
----------
.. [Evers23] Evers, Peters & Senden (2023), bioRxiv 10.1101/2023.09.19.558418.
.. [dL25] de Leeuw, Goebel & Senden, Biophysical Deep Learning: Laminar-resolved
   Cortical Columns as Neural Network Units.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from ._warnings import quiet_brian2_parsing
from .transfers import DMF_BRIAN2_RATE, DMFTransfer, Transfer, g_slope, slope, transfer, transfer_numpy, transfer_value

__all__ = ["transfer", "transfer_value", "transfer_numpy", "slope", "g_slope", "filter_rate", "saturate",
           "Term", "DMF_TERMS", "VARIANCE_TERMS", "GATING_TERMS", "VARIABLES", "Field", "InputVariance",
           "SynapticGating", "FusedOperators",
           "SparseFusedOperators", "Brian2Model", "DENSE_MAX_POPULATIONS", "EDGE_PRODUCT", "EDGE_PRODUCTS",
           "BRIAN2_METHODS"]


def inverse_r_max(r_max: torch.Tensor | None) -> torch.Tensor | None:
    """``1 / r_max`` (0 where ``r_max = inf``, no saturation), or None where no population saturates."""
    if r_max is None or not bool(torch.isfinite(r_max).any()):
        return None
    return 1.0 / r_max


def saturate(r: torch.Tensor, inv_r_max: torch.Tensor | None) -> torch.Tensor:
    """The saturated rate ``r / (1 + r / r_max)`` (Hz), from ``inv_r_max = 1 / r_max`` (1/Hz).

    ``inv_r_max`` (P,) is 0 for a population without saturation (``r_max = inf``); None: no
    population saturates and ``r`` is returned as it is. The rate stays below ``r_max`` and
    approaches it as ``f`` grows; its slope is ``(1 - r_sat / r_max)^2`` times that of ``r``.
    """
    return r if inv_r_max is None else r / (1.0 + r * inv_r_max)


def state_rates(transfer: Any, y: torch.Tensor, n_variables: int, inv_r_max: torch.Tensor | None) -> torch.Tensor:
    """Instantaneous rates (..., P), Hz, of a state ``y`` (..., n_variables P): the one rate function.

    The transfer's variables, ``(V, A)`` or ``(V, A, S)`` (..., P) each (the first of the state;
    a gating state G after them does not enter the rate), go through the transfer's rate,
    saturated where ``inv_r_max`` (:func:`inverse_r_max`) says so.
    """
    P = y.shape[-1] // n_variables
    n_rate = 3 if transfer.needs_variance else 2
    return saturate(transfer.rate(*(y[..., k * P:(k + 1) * P] for k in range(n_rate))), inv_r_max)


def filter_rate(t: torch.Tensor, r: torch.Tensor, tau_s: float, r0: torch.Tensor | None = None) -> torch.Tensor:
    """Low-pass filtered rate r~ (``tau_s dr~/dt = -r~ + r``) at the sample times ``t``.

    Exact for a rate that is linear between samples (first-order hold).

    Parameters
    ----------
    t : torch.Tensor, shape (T,)
        Sample times in s, increasing.
    r : torch.Tensor, shape (T, ...)
        Instantaneous rate in Hz.
    tau_s : float
        Filter time constant in s.
    r0 : torch.Tensor, optional
        Filtered rate at ``t[0]``; defaults to ``r[0]``.
    """
    out = [r[0] if r0 is None else r0]
    h = (t[1:] - t[:-1]).tolist()
    for k, hk in enumerate(h):
        if hk <= 0:
            out.append(out[-1])
            continue
        e = math.exp(-hk / tau_s)
        c = (1.0 - e) * tau_s / hk
        out.append(e * out[-1] + (1.0 - c) * r[k + 1] + (c - e) * r[k])
    return torch.stack(out)


# -- the terms of the model ---------------------------------------------------------------

_FACTORS = ("state", "rate", "one", "coupling", "input", "variance_coupling", "variance_input", "state_rate",
            "gated_coupling")
#: Term factors the fused solver does not implement (a field with one integrates with torchdiffeq).
FUSED_UNSUPPORTED_FACTORS = ("state_rate", "gated_coupling")
#: The state variables a term may drive, with their Brian2 units: V and A (mV) always, the
#: input variance S (mV^2) where the transfer needs it (:attr:`colplugin.transfers.Transfer.needs_variance`),
#: the synaptic gating G (dimensionless, in [0, 1]) where the field has :class:`SynapticGating`.
VARIABLES: dict[str, str] = {"V": "volt", "A": "volt", "S": "volt**2", "G": "1"}


@dataclass(frozen=True)
class Term:
    """One additive term of dV/dt, dA/dt (mV/s) or dS/dt (mV^2/s), declared for every backend at once.

    Parameters
    ----------
    name : str
        Identifier; in Brian2 the subexpression (volt/second, volt**2/second for S) that holds the term.
    variable : {"V", "A", "S", "G"}
        The state variable whose derivative the term adds to (S: the input variance, only
        in fields whose transfer needs it; G: the synaptic gating, only in fields with
        :class:`SynapticGating`).
    factor : {"state", "rate", "one", "coupling", "input", "variance_coupling", "variance_input", \
"state_rate", "gated_coupling"}
        What the coefficient multiplies: the variable itself (``coef * V``), the
        population's own rate (``coef * r``), nothing (a constant ``coef``), the recurrent
        input ``sum_j W_ij r_j`` (nA Hz; intra-column weights, and inter-column ones unless
        the field has gating), the stimulus drive ``sum_k W_in,ik u_k(t)`` (nA Hz), the
        same two sums with the variance weights of :class:`InputVariance`
        (``sum_j K_ij <J_ij^2> r_j``, nA^2 Hz), the product of the variable and the rate
        (``coef * X r``, a nonlinear term), or the gated inter-column input
        ``sum_j W_ij G_j`` (nA; fields with gating).
    coefficient : callable
        ``coefficient(field)``: float or tensor (P,) in 1/s (``state``), mV/(s Hz)
        (``rate``), mV/s (``one``), mV/(s nA Hz) (``coupling``, ``input``),
        mV^2/(s nA^2 Hz) (``variance_coupling``, ``variance_input``), 1/(s Hz)
        (``state_rate``) or mV/(s nA) (``gated_coupling``); the units of G's terms with mV
        replaced by 1.
    brian2 : str
        The same term as a Brian2 expression (volt/second) in the names of the neuron
        group: ``V``, ``A``, ``S``, ``G``, ``r``, the namespace (:data:`BRIAN2_CONSTANTS`),
        ``I_rec`` (the summed recurrent input, amp*Hz), ``I_in`` (the stimulus drive,
        amp*Hz), ``I2_rec`` and ``I2_in`` (their variance counterparts, amp**2*Hz),
        ``I_gat`` (the summed gated input, amp) and the term's own ``parameters``.
    parameters : tuple of str
        Brian2 declarations of the per-neuron parameters the expression uses, e.g.
        ``("kappa : volt * second (constant)",)``.
    values : callable, optional
        ``values(field)``: ``{name: (array (P,), unit)}``, the values of those parameters
        with a Brian2 unit expression such as ``"mV*second"``.
    """

    name: str
    variable: str
    factor: str
    coefficient: Callable[["Field"], Any]
    brian2: str
    parameters: tuple[str, ...] = ()
    values: Callable[["Field"], dict[str, tuple[Any, str]]] | None = None

    def __post_init__(self) -> None:
        if self.variable not in VARIABLES:
            raise ValueError(f"term {self.name!r}: variable must be one of {', '.join(VARIABLES)}, "
                             f"not {self.variable!r}")
        if self.factor not in _FACTORS:
            raise ValueError(f"term {self.name!r}: factor must be one of {', '.join(_FACTORS)}, not {self.factor!r}")
        if not self.name.isidentifier():
            raise ValueError(f"term name {self.name!r} must be an identifier (it names a Brian2 subexpression)")


def _current_gain(f: "Field") -> Any:
    """g_in R tau_s / tau_m (P,): mV/s per nA Hz of input into each population (g_in: calibration, 1 unless set)."""
    return f.input_gain * (f.R * f.tau_s / f.tau_m)


#: The DMF model, term by term (see the module docstring for the equations).
DMF_TERMS: tuple[Term, ...] = (
    Term("leak_V", "V", "state", lambda f: -1.0 / f.tau_m, "-V / tau_m"),
    Term("recurrent", "V", "coupling", _current_gain, "g_in * R * tau_s * I_rec / tau_m",
         ("g_in : 1 (constant)",), lambda f: {"g_in": (f.input_gain, "Hz*second")}),
    Term("background", "V", "one", lambda f: _current_gain(f) * (f.W_bg * f.nu_bg),
         "g_in * R * tau_s * W_bg * nu_bg / tau_m", ("W_bg : amp (constant)",),
         lambda f: {"W_bg": (f.W_bg, "nA")}),
    Term("stimulus", "V", "input", _current_gain, "g_in * R * tau_s * I_in / tau_m"),
    Term("offset", "V", "one", lambda f: f.V_offset / f.tau_m, "V_offset / tau_m", ("V_offset : volt (constant)",),
         lambda f: {"V_offset": (f.V_offset, "mV")}),
    Term("leak_A", "A", "state", lambda f: -1.0 / f.tau_a, "-A / tau_a"),
    Term("adaptation", "A", "rate", lambda f: f.kappa / f.tau_a, "kappa * r / tau_a",
         ("kappa : volt * second (constant)",), lambda f: {"kappa": (f.kappa, "mV*second")}),
)


def _variance_gain(f: "Field") -> Any:
    """2 (g_in R tau_s / tau_m)^2 (P,): mV^2/s per nA^2 Hz of shot-noise input (:data:`VARIANCE_TERMS`)."""
    return 2.0 * f.input_gain ** 2 * (f.R * f.tau_s / f.tau_m) ** 2


#: The input variance S (mV^2) of a field whose transfer needs it: Brunel's white-noise
#: amplitude squared, ``s^2 = (R tau_s)^2 / tau_m sum_j K_ij <J_ij^2> r_j`` (+ background and
#: Poisson input), relaxing with the free membrane's variance time constant ``tau_m / 2``::
#:
#:     (tau_m / 2) dS/dt = -S + (g_in R tau_s)^2 / tau_m (sum_j K_ij <J_ij^2> r_j + K_bg J_E^2 nu_bg
#:                                                       + sum_k K_in,ik J_E^2 u_k)
#:
#: Its fixed point is the variance of the LIF mean field (Fourcaud & Brunel 2002; nnmt).
VARIANCE_TERMS: tuple[Term, ...] = (
    Term("leak_S", "S", "state", lambda f: -2.0 / f.tau_m, "-2 * S / tau_m"),
    Term("recurrent_S", "S", "variance_coupling", _variance_gain,
         "2 * g_in**2 * R**2 * tau_s**2 * I2_rec / tau_m**2"),
    Term("background_S", "S", "one", lambda f: _variance_gain(f) * (f.variance.background * f.nu_bg),
         "2 * g_in**2 * R**2 * tau_s**2 * W2_bg * nu_bg / tau_m**2", ("W2_bg : amp**2 (constant)",),
         lambda f: {"W2_bg": (f.variance.background, "nA**2")}),
    Term("stimulus_S", "S", "variance_input", _variance_gain, "2 * g_in**2 * R**2 * tau_s**2 * I2_in / tau_m**2"),
)


@dataclass(frozen=True)
class SynapticGating:
    """Saturating synaptic gating of the inter-column projections (Wong & Wang 2006's NMDA gating).

    Every population gets a gating state ``G`` in [0, 1]; the inter-column (learned)
    projections act through it instead of through the presynaptic rate::

        dG_j/dt = -G_j / tau + gamma (1 - G_j) r_j
        I_i     = tau_s (sum_intra W_ij r_j + sum_inter W_ij G_j / (gamma tau) + ...)

    ``G / (gamma tau)`` (Hz) equals the rate ``r`` for slow, weak activity (``gamma tau r << 1``)
    and saturates at ``1 / (gamma tau)`` (about 16 Hz at Wong & Wang's values), with the slow
    time constant ``tau``: a projection's drive follows its source with a delay of ``tau`` and
    stops growing, so a pool can hold its own activity through a strong projection loop.

    Parameters
    ----------
    tau : float or torch.Tensor
        Decay time constant, s (Wong & Wang 2006: 0.1 s). A 0-d tensor may require grad.
    gamma : float or torch.Tensor
        Rise gain, dimensionless (0.641). A 0-d tensor may require grad.
    """

    tau: float | torch.Tensor = 0.1
    gamma: float | torch.Tensor = 0.641

    def __post_init__(self) -> None:
        for name in ("tau", "gamma"):
            v = getattr(self, name)
            if isinstance(v, torch.Tensor) and v.numel() != 1:
                raise ValueError(f"SynapticGating {name} must be one number (a 0-d tensor), got shape "
                                 f"{tuple(v.shape)}")
            value = float(v.detach()) if isinstance(v, torch.Tensor) else float(v)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"SynapticGating {name} must be positive and finite, got {value!r}")

    def equilibrium(self, r: torch.Tensor) -> torch.Tensor:
        """G at which dG/dt = 0 for the rate ``r`` (Hz): ``gamma tau r / (1 + gamma tau r)``."""
        x = r * (self.gamma * self.tau)
        return x / (1.0 + x)


#: The synaptic gating G (fields with :class:`SynapticGating`): its own dynamics, and the
#: inter-column input through it::
#:
#:     dG/dt = -G / tau_G + gamma_G (1 - G) r
#:     dV/dt += g_in R tau_s / tau_m * sum_inter W_ij G_j / (gamma_G tau_G)
GATING_TERMS: tuple[Term, ...] = (
    Term("leak_G", "G", "state", lambda f: -1.0 / f.gating.tau, "-G / tau_G", ("tau_G : second (constant)",),
         lambda f: {"tau_G": (f.gating.tau, "second")}),
    Term("rise_G", "G", "rate", lambda f: f.gating.gamma, "gamma_G * r", ("gamma_G : 1 (constant)",),
         lambda f: {"gamma_G": (f.gating.gamma, "1")}),
    Term("saturation_G", "G", "state_rate", lambda f: -f.gating.gamma, "-gamma_G * G * r"),
    Term("gated", "V", "gated_coupling", lambda f: _current_gain(f) / (f.gating.gamma * f.gating.tau),
         "g_in * R * tau_s * I_gat / (gamma_G * tau_G * tau_m)"),
)


@dataclass
class InputVariance:
    """How the presynaptic rates make each population's input variance (fields with ``S``).

    Attributes
    ----------
    blocks : torch.Tensor, shape (n_areas, n, n)
        ``K_ij <J_ij^2>`` of each area's intra-column connections (``[target, source]``), nA^2
        per Hz of presynaptic rate: ``W_ij |J_ij| (1 + J_rel_sd^2)``.
    edge_amplitude : float or torch.Tensor, shape (E,)
        ``<J^2> / |J|`` of an inter-column synapse (``J_E (1 + J_rel_sd^2)``, nA): an edge of
        weight ``W`` (``|W| / J_E`` synapses) adds ``|W| edge_amplitude`` (nA^2/Hz); one per
        edge where it depends on the edge (multapses of a downscaled twin).
    input_amplitude : float
        The same for a Poisson input synapse (``J_E``, no spread, nA): a channel of weight
        ``W_in`` adds ``W_in input_amplitude``.
    background : torch.Tensor, shape (P,)
        ``K_bg J_E^2`` (nA^2) of a Poisson background at ``nu_bg``; 0 for a DC background.
    """

    blocks: torch.Tensor
    edge_amplitude: float | torch.Tensor
    input_amplitude: float
    background: torch.Tensor

#: The constants of a :class:`Field` and their Brian2 units (its Brian2 namespace).
BRIAN2_CONSTANTS: dict[str, str] = {"tau_m": "second", "tau_a": "second", "tau_s": "second", "R": "Mohm",
                                    "a": "Hz/mV", "b": "Hz", "d": "second", "nu_bg": "Hz"}

#: Brian2 equations of the DMF rate and the filtered rate; ``dV/dt`` and ``dA/dt`` are the sums of the terms.
#: The rate line is the field's transfer's (:meth:`colplugin.transfers.Transfer.brian2_rate`).
BRIAN2_RATE = (DMF_BRIAN2_RATE, "drf/dt = (-rf + r) / tau_s : Hz")

#: The rate equation of a field with a saturation (:func:`saturate`), in place of ``BRIAN2_RATE[0]``.
BRIAN2_SATURATED_RATE = ("r = f_x / (1 + f_x * inv_r_max) : Hz",
                         "f_x = 1 / (d * exprel(-d * (a * (V - A) - b))) : Hz",
                         "inv_r_max : second (constant)")

#: The summed recurrent input (Synapses) and the stimulus drive (a TimedArray named ``drive_ta``).
BRIAN2_DRIVE = "drive_ta"
BRIAN2_COUPLING = ("I_rec : amp * Hz",)
BRIAN2_INPUT = (f"I_in = {BRIAN2_DRIVE}(t, i) : amp * Hz",)
BRIAN2_SYNAPSE = ("w : amp", "I_rec_post = w * r_pre : amp * Hz (summed)")
#: The variance counterparts (fields with ``S``): a second summed variable and a second drive.
BRIAN2_DRIVE2 = "drive2_ta"
BRIAN2_VARIANCE_COUPLING = ("I2_rec : amp**2 * Hz",)
BRIAN2_VARIANCE_INPUT = (f"I2_in = {BRIAN2_DRIVE2}(t, i) : amp**2 * Hz",)
BRIAN2_VARIANCE_SYNAPSE = ("w2 : amp**2", "I2_rec_post = w2 * r_pre : amp**2 * Hz (summed)")

#: The gated counterparts (fields with gating): a summed gated input and its weights (inter-column only).
BRIAN2_GATED_COUPLING = ("I_gat : amp",)
BRIAN2_GATED_SYNAPSE = ("wg : amp", "I_gat_post = wg * G_pre : amp (summed)")

#: Integration methods of Brian2 that handle these equations. Only ``euler`` reproduces the
#: torch solve exactly: Brian2 updates a summed variable (``I_rec``) once per step, so a
#: multi-stage method holds the coupling fixed within a step.
BRIAN2_METHODS = ("euler", "rk2", "rk4", "heun")

#: Networks with at most this many populations (24 columns) couple through one dense P x P
#: matrix by default: one matrix product per evaluation, fastest where per-operation overhead
#: dominates. Larger ones couple through per-area 8 x 8 blocks plus an edge list, whose cost
#: and memory grow with the number of connections; the crossover of the fused solver's two
#: forms lies between 16 and 32 columns (``benchmarks/bench_sparse.py``).
DENSE_MAX_POPULATIONS = 192

#: How the fused solver applies a sparse field's inter-column edge list: ``"index_add"``
#: (gather the source rates, scale, scatter-add onto the targets) or ``"csr"`` (a
#: ``torch.sparse`` CSR matrix product). Both give the same numbers up to summation order;
#: ``benchmarks/bench_sparse.py`` measures which is faster.
EDGE_PRODUCTS = ("index_add", "csr")
EDGE_PRODUCT = "index_add"


def _brian2_unit(expr: str):
    """A Brian2 unit from ``"mV*second"``, ``"Hz/mV"``, ``"nA**2"`` or ``"1"`` (names of ``brian2``, or 1,
    joined by * and /, each with an optional integer power ``**k``)."""
    quiet_brian2_parsing()
    import brian2 as b2

    unit = 1.0
    for k, part in enumerate(expr.replace(" ", "").split("/")):
        prod = 1.0
        for factor in part.replace("**", "^").split("*"):
            name, _, power = factor.partition("^")
            prod = prod * (1.0 if name == "1" else getattr(b2, name)) ** int(power or 1)
        unit = prod if k == 0 else unit / prod
    return unit


def _total(parts: list):
    """Sum of the coefficients (None if there are none; the single one itself if one)."""
    if not parts:
        return None
    out = parts[0]
    for p in parts[1:]:
        out = out + p
    return out


def _numpy(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


@lru_cache(maxsize=64)
def _block_index(layout: tuple[tuple[int, int], ...], n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rows, cols, index into blocks.reshape(-1)) of the block-diagonal intra-column weights."""
    rows, cols, which = [], [], []
    i, j = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    for ai, (first, n_columns) in enumerate(layout):
        for c in range(n_columns):
            o = first + c * n
            rows.append(o + i.ravel())
            cols.append(o + j.ravel())
            which.append(ai * n * n + i.ravel() * n + j.ravel())
    return tuple(np.concatenate(x) for x in (rows, cols, which))


@dataclass
class _Plan:
    """The terms of one variable, assembled: ``d = r @ Wt (or blocks + edges) + drive_k + r * rate + X * state``."""

    coupling: float | None = None
    Wt: torch.Tensor | None = None
    blocks_t: torch.Tensor | None = None
    w_edges: torch.Tensor | None = None
    drive: torch.Tensor | None = None
    rate: Any = None
    state: Any = None
    state_rate: Any = None
    gated_w: torch.Tensor | None = None


class Field:
    """The DMF vector field of a network, with a view for every backend.

    Built from arrays (a :class:`~colplugin.network.ColumnNetwork` builds its own with
    :meth:`~colplugin.network.ColumnNetwork.field`, once per solve). The tensors may be on
    any device and depend differentiably on learnable parameters.

    Parameters
    ----------
    constants : mapping
        ``tau_m``, ``tau_a``, ``tau_s`` (s), ``R`` (MOhm), ``a`` (Hz/mV), ``b`` (Hz),
        ``d`` (s), ``nu_bg`` (Hz).
    kappa : torch.Tensor, shape (P,)
        Adaptation strength, mV s.
    W_bg : torch.Tensor, shape (P,)
        Background weights, nA.
    blocks : torch.Tensor, shape (n_areas, n, n)
        Intra-column weights of each area's columns (``[target, source]``), nA per Hz of
        presynaptic rate; ``n`` populations per column.
    layout : sequence of (int, int)
        Per area: index of its first population and number of columns. The areas tile
        the populations in order.
    edges : (source, target, weight), optional
        Inter-column connections: population indices (long tensors) and weights (nA).
    inputs : (channel, target, weight), optional
        Stimulus connections: input channel, target population, weight (nA).
    input_rates : torch.Tensor, shape (B, K, n_inputs), optional
        Stimulus rates (Hz) of each of K piecewise-constant segments; default none.
    V_offset : torch.Tensor, shape (P,), optional
        Calibration offset (mV) of each population's membrane state: a constant drive
        ``V_offset / tau_m`` (a DC current with ``R I = V_offset``), so that fixed points
        are those of ``f(V - A + V_offset)``; default 0.
    input_gain : torch.Tensor, shape (P,), optional
        Calibration gain of every input current into each population (recurrent,
        background, stimulus); default 1. Equal in every column of an area.
    r_max : torch.Tensor, shape (P,), optional
        Saturation rate (Hz) of each population: its rate is ``f / (1 + f / r_max)``
        (:func:`saturate`); ``inf`` (the default) for none. A constant of the model.
    noise : torch.Tensor, shape (B, K, P), optional
        An additive drive of dV/dt (mV/s) in each segment: one realisation of
        :class:`~colplugin.stimulus.MembraneNoise` (torch views only; the Brian2 view refuses it).
    dense : bool, optional
        Couple through one dense P x P matrix, or through per-area blocks plus the edge
        list (both work with every backend). Default: dense up to
        :data:`DENSE_MAX_POPULATIONS` populations.
    transfer : Transfer, optional
        The populations' transfer function (:mod:`colplugin.transfers`); default the DMF's f
        with the constants ``a``, ``b``, ``d``.
    variance : InputVariance, optional
        How the rates make the input variance; required where the transfer needs it (then
        the field has the state ``[V, A, S]`` and the terms :data:`VARIANCE_TERMS`).
    gating : SynapticGating, optional
        Saturating synaptic gating of the inter-column connections (then the field has the
        state ``[V, A, G]`` and the terms :data:`GATING_TERMS`); default none. DMF transfer only.

    Notes
    -----
    The state is ``y = [V, A]``, shape (B, 2P), mV, ``y = [V, A, S]`` (B, 3P; S in mV^2)
    for a transfer that needs the input variance, or ``y = [V, A, G]`` (B, 3P; G
    dimensionless) for a field with gating. Subclass and extend :attr:`terms` to
    add a term to the model (``terms = Field.terms + (Term(...),)``).
    """

    #: The terms of the model (see :class:`Term`).
    terms: tuple[Term, ...] = DMF_TERMS

    def __init__(self, constants: Mapping[str, float], kappa: torch.Tensor, W_bg: torch.Tensor,
                 blocks: torch.Tensor, layout: Sequence[tuple[int, int]],
                 edges: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
                 inputs: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
                 input_rates: torch.Tensor | None = None, *, dense: bool | None = None,
                 noise: torch.Tensor | None = None, V_offset: torch.Tensor | None = None,
                 input_gain: torch.Tensor | None = None, r_max: torch.Tensor | None = None,
                 transfer: Transfer | None = None, variance: InputVariance | None = None,
                 gating: SynapticGating | None = None) -> None:
        missing = [k for k in BRIAN2_CONSTANTS if k not in constants]
        if missing:
            raise ValueError(f"Field constants lack {missing}")
        for k in BRIAN2_CONSTANTS:
            setattr(self, k, float(constants[k]))
        self.transfer = DMFTransfer(self.a, self.b, self.d) if transfer is None else transfer
        if not isinstance(self.transfer, Transfer):
            raise TypeError(f"transfer must be a colplugin Transfer, got {type(self.transfer).__name__}")
        if (not isinstance(self.transfer, DMFTransfer) and r_max is not None
                and bool(torch.isfinite(torch.as_tensor(r_max)).any())):
            raise ValueError(f"r_max saturates the DMF's f; the {self.transfer.name!r} transfer has no saturation "
                             "(the LIF neuron's own rate is at most 1 / t_ref): set r_max = inf")
        terms, variables = type(self).terms, ("V", "A")
        if self.transfer.needs_variance:
            if variance is None:
                raise ValueError(f"the {self.transfer.name} transfer needs the input variance: pass "
                                 "variance=InputVariance(...) (ColumnNetwork.field builds it from the parameters)")
            terms, variables = terms + VARIANCE_TERMS, variables + ("S",)
        if gating is not None:
            if not isinstance(gating, SynapticGating):
                raise TypeError(f"gating must be a SynapticGating(tau, gamma), got {gating!r}")
            if self.transfer.needs_variance:
                raise ValueError(f"synaptic gating is implemented with the DMF transfer; the {self.transfer.name!r} "
                                 "transfer's input variance would need the gated projections' spike statistics: "
                                 "use transfer = \"dmf\" with gating, or gating = \"none\"")
            terms, variables = terms + GATING_TERMS, variables + ("G",)
        self.terms, self.variables, self.gating = terms, variables, gating
        self.variance = variance if self.transfer.needs_variance else None
        self.blocks = blocks
        self.layout = tuple((int(a), int(n)) for a, n in layout)
        self.n = int(blocks.shape[-1])
        self.P = P = sum(n for _, n in self.layout) * self.n
        self.kappa, self.W_bg = kappa, W_bg
        self.V_offset = torch.zeros_like(W_bg) if V_offset is None else V_offset
        self.input_gain = torch.ones_like(W_bg) if input_gain is None else input_gain
        if r_max is not None:
            r_max = torch.as_tensor(r_max, dtype=W_bg.dtype, device=W_bg.device).detach()
            if r_max.shape != (P,) or not bool((r_max > 0).all()):
                raise ValueError(f"Field r_max must hold {P} positive saturation rates in Hz (inf: none), "
                                 f"got shape {tuple(r_max.shape)}")
        self.inv_r_max = inverse_r_max(r_max)  # (P,), 0 where a population does not saturate; None if none does
        self.edges = edges if edges is not None and edges[0].numel() else None
        self.inputs = inputs if inputs is not None and inputs[0].numel() else None
        self.input_rates = input_rates
        if noise is not None and (noise.ndim != 3 or noise.shape[-1] != P
                                  or (input_rates is not None and noise.shape[1] != input_rates.shape[1])):
            raise ValueError(f"Field noise must have shape (B, K, P={P}) with the K segments of the input rates, "
                             f"got {tuple(noise.shape)}")
        self.noise = noise
        self.dense = P <= DENSE_MAX_POPULATIONS if dense is None else bool(dense)
        self.dtype, self.device = blocks.dtype, blocks.device
        self.plans = {v: self._plan(v) for v in self.variables}
        self.tensors = tuple(t for p in self.plans.values()
                             for t in (p.Wt, p.blocks_t, p.w_edges, p.drive, p.rate, p.state, p.state_rate,
                                       p.gated_w)
                             if isinstance(t, torch.Tensor) and t.requires_grad)

    # -- assembling the terms ------------------------------------------------------------
    def _terms(self, variable: str, factor: str) -> list:
        return [t.coefficient(self) for t in self.terms if t.variable == variable and t.factor == factor]

    def _plan(self, v: str) -> _Plan:
        plan = _Plan(rate=_total(self._terms(v, "rate")), state=_total(self._terms(v, "state")),
                     state_rate=_total(self._terms(v, "state_rate")))
        gated = _total(self._terms(v, "gated_coupling"))
        if gated is not None and self.gating is None:
            raise ValueError(f"the terms of d{v}/dt use the gated coupling, which this field lacks (no gating)")
        if gated is not None and self.edges is not None:  # (P,) per target or a number, times each edge's weight
            per_target = isinstance(gated, torch.Tensor) and gated.ndim == 1
            plan.gated_w = (gated[self.edges[1]] if per_target else gated) * self.edges[2]
        variance = self._terms(v, "variance_coupling") or self._terms(v, "variance_input")
        if variance and (self._terms(v, "coupling") or self._terms(v, "input")):
            raise ValueError(f"the terms of d{v}/dt mix mean and variance couplings; a variable takes one kind")
        if variance and self.variance is None:
            raise ValueError(f"the terms of d{v}/dt use the input variance, which this field lacks (its transfer "
                             f"{self.transfer.name!r} does not need it)")
        kind = "variance_" if variance else ""
        if variance:
            blocks = self.variance.blocks
            edge_w = None if self.edges is None else self.edges[2].abs() * self.variance.edge_amplitude
            in_w = None if self.inputs is None else self.inputs[2] * self.variance.input_amplitude
        else:  # with gating, the inter-column connections act through G (gated_coupling), not here
            blocks = self.blocks
            edge_w = None if self.edges is None or self.gating is not None else self.edges[2]
            in_w = None if self.inputs is None else self.inputs[2]
        scale = _total(self._terms(v, kind + "coupling"))
        if scale is not None:
            plan.coupling = scale
            per_target = isinstance(scale, torch.Tensor) and scale.ndim == 1  # (P,): one factor per target
            if self.dense:
                rows, cols, vals = self.intra_index(blocks)
                if edge_w is not None:
                    rows, cols = torch.cat([rows, self.edges[1]]), torch.cat([cols, self.edges[0]])
                    vals = torch.cat([vals, edge_w])
                W = torch.zeros(self.P, self.P, dtype=self.dtype, device=self.device)
                plan.Wt = W.index_put((rows, cols), (scale[rows] if per_target else scale) * vals, accumulate=True).T
            else:
                if per_target:  # blocks are [target, source] per area: the area's first column's factors
                    local = torch.stack([scale[first:first + self.n] for first, _ in self.layout])
                    plan.blocks_t = (local.unsqueeze(-1) * blocks).transpose(1, 2)
                else:
                    plan.blocks_t = (scale * blocks).transpose(1, 2)
                plan.w_edges = None if edge_w is None else (
                    (scale[self.edges[1]] if per_target else scale) * edge_w)
        drive = None
        gain = _total(self._terms(v, kind + "input"))
        if gain is not None and self.inputs is not None and self.input_rates is not None:
            ch, tgt, _ = self.inputs
            B, K, _ = self.input_rates.shape
            drive = torch.zeros(B, K, self.P, dtype=self.dtype, device=self.device)
            g = gain[tgt] if isinstance(gain, torch.Tensor) and gain.ndim == 1 else gain
            drive = drive.index_add(2, tgt, self.input_rates[:, :, ch] * (g * in_w))
        const = _total(self._terms(v, "one"))
        if const is not None:
            const = torch.as_tensor(const, dtype=self.dtype, device=self.device).expand(self.P)
            drive = const.reshape(1, 1, self.P) if drive is None else drive + const
        if v == "V" and self.noise is not None:  # MembraneNoise: an additive drive of dV/dt per segment
            drive = self.noise if drive is None else drive + self.noise
        plan.drive = drive
        return plan

    def intra_index(self, blocks: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(rows, cols, values) of the block-diagonal intra-column weights (nA/Hz), differentiable.

        ``blocks``: other per-area blocks of the same layout (default the field's weights).
        """
        key = (self.layout, self.n, self.device)
        cached = _INDEX_CACHE.get(key)
        if cached is None:
            cached = tuple(torch.as_tensor(x, device=self.device) for x in _block_index(self.layout, self.n))
            _INDEX_CACHE[key] = cached
        rows, cols, which = cached
        return rows, cols, (self.blocks if blocks is None else blocks).reshape(-1)[which]

    # -- the torch view ------------------------------------------------------------------
    @property
    def n_state(self) -> int:
        """Width of the state: 2P (``[V, A]``) or 3P (``[V, A, S]``, ``[V, A, G]``)."""
        return len(self.variables) * self.P

    def split(self, y: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The state's variables (..., P) each: ``(V, A)``, ``(V, A, S)`` or ``(V, A, G)``."""
        P = self.P
        return tuple(y[..., k * P:(k + 1) * P] for k in range(len(self.variables)))

    def rates(self, y: torch.Tensor) -> torch.Tensor:
        """Instantaneous rates (..., P) in Hz of a state ``y`` (..., 2P or 3P): the transfer of V, A (and S)."""
        return state_rates(self.transfer, y, len(self.variables), self.inv_r_max)

    def initial_variance(self) -> torch.Tensor:
        """S (P,), mV^2, at rest: the fixed point of dS/dt with every rate and input 0 (background alone)."""
        if self.variance is None:
            raise ValueError("this field has no input variance (its transfer needs none)")
        const = _total(self._terms("S", "one"))  # background alone: no stimulus segment enters
        const = torch.zeros(self.P, dtype=self.dtype, device=self.device) if const is None else \
            torch.as_tensor(const, dtype=self.dtype, device=self.device).detach().expand(self.P)
        return const / -torch.as_tensor(self.plans["S"].state, dtype=self.dtype, device=self.device).expand(self.P)

    @property
    def saturating(self) -> torch.Tensor | None:
        """Boolean mask (P,) of the populations with a finite ``r_max``; None if there are none."""
        return None if self.inv_r_max is None else self.inv_r_max > 0

    def __call__(self, y: torch.Tensor, k: int = 0) -> torch.Tensor:
        """dy/dt (B, 2P or 3P), mV/s (mV^2/s for S), for the state ``y`` in stimulus segment ``k``."""
        X = self.split(y)
        r = saturate(self.transfer.rate(*X[:2 + (self.variance is not None)]), self.inv_r_max)
        G = X[-1] if self.gating is not None else None
        out = []
        for x, plan in zip(X, self.plans.values()):
            drive = None if plan.drive is None else plan.drive.select(1, k)
            d = None
            if plan.Wt is not None:
                d = torch.mm(r, plan.Wt) if drive is None else torch.addmm(drive, r, plan.Wt)
            elif plan.blocks_t is not None:
                d = self._sparse(r, plan)
                d = d if drive is None else d + drive
            elif drive is not None:
                d = drive.expand_as(x)
            if plan.rate is not None:
                d = r * plan.rate if d is None else d + r * plan.rate
            if plan.state is not None:
                d = x * plan.state if d is None else d + x * plan.state
            if plan.state_rate is not None:
                d = x * r * plan.state_rate if d is None else d + x * r * plan.state_rate
            if plan.gated_w is not None:
                src, tgt, _ = self.edges
                d = (torch.zeros_like(x) if d is None else d).index_add(1, tgt, G[:, src] * plan.gated_w)
            out.append(torch.zeros_like(x) if d is None else d)
        return torch.cat(out, 1)

    def _sparse(self, r: torch.Tensor, plan: _Plan) -> torch.Tensor:
        B, n = r.shape[0], self.n
        parts = []
        for i, (first, n_columns) in enumerate(self.layout):
            rc = r[:, first:first + n_columns * n].reshape(B, n_columns, n)
            parts.append((rc @ plan.blocks_t[i]).reshape(B, -1))
        out = parts[0] if len(parts) == 1 else torch.cat(parts, 1)
        if plan.w_edges is not None:
            src, tgt, _ = self.edges
            out = out.index_add(1, tgt, r[:, src] * plan.w_edges)
        return out

    # -- the fused solver's view ---------------------------------------------------------
    def fused(self, edge_product: str | None = None) -> "FusedOperators | SparseFusedOperators":
        """The operators of the fused Runge-Kutta solver (:mod:`colplugin.solve.fused`).

        A dense field gives :class:`FusedOperators` (one P x 2P matrix product per stage);
        a sparse one :class:`SparseFusedOperators` (per-area products with the 8 x 8
        intra-column blocks plus the inter-column edge list), whose cost grows with the
        number of connections.

        Parameters
        ----------
        edge_product : {"index_add", "csr"}, optional
            How a sparse field applies its edge list (default :data:`EDGE_PRODUCT`).
        """
        if not self.transfer.fused:
            raise ValueError(f"the fused solver implements the DMF transfer only, not {self.transfer.name!r}; "
                             "integrate with Solver(backend='torchdiffeq') (backend='auto' does so by itself)")
        if self.gating is not None:
            raise ValueError("the fused solver implements the DMF without synaptic gating; integrate a gated "
                             "field with Solver(backend='torchdiffeq') (backend='auto' does so by itself)")
        nonlinear = [t.name for t in self.terms if t.factor in FUSED_UNSUPPORTED_FACTORS]
        if nonlinear:
            raise ValueError(f"the fused solver has no terms of the factors {', '.join(FUSED_UNSUPPORTED_FACTORS)}; "
                             f"this field has {', '.join(nonlinear)}: integrate it with "
                             "Solver(backend='torchdiffeq') (backend='auto' does so by itself)")
        P, dt, dev = self.P, self.dtype, self.device
        a, b, d = self.transfer.a, self.transfer.b, self.transfer.d  # the DMF's f: its constants pack the kernel
        cs, drives = [], []
        for plan in self.plans.values():
            s = 0.0 if plan.state is None else plan.state
            cs.append(torch.as_tensor(s, dtype=dt, device=dev).expand(P) if isinstance(s, torch.Tensor)
                      else torch.full((P,), s, dtype=dt, device=dev))
            drives.append(plan.drive)
        ref = next((x for x in drives if x is not None), torch.zeros(1, 1, P, dtype=dt, device=dev))
        drive = torch.cat([ref.new_zeros(ref.shape) if x is None else x.expand(ref.shape) for x in drives], 2)
        c = torch.cat(cs)
        if c.requires_grad:
            raise ValueError("the fused solver treats the state coefficients of the terms as constants")
        db = torch.tensor(d * b, dtype=dt, device=dev)
        sat = None if self.inv_r_max is None else self.inv_r_max / d  # g = d r saturates at d r_max
        if not self.dense:
            blocks, w_edges, rates = [], [], []
            for plan in self.plans.values():
                blocks.append(None if plan.blocks_t is None else plan.blocks_t / d)
                w_edges.append(None if plan.w_edges is None else plan.w_edges / d)
                rates.append(None if plan.rate is None
                             else torch.as_tensor(plan.rate, dtype=dt, device=dev).expand(P) / d)
            src, tgt = (None, None) if self.edges is None else self.edges[:2]
            return SparseFusedOperators(self.layout, self.n, c, db, drive, a, b, d, blocks,
                                        src, tgt, w_edges, rates, edge_product=edge_product or EDGE_PRODUCT,
                                        sat=sat)
        eye = torch.eye(P, dtype=dt, device=dev)
        Mw = torch.cat([eye, -eye], 0).mul_(-d * a)
        cols = []
        for plan in self.plans.values():
            M = plan.Wt
            if plan.rate is not None:
                D = torch.diag(torch.as_tensor(plan.rate, dtype=dt, device=dev).expand(P))
                M = D if M is None else M + D
            cols.append(torch.zeros(P, P, dtype=dt, device=dev) if M is None else M)
        return FusedOperators(Mw, torch.cat(cols, 1).div(d), c, db, drive, a, b, d, sat=sat)

    # -- the Brian2 view -----------------------------------------------------------------
    def connections(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(source, target, weight in nA) of every nonzero connection, intra- and inter-column
        (gated or not)."""
        src, tgt, w, _, wg = self._connections()
        return src, tgt, w + wg

    def _connections(self) -> tuple[np.ndarray, ...]:
        """(source, target, w, w2, wg): every nonzero connection with its rate weight ``w`` (nA; 0 for a
        gated one), its variance weight ``w2`` (nA^2; NaN without a variance) and its gated weight ``wg``
        (nA; 0 for an ungated one). With gating the inter-column connections are gated."""
        with torch.no_grad():
            rows, cols, vals = self.intra_index()
            src, tgt, w = [_numpy(cols)], [_numpy(rows)], [_numpy(vals)]
            w2 = [np.full(len(w[0]), np.nan) if self.variance is None else _numpy(self.intra_index(
                self.variance.blocks)[2])]
            wg = [np.zeros(len(w[0]))]
            if self.edges is not None:
                src.append(_numpy(self.edges[0]))
                tgt.append(_numpy(self.edges[1]))
                edge = _numpy(self.edges[2]).astype(float)
                w.append(edge if self.gating is None else np.zeros(len(edge)))
                wg.append(np.zeros(len(edge)) if self.gating is None else edge)
                w2.append(np.full(len(edge), np.nan) if self.variance is None else
                          np.abs(edge) * _numpy(self.variance.edge_amplitude))
        src, tgt, w, w2, wg = (np.concatenate(x) for x in (src, tgt, w, w2, wg))
        keep = (w != 0) | (wg != 0)
        return (src[keep].astype(np.int64), tgt[keep].astype(np.int64), w[keep].astype(float),
                w2[keep].astype(float), wg[keep].astype(float))

    def input_drive(self, u: np.ndarray | torch.Tensor, variance: bool = False) -> np.ndarray:
        """Stimulus drive ``sum_k W_in,ik u_k`` (..., P), nA Hz, of input rates ``u`` (..., n_inputs), Hz.

        ``variance``: the drive of the input variance instead, ``sum_k W_in,ik J u_k`` (nA^2 Hz).
        """
        u = torch.as_tensor(u, dtype=torch.float64)
        drive = torch.zeros(u.shape[:-1] + (self.P,), dtype=torch.float64)
        if self.inputs is not None and u.shape[-1]:
            with torch.no_grad():
                ch, tgt, w = (x.cpu() for x in self.inputs)
                w = w.to(torch.float64) * (self.variance.input_amplitude if variance else 1.0)
                drive = drive.index_add(drive.ndim - 1, tgt, u[..., ch] * w)
        return drive.numpy()

    def initial(self, batch_size: int = 1, V: float = 0.0, A: float = 0.0) -> torch.Tensor:
        """A uniform initial state (B, 2P or 3P): V and A in mV; S (if any) at rest (:meth:`initial_variance`);
        G (if any) in equilibrium with the rates of that V and A (:meth:`SynapticGating.equilibrium`)."""
        y = torch.empty(batch_size, self.n_state, dtype=self.dtype, device=self.device)
        y[:, :self.P] = V
        y[:, self.P:2 * self.P] = A
        if self.variance is not None:
            y[:, 2 * self.P:3 * self.P] = self.initial_variance()
        if self.gating is not None:
            with torch.no_grad():
                y[:, -self.P:] = self.gating.equilibrium(self.rates(y))
        return y

    def _brian2_lines(self) -> tuple[list[str], dict[str, Any]]:
        """The neuron equations' declarations (rate, summed inputs, each variable and term) and the
        per-neuron parameter values (P,) with units."""
        lines: list[str] = list(self.transfer.brian2_rate()) + [BRIAN2_RATE[1]]
        values: dict[str, Any] = {}
        if self.inv_r_max is not None:  # r = f / (1 + f / r_max), with 1 / r_max = 0 where none is set
            lines[0:1] = list(BRIAN2_SATURATED_RATE)
            values["inv_r_max"] = _numpy(self.inv_r_max).astype(float) * _brian2_unit("second")
        factors = {t.factor for t in self.terms}
        for factor, extra in (("coupling", BRIAN2_COUPLING), ("input", BRIAN2_INPUT),
                              ("variance_coupling", BRIAN2_VARIANCE_COUPLING),
                              ("variance_input", BRIAN2_VARIANCE_INPUT), ("gated_coupling", BRIAN2_GATED_COUPLING)):
            if factor in factors:
                lines += extra
        for var in self.variables:
            names = [t.name for t in self.terms if t.variable == var]
            unit = VARIABLES[var]
            lines.append(f"d{var}/dt = {' + '.join(names) if names else f'0 * {unit} / second'} : {unit}")
        for t in self.terms:
            lines.append(f"{t.name} = {t.brian2} : {VARIABLES[t.variable]} / second")
            lines += t.parameters
            if t.values is not None:
                for name, (v, unit) in t.values(self).items():
                    values[name] = np.broadcast_to(_numpy(v).astype(float), (self.P,)) * _brian2_unit(unit)
        return lines, values

    def brian2(self, input_rates: np.ndarray | torch.Tensor | None = None,
               y0: np.ndarray | torch.Tensor | None = None) -> "Brian2Model":
        """The field as a Brian2 rate model (one neuron per population), with units.

        Parameters
        ----------
        input_rates : array, shape (T, B, n_inputs), optional
            Stimulus rates (Hz) of B trials on the Brian2 time grid (sample ``n`` holds
            for ``[n dt, (n + 1) dt)``). Default: no input, one trial.
        y0 : array, shape (nP,) or (B, nP), optional
            Initial ``[V, A]`` (mV), ``[V, A, S]`` (mV, mV^2) or ``[V, A, G]`` (mV, 1); default
            :meth:`initial`.

        Returns
        -------
        Brian2Model
        """
        if self.noise is not None:
            raise ValueError("this field carries a realisation of MembraneNoise, which the Brian2 view does not "
                             "export; build the field without noise (the exported model is deterministic)")
        quiet_brian2_parsing()
        import brian2 as b2

        P, n = self.P, self.n_state
        lines, values = self._brian2_lines()
        factors = {t.factor for t in self.terms}
        equations = b2.Equations("")
        for line in lines:
            equations = equations + b2.Equations(line)
        synapse_lines = (BRIAN2_SYNAPSE + (BRIAN2_VARIANCE_SYNAPSE if "variance_coupling" in factors else ())
                         + (BRIAN2_GATED_SYNAPSE if "gated_coupling" in factors else ()))
        synapse = b2.Equations("")
        for line in synapse_lines:
            synapse = synapse + b2.Equations(line)
        namespace = {k: getattr(self, k) * _brian2_unit(u) for k, u in BRIAN2_CONSTANTS.items()}
        # the transfer's namespace: its functions apart, its constants joined to the field's (the transfer's
        # win where both hold a name, e.g. the DMF's a, b, d: the rate is the transfer's, as in torch)
        functions: dict[str, Any] = {}
        for k, v in self.transfer.brian2_namespace().items():
            if isinstance(v, b2.Function):
                functions[k] = v
            else:
                namespace[k] = v
        u = np.zeros((1, 1, 0)) if input_rates is None else _numpy(input_rates).astype(float)
        if u.ndim != 3:
            raise ValueError(f"input_rates must have shape (T, B, n_inputs), got {u.shape}")
        B = u.shape[1]
        y = _numpy(self.initial(1)) if y0 is None else _numpy(y0).astype(float).reshape(-1, n)
        if y.shape[0] not in (1, B):
            raise ValueError(f"y0 has {y.shape[0]} trials, the input {B}")
        y = np.array(np.broadcast_to(y, (B, n)))
        rf = _numpy(self.rates(torch.as_tensor(y, dtype=torch.float64)))
        src, tgt, w, w2, wg = self._connections()
        initial = {"V": y[:, :P] * b2.mV, "A": y[:, P:2 * P] * b2.mV, "rf": rf * b2.Hz}
        extra: dict[str, Any] = {}
        if self.variance is not None:
            initial["S"] = y[:, 2 * P:3 * P] * b2.mV ** 2
            extra = {"weight2": w2 * b2.nA ** 2, "drive2": self.input_drive(u, variance=True) * b2.nA ** 2 * b2.Hz}
        if self.gating is not None:
            initial["G"] = y[:, -P:]
            extra["weight_gated"] = wg * b2.nA
        return Brian2Model(lines=tuple(lines), equations=equations, synapse_lines=synapse_lines,
                           synapse_model=synapse, namespace=namespace, values=values, initial=initial,
                           source=src, target=tgt, weight=w * b2.nA,
                           drive=self.input_drive(u) * b2.nA * b2.Hz, n_populations=P, n_trials=B,
                           functions=functions, transfer=self.transfer, **extra)


_INDEX_CACHE: dict[tuple, tuple[torch.Tensor, ...]] = {}


class FusedOperators:
    """The field in the scaled form of the fused solver's hot loop.

    With y = [V, A] (B, 2P), x = V - A, z = d (a x - b), r = f(x) = g(z) / d and
    g(z) = z / (1 - e^-z), every term of the field is linear in the state, in r or
    constant, so one evaluation is::

        w = y Mw + d b               Mw = -d a [I; -I]          (w = -z)
        g = w / expm1(w)                                        (= d r)
        g = g / (1 + g sat)          sat = 1 / (d r_max)        (only where a saturation is set)
        k = g Wg + drive_k + y * c   Wg = [coupling and rate terms of V | ... of A] / d

    and its transposed Jacobian-vector product (the backward pass) is
    ``(dk/dy)^T q = q * c - (g'(z) * (q Wg^T)) Mw^T``.

    Attributes
    ----------
    Mw : torch.Tensor, shape (2P, P)
    Wg : torch.Tensor, shape (P, 2P)
        Differentiable: the solver returns its cotangent.
    c : torch.Tensor, shape (2P,)
        State coefficients (constants), 1/s.
    db : torch.Tensor
        The scalar d b.
    drive : torch.Tensor, shape (B or 1, K, 2P)
        Constant drive of each stimulus segment, mV/s; differentiable.
    """

    def __init__(self, Mw, Wg, c, db, drive, a: float, b: float, d: float, sat: torch.Tensor | None = None) -> None:
        self.Mw, self.Wg, self.c, self.db, self.drive = Mw, Wg, c, db, drive
        self.a, self.b, self.d = a, b, d
        self.sat = sat
        self.P = Mw.shape[1]

    def stage(self, Y: torch.Tensor, drive_k: torch.Tensor, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write k = F(Y) into ``out`` (B, 2P); return w and g of the stage (for the backward pass)."""
        w = torch.addmm(self.db, Y, self.Mw)
        g = _saturate_g(_g(w), self.sat)
        torch.addmm(drive_k, g, self.Wg, out=out).addcmul_(Y, self.c)
        return w, g

    def slope(self, w: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """g'(z) at z = -w from w and g (stages of a step at once); saturated, dg/dz of the saturated g."""
        return _slope_g(w, g, self.sat)

    def vjp(self, q: torch.Tensor, S: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """Write ``(dF/dy)^T q`` into ``out`` (B, 2P): q (B, 2P), S = g'(z) of the stage (B, P)."""
        if not hasattr(self, "_WgT"):
            self._WgT, self._MwT = self.Wg.T.contiguous(), self.Mw.T.contiguous()
        sz = torch.mm(q, self._WgT).mul_(S)  # dL/dz;  dL/dY = q c + (dL/dw) Mw^T,  dL/dw = -dL/dz
        return torch.addmm(q * self.c, sz, self._MwT, alpha=-1.0, out=out)

    def jvp(self, v: torch.Tensor, S: torch.Tensor) -> torch.Tensor:
        """``(dF/dy) v`` (B, 2P) for a tangent v (B, 2P) at a state whose g'(z) is S (B, P)."""
        return torch.mm(-S * torch.mm(v, self.Mw), self.Wg) + v * self.c

    def grad_Wg(self, g: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        """Cotangent of Wg, sum over stages and trials of g^T q: g (..., P), q (..., 2P)."""
        return g.reshape(-1, self.P).T @ q.reshape(-1, 2 * self.P)

    @property
    def params(self) -> tuple[torch.Tensor, ...]:
        """The differentiable tensors of the stage (besides the drive): ``(Wg,)``."""
        return (self.Wg,)

    def grad_params(self, g: torch.Tensor, q: torch.Tensor, needs: Sequence[bool]) -> tuple:
        """Cotangents of :attr:`params` from every stage's g (..., P) and dL/dk q (..., 2P)."""
        return (self.grad_Wg(g, q) if needs[0] else None,)

    def potential(self, w: torch.Tensor) -> torch.Tensor:
        """x = V - A (mV) from w = -d (a x - b)."""
        return (self.b - w / self.d) / self.a


class SparseFusedOperators:
    """The fused solver's operators of a sparse field: 8 x 8 blocks plus an edge list.

    The same evaluation as :class:`FusedOperators` with the dense products replaced by
    their sparse forms (y = [V, A], x = V - A, w = -z = d a (A - V) + d b, g = d f(x))::

        k_v = C_v(g) + g * rate_v + drive_k,v + Y_v * c_v          v = V, A
        C_v(g)[area] = g[area].view(B, n_columns, n) @ blocks_v[area]   (one batched matmul)
                     + scatter_add(targets, g[:, sources] * w_v)          (inter-column edges)

    so an evaluation costs O(B (8 P + E)) for P populations and E edges. Its transposed
    Jacobian-vector product swaps sources and targets and transposes the blocks; the
    parameter cotangents are sums over stages and trials of ``g_source * q_target``.

    Attributes
    ----------
    blocks : list of (torch.Tensor or None)
        Per variable, the intra-column blocks ``[source, target]`` (n_areas, n, n), over d.
    w_edges : list of (torch.Tensor or None)
        Per variable, the inter-column edge weights (E,), over d; differentiable.
    rates : list of (torch.Tensor or None)
        Per variable, the coefficient of the population's own rate (P,), over d.
    src, tgt : torch.Tensor or None
        Source and target populations of the edges (long, E).
    c, db, drive, P
        As in :class:`FusedOperators`.
    """

    def __init__(self, layout, n, c, db, drive, a: float, b: float, d: float, blocks, src, tgt, w_edges, rates,
                 edge_product: str = "index_add", sat: torch.Tensor | None = None) -> None:
        if edge_product not in EDGE_PRODUCTS:
            raise ValueError(f"edge_product must be one of {EDGE_PRODUCTS}, not {edge_product!r}")
        self.layout, self.n = tuple(layout), n
        self.c, self.db, self.drive, self.sat = c, db, drive, sat
        self.a, self.b, self.d, self.da = a, b, d, d * a
        self.P = P = c.shape[0] // 2
        self.blocks, self.rates = list(blocks), list(rates)
        self.src, self.tgt = src, tgt
        self.w_edges = [None if src is None else w for w in w_edges]
        self.edge_product = edge_product
        self._single = len(self.layout) == 1 and self.layout[0][0] == 0
        # detached copies for the hot loop (the autograd Function sees the originals)
        self._blk = [None if x is None else x.detach() for x in self.blocks]
        self._blkT = [None if x is None else x.detach().transpose(1, 2).contiguous() for x in self.blocks]
        self._rate = [None if x is None else x.detach().contiguous() for x in self.rates]
        self._csr: list = [None, None]
        self._csrT: list = [None, None]
        if src is not None and edge_product == "csr":
            with warnings.catch_warnings():  # "CSR support is in beta"
                warnings.simplefilter("ignore", UserWarning)
                for v, w in enumerate(self.w_edges):
                    if w is not None:
                        self._csr[v] = _csr(tgt, src, w.detach(), P)
                        self._csrT[v] = _csr(src, tgt, w.detach(), P)
        self._w = [None if w is None else w.detach() for w in self.w_edges]
        slots = []
        for name, group in (("blocks", self.blocks), ("w_edges", self.w_edges), ("rates", self.rates)):
            for v, x in enumerate(group):
                if x is not None:
                    slots.append((name, v))
        self._slots = slots

    @property
    def params(self) -> tuple[torch.Tensor, ...]:
        """The differentiable tensors of the stage besides the drive (blocks, edge weights, rates)."""
        return tuple(getattr(self, name)[v] for name, v in self._slots)

    def _blockwise(self, g: torch.Tensor, blk: torch.Tensor) -> torch.Tensor:
        B, n = g.shape[0], self.n
        if self._single:
            return torch.matmul(g.reshape(-1, n), blk[0]).view(B, -1)
        parts = [torch.matmul(g[:, f:f + m * n].reshape(-1, n), blk[i]).view(B, -1)
                 for i, (f, m) in enumerate(self.layout)]
        return torch.cat(parts, 1)

    def _couple(self, g: torch.Tensor, v: int, transpose: bool = False) -> torch.Tensor | None:
        """C_v(g) (B, P), or its transpose C_v^T(g); None if the variable has no coupling."""
        blk = (self._blkT if transpose else self._blk)[v]
        w = self._w[v]
        if blk is None and w is None:
            return None
        u = self._blockwise(g, blk) if blk is not None else torch.zeros_like(g)
        if w is not None:
            if self.edge_product == "csr":
                m = (self._csrT if transpose else self._csr)[v]
                u.add_(torch.sparse.mm(m, g.T).T)
            else:
                src, tgt = (self.tgt, self.src) if transpose else (self.src, self.tgt)
                u.index_add_(1, tgt, g.index_select(1, src).mul_(w))
        return u

    def stage(self, Y: torch.Tensor, drive_k: torch.Tensor, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write k = F(Y) into ``out`` (B, 2P); return w and g of the stage (for the backward pass)."""
        P = self.P
        w = torch.sub(Y[:, P:], Y[:, :P]).mul_(self.da).add_(self.db)
        g = _saturate_g(_g(w), self.sat)
        self._add_rate_terms(torch.mul(Y, self.c, out=out).add_(drive_k), g)
        return w, g

    def _add_rate_terms(self, out: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """Add the terms driven by g (coupling and rate terms of dV and dA) to ``out`` (B, 2P), in place."""
        P = self.P
        for v in (0, 1):
            o = out[:, v * P:(v + 1) * P]
            u = self._couple(g, v)
            if u is not None:
                o.add_(u)
            if self._rate[v] is not None:
                o.addcmul_(g, self._rate[v])
        return out

    def slope(self, w: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """g'(z) at z = -w from w and g (stages of a step at once); saturated, dg/dz of the saturated g."""
        return _slope_g(w, g, self.sat)

    def _dg(self, q: torch.Tensor) -> torch.Tensor:
        """dL/dg (B, P) from dL/dk q (B, 2P): the transposed coupling and rate terms."""
        P = self.P
        out = None
        for v in (0, 1):
            qv = q[:, v * P:(v + 1) * P]
            u = self._couple(qv, v, transpose=True)
            if self._rate[v] is not None:
                u = qv * self._rate[v] if u is None else u.addcmul_(qv, self._rate[v])
            if u is not None:
                out = u if out is None else out.add_(u)
        return torch.zeros_like(q[:, :P]) if out is None else out

    def vjp(self, q: torch.Tensor, S: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """Write ``(dF/dy)^T q`` into ``out`` (B, 2P): q (B, 2P), S = g'(z) of the stage (B, P)."""
        P = self.P
        sz = self._dg(q).mul_(S).mul_(self.da)  # dL/dz d a;  dL/dV = q_V c_V + d a dL/dz, dL/dA = ... - d a dL/dz
        torch.mul(q, self.c, out=out)
        out[:, :P].add_(sz)
        out[:, P:].sub_(sz)
        return out

    def jvp(self, v: torch.Tensor, S: torch.Tensor) -> torch.Tensor:
        """``(dF/dy) v`` (B, 2P) for a tangent v (B, 2P) at a state whose g'(z) is S (B, P)."""
        P = self.P
        dg = torch.sub(v[:, :P], v[:, P:]).mul_(self.da).mul_(S)
        return self._add_rate_terms(v * self.c, dg)

    def grad_params(self, g: torch.Tensor, q: torch.Tensor, needs: Sequence[bool]) -> tuple:
        """Cotangents of :attr:`params` from every stage's g (..., P) and dL/dk q (..., 2P).

        Edge weights: ``sum g[..., source] q[..., target]``, in chunks of stages so that the
        gathered products stay within about 2^22 numbers.
        """
        P, n = self.P, self.n
        g = g.reshape(-1, P)
        q = q.reshape(-1, 2 * P)
        out = []
        for (name, v), need in zip(self._slots, needs):
            if not need:
                out.append(None)
                continue
            qv = q[:, v * P:(v + 1) * P]
            if name == "blocks":
                out.append(torch.stack([g[:, f:f + m * n].reshape(-1, n).T @ qv[:, f:f + m * n].reshape(-1, n)
                                        for f, m in self.layout]))
            elif name == "rates":
                out.append((g * qv).sum(0))
            else:
                E = self.src.numel()
                chunk = max(1, (1 << 22) // max(E, 1))
                acc = torch.zeros(E, dtype=g.dtype, device=g.device)
                for i in range(0, g.shape[0], chunk):
                    acc.add_((g[i:i + chunk].index_select(1, self.src) * qv[i:i + chunk].index_select(1, self.tgt))
                             .sum(0))
                out.append(acc)
        return tuple(out)

    def potential(self, w: torch.Tensor) -> torch.Tensor:
        """x = V - A (mV) from w = -d (a x - b)."""
        return (self.b - w / self.d) / self.a


def _csr(rows: torch.Tensor, cols: torch.Tensor, values: torch.Tensor, P: int) -> torch.Tensor:
    """A P x P CSR matrix with ``values`` at (rows, cols) (duplicates summed)."""
    coo = torch.sparse_coo_tensor(torch.stack([rows, cols]), values, (P, P), check_invariants=False)
    return coo.coalesce().to_sparse_csr()


def _g(w: torch.Tensor) -> torch.Tensor:
    """g = w / expm1(w) = z / (1 - e^-z) = d f (z = -w), in 3 operations (hot loop).

    Overflow-free: for w >> 0 (z << 0), expm1 = inf and g = +0 (the exact value
    underflows). At w = 0 the quotient is 0/0, replaced by the limit 1; a NaN ``w`` also
    maps to 1 here, but it stays in the state, where the divergence checks see it.
    """
    return torch.div(w, torch.expm1(w)).nan_to_num_(nan=1.0)


def _saturate_g(g: torch.Tensor, sat: torch.Tensor | None) -> torch.Tensor:
    """g / (1 + g sat) in place (sat = 1 / (d r_max), 0 where none); g itself without a saturation."""
    return g if sat is None else g.div_(torch.mul(g, sat).add_(1.0))


def _slope_g(w: torch.Tensor, g: torch.Tensor, sat: torch.Tensor | None) -> torch.Tensor:
    """dg/dz (z = -w) from w and g, where g may be saturated: ``g_raw'(z) / (1 + g_raw sat)^2``.

    The raw ``g_raw = w / expm1(w)`` is recomputed from ``w`` (recovering it from the saturated
    ``g`` would cancel where ``g_raw sat`` is large, in float32 especially).
    """
    if sat is None:
        return g_slope(torch.neg(w), g)
    raw = _g(w)
    return g_slope(torch.neg(w), raw) / torch.mul(raw, sat).add_(1.0).square_()


@dataclass
class Brian2Model:
    """A :class:`Field` as Brian2 objects' ingredients, with units (see :meth:`Field.brian2`).

    One copy of the network has ``n_populations`` neurons; a run of ``n_trials`` trials
    uses one copy per trial in one ``NeuronGroup`` (:meth:`for_trials`).

    Attributes
    ----------
    lines : tuple of str
        The neuron equations, one Brian2 declaration each; ``equations`` is their
        ``brian2.Equations`` composition.
    synapse_lines, synapse_model
        The synapse model (``w : amp``, ``I_rec_post = w * r_pre : amp * Hz (summed)``).
    namespace : dict
        Constants with units (shared by the group and the synapses).
    values : dict
        Per-neuron parameters (P,) with units (``kappa``, ``W_bg``, ...).
    initial : dict
        Initial ``V``, ``A``, ``rf`` (B, P) with units.
    source, target : np.ndarray
        Connections (population indices of one copy).
    weight : Quantity (amp)
        Their weights.
    drive : Quantity, shape (T, B, P), amp*Hz
        Stimulus drive of every trial on the Brian2 grid (the ``drive_ta`` TimedArray).
    functions : dict
        The transfer's Brian2 ``Function`` objects by name (e.g. ``siegert_rate``); empty for the DMF.
    weight2, drive2 : Quantity or None
        Fields with the input variance ``S``: the variance weights ``w2`` (amp**2) of the
        connections and the variance drive (T, B, P; amp**2*Hz, the ``drive2_ta`` TimedArray).
    weight_gated : Quantity or None
        Fields with gating ``G``: the gated weights ``wg`` (amp) of the connections (the
        inter-column ones; their ``w`` is 0).
    transfer : Transfer or None
        The field's transfer (its constants rebuild ``functions`` outside colplugin).
    """

    lines: tuple[str, ...]
    equations: Any
    synapse_lines: tuple[str, ...]
    synapse_model: Any
    namespace: dict[str, Any]
    values: dict[str, Any]
    initial: dict[str, Any]
    source: np.ndarray
    target: np.ndarray
    weight: Any
    drive: Any
    n_populations: int
    n_trials: int
    drive_name: str = BRIAN2_DRIVE
    functions: dict[str, Any] = field(default_factory=dict)
    weight2: Any = None
    drive2: Any = None
    drive2_name: str = BRIAN2_DRIVE2
    transfer: Any = None
    weight_gated: Any = None

    def for_trials(self) -> dict[str, Any]:
        """Values for one group of ``n_trials`` copies: neuron i of copy k is ``k * P + i``.

        Returns ``values`` and ``initial`` (B P,), ``source``, ``target``, ``weight`` (per
        copy, offset), ``drive`` (T, B P).
        """
        B, P = self.n_trials, self.n_populations
        off = np.repeat(np.arange(B) * P, len(self.source))
        T = self.drive.shape[0]
        out = {"values": {k: np.tile(np.asarray(v), B) * _unit_of(v) for k, v in self.values.items()},
               "initial": {k: np.asarray(v).reshape(-1) * _unit_of(v) for k, v in self.initial.items()},
               "source": np.tile(self.source, B) + off, "target": np.tile(self.target, B) + off,
               "weight": np.tile(np.asarray(self.weight), B) * _unit_of(self.weight),
               "drive": np.asarray(self.drive).reshape(T, B * P) * _unit_of(self.drive)}
        if self.weight2 is not None:
            out["weight2"] = np.tile(np.asarray(self.weight2), B) * _unit_of(self.weight2)
            out["drive2"] = np.asarray(self.drive2).reshape(T, B * P) * _unit_of(self.drive2)
        if self.weight_gated is not None:
            out["weight_gated"] = np.tile(np.asarray(self.weight_gated), B) * _unit_of(self.weight_gated)
        return out


def _unit_of(q):
    """The SI unit of a Brian2 quantity (1 for dimensionless)."""
    quiet_brian2_parsing()
    import brian2 as b2

    return b2.Quantity(1.0, dim=b2.get_dimensions(q))
