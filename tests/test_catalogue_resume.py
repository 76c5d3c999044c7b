"""Reliability: resuming, data-parallel processes and files given as the wrong thing.

One case per row. Commands run in-process through ``colplugin.cli.main``, except those with
``--nproc 2``, which run the command line in a subprocess of their own session with a timeout
(a hang fails the case instead of the suite) and whose processes are all checked to be gone.
Every run directory is built from one XOR run of one update, trained once per module.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from colplugin.cli import main

#: Limit of each subprocess (a case that hangs fails after this, never blocks the suite).
TIMEOUT = 120


@pytest.fixture(scope="module")
def xor_run(tmp_path_factory):
    """A finished one-update XOR run of `colplugin train` (every case copies it)."""
    out = tmp_path_factory.mktemp("xor") / "run"
    assert main(["train", "xor", "--updates", "1", "--out", str(out), "--no-progress"]) == 0
    return out


def _copy(run: Path, dst: Path, interrupted: bool = False) -> Path:
    shutil.copytree(run, dst)
    if interrupted:  # an interrupted run: checkpoint.pt, but no metrics.json (written when a run ends)
        for m in dst.rglob("metrics.json"):
            m.unlink()
    return dst


def _error(capsys, args) -> str:
    """stderr of an in-process command that must exit with status 2 (SystemExit(2) counts too)."""
    capsys.readouterr()
    try:
        status = main([str(a) for a in args])
    except SystemExit as exc:
        status = exc.code
    assert status == 2, status
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    return err


def _children(pid: int) -> list[int]:
    """The processes ``pid`` started (Linux: /proc)."""
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return found


def _gone(pids: list[int], wait: float = 10.0) -> bool:
    end = time.monotonic() + wait
    while time.monotonic() < end:
        alive = []
        for p in pids:
            try:
                state = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue  # gone
            if state != "Z":
                alive.append(p)
        if not alive:
            return True
        time.sleep(0.2)
    return False


#: A command line whose data-parallel process 1 misbehaves: ``hang`` sleeps in the trial sampler (so process 0
#: waits in a collective for it), ``raise`` raises there. argv: MODE READY_FILE COLPLUGIN_ARGS...
_PATCHED = """
import sys, time
from pathlib import Path
from colplugin.training import distributed as d
mode, ready = sys.argv[1], Path(sys.argv[2])
original = d.ShardedTask.sample
def sample(self, n, generator):
    if self.rank == 1 and mode != "none":
        ready.write_text("sampling")
        if mode == "hang":
            time.sleep(600)
        raise RuntimeError("rank 1 failed on purpose")
    return original(self, n, generator)
d.ShardedTask.sample = sample
from colplugin.cli import main
sys.exit(main(sys.argv[3:]))
"""


def _start(args, mode: str = "none", ready: Path | None = None) -> subprocess.Popen:
    """The command line in a subprocess (its own session: a timeout ends all its processes)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-c", _PATCHED, mode, str(ready or os.devnull), *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)


def _finish(proc: subprocess.Popen, timeout: float = TIMEOUT) -> tuple[int, str]:
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # this case's session only
        proc.communicate()
        pytest.fail(f"the command hung (still running after {timeout} s): {proc.args[3:]}")
    return proc.returncode, err


# 1a ---------------------------------------------------------------------------------------------------------------
def test_nproc_2_resume_of_a_one_process_run_is_refused_up_front(xor_run, tmp_path):
    run = _copy(xor_run, tmp_path / "run", interrupted=True)
    t0 = time.monotonic()
    rc, err = _finish(_start(["train", "xor", "--updates", "2", "--nproc", "2", "--resume", "--out", run,
                              "--no-progress"]))
    assert rc == 2, err
    assert "Traceback" not in err, err
    assert "--nproc 2" in err and "trained with 1 process" in err and "resume with --nproc 1" in err, err
    assert f"colplugin train xor --resume --out {run}`" in err, err
    assert not (run / "ranks").exists() and not (run / "metrics.json").exists()
    assert time.monotonic() - t0 < 60


def test_one_process_resume_of_a_two_process_run_is_refused(xor_run, tmp_path, capsys):
    import torch

    run = _copy(xor_run, tmp_path / "run", interrupted=True)
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    ckpt["nproc"] = 2  # as a run of --nproc 2 records it
    torch.save(ckpt, run / "checkpoint.pt")
    err = _error(capsys, ["train", "xor", "--updates", "2", "--resume", "--out", run, "--no-progress"])
    assert "--nproc 1" in err and "trained with 2 processes" in err and "resume with --nproc 2" in err, err
    assert f"--resume --out {run} --nproc 2`" in err, err


def test_a_checkpoint_records_its_process_count(xor_run):
    import torch

    from colplugin.training.trainer import stored_nproc

    assert torch.load(xor_run / "checkpoint.pt", weights_only=True)["nproc"] == 1
    assert stored_nproc({"task": {"name": "xor"}}) == 1  # a run from before the record: one process
    assert stored_nproc({"task": {"name": "xor", "nproc": 3}}) == 3  # a data-parallel run's task config


# 1b ---------------------------------------------------------------------------------------------------------------
def test_an_error_in_one_process_ends_all_with_its_message(tmp_path):
    ready = tmp_path / "ready"
    proc = _start(["train", "xor", "--updates", "2", "--nproc", "2", "--out", tmp_path / "run", "--no-progress"],
                  "raise", ready)
    rc, err = _finish(proc, 60)
    assert rc == 2, err
    assert "process 1 of 2: rank 1 failed on purpose" in err and "Traceback" not in err, err
    assert "Terminating process" not in err, err


def test_sigterm_ends_every_process_even_one_waiting_in_a_collective(tmp_path):
    ready = tmp_path / "ready"
    proc = _start(["train", "xor", "--updates", "2", "--nproc", "2", "--out", tmp_path / "run", "--no-progress"],
                  "hang", ready)
    end = time.monotonic() + 60
    while not ready.exists() and proc.poll() is None and time.monotonic() < end:
        time.sleep(0.2)
    assert ready.exists(), proc.communicate(timeout=5) if proc.poll() is not None else "process 1 never sampled"
    time.sleep(1.0)  # process 0 is now waiting for process 1 in a collective
    workers = _children(proc.pid)
    assert len(workers) == 2, workers
    proc.send_signal(signal.SIGTERM)
    rc, err = _finish(proc, 30)
    assert rc == 128 + signal.SIGTERM, err
    assert "interrupted by SIGTERM" in err, err
    assert _gone(workers), f"data-parallel processes {workers} still run after the command ended"
    assert not (tmp_path / "run").exists()  # a new run that was interrupted before any checkpoint is removed


# 2 ----------------------------------------------------------------------------------------------------------------
def _finished_main_run(xor_run, dst: Path) -> Path:
    """A finished `colplugin run` directory: train/ (a finished training) and report.md."""
    dst.mkdir()
    _copy(xor_run, dst / "train")
    (dst / "report.md").write_text("# colplugin run: xor\n")
    return dst


@pytest.mark.parametrize("extra", [[], ["--validate-scale", "0.5"]])
def test_run_resume_of_a_finished_run_is_refused(xor_run, tmp_path, capsys, monkeypatch, extra):
    import colplugin.experiments as experiments

    def no_export(*a, **k):
        raise AssertionError("a finished run was exported again")

    monkeypatch.setattr(experiments, "export_run", no_export)
    run = _finished_main_run(xor_run, tmp_path / "run")
    err = _error(capsys, ["run", "xor", "--resume", "--out", run, "--no-progress", *extra])
    assert f"{run} is a finished run (report.md); nothing to resume; start a new run with another --out " \
           "(or --overwrite)" in err, err
    assert (run / "report.md").read_text() == "# colplugin run: xor\n" and not (run / "brian2").exists()


# 3 ----------------------------------------------------------------------------------------------------------------
def test_train_resume_of_a_run_directory_names_colplugin_run(xor_run, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    _copy(xor_run, run / "train", interrupted=True)
    err = _error(capsys, ["train", "xor", "--updates", "2", "--resume", "--out", run, "--no-progress"])
    assert "`colplugin run`" in err and f"`colplugin run xor --resume --out {run}`" in err, err
    assert "start a new run without --resume" not in err, err


def test_train_resume_of_a_finished_run_directory_says_it_is_finished(xor_run, tmp_path, capsys):
    run = _finished_main_run(xor_run, tmp_path / "run")
    err = _error(capsys, ["train", "xor", "--updates", "2", "--resume", "--out", run, "--no-progress"])
    assert "finished `colplugin run` directory (report.md)" in err and "another --out" in err, err


def test_export_of_a_reproduce_directory_points_to_its_seeds(xor_run, tmp_path, capsys):
    rep = tmp_path / "reproduce"
    for s in (0, 1):
        _copy(xor_run, rep / f"seed{s}")
    err = _error(capsys, ["export", rep, "--out", tmp_path / "exp"])
    assert "`colplugin reproduce`" in err and "seed0/, seed1/" in err, err
    assert f"`colplugin export {rep / 'seed0'}`" in err, err
    assert not (tmp_path / "exp").exists()


def test_twin_of_a_reproduce_directory_points_to_its_seeds(xor_run, tmp_path):
    from colplugin.experiments import load_twin_run

    rep = tmp_path / "reproduce"
    _copy(xor_run, rep / "seed0")
    with pytest.raises(FileNotFoundError, match=r"colplugin twin .*seed0`"):
        load_twin_run(rep)


# 4 ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, what", [("network.json", "is a network spec"),
                                        ("metrics.json", "is the metrics of a training run"),
                                        ("checkpoint.pt", "is a torch file")])
def test_preset_that_is_another_run_file_says_what_it_is(xor_run, tmp_path, capsys, name, what):
    err = _error(capsys, ["train", "xor", "--updates", "1", "--preset", xor_run / name, "--out", tmp_path / "t",
                          "--no-progress"])
    assert what in err and "--preset expects a preset name" in err and "TOML" in err, err
    assert "params.json of a run" in err and f"--preset {xor_run / 'params.json'}" in err, err
    assert "unknown parameter" not in err and not (tmp_path / "t").exists(), err


def test_a_runs_params_json_is_still_a_preset(xor_run):
    from colplugin.params import resolve_params

    assert resolve_params(xor_run / "params.json").same_values(resolve_params("dl25"))
