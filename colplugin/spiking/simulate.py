"""The front door of the spiking backends: :func:`simulate_spiking`."""

from __future__ import annotations

import importlib
import importlib.util
import numbers
import tempfile
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from .._io import check_memory
from .._mpi import launch_size
from .network import SpikingNetwork
from .result import SpikingResult

__all__ = ["simulate_spiking", "iter_spiking_trials", "check_run", "SpikingBackend", "SPIKING_BACKENDS",
           "register_backend", "spiking_backend", "BACKENDS", "BRIAN2_DEVICES"]

#: Memory per synapse of a spiking run, bytes (measured: 1.99 GB peak for the 14.9 M synapses of the
#: PD14 microcircuit at scale 0.1 on Brian2 cpp_standalone, about 130 B each with everything else).
BYTES_PER_SYNAPSE = 100

#: Brian2 devices: code generation at run time (Cython), or one compiled C++ project.
BRIAN2_DEVICES: tuple[str, ...] = ("cpp_standalone", "runtime")


@dataclass(frozen=True)
class SpikingBackend:
    """A spiking simulator colplugin drives: everything the package needs to know about it.

    Adding a simulator (PyNN, NEURON, ...) is one module with its ``run`` function and one
    :func:`register_backend` call; the command line, the twin, the validation and the
    installation checks read this record.

    Parameters
    ----------
    name : str
        ``backend=`` value (``"brian2"``, ``"nest"``).
    module : str
        The package to import (installation check).
    install : str
        How to install it (named in the error when it is missing).
    runner : str
        ``"module:function"`` of the run function, imported on first use:
        ``run(net, duration, *, device, seed, threads, dt, directory) -> SpikingResult``.
    devices : tuple of str
        The devices the backend offers (first: default); ``()``: one, without a name.
    project_devices : tuple of str
        Devices that build a project on disk, which runs of one network share (a directory
        made by :meth:`project_directory`).
    title : str
        The simulator's own spelling, for messages (default: ``name``).
    timing_counts : (str, str)
        What the result's ``build_seconds`` and ``simulate_seconds`` count, for reports.
    trials_runner : str
        ``"module:function"`` that builds a network once and runs several trials in it, or
        ``""`` where the backend cannot reuse a built network (each trial is then built anew):
        ``run_trials(net, duration, trials, *, device, seed, threads, dt, directory)``, an
        iterator of one :class:`SpikingResult` per trial (:func:`iter_spiking_trials`).
    mpi : bool
        Whether the backend runs one network in the processes of an MPI launch (NEST built with
        MPI); a backend without refuses to run in a launch of several processes, where every
        process would simulate the whole network.
    gating : bool
        Whether the backend runs gated connections (a network's
        :class:`~colplugin.spiking.network.SynapticGatingModel`); the twin of a gated network on
        a backend without them keeps its projections ungated and says so.
    """

    name: str
    module: str
    install: str
    runner: str
    devices: tuple[str, ...] = ()
    project_devices: tuple[str, ...] = ()
    title: str = ""
    timing_counts: tuple[str, str] = ("", "")
    trials_runner: str = ""
    mpi: bool = False
    gating: bool = False

    def available(self) -> bool:
        """Whether the simulator can be imported."""
        return importlib.util.find_spec(self.module) is not None

    def check_installed(self) -> None:
        """Refuse a backend that is not installed, naming how to install it."""
        if not self.available():
            raise RuntimeError(f"backend {self.name!r} needs {self.title or self.module}, which is not installed: "
                               f"{self.install} "
                               f"(or use another --backend: {', '.join(SPIKING_BACKENDS)})")

    def resolve_device(self, device: str | None) -> str | None:
        """``device``, or the backend's default device (its first) where it is None; None for a backend without."""
        if not self.devices:
            return None
        return self.devices[0] if device is None else device

    def check_device(self, device: str | None) -> None:
        """Refuse a device the backend does not offer (a backend without devices ignores it)."""
        if self.devices and device not in self.devices:
            raise ValueError(f"unknown {self.title or self.name} device {device!r}; use one of "
                             f"{', '.join(map(repr, self.devices))}")

    def project_directory(self, device: str | None) -> str | None:
        """A temporary project directory shared by several runs on ``device`` (None if it needs none)."""
        return tempfile.mkdtemp(prefix=f"colplugin_{self.name}_") if device in self.project_devices else None

    def label(self, device: str | None = None) -> str:
        """``"brian2 cpp_standalone"``, ``"nest"``: for reports."""
        return f"{self.name} {device}" if self.devices and device else self.name

    def run(self, net: SpikingNetwork, duration: float, **kwargs) -> SpikingResult:
        """Run ``net`` (see :func:`simulate_spiking`)."""
        return _load(self.runner)(net, duration, **kwargs)

    def run_trials(self, net: SpikingNetwork, duration: float, trials: int, **kwargs) -> Iterator[SpikingResult]:
        """Run ``trials`` trials of ``net`` built once (needs :attr:`trials_runner`; :func:`iter_spiking_trials`)."""
        if not self.trials_runner:
            raise ValueError(f"backend {self.name!r} cannot run several trials in one built network; build one per "
                             "trial (iter_spiking_trials(..., reuse=False))")
        return _load(self.trials_runner)(net, duration, trials, **kwargs)


def _load(target: str):
    """The function named by ``"module:function"``."""
    module, function = target.split(":")
    return getattr(importlib.import_module(module), function)


#: The spiking simulators colplugin drives, by name (:func:`register_backend` adds one).
SPIKING_BACKENDS: dict[str, SpikingBackend] = {}


def register_backend(backend: SpikingBackend) -> SpikingBackend:
    """Make ``backend`` available to :func:`simulate_spiking`, the twin, the validation and the CLI."""
    if not isinstance(backend, SpikingBackend):
        raise TypeError(f"register a SpikingBackend, got {type(backend).__name__}")
    SPIKING_BACKENDS[backend.name] = backend
    return backend


def spiking_backend(name: str) -> SpikingBackend:
    """The registered backend called ``name``."""
    try:
        return SPIKING_BACKENDS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown spiking backend {name!r}; use one of "
                         f"{', '.join(map(repr, SPIKING_BACKENDS))}") from None


register_backend(SpikingBackend("brian2", "brian2", "pip install brian2 (a dependency of colplugin)",
                                "colplugin.spiking.brian2:run_brian2", devices=BRIAN2_DEVICES,
                                project_devices=("cpp_standalone",), title="Brian2",
                                timing_counts=("constructing the Brian2 objects in Python",
                                               "the run with its code generation; on cpp_standalone also compiling "
                                               "and running the project"), gating=True))
register_backend(SpikingBackend("nest", "nest", "pip install 'colplugin[nest]' (or pip install nest-simulator)",
                                "colplugin.spiking.nest:run_nest", title="the NEST simulator",
                                timing_counts=("creating and connecting the NEST nodes",
                                               "the run, with NEST's preparation of its connection tables"),
                                trials_runner="colplugin.spiking.nest:iter_nest_trials", mpi=True))

#: Names of the built-in spiking simulators (:data:`SPIKING_BACKENDS` holds every registered one).
BACKENDS: tuple[str, ...] = tuple(SPIKING_BACKENDS)


def check_run(duration: float, *, backend: str = "brian2", device: str | None = None, seed: int = 0,
              threads: int = 1, dt: float = 1e-4) -> None:
    """Refuse bad run settings with a message that names the value and the fix (before any work)."""
    chosen = spiking_backend(backend)
    chosen.check_device(chosen.resolve_device(device))
    if isinstance(dt, bool) or not isinstance(dt, numbers.Real) or not (np.isfinite(dt) and 0 < dt <= 1e-3):
        raise ValueError(f"dt must be a time step in (0, 1 ms] given in s (e.g. 1e-4), got {dt!r}")
    if isinstance(duration, bool) or not isinstance(duration, numbers.Real) or not np.isfinite(duration) \
            or duration < 10 * dt:
        raise ValueError(f"duration must be a time in s of at least 10 time steps ({10 * dt:g} s), got {duration!r}")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= seed < 2 ** 31 - 1:
        raise ValueError(f"seed must be a whole number in [0, 2**31 - 1), got {seed!r}")
    if isinstance(threads, bool) or not isinstance(threads, numbers.Integral) or threads < 1:
        raise ValueError(f"threads must be a whole number >= 1, got {threads!r}")


def _checked_backend(net: SpikingNetwork, duration: float, backend: str, device: str | None, seed: int,
                     threads: int, dt: float) -> tuple[SpikingBackend, str | None]:
    """The backend and its device for a run of ``net``, every setting and the memory checked."""
    check_run(duration, backend=backend, device=device, seed=seed, threads=threads, dt=dt)
    if not isinstance(net, SpikingNetwork):
        raise TypeError(f"simulate_spiking takes a SpikingNetwork, got {type(net).__name__}")
    chosen = spiking_backend(backend)
    device = chosen.resolve_device(device)
    chosen.check_installed()
    if launch_size() > 1 and not chosen.mpi:
        raise RuntimeError(f"this process is one of {launch_size()} MPI processes, and backend {chosen.name!r} runs "
                           "one whole network per process: every process would simulate all of it. Run without "
                           "mpirun, or use a backend that divides a network among MPI processes (--backend nest, "
                           "built with MPI)")
    check_memory(BYTES_PER_SYNAPSE * net.n_synapses,
                 f"a spiking run of {net.n_neurons:,} neurons and {net.n_synapses:,} synapses",
                 "lower the scale (--scale) or the in-degree scale (--k-scale), or twin fewer columns")
    return chosen, device


def _with_common_settings(result: SpikingResult, net: SpikingNetwork, chosen: SpikingBackend, device: str | None,
                          seed: int, threads: int, dt: float, duration: float) -> SpikingResult:
    """``result`` with what every backend's result records of its network, whatever the backend put in itself."""
    common = {"name": net.name, **dict(net.metadata), "backend": chosen.name, "device": device, "seed": int(seed),
              "threads": int(threads), "dt_s": float(dt), "duration_s": float(duration), "n_neurons": net.n_neurons,
              "n_synapses": net.n_synapses}
    result.settings = {**common, **dict(result.settings)}
    return result


def iter_spiking_trials(net: SpikingNetwork, duration: float, trials: int, *, backend: str = "brian2",
                        device: str | None = None, seed: int = 0, threads: int = 1, dt: float = 1e-4,
                        directory: str | None = None, reuse: bool = True) -> Iterator[SpikingResult]:
    """Run ``trials`` trials of ``net`` on a backend, one :class:`SpikingResult` per trial as each ends.

    With ``reuse`` and a backend that can (:attr:`SpikingBackend.trials_runner`: NEST), the
    network is built once and every trial runs in it from a fresh state: the trials share one
    draw of connectivity, weights and delays (``seed``) and differ in their initial potentials
    and Poisson input. Otherwise (``reuse=False``, or Brian2) trial ``j`` is a new build with
    seed ``seed + j``: a new draw of everything. Settings as :func:`simulate_spiking`; each
    result's ``settings["network_reused"]`` says which way it ran.
    """
    if isinstance(trials, bool) or not isinstance(trials, numbers.Integral) or trials < 1:
        raise ValueError(f"trials must be a whole number >= 1, got {trials!r}")
    if not isinstance(reuse, bool):
        raise ValueError(f"reuse must be True or False, got {reuse!r}")
    chosen, device = _checked_backend(net, duration, backend, device, seed, threads, dt)
    if seed + trials - 1 >= 2 ** 31 - 1:
        raise ValueError(f"seed + trials - 1 must stay below 2**31 - 1 (trial j may use seed + j), got seed {seed} "
                         f"and {trials} trials")
    return _trial_results(net, duration, int(trials), chosen, device, int(seed), int(threads), float(dt),
                          directory, reuse and bool(chosen.trials_runner))


def _trial_results(net: SpikingNetwork, duration: float, trials: int, chosen: SpikingBackend, device: str | None,
                   seed: int, threads: int, dt: float, directory: str | None,
                   reuse: bool) -> Iterator[SpikingResult]:
    """The trials of :func:`iter_spiking_trials`, its settings checked."""
    if reuse:
        runs = chosen.run_trials(net, duration, trials, device=device, seed=seed, threads=threads, dt=dt,
                                 directory=directory)
        for j, result in enumerate(runs):
            result = _with_common_settings(result, net, chosen, device, seed, threads, dt, duration)
            result.settings.update(network_reused=trials > 1, trial_in_network=j)
            yield result
        return
    for j in range(trials):
        result = chosen.run(net, duration, device=device, seed=seed + j, threads=threads, dt=dt, directory=directory)
        result = _with_common_settings(result, net, chosen, device, seed + j, threads, dt, duration)
        result.settings.update(network_reused=False, trial_in_network=j)
        yield result


def simulate_spiking(net: SpikingNetwork, duration: float, *, backend: str = "brian2",
                     device: str | None = None, seed: int = 0, threads: int = 1, dt: float = 1e-4,
                     directory: str | None = None) -> SpikingResult:
    """Simulate a spiking network on a backend.

    Parameters
    ----------
    net : SpikingNetwork
    duration : float
        Simulated time, s.
    backend : str
        A registered backend (:data:`SPIKING_BACKENDS`: ``"brian2"``, ``"nest"``).
    device : str, optional
        The backend's device (Brian2: ``"cpp_standalone"`` or ``"runtime"``; NEST has none
        and ignores it); None: the backend's default (its first device).
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
    chosen, device = _checked_backend(net, duration, backend, device, seed, threads, dt)
    result = chosen.run(net, duration, device=device, seed=int(seed), threads=int(threads), dt=float(dt),
                        directory=directory)
    return _with_common_settings(result, net, chosen, device, seed, threads, dt, duration)
