"""A catalogue of unclear command-line messages: one case per row, so each stays fixed.

Every case runs ``colplugin.cli.main`` in-process (or the API where the command line cannot
reach the check yet) and checks a refusal with exit status 2 whose message names the
option, file or value and a fix usable from the command line (Python-only advice follows in
parentheses), and that the command left no output directory behind. Nothing trains more
than one update; the XOR run the cases start from is trained once per module.
"""

from __future__ import annotations

import math
import shutil

import pytest
import torch

import colplugin as cp
from colplugin.cli import main
from colplugin.experiments import load_run
from colplugin.training.trainer import CheckpointError


@pytest.fixture(scope="module")
def xor_run(tmp_path_factory):
    """A finished one-update XOR run of `colplugin train` (copied by every case that changes it)."""
    out = tmp_path_factory.mktemp("xor") / "run"
    assert main(["train", "xor", "--updates", "1", "--out", str(out), "--no-progress"]) == 0
    return out


def _error(capsys, args) -> str:
    """stderr of a command that must exit with status 2 (a refusal raised as SystemExit(2) counts too)."""
    capsys.readouterr()
    try:
        status = main([str(a) for a in args])
    except SystemExit as exc:
        status = exc.code
    assert status == 2, status
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


def _copy(run, dst, drop_metrics=False):
    shutil.copytree(run, dst)
    if drop_metrics:  # an interrupted run (no metrics.json): one that --resume continues
        (dst / "metrics.json").unlink()
    return dst


# 1 ----------------------------------------------------------------------------------------
def test_device_string_names_the_option_and_the_valid_values():
    from colplugin.training.settings import check_device

    for bad in ("gpu9", "cuda:x", ""):
        with pytest.raises(ValueError) as info:
            check_device(bad)
        msg = str(info.value)
        assert "--device" in msg and repr(bad) in msg and "cpu, cuda, cuda:N" in msg, msg
    assert check_device("cpu") == torch.device("cpu") and check_device(None) == torch.device("cpu")
    assert check_device("cuda:1", option="--gpu") == torch.device("cuda", 1)


def test_cli_device_gpu9(tmp_path, capsys):
    err = _error(capsys, ["train", "xor", "--updates", "1", "--device", "gpu9", "--out", tmp_path / "t",
                          "--no-progress"])
    assert "--device" in err and "gpu9" in err and "cpu, cuda, cuda:N" in err, err
    assert not (tmp_path / "t").exists() and "removed" not in err


# 2 ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("value", ["-1", "nan", "inf"])
def test_decision_noise_mv_out_of_range(tmp_path, capsys, value):
    err = _error(capsys, ["train", "decision", "--updates", "1", "--noise-mv", value, "--out", tmp_path / "t",
                          "--no-progress"])
    assert "--noise-mv" in err and value in err and "Decision(noise_mV=" in err and ">= 0 mV" in err, err
    assert "MembraneNoise" not in err
    assert not (tmp_path / "t").exists()


def test_task_keywords_out_of_range_name_the_keyword():
    from colplugin.tasks.decision import Decision
    from colplugin.tasks.digits import Digits

    with pytest.raises(ValueError, match=r"--noise-mv -0\.5 \(Python: Decision\(noise_mV=-0\.5\)\)"):
        Decision(noise_mV=-0.5)
    for kw in ({"rate": -20.0}, {"logit_scale": 0.0}, {"rate_floor": float("nan")}, {"input_gain": float("inf")},
               {"feedforward_drive": -1.0}):
        with pytest.raises(ValueError, match=rf"Digits\({next(iter(kw))}="):
            Digits(columns=2, **kw)


# 3 ----------------------------------------------------------------------------------------
def test_implausible_learning_rate_refused_up_front(tmp_path, capsys):
    from colplugin.training.settings import MAX_LR, TrainSettings

    err = _error(capsys, ["train", "xor", "--updates", "1", "--lr", "1e30", "--out", tmp_path / "t", "--no-progress"])
    assert "1e+30" in err and "at most 10" in err and "--lr 0.1" in err and "Python: lr=" in err, err
    assert "diverged" not in err and "removed" not in err  # refused before the directory was made
    assert not (tmp_path / "t").exists()
    # the bound is the one the message names, and it is inclusive
    assert TrainSettings(lr=MAX_LR).lr == MAX_LR and f"at most {MAX_LR:g}" in err
    with pytest.raises(ValueError, match=f"at most {MAX_LR:g}"):
        TrainSettings(lr=math.nextafter(MAX_LR, math.inf))


def test_divergence_names_lr_then_python_clip_grad(tmp_path, capsys):
    err = _error(capsys, ["train", "xor", "--updates", "1", "--lr", "10", "--out", tmp_path / "t", "--no-progress"])
    assert "diverged" in err and "--lr (now 10; e.g. --lr 1)" in err, err
    assert "(Python: lr=..., or clip the gradient with clip_grad=...)" in err, err
    assert not (tmp_path / "t").exists()


# 4 ----------------------------------------------------------------------------------------
def test_directory_in_place_of_the_checkpoint(tmp_path, capsys):
    (tmp_path / "c3" / "checkpoint.pt").mkdir(parents=True)
    for args in (["train", "xor", "--resume", "--out", tmp_path / "c3", "--no-progress"],
                 ["export", tmp_path / "c3", "--out", tmp_path / "e"]):
        err = _error(capsys, args)
        assert "checkpoint.pt is a directory, not a checkpoint file" in err and "does not exist" not in err, err
        assert "move that directory away" in err
        assert (tmp_path / "c3" / "checkpoint.pt").is_dir()
    assert not (tmp_path / "e").exists()


# 5 ----------------------------------------------------------------------------------------
def test_resume_with_another_task(xor_run, tmp_path, capsys):
    run = _copy(xor_run, tmp_path / "c5", drop_metrics=True)
    before = (run / "checkpoint.pt").read_bytes()
    err = _error(capsys, ["train", "decision", "--updates", "1", "--resume", "--out", run, "--no-progress"])
    assert f"{run} holds a run of task 'xor', not 'decision'" in err, err
    assert f"`colplugin train xor --resume --out {run}`" in err and "another --out" in err, err
    assert "does not fit this network" not in err and "from_spec" not in err
    assert (run / "checkpoint.pt").read_bytes() == before


def test_resume_of_a_main_run_with_another_task(xor_run, tmp_path, capsys):
    out = tmp_path / "r"
    _copy(xor_run, out / "train")  # a `colplugin run` whose training finished
    err = _error(capsys, ["run", "decision", "--resume", "--out", out, "--validate-scale", "0", "--twin-scale", "0",
                          "--no-progress"])
    assert "holds a run of task 'xor' seed 0, not 'decision' seed 0" in err, err
    assert f"`colplugin run xor --resume --out {out}`" in err and "another --out" in err, err
    assert not (out / "brian2").exists()


# 6 ----------------------------------------------------------------------------------------
def _poison(run):
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    name = next(k for k, v in ckpt["state_dict"].items() if v.is_floating_point())
    ckpt["state_dict"][name] = ckpt["state_dict"][name] * float("nan")
    torch.save(ckpt, run / "checkpoint.pt")


def test_export_of_non_finite_weights(xor_run, tmp_path, capsys):
    run = _copy(xor_run, tmp_path / "nan")
    _poison(run)
    err = _error(capsys, ["export", run, "--out", tmp_path / "e"])
    assert "non-finite values" in err and "weights are not finite" in err, err
    assert "export a run whose training did not diverge" in err and "--lr" in err, err
    assert "best_weights.pt" not in err and "resume" not in err
    assert not (tmp_path / "e").exists()


def test_export_of_non_finite_weights_with_kept_best_weights(xor_run, tmp_path):
    run = _copy(xor_run, tmp_path / "nan")
    good = torch.load(run / "checkpoint.pt", weights_only=True)["state_dict"]
    torch.save({"state_dict": good, "update": 1, "accuracy": 1.0}, run / "best_weights.pt")
    _poison(run)
    net, _, _ = load_run(run)  # the kept weights replace the diverged ones
    assert all(bool(v.isfinite().all()) for v in net.state_dict().values() if v.is_floating_point())
    (run / "best_weights.pt").unlink()
    with pytest.raises(CheckpointError, match="twin a run whose training did not diverge"):
        load_run(run, command="twin")


# 7 ----------------------------------------------------------------------------------------
def test_export_of_a_json_list(tmp_path, capsys):
    (tmp_path / "bad.json").write_text("[1, 2]")
    err = _error(capsys, ["export", tmp_path / "bad.json", "--out", tmp_path / "e"])
    assert "bad.json is not a network spec: it holds a JSON list" in err, err
    assert "run directory of `colplugin train`" in err and "network.json" in err, err
    assert "TypeError" not in err and "list indices" not in err
    assert not (tmp_path / "e").exists()


# 8 ----------------------------------------------------------------------------------------
def test_export_of_a_missing_path(tmp_path, capsys):
    err = _error(capsys, ["export", tmp_path / "nope", "--out", tmp_path / "e"])
    assert f"{tmp_path / 'nope'} does not exist" in err and "holds no checkpoint" not in err, err
    assert "colplugin train" in err
    assert not (tmp_path / "e").exists()


# 9 and 10 -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fixed_target(tmp_path_factory):
    """A NIX target simulated by a network without a learnable projection (its spec annotated)."""
    d = tmp_path_factory.mktemp("fit")
    net = cp.ColumnNetwork(cp.load_preset("dl25"), {"mt": ("mt", 2)}, [cp.Input("mt")])
    stim = cp.Stimulus([0.0, 0.02], [[[0, 0], [30, 20]]])
    with torch.no_grad():
        traj = cp.simulate(net, stim, 0.05, dt_out=0.01)
    cp.save_nix(cp.to_neo(traj), d / "good.nix")
    return d / "good.nix"


def test_fit_target_without_learnable_projection(fixed_target, tmp_path, capsys):
    err = _error(capsys, ["train", "fit", "--target", fixed_target, "--updates", "1", "--out", tmp_path / "f",
                          "--no-progress"])
    assert "no learnable projection" in err and "nothing to fit" in err and "good.nix" in err, err
    assert "--network SPEC.json" in err and "(Python:" in err, err
    assert not (tmp_path / "f").exists()


def test_fit_target_or_network_that_is_a_directory(tmp_path, capsys):
    (tmp_path / "somedir").mkdir()
    err = _error(capsys, ["train", "fit", "--target", tmp_path / "somedir", "--out", tmp_path / "f", "--no-progress"])
    assert "--target" in err and "somedir is a directory, not a NIX or NWB file" in err, err
    assert "no such file" not in err
    assert not (tmp_path / "f").exists()


def test_fit_network_that_is_a_directory(fixed_target, tmp_path, capsys):
    (tmp_path / "somedir").mkdir()
    err = _error(capsys, ["train", "fit", "--target", fixed_target, "--network", tmp_path / "somedir", "--out",
                          tmp_path / "f", "--no-progress"])
    assert "--network" in err and "somedir is a directory" in err and "network.json" in err, err
    assert not (tmp_path / "f").exists()


@pytest.mark.parametrize("flag", ["--populations", "--network", "--target"])
@pytest.mark.parametrize("value", ["", " , "])
def test_fit_explicitly_empty_option(fixed_target, tmp_path, capsys, flag, value):
    args = {"--target": str(fixed_target), flag: value}
    err = _error(capsys, ["train", "fit", *[x for kv in args.items() for x in kv], "--updates", "1",
                          "--out", tmp_path / "f", "--no-progress"])
    assert f"{flag} is empty" in err, err
    assert not (tmp_path / "f").exists()


def test_json_file_that_is_a_directory(tmp_path, capsys):
    (tmp_path / "spec.json").mkdir()
    err = _error(capsys, ["export", tmp_path / "spec.json", "--out", tmp_path / "e"])
    assert "spec.json is a directory, not a file" in err and "Errno" not in err, err
    assert not (tmp_path / "e").exists()


def test_exported_file_that_is_no_run(xor_run, tmp_path, capsys):
    err = _error(capsys, ["export", xor_run / "checkpoint.pt", "--out", tmp_path / "e"])
    assert "is a file, not a run directory" in err and f"colplugin export {xor_run}" in err, err
    assert not (tmp_path / "e").exists()
