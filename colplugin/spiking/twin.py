"""The spiking twin of a (trained) ColumnNetwork: the same model in LIF neurons.

The DMF input current ``I_i = tau_s (sum_j W_ij r_j + W_bg,i nu_bg + sum_k W_in,ik u_k)``
with ``W_ij = K_ij J_ij`` is the mean input of a LIF neuron that receives ``K_ij`` synapses
of amplitude ``J_ij`` (exponential currents with time constant ``tau_s``) from population
``j`` firing at ``r_j``. The twin keeps every K and J:

- every column is a microcircuit of eight LIF populations with the column's sizes
  (:func:`colplugin.column.column_sizes`, dL25's split rule included) times ``scale``; its
  in-degrees and strengths are those of the DMF column
  (:func:`~colplugin.column.in_degrees`, :func:`~colplugin.column.synaptic_strengths`);
  the LIF neuron is the preset's (``C``, ``tau_m``, ``E_L``, ``V_reset``, ``V_th``,
  ``t_ref``, ``tau_s``), delays and PSC spread too;
- a learned inter-column weight ``W`` (nA per Hz, signed by Dale's law) becomes
  ``K = |W| / J_E`` synapses per target neuron of amplitude ``sign(W) J_E``;
- an input channel with weight ``W_in`` becomes ``K_in = W_in / J_E`` independent Poisson
  sources per target neuron at the channel's rate, piecewise constant as the stimulus;
- background: ``K_bg`` Poisson sources at ``nu_bg`` (amplitude ``J_E``), or their mean
  as a DC current when the preset's ``background`` is ``"dc"``;
- adaptation ``kappa`` (``tau_a dA/dt = -A + kappa r``) becomes a threshold that jumps by
  ``kappa / tau_a`` at each spike and decays with ``tau_a``: its mean is ``kappa r``, as
  ``A``'s. Its initial value is the DMF's initial ``A`` (0 for a network's
  ``initial_state``). NEST approximates it (see :mod:`colplugin.spiking.nest`);
- scaling down (PD14's method, as :mod:`colplugin.spiking.microcircuit`): in-degrees of
  the recurrent connections (intra- and inter-column) times ``k_scale``, weights divided
  by ``sqrt(k_scale)``, and the missing mean ``tau_s (1 - sqrt k) sum_j K_ij J_ij nu_j`` as
  a DC current, with ``nu`` the DMF's mean rates over the trial (or ``reference_rates``).
  Background and input keep their full in-degrees. The compensation fixes the working
  point, not the gain: with ``k < 1`` a change of the recurrent rates acts through
  ``sqrt(k)`` of the recurrent input only.

A network with synaptic gating keeps it where the backend can (:func:`twin_gating`): each
neuron's gating variable jumps by ``gamma_G (1 - s)`` at its spikes and decays with ``tau_G``,
so its mean obeys the rate model's dG/dt, and an inter-column synapse of amplitude ``J``
carries ``J tau_s s / (gamma_G tau_G)``; where ``gamma_G > 1`` (more than a neuron's variable can
rise per spike) the source population shares one variable, ``+ gamma_G (1 - G) / N`` per spike.

The twin describes one trial of the stimulus; build one twin per trial.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from ..column import column_sizes, connection_probability, in_degrees, synaptic_strengths
from ..network import ColumnNetwork
from ..params.names import CELL_TYPES, LAYERS, N_POP, POPULATIONS, SIGNS
from ..solve.simulate import simulate
from ..stimulus import Stimulus
from .microcircuit import lif_model
from .network import (K_SCALE, SCALE, Connection, PoissonInput, Population, RateProfile, SpikingNetwork,
                      SynapticGatingModel, check_scaling)

__all__ = ["spiking_twin", "twin_rates", "twin_gating"]


def twin_rates(network: ColumnNetwork, stimulus: Stimulus | None = None, trial: int = 0,
               duration: float = 1.0) -> np.ndarray:
    """Mean DMF rates (Hz, one per population) of one trial over ``[0, duration]`` s.

    The network starts from its ``initial_state`` (as the tasks' trials do).
    """
    stim = _trial_stimulus(network, stimulus, trial)
    with torch.no_grad():
        traj = simulate(network, stim, duration=duration)
        return traj.rate[:, 0].mean(0).cpu().numpy()


def _trial_stimulus(network: ColumnNetwork, stimulus: Stimulus | None, trial: int) -> Stimulus:
    if stimulus is None:
        return Stimulus.none(1, network.n_inputs)
    if not isinstance(stimulus, Stimulus):
        raise TypeError(f"stimulus must be a colplugin Stimulus, got {type(stimulus).__name__}")
    if stimulus.n_inputs != network.n_inputs:
        raise ValueError(f"the stimulus has {stimulus.n_inputs} input channels but the network reads "
                         f"{network.n_inputs}")
    if isinstance(trial, bool) or not isinstance(trial, (int, np.integer)) or not 0 <= trial < stimulus.batch_size:
        raise ValueError(f"trial must be a whole number in [0, {stimulus.batch_size}) (the stimulus has "
                         f"{stimulus.batch_size} trials), got {trial!r}")
    return stimulus.select([int(trial)])


def twin_full_sizes(network) -> dict[str, float]:
    """Neurons at full size (scale 1) of every population of a ColumnNetwork's spiking twin, by channel name.

    The sizes :func:`colplugin.spiking.spiking_twin` scales: each column's
    (:func:`colplugin.column.column_sizes`, dL25's split rule included).
    """
    names = network.channel_names
    out: dict[str, float] = {}
    for area_name, area in network.areas.items():
        N_full = np.asarray(column_sizes(network.params, area.kind, area.n_columns, area.split), dtype=float)
        for c in range(area.n_columns):
            o = network.index(area_name, c, 0)
            out.update({names[o + i]: float(N_full[i]) for i in range(N_POP)})
    return out


def _refuse_saturation(network: ColumnNetwork) -> None:
    """Refuse a network with a finite ``r_max``: LIF neurons have no counterpart for saturated rates."""
    r_max = np.asarray(network.params["r_max"], dtype=float)
    if np.isfinite(r_max).any():
        pops = [POPULATIONS[i] for i in np.nonzero(np.isfinite(r_max))[0]]
        raise ValueError(f"this network saturates the rates of {', '.join(pops)} (r_max = "
                         f"{', '.join(f'{x:g} Hz' for x in r_max[np.isfinite(r_max)])}), which LIF neurons have no "
                         "counterpart for: the spiking twin would not be this network's twin. Twin a network "
                         "trained without r_max (its parameters with r_max = inf)")


def _reference_rates(network: ColumnNetwork, stim: Stimulus, k: float, duration: float,
                     reference_rates: Sequence[float] | None) -> np.ndarray:
    """The rates (Hz, one per population) of the DC compensation.

    ``reference_rates`` checked, or the DMF's mean rates of the trial over ``duration`` s
    (zeros when ``k = 1``: nothing to compensate).
    """
    P = network.n_populations
    if reference_rates is None:
        if not (np.isfinite(duration) and duration > 0):
            raise ValueError(f"duration must be a positive time in s, got {duration!r}")
        return twin_rates(network, stim, 0, duration) if k < 1 else np.zeros(P)
    nu = np.asarray(reference_rates, dtype=float)
    if nu.shape != (P,) or not np.all(np.isfinite(nu)) or np.any(nu < 0):
        raise ValueError(f"reference_rates must be {P} finite rates >= 0 Hz (one per population), "
                         f"got shape {nu.shape}")
    return nu


def _initial_adaptation(P: int, initial_A: Sequence[float] | None) -> np.ndarray:
    """The initial threshold offsets (mV, one per population of ``P``), checked; default zeros."""
    A0 = np.zeros(P) if initial_A is None else np.asarray(initial_A, dtype=float)
    if A0.shape != (P,) or not np.all(np.isfinite(A0)) or np.any(A0 < 0):
        raise ValueError(f"initial_A must be {P} finite values >= 0 mV, got shape {A0.shape}")
    return A0


def _microcircuits(network: ColumnNetwork, scale: float, k: float, nu: np.ndarray, delays: dict,
                   sizes: np.ndarray, dc: np.ndarray) -> list[Connection]:
    """The intra-column connections of every column; fills ``sizes`` and adds to ``dc`` (pA).

    Parameters
    ----------
    network : ColumnNetwork
    scale, k : float
        Neuron and in-degree scaling.
    nu : numpy.ndarray
        Reference rates of the DC compensation, Hz.
    delays : dict
        Mean delay (ms) by presynaptic cell type ``"E"``, ``"I"``.
    sizes, dc : numpy.ndarray
        Neurons and DC current (pA) per population, written in place.
    """
    p = network.params
    names = network.channel_names
    tau_s = p["tau_s"]
    P_conn = connection_probability(p)
    conns: list[Connection] = []
    for area_name, area in network.areas.items():
        N_full = np.asarray(column_sizes(p, area.kind, area.n_columns, area.split), dtype=float)
        N = np.maximum(1, np.round(N_full * scale)).astype(int)
        K_full = np.asarray(in_degrees(P_conn, N_full))
        J_full = 1e3 * np.asarray(synaptic_strengths(p, N_full))
        for c in range(area.n_columns):
            o = network.index(area_name, c, 0)
            sizes[o:o + N_POP] = N
            dc[o:o + N_POP] += tau_s * (1 - np.sqrt(k)) * (K_full * J_full * nu[None, o:o + N_POP]).sum(1)
            for i in range(N_POP):
                for j in range(N_POP):
                    n = int(round(K_full[i, j] * k * N[i]))
                    if n:
                        conns.append(Connection(names[o + j], names[o + i], n, J_full[i, j] / np.sqrt(k),
                                                p["J_rel_sd"], delays[CELL_TYPES[j]], p["delay_rel_sd"]))
    return conns


def _inter_column(network: ColumnNetwork, k: float, nu: np.ndarray, delays: dict, sizes: np.ndarray,
                  dc: np.ndarray, gated: bool = False) -> list[Connection]:
    """The learned inter-column projections as ``K = |W| / J_E`` synapses of amplitude ``sign J_E`` (pA).

    Adds their DC compensation (pA) to ``dc``; ``nu`` (Hz), ``delays`` (ms) and ``sizes`` as
    :func:`_microcircuits`'. Refuses a weight that breaks Dale's law. ``gated``: the synapses act
    through their sources' gating variables, and the compensation uses the gated drive at ``nu``
    (``G / (gamma tau) = nu / (1 + gamma tau nu)``, the equilibrium of G at the mean rate).
    """
    p = network.params
    names = network.channel_names
    J_E, tau_s = 1e3 * p["J_E"], p["tau_s"]
    with torch.no_grad():
        W_rec = network._weights("rec").cpu().numpy()
    src = network.rec_src.cpu().numpy()
    tgt = network.rec_tgt.cpu().numpy()
    K_inter: dict[tuple[int, int], float] = {}
    for s, t, w in zip(src, tgt, W_rec):
        if w * SIGNS[s % N_POP] < 0:
            raise ValueError(f"inter-column weight {names[s]} -> {names[t]} = {w} nA/Hz breaks Dale's law")
        K_inter[(s, t)] = K_inter.get((s, t), 0.0) + abs(w) / p["J_E"]
    drive = nu
    if gated:
        gt = float(p["gamma_G"]) * float(p["tau_G"])
        drive = nu / (1.0 + gt * nu)
    conns: list[Connection] = []
    for (s, t), K in K_inter.items():
        sign = SIGNS[s % N_POP]
        dc[t] += tau_s * (1 - np.sqrt(k)) * K * sign * J_E * drive[s]
        n = int(round(K * k * sizes[t]))
        if n:
            conns.append(Connection(names[s], names[t], n, sign * J_E / np.sqrt(k), p["J_rel_sd"],
                                    delays[CELL_TYPES[s % N_POP]], p["delay_rel_sd"], gated=gated))
    return conns


def twin_gating(network: ColumnNetwork, backend_gating: bool = True) -> tuple[SynapticGatingModel | None, str]:
    """How the twin carries the network's synaptic gating: the model (or None) and a sentence for reports.

    A gated network's inter-column synapses act through every source neuron's gating variable
    (``s += gamma (1 - s)`` at each spike, decay ``tau``), whose mean is the rate model's G, where
    the backend has gated connections (``backend_gating``) and ``gamma <= 1`` (a jump towards 1 per
    spike). For ``gamma > 1`` a neuron's own variable would overshoot 1, so the variable is shared by
    the source population (``G += gamma (1 - G) / N`` at each of its ``N`` neurons' spikes, the same
    mean at the population rate). Without gated connections on the backend the projections stay
    ungated spiking synapses and the twin measures the network with its learned weights acting
    through the presynaptic spikes: the gated drive where ``gamma tau r << 1``, without its
    saturation and its slow decay.
    """
    g = network.gating
    if g is None:
        return None, "no synaptic gating"
    tau, gamma = float(g.tau), float(g.gamma)
    if not backend_gating:
        return None, ("gating not mapped: this spiking backend has no gated connections (NEST would need a NESTML "
                      "neuron; use brian2). The twin's inter-column synapses are ungated (the gated drive where "
                      f"gamma tau r << 1, i.e. below about {1 / (gamma * tau):.3g} Hz, without its saturation and "
                      "its slow decay)")
    if gamma > 1:
        return (SynapticGatingModel(1e3 * tau, gamma, shared=True),
                f"gating mapped: gamma_G = {gamma:g} exceeds 1, more than a neuron's own gating variable can rise "
                f"per spike, so each source population shares one (tau {1e3 * tau:g} ms, gamma {gamma:g} / N per "
                "spike of its N neurons; its mean is the rate model's G at the population rate) that carries the "
                "inter-column synapses")
    return (SynapticGatingModel(1e3 * tau, gamma),
            f"gating mapped: each neuron's gating variable (tau {1e3 * tau:g} ms, gamma {gamma:g} per spike) "
            "carries the inter-column synapses")


def _stimulus_inputs(network: ColumnNetwork, stim: Stimulus) -> list[PoissonInput]:
    """Each input channel as ``K_in = W_in / J_E`` Poisson sources per target neuron at the channel's rate (Hz).

    Refuses a negative input weight.
    """
    p = network.params
    names = network.channel_names
    J_E = 1e3 * p["J_E"]  # pA
    with torch.no_grad():
        W_in = network._weights("inp").cpu().numpy()
    times_ms = tuple(1e3 * stim.times.cpu().numpy())
    u = stim.rates[0].cpu().numpy()  # (segments, channels)
    K_in: dict[tuple[int, int], float] = {}
    for ch, t, w in zip(network.inp_src.cpu().numpy(), network.inp_tgt.cpu().numpy(), W_in):
        if w < 0:
            raise ValueError(f"input weight input[{ch}] -> {names[t]} = {w} nA/Hz is negative; inputs excite")
        K_in[(int(ch), int(t))] = K_in.get((int(ch), int(t)), 0.0) + w / p["J_E"]
    return [PoissonInput(names[t], K, RateProfile(times_ms, tuple(u[:, ch])), J_E, name=f"input[{ch}]")
            for (ch, t), K in K_in.items() if K > 0]


def _background(network: ColumnNetwork, background: str, dc: np.ndarray) -> list[PoissonInput]:
    """``K_bg`` Poisson sources at ``nu_bg`` per neuron, or (``"dc"``) their mean added to ``dc`` (pA)."""
    p = network.params
    names = network.channel_names
    J_E = 1e3 * p["J_E"]  # pA
    K_bg = np.tile(np.asarray(p["K_bg"], dtype=float), network.n_columns)
    if background == "dc":
        dc += p["tau_s"] * K_bg * J_E * p["nu_bg"]
        return []
    return [PoissonInput(names[i], float(K_bg[i]), RateProfile.constant(p["nu_bg"]), J_E,
                         name=f"background {names[i]}") for i in range(network.n_populations) if K_bg[i] > 0]


def _twin_populations(network: ColumnNetwork, sizes: np.ndarray, dc: np.ndarray, A0: np.ndarray) -> list[Population]:
    """The LIF populations: sizes, DC current (pA), initial threshold offsets ``A0`` (mV), annotations.

    A population with adaptation ``kappa > 0`` gets a threshold jump ``kappa / tau_a`` (mV)
    decaying with ``tau_a``.
    """
    p = network.params
    names = network.channel_names
    channels = network.channels
    kappa = np.asarray(p["kappa"], dtype=float)
    pops = []
    for i in range(network.n_populations):
        q = i % N_POP
        adapt = kappa[q] > 0
        model = lif_model(p, threshold_jump=kappa[q] / p["tau_a"] if adapt else 0.0,
                          tau_threshold=p["tau_a"] if adapt else 0.0)
        ch = channels[i]
        pops.append(Population(names[i], int(sizes[i]), model, I_dc=float(dc[i]), V0_mean=p["V0_mean"],
                               V0_sd=p["V0_sd"], theta0=float(A0[i]) if adapt else 0.0,
                               annotations={"area": ch["area"], "kind": ch["kind"], "column": ch["column"],
                                            "population": POPULATIONS[q], "layer": LAYERS[q],
                                            "cell_type": CELL_TYPES[q]}))
    return pops


def spiking_twin(network: ColumnNetwork, stimulus: Stimulus | None = None, *, trial: int = 0,
                 scale: float = SCALE, k_scale: float | None = K_SCALE, duration: float = 1.0,
                 reference_rates: Sequence[float] | None = None, initial_A: Sequence[float] | None = None,
                 background: str | None = None, backend_gating: bool = True) -> SpikingNetwork:
    """The spiking twin of a ColumnNetwork for one trial of a stimulus (module docstring).

    Parameters
    ----------
    network : ColumnNetwork
        A (trained) network; its parameters, areas and current weights are used.
    stimulus : Stimulus, optional
        Input rates (Hz); default: no input.
    trial : int
        Which trial of the stimulus.
    scale : float
        Neuron-number scaling in (0, 1] of every column.
    k_scale : float, optional
        In-degree scaling in (0, 1] of the recurrent connections (``None``: same as
        ``scale``), with weights / sqrt(k) and DC compensation.
    duration : float
        Length (s) of the DMF run whose mean rates set the DC compensation (when
        ``reference_rates`` is not given and ``k_scale < 1``).
    reference_rates : sequence of float, optional
        Rates (Hz, one per population of the network) for the DC compensation.
    initial_A : sequence of float, optional
        Initial adaptation (mV, one per population): the initial threshold offsets
        (default 0, as ``network.initial_state()``).
    background : {"poisson", "dc"}, optional
        Default: the preset's.
    backend_gating : bool
        Whether the backend that will run the twin has gated connections
        (:attr:`~colplugin.spiking.SpikingBackend.gating`); see :func:`twin_gating` for how a
        gated network is carried (``metadata["gating"]`` says which way).

    Returns
    -------
    SpikingNetwork
        Populations named ``"area[column].population"`` (``network.channel_names``),
        annotated with area, column, population, layer and cell type.
    """
    if not isinstance(network, ColumnNetwork):
        raise TypeError(f"network must be a ColumnNetwork, got {type(network).__name__}")
    k = check_scaling(scale, k_scale, twin_full_sizes(network), what="this network's spiking twin")
    _refuse_saturation(network)
    stim = _trial_stimulus(network, stimulus, trial)
    p = network.params
    background = p["background"] if background is None else background
    if background not in ("poisson", "dc"):
        raise ValueError(f"background must be 'poisson' or 'dc', got {background!r}")
    P = network.n_populations
    nu = _reference_rates(network, stim, k, duration, reference_rates)
    A0 = _initial_adaptation(P, initial_A)

    delays = {"E": 1e3 * p["delay_E"], "I": 1e3 * p["delay_I"]}
    sizes = np.zeros(P, dtype=int)
    dc = np.zeros(P)  # pA
    conns = _microcircuits(network, scale, k, nu, delays, sizes, dc)
    gating, gating_note = twin_gating(network, backend_gating)
    conns += _inter_column(network, k, nu, delays, sizes, dc, gated=gating is not None)
    inputs = _stimulus_inputs(network, stim)
    inputs += _background(network, background, dc)
    pops = _twin_populations(network, sizes, dc, A0)
    meta: dict[str, Any] = {"model": "spiking_twin", "preset": p.name, "scale": float(scale), "k_scale": k,
                            "trial": int(trial), "background": background, "reference_rates": nu.tolist(),
                            "n_columns": network.n_columns, "n_inputs": network.n_inputs, "gating": gating_note}
    return SpikingNetwork("spiking twin", tuple(pops), tuple(conns), tuple(inputs), metadata=meta, gating=gating)
