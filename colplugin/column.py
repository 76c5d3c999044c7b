"""One column: its eight populations (names, layers, E/I) and fixed intra-column connectivity
(in-degrees, synaptic strengths and weights).

All matrices are ``[target, source]`` :class:`~colplugin.populations.PopulationMatrix`
objects, so ``W["L23E", "L4E"]`` reads the L4E -> L2/3E entry.

References
----------
.. [PD14] Potjans, T. C., & Diesmann, M. (2014). The cell-type specific cortical
   microcircuit. Cerebral Cortex, 24(3), 785-806.
.. [Evers23] Evers, K., Peters, J., & Senden, M. (2023). Layered structure of cortex
   explains reversal dynamics in bistable perception. bioRxiv 2023.09.19.558418.
"""

from __future__ import annotations

import numpy as np

from .params import Params
from .params.names import (CELL_TYPES, LAYERS, N_POP, POPULATIONS, SIGNS, PopulationMatrix, PopulationVector,
                           pop_index, pop_indices)

__all__ = [
    "POPULATIONS", "LAYERS", "CELL_TYPES", "SIGNS", "N_POP", "pop_index", "pop_indices",
    "PopulationMatrix", "PopulationVector",
    "column_sizes",
    "connection_probability",
    "in_degrees",
    "synaptic_strengths",
    "intra_column_weights",
    "background_weights",
    "input_weights",
]

_L23E, _L4E, _L4I = pop_index("L23E"), pop_index("L4E"), pop_index("L4I")


def column_sizes(params: Params, area: str, n_columns: int = 1, split: bool = True) -> PopulationVector:
    """Neurons per population of one column of ``area``.

    dL25's task networks split an area's neurons among its columns: with ``split`` an
    area of ``n_columns`` columns uses ``N / n_columns`` per column.
    """
    if n_columns < 1:
        raise ValueError(f"n_columns must be >= 1, got {n_columns}")
    N = params.area_sizes(area).astype(float)
    return PopulationVector(N / n_columns if split else N)


def connection_probability(params: Params) -> PopulationMatrix:
    """Connection probabilities with the preset's L4E -> L2/3E rule applied.

    With ``l4e_to_l23e_mode = "probability"`` (dL25/Evers23) the probability
    ``P["L23E", "L4E"]`` is multiplied by ``l4e_to_l23e_factor``; with ``"weight"``
    (PD14) it is left alone and :func:`synaptic_strengths` scales the weight instead.
    """
    P = PopulationMatrix(params["connection_probability"])
    if params["l4e_to_l23e_mode"] == "probability":
        P["L23E", "L4E"] = P["L23E", "L4E"] * params["l4e_to_l23e_factor"]
    return P


def in_degrees(P: np.ndarray, N: np.ndarray) -> PopulationMatrix:
    """In-degrees K (synapses per target neuron) from PD14's total-synapse formula.

    ``K_ij = ln(1 - P_ij) / ln(1 - 1 / (N_i N_j)) / N_i`` (PD14, eq. 1), with ``N_i``
    the target and ``N_j`` the source population size.

    Parameters
    ----------
    P : array (8, 8)
        Connection probabilities ``[target, source]``.
    N : array (8,)
        Population sizes (neurons).
    """
    P = np.asarray(P, dtype=float)
    N = np.asarray(N, dtype=float)
    NiNj = np.outer(N, N)
    total_synapses = np.log1p(-P) / np.log1p(-1.0 / NiNj)
    return PopulationMatrix(total_synapses / N[:, None])


def synaptic_strengths(params: Params, N: np.ndarray) -> PopulationMatrix:
    """Synaptic strengths J (nA) by source type.

    Excitatory sources: ``+J_E``. Inhibitory sources: ``-(N_E / N_I)`` of the source's
    layer times ``J_E`` (``inhibition = "layer_ratio"``, dL25/Evers23) or ``g * J_E``
    (``inhibition = "g"``, PD14). With ``l4e_to_l23e_mode = "weight"`` the L4E -> L2/3E
    strength is multiplied by ``l4e_to_l23e_factor``.
    """
    N = np.asarray(N, dtype=float)
    J_E = params["J_E"]
    J = np.empty((N_POP, N_POP))
    for j in range(N_POP):
        if CELL_TYPES[j] == "E":
            J[:, j] = J_E
        elif params["inhibition"] == "layer_ratio":
            J[:, j] = -(N[j - 1] / N[j]) * J_E  # the E population precedes its layer's I population
        else:
            J[:, j] = params["g"] * J_E
    J = PopulationMatrix(J)
    if params["l4e_to_l23e_mode"] == "weight":
        J["L23E", "L4E"] = J["L23E", "L4E"] * params["l4e_to_l23e_factor"]
    return J


def intra_column_weights(params: Params, N: np.ndarray) -> PopulationMatrix:
    """Fixed recurrent weights W = K * J (nA per Hz of presynaptic rate) of one column."""
    return PopulationMatrix(in_degrees(connection_probability(params), N) * synaptic_strengths(params, N))


def background_weights(params: Params) -> PopulationVector:
    """Background weights W_bg = K_bg * J_E (nA), one per population."""
    return PopulationVector(np.asarray(params["K_bg"], dtype=float) * params["J_E"])


def input_weights(params: Params) -> PopulationVector:
    """Fixed thalamic stimulus weights (nA): ``K_in * J_E`` into L4E and L4I, zero elsewhere."""
    w = np.zeros(N_POP)
    w[_L4E], w[_L4I] = np.asarray(params["K_in"], dtype=float) * params["J_E"]
    return PopulationVector(w)
