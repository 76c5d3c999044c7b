"""colplugin: laminar cortical columns as trainable units, from PyTorch to Brian2 and Neo."""

from __future__ import annotations

__version__ = "0.1.0"

from .params import Params, ParameterError, load_params, load_preset, PRESETS
from .populations import POPULATIONS
from .network import Area, ColumnNetwork, Feedback, Feedforward, Input, Lateral, Projection
from .stimulus import Stimulus
from .simulate import SimulationError, Solver, Trajectory, simulate
from .train import train, load_checkpoint
from . import tasks
from .brian2 import to_brian2
from .neo import from_neo, load_nix, save_nix, to_neo

__all__ = [
    "__version__",
    "Params", "ParameterError", "load_params", "load_preset", "PRESETS", "POPULATIONS",
    "Area", "ColumnNetwork", "Feedback", "Feedforward", "Input", "Lateral", "Projection",
    "Stimulus", "Solver", "SimulationError", "Trajectory", "simulate",
    "train", "load_checkpoint", "tasks", "to_brian2", "to_neo", "from_neo", "save_nix", "load_nix",
]
