"""Solving a network's ODE: strategies (how to integrate, how to differentiate) and ``simulate``."""

from .simulate import Trajectory, simulate
from .strategies import Adjoint, Direct, Engine, ErrorControl, FixedStep, SimulationError, Solver

__all__ = ["simulate", "Trajectory", "Solver", "FixedStep", "ErrorControl", "Engine", "Direct", "Adjoint",
           "SimulationError"]
