"""A failed command leaves nothing behind, except training progress that --resume can continue."""

import colplugin.experiments as experiments
from colplugin.cli import main


def test_a_failed_command_removes_the_directory_it_created(tmp_path, monkeypatch, capsys):
    def fails(task, seed, out, **kw):
        (out / "params.json").write_text("{}")  # some work was written before the failure
        raise RuntimeError("simulated failure after writing")

    monkeypatch.setattr(experiments, "train_run", fails)
    out = tmp_path / "new" / "run"
    assert main(["train", "xor", "--out", str(out), "--no-progress"]) == 2
    assert "simulated failure" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()  # the whole created tree is gone


def test_a_failed_training_keeps_its_checkpoint_for_resume(tmp_path, monkeypatch, capsys):
    def fails(task, seed, out, **kw):
        (out / "checkpoint.pt").write_bytes(b"progress")
        raise RuntimeError("diverged at update 7")

    monkeypatch.setattr(experiments, "train_run", fails)
    out = tmp_path / "run"
    assert main(["train", "xor", "--out", str(out), "--no-progress"]) == 2
    assert (out / "checkpoint.pt").exists() and "--resume" in capsys.readouterr().err


def test_an_existing_directory_is_never_removed(tmp_path, monkeypatch):
    def fails(task, seed, out, **kw):
        raise RuntimeError("boom")

    monkeypatch.setattr(experiments, "train_run", fails)
    out = tmp_path / "existing"
    out.mkdir()
    assert main(["train", "xor", "--out", str(out), "--no-progress"]) == 2
    assert out.is_dir()
