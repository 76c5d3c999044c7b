"""Exports of a trained network: Brian2 rate model (objects and standalone script), NEST rate model
(LIF mean-field columns: ``siegert_neuron``), Neo/NIX/NWB."""

from .brian2 import Brian2Run, to_brian2
from .brian2_script import export_brian2_script
from .neo import from_neo, load_nix, load_nwb, save_nix, save_nwb, to_neo
from .nest_rate import NestRateRun, to_nest_rate

__all__ = ["to_brian2", "Brian2Run", "export_brian2_script", "to_nest_rate", "NestRateRun", "to_neo", "from_neo",
           "save_nix", "load_nix", "save_nwb", "load_nwb"]
