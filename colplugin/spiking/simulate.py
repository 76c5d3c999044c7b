"""The front door of the spiking backends: :func:`simulate_spiking`."""

from __future__ import annotations

import numbers

import numpy as np

from .network import SpikingNetwork
from .result import SpikingResult

__all__ = ["simulate_spiking", "check_run", "BACKENDS", "BRIAN2_DEVICES"]

#: Spiking simulators colplugin drives.
BACKENDS: tuple[str, ...] = ("brian2", "nest")
#: Brian2 devices: code generation at run time (Cython), or one compiled C++ project.
BRIAN2_DEVICES: tuple[str, ...] = ("cpp_standalone", "runtime")


def check_run(duration: float, *, backend: str = "brian2", device: str = "cpp_standalone", seed: int = 0,
              threads: int = 1, dt: float = 1e-4) -> None:
    """Refuse bad run settings with a message that names the value and the fix (before any work)."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown spiking backend {backend!r}; use one of {', '.join(map(repr, BACKENDS))}")
    if backend == "brian2" and device not in BRIAN2_DEVICES:
        raise ValueError(f"unknown Brian2 device {device!r}; use one of {', '.join(map(repr, BRIAN2_DEVICES))}")
    if isinstance(dt, bool) or not isinstance(dt, numbers.Real) or not (np.isfinite(dt) and 0 < dt <= 1e-3):
        raise ValueError(f"dt must be a time step in (0, 1 ms] given in s (e.g. 1e-4), got {dt!r}")
    if isinstance(duration, bool) or not isinstance(duration, numbers.Real) or not np.isfinite(duration) \
            or duration < 10 * dt:
        raise ValueError(f"duration must be a time in s of at least 10 time steps ({10 * dt:g} s), got {duration!r}")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= seed < 2 ** 31 - 1:
        raise ValueError(f"seed must be a whole number in [0, 2**31 - 1), got {seed!r}")
    if isinstance(threads, bool) or not isinstance(threads, numbers.Integral) or threads < 1:
        raise ValueError(f"threads must be a whole number >= 1, got {threads!r}")


def simulate_spiking(net: SpikingNetwork, duration: float, *, backend: str = "brian2",
                     device: str = "cpp_standalone", seed: int = 0, threads: int = 1, dt: float = 1e-4,
                     directory: str | None = None) -> SpikingResult:
    """Simulate a spiking network on a backend.

    Parameters
    ----------
    net : SpikingNetwork
    duration : float
        Simulated time, s.
    backend : {"brian2", "nest"}
    device : {"cpp_standalone", "runtime"}
        Brian2 device (ignored by NEST).
    seed : int
        Seeds every random draw of the run (connectivity, weights, delays, initial
        potentials, Poisson input): the same seed on the same backend and thread count
        gives the same spikes.
    threads : int
        OpenMP threads (Brian2 cpp_standalone, NEST).
    dt : float
        Time step, s.
    directory : str, optional
        Brian2 cpp_standalone project directory (default: a temporary one, removed).

    Returns
    -------
    SpikingResult
    """
    check_run(duration, backend=backend, device=device, seed=seed, threads=threads, dt=dt)
    if not isinstance(net, SpikingNetwork):
        raise TypeError(f"simulate_spiking takes a SpikingNetwork, got {type(net).__name__}")
    if backend == "brian2":
        from .brian2 import run_brian2

        return run_brian2(net, duration, device=device, seed=int(seed), threads=int(threads), dt=float(dt),
                          directory=directory)
    from .nest import run_nest

    return run_nest(net, duration, seed=int(seed), threads=int(threads), dt=float(dt))
