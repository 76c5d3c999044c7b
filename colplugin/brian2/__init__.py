"""Brian2 export of column networks (rate model with physical units)."""

from .export import Brian2Run, to_brian2
from .script import export_brian2_script

__all__ = ["to_brian2", "Brian2Run", "export_brian2_script"]
