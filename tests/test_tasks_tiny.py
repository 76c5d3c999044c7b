"""A test-only task goes through the same path as XOR and decision: API, pipelines and command line.

``Tiny`` is one column with one learnable input; it learns to hold L2/3E at a constant rate.
Defined and registered here only, it shows that a new task needs nothing but its own class.
"""

import json
from typing import Annotated

import pytest
import torch

import colplugin as cp
from colplugin.cli import main
from colplugin.experiments import STIMULUS_FILE, load_run, main_run, reproduce, train_run
from colplugin.training import Batch, Task, TrainSettings, get_task, register_task
from colplugin.training.task import Option
from conftest import one_column_input_net, sample_constant_target


@register_task
class Tiny(Task):
    """One MT column, one learnable input onto L4E/L4I; target: L2/3E at ``target_hz`` at the end."""

    name = "tiny"
    duration = 0.02
    dt_out = 0.01
    solver = cp.Solver("rk4", step=1e-3, backend="fused")
    settings = TrainSettings(updates=2, lr=0.1, batch_size=2)
    reproduce_seeds = 2

    # one declaration: the keyword, its default, its command-line flag, its config entry
    def __init__(self, target_hz: Annotated[float, Option("--tiny-target", "tiny: target L2/3E rate, Hz")] = 3.0):
        self.target_hz = target_hz

    def build_network(self, params=None, seed=None):
        return one_column_input_net(params, seed)

    def sample(self, n, generator):
        return sample_constant_target(n, generator, self.target_hz)

    def test_set(self):
        return Batch(self.evaluation_stimulus(), torch.full((2,), self.target_hz, dtype=torch.float64), {})

    def evaluation_stimulus(self):
        return cp.Stimulus([0.0], torch.tensor([[[5.0]], [[15.0]]], dtype=torch.float64))

    def output(self, traj):
        return traj.get("rate", "mt", 0, "L23E")[-1]

    def loss(self, traj, batch):
        return torch.mean((self.output(traj) - batch.target.to(traj.state)) ** 2)

    def accuracy(self, traj, batch):
        return float((abs(self.output(traj) - batch.target.to(traj.state)) < 1.0).double().mean())

    def metrics(self, traj, batch):
        return {"mean_rate_hz": float(self.output(traj).mean())}

    def evaluate(self, network, out=None):
        with torch.no_grad():
            traj = cp.simulate(network, self.evaluation_stimulus(), self.duration, dt_out=self.dt_out,
                               solver=self.solver)
        numbers = {"final_L23E_hz": self.output(traj).tolist()}
        if out is not None:
            (out / "tiny.json").write_text(json.dumps(numbers))
        return numbers

    def report_section(self, network, result, evaluation, prefix=""):
        return [f"Tiny: final L2/3E {evaluation['final_L23E_hz']} Hz (target {self.target_hz} Hz)."]

    def reproduce(self, runs, out):
        losses = {seed: r.summary["final_loss"] for seed, r in runs.items()}
        (out / "tiny_summary.json").write_text(json.dumps(losses))
        return {"losses": losses, "headline": f"tiny: final losses {losses}"}



def _rows(metrics):
    return [{k: v for k, v in row.items() if k != "wall_seconds"} for row in metrics]


def test_registry_knows_the_test_task():
    task = get_task("tiny", target_hz=4.0)
    assert isinstance(task, Tiny) and task.target_hz == 4.0
    with pytest.raises(ValueError, match="taken"):
        @register_task
        class Other(Tiny):  # another class may not take the name
            name = "tiny"
    with pytest.raises(ValueError, match="unknown task 'nope'.*tiny"):
        get_task("nope")


def test_train_run_writes_the_run_files(tmp_path):
    res = train_run("tiny", 0, tmp_path)
    for name in ("checkpoint.pt", "metrics.json", "params.json", "network.json", STIMULUS_FILE, "training.png",
                 "weights.png", "tiny.json"):
        assert (tmp_path / name).is_file(), name
    assert res.files == ["training.png", "weights.png"]
    assert res.evaluation == json.loads((tmp_path / "tiny.json").read_text())
    data = json.loads((tmp_path / "metrics.json").read_text())
    assert data["updates"] == 2 and data["lr"] == 0.1 and data["gradient"] == {"name": "direct"}
    assert all("test_mean_rate_hz" in row for row in data["per_update"])  # the task's own metric
    # same numbers through the API: train() takes every default from Tiny.settings
    task = Tiny()
    api = cp.train(task.build_network(seed=0), task, seed=0, progress=False)
    assert _rows(api.metrics) == _rows(res.metrics)
    net, stim, duration = load_run(tmp_path)
    assert duration == Tiny.duration and torch.equal(stim.rates, task.evaluation_stimulus().rates)
    torch.testing.assert_close(net.inp_theta, res.network.inp_theta, rtol=0, atol=0)


def test_main_run_without_spiking_validation(tmp_path):
    r = main_run(tmp_path, Tiny(), progress=False, validate_scale=None, twin_scale=None)
    assert r["validation"] is None and set(r["agreement"]) == {"rk4", "euler"}
    assert r["agreement"]["euler"]["max_rel"] < 1e-6  # euler on both sides is exact
    agree = json.loads((tmp_path / "brian2" / "agreement.json").read_text())
    assert agree["method"] == "euler" and agree["max_rel"] == agree["euler"]["max_rel"]  # the exact method first
    assert set(agree["vs_accurate_torch"]) == {"max_abs_hz", "max_rel"}
    assert agree["rk4"]["vs_accurate_torch"]["max_rel"] >= 0 and not agree["rk4"]["exact"]
    report = (tmp_path / "report.md").read_text()
    assert "# colplugin run: tiny" in report and "Tiny: final L2/3E" in report
    assert "![weights](train/weights.png)" in report and "spiking circuit" not in report
    assert (tmp_path / "brian2" / "agreement.json").is_file() and (tmp_path / "brian2" / "brian2.nix").is_file()


def test_reproduce_over_the_tasks_seeds(tmp_path):
    r = reproduce("tiny", tmp_path, updates=1)
    assert set(r["losses"]) == {0, 1} and r["headline"].startswith("tiny:")
    assert (tmp_path / "seed0" / "metrics.json").is_file() and (tmp_path / "seed1" / "metrics.json").is_file()
    assert json.loads((tmp_path / "seed1" / "metrics.json").read_text())["updates"] == 1


def test_cli_train_export_and_run(tmp_path, capsys):
    run = tmp_path / "train"
    assert main(["train", "tiny", "--seed", "1", "--tiny-target", "4", "--out", str(run), "--no-progress"]) == 0
    assert "tiny seed 1: 2 updates" in capsys.readouterr().out
    task = Tiny(target_hz=4.0)
    api = cp.train(task.build_network(seed=1), task, seed=1, progress=False)
    cli = json.loads((run / "metrics.json").read_text())["per_update"]
    assert _rows(cli) == _rows(api.metrics)  # the task-specific option reached the task
    assert main(["export", str(run), "--out", str(tmp_path / "export")]) == 0
    out = capsys.readouterr().out
    assert "euler" in out and "rk4" in out
    agree = json.loads((tmp_path / "export" / "agreement.json").read_text())
    assert agree["euler"]["max_rel"] < 1e-6 and len(agree["euler"]["per_trial"]) == 2
    assert main(["run", "tiny", "--validate-scale", "0", "--twin-scale", "0", "--updates", "1",
                 "--out", str(tmp_path / "run"), "--no-progress"]) == 0
    assert "tiny" in (tmp_path / "run" / "report.md").read_text()
    assert main(["reproduce", "tiny", "--seeds", "1", "--updates", "1", "--out", str(tmp_path / "rep"),
                 "--no-progress"]) == 0
    assert "tiny: final losses" in capsys.readouterr().out


def test_one_declaration_gives_the_option_everywhere(tmp_path, capsys):
    from colplugin.cli import build_parser
    from colplugin.experiments import load_twin_run

    import argparse

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert "tiny: target L2/3E rate, Hz (default 3.0)" in " ".join(sub["train"].format_help().split())
    task = Tiny.from_args(build_parser().parse_args(["train", "tiny", "--tiny-target", "4.5"]))
    assert task.target_hz == 4.5 and task.config()["target_hz"] == 4.5
    assert Tiny.from_config(task.config()).target_hz == 4.5
    run = tmp_path / "r"
    assert main(["train", "tiny", "--tiny-target", "4.5", "--updates", "1", "--out", str(run), "--no-progress"]) == 0
    assert load_twin_run(run)[3].target_hz == 4.5  # rebuilt from the checkpoint by the same rule


def test_cli_refuses_another_tasks_option(tmp_path, capsys):
    assert main(["train", "xor", "--tiny-target", "4", "--out", str(tmp_path / "x")]) == 2
    assert "--tiny-target belongs to task 'tiny'" in capsys.readouterr().err
    assert not (tmp_path / "x").exists() or not any((tmp_path / "x").iterdir())


def test_main_run_resume_after_training_continues_without_retraining(tmp_path):
    first = main_run(tmp_path, Tiny(), progress=False, validate_scale=None, twin_scale=None)
    ckpt = (tmp_path / "train" / "checkpoint.pt").read_bytes()
    (tmp_path / "report.md").unlink()  # as if the run stopped after training
    again = main_run(tmp_path, Tiny(), progress=False, validate_scale=None, twin_scale=None, resume=True)
    assert (tmp_path / "train" / "checkpoint.pt").read_bytes() == ckpt  # training was not redone
    assert again["summary"]["updates"] == first["summary"]["updates"]
    assert (tmp_path / "report.md").is_file()
    (tmp_path / "report.md").unlink()  # unfinished again: a resume with another seed is refused
    with pytest.raises(ValueError, match="seed"):
        main_run(tmp_path, Tiny(), progress=False, validate_scale=None, twin_scale=None, resume=True, seed=3)


def test_main_run_resume_refuses_a_directory_that_is_not_a_run(tmp_path):
    (tmp_path / "notes.txt").write_text("unrelated")
    with pytest.raises(ValueError, match="not a run"):
        main_run(tmp_path, Tiny(), progress=False, validate_scale=None, twin_scale=None, resume=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]  # nothing started inside it


def test_options_survive_annotations_for_type_checkers_only_and_refuse_unconvertible_ones():
    import argparse
    from typing import TYPE_CHECKING

    if TYPE_CHECKING:  # pragma: no cover
        from numpy.typing import ArrayLike  # noqa: F401

    class Typed(Tiny):  # not registered: a bad option must not reach the command line of other tests
        name = "typed"

        def __init__(self, data: "ArrayLike | None" = None,
                     rate: Annotated[float, Option("--typed-rate", "typed: rate, Hz")] = 2.0):
            super().__init__()
            self.rate = rate

    assert [(k, o.flag, d) for k, o, d in Typed.options()] == [("rate", "--typed-rate", 2.0)]

    class Flagged(Tiny):  # a keyword defaulting to False is a switch
        name = "flagged"

        def __init__(self, on: Annotated[bool, Option("--flagged-on", "flagged: on or off")] = False):
            super().__init__()
            self.on = on

    parser = argparse.ArgumentParser()
    Flagged.add_arguments(parser.add_argument_group("x"))
    assert Flagged.from_args(parser.parse_args([])).on is False
    assert Flagged.from_args(parser.parse_args(["--flagged-on"])).on is True

    class OnByDefault(Tiny):  # a switch that is on by default could never be turned off
        name = "on_by_default"

        def __init__(self, on: Annotated[bool, Option("--default-on", "on by default")] = True):
            super().__init__()

    with pytest.raises(TypeError, match="--default-on.*must default to False"):
        OnByDefault.add_arguments(argparse.ArgumentParser().add_argument_group("x"))

    class Listed(Tiny):
        name = "listed"

        def __init__(self, sizes: Annotated[list, Option("--listed-sizes", "listed: sizes")] = None):
            super().__init__()

    with pytest.raises(TypeError, match="--listed-sizes.*needs Option"):
        Listed.add_arguments(argparse.ArgumentParser().add_argument_group("x"))
