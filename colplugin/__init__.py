"""colplugin: laminar cortical columns as trainable units, from PyTorch to Brian2 and Neo.

The data flow, and the import order of the subpackages (nothing imports a later one)::

    params -> column -> siegert -> transfers (the rate functions) -> field -> network -> stimulus
           -> _neo (Neo build/read) -> solve
           -> plotting -> training -> tasks -> export (Brian2 rate model, Neo files)
           -> spiking -> analysis -> experiments -> cli

Each module imports the colplugin modules it uses at its top (tests/test_layout.py checks both
rules): the CLI imports them inside its commands, for the start-up time of ``colplugin``, and
any other import inside a function says on its line why it must stay there.
Third-party packages that load slowly (Brian2, NEST, matplotlib, Neo, Elephant, pynwb,
scikit-learn, scipy.stats) are imported inside the functions that use them, so that
``import colplugin`` loads none of them.
"""

from __future__ import annotations

from ._version import __version__
from .params import PRESETS, ParameterError, Params, load_params, load_preset
from .column import POPULATIONS
from .transfers import DMFTransfer, SiegertTransfer, Transfer
from .network import Area, ColumnNetwork, Feedback, Feedforward, Input, Lateral, Projection
from .stimulus import MembraneNoise, Stimulus
from .solve import Adjoint, Direct, Engine, ErrorControl, FixedStep, SimulationError, Solver, Trajectory, simulate
from .training import load_checkpoint, train
from . import tasks
from .export import from_neo, load_nix, load_nwb, save_nix, save_nwb, to_brian2, to_neo

__all__ = [
    "__version__",
    "Params", "ParameterError", "load_params", "load_preset", "PRESETS", "POPULATIONS",
    "Transfer", "DMFTransfer", "SiegertTransfer",
    "Area", "ColumnNetwork", "Feedback", "Feedforward", "Input", "Lateral", "Projection",
    "Stimulus", "MembraneNoise", "Solver", "FixedStep", "ErrorControl", "Engine", "Direct", "Adjoint",
    "SimulationError", "Trajectory", "simulate",
    "train", "load_checkpoint", "tasks", "to_brian2", "to_neo", "from_neo", "save_nix", "load_nix",
    "save_nwb", "load_nwb",
]
