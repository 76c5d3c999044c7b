"""Spiking references: a backend-neutral spiking-network description, its builders and backends.

- :mod:`~colplugin.spiking.network`: :class:`SpikingNetwork` (populations of LIF neurons,
  connections as synapse counts with weight and delay distributions, Poisson and DC
  inputs, Poisson source populations, recorders).
- :mod:`~colplugin.spiking.microcircuit`: the PD14 microcircuit from the parameter presets.
- :mod:`~colplugin.spiking.twin`: the spiking twin of a (trained) ColumnNetwork.
- :mod:`~colplugin.spiking.brian2`, :mod:`~colplugin.spiking.nest`: backends; both return a
  :class:`SpikingResult` (spikes per population, ``to_neo()``).
- :func:`simulate_spiking`: the front door (``backend="brian2"`` or ``"nest"``);
  :func:`iter_spiking_trials` runs several trials, in one built network where the backend can.
"""

from .microcircuit import microcircuit_connectivity, pd14_microcircuit, simulate_microcircuit
from .network import (Connection, LIFModel, PoissonInput, PoissonSource, Population, RateProfile, SpikingNetwork,
                      SpikingNetworkError)
from .result import SpikingResult
from .simulate import (BACKENDS, BRIAN2_DEVICES, SPIKING_BACKENDS, SpikingBackend, iter_spiking_trials,
                       register_backend, simulate_spiking, spiking_backend)
from .twin import spiking_twin, twin_rates

__all__ = ["SpikingNetwork", "SpikingNetworkError", "LIFModel", "Population", "Connection", "RateProfile",
           "PoissonInput", "PoissonSource", "SpikingResult", "simulate_spiking", "iter_spiking_trials", "BACKENDS",
           "BRIAN2_DEVICES", "SPIKING_BACKENDS", "SpikingBackend", "register_backend", "spiking_backend",
           "pd14_microcircuit", "microcircuit_connectivity", "simulate_microcircuit", "spiking_twin", "twin_rates"]
