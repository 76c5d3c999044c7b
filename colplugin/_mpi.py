"""Which process of an MPI launch this is, and the spikes of every process gathered.

NEST built with MPI runs one network in several processes (``mpirun -n N``): each process
simulates and records its own neurons. colplugin's NEST backend gathers every process's
spikes (:func:`gather_spikes`), so that every process holds the whole result and computes the
same numbers from it. Such a run is *shared* (:func:`share_run`: the command line declares it
for a NEST command launched in several processes, and the NEST backend when NEST runs in
several): then only the first process (rank 0) writes files (:func:`writes_files`, read by
every file the package writes), so nothing is written twice, and an error in any process
ends the whole launch (:func:`abort_launch`) instead of leaving the others waiting for it.

Outside a shared run every process writes, as a lone process does: a launcher that starts
independent colplugin commands (``srun -n 4 colplugin train ... --out run_$SLURM_PROCID``)
keeps every result.

The rank is read from the launcher's environment (MPICH/Hydra and Intel MPI ``PMI_RANK``,
Open MPI ``OMPI_COMM_WORLD_RANK``, PMIx ``PMIX_RANK``, MVAPICH ``MV2_COMM_WORLD_RANK``), so it
is known before anything is imported; outside a launch it is 0.
"""

from __future__ import annotations

import os

import numpy as np

__all__ = ["launch_rank", "launch_size", "share_run", "shared_run", "writes_files", "abort_launch", "gather_spikes",
           "RANK_VARIABLES", "SIZE_VARIABLES"]

#: Environment variables in which MPI launchers give each process its rank.
RANK_VARIABLES: tuple[str, ...] = ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK", "MV2_COMM_WORLD_RANK")
#: ... and the number of processes of the launch.
SIZE_VARIABLES: tuple[str, ...] = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "MV2_COMM_WORLD_SIZE")


def _first_whole_number(names: tuple[str, ...]) -> int | None:
    for name in names:
        value = os.environ.get(name, "").strip()
        if value.isdigit():
            return int(value)
    return None


def launch_rank() -> int:
    """This process's rank in an MPI launch (0 outside one)."""
    rank = _first_whole_number(RANK_VARIABLES)
    return 0 if rank is None else rank


def launch_size() -> int:
    """The number of processes of this MPI launch (1 outside one)."""
    size = _first_whole_number(SIZE_VARIABLES)
    return 1 if size is None or size < 1 else size


_SHARED = False


def share_run(shared: bool = True) -> None:
    """Declare (or, with False, end) a run whose processes simulate one network together: only rank 0 writes."""
    global _SHARED
    _SHARED = bool(shared)


def shared_run() -> bool:
    """Whether this process is one of several that run one network together (:func:`share_run`)."""
    return _SHARED and launch_size() > 1


def writes_files() -> bool:
    """Whether this process writes the package's files: any process, except ranks > 0 of a shared run."""
    return not shared_run() or launch_rank() == 0


def abort_launch(status: int) -> None:
    """End every process of a shared run with ``status`` (MPI ``Abort``); nothing outside one.

    A process that stops alone would leave the others waiting for it in NEST's next
    collective step (or in MPI's start-up) forever.
    """
    if not shared_run():
        return
    try:
        from mpi4py import MPI
    except ImportError:
        return
    MPI.COMM_WORLD.Abort(int(status))


def _comm(processes: int):
    try:
        from mpi4py import MPI
    except ImportError:
        raise RuntimeError(f"NEST runs in {processes} MPI processes, and gathering their spikes needs mpi4py, which "
                           "is not installed: pip install --no-binary mpi4py mpi4py (built against the MPI that NEST "
                           "was built with)") from None
    return MPI.COMM_WORLD


def gather_spikes(spikes: dict[str, tuple[np.ndarray, np.ndarray]], processes: int,
                  comm=None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Every process's spikes (neuron index, time) per population, in one order whatever the layout.

    Parameters
    ----------
    spikes : dict
        This process's spikes: ``spikes[population] = (neuron index, time s)``.
    processes : int
        Processes of the launch; with more than one, every process's spikes are gathered
        (``allgather`` of mpi4py's ``COMM_WORLD``, or ``comm``), so every process returns the
        whole result.
    comm : optional
        A communicator with ``allgather`` (default: mpi4py's ``COMM_WORLD``).

    Returns
    -------
    dict
        The spikes of every population sorted by time, then neuron: NEST's event order depends
        on how the neurons are split among processes and threads, the spikes do not.
    """
    if processes > 1:
        parts = (comm or _comm(processes)).allgather(spikes)
        spikes = {name: (np.concatenate([p[name][0] for p in parts]), np.concatenate([p[name][1] for p in parts]))
                  for name in spikes}
    out = {}
    for name, (i, t) in spikes.items():
        order = np.lexsort((i, t))
        out[name] = (i[order], t[order])
    return out
