"""The Potjans & Diesmann (2014) cortical microcircuit as a :class:`SpikingNetwork`.

Every number comes from a parameter set (default: the ``pd14`` preset): population sizes
(area ``pd14``), connection probabilities and the L4E -> L2/3E rule, ``J_E`` and ``g``,
the external in-degrees ``K_bg`` at ``nu_bg``, the LIF neuron (``C``, ``tau_m``, ``E_L``,
``V_reset``, ``V_th``, ``t_ref``, ``tau_s``), the PSC spread ``J_rel_sd``, the delays, the
thalamic population and the published full-scale rates used for the scaling compensation.

Scaling (PD14; NEST's PD14 example): ``scale`` multiplies the population sizes and
``k_scale`` the in-degrees; weights are divided by ``sqrt(k_scale)``, which keeps the
variance of each neuron's recurrent input, and the missing mean input is given as a DC
current ``tau_s * (1 - sqrt(k)) * sum_j K_ij J_ij nu_j`` with the full-scale in-degrees
``K``, strengths ``J`` and the published full-scale rates ``nu``. The background keeps its
full-scale in-degree and weight (its statistics do not depend on the circuit's size).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..column import connection_probability, in_degrees, synaptic_strengths
from ..params import Params, load_preset
from ..params.names import CELL_TYPES, LAYERS, N_POP, POPULATIONS, pop_index
from .network import (K_SCALE, SCALE, Connection, LIFModel, PoissonInput, PoissonSource, Population, RateProfile,
                      SpikingNetwork, check_scaling)
from .simulate import check_run, simulate_spiking

__all__ = ["pd14_microcircuit", "microcircuit_connectivity", "lif_model", "check_scale", "simulate_microcircuit"]


def check_scale(scale: float, k_scale: float | None) -> float:
    """Validate the neuron and in-degree scales; return ``k_scale`` (``None`` -> ``scale``)."""
    if isinstance(scale, bool) or not isinstance(scale, (int, float, np.number)) or not 0 < scale <= 1:
        raise ValueError(f"scale must be a number in (0, 1] (--scale), got {scale!r}")
    k = scale if k_scale is None else k_scale
    if isinstance(k, bool) or not isinstance(k, (int, float, np.number)) or not 0 < k <= 1:
        raise ValueError(f"k_scale must be a number in (0, 1] (--k-scale; Python: None, the same as scale), "
                         f"got {k_scale!r}")
    return float(k)


def lif_model(params: Params, *, tau_m: float | None = None, threshold_jump: float = 0.0,
              tau_threshold: float = 0.0) -> LIFModel:
    """The preset's LIF neuron in the description's units (ms, mV, pF).

    Parameters
    ----------
    params : Params
    tau_m : float, optional
        Membrane time constant, s (default: the preset's).
    threshold_jump : float
        Threshold adaptation jump per spike, mV.
    tau_threshold : float
        Its decay time constant, s.
    """
    return LIFModel(C_m=params["C"], tau_m=1e3 * (params["tau_m"] if tau_m is None else tau_m),
                    E_L=params["E_L"], V_reset=params["V_reset"], V_th=params["V_th"], t_ref=1e3 * params["t_ref"],
                    tau_syn=1e3 * params["tau_s"], threshold_jump=threshold_jump,
                    tau_threshold=1e3 * tau_threshold)


def microcircuit_connectivity(scale: float = SCALE, k_scale: float | None = K_SCALE,
                              params: Params | None = None) -> dict[str, Any]:
    """Sizes, in-degrees, synapse numbers, weights and DC compensation of the scaled circuit.

    Parameters
    ----------
    scale : float
        Neuron-number scaling in (0, 1].
    k_scale : float, optional
        In-degree scaling in (0, 1] (``None``: same as ``scale``).
    params : Params, optional
        Parameter set (default: the ``pd14`` preset); sizes from its area ``pd14``.

    Returns
    -------
    dict
        ``N`` (8,) scaled sizes; ``N_full`` (8,); ``K_full`` (8, 8) full-scale in-degrees
        (PD14's formula); ``K`` scaled in-degrees; ``n_syn`` (8, 8) synapse numbers
        ``round(K N_target)``; ``J_full_pA`` (8, 8) and ``J_pA`` (8, 8) mean PSC amplitudes
        before and after ``1 / sqrt(k)``; ``dc_pA`` (8,) DC compensation; ``K_bg`` (8,);
        ``J_bg_pA``; ``scale``, ``k_scale``.
    """
    params = load_preset("pd14") if params is None else params
    k = check_scaling(scale, k_scale, dict(zip(POPULATIONS, params.area_sizes("pd14"))),
                      what="the PD14 microcircuit")
    N_full = params.area_sizes("pd14").astype(float)
    N = np.maximum(1, np.round(N_full * scale)).astype(int)
    K_full = np.asarray(in_degrees(connection_probability(params), N_full))
    J_full = 1e3 * np.asarray(synaptic_strengths(params, N_full))  # nA -> pA
    K = K_full * k
    n_syn = np.round(K * N[:, None]).astype(np.int64)
    rates = params["published_rates"]
    dc = params["tau_s"] * (1 - np.sqrt(k)) * (K_full * J_full * rates[None, :]).sum(1)
    return {"N": N, "N_full": N_full, "K_full": K_full, "K": K, "n_syn": n_syn, "J_full_pA": J_full,
            "J_pA": J_full / np.sqrt(k), "dc_pA": dc, "K_bg": np.asarray(params["K_bg"], dtype=float),
            "J_bg_pA": 1e3 * params["J_E"], "k_scale": k, "scale": float(scale)}


def pd14_microcircuit(params: Params | None = None, scale: float = SCALE, k_scale: float | None = K_SCALE, *,
                      background: str | None = None, thalamic: tuple[float, float] | None = None) -> SpikingNetwork:
    """The PD14 microcircuit, scaled, as a backend-neutral description.

    Parameters
    ----------
    params : Params, optional
        Parameter set (default: the ``pd14`` preset).
    scale : float
        Neuron-number scaling in (0, 1] (1: 77,169 neurons with the ``pd14`` sizes).
    k_scale : float, optional
        In-degree scaling in (0, 1] (default 0.5; ``None``: same as ``scale``), with weights
        / sqrt(k) and DC compensation (module docstring).
    background : {"poisson", "dc"}, optional
        ``nu_bg`` per external synapse as independent Poisson input, or its mean
        ``tau_s K_bg J_E nu_bg`` as a DC current (default: the preset's ``background``).
    thalamic : (rate, t_on), optional
        A thalamic population of ``thalamic_size`` Poisson sources firing at ``rate`` Hz from
        ``t_on`` s, with ``round(K_in N)`` synapses onto L4E and L4I (amplitude ``J_E``,
        the excitatory delays).

    Returns
    -------
    SpikingNetwork
        Populations ``L23E`` ... ``L6I`` (annotated area ``pd14``, column 0).
    """
    params = load_preset("pd14") if params is None else params
    background = params["background"] if background is None else background
    if background not in ("poisson", "dc"):
        raise ValueError(f"background must be 'poisson' or 'dc', got {background!r}")
    if thalamic is not None:
        try:
            th_rate, th_on = (float(x) for x in thalamic)
        except (TypeError, ValueError):
            raise ValueError(f"thalamic must be (rate Hz, t_on s), got {thalamic!r}") from None
        if not (np.isfinite(th_rate) and th_rate >= 0 and np.isfinite(th_on) and th_on >= 0):
            raise ValueError(f"thalamic rate and onset must be finite and >= 0, got {thalamic!r}")
    conn = microcircuit_connectivity(scale, k_scale, params)
    model = lif_model(params)
    tau_s, nu_bg, J_E_pA = params["tau_s"], params["nu_bg"], 1e3 * params["J_E"]
    bg_dc = tau_s * conn["K_bg"] * J_E_pA * nu_bg if background == "dc" else np.zeros(N_POP)
    pops = tuple(Population(name, int(conn["N"][p]), model, I_dc=float(conn["dc_pA"][p] + bg_dc[p]),
                            V0_mean=params["V0_mean"], V0_sd=params["V0_sd"],
                            annotations={"area": "pd14", "column": 0, "population": name, "layer": LAYERS[p],
                                         "cell_type": CELL_TYPES[p]})
                 for p, name in enumerate(POPULATIONS))
    delays = {"E": 1e3 * params["delay_E"], "I": 1e3 * params["delay_I"]}
    conns = tuple(Connection(POPULATIONS[j], POPULATIONS[i], int(conn["n_syn"][i, j]), float(conn["J_pA"][i, j]),
                             params["J_rel_sd"], delays[CELL_TYPES[j]], params["delay_rel_sd"])
                  for i in range(N_POP) for j in range(N_POP) if conn["n_syn"][i, j] > 0)
    inputs = ()
    if background == "poisson":
        inputs = tuple(PoissonInput(name, float(conn["K_bg"][p]), RateProfile.constant(nu_bg), J_E_pA,
                                    name=f"background {name}") for p, name in enumerate(POPULATIONS))
    sources = ()
    if thalamic is not None:
        profile = RateProfile((0.0, 1e3 * th_on), (0.0, th_rate)) if th_on > 0 else RateProfile.constant(th_rate)
        sources = (PoissonSource("thalamus", int(params["thalamic_size"]), profile),)
        K_in = np.asarray(params["K_in"], dtype=float)
        conns += tuple(Connection("thalamus", pop, int(round(K_in[q] * conn["N"][pop_index(pop)])), J_E_pA,
                                  params["J_rel_sd"], delays["E"], params["delay_rel_sd"])
                       for q, pop in enumerate(("L4E", "L4I")))
    meta = {"model": "pd14_microcircuit", "preset": params.name, "scale": conn["scale"], "k_scale": conn["k_scale"],
            "background": background, "thalamic": list(thalamic) if thalamic is not None else None}
    return SpikingNetwork("PD14 microcircuit", pops, conns, inputs, sources, metadata=meta)


def simulate_microcircuit(scale: float = SCALE, duration: float = 2.5, *, k_scale: float | None = K_SCALE,
                          seed: int = 0, background: str | None = None, backend: str = "brian2",
                          device: str | None = None, directory: str | None = None, dt: float = 1e-4,
                          threads: int = 1, thalamic: tuple[float, float] | None = None,
                          params: Params | None = None):
    """Build the PD14 microcircuit and run it (:func:`pd14_microcircuit` + :func:`simulate_spiking`).

    Parameters
    ----------
    scale, k_scale, background, thalamic, params
        See :func:`pd14_microcircuit`.
    duration : float
        Simulated time, s, including any transient the analysis discards.
    seed : int
        Seed of every random draw (connectivity, weights, delays, initial V, Poisson input).
    backend : {"brian2", "nest"}
    device : str, optional
        The backend's device (Brian2: ``"cpp_standalone"`` or ``"runtime"``; NEST has none);
        None: the backend's default.
    directory : str, optional
        Brian2 cpp_standalone project directory (default: a temporary one, removed).
    dt : float
        Time step, s.
    threads : int
        OpenMP threads (Brian2 cpp_standalone, NEST).

    Returns
    -------
    SpikingResult
    """
    check_run(duration, backend=backend, device=device, seed=seed, threads=threads, dt=dt)
    net = pd14_microcircuit(params, scale, k_scale, background=background, thalamic=thalamic)
    return simulate_spiking(net, duration, backend=backend, device=device, seed=seed, threads=threads, dt=dt,
                            directory=directory)
