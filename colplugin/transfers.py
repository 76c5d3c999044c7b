"""Transfer functions of a column's populations: the rate as a function of the input statistics.

A :class:`Transfer` is the one place a transfer function lives, with one implementation per
target, as a Brian2 ``Function`` carries one per code-generation target: its value and slope
in torch (the field, autograd, torchdiffeq), whether the fused Runge-Kutta loop and its
compiled kernel implement it, its Brian2 form (equations and namespace with units, functions
with numpy and C++ implementations), and its parameters with units.

* :class:`DMFTransfer`: the paper's f of the input mean alone (dL25, Evers23),
  ``f(x) = (a x - b) / (1 - exp(-d (a x - b)))`` with ``x = V - A``.
* :class:`SiegertTransfer`: the LIF neuron's stationary rate under the input's mean ``V`` and
  white-noise variance ``S`` (:mod:`colplugin.siegert`), with the adaptation ``A`` entering as
  a shift of the threshold (as the spiking twin's adaptive threshold does). Its field carries
  the variance as a third state (:mod:`colplugin.field`).

:func:`transfer_for` picks the transfer a parameter set names (``transfer = "dmf"`` or
``"siegert"``).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch

from .siegert import SIGMA_FLOOR_MV, fourcaud_brunel_shift, siegert, siegert_value

__all__ = ["Transfer", "DMFTransfer", "SiegertTransfer", "transfer_for", "TRANSFERS",
           "transfer", "transfer_value", "transfer_numpy", "slope", "g_slope"]

_SERIES_Z = 1e-2  # |z| below which the derivative uses its Taylor series
_TINY = {dt: torch.finfo(dt).tiny for dt in (torch.float16, torch.bfloat16, torch.float32, torch.float64)}


#: Elements per piece in which the CPU evaluates f and f' of a large tensor (:func:`_in_pieces`).
_PIECE = 1 << 14

#: A faster evaluation of the DMF's f(V - A) for large tensors, ``fn(V, A or None, a, b, d)``
#: returning the rates or None where it does not apply; the solver's compiled kernel installs
#: its own (:func:`colplugin.solve.compiled.dmf_rates`) through :func:`use_fast_dmf`.
_FAST_DMF: list[Callable[..., torch.Tensor | None]] = []


def use_fast_dmf(fn: Callable[..., torch.Tensor | None]) -> None:
    """Let ``fn(V, A, a, b, d)`` (A None: f(V)) evaluate the DMF's f of large tensors where it returns rates."""
    _FAST_DMF[:] = [fn]


def _fast_dmf(V: torch.Tensor, A: torch.Tensor | None, a: float, b: float, d: float) -> torch.Tensor | None:
    return _FAST_DMF[0](V, A, a, b, d) if _FAST_DMF else None


def _in_pieces(fn: Callable[..., torch.Tensor], *xs: torch.Tensor) -> torch.Tensor:
    """``fn(*xs)`` of same-shaped tensors, elementwise, in pieces of about :data:`_PIECE` elements on the CPU.

    An elementwise formula of a dozen steps makes as many temporaries of the input's size; for a
    recorded trajectory (millions of numbers) each is fresh memory, and the steps run at memory
    speed. In pieces along the first dimension (views, whatever the strides) the temporaries
    stay in cache and the numbers are the same. Small tensors, other devices and tensors
    recorded by autograd go in one piece.
    """
    x0 = xs[0]
    if (x0.device.type != "cpu" or x0.dim() == 0 or x0.numel() <= 4 * _PIECE
            or (torch.is_grad_enabled() and any(x.requires_grad for x in xs))
            or any(x.shape != x0.shape for x in xs)):
        return fn(*xs)
    rows = max(1, _PIECE * x0.shape[0] // x0.numel())
    first = fn(*(x[:rows] for x in xs))
    out = torch.empty(x0.shape, dtype=first.dtype)  # the dtype fn gives (type promotion), whatever the size
    out[:rows] = first
    for i in range(rows, x0.shape[0], rows):
        out[i:i + rows] = fn(*(x[i:i + rows] for x in xs))
    return out


# -- the DMF's f ----------------------------------------------------------------------------
def transfer_value(x: torch.Tensor, a: float, b: float, d: float) -> torch.Tensor:
    """f(x) without autograd support (see :func:`transfer`): the forward formula alone.

    Large CPU tensors go through the compiled kernel's loop where it builds
    (:func:`colplugin.solve.compiled.dmf_rates`), otherwise through tensor operations in pieces.
    """
    r = _fast_dmf(x, None, a, b, d)
    return _in_pieces(lambda xi: _transfer_value(xi, a, b, d), x) if r is None else r


def _transfer_value(x: torch.Tensor, a: float, b: float, d: float) -> torch.Tensor:
    z = d * (a * x - b)
    az = z.abs().clamp_min(_TINY[z.dtype])
    # z > 0: z / (1 - e^-z);  z < 0: |z| e^z / (1 - e^z);  z = 0: the limit 1 (az / -expm1(-az))
    return az * torch.exp(z.clamp(max=0.0)) / (torch.expm1(-az) * (-d))


def transfer_numpy(x, a: float, b: float, d: float):
    """f(x) = (a x - b) / (1 - exp(-d (a x - b))) for numpy arrays (Hz), via ``scipy.special.exprel``.

    ``1 / (d exprel(-d (a x - b)))``: the form the Brian2 equations use, finite at a x = b.
    For scipy ODE solves and reference models (e.g. Wong & Wang's H, the same function
    with other constants).
    """
    from scipy.special import exprel

    return 1.0 / (d * exprel(-d * (a * x - b)))


def g_slope(z: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """g'(z) of g(z) = z / (1 - e^-z) from z and g(z), without autograd support.

    g' = g (1 + z - g) / z; for |z| < 0.01, where that quotient cancels, the Taylor series
    1/2 + z/6 - z^3/180. Branch-free (no host synchronisation on GPUs).
    """
    small = z.abs() < _SERIES_Z
    zs = torch.where(small, torch.ones_like(z), z)
    return torch.where(small, 0.5 + z / 6.0 - z ** 3 / 180.0, g * (1.0 + zs - g) / zs)


def slope(x: torch.Tensor, f: torch.Tensor, a: float, b: float, d: float) -> torch.Tensor:
    """f'(x) (Hz/mV) from x and f(x) = transfer(x), without autograd support: f' = a g'(z),
    z = d (a x - b), g = d f (see :func:`g_slope`)."""
    return _in_pieces(lambda xi, fi: _slope(xi, fi, a, b, d), x, f)


def _slope(x: torch.Tensor, f: torch.Tensor, a: float, b: float, d: float) -> torch.Tensor:
    return a * g_slope(d * (a * x - b), d * f)


class _Transfer(torch.autograd.Function):
    """f with an analytic derivative: exact near the removable singularity, and cheaper."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, a: float, b: float, d: float) -> torch.Tensor:
        f = transfer_value(x, a, b, d)
        ctx.save_for_backward(x, f)
        ctx.abd = (a, b, d)
        return f

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        x, f = ctx.saved_tensors
        a, b, d = ctx.abd
        if grad_out.shape != x.shape:
            return grad_out * slope(x, f, a, b, d), None, None, None
        grad_x = _in_pieces(lambda gi, xi, fi: gi * _slope(xi, fi, a, b, d), grad_out, x, f)
        return grad_x, None, None, None


def transfer(x: torch.Tensor, a: float, b: float, d: float) -> torch.Tensor:
    """Transfer function f(x) = y / (1 - exp(-d y)), y = a x - b (rate in Hz).

    Exact and overflow-free for every finite ``x``: with ``z = d y`` it is evaluated as
    ``|z| exp(min(z, 0)) / (d (1 - exp(-|z|)))`` using ``expm1``, which equals
    ``y / (1 - e^-z)`` for ``z > 0``, ``y e^z / (e^z - 1)`` for ``z < 0`` (no exponential
    of a large positive number) and its limit ``1 / d`` at the removable singularity
    ``a x = b``. The derivative ``a g'(z)``, ``g(z) = z / (1 - e^-z)``, is analytic
    (Taylor series ``1/2 + z/6 - z^3/180`` for ``|z| < 0.01``).

    Parameters
    ----------
    x : torch.Tensor
        Input potential in mV.
    a : float
        Gain in Hz/mV.
    b : float
        Threshold in Hz.
    d : float
        Noise factor in s.

    Returns
    -------
    torch.Tensor
        Rate in Hz.
    """
    return _Transfer.apply(x, a, b, d)


#: The DMF rate as a Brian2 equation (``exprel``: finite at ``a x = b``).
DMF_BRIAN2_RATE = "r = 1 / (d * exprel(-d * (a * (V - A) - b))) : Hz"


# -- transfer objects -------------------------------------------------------------------------
class Transfer(ABC):
    """A population's rate as a function of its state, for every backend at once.

    Attributes
    ----------
    name : str
        Identifier (``"dmf"``, ``"siegert"``), as a parameter set's ``transfer`` names it.
    needs_variance : bool
        Whether the rate depends on the input variance ``S`` (mV^2), so that the field carries
        ``S`` as a third state variable (``y = [V, A, S]``).
    fused : bool
        Whether the fused Runge-Kutta loop and its compiled kernel implement this transfer;
        where they do not, ``simulate`` integrates with torchdiffeq and says so.
    monotone : bool
        Whether the rate depends on the state through x = V - A alone and increases with it, so
        that a trajectory's largest rate is the rate of its largest x (``simulate`` checks for
        runaway rates without evaluating every recorded one).
    """

    name: str = ""
    #: How reports name the rate model of this transfer ("DMF", "LIF column"), and what it is in a phrase.
    label: str = "rate model"
    description: str = ""
    needs_variance: bool = False
    fused: bool = False
    monotone: bool = False

    @abstractmethod
    def rate(self, V: torch.Tensor, A: torch.Tensor, S: torch.Tensor | None = None) -> torch.Tensor:
        """Rates (Hz), differentiable, from the membrane state V, adaptation A (mV) and variance S (mV^2)."""

    def numpy(self, V, A, S=None) -> np.ndarray:
        """Rates (Hz) for numpy arrays, float64."""
        t = lambda x: None if x is None else torch.as_tensor(np.asarray(x, dtype=float))
        with torch.no_grad():
            return self.rate(t(V), t(A), t(S)).numpy()

    @abstractmethod
    def constants(self) -> dict[str, float]:
        """The transfer's parameters (internal units: mV, s, Hz)."""

    @abstractmethod
    def brian2_rate(self) -> tuple[str, ...]:
        """Brian2 declarations of ``r`` (Hz) from ``V``, ``A`` (and ``S``)."""

    @abstractmethod
    def brian2_namespace(self) -> dict[str, Any]:
        """Constants and functions the Brian2 rate equation uses, with units."""

    def to_dict(self) -> dict[str, Any]:
        """Plain-type description (name and constants)."""
        return {"name": self.name, **self.constants()}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v:g}" for k, v in self.constants().items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash(tuple(sorted(self.to_dict().items())))


class DMFTransfer(Transfer):
    """The DMF's f of the input mean (dL25, Evers23): ``r = f(V - A)``, ``f`` of :func:`transfer`.

    Parameters
    ----------
    a : float
        Gain, Hz/mV.
    b : float
        Threshold, Hz.
    d : float
        Noise factor, s.
    """

    name = "dmf"
    label = "DMF"
    description = "the dynamic mean field: the paper's f of the input mean"
    needs_variance = False
    fused = True

    def __init__(self, a: float, b: float, d: float) -> None:
        self.a, self.b, self.d = float(a), float(b), float(d)

    @property
    def monotone(self) -> bool:  # f(x) = y / (1 - e^(-d y)), y = a x - b, increases with x for a, d > 0
        return self.a > 0 and self.d > 0

    def rate(self, V, A, S=None):
        if torch.is_grad_enabled() and (V.requires_grad or A.requires_grad):
            return transfer(V - A, self.a, self.b, self.d)
        r = _fast_dmf(V, A, self.a, self.b, self.d)
        return _in_pieces(lambda v, a: _transfer_value(v - a, self.a, self.b, self.d), V, A) if r is None else r

    def numpy(self, V, A, S=None):
        return np.asarray(transfer_numpy(np.asarray(V, dtype=float) - np.asarray(A, dtype=float),
                                         self.a, self.b, self.d), dtype=float)

    def constants(self) -> dict[str, float]:
        return {"a": self.a, "b": self.b, "d": self.d}

    def brian2_rate(self) -> tuple[str, ...]:
        return (DMF_BRIAN2_RATE,)

    def brian2_namespace(self) -> dict[str, Any]:
        import brian2 as b2

        return {"a": self.a * b2.Hz / b2.mV, "b": self.b * b2.Hz, "d": self.d * b2.second}


#: The C++ implementation of :func:`colplugin.siegert.siegert_value` (Brian2 cpp_standalone).
_CPP_FILE = Path(__file__).with_name("_siegert.cpp")


def siegert_c_code(source: str, theta: float, V_r: float, tau_m: float, t_ref: float, c: float,
                   sigma_floor: float) -> str:
    """``source`` (the text of ``_siegert.cpp``) and a wrapper ``siegert_rate(mu, s2, shift)`` that calls
    ``colplugin_siegert`` with these constants as ``repr`` literals (the same doubles)."""
    return (source + "\n" + "static inline double siegert_rate(double mu, double s2, double shift) { return "
            f"colplugin_siegert(mu, s2, shift, {theta!r}, {V_r!r}, {tau_m!r}, {t_ref!r}, {c!r}, {sigma_floor!r}); }}\n")


def cython_extern(c_code: str, name: str, n_args: int) -> str:
    """Cython code that makes the C function ``double name(double, ...)`` defined in ``c_code`` callable:
    the C text verbatim in a ``cdef extern from *`` block (Brian2's Cython support code)."""
    if '"""' in c_code or "\\" in c_code:
        raise ValueError("the C code cannot be embedded verbatim: it contains triple quotes or backslashes")
    body = "\n".join(("        " + line).rstrip() for line in c_code.splitlines())
    args = ", ".join(["double"] * n_args)
    return f'cdef extern from *:\n    """\n{body}\n    """\n    double {name}({args}) nogil\n'


class SiegertTransfer(Transfer):
    """The LIF neuron's stationary rate at the input's mean and variance (Siegert, Fourcaud-Brunel).

    ``r = siegert(V, S, A)`` (:func:`colplugin.siegert.siegert`): V is the mean free membrane
    potential relative to rest (mV), S Brunel's white-noise variance ``s^2`` (mV^2) and A the
    adaptive threshold's shift (mV); the reset stays at ``V_r``.

    Parameters
    ----------
    theta : float
        Threshold relative to rest (``V_th - E_L``), mV.
    V_r : float
        Reset relative to rest (``V_reset - E_L``), mV.
    tau_m : float
        Membrane time constant, s.
    t_ref : float
        Refractory period, s.
    tau_s : float
        Synaptic time constant, s (the Fourcaud-Brunel shift).
    sigma_floor : float
        Floor of ``s`` (mV), default :data:`colplugin.siegert.SIGMA_FLOOR_MV`.
    """

    name = "siegert"
    label = "LIF column"
    description = "the LIF mean field: the Siegert rate of the input mean and variance"
    needs_variance = True
    fused = False

    def __init__(self, theta: float, V_r: float, tau_m: float, t_ref: float, tau_s: float,
                 sigma_floor: float = SIGMA_FLOOR_MV) -> None:
        self.theta, self.V_r = float(theta), float(V_r)
        self.tau_m, self.t_ref, self.tau_s = float(tau_m), float(t_ref), float(tau_s)
        self.sigma_floor = float(sigma_floor)
        if not self.theta > self.V_r:
            raise ValueError(f"SiegertTransfer: the threshold ({self.theta:g} mV above rest) must lie above the "
                             f"reset ({self.V_r:g} mV); check V_th, V_reset and E_L")
        for k in ("tau_m", "tau_s", "sigma_floor"):
            if not (getattr(self, k) > 0 and math.isfinite(getattr(self, k))):
                raise ValueError(f"SiegertTransfer: {k} must be positive and finite, got {getattr(self, k)!r}")
        if not (self.t_ref >= 0 and math.isfinite(self.t_ref)):
            raise ValueError(f"SiegertTransfer: t_ref must be >= 0 s, got {self.t_ref!r}")

    @property
    def shift(self) -> float:
        """The Fourcaud-Brunel bound shift ``c`` (dimensionless; in units of ``s``)."""
        return fourcaud_brunel_shift(self.tau_s, self.tau_m)

    def _kw(self) -> dict[str, float]:
        return dict(theta=self.theta, V_r=self.V_r, tau_m=self.tau_m, t_ref=self.t_ref, tau_s=self.tau_s,
                    sigma_floor=self.sigma_floor)

    def rate(self, V, A, S=None):
        if S is None:
            raise ValueError("SiegertTransfer needs the input variance S (mV^2): the state [V, A, S]")
        return siegert(V, S, A, **self._kw())

    def value(self, V: torch.Tensor, A: torch.Tensor, S: torch.Tensor) -> torch.Tensor:
        """The rate without autograd support (Hz)."""
        return siegert_value(V, S, A, **self._kw())

    def constants(self) -> dict[str, float]:
        return {"theta": self.theta, "V_r": self.V_r, "tau_m": self.tau_m, "t_ref": self.t_ref,
                "tau_s": self.tau_s, "sigma_floor": self.sigma_floor}

    def brian2_rate(self) -> tuple[str, ...]:
        return ("r = siegert_rate(V / mV, S / mV**2, A / mV) * Hz : Hz",)

    def brian2_function(self):
        """``siegert_rate(mu_mV, s2_mV2, shift_mV)`` (Hz, dimensionless arguments) as a Brian2 ``Function``.

        Implementations: numpy (this module's torch code on the arrays, the runtime device with
        the ``numpy`` target), C++ (``_siegert.cpp``, for ``cpp_standalone``) and Cython (the same
        C source as verbatim C in a ``cdef extern from *`` block, the runtime ``cython`` target).
        The Cython one is registered explicitly: without it Brian2 2.9 refuses the ``cython``
        target for this function, or, once a numpy implementation has been registered (as a
        ``numpy`` run does), silently calls the Python code from Cython. The compiled ones get
        the constants as ``repr`` literals, which parse back to the same doubles.
        """
        import brian2 as b2

        kw = self._kw()

        def pyfunc(mu, s2, shift):
            mu, s2, shift = np.broadcast_arrays(np.asarray(mu, dtype=float), np.asarray(s2, dtype=float),
                                                np.asarray(shift, dtype=float))
            # one thread: the arrays hold one value per neuron, and torch's thread pool costs more
            # than it saves (measured 0.4 ms a call against 15 ms with two threads on busy cores)
            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                with torch.no_grad():
                    return siegert_value(torch.from_numpy(np.ascontiguousarray(mu)),
                                         torch.from_numpy(np.ascontiguousarray(s2)),
                                         torch.from_numpy(np.ascontiguousarray(shift)), **kw).numpy()
            finally:
                torch.set_num_threads(threads)

        f = b2.Function(pyfunc, arg_units=[1, 1, 1], return_unit=1, arg_types=["float", "float", "float"],
                        return_type="float")
        code = self.brian2_c_code()
        f.implementations.add_implementation("cpp", code=code, name="siegert_rate")
        f.implementations.add_implementation("cython", code=cython_extern(code, "siegert_rate", 3),
                                             name="siegert_rate")
        return f

    def brian2_c_code(self) -> str:
        """C/C++ source defining ``double siegert_rate(double mu, double s2, double shift)`` with this
        transfer's constants (``_siegert.cpp`` plus a one-line wrapper)."""
        return siegert_c_code(_CPP_FILE.read_text(), self.theta, self.V_r, self.tau_m, self.t_ref, self.shift,
                              self.sigma_floor)

    def brian2_namespace(self) -> dict[str, Any]:
        return {"siegert_rate": self.brian2_function()}


#: The transfers a parameter set may name.
TRANSFERS = ("dmf", "siegert")


def transfer_for(params: Mapping[str, Any]) -> Transfer:
    """The transfer a parameter set names (its ``transfer`` entry; ``"dmf"`` when absent).

    ``"dmf"``: :class:`DMFTransfer` from ``a``, ``b``, ``d``. ``"siegert"``:
    :class:`SiegertTransfer` from the LIF neuron of the set (``V_th``, ``V_reset``, ``E_L``,
    ``tau_m``, ``t_ref``, ``tau_s``) and its ``sigma_floor``.
    """
    name = params["transfer"] if "transfer" in params else "dmf"
    if name == "dmf":
        return DMFTransfer(params["a"], params["b"], params["d"])
    if name == "siegert":
        floor = params["sigma_floor"] if "sigma_floor" in params else SIGMA_FLOOR_MV
        return SiegertTransfer(params["V_th"] - params["E_L"], params["V_reset"] - params["E_L"], params["tau_m"],
                               params["t_ref"], params["tau_s"], floor)
    raise ValueError(f"unknown transfer {name!r}; use one of {', '.join(TRANSFERS)}")
