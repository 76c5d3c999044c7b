"""Networks of laminar columns: areas, fixed intra-column blocks, learnable projections.

A :class:`ColumnNetwork` holds areas of columns. Every column carries the fixed
8x8 intra-column block of its area (never trained); only the projections *between*
columns (and from external inputs) are learnable. A learnable weight keeps the sign of
its source population (Dale's law) by construction::

    w = sign(source) * unit * softplus(theta)

with ``unit`` the projection's initial magnitude ``init`` (nA), so the free parameters
``theta`` start near ``softplus^-1(1) = 0.54`` and an optimiser step changes a weight by
a similar fraction of its initial size in every projection.

Inter-column weights are stored as edge lists (source index, target index, weight), so
memory grows with the number of connections, never with (8 x columns)^2. The equations
live in :mod:`colplugin.field`: :meth:`ColumnNetwork.field` hands the network's arrays to a
:class:`~colplugin.field.Field`, which every backend (torch, fused, Brian2) uses.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ._io import check_memory
from .column import background_weights, column_sizes, input_weights, intra_column_weights, synaptic_strengths
from .field import (DENSE_MAX_POPULATIONS, FUSED_UNSUPPORTED_FACTORS, Field, InputVariance, SynapticGating,
                    inverse_r_max, state_rates)
from .transfers import Transfer, transfer_for
from .params import ParameterError, Params
from .params.names import LAYERS, CELL_TYPES, N_POP, POPULATIONS, SIGNS, pop_indices

__all__ = ["Area", "Projection", "Lateral", "Feedforward", "Feedback", "Input", "ColumnNetwork"]

#: Fewest neurons a population may keep per column when an area is split among its columns
#: (PD14's in-degree formula needs N_i N_j >= 1).
MIN_NEURONS_PER_COLUMN = 1.0


def _unknown_keys(where: str, given: Iterable[Any], allowed: Sequence[str], required: Sequence[str] = (),
                  aliases: Mapping[str, str] | None = None) -> None:
    """Refuse unknown (or missing) keys of a spec mapping, with a did-you-mean; ``where`` names the mapping."""
    given = list(given)
    for key in given:
        if key in allowed:
            continue
        guess = (aliases or {}).get(str(key)) or next(iter(difflib.get_close_matches(str(key), allowed, n=1)), None)
        hint = f" (did you mean {guess!r}?)" if guess else ""
        raise ParameterError(f"{where}: unknown key {key!r}{hint}; the keys are {', '.join(allowed)}")
    missing = [k for k in required if k not in given]
    if missing:
        raise ParameterError(f"{where}: missing key(s) {', '.join(map(repr, missing))} (required: "
                             f"{', '.join(required)}; optional: {', '.join(k for k in allowed if k not in required)})")


#: Keys of an area in a network spec, of a projection and of an input (``Projection.to_dict``, ``Input.to_dict``).
AREA_KEYS = ("kind", "n_columns", "split")
PROJECTION_KEYS = ("kind", "source", "target", "source_pops", "target_pops", "columns", "learnable", "init",
                   "jitter", "name")
INPUT_KEYS = ("kind", "target", "channels", "to", "learnable", "init", "jitter", "name")
#: Keys of a network spec (:meth:`ColumnNetwork.spec`); ``network_class``/``field_class`` name a subclass.
SPEC_KEYS = ("params", "areas", "projections", "dtype", "seed", "network_class", "field_class")
#: Spec values of ``dtype`` (the default first).
SPEC_DTYPES = ("float64", "float32")
#: Keys people write for a projection's weight magnitude.
_KEY_ALIASES = {"weight": "init", "weights": "init", "w": "init", "columns_pairs": "columns", "pairs": "columns"}


def _below(x: float, limit: float = MIN_NEURONS_PER_COLUMN) -> str:
    """``x`` (< ``limit``) with enough significant digits that the text is below ``limit`` too (0.9997, not 1)."""
    for digits in range(3, 18):
        text = f"{x:.{digits}g}"
        if float(text) < limit:
            return text
    return repr(x)


def area_from_dict(name: str, d: Any) -> "Area":
    """An :class:`Area` from its spec form ``{"kind", "n_columns", "split"}``; unknown keys are refused."""
    if not isinstance(d, Mapping):
        raise ParameterError(f"area {name!r}: give {{'kind': ..., 'n_columns': ..., 'split': ...}}, got {d!r}")
    _unknown_keys(f"area {name!r}", d, AREA_KEYS, ("kind",))
    return Area(**d)


@dataclass(frozen=True)
class Area:
    """An area: ``n_columns`` columns of one area type (a key of ``params.areas``).

    Parameters
    ----------
    kind : str
        Area type, e.g. ``"mt"`` (population sizes from the parameter set).
    n_columns : int
        Number of columns.
    split : bool
        dL25 rule: split the area's neurons among its columns (N / n per column), which
        changes the in-degrees. ``False`` gives every column the full N.
    """

    kind: str
    n_columns: int = 1
    split: bool = True

    def to_dict(self) -> dict[str, Any]:
        """Plain-type form (``Area(**d)`` rebuilds it)."""
        return {"kind": self.kind, "n_columns": self.n_columns, "split": self.split}


#: Kinds of :class:`Projection` (``kind=``): what built it, used in its default name.
PROJECTION_KINDS: tuple[str, ...] = ("projection", "lateral", "feedforward", "feedback", "input")


def _is_number(x: Any) -> bool:
    """A real number that is not a bool (``True`` is an int to Python, never a number here)."""
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, (bool, np.bool_))


def _check_init(what: str, init: Any, learnable: bool, sign_note: str) -> None:
    """Refuse an ``init`` that is not a finite, non-negative weight magnitude (nA)."""
    if not _is_number(init):
        raise TypeError(f"{what}: init={init!r} ({type(init).__name__}) is not a number; init is the initial "
                        "weight magnitude in nA, e.g. init=8.78")
    if not math.isfinite(init):
        raise ValueError(f"{what}: init={init!r} is not finite; init is the initial weight magnitude in nA, "
                         "a finite number >= 0, e.g. init=8.78")
    if init < 0:
        raise ValueError(f"{what}: init={init!r} is negative, but init is a weight magnitude in nA: the weight's "
                         f"sign comes from its source (Dale's law; {sign_note}). Give init={-float(init):g} (the "
                         "magnitude); the sign cannot be chosen")
    if init == 0 and learnable:
        raise ValueError(f"{what}: init=0 with learnable=True: a learnable weight is init * softplus(theta), "
                         "so it would stay 0 for ever. Give init > 0 (e.g. init=8.78), or learnable=False for "
                         "a projection switched off")


def _check_jitter(what: str, jitter: Any) -> None:
    if not _is_number(jitter) or not math.isfinite(jitter):
        raise TypeError(f"{what}: jitter={jitter!r} is not a finite number; jitter is the relative spread of the "
                        "initial magnitudes, init * U(1 - jitter, 1 + jitter), in [0, 1], e.g. jitter=0.5")
    if not 0 <= jitter <= 1:
        why = ("a spread cannot be negative" if jitter < 0
               else "above 1 it draws negative magnitudes, weights of the wrong sign")
        raise ValueError(f"{what}: jitter={jitter!r} is outside [0, 1]: jitter is the relative spread of the "
                         f"initial magnitudes, init * U(1 - jitter, 1 + jitter), and {why}. Give a jitter in "
                         "[0, 1] (0: every weight exactly init)")


def _check_pops(what: str, arg: str, pops: Any) -> None:
    try:
        idx = pop_indices(pops)
    except (KeyError, TypeError) as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
        raise ValueError(f"{what}: {arg}={pops!r}: {msg}") from None
    if not idx:
        raise ValueError(f"{what}: {arg}={pops!r} names no population, so the projection would connect "
                         f"nothing; give at least one of {', '.join(POPULATIONS)}, e.g. {arg}=['L23E']")


def _softplus_inv(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=float)
    return np.where(x > 20, x, np.log(np.expm1(np.clip(x, 1e-12, 20))))


@dataclass
class Projection:
    """A set of inter-column connections between source and target populations.

    Parameters
    ----------
    source, target : str
        Source and target area names (for ``Input`` the source is the input channels).
    source_pops, target_pops : sequence of str
        Populations connected (every source population to every target population).
    columns : {"all", "same", "different"} or array of shape (m, 2)
        Which (source column, target column) pairs are connected: every pair, only the
        same column index, only different columns (same area), or an explicit list.
    learnable : bool
        Whether the weights are trained. Fixed weights are set to ``init``.
    init : float
        Initial weight magnitude in nA: finite and >= 0 (> 0 where learnable). The sign of
        every weight comes from its source population (Dale's law), so a negative ``init``
        is refused, never read as a sign.
    jitter : float
        Relative uniform jitter of the initial magnitudes: ``init * U(1 - jitter, 1 + jitter)``,
        in [0, 1] (above 1 magnitudes could turn negative).
    name : str, optional
        Unique name; defaults to ``"kind:source->target"``.
    kind : str
        One of :data:`PROJECTION_KINDS` (what built it; part of the default name).

    Raises
    ------
    ValueError, TypeError
        At construction: no source or target population, an unknown population or kind, an
        ``init`` that is negative, NaN or inf, a ``jitter`` outside [0, 1].
    """

    source: str
    target: str
    source_pops: Sequence[str]
    target_pops: Sequence[str]
    columns: Any = "all"
    learnable: bool = True
    init: float = 8.78
    jitter: float = 0.5
    name: str | None = None
    kind: str = "projection"

    def __post_init__(self) -> None:
        if self.kind not in PROJECTION_KINDS:
            raise ValueError(f"Projection({self.source!r}, {self.target!r}): kind={self.kind!r} is not a projection "
                             f"kind; use one of {', '.join(map(repr, PROJECTION_KINDS))} (or leave it out: "
                             "'projection')")
        what = f"projection {self.label!r}"
        if not isinstance(self.learnable, (bool, np.bool_)):
            raise TypeError(f"{what}: learnable={self.learnable!r} must be True or False")
        _check_jitter(what, self.jitter)
        _check_pops(what, "target_pops", self.target_pops)
        if self.kind == "input":
            if not isinstance(self, Input):
                raise ValueError(f"{what}: kind='input' is for Input(target, ...); use Input for external "
                                 "input channels")
            return  # Input checks its own init (None: the thalamic weights)
        _check_pops(what, "source_pops", self.source_pops)
        signs = {float(SIGNS[i]) for i in pop_indices(self.source_pops)}
        pops = list(self.source_pops) if not isinstance(self.source_pops, str) else [self.source_pops]
        note = (f"source_pops={pops!r} " + ("are excitatory, so the weights are positive" if signs == {1.0} else
                                            "are inhibitory, so the weights are negative" if signs == {-1.0} else
                                            "mix excitatory and inhibitory populations, each keeping its sign"))
        _check_init(what, self.init, bool(self.learnable), note)

    def column_pairs(self, n_source: int, n_target: int) -> np.ndarray:
        """(m, 2) array of connected (source column, target column) pairs."""
        if isinstance(self.columns, str):
            s, t = np.meshgrid(np.arange(n_source), np.arange(n_target), indexing="ij")
            pairs = np.stack([s.ravel(), t.ravel()], axis=1)
            if self.columns == "all":
                return pairs
            if self.columns == "same":
                return pairs[pairs[:, 0] == pairs[:, 1]]
            if self.columns == "different":
                return pairs[pairs[:, 0] != pairs[:, 1]]
            raise ValueError(f"projection {self.label!r}: columns={self.columns!r} is not one of "
                             "'all', 'same', 'different' or an (m, 2) array of column pairs")
        pairs = np.asarray(self.columns, dtype=np.int64).reshape(-1, 2)
        if pairs.size and (pairs[:, 0].min() < 0 or pairs[:, 0].max() >= n_source
                           or pairs[:, 1].min() < 0 or pairs[:, 1].max() >= n_target):
            raise ValueError(f"projection {self.label!r}: column pairs out of range "
                             f"(source has {n_source} columns, target {n_target})")
        return pairs

    @property
    def label(self) -> str:
        return self.name or f"{self.kind}:{self.source}->{self.target}"

    def edges(self, net: "ColumnNetwork") -> tuple[np.ndarray, np.ndarray]:
        """Global (source, target) population indices of every connection."""
        ns, nt = net.area_columns(self.source), net.area_columns(self.target)
        pairs = self.column_pairs(ns, nt)
        sp, tp = pop_indices(self.source_pops), pop_indices(self.target_pops)
        src, tgt = [], []
        for a in sp:
            for b in tp:
                src.append(net.column_offset(self.source) + pairs[:, 0] * N_POP + a)
                tgt.append(net.column_offset(self.target) + pairs[:, 1] * N_POP + b)
        return (np.concatenate(src) if src else np.zeros(0, np.int64),
                np.concatenate(tgt) if tgt else np.zeros(0, np.int64))

    def to_dict(self) -> dict[str, Any]:
        """Plain-type form for network specs and checkpoints."""
        cols = self.columns if isinstance(self.columns, str) else np.asarray(self.columns).tolist()
        return {"kind": self.kind, "source": self.source, "target": self.target,
                "source_pops": list(self.source_pops), "target_pops": list(self.target_pops),
                "columns": cols, "learnable": self.learnable, "init": self.init,
                "jitter": self.jitter, "name": self.name}

    @staticmethod
    def from_dict(d: Mapping[str, Any]) -> "Projection":
        """Rebuild a projection (or an :class:`Input`) from :meth:`to_dict` output."""
        if not isinstance(d, Mapping):
            raise ParameterError(f"a projection must be a mapping of its keys ({', '.join(PROJECTION_KEYS)}), "
                                 f"got {type(d).__name__} {d!r}")
        d = dict(d)
        kind = d.get("kind", "projection")
        label = d.get("name") or (f"input:{d.get('target')}" if kind == "input" else
                                  f"{kind}:{d.get('source')}->{d.get('target')}")
        if kind == "input":
            _unknown_keys(f"projection {label!r}", d, INPUT_KEYS, ("target",), _KEY_ALIASES)
            return Input(d["target"], channels=d.get("channels"), to=d.get("to", "one_to_one"),
                         learnable=d.get("learnable", False), init=d.get("init"), jitter=d.get("jitter", 0.0),
                         name=d.get("name"))
        _unknown_keys(f"projection {label!r}", [k for k in d if k != "channels"], PROJECTION_KEYS,
                      ("source", "target", "source_pops", "target_pops"), _KEY_ALIASES)
        proj = Projection(**{k: v for k, v in d.items() if k != "channels"})
        return proj


def Lateral(area: str, *, self_excitation: bool = True, columns: Any = "different",
            learnable: bool = True, init: float = 8.78, jitter: float = 0.5,
            name: str | None = None) -> list[Projection]:
    """Lateral projections within an area (dL25).

    L2/3E of one column -> L2/3I of other columns (``columns``: ``"different"`` or an
    explicit (m, 2) array of column pairs), and, with ``self_excitation``, L2/3E -> L2/3E
    within each column. Returns one or two :class:`Projection` objects.
    """
    base = name or f"lateral:{area}"
    out = [Projection(area, area, ["L23E"], ["L23I"], columns, learnable, init, jitter,
                      f"{base}:cross", "lateral")]
    if self_excitation:
        out.append(Projection(area, area, ["L23E"], ["L23E"], "same", learnable, init, jitter,
                              f"{base}:self", "lateral"))
    return out


def Feedforward(source: str, target: str, *, columns: Any = "all", learnable: bool = True,
                init: float = 8.78, jitter: float = 0.5, name: str | None = None) -> Projection:
    """Feedforward projection: L2/3E of a lower area -> L4E and L4I of a higher area."""
    return Projection(source, target, ["L23E"], ["L4E", "L4I"], columns, learnable, init, jitter,
                      name, "feedforward")


def Feedback(source: str, target: str, *, columns: Any = "all", learnable: bool = True,
             init: float = 8.78, jitter: float = 0.5, name: str | None = None) -> Projection:
    """Feedback projection: L2/3E and L5E of a higher area -> all non-L4 populations of a lower one."""
    return Projection(source, target, ["L23E", "L5E"], ["L23E", "L23I", "L5E", "L5I", "L6E", "L6I"],
                      columns, learnable, init, jitter, name, "feedback")


class Input(Projection):
    """External input channels -> L4E and L4I of an area's columns (thalamic-like, excitatory).

    Parameters
    ----------
    target : str
        Area that receives the input.
    channels : sequence of int, optional
        Stimulus channels used. Default: the next free channels, one per column
        (``to="one_to_one"``) or a single one (``to="all"``).
    to : {"one_to_one", "all"}
        Channel k drives column k, or every channel drives every column.
    learnable : bool
        Fixed inputs use the thalamic weights ``K_in * J_E`` (25.9 nA into L4E, 16.3 nA
        into L4I for the presets); learnable ones start there (times the jitter).
    init : float, optional
        Weight magnitude in nA instead of the thalamic weights: finite and >= 0 (inputs
        are excitatory, so the weights are positive).
    jitter : float
        Relative jitter of the initial magnitudes, in [0, 1] (default 0).
    """

    def __init__(self, target: str, channels: Sequence[int] | None = None, to: str = "one_to_one",
                 learnable: bool = False, init: float | None = None, jitter: float = 0.0,
                 name: str | None = None) -> None:
        if to not in ("one_to_one", "all"):
            raise ValueError(f"Input(to={to!r}): use 'one_to_one' or 'all'")
        if init is not None:
            _check_init(f"Input({target!r})", init, bool(learnable),
                        "an input is excitatory (thalamic), so its weights are positive")
        super().__init__("input", target, [], ["L4E", "L4I"], "all", learnable,
                         float("nan") if init is None else init, jitter, name, "input")
        if channels is not None:
            number = (int, float, np.integer, np.floating)
            bad = [c for c in channels if isinstance(c, bool) or not isinstance(c, number)
                   or not float(c).is_integer() or c < 0]
            if bad:
                raise ValueError(f"Input({target!r}): input channels are whole numbers >= 0 (the stimulus' columns "
                                 f"0, 1, ...), got {bad}")
        self.channels = None if channels is None else [int(c) for c in channels]
        self.to = to

    @property
    def label(self) -> str:
        return self.name or f"input:{self.target}"

    def resolve_channels(self, n_columns: int, first_free: int) -> list[int]:
        """The stimulus channels this input reads (explicit, or the next free ones)."""
        if self.channels is not None:
            if self.to == "one_to_one" and len(self.channels) != n_columns:
                raise ValueError(f"{self.label}: one_to_one needs one channel per column "
                                 f"({n_columns}), got {self.channels}")
            return self.channels
        n = n_columns if self.to == "one_to_one" else 1
        return list(range(first_free, first_free + n))

    def edges_in(self, net: "ColumnNetwork", channels: list[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(channel, target population, target population type) of every input connection."""
        nt = net.area_columns(self.target)
        if self.to == "one_to_one":
            pairs = np.array([(channels[c], c) for c in range(nt)], dtype=np.int64)
        else:
            pairs = np.array([(k, c) for k in channels for c in range(nt)], dtype=np.int64)
        src, tgt, pop = [], [], []
        for b in pop_indices(self.target_pops):
            src.append(pairs[:, 0])
            tgt.append(net.column_offset(self.target) + pairs[:, 1] * N_POP + b)
            pop.append(np.full(len(pairs), b))
        return np.concatenate(src), np.concatenate(tgt), np.concatenate(pop)

    def to_dict(self) -> dict[str, Any]:
        """Plain-type form for network specs and checkpoints."""
        return {"kind": "input", "target": self.target, "channels": self.channels, "to": self.to,
                "learnable": self.learnable, "init": None if math.isnan(self.init) else self.init,
                "jitter": self.jitter, "name": self.name}


def _flatten(projections: Iterable[Any]) -> list[Projection]:
    out: list[Projection] = []
    for p in projections:
        if isinstance(p, (list, tuple)):
            out.extend(_flatten(p))
        elif isinstance(p, Projection):
            out.append(p)
        elif isinstance(p, Mapping):
            out.append(Projection.from_dict(p))
        else:
            raise TypeError(f"not a projection: {p!r}; use Lateral, Feedforward, Feedback, Input "
                            "or Projection")
    return out


def _qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _check_network_args(params: Any, dtype: Any, seed: Any, areas: Any) -> None:
    """Refuse :class:`ColumnNetwork` arguments of the wrong kind (TypeError or ValueError naming the fix).

    Parameters
    ----------
    params : Params
    dtype : torch.dtype
        torch.float32 or torch.float64.
    seed : int or None
        A whole number in [0, 2**63).
    areas : mapping
        At least one area.
    """
    if not isinstance(params, Params):
        raise TypeError(f"params must be a colplugin Params (load_preset(...)), got {type(params).__name__}")
    if dtype not in (torch.float32, torch.float64):
        raise TypeError(f"dtype={dtype!r}: a ColumnNetwork computes in torch.float32 or torch.float64 (default) "
                        "only (half precision and integers cannot hold the solver's arithmetic); pass "
                        "dtype=torch.float64 or dtype=torch.float32")
    if seed is not None and (not isinstance(seed, (int, np.integer)) or isinstance(seed, (bool, np.bool_))
                             or not 0 <= int(seed) < 2 ** 63):
        raise ValueError(f"seed={seed!r} ({type(seed).__name__}): the seed must be a whole number in "
                         "[0, 2**63), e.g. seed=0, or None (a fresh draw each time)")
    if not isinstance(areas, Mapping) or not areas:
        raise ValueError("a ColumnNetwork needs at least one area, given as a mapping {name: (kind, n_columns)}, "
                         f"e.g. areas={{'mt': ('mt', 1)}}; got {areas!r}")


def _checked_area(name: Any, a: Any, params: Params) -> Area:
    """The :class:`Area` of one ``areas`` entry (an Area, a dict or a (kind, n_columns[, split]) tuple).

    Raises
    ------
    ValueError
        For another form, a number of columns that is not a positive integer, a ``split``
        that is not a bool, or an area kind ``params`` does not know.
    """
    if isinstance(a, Area):
        area = a
    elif isinstance(a, Mapping):
        area = area_from_dict(name, a)
    elif isinstance(a, (tuple, list)) and len(a) in (2, 3):
        area = Area(*a)
    else:
        raise ValueError(f"area {name!r}: give Area(kind, n_columns) or (kind, n_columns), got {a!r}")
    if (isinstance(area.n_columns, (bool, np.bool_)) or not isinstance(area.n_columns, (int, np.integer))
            or area.n_columns < 1):
        raise ValueError(f"area {name!r}: n_columns must be a positive integer (a number of columns), got "
                         f"{area.n_columns!r} ({type(area.n_columns).__name__}); e.g. {name!r}: "
                         f"({area.kind!r}, 1)")
    if not isinstance(area.split, (bool, np.bool_)):
        raise ValueError(f"area {name!r}: split must be True (neurons split among the columns) or False, "
                         f"got {area.split!r}")
    params.area_sizes(area.kind)  # raises a clear error for unknown area types
    return area


class ColumnNetwork(nn.Module):
    """A network of laminar cortical columns with learnable inter-column projections.

    Parameters
    ----------
    params : Params
        Parameter set (:func:`colplugin.load_preset`).
    areas : mapping
        ``{name: Area | (kind, n_columns)}``, e.g. ``{"lower": ("mt", 2), "upper": ("mt", 1)}``.
        With the tuple form the dL25 rule applies (neurons split among the columns).
    projections : sequence
        :class:`Projection` objects (or lists of them, as :func:`Lateral` returns).
    dtype, device : optional
        Floating-point type, ``torch.float64`` (default) or ``torch.float32`` (others are
        refused), and device of all tensors.
    seed : int, optional
        Seed for the initial learnable weights (independent of the global RNG), a whole
        number in [0, 2**63).

    Notes
    -----
    The state of the ODE is ``y = [V, A]`` of shape (batch, 2 * n_populations), mV.
    Population ``p`` of column ``c`` (global column index) has index ``8 c + p``.
    """

    def __init__(self, params: Params, areas: Mapping[str, Any],
                 projections: Sequence[Any] = (), *, dtype: torch.dtype = torch.float64,
                 device: torch.device | str | None = None, seed: int | None = None) -> None:
        super().__init__()
        _check_network_args(params, dtype, seed, areas)
        self.params = params
        self.areas: dict[str, Area] = {}
        for name, a in areas.items():
            self.areas[str(name)] = _checked_area(name, a, params)
        self._offsets: dict[str, int] = {}
        n = 0
        for name, area in self.areas.items():
            self._offsets[name] = n
            n += area.n_columns
        self.n_columns = n
        self.n_populations = n * N_POP
        self.projections = _flatten(projections)
        self._check_projections()
        self._check_column_sizes()
        check_memory(self.memory_estimate(),
                     f"a network of {self.n_columns} columns and "
                     f"{sum(not isinstance(p, Input) for p in self.projections)} projection(s)",
                     "use fewer columns, projections between fewer column pairs ('same' or a pair list), "
                     "or a machine with more memory")
        self.seed = int(seed) if seed is not None else None  # a numpy integer too (spec() writes it as JSON)
        gen = torch.Generator().manual_seed(self.seed) if seed is not None else None
        self._build(gen, dtype)
        if device is not None:
            self.to(device)

    def _check_projections(self) -> None:
        """Refuse repeated projection names and projections between areas the network lacks."""
        labels = [p.label for p in self.projections]
        dup = {lab for lab in labels if labels.count(lab) > 1}
        if dup:
            raise ValueError(f"projection names must be unique; repeated: {sorted(dup)} (pass name=...)")
        for p in self.projections:
            for a in ([p.target] if isinstance(p, Input) else [p.source, p.target]):
                if a not in self.areas:
                    raise ValueError(f"projection {p.label!r} refers to unknown area {a!r}; "
                                     f"areas of this network: {', '.join(self.areas)}")

    def _check_column_sizes(self) -> None:
        """Refuse an area split into columns with less than one neuron in a population.

        PD14's in-degree formula (eq. 1, :func:`colplugin.column.in_degrees`) needs
        ``N_i N_j >= 1``; a population of less than one neuron per column has no meaning.
        """
        for name, area in self.areas.items():
            if not area.split:
                continue
            full = np.asarray(self.params.area_sizes(area.kind), dtype=float)
            smallest = int(np.argmin(full))
            per_column = full[smallest] / area.n_columns
            if per_column < MIN_NEURONS_PER_COLUMN:
                limit = int(full[smallest] // MIN_NEURONS_PER_COLUMN)
                raise ValueError(
                    f"area {name!r} ({area.kind}) split into {area.n_columns} columns leaves "
                    f"{POPULATIONS[smallest]} with {full[smallest]:g}/{area.n_columns} = {_below(per_column)} "
                    f"neurons per column; the in-degree formula needs at least {MIN_NEURONS_PER_COLUMN:g}. Use at "
                    f"most {limit} columns (--columns; a spec's \"n_columns\"), or --full (a spec's \"split\": "
                    "false: every column keeps the area's neuron counts) (Python: Area(..., split=False))")

    def memory_estimate(self) -> float:
        """Bytes the network needs once built: its per-column tensors and its projections' edges.

        Per column about 700 B (measured: 650-980 B per column at 10^4-10^6 columns); per
        connection of a projection (a pair of populations of two connected columns) about
        64 B (indices, weights and their sparse operators).
        """
        edges = 0.0
        for p in self.projections:
            if isinstance(p, Input):
                continue
            ns, nt = float(self.areas[p.source].n_columns), float(self.areas[p.target].n_columns)
            if isinstance(p.columns, str):
                pairs = {"all": ns * nt, "same": min(ns, nt), "different": ns * nt - min(ns, nt)}.get(p.columns, 0.0)
            else:
                pairs = float(np.asarray(p.columns).size // 2)
            edges += pairs * len(pop_indices(p.source_pops)) * len(pop_indices(p.target_pops))
        return 700.0 * self.n_columns + 64.0 * edges

    # -- layout -------------------------------------------------------------------
    def area_columns(self, area: str) -> int:
        """Number of columns of an area."""
        try:
            return self.areas[area].n_columns
        except KeyError:
            raise KeyError(f"unknown area {area!r}; areas of this network: {', '.join(self.areas)}") from None

    def column_offset(self, area: str) -> int:
        """Global index of the first population of an area."""
        self.area_columns(area)
        return self._offsets[area] * N_POP

    def index(self, area: str, column: int, population: str | int) -> int:
        """Global population index of (area, column, population).

        Raises
        ------
        KeyError
            An unknown area or population.
        IndexError
            ``column`` outside ``0 .. n_columns - 1`` (negative indices are refused, not
            counted from the end).
        """
        nc = self.area_columns(area)
        if isinstance(column, bool) or not isinstance(column, (int, np.integer)):
            raise TypeError(f"column must be an integer in 0..{nc - 1} (area {area!r} has {nc} column(s)), "
                            f"got {column!r}")
        if not 0 <= column < nc:
            raise IndexError(f"column {column} does not exist: area {area!r} has {nc} column(s), "
                             f"indices 0..{nc - 1} (negative indices are not counted from the end)")
        return self.column_offset(area) + int(column) * N_POP + pop_indices(population)[0]

    @property
    def channels(self) -> list[dict[str, Any]]:
        """One record per population: area, area kind, column, population, layer, cell type."""
        out = []
        for name, area in self.areas.items():
            for c in range(area.n_columns):
                for p in range(N_POP):
                    out.append({"area": name, "kind": area.kind, "column": c, "population": POPULATIONS[p],
                                "layer": LAYERS[p], "cell_type": CELL_TYPES[p]})
        return out

    @property
    def channel_names(self) -> list[str]:
        """``"area[column].population"`` for every population."""
        return [f"{c['area']}[{c['column']}].{c['population']}" for c in self.channels]

    @property
    def n_inputs(self) -> int:
        """Number of stimulus channels the network reads."""
        return self._n_inputs

    # -- construction -------------------------------------------------------------
    def _build(self, gen: torch.Generator | None, dtype: torch.dtype) -> None:
        p = self.params
        self.transfer: Transfer = transfer_for(p)
        blocks, strengths = [], []
        for area in self.areas.values():
            N = column_sizes(p, area.kind, area.n_columns, area.split)
            blocks.append(np.asarray(intra_column_weights(p, N)))
            strengths.append(np.asarray(synaptic_strengths(p, N)))
        self.register_buffer("W_intra", torch.tensor(np.stack(blocks), dtype=dtype))
        # the synaptic amplitudes J (nA) of the intra-column blocks: the input variance's K J^2 = W J
        self.register_buffer("J_intra", torch.tensor(np.stack(strengths), dtype=dtype), persistent=False)
        bg = np.tile(np.asarray(background_weights(p)), self.n_columns)
        self.register_buffer("W_bg", torch.tensor(bg, dtype=dtype))
        self.register_buffer("kappa", torch.tensor(np.tile(p["kappa"], self.n_columns), dtype=dtype))
        # derived from the parameters, so not part of the state_dict (checkpoints stay loadable)
        self.register_buffer("V_offset", torch.tensor(np.tile(p["V_offset"], self.n_columns), dtype=dtype),
                             persistent=False)
        self.register_buffer("input_gain", torch.tensor(np.tile(p["input_gain"], self.n_columns), dtype=dtype),
                             persistent=False)
        self.register_buffer("r_max", torch.tensor(np.tile(p["r_max"], self.n_columns), dtype=dtype),
                             persistent=False)
        w_thal = np.asarray(input_weights(p))

        def draw(m: int, proj: Projection) -> np.ndarray:
            u = torch.rand(m, generator=gen, dtype=torch.float64).numpy() if m else np.zeros(0)
            return 1.0 + proj.jitter * (2.0 * u - 1.0)

        # recurrent inter-column edges; learnable ones first, then fixed
        rec = {True: [], False: []}
        inp = {True: [], False: []}
        first_free = 0
        self.slices: dict[str, tuple[str, bool, slice]] = {}
        for proj in self.projections:
            if isinstance(proj, Input):
                ch = proj.resolve_channels(self.area_columns(proj.target), first_free)
                first_free = max(first_free, max(ch) + 1)
                src, tgt, pop = proj.edges_in(self, ch)
                base = w_thal[pop] if math.isnan(proj.init) else np.full(len(src), proj.init)
                mag = base * draw(len(src), proj)
                inp[proj.learnable].append((proj, src, tgt, np.ones(len(src)), mag, base))
            else:
                src, tgt = proj.edges(self)
                sign = SIGNS[src % N_POP]
                mag = proj.init * draw(len(src), proj)
                rec[proj.learnable].append((proj, src, tgt, sign, mag, np.full(len(src), proj.init)))
        self._n_inputs = first_free

        def stack(groups: dict[bool, list], kind: str) -> None:
            pos = {True: 0, False: 0}
            cols = {True: ([], [], [], []), False: ([], [], [], [])}
            units: dict[bool, list] = {True: [], False: []}
            for learnable in (True, False):
                for proj, src, tgt, sign, mag, unit in groups[learnable]:
                    units[learnable].append(unit)
                    m = len(src)
                    self.slices[proj.label] = (kind, learnable, slice(pos[learnable], pos[learnable] + m))
                    pos[learnable] += m
                    for lst, arr in zip(cols[learnable], (src, tgt, sign, mag)):
                        lst.append(arr)
            cat = lambda lst, dt: (np.concatenate(lst) if lst else np.zeros(0)).astype(dt)
            s_l, t_l, g_l, m_l = (cat(x, d) for x, d in zip(cols[True], (np.int64, np.int64, float, float)))
            s_f, t_f, g_f, m_f = (cat(x, d) for x, d in zip(cols[False], (np.int64, np.int64, float, float)))
            self.register_buffer(f"{kind}_src", torch.tensor(np.concatenate([s_l, s_f]), dtype=torch.long))
            self.register_buffer(f"{kind}_tgt", torch.tensor(np.concatenate([t_l, t_f]), dtype=torch.long))
            u_l = np.concatenate(units[True]) if units[True] else np.zeros(0)
            self.register_buffer(f"{kind}_sign", torch.tensor(g_l, dtype=dtype))
            self.register_buffer(f"{kind}_unit", torch.tensor(g_l * u_l, dtype=dtype))
            self.register_buffer(f"{kind}_fixed", torch.tensor(g_f * m_f, dtype=dtype))
            theta = torch.tensor(_softplus_inv(m_l / u_l), dtype=dtype)
            setattr(self, f"{kind}_theta", nn.Parameter(theta, requires_grad=len(theta) > 0))

        stack(rec, "rec")
        stack(inp, "inp")

    # -- weights ------------------------------------------------------------------
    def _weights(self, kind: str) -> torch.Tensor:
        theta = getattr(self, f"{kind}_theta")
        fixed = getattr(self, f"{kind}_fixed")
        if theta.numel() == 0:
            return fixed
        learned = getattr(self, f"{kind}_unit") * F.softplus(theta)
        return torch.cat([learned, fixed]) if fixed.numel() else learned

    def learnable_parameters(self) -> list[nn.Parameter]:
        """The free parameters of the learnable projections (what training updates)."""
        return [t for t in (self.rec_theta, self.inp_theta) if t.numel() > 0]

    def projection_weights(self, name: str) -> dict[str, np.ndarray]:
        """Weights (nA) of one projection with their source and target labels.

        Returns
        -------
        dict
            ``weight`` (nA, signed), ``source`` and ``target`` (labels such as
            ``"lower[0].L23E"`` or ``"input[1]"``).
        """
        try:
            kind, learnable, sl = self.slices[name]
        except KeyError:
            raise KeyError(f"unknown projection {name!r}; projections: {', '.join(self.slices)}") from None
        with torch.no_grad():
            w = self._weights(kind)
        n_l = getattr(self, f"{kind}_theta").numel()
        idx = slice(sl.start, sl.stop) if learnable else slice(n_l + sl.start, n_l + sl.stop)
        src = getattr(self, f"{kind}_src")[idx].cpu().numpy()
        tgt = getattr(self, f"{kind}_tgt")[idx].cpu().numpy()
        names = self.channel_names
        src_names = [f"input[{s}]" for s in src] if kind == "inp" else [names[s] for s in src]
        return {"weight": w[idx].detach().cpu().numpy(), "source": src_names,
                "target": [names[t] for t in tgt], "learnable": learnable}

    def set_projection_weights(self, name: str, weights: np.ndarray | torch.Tensor | float) -> None:
        """Set the weights (nA, signed as Dale's law requires) of a projection."""
        kind, learnable, sl = self.slices[name]
        w = torch.as_tensor(weights, dtype=self.W_intra.dtype).expand(sl.stop - sl.start).cpu().numpy()
        if learnable:
            sign = getattr(self, f"{kind}_sign")[sl].cpu().numpy()
            if np.any(w * sign < 0):
                raise ValueError(f"{name}: weights violate Dale's law (source sign {sign[0]:+.0f})")
            unit = getattr(self, f"{kind}_unit")[sl].abs().cpu().numpy()
            theta = torch.tensor(_softplus_inv(np.abs(w) / unit), dtype=self.W_intra.dtype)
            with torch.no_grad():
                getattr(self, f"{kind}_theta")[sl] = theta.to(self.W_intra.device)
        else:
            with torch.no_grad():
                getattr(self, f"{kind}_fixed")[sl.start:sl.stop] = torch.as_tensor(w).to(self.W_intra)

    # -- the vector field ---------------------------------------------------------------
    #: The :class:`~colplugin.field.Field` class this network builds (a subclass adds terms).
    field_class: type[Field] = Field

    @property
    def dense_max_populations(self) -> int:
        """Largest network whose field couples densely by default (read-only; pass ``dense=`` to choose)."""
        return DENSE_MAX_POPULATIONS

    @property
    def gating(self) -> SynapticGating | None:
        """The synaptic gating of the inter-column projections (parameters ``gating``, ``tau_G``,
        ``gamma_G``), or None where the parameters have none (every shipped preset)."""
        p = self.params
        if p["gating"] == "none":
            return None
        return SynapticGating(float(p["tau_G"]), float(p["gamma_G"]))

    @property
    def state_variables(self) -> tuple[str, ...]:
        """The state's variables in order: ``("V", "A")``, plus ``"S"`` where the transfer needs the
        input variance, plus ``"G"`` where the network has synaptic gating."""
        return ("V", "A") + ("S",) * self.transfer.needs_variance + ("G",) * (self.params["gating"] != "none")

    @property
    def n_state(self) -> int:
        """Width of the state: P per state variable (:attr:`state_variables`): 2P or 3P."""
        return len(self.state_variables) * self.n_populations

    @property
    def fusable(self) -> bool:
        """Whether the fused solver integrates this network: the DMF transfer without synaptic gating, and
        no term of its field class of a factor the fused solver lacks (``FUSED_UNSUPPORTED_FACTORS``)."""
        return (self.transfer.fused and self.params["gating"] == "none"
                and not any(t.factor in FUSED_UNSUPPORTED_FACTORS for t in self.field_class.terms))

    def rates(self, y: torch.Tensor) -> torch.Tensor:
        """Instantaneous rates in Hz of a state ``y`` (:attr:`state_variables`): the transfer of the
        network's parameters (:mod:`colplugin.transfers`), saturated where ``r_max`` is set."""
        return state_rates(self.transfer, y, self.n_state // self.n_populations, inverse_r_max(self.r_max.to(y)))

    #: ``(scale, k_scale)`` of a downscaled spiking twin whose multapse variance the input variance
    #: includes (:meth:`input_variance`); None (default): the full-scale mean field, no multapses.
    multapses: tuple[float, float] | None = None

    def input_variance(self) -> InputVariance | None:
        """How the rates make each population's input variance (None where the transfer needs none).

        As the spiking twin's LIF neurons receive it (:mod:`colplugin.spiking.twin`): the
        intra-column synapses ``K_ij`` of amplitude ``J_ij`` with relative spread ``J_rel_sd``
        (``<J^2> = J^2 (1 + J_rel_sd^2)``); a learned weight ``W`` as ``|W| / J_E`` synapses of
        amplitude ``J_E`` with the same spread; an input channel of weight ``W_in`` as
        ``W_in / J_E`` Poisson sources of amplitude ``J_E``; the background as ``K_bg`` Poisson
        sources of amplitude ``J_E`` (none where the parameters' ``background`` is ``"dc"``).

        With :attr:`multapses` = ``(scale, k)``: the variance of the downscaled twin, whose
        ``k K`` synapses per neuron (weights ``J / sqrt(k)``) come from ``round(N scale)`` source
        neurons, so a source makes ``m ~ Poisson(lam)`` synapses onto a neuron (NEST's and
        Brian2's fixed total number), ``lam = k K / (N scale)``; their spikes coincide, and
        ``<(sum_m J)^2> = lam J^2 (1 + J_rel_sd^2 + lam)`` per source: ``1 + J_rel_sd^2`` becomes
        ``1 + J_rel_sd^2 + lam`` for recurrent synapses (Poisson inputs are independent sources).
        """
        if not self.transfer.needs_variance:
            return None
        p = self.params
        spread = 1.0 + float(p["J_rel_sd"]) ** 2
        J_E = float(p["J_E"])
        bg = self.W_bg * J_E if p["background"] == "poisson" else torch.zeros_like(self.W_bg)
        blocks, edge_amplitude = self.W_intra * self.J_intra * spread, J_E * spread
        if self.multapses is not None:
            scale, k = (float(x) for x in self.multapses)
            if not (0 < scale <= 1 and 0 < k <= 1):
                raise ValueError(f"multapses must be (scale, k_scale) of a twin, each in (0, 1], "
                                 f"got {self.multapses!r}")
            lam = []
            for area in self.areas.values():
                N = np.maximum(1, np.round(np.asarray(column_sizes(p, area.kind, area.n_columns, area.split)) * scale))
                lam.append(k / N)  # per source population; times K below
            lam_src = torch.as_tensor(np.stack(lam), dtype=self.W_intra.dtype, device=self.W_intra.device)
            K = torch.where(self.J_intra != 0, self.W_intra / self.J_intra, torch.zeros_like(self.W_intra))
            blocks = self.W_intra * self.J_intra * (spread + K * lam_src.unsqueeze(1))
            if self.rec_src.numel():
                n_src = torch.cat([lam_src[i].repeat(a.n_columns) for i, a in enumerate(self.areas.values())])
                W = self._weights("rec").abs()
                edge_amplitude = J_E * spread + W * n_src[self.rec_src]  # |W| J_E (1 + cv^2 + |W| k / (J_E N))
        return InputVariance(blocks, edge_amplitude, J_E, bg)

    def field(self, input_rates: torch.Tensor | None = None, *, dense: bool | None = None,
              noise: torch.Tensor | None = None) -> Field:
        """The network's vector field with its current weights (built once per solve).

        Parameters
        ----------
        input_rates : torch.Tensor, shape (B, K, n_inputs), optional
            Stimulus rates (Hz) of each piecewise-constant segment; default no input.
        dense : bool, optional
            Dense P x P coupling or per-area 8 x 8 blocks plus an edge list (every solver
            backend takes both); default dense up to
            :data:`~colplugin.field.DENSE_MAX_POPULATIONS` populations, where one matrix
            product is cheaper than the sparse form's several small operations.
        noise : torch.Tensor, shape (B, K, P), optional
            Membrane noise drive (mV/s) per segment (:meth:`colplugin.stimulus.MembraneNoise.sample`).
        """
        p = self.params
        constants = {"tau_m": p["tau_m"], "tau_a": p["tau_a"], "tau_s": p["tau_s"], "R": p.R,
                     "a": p["a"], "b": p["b"], "d": p["d"], "nu_bg": p["nu_bg"]}
        layout = [(self.column_offset(name), area.n_columns) for name, area in self.areas.items()]
        edges = (self.rec_src, self.rec_tgt, self._weights("rec")) if self.rec_src.numel() else None
        inputs = (self.inp_src, self.inp_tgt, self._weights("inp")) if self.inp_src.numel() else None
        return self.field_class(constants, self.kappa, self.W_bg, self.W_intra, layout, edges, inputs,
                                input_rates, dense=dense, noise=noise, V_offset=self.V_offset,
                                input_gain=self.input_gain, r_max=self.r_max, transfer=self.transfer,
                                variance=self.input_variance(), gating=self.gating)

    def vector_field(self, y: torch.Tensor, u: torch.Tensor | None = None, *,
                     dense: bool | None = None) -> torch.Tensor:
        """dy/dt (mV/s) of the state ``y`` (B, n_state) under constant input rates ``u`` (B, n_inputs), Hz."""
        rates = None if u is None or self.n_inputs == 0 else u.reshape(u.shape[0], 1, -1)
        return self.field(rates, dense=dense)(y, 0)

    # -- states ---------------------------------------------------------------------
    def initial_state(self, batch_size: int = 1, V: float = 0.0, A: float = 0.0) -> torch.Tensor:
        """A uniform initial state (B, n_state): V and A in mV (default 0 mV); where the transfer needs the
        input variance, S (mV^2) at rest (background alone, :meth:`colplugin.field.Field.initial_variance`);
        where the network has gating, G in equilibrium with the rates of V and A."""
        if len(self.state_variables) > 2:  # S at rest, G in equilibrium with the rates: the field's rule
            with torch.no_grad():
                return self.field().initial(batch_size, V, A)
        P = self.n_populations
        y = torch.empty(batch_size, self.n_state, dtype=self.W_intra.dtype, device=self.W_intra.device)
        y[:, :P] = V
        y[:, P:2 * P] = A
        return y

    # -- (de)serialisation ---------------------------------------------------------------
    def spec(self) -> dict[str, Any]:
        """Plain-type description from which :meth:`from_spec` rebuilds the network."""
        spec = {"params": self.params.to_dict(),
                "areas": {k: a.to_dict() for k, a in self.areas.items()},
                "projections": [p.to_dict() for p in self.projections],
                "dtype": str(self.W_intra.dtype).replace("torch.", ""),
                "seed": self.seed}
        if type(self) is not ColumnNetwork:  # a subclass (e.g. with extra field terms) is named, never dropped
            spec["network_class"] = _qualified(type(self))
            spec["field_class"] = _qualified(self.field_class)
        return spec

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any], device: torch.device | str | None = None) -> "ColumnNetwork":
        """Rebuild a network (with its initial weights) from :meth:`spec` output.

        A spec written by a subclass (``network_class``, e.g. one whose field has extra terms)
        is rebuilt only by that class: ``ColumnNetwork.from_spec`` refuses it rather than
        silently dropping the terms.
        """
        recorded = spec.get("network_class") if isinstance(spec, Mapping) else None
        if recorded is not None and recorded != _qualified(cls):
            raise ParameterError(
                f"this network spec was written by {recorded} (field {spec.get('field_class')}), a network class "
                f"with its own model terms; rebuild it with that class ({recorded.rsplit('.', 1)[-1]}.from_spec(spec)"
                f" in Python), not with {cls.__name__}: the command line knows only ColumnNetwork")
        fix = "pass a network.json written by colplugin (a run directory's network.json)"
        if not isinstance(spec, Mapping):
            raise ParameterError(f"a network spec is a JSON object of {', '.join(SPEC_KEYS[:5])}, got "
                                 f"{type(spec).__name__}; {fix} (Python: ColumnNetwork.spec())")
        _unknown_keys("network spec", spec, SPEC_KEYS, ("params", "areas"))
        dtype_name = spec.get("dtype", "float64")
        if dtype_name not in SPEC_DTYPES:
            raise ParameterError(f"network spec: \"dtype\" is {dtype_name!r}; use \"float64\" (the default) or "
                                 "\"float32\" (half precision and integers cannot hold the solver's arithmetic)")
        if not isinstance(spec["areas"], Mapping):
            raise ParameterError(f"network spec: \"areas\" must map area names to {{'kind', 'n_columns', 'split'}}, "
                                 f"got {type(spec['areas']).__name__}; {fix}")
        projections = spec.get("projections", [])
        if not isinstance(projections, (list, tuple)):
            raise ParameterError(f"network spec: \"projections\" must be a list of projections, got "
                                 f"{type(projections).__name__}; {fix}")
        try:
            params = Params.from_dict(spec["params"])
            areas = {k: area_from_dict(k, a) for k, a in spec["areas"].items()}
            projs = [Projection.from_dict(p) for p in projections]
        except (KeyError, TypeError, AttributeError) as exc:
            raise ParameterError(f"network spec is incomplete or malformed ({exc!r}); {fix} "
                                 "(Python: ColumnNetwork.spec())") from None
        return cls(params, areas, projs, dtype=getattr(torch, dtype_name), device=device, seed=spec.get("seed"))

    def extra_repr(self) -> str:
        areas = ", ".join(f"{k}: {a.kind} x{a.n_columns}" for k, a in self.areas.items())
        learnable = sum(p.numel() for p in self.learnable_parameters())
        return (f"areas=({areas}), populations={self.n_populations}, inputs={self.n_inputs}, "
                f"inter-column edges={self.rec_src.numel()}, learnable={learnable}")
