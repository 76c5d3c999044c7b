"""Spiking references: the PD14 microcircuit (and spiking twins of trained networks)."""

from .microcircuit import MicrocircuitResult, simulate_microcircuit

__all__ = ["simulate_microcircuit", "MicrocircuitResult"]
