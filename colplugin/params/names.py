"""Names, layers and cell types of the eight populations of a cortical column.

The order is fixed everywhere in colplugin (index 0..7)::

    L23E L23I L4E L4I L5E L5I L6E L6I

Matrices are indexed ``[target, source]``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

#: Population names in their canonical order.
POPULATIONS: tuple[str, ...] = ("L23E", "L23I", "L4E", "L4I", "L5E", "L5I", "L6E", "L6I")
#: Layer of each population.
LAYERS: tuple[str, ...] = ("L23", "L23", "L4", "L4", "L5", "L5", "L6", "L6")
#: Cell type of each population ("E" excitatory, "I" inhibitory).
CELL_TYPES: tuple[str, ...] = ("E", "I", "E", "I", "E", "I", "E", "I")
#: Sign of each population's outgoing connections (Dale's law): +1 excitatory, -1 inhibitory.
SIGNS: np.ndarray = np.array([+1.0, -1.0, +1.0, -1.0, +1.0, -1.0, +1.0, -1.0])
#: Number of populations per column.
N_POP: int = len(POPULATIONS)

_ALIASES = {"L2/3E": "L23E", "L2/3I": "L23I"}


def pop_index(name: str | int) -> int:
    """Index (0..7) of a population given by name (``"L23E"``, ``"L2/3E"``) or index.

    Raises
    ------
    KeyError
        If the name is not one of :data:`POPULATIONS`.
    """
    if isinstance(name, (int, np.integer)):
        if not 0 <= int(name) < N_POP:
            raise KeyError(f"population index {name} is out of range 0..{N_POP - 1}")
        return int(name)
    key = _ALIASES.get(str(name), str(name))
    try:
        return POPULATIONS.index(key)
    except ValueError:
        raise KeyError(
            f"unknown population {name!r}; use one of {', '.join(POPULATIONS)}"
        ) from None


def pop_indices(names: Sequence[str | int] | str | int) -> list[int]:
    """Indices of one or several populations (see :func:`pop_index`)."""
    if isinstance(names, (str, int, np.integer)):
        names = [names]
    return [pop_index(n) for n in names]


class PopulationMatrix(np.ndarray):
    """An 8x8 ``[target, source]`` matrix that can also be indexed by population name.

    ``W["L23E", "L4E"]`` is the entry for target L2/3E and source L4E; integer and
    slice indexing work as for any :class:`numpy.ndarray`.
    """

    def __new__(cls, values: np.ndarray) -> "PopulationMatrix":
        arr = np.asarray(values, dtype=float)
        if arr.shape != (N_POP, N_POP):
            raise ValueError(f"a population matrix must be {N_POP}x{N_POP}, got shape {arr.shape}")
        return arr.view(cls)

    @staticmethod
    def _key(key):
        if isinstance(key, tuple):
            return tuple(pop_index(k) if isinstance(k, str) else k for k in key)
        return pop_index(key) if isinstance(key, str) else key

    def __getitem__(self, key):
        out = super().__getitem__(self._key(key))
        return out.view(np.ndarray) if isinstance(out, np.ndarray) else out

    def __setitem__(self, key, value) -> None:
        super().__setitem__(self._key(key), value)

    def __array_wrap__(self, obj, context=None, return_scalar=False):
        # arithmetic on a PopulationMatrix returns a plain array
        out = np.asarray(obj).view(np.ndarray)
        return out[()] if return_scalar else out


class PopulationVector(np.ndarray):
    """A length-8 vector that can also be indexed by population name (``v["L4E"]``)."""

    def __new__(cls, values: np.ndarray) -> "PopulationVector":
        arr = np.asarray(values, dtype=float)
        if arr.shape != (N_POP,):
            raise ValueError(f"a population vector must have {N_POP} entries, got shape {arr.shape}")
        return arr.view(cls)

    def __getitem__(self, key):
        out = super().__getitem__(pop_index(key) if isinstance(key, str) else key)
        return out.view(np.ndarray) if isinstance(out, np.ndarray) else out

    def __setitem__(self, key, value) -> None:
        super().__setitem__(pop_index(key) if isinstance(key, str) else key, value)

    def __array_wrap__(self, obj, context=None, return_scalar=False):
        out = np.asarray(obj).view(np.ndarray)
        return out[()] if return_scalar else out
