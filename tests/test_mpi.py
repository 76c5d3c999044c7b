"""MPI launches: one rank writes, every rank holds every process's spikes.

The launch itself (NEST built with MPI, mpi4py, mpiexec) is checked by
``validation/nest_mpi.py``, run here where they are present (``-m slow``; the NEST wheel has
no MPI: point ``COLPLUGIN_NEST_MPI_PYTHONPATH`` at an MPI build's site-packages).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from colplugin._io import OutputDirectory, atomic_write_text
from colplugin._mpi import (RANK_VARIABLES, SIZE_VARIABLES, gather_spikes, launch_rank, share_run, shared_run,
                            writes_files)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def rank(monkeypatch):
    """Set this process's rank in a launch of two (``shared``: one network in both, as NEST with MPI)."""
    for name in RANK_VARIABLES + SIZE_VARIABLES:
        monkeypatch.delenv(name, raising=False)

    def set_rank(variable: str, value: str, shared: bool = True) -> None:
        monkeypatch.setenv(variable, value)
        monkeypatch.setenv("PMI_SIZE", "2")
        share_run(shared)
    yield set_rank
    share_run(False)


def test_the_rank_comes_from_any_launcher(rank):
    assert launch_rank() == 0 and writes_files() and not shared_run()
    rank("OMPI_COMM_WORLD_RANK", "3")
    assert launch_rank() == 3 and shared_run() and not writes_files()


@pytest.mark.parametrize("variable", RANK_VARIABLES)
def test_rank_zero_of_every_launcher_writes(rank, variable):
    rank(variable, "0")
    assert writes_files()


def test_only_rank_zero_of_a_shared_run_writes_a_file(rank, tmp_path):
    rank("PMI_RANK", "1")
    atomic_write_text(tmp_path / "report.md", "rank 1")
    assert list(tmp_path.iterdir()) == []
    rank("PMI_RANK", "0")
    atomic_write_text(tmp_path / "report.md", "rank 0")
    assert (tmp_path / "report.md").read_text() == "rank 0" and len(list(tmp_path.iterdir())) == 1


def test_independent_commands_of_one_launch_all_write(rank, tmp_path):
    """``srun -n 4 colplugin train ... --out run_$SLURM_PROCID``: every process keeps its result."""
    rank("PMI_RANK", "1", shared=False)
    assert writes_files()
    atomic_write_text(tmp_path / "report.md", "rank 1")
    assert (tmp_path / "report.md").read_text() == "rank 1"


def test_another_rank_writes_its_output_directory_into_scratch(rank, tmp_path):
    rank("PMI_RANK", "1")
    claim = OutputDirectory(tmp_path / "out")
    path = claim.claim()
    assert path != tmp_path / "out" and not (tmp_path / "out").exists()
    (path / "direct.txt").write_text("not atomic")  # even a direct write lands outside --out
    claim.commit()
    assert not path.exists() and list(tmp_path.iterdir()) == []


class FakeComm:
    """Two processes: this one's spikes and the other's."""

    def __init__(self, other):
        self.other = other

    def allgather(self, mine):
        return [mine, self.other]


def test_spikes_of_every_process_are_gathered_in_one_order():
    mine = {"E": (np.array([2, 0]), np.array([0.003, 0.001])), "I": (np.array([], int), np.array([]))}
    other = {"E": (np.array([1, 3]), np.array([0.001, 0.002])), "I": (np.array([4]), np.array([0.005]))}
    out = gather_spikes(mine, 2, comm=FakeComm(other))
    np.testing.assert_array_equal(out["E"][1], [0.001, 0.001, 0.002, 0.003])
    np.testing.assert_array_equal(out["E"][0], [0, 1, 3, 2])  # equal times: by neuron
    np.testing.assert_array_equal(out["I"][0], [4])
    # one process: nothing to gather, the same order
    alone = gather_spikes(other, 1)
    np.testing.assert_array_equal(alone["E"][0], [1, 3])


def test_gathering_without_mpi4py_names_the_fix(monkeypatch):
    monkeypatch.setitem(sys.modules, "mpi4py", None)
    with pytest.raises(RuntimeError, match="needs mpi4py.*pip install --no-binary mpi4py mpi4py"):
        gather_spikes({"E": (np.array([0]), np.array([0.0]))}, 2)


def _mpi_environment() -> dict | None:
    """The environment of a process that imports an MPI build of NEST, or None."""
    env = dict(os.environ)
    extra = os.environ.get("COLPLUGIN_NEST_MPI_PYTHONPATH")
    if extra:
        env["PYTHONPATH"] = os.pathsep.join([extra, env.get("PYTHONPATH", "")])
    if not (shutil.which("mpiexec") or shutil.which("mpirun")):
        return None
    probe = "import os; os.environ['PYNEST_QUIET'] = '1'; import nest, mpi4py; print(nest.build_info.get('have_mpi'))"
    try:
        done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        return None
    return env if done.returncode == 0 and done.stdout.strip().endswith("True") else None


@pytest.mark.slow
def test_two_processes_give_the_spikes_of_two_threads(tmp_path):
    env = _mpi_environment()
    if env is None:
        pytest.skip("no MPI build of NEST with mpi4py and mpiexec (set COLPLUGIN_NEST_MPI_PYTHONPATH)")
    subprocess.run([sys.executable, str(ROOT / "validation" / "nest_mpi.py"), "--conditions", "1", "--trials", "2",
                    "--out", str(tmp_path)], env=env, check=True, timeout=1200)
    result = json.loads((tmp_path / "mpi.json").read_text())
    assert result["n_differing"] == 0 and result["spikes_compared"] > 1000 and result["same_rates"]
    assert result["files_found"] == result["files_expected"]
    assert result["mpi_settings"]["network_reused"] is True


def test_the_launch_size_comes_from_the_launcher(rank, monkeypatch):
    from colplugin._mpi import SIZE_VARIABLES, launch_size

    for name in SIZE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    assert launch_size() == 1
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "4")
    assert launch_size() == 4


def test_a_backend_without_mpi_is_refused_in_a_launch_of_several_processes(rank, monkeypatch):
    from colplugin.spiking import pd14_microcircuit, simulate_spiking

    rank("PMI_RANK", "0")
    monkeypatch.setenv("PMI_SIZE", "2")
    with pytest.raises(RuntimeError, match="one of 2 MPI processes, and backend 'brian2' runs one whole network"):
        simulate_spiking(pd14_microcircuit(None, 0.01, 0.1), 0.01, backend="brian2", device="runtime")


def test_nest_without_mpi_is_refused_in_a_launch_of_several_processes(rank, monkeypatch):
    pytest.importorskip("nest")
    from colplugin.spiking import pd14_microcircuit, simulate_spiking

    rank("PMI_RANK", "0")
    monkeypatch.setenv("PMI_SIZE", "2")
    with pytest.raises(RuntimeError, match="it was built without MPI .* -Dwith-mpi=ON"):
        simulate_spiking(pd14_microcircuit(None, 0.01, 0.1), 0.01, backend="nest")


def test_a_nest_command_in_several_processes_is_a_shared_run(rank, monkeypatch):
    from colplugin.cli import _share_an_mpi_run, build_parser

    import importlib.util

    rank("PMI_RANK", "1", shared=False)
    parse = build_parser().parse_args
    nest_args = parse(["validate", "microcircuit", "--backend", "nest"])
    others = [parse(["validate", "microcircuit", "--backend", "brian2"]), parse(["simulate", "--columns", "1"])]
    find_spec = importlib.util.find_spec
    for mpi4py in (True, False):  # whether mpi4py is installed (CI has none)
        monkeypatch.setattr("importlib.util.find_spec", lambda name, *args, present=mpi4py: (
            (object() if present else None) if name == "mpi4py" else find_spec(name, *args)))
        if mpi4py:
            _share_an_mpi_run(nest_args)
            assert shared_run() and not writes_files()
        else:
            with pytest.raises(RuntimeError, match="runs in 2 MPI processes, which gather their spikes with mpi4py"):
                _share_an_mpi_run(nest_args)
        for args in others:
            _share_an_mpi_run(args)  # nothing shared: every process is a command of its own
            assert not shared_run() and writes_files()


def test_another_rank_of_a_shared_run_prints_nothing(rank, capsys):
    from colplugin.cli import _other_ranks_quiet

    rank("PMI_RANK", "1")
    with _other_ranks_quiet():
        print("rank 1")
    rank("PMI_RANK", "0")
    with _other_ranks_quiet():
        print("rank 0")
    assert capsys.readouterr().out == "rank 0\n"
