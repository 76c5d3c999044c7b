"""Brian2 export of column networks (rate model with physical units)."""

from .export import Brian2Run, to_brian2

__all__ = ["to_brian2", "Brian2Run"]
