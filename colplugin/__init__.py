"""colplugin: laminar cortical columns as trainable units, from PyTorch to Brian2 and Neo."""

from __future__ import annotations

__version__ = "0.1.0"

from .params import Params, ParameterError, load_params, load_preset, PRESETS
from .populations import POPULATIONS
from .network import Area, ColumnNetwork, Feedback, Feedforward, Input, Lateral, Projection
from .stimulus import Stimulus
from .simulate import SimulationError, Solver, Trajectory, simulate

__all__ = [
    "__version__",
    "Params", "ParameterError", "load_params", "load_preset", "PRESETS", "POPULATIONS",
    "Area", "ColumnNetwork", "Feedback", "Feedforward", "Input", "Lateral", "Projection",
    "Stimulus", "Solver", "SimulationError", "Trajectory", "simulate",
]
