"""Model parameters as documented data: TOML presets, loading, overrides and validation.

Every entry of a preset is a TOML table with ``value``, ``unit`` (any unit string the
`quantities` package understands) and ``source``; a string with its unit (``tau_m = "10 ms"``)
is accepted too. Values are converted to colplugin's internal units on load:

=========================  ==========
quantity                   unit
=========================  ==========
time constants, ``d``      s
capacitance ``C``          pF
rates ``b``, ``nu_bg``     Hz
gain ``a``                 Hz/mV
strengths ``J_E``          nA
adaptation ``kappa``       mV*s
potentials (``V_th`` ...)  mV
counts, probabilities      1
=========================  ==========

Units. In a parameter file (TOML, or JSON written by :meth:`Params.save`) every quantity
that has a unit states it: ``tau_m = "10 ms"`` or ``[tau_m] value = 10, unit = "ms"``. A bare
number (``tau_m = 10``) or a table without ``unit`` is an error in both spellings, whatever
the base preset says; only dimensionless entries (counts, probabilities, factors, population
sizes) may omit the unit. In Python, :meth:`Params.with_overrides` (and the ``overrides``
argument) reads a plain number, or a table without ``unit``, in the internal unit of the
table below (``{"tau_m": 0.01}`` is 10 ms); strings with units and
:class:`quantities.Quantity` objects work there too.

Plausible ranges. Every physical quantity has a generous plausible range with its source
(:data:`colplugin.params.ranges.RANGES`: capacitance 10-2000 pF, tau_m 1-100 ms, areas of
at most 1e6 neurons per population, ...); a value outside it (``C = "250 F"``, ``tau_m =
"10 s"``, ``b = "1e308 Hz"``) is refused in files and overrides alike, with the range, its
source and, for a unit prefix off by a power of 1e3, the value probably meant.

Unknown names are errors with a did-you-mean everywhere: top-level keys, keys of a
parameter table (``value``, ``unit``, ``source``), of ``[preset]`` (``name``,
``description``, ``default_area``) and of ``[areas.NAME]``. Population sizes are positive
whole numbers of neurons.

The spiking entries (:data:`SPIKING_KEYS`: the LIF neuron, PSC spread, delays, thalamic
population and the published PD14 rates) are used only by :mod:`colplugin.spiking`. They
live in the ``pd14`` preset; a parameter set without them (for example a network spec
saved before they existed) takes them from ``pd14``, with that source recorded.

A preset file may start from another one with a top-level ``base = "pd14"`` and set only
what changes (``dl25`` does), so that every PD14 number is written once. A user's file may
also start from another parameter file (``base = "mine.toml"``, relative to the file that
names it), e.g. the one ``colplugin calibrate --preset mine.toml`` writes.

Examples
--------
>>> import colplugin as cp
>>> p = cp.load_preset("dl25", overrides={"tau_m": "10 ms"})
>>> p["tau_m"]
0.01
"""

from __future__ import annotations

import copy
import difflib
import json
import tomllib
import warnings
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import quantities as pq

from .._io import atomic_write_text
from .names import N_POP, POPULATIONS
from .ranges import RANGES, ParameterError, check_range

__all__ = ["Params", "ParameterError", "load_preset", "load_params", "resolve_params", "PRESETS", "DEFAULT_PRESET",
           "SPECS",
           "SPIKING_KEYS", "RANGES"]

#: Names of the shipped presets.
PRESETS: tuple[str, ...] = ("dl25", "pd14", "pd14_adapting", "dl25_calibrated", "pd14_lif", "dl25_lif")


@dataclass(frozen=True)
class _Spec:
    unit: str | None  # internal unit; None for string-valued entries
    shape: tuple[int, ...] | None  # None for scalars and strings
    check: Callable[[Any], bool]
    requirement: str
    choices: tuple[str, ...] = ()


def _all(pred: Callable[[np.ndarray], np.ndarray]) -> Callable[[Any], bool]:
    return lambda v: bool(np.all(pred(np.asarray(v, dtype=float))))


_POSITIVE = _all(lambda v: v > 0)
_NONNEG = _all(lambda v: v >= 0)
_FINITE = _all(np.isfinite)

#: The parameters colplugin knows, with their internal units and validity rules.
SPECS: dict[str, _Spec] = {
    "tau_s": _Spec("s", None, _POSITIVE, "a positive time constant"),
    "tau_m": _Spec("s", None, _POSITIVE, "a positive time constant"),
    "tau_a": _Spec("s", None, _POSITIVE, "a positive time constant"),
    "C": _Spec("pF", None, _POSITIVE, "a positive capacitance"),
    "a": _Spec("Hz/mV", None, _POSITIVE, "a positive gain"),
    "b": _Spec("Hz", None, _FINITE, "a finite rate"),
    "d": _Spec("s", None, _POSITIVE, "a positive time"),
    "nu_bg": _Spec("Hz", None, _NONNEG, "a non-negative rate"),
    "J_E": _Spec("nA", None, _POSITIVE, "a positive synaptic strength"),
    "kappa": _Spec("mV*s", (N_POP,), _NONNEG, "8 non-negative adaptation strengths"),
    "V_offset": _Spec("mV", (N_POP,), _FINITE, "8 finite membrane offsets"),
    "input_gain": _Spec("dimensionless", (N_POP,), _all(lambda v: v > 0), "8 positive gains"),
    "r_max": _Spec("Hz", (N_POP,), _POSITIVE, "8 positive saturation rates (inf: none)"),
    "transfer": _Spec(None, None, lambda v: True, "one of the choices", ("dmf", "siegert")),
    "sigma_floor": _Spec("mV", None, _POSITIVE, "a positive potential"),
    "gating": _Spec(None, None, lambda v: True, "one of the choices", ("none", "inter_column")),
    "tau_G": _Spec("s", None, _POSITIVE, "a positive time constant"),
    "gamma_G": _Spec("dimensionless", None, _POSITIVE, "a positive gain"),
    "inhibition": _Spec(None, None, lambda v: True, "one of the choices", ("layer_ratio", "g")),
    "g": _Spec("dimensionless", None, _all(lambda v: v < 0), "a negative number (PD14: -4)"),
    "connection_probability": _Spec(
        "dimensionless", (N_POP, N_POP), _all(lambda v: (v >= 0) & (v < 1)),
        "an 8x8 matrix of probabilities in [0, 1)"),
    "l4e_to_l23e_mode": _Spec(None, None, lambda v: True, "one of the choices",
                              ("probability", "weight")),
    "l4e_to_l23e_factor": _Spec("dimensionless", None, _POSITIVE, "a positive factor"),
    "K_bg": _Spec("dimensionless", (N_POP,), _NONNEG, "8 non-negative in-degrees"),
    "K_in": _Spec("dimensionless", (2,), _NONNEG, "2 non-negative in-degrees (L4E, L4I)"),
    # -- spiking neurons (colplugin.spiking): LIF with exponential current synapses (PD14) --
    "E_L": _Spec("mV", None, _FINITE, "a finite potential"),
    "V_reset": _Spec("mV", None, _FINITE, "a finite potential"),
    "V_th": _Spec("mV", None, _FINITE, "a finite potential above V_reset"),
    "t_ref": _Spec("s", None, _NONNEG, "a non-negative time"),
    "V0_mean": _Spec("mV", None, _FINITE, "a finite potential"),
    "V0_sd": _Spec("mV", None, _NONNEG, "a non-negative potential"),
    "J_rel_sd": _Spec("dimensionless", None, _NONNEG, "a non-negative relative sd"),
    "delay_E": _Spec("s", None, _POSITIVE, "a positive delay"),
    "delay_I": _Spec("s", None, _POSITIVE, "a positive delay"),
    "delay_rel_sd": _Spec("dimensionless", None, _NONNEG, "a non-negative relative sd"),
    "background": _Spec(None, None, lambda v: True, "one of the choices", ("poisson", "dc")),
    "thalamic_size": _Spec("dimensionless", None, _all(lambda v: (v >= 1) & (v == np.round(v))),
                           "a positive whole number of neurons"),
    "published_rates": _Spec("Hz", (N_POP,), _NONNEG, "8 non-negative rates"),
}
#: Entries that may be +inf (meaning "none").
_INF_ALLOWED = ("r_max",)
#: Entries used only by the spiking networks; absent ones are taken from the ``pd14`` preset.
SPIKING_KEYS: tuple[str, ...] = ("E_L", "V_reset", "V_th", "t_ref", "V0_mean", "V0_sd", "J_rel_sd", "delay_E",
                                 "delay_I", "delay_rel_sd", "background", "thalamic_size", "published_rates")
_AREA_SPEC = _Spec("dimensionless", (N_POP,), _all(lambda v: (v >= 1) & (v == np.round(v))),
                   "8 positive population sizes (whole numbers of neurons, e.g. [100, 30, ...])")

#: Keys of a parameter table, of ``[preset]`` and the top-level keys besides the parameters.
_ENTRY_KEYS = ("value", "unit", "source")
_PRESET_KEYS = ("name", "description", "default_area")
_TOP_KEYS = ("base", "preset", "areas")


def _did_you_mean(key: str, known: Any) -> str:
    close = difflib.get_close_matches(str(key), list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _check_keys(what: str, table: Mapping[str, Any], known: tuple[str, ...]) -> None:
    """Refuse keys of ``table`` outside ``known``, with a did-you-mean."""
    for k in table:
        if k not in known:
            raise ParameterError(f"{what}: unknown key {k!r}{_did_you_mean(k, known)}; "
                                 f"allowed keys: {', '.join(known)}")


def _has_unit(value: Any) -> bool:
    if isinstance(value, pq.Quantity):
        return True
    if isinstance(value, str):
        _, _, ustr = value.strip().partition(" ")
        return bool(ustr.strip())
    return False


def _check_value_kind(key: str, value: Any, spec: _Spec) -> None:
    """Refuse a value that is never a parameter value: None (a value never given) or a bool."""
    name = key.split(".")[-1]
    if spec.unit is None:
        example = f'{name} = "{spec.choices[0]}"' if spec.choices else f'{name} = "..."'
    elif spec.shape:
        example = f"[{name}] value = [{' x '.join(map(str, spec.shape))} numbers], unit = \"{spec.unit}\""
    elif spec.unit == "dimensionless":
        example = f"{name} = NUMBER"
    else:
        example = f'{name} = "NUMBER {spec.unit}" (any unit convertible to {spec.unit})'
    if value is None:
        raise ParameterError(f"parameter {key!r} = None is not a value (a value never given); give a number or "
                             f"a string with its unit, e.g. {example}, or leave {name} out to keep the base "
                             "set's value")
    if isinstance(value, pq.Quantity):
        return
    flat = value if isinstance(value, (list, tuple, np.ndarray)) else [value]
    if isinstance(value, (bool, np.bool_)) or any(isinstance(x, (bool, np.bool_)) for x in np.ravel(
            np.asarray(flat, dtype=object))):
        raise ParameterError(f"parameter {key!r} = {value!r} is a boolean (true/false), not a number; write "
                             f"{example}")


def _check_overrides(overrides: Any) -> None:
    """Refuse ``overrides`` that are not a mapping ``{name: value}`` (a list of pairs, a string, ...)."""
    if overrides is not None and not isinstance(overrides, Mapping):
        raise ParameterError(f"overrides must be a mapping {{name: value}}, e.g. {{'tau_m': '20 ms'}}, got "
                             f"{type(overrides).__name__} {overrides!r:.80}" +
                             ("; dict(pairs) turns a list of (name, value) pairs into one"
                              if isinstance(overrides, (list, tuple)) else ""))
    for k in overrides or {}:
        if not isinstance(k, str):
            raise ParameterError(f"overrides: key {k!r} ({type(k).__name__}) is not a parameter name; keys are "
                                 "strings such as 'tau_m' or 'areas.NAME'")


def _warn_unused_g(what: str, fix: str) -> None:
    """Warn that ``g`` is set where ``inhibition = "layer_ratio"`` ignores it (refusing would break files
    that set both, which the shipped tests read)."""
    warnings.warn(f"{what}, but this parameter set uses inhibition = \"layer_ratio\" (J_I = -(N_E / N_I of the "
                  f"source layer) * J_E), so g has no effect: g is used only with inhibition = \"g\" "
                  f"(J_I = g * J_E, PD14). Remove g, or {fix}", UserWarning, stacklevel=3)


def _as_given(value: Any, unit: str | None, internal: str) -> str | None:
    """The value as written, when its unit differs from the internal one (quoted in range errors)."""
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, pq.Quantity):
        return str(value)
    if unit is not None and unit != internal and np.ndim(value) == 0:
        return f"{value} {unit}"
    return None


def _convert(key: str, entry: Any, spec: _Spec, default_unit: str | None,
             require_unit: bool = False) -> tuple[Any, str | None]:
    """Convert one raw entry (number, string with unit, Quantity or {value, unit}) to internal units.

    With ``require_unit`` (entries read from a parameter file) a quantity that has a unit must
    state it; otherwise a number without a unit is in the internal unit ``spec.unit``.
    """
    unit = default_unit
    value = entry
    if isinstance(entry, Mapping):
        _check_keys(f"parameter {key!r}", entry, _ENTRY_KEYS)
        if "value" not in entry:
            raise ParameterError(f"parameter {key!r}: table {dict(entry)!r} has no 'value'; "
                                 "write it as {value = ..., unit = \"...\", source = \"...\"}")
        value = entry["value"]
        unit = entry.get("unit", unit)
    _check_value_kind(key, value, spec)
    if (require_unit and spec.unit not in (None, "dimensionless") and unit is None
            and not _has_unit(value)):
        name = key.split(".")[-1]
        scalar = np.ndim(value) == 0 and not isinstance(value, str)
        hint = (f"{name} = \"{value} UNIT\" or " if scalar else "") + \
            f"[{name}] value = {value!r}, unit = \"UNIT\""
        raise ParameterError(f"parameter {key!r} = {value!r} has no unit: in a parameter file every "
                             f"quantity states its unit (a bare number is not read as {spec.unit}). Write "
                             f"{hint}, with UNIT the unit you mean: any unit convertible to {spec.unit}, "
                             f"e.g. unit = \"{spec.unit}\"")
    if spec.unit is None:  # string-valued choice
        if value not in spec.choices:
            raise ParameterError(f"parameter {key!r} = {value!r} is not valid; "
                                 f"use one of {', '.join(map(repr, spec.choices))}")
        return value, None
    if isinstance(value, pq.Quantity):
        q = value
    elif isinstance(value, str):
        try:
            number, _, ustr = value.strip().partition(" ")
            q = pq.Quantity(float(number), ustr.strip() or "dimensionless")
        except Exception:
            raise ParameterError(f"parameter {key!r} = {value!r} cannot be read; write a number "
                                 f"or a string like '20 ms' (expected unit {spec.unit})") from None
    else:
        try:
            arr = np.asarray(value, dtype=float)
        except (TypeError, ValueError):
            raise ParameterError(f"parameter {key!r} = {value!r} is not numeric; expected "
                                 f"{spec.requirement} in {spec.unit}") from None
        if unit is None:
            unit = spec.unit
        try:
            q = pq.Quantity(arr, unit)
        except Exception:
            raise ParameterError(f"parameter {key!r}: unknown unit {unit!r}; use a unit "
                                 f"compatible with {spec.unit}") from None
    try:
        arr = np.asarray(q.rescale(spec.unit).magnitude, dtype=float)
    except ValueError:
        shown = repr(value) if isinstance(value, str) else (
            str(value) if isinstance(value, pq.Quantity) else f"{value!r} {q.dimensionality.string}")
        raise ParameterError(f"parameter {key!r} = {shown}: its unit ({q.dimensionality.string}) is not "
                             f"compatible with {spec.unit}; give it in {spec.unit} or a unit convertible to "
                             "it") from None
    expected = spec.shape or ()
    if arr.shape != expected:
        raise ParameterError(f"parameter {key!r} has shape {arr.shape}, expected "
                             f"{expected or 'a scalar'} ({spec.requirement})")
    finite = np.all(np.isfinite(arr) | ((arr == np.inf) & (key.split(".")[-1] in _INF_ALLOWED)))
    if not (finite and spec.check(arr)):
        raise ParameterError(f"parameter {key!r} = {arr.tolist()} is invalid: it must be "
                             f"{spec.requirement}")
    check_range(key, arr, _as_given(value, unit, spec.unit), POPULATIONS if arr.shape == (N_POP,) else None)
    return (float(arr) if arr.ndim == 0 else arr), spec.unit


class Params(Mapping[str, Any]):
    """A validated, resolved parameter set in colplugin's internal units.

    Behaves as a read-only mapping from parameter name to value (floats, numpy arrays
    or strings); ``params.areas`` maps area names to population sizes. Use
    :func:`load_preset` or :func:`load_params` to obtain one and :meth:`with_overrides`
    to derive a modified copy.
    """

    def __init__(self, values: dict[str, Any], sources: dict[str, str],
                 areas: dict[str, np.ndarray], area_sources: dict[str, str],
                 name: str, default_area: str, description: str = "") -> None:
        self._values = values
        self._sources = sources
        self.areas: dict[str, np.ndarray] = areas
        self._area_sources = area_sources
        self.name = name
        self.default_area = default_area
        self.description = description
        self._validate_consistency()

    # -- mapping protocol -------------------------------------------------
    def __getitem__(self, key: str) -> Any:
        try:
            v = self._values[key]
        except KeyError:
            raise KeyError(f"unknown parameter {key!r}; known: {', '.join(SPECS)}") from None
        return v.copy() if isinstance(v, np.ndarray) else v

    def __iter__(self):
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"Params(name={self.name!r}, areas={sorted(self.areas)})"

    # -- derived quantities ------------------------------------------------
    @property
    def R(self) -> float:
        """Membrane resistance R = tau_m / C in MOhm (so that R * nA = mV)."""
        return self["tau_m"] / (self["C"] * 1e-12) / 1e6

    def source(self, key: str) -> str:
        """The documented source of a parameter (or of an area, ``"areas.mt"``)."""
        if key.startswith("areas."):
            return self._area_sources[key[6:]]
        return self._sources[key]

    def area_sizes(self, area: str) -> np.ndarray:
        """Population sizes (8 neurons counts) of a known area.

        Raises
        ------
        ParameterError
            If the area is unknown.
        """
        try:
            return self.areas[area].copy()
        except KeyError:
            raise ParameterError(
                f"unknown area {area!r}; known areas: {', '.join(sorted(self.areas))}. Add it with an "
                "[areas.NAME] table (value = [8 population sizes]) in a parameter file given as --preset FILE.toml "
                "(Python: "
                "load_params(path), or overrides={'areas.NAME': [8 sizes]})"
            ) from None

    def _validate_consistency(self) -> None:
        missing = [k for k in SPECS if k not in self._values]
        if missing:
            raise ParameterError(f"parameter set {self.name!r} lacks {', '.join(missing)}; "
                                 "start from a preset (base = \"dl25\") and override only what changes")
        if self.default_area not in self.areas:
            raise ParameterError(f"default_area {self.default_area!r} is not among the areas "
                                 f"({', '.join(sorted(self.areas))})")
        P = self._values["connection_probability"]
        if self._values["l4e_to_l23e_mode"] == "probability":
            p = P[0, 2] * self._values["l4e_to_l23e_factor"]
            if not p < 1:
                raise ParameterError(f"l4e_to_l23e_factor {self._values['l4e_to_l23e_factor']} "
                                     f"makes P[L23E, L4E] = {p} >= 1; lower the factor")
        if self._values["transfer"] != "dmf" and np.isfinite(np.asarray(self._values["r_max"], dtype=float)).any():
            raise ParameterError(f"parameter set {self.name!r}: r_max (a saturation of the DMF's f) is set, but the "
                                 f"transfer is {self._values['transfer']!r}, the LIF neuron's own rate (at most "
                                 "1 / t_ref); set r_max = inf or transfer = \"dmf\"")
        if self._values.get("gating", "none") != "none" and self._values["transfer"] != "dmf":
            raise ParameterError(f"parameter set {self.name!r}: gating = {self._values['gating']!r} is implemented "
                                 f"with the DMF transfer, not {self._values['transfer']!r}; set gating = \"none\" or "
                                 "transfer = \"dmf\"")
        if not self._values["V_th"] > self._values["V_reset"]:
            raise ParameterError(f"V_th = {self._values['V_th']} mV must lie above V_reset = "
                                 f"{self._values['V_reset']} mV; raise V_th or lower V_reset")

    # -- modification and serialisation -------------------------------------
    def with_overrides(self, overrides: Mapping[str, Any] | None) -> "Params":
        """A copy with some values replaced.

        Parameters
        ----------
        overrides : mapping
            ``{name: value}``. A value is a number or array in the internal unit (see the
            module docstring), a string with a unit (``"10 ms"``), a
            :class:`quantities.Quantity`, or a table ``{"value": ..., "unit": ...}``.
            Areas are set with ``"areas.NAME": [8 sizes]``; ``"default_area"`` and
            ``"name"`` are accepted too.
        """
        _check_overrides(overrides)
        values = dict(self._values)
        sources = dict(self._sources)
        areas = dict(self.areas)
        area_sources = dict(self._area_sources)
        name, default_area = self.name, self.default_area
        for key, entry in (overrides or {}).items():
            src = entry.get("source", "user override") if isinstance(entry, Mapping) else "user override"
            if key in ("default_area", "name"):
                if not isinstance(entry, str):
                    raise ParameterError(f"override {key!r} = {entry!r} ({type(entry).__name__}) must be a string, "
                                         f"e.g. {{{key!r}: {'mt' if key == 'default_area' else 'my_set'!r}}}")
                if key == "default_area":
                    default_area = entry
                else:
                    name = entry
            elif key.startswith("areas."):
                areas[key[6:]], _ = _convert(key, entry, _AREA_SPEC, "dimensionless")
                area_sources[key[6:]] = src
            elif key in SPECS:
                values[key], _ = _convert(key, entry, SPECS[key], None)
                sources[key] = src
            else:
                hint = _did_you_mean(key, list(SPECS) + ["default_area", "name"])
                raise ParameterError(f"unknown parameter {key!r}{hint}; known parameters: "
                                     f"{', '.join(SPECS)}, areas.NAME, default_area, name")
        if overrides and "g" in overrides and values["inhibition"] != "g":
            _warn_unused_g(f"the overrides set 'g' = {overrides['g']!r}", "add 'inhibition': 'g' to the overrides")
        return Params(values, sources, areas, area_sources, name, default_area, self.description)

    def to_dict(self) -> dict[str, Any]:
        """Plain-type representation (JSON/TOML-able) with values, units and sources."""
        def plain(v: Any) -> Any:  # standard JSON: an infinite entry (r_max: none) is written "inf"
            v = v.tolist() if isinstance(v, np.ndarray) else v
            if isinstance(v, list):
                return ["inf" if isinstance(x, float) and x == np.inf else x for x in v]
            return v
        out: dict[str, Any] = {"preset": {"name": self.name, "default_area": self.default_area,
                                          "description": self.description}}
        for k, v in self._values.items():
            entry = {"value": plain(v), "source": self._sources.get(k, "")}
            if SPECS[k].unit is not None:
                entry["unit"] = SPECS[k].unit
            out[k] = entry
        out["areas"] = {a: {"value": plain(v), "unit": "dimensionless",
                            "source": self._area_sources.get(a, "")} for a, v in self.areas.items()}
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Params":
        """Rebuild a parameter set from :meth:`to_dict` output (or a parsed TOML file)."""
        data = copy.deepcopy(dict(data))
        meta = data.pop("preset", {}) or {}
        areas_raw = data.pop("areas", {}) or {}
        data.pop("base", None)
        for k in data:
            if k not in SPECS:
                raise ParameterError(f"unknown parameter {k!r}{_did_you_mean(k, list(SPECS) + list(_TOP_KEYS))}; "
                                     f"known parameters: {', '.join(SPECS)} (and the tables "
                                     "[preset], [areas.NAME] and base = \"PRESET\")")
        if not isinstance(meta, Mapping):
            raise ParameterError(f"'preset' must be a table [preset] with {', '.join(_PRESET_KEYS)}, got {meta!r}")
        _check_keys("[preset]", meta, _PRESET_KEYS)
        for k, v in meta.items():
            if not isinstance(v, str):
                example = {"name": '"my_set"', "description": '"what this set is for"', "default_area": '"mt"'}[k]
                raise ParameterError(f"[preset] {k} = {v!r} ({type(v).__name__}) must be a string; write "
                                     f"{k} = {example}")
        if not isinstance(areas_raw, Mapping):
            raise ParameterError(f"'areas' must be tables [areas.NAME] with value = [8 sizes], got {areas_raw!r}")
        missing_spiking = [k for k in SPIKING_KEYS + ("V_offset", "input_gain", "r_max", "transfer", "sigma_floor",
                                                         "gating", "tau_G", "gamma_G")
                           if k not in data]  # older sets
        if missing_spiking:
            pd14 = _raw_preset("pd14")
            for k in missing_spiking:
                data[k] = {**pd14[k], "source": f"pd14 preset (absent from this parameter set): {pd14[k]['source']}"}
        values, sources = {}, {}
        for k, entry in data.items():
            values[k], _ = _convert(k, entry, SPECS[k], None, require_unit=True)
            sources[k] = entry.get("source", "") if isinstance(entry, Mapping) else ""
        areas, area_sources = {}, {}
        for a, entry in areas_raw.items():
            areas[a], _ = _convert(f"areas.{a}", entry, _AREA_SPEC, "dimensionless", require_unit=True)
            area_sources[a] = entry.get("source", "") if isinstance(entry, Mapping) else ""
        return cls(values, sources, areas, area_sources, meta.get("name", "custom"),
                   meta.get("default_area", next(iter(areas), "")), meta.get("description", ""))

    def save(self, path: str | Path) -> Path:
        """Write the resolved set as JSON (atomically) and return the path."""
        return atomic_write_text(path, json.dumps(self.to_dict(), indent=2))

    def same_values(self, other: "Params") -> bool:
        """Whether two sets hold the same values and areas (sources, names and descriptions aside)."""
        strip = lambda p: {k: (v["value"] if isinstance(v, dict) and "value" in v else v)
                           for k, v in p.to_dict().items() if k != "preset"}
        return json.dumps(strip(self), sort_keys=True) == json.dumps(strip(other), sort_keys=True)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Params):
            return NotImplemented
        return json.dumps(self.to_dict(), sort_keys=True) == json.dumps(other.to_dict(), sort_keys=True)

    __hash__ = None  # mutable, compared by value: not a dict key


def _read_toml(path: Path | Any, what: str) -> dict[str, Any]:
    if isinstance(path, Path) and path.is_dir():
        raise ParameterError(f"{what} is a directory; give a TOML parameter file (e.g. one with base = \"dl25\")")
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ParameterError(f"{what} is not valid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise ParameterError(f"{what} is not a text file (it is not UTF-8: binary data?); give a TOML parameter "
                             "file") from None
    except FileNotFoundError:
        raise ParameterError(f"{what} does not exist") from None
    except OSError as exc:
        raise ParameterError(f"cannot read {what}: {exc.strerror}") from None


def _merge(base: Mapping[str, Any], raw: dict[str, Any], what: str) -> dict[str, Any]:
    """A raw parameter table ``raw`` laid over ``base`` (both as read from TOML)."""
    merged = copy.deepcopy(dict(base))
    meta = raw.pop("preset", {})
    if not isinstance(meta, Mapping):
        raise ParameterError(f"{what}: 'preset' must be a table [preset] with {', '.join(_PRESET_KEYS)}")
    _check_keys(f"{what}: [preset]", meta, _PRESET_KEYS)
    areas = raw.pop("areas", {})
    if not isinstance(areas, Mapping):
        raise ParameterError(f"{what}: 'areas' must be tables [areas.NAME] with value = [8 sizes]")
    for a, entry in areas.items():
        merged["areas"][a] = entry
    for k, entry in raw.items():
        if k not in SPECS:
            hint = _did_you_mean(k, list(SPECS) + list(_TOP_KEYS))
            raise ParameterError(f"{what}: unknown parameter {k!r}{hint}; known: {', '.join(SPECS)} "
                                 "(and the tables [preset], [areas.NAME] and base = \"PRESET\")")
        merged[k] = entry  # a unit is never inherited from the base: every entry states its own
    merged["preset"] = {**merged.get("preset", {}), **meta}
    return merged


def _read_parameter_file(path: Path) -> dict[str, Any]:
    """The raw table of a parameter file: TOML, or JSON written by :meth:`Params.save`."""
    if path.is_file():
        refusal = _not_params(path, None)
        if refusal is not None:
            raise refusal
    if path.suffix != ".json":
        return _read_toml(path, f"parameter file {path}")
    try:
        raw = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ParameterError(f"cannot read parameter file {path}: {exc}; give a params.json written by "
                             "colplugin, or a TOML file") from None
    if not isinstance(raw, dict):
        raise ParameterError(f"parameter file {path} holds a JSON {type(raw).__name__}, not a table of "
                             "parameters; give a params.json written by colplugin, or a TOML file")
    return raw


def _raw_base(base: str, including: Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The raw table that a file's ``base`` names: a shipped preset, or another parameter file.

    A file is found relative to the directory of the file that names it (``including``);
    it may itself start from a base.
    """
    if base in PRESETS:
        return _raw_preset(base)
    target = Path(base) if Path(base).is_absolute() else including.parent / base
    if not target.is_file():
        raise ParameterError(f"base = {base!r} is neither a preset ({', '.join(PRESETS)}) nor a parameter file "
                             f"(looked for {target}); name a preset, or a file relative to {including.parent}")
    seen = _seen + (including.resolve(),)
    if target.resolve() in seen:
        raise ParameterError(f"parameter file {target} is its own base "
                             f"({' -> '.join(str(p) for p in seen + (target.resolve(),))})")
    raw = _read_parameter_file(target)
    inner = raw.pop("base", None)
    if inner is None:
        raw.setdefault("preset", {})
        raw.setdefault("areas", {})
        return raw
    return _merge(_raw_base(str(inner), target, seen), raw, str(target))


def _raw_preset(name: str, _seen: tuple[str, ...] = ()) -> dict[str, Any]:
    if name not in PRESETS:
        raise ParameterError(f"unknown preset {name!r}; use one of {', '.join(PRESETS)}, or load your own "
                             "file with --preset FILE.toml "
                             "(Python: load_params(path))")
    if name in _seen:
        raise ParameterError(f"preset {name!r} is its own base ({' -> '.join(_seen + (name,))})")
    pkg = resources.files(__name__)
    raw = _read_toml(pkg / f"{name}.toml", f"preset {name!r}")
    base = raw.pop("base", None)
    if base is not None:
        return _merge(_raw_preset(str(base), _seen + (name,)), raw, f"preset {name!r}")
    raw.setdefault("areas", {})
    raw["areas"] = {**_read_toml(pkg / "areas.toml", "areas.toml")["areas"], **raw["areas"]}
    return raw


#: The preset of a network built without one (the paper's column).
DEFAULT_PRESET = "dl25"


def load_preset(name: str = DEFAULT_PRESET, overrides: Mapping[str, Any] | None = None) -> Params:
    """Load a shipped preset, optionally with overrides.

    Parameters
    ----------
    name : {"dl25", "pd14"}
        ``"dl25"``: the column of de Leeuw et al. (tau_m = 20 ms, layer-specific
        inhibition, doubled L4E->L2/3E probability, K_bg = 2510). ``"pd14"``: the same
        equations with the Potjans & Diesmann (2014) microcircuit's parameters.
    overrides : mapping, optional
        See :meth:`Params.with_overrides`.
    """
    _check_overrides(overrides)
    return Params.from_dict(_raw_preset(name)).with_overrides(overrides)


def load_params(path: str | Path, overrides: Mapping[str, Any] | None = None) -> Params:
    """Load a user parameter file (TOML, or JSON written by :meth:`Params.save`).

    A TOML file may start from a preset with a top-level ``base = "dl25"`` and then
    override only the entries that change; without ``base`` it must define every
    parameter. Every quantity with a unit states it (``tau_m = "10 ms"`` or
    ``[tau_m] value = 10, unit = "ms"``); see the module docstring.

    Raises
    ------
    ParameterError
        Invalid TOML/JSON, a missing unit, an unknown key (with a did-you-mean), a value out
        of range or fractional population sizes; the message names the file, key and fix.
    """
    _check_overrides(overrides)
    path = Path(path)
    raw = _read_parameter_file(path)
    base = raw.pop("base", None)
    try:
        if base is None:
            params = Params.from_dict(raw)
        else:
            meta = raw.get("preset", {})
            sets_g = "g" in raw
            base_raw = _raw_base(str(base), path)
            base_name = str(base) if str(base) in PRESETS else base_raw["preset"].get("name", Path(str(base)).stem)
            merged = _merge(base_raw, raw, str(path))
            if isinstance(meta, Mapping):
                merged["preset"]["name"] = meta.get("name", f"{base_name}+{path.stem}")
            params = Params.from_dict(merged)
            if sets_g and params["inhibition"] != "g":
                _warn_unused_g(f"{path} sets g = {params['g']:g}", "set inhibition = \"g\" in the file too")
    except ParameterError as exc:
        msg = str(exc)
        raise ParameterError(msg if msg.startswith(str(path)) else f"{path}: {msg}") from None
    return params.with_overrides(overrides)


def _other_file(path: Path) -> str | None:
    """What a file given as parameters is where it is another colplugin file (a network spec, metrics, ...)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
    except OSError:
        return None
    if head.startswith(b"PK\x03\x04") or path.suffix == ".pt":
        return "a torch file (a run's checkpoint.pt or best_weights.pt: trained weights, not parameters)"
    if path.suffix != ".json":
        return None
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(raw, dict):
        return None
    if {"params", "areas", "projections"} <= set(raw):
        return ("a network spec (ColumnNetwork.spec(), e.g. a run's network.json: the network's 'params', 'areas' "
                "and 'projections')")
    if "per_update" in raw:
        return "the metrics of a training run (metrics.json)"
    if {"times_s", "rates_hz"} <= set(raw):
        return "an evaluation stimulus (evaluation_stimulus.json)"
    if "max_rel" in raw and "method" in raw:
        return "an agreement report of an export (agreement.json)"
    return None


def _not_params(path: Path, option: str | None) -> ParameterError | None:
    """The refusal of a file that is another colplugin file, not parameters (None: treat it as parameters)."""
    what = _other_file(path)
    if what is None:
        return None
    run_params = path.parent / "params.json"
    hint = (f" - this run's parameters are in {run_params} (e.g. {option + ' ' if option else ''}{run_params})"
            if run_params.is_file() and run_params != path else "")
    expects = (f"{option} expects a preset name ({', '.join(PRESETS)}) or a parameter file" if option else
               "a parameter file is")
    return ParameterError(f"{path} is {what}, not a parameter file; {expects}: TOML (e.g. with base = \"dl25\"), "
                          f"or the params.json of a run{hint}")


def resolve_params(preset: str | Path) -> Params:
    """The parameters named by ``preset``: a preset name (:data:`colplugin.params.PRESETS`) or a TOML/JSON file.

    A file that is another colplugin file (a network spec such as a run's ``network.json``,
    a ``metrics.json``, a checkpoint) is refused with what it is and what ``--preset`` expects.
    """
    if str(preset) in PRESETS:
        return load_preset(str(preset))
    path = Path(preset)
    if path.is_file():
        refusal = _not_params(path, "--preset")
        if refusal is not None:
            raise refusal
        return load_params(path)
    raise ValueError(f"--preset {preset!r} is neither a preset ({', '.join(PRESETS)}) nor a parameter file; "
                     "pass one of those or the .toml file that `colplugin calibrate` wrote")
