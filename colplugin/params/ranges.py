"""Plausible ranges of colplugin's physical quantities: the one table, each range with its reason.

A value outside its range is refused when a parameter set is loaded or overridden
(:func:`check_range`, called by :mod:`colplugin.params`): a capacitance in farads where pF
are meant, a time constant in seconds where ms are meant, ``b = 1e308 Hz`` or an area of
1e12 neurons runs, but every rate ends at one constant or 0 Hz, or the solver stalls.
The ranges are wide (every shipped preset sits well inside, most by a factor of 10 or more
on both sides) but a unit prefix off by 1e3 or more leaves them; the message names the key,
the value with its unit, the range, its reason and, where rescaling by a power of 1e3 lands
inside, the value that was probably meant.

Ranges are in the internal units of :data:`colplugin.params.SPECS` (s, pF, Hz, Hz/mV, nA,
mV*s, mV, neurons); bounds are inclusive. Entries without a physical scale of their own
(probabilities, the L4E -> L2/3E rule, choices) have no range here beyond their SPECS rule.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import quantities as pq

__all__ = ["Range", "RANGES", "AREA_RANGE_KEY", "check_range", "ParameterError"]


class ParameterError(ValueError):
    """A parameter set is invalid; the message names the key, the value and the fix.

    Defined here, beside the range check that raises it, so that :mod:`colplugin.params`
    (which re-exports it) and this module import in one direction only.
    """

    __module__ = "colplugin.params"  # its public home (reprs, pickles, docs)


@dataclass(frozen=True)
class Range:
    """Inclusive plausible range ``[low, high]`` of a quantity in ``unit``, with its reason."""

    low: float
    high: float
    unit: str
    source: str
    show: str = ""  # the unit of the messages (default: ``unit``), e.g. ms for time constants

    def shown(self, x: float) -> str:
        """``x`` (in ``unit``) as written in messages: in ``show``, with the unit."""
        if not self.show or self.show == self.unit:
            return _fmt(x, self.unit)
        return _fmt(x * _factor(self.unit, self.show), self.show)


#: Key of :data:`RANGES` for the population sizes of ``[areas.NAME]``.
AREA_RANGE_KEY = "areas"

#: quantity -> plausible range (internal unit) and its source / reason.
RANGES: dict[str, Range] = {
    # -- time constants (s) --
    "tau_s": Range(1e-4, 0.1, "s", "synaptic current decay: 0.1 ms (fastest AMPA currents) to 100 ms (NMDA, "
                   "Wang 2002); PD14 Table 5 uses 0.5 ms", "ms"),
    "tau_m": Range(1e-3, 0.1, "s", "membrane time constant of cortical neurons: a few ms (high-conductance "
                   "state) to tens of ms (in vitro); PD14 Table 5 uses 10 ms, dL25 20 ms", "ms"),
    "tau_a": Range(1e-2, 100.0, "s", "spike-frequency adaptation: 10 ms (fast AHP) to 100 s (slowest "
                   "after-hyperpolarisation, Na/K pump); dL25 uses 10 s"),
    "d": Range(1e-4, 0.1, "s", "noise factor of the DMF's f (Wong & Wang 2006 form); dL25 / Evers23 use "
               "8.9 ms", "ms"),
    "t_ref": Range(0.0, 0.05, "s", "absolute refractory period: 0 to 50 ms (cortical neurons 1-5 ms); PD14 "
                   "Table 5 uses 2 ms", "ms"),
    "delay_E": Range(1e-5, 0.1, "s", "synaptic + axonal delay: 0.01 ms to 100 ms (long-range cortico-cortical "
                     "axons); PD14 Table 5 uses 1.5 ms (E)", "ms"),
    "delay_I": Range(1e-5, 0.1, "s", "synaptic + axonal delay: 0.01 ms to 100 ms; PD14 Table 5 uses 0.75 ms "
                     "(I)", "ms"),
    # -- capacitance (pF) --
    "C": Range(10.0, 2000.0, "pF", "membrane capacitance of cortical neurons: 10-2000 pF (small interneurons "
               "to large layer-5 pyramids); PD14 Table 5 uses 250 pF"),
    # -- rates (Hz) and gains --
    "a": Range(0.1, 1000.0, "Hz/mV", "slope of the DMF's f: dL25 / Evers23 use 48 Hz/mV; a factor of ~500 "
               "either way admits any fit and refuses Hz/V or Hz/uV"),
    "b": Range(-1e4, 1e4, "Hz", "offset of the DMF's f: b / a is f's threshold in mV (dL25 / Evers23: 981 Hz "
               "/ 48 Hz/mV = 20.4 mV); |b| <= 1e4 Hz keeps it within 200 mV at dL25's gain"),
    "nu_bg": Range(0.0, 500.0, "Hz", "rate of one background (external) synapse: a cortical neuron fires at "
                   "most ~1 / t_ref = 500 Hz; PD14 Table 5 uses 8 Hz"),
    "r_max": Range(0.01, 1000.0, "Hz", "saturation rate of the DMF's f (inf: none): at most ~1 / t_ref = 500 "
                   "Hz, below 0.01 Hz every population is silent"),
    "published_rates": Range(0.0, 500.0, "Hz", "population rates: at most ~1 / t_ref = 500 Hz; the PD14 "
                             "full-scale NEST reference gives 0.9-8.6 Hz"),
    "input_gain": Range(0.01, 100.0, "dimensionless", "calibration gain of a population's input currents: 1 "
                        "is uncalibrated; colplugin calibrate fits within 1/3 to 3"),
    # -- synaptic strengths and adaptation --
    "J_E": Range(1e-3, 10.0, "nA", "excitatory PSC amplitude: 1 pA to 10 nA (unitary cortical EPSCs are "
                 "10 pA-1 nA); PD14 Table 5 uses 87.81 pA"),
    "kappa": Range(0.0, 100.0, "mV*s", "adaptation strength (A = kappa r): 100 mV s moves the threshold by "
                   "100 mV at 1 Hz; dL25 uses 1.5 mV s on L2/3E"),
    "g": Range(-100.0, -0.01, "dimensionless", "relative inhibitory strength: PD14 uses -4, Brunel (2000) "
               "explores -3 to -8"),
    # -- potentials (mV) --
    "E_L": Range(-150.0, 100.0, "mV", "membrane potentials lie between E_K (~-100 mV) and E_Na (~+60 mV); "
                 "models relative to rest use 0 to ~30 mV; PD14 Table 5 uses -65 mV"),
    "V_reset": Range(-150.0, 100.0, "mV", "a membrane potential (see E_L); PD14 Table 5 uses -65 mV"),
    "V_th": Range(-150.0, 100.0, "mV", "a membrane potential (see E_L); PD14 Table 5 uses -50 mV"),
    "V0_mean": Range(-150.0, 100.0, "mV", "a membrane potential (see E_L); PD14 uses -58 mV"),
    "V0_sd": Range(0.0, 100.0, "mV", "spread of initial potentials: at most the whole membrane range; PD14 "
                   "uses 10 mV"),
    "V_offset": Range(-100.0, 100.0, "mV", "calibration offset of f's argument: at most the whole membrane "
                      "range; colplugin calibrate fits within +-15 mV"),
    "tau_G": Range(1e-3, 10.0, "s", "decay of a synaptic gating variable: AMPA ~2 ms, NMDA 50-150 ms (Wong & "
                   "Wang 2006 use 100 ms), GABA_B ~0.2 s", "ms"),
    "gamma_G": Range(1e-3, 1e4, "dimensionless", "rise gain of synaptic gating per unit rate and time: Wong "
                     "& Wang 2006 use 0.641 (G saturates above about 1 / (gamma_G tau_G) = 16 Hz); a model whose "
                     "rates and times are Wong & Wang's scaled down scales it up by both factors"),
    "sigma_floor": Range(1e-3, 10.0, "mV", "smallest input sd of the Siegert transfer: the pd14_lif preset "
                         "uses 0.1 mV; free membrane noise is a few mV"),
    # -- counts --
    "K_bg": Range(0.0, 1e5, "dimensionless", "background in-degree: a cortical neuron has ~1e4 synapses "
                  "(Braitenberg & Schuez 1998); PD14 Table 5 uses 1500-2900"),
    "K_in": Range(0.0, 1e5, "dimensionless", "thalamic in-degree (see K_bg); PD14 uses 186-295"),
    "thalamic_size": Range(1.0, 1e6, "dimensionless", "thalamic neurons: PD14 uses 902, dL25 / Evers23 3000"),
    AREA_RANGE_KEY: Range(1.0, 1e6, "dimensionless", "neurons of one population of an area: the largest shipped "
                          "one is V1's L2/3E, 70,387 neurons (Schmidt et al. 2018, areas.toml); in-degrees "
                          "grow as P N, and at 1e6 neurons K[L2/3E, L2/3E] is ~1e5, ten times the ~1e4 synapses "
                          "of a cortical neuron (Braitenberg & Schuez 1998)"),
    "relative_sd": Range(0.0, 10.0, "dimensionless", "relative sd of weights or delays; PD14 uses 0.1 (PSC) "
                         "and 0.5 (delays)"),
}
RANGES["J_rel_sd"] = RANGES["delay_rel_sd"] = RANGES.pop("relative_sd")

def _factor(unit: str, show: str) -> float:
    return float(pq.Quantity(1.0, unit).rescale(show).magnitude)


#: Unit spelled for people (SPECS' internal units as written in a parameter file).
_UNIT_WORDS = {"dimensionless": ""}


def _fmt(x: float, unit: str) -> str:
    word = _UNIT_WORDS.get(unit, unit)
    return f"{x:.6g} {word}".strip() if word else f"{x:.6g}"


def _meant(x: float, rng: Range) -> tuple[float, int] | None:
    """``(y, k)`` with ``x = 1e(3k) y`` and ``y`` in range (a unit prefix off by 1e(3k)); None if there is none."""
    if not math.isfinite(x) or x == 0 or rng.unit == "dimensionless":
        return None
    for k in (1, -1, 2, -2, 3, -3, 4, -4, 5, -5, 6, -6):
        y = x * 1e3 ** -k
        if rng.low <= y <= rng.high:
            return y, k
    return None


def check_range(key: str, values: Any, given: str | None = None,
                element_names: tuple[str, ...] | None = None) -> None:
    """Refuse a value of ``key`` outside its plausible range (:data:`RANGES`).

    Parameters
    ----------
    key : str
        Parameter name, or ``"areas.NAME"`` for population sizes.
    values : float or array
        The value(s) in the internal unit (``inf`` is skipped: it means "none" where allowed).
    given : str, optional
        The value as written (``"250 F"``), quoted in the message.
    element_names : tuple of str, optional
        Names of the elements of an array (populations), for the message.

    Raises
    ------
    ParameterError
        Naming the key (and element), the value with its unit, the range and its reason, and the fix.
    """
    name = key.split(".")[-1]
    area = key.startswith("areas.")
    rng = RANGES.get(AREA_RANGE_KEY if area else name)
    if rng is None:
        return
    arr = np.atleast_1d(np.asarray(values, dtype=float))
    bad = np.nonzero(np.isfinite(arr) & ((arr < rng.low) | (arr > rng.high)))[0]
    if not len(bad):
        return
    i = int(bad[0])
    x = float(arr[i])
    where = key
    if np.ndim(values) > 0:
        label = element_names[i] if element_names is not None and i < len(element_names) else str(i)
        where = f"{key}[{label}]"
    neurons = area or name == "thalamic_size"
    shown = f"{x:.6g} neurons" if neurons else rng.shown(x)
    as_given = f" (as given: {given})" if given else ""
    span = (f"{rng.low:.6g} to {rng.high:.6g} neurons" if neurons
            else f"{rng.shown(rng.low)} to {rng.shown(rng.high)}")
    meant = _meant(x, rng)
    if meant is not None:
        y, k = meant
        hint = (f" It is 1e{3 * k} times {rng.shown(y)}, which is plausible: a unit prefix off by 1e{3 * k} "
                f"(e.g. {'F for pF, s for ms' if k > 0 else 'ms for s, pF for F'})?")
        example = (f"{name} = \"{rng.shown(y)}\"" if np.ndim(values) == 0
                   else f"{rng.shown(y)} for {where}")
        fix = f"write the unit you mean ({example} if that is meant) or a value within {span}"
    elif neurons:
        hint, fix = "", f"give a number of neurons within {span} (whole numbers)"
    elif rng.unit == "dimensionless":
        hint, fix = "", f"give {where} within {span}"
    else:
        hint, fix = "", (f"give {where} within {span}, stating its unit (any unit convertible to "
                         f"{rng.unit})")
    raise ParameterError(f"parameter {where!r} = {shown}{as_given} is outside the plausible range {span} "
                         f"({rng.source}; colplugin.params.ranges.RANGES).{hint} Fix: {fix}")
