"""Output directories: claimed by one command, replaced only on success, cleaned up on signals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest

import colplugin.experiments as experiments
from colplugin._io import OutputDirectory, atomic_path
from colplugin.cli import main as _main


def main(args) -> int:
    """The exit status of ``colplugin ARGS`` (a refusal raises SystemExit(2) in-process)."""
    try:
        return _main(args)
    except SystemExit as exc:
        return exc.code

def _finished_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _old_run(path):
    path.mkdir()
    (path / "params.json").write_text('{"earlier_run_marker": true}')
    (path / "digits.json").write_text("old task's file")
    (path / "checkpoint.pt").write_bytes(b"old progress")


def _snapshot(path):
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def test_a_directory_held_by_a_running_command_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    (tmp_path / ".run.lock").write_text(json.dumps({"pid": os.getpid(), "host": os.uname().nodename}))
    assert main(["simulate", "--duration", "0.05", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"is in use by process {os.getpid()}" in err and "choose another --out" in err
    assert not out.exists()  # the first command's directory is not touched
    assert (tmp_path / ".run.lock").exists()  # nor its lock


def test_the_lock_of_a_dead_command_is_taken_over(tmp_path, capsys):
    out = tmp_path / "run"
    (tmp_path / ".run.lock").write_text(json.dumps({"pid": _finished_pid(), "host": os.uname().nodename}))
    assert main(["simulate", "--duration", "0.05", "--out", str(out)]) == 0
    assert (out / "rates.json").is_file()
    assert not (tmp_path / ".run.lock").exists()  # released after the command


def test_two_commands_at_once_into_one_directory_leave_one_whole_result(tmp_path):
    out = tmp_path / "shared"
    out.mkdir()  # an empty directory both are pointed at
    cmd = [sys.executable, "-m", "colplugin.cli", "simulate", "--duration", "0.05", "--out", str(out)]
    procs = [subprocess.Popen(cmd + ["--input", str(rate)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for rate in (10, 30)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    codes = sorted(rc for rc, _ in results)
    assert codes == [0, 2], results
    refused = next(err for rc, err in results if rc == 2)
    assert "in use by" in refused or "exists and is not empty" in refused
    assert sorted(p.name for p in out.iterdir()) == ["params.json", "rates.json", "rates.png"]
    assert not list(tmp_path.glob(".shared*"))


def test_a_failed_overwrite_leaves_the_earlier_result_whole(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    _old_run(out)
    before = _snapshot(out)

    def fails(task, seed, where, **kw):
        (where / "network.json").write_text("{new}")
        raise RuntimeError("batch size too large at update 1")

    monkeypatch.setattr(experiments, "train_run", fails)
    assert main(["train", "xor", "--out", str(out), "--overwrite", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "batch size too large" in err and f"{out} is unchanged" in err
    assert _snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no staging directory, no lock


def test_a_successful_overwrite_leaves_no_file_of_the_earlier_run(tmp_path, capsys):
    out = tmp_path / "run"
    _old_run(out)
    assert main(["simulate", "--duration", "0.05", "--out", str(out), "--overwrite"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["params.json", "rates.json", "rates.png"]
    assert "earlier_run_marker" not in (out / "params.json").read_text()
    assert f"wrote {out.resolve()}/rates.json" in capsys.readouterr().out  # the final name, not the staging one
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_overwrite_refuses_a_directory_colplugin_did_not_write(tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("months of work")
    assert main(["simulate", "--duration", "0.05", "--out", str(out), "--overwrite"]) == 2
    assert "replaces only an earlier colplugin result" in capsys.readouterr().err
    assert (out / "thesis.tex").read_text() == "months of work"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_cleans_up_like_an_error(tmp_path, monkeypatch, capsys, sig):
    out = tmp_path / "new"

    def interrupted(task, seed, where, **kw):
        (where / "params.json").write_text("{}")
        with atomic_path(where / "brian2.nix") as tmp:
            tmp.write_bytes(b"x" * 1000)
            os.kill(os.getpid(), sig)  # as `timeout` or Ctrl+C would, mid-write
        raise AssertionError("not reached")

    monkeypatch.setattr(experiments, "train_run", interrupted)
    assert main(["train", "xor", "--out", str(out), "--no-progress"]) == 128 + sig
    err = capsys.readouterr().err
    assert f"interrupted by {signal.Signals(sig).name}" in err and f"removed {out}" in err
    assert list(tmp_path.iterdir()) == []  # no half-written directory, no .tmp file, no lock
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers restored after the command


def test_a_signal_keeps_training_progress_resumable(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"

    def interrupted(task, seed, where, **kw):
        (where / "checkpoint.pt").write_bytes(b"progress")
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(experiments, "train_run", interrupted)
    assert main(["train", "xor", "--out", str(out), "--no-progress"]) == 128 + signal.SIGTERM
    assert (out / "checkpoint.pt").exists() and "--resume --out" in capsys.readouterr().err


def test_sigint_with_brian2_imported_under_an_ignored_sigint_is_a_clean_interrupt(tmp_path):
    # A shell's background job starts with SIGINT ignored; Brian2 chains to the handler it finds at
    # import and used to fail with "'Handlers' object is not callable".
    script = textwrap.dedent(f"""
        import os, signal, sys, time, types
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        import colplugin.experiments as experiments
        from colplugin.cli import main
        def export(*a, **kw):
            import brian2
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)

        experiments.load_run = lambda path: (None, types.SimpleNamespace(batch_size=1), 0.1)
        experiments.export_run = export
        sys.exit(main(["export", {str(tmp_path)!r}, "--out", {str(tmp_path / 'exp')!r}]))
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 130, proc.stderr
    assert "interrupted by SIGINT" in proc.stderr and "not callable" not in proc.stderr
    assert not (tmp_path / "exp").exists()


@pytest.mark.parametrize("make, expected", [
    (lambda d: os.symlink(d / "loop", d / "loop"), "cannot resolve the path"),
    (lambda d: os.symlink(d / "nowhere", d / "loop"), "which does not exist"),
])
def test_unusable_out_paths_are_named(tmp_path, make, expected):
    make(tmp_path)
    with pytest.raises(ValueError, match=expected):
        OutputDirectory(tmp_path / "loop")


def test_a_name_longer_than_the_file_system_allows_is_refused(tmp_path, capsys):
    assert main(["simulate", "--duration", "0.05", "--out", str(tmp_path / ("x" * 300))]) == 2
    assert "at most 255" in capsys.readouterr().err


def test_overwrite_never_replaces_what_the_command_reads(tmp_path, capsys):
    run = tmp_path / "run"
    _old_run(run)
    before = _snapshot(run)
    for out in (run, tmp_path):  # the run itself, or a directory that holds it
        assert main(["export", str(run), "--out", str(out), "--overwrite"]) == 2
        assert "which this command reads" in capsys.readouterr().err
    params = tmp_path / "res" / "p.toml"
    params.parent.mkdir()
    params.write_text('base = "dl25"\n')
    (params.parent / "rates.json").write_text("{}")
    assert main(["simulate", "--params", str(params), "--out", str(params.parent), "--overwrite"]) == 2
    assert "which this command reads" in capsys.readouterr().err
    assert _snapshot(run) == before and params.exists()


def test_an_exception_escaping_the_watch_callback_is_raised_after_the_solve():
    import torch

    import colplugin as cp
    from colplugin.solve import compiled

    if not compiled.kernel_available()[0]:
        pytest.skip("no compiled kernel")
    assert compiled._escaped(KeyboardInterrupt, KeyboardInterrupt("SIGTERM"), None) == 1  # stops the C loop
    net = cp.ColumnNetwork(cp.load_preset("dl25"), {"mt": ("mt", 2)}, [cp.Input("mt")])
    with pytest.raises(KeyboardInterrupt, match="SIGTERM"), torch.no_grad():
        cp.simulate(net, cp.Stimulus([0.0], [[5.0] * net.n_inputs]), 0.05,
                    solver=cp.Solver("rk4", step=1e-4, backend="fused"))
    assert compiled._ESCAPED[0] is None
    cp.simulate(net, None, 0.01)  # and the next solve runs normally


def test_commands_in_one_second_get_their_own_default_directories(tmp_path, monkeypatch):
    import time

    from colplugin import cli

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(time, "strftime", lambda fmt: "20261207-000000")  # the same second for every call
    cli._CLAIMED.clear()
    try:
        first = cli._new_run_dir(None, "train-xor")  # held (locked) while the second claims
        (first / "params.json").write_text("{}")
        second = cli._new_run_dir(None, "train-xor")
        (second / "params.json").write_text("{}")
        cli._end_claims(ok=True)
        third = cli._new_run_dir(None, "train-xor")  # the first two hold results now
    finally:
        cli._end_claims(ok=True)
    names = [p.name for p in (first, second, third)]
    assert names == ["train-xor-20261207-000000", "train-xor-20261207-000000-2", "train-xor-20261207-000000-3"]
