"""A catalogue of malformed files and bad training inputs: one case per row, so each stays fixed.

Every case calls the API or ``colplugin.cli.main`` in-process and checks a refusal whose
message names the file or value and the fix (no raw traceback, no torch/pickle internals,
no silent wrong result), or the fixed behaviour. Cases are fast: nothing trains more
than one update (the XOR run they start from is trained once per module).
"""

from __future__ import annotations

import json
import os
import shutil

import neo
import numpy as np
import pytest
import quantities as pq
import torch

import colplugin as cp
from colplugin.cli import main
from colplugin.experiments import load_run, load_twin_run
from colplugin.export.neo import NeoError, from_neo, stimulus_from_neo
from colplugin.tasks import get_task
from colplugin.tasks.fit import FitTarget
from colplugin.training.trainer import CheckpointError, load_best_weights, load_checkpoint


# -- shared material ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def xor_run(tmp_path_factory):
    """A finished one-update XOR run of `colplugin train` (copied by every case that changes it)."""
    out = tmp_path_factory.mktemp("xor") / "run"
    assert main(["train", "xor", "--updates", "1", "--out", str(out), "--no-progress"]) == 0
    return out


@pytest.fixture(scope="module")
def fit_files(tmp_path_factory):
    """A two-trial rate target (NIX, as colplugin.to_neo writes it) and the spec of its network."""
    d = tmp_path_factory.mktemp("fit")
    truth = cp.ColumnNetwork(cp.load_preset("dl25"), {"mt": ("mt", 2)}, [cp.Input("mt"), cp.Lateral("mt", init=50.0)],
                             seed=1)
    stim = cp.Stimulus([0.0, 0.02], [[[0, 0], [30, 20]], [[0, 0], [15, 35]]])
    with torch.no_grad():
        traj = cp.simulate(truth, stim, duration=0.05, dt_out=0.01)
    cp.save_nix(cp.to_neo(traj), d / "good.nix")
    (d / "spec.json").write_text(json.dumps(truth.spec()))
    return d


class Ctx:
    """What a case gets: a scratch directory, capsys and the shared runs."""

    def __init__(self, tmp_path, capsys, request):
        self.tmp, self.capsys, self.request = tmp_path, capsys, request

    def run_copy(self, drop_metrics=False):
        src = self.request.getfixturevalue("xor_run")
        dst = self.tmp / "run"
        shutil.copytree(src, dst)
        if drop_metrics:  # an interrupted run (no metrics.json) can be resumed
            (dst / "metrics.json").unlink()
        return dst

    def edit_checkpoint(self, run, change):
        ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
        change(ckpt)
        torch.save(ckpt, run / "checkpoint.pt")

    def cli_error(self, args) -> str:
        self.capsys.readouterr()
        assert main(args) == 2
        err = self.capsys.readouterr().err
        assert "Traceback" not in err
        return err

    def resume_error(self, run) -> str:
        return self.cli_error(["train", "xor", "--updates", "2", "--resume", "--out", str(run), "--no-progress"])

    def target(self, change, name="target.nix"):
        """The good fit target changed by ``change(block)``, written to a new NIX file."""
        d = self.request.getfixturevalue("fit_files")
        block = cp.load_nix(d / "good.nix")
        change(block)
        return cp.save_nix(block, self.tmp / name)

    def fit_error(self, target, *extra) -> str:
        return self.cli_error(["train", "fit", "--target", str(target), "--updates", "1", "--out",
                               str(self.tmp / "fit"), "--no-progress", *extra])

    @property
    def spec(self):
        return self.request.getfixturevalue("fit_files") / "spec.json"


# -- checkpoints ----------------------------------------------------------------------------

def checkpoint_metrics_not_json(c):
    run = c.run_copy()
    c.edit_checkpoint(run, lambda ck: ck.__setitem__("metrics", 5))
    for load in (lambda: load_checkpoint(run / "checkpoint.pt"), lambda: load_run(run), lambda: load_twin_run(run)):
        with pytest.raises(CheckpointError) as info:
            load()
        msg = str(info.value)
        assert "checkpoint.pt" in msg and "'metrics'" in msg and "use an intact checkpoint" in msg


def checkpoint_without_spec(c):
    run = c.run_copy()
    c.edit_checkpoint(run, lambda ck: ck.pop("spec"))
    with pytest.raises(CheckpointError, match=r"'spec' entry is missing.*start training afresh"):
        load_run(run)


def checkpoint_spec_is_a_number(c):
    run = c.run_copy(drop_metrics=True)
    c.edit_checkpoint(run, lambda ck: ck.__setitem__("spec", 5))
    err = c.resume_error(run)
    assert str(run / "checkpoint.pt") in err and "'spec'" in err and "not JSON text" in err


def checkpoint_spec_that_builds_no_network(c):
    run = c.run_copy()
    c.edit_checkpoint(run, lambda ck: ck.__setitem__("spec", json.dumps({"params": 5})))
    with pytest.raises(CheckpointError, match=r"'spec' does not build a network"):
        load_checkpoint(run / "checkpoint.pt")


def checkpoint_update_and_generator_of_wrong_type(c):
    run = c.run_copy()
    c.edit_checkpoint(run, lambda ck: ck.__setitem__("update", "three"))
    with pytest.raises(CheckpointError, match=r"'update' entry is 'three', not a whole number"):
        load_checkpoint(run / "checkpoint.pt")
    c.edit_checkpoint(run, lambda ck: ck.update(update=1, generator=torch.zeros(3)))
    with pytest.raises(CheckpointError, match=r"'generator' entry is not a random generator state"):
        load_checkpoint(run / "checkpoint.pt")


def truncated_checkpoint_on_resume(c):
    run = c.run_copy(drop_metrics=True)
    data = (run / "checkpoint.pt").read_bytes()
    (run / "checkpoint.pt").write_bytes(data[: len(data) // 2])
    err = c.resume_error(run)
    assert str(run / "checkpoint.pt") in err and "corrupt" in err and "start training afresh" in err
    assert "central directory" not in err


def pickle_payload_in_best_weights_is_never_run(c):
    run = c.run_copy()
    marker = c.tmp / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.mkdir, (str(marker),))

    torch.save({"state_dict": Payload()}, run / "best_weights.pt")
    with pytest.raises(CheckpointError) as info:
        load_run(run)
    msg = str(info.value)
    assert "best_weights.pt" in msg and "never unpickles" in msg and "delete it" in msg
    assert "Unpickl" not in msg and "weights_only" not in msg
    assert not marker.exists()


def best_weights_without_state_dict(c):
    run = c.run_copy()
    torch.save({"update": 1}, run / "best_weights.pt")
    net = load_checkpoint(run / "checkpoint.pt")["network"]
    with pytest.raises(CheckpointError, match=r"best_weights.pt: its 'state_dict' entry is missing.*delete it"):
        load_best_weights(run / "best_weights.pt", net)


def evaluation_stimulus_without_times(c):
    run = c.run_copy()
    path = run / "evaluation_stimulus.json"
    data = json.loads(path.read_text())
    del data["times_s"]
    path.write_text(json.dumps(data))
    err = c.cli_error(["export", str(run), "--out", str(c.tmp / "export")])
    assert "evaluation_stimulus.json lacks 'times_s'" in err and "restore it from the run" in err


def evaluation_stimulus_of_wrong_shape_or_not_json(c):
    run = c.run_copy()
    path = run / "evaluation_stimulus.json"
    data = json.loads(path.read_text())
    path.write_text(json.dumps({**data, "rates_hz": [[[1.0, 2.0, 3.0]]] * 4}))
    with pytest.raises(ValueError, match=r"evaluation_stimulus.json.*(valid stimulus|input channel)"):
        load_run(run)
    path.write_text(json.dumps([1, 2]))
    with pytest.raises(ValueError, match=r"evaluation_stimulus.json holds a list, not an object"):
        load_run(run)
    path.write_text("{oops")
    with pytest.raises(ValueError, match=r"evaluation_stimulus.json is not valid JSON.*restore it"):
        load_run(run)


def network_json_that_is_no_spec(c):
    (c.tmp / "network.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match=r"network.json is not a network spec.*json.dump\(network.spec\(\)"):
        load_run(c.tmp)


def resume_refuses_non_finite_weights(c):
    run = c.run_copy(drop_metrics=True)

    def poison(ck):
        name = next(iter(ck["state_dict"]))
        ck["state_dict"][name] = ck["state_dict"][name] * float("nan")

    c.edit_checkpoint(run, poison)
    err = c.resume_error(run)
    assert "non-finite values" in err and "start training afresh" in err


def resume_refuses_non_finite_optimizer_state(c):
    run = c.run_copy(drop_metrics=True)

    def poison(ck):
        state = next(iter(ck["optimizer"]["state"].values()))
        state["exp_avg"][0] = float("nan")

    c.edit_checkpoint(run, poison)
    err = c.resume_error(run)
    assert "non-finite values" in err and "optimizer['state']" in err and "exp_avg" in err
    assert "resume from an earlier checkpoint or start training afresh" in err


def resume_refuses_non_finite_learning_rate_and_guard_state(c):
    run = c.run_copy(drop_metrics=True)
    c.edit_checkpoint(run, lambda ck: ck["optimizer"]["param_groups"][0].__setitem__("lr", float("inf")))
    assert "optimizer['param_groups'][0]['lr']" in c.resume_error(run)
    c.edit_checkpoint(run, lambda ck: (ck["optimizer"]["param_groups"][0].__setitem__("lr", 0.2),
                                       ck.__setitem__("kept_best", {"accuracy": float("nan"), "update": 1,
                                                                    "state_dict": {}})))
    assert "kept_best['accuracy']" in c.resume_error(run)


def resume_refuses_optimizer_state_that_does_not_fit(c):
    run = c.run_copy(drop_metrics=True)
    c.edit_checkpoint(run, lambda ck: ck["optimizer"].__setitem__("param_groups", []))
    err = c.resume_error(run)
    assert "'optimizer' state does not fit this run's optimizer" in err and "start training afresh" in err


def an_intact_checkpoint_resumes(c):
    run = c.run_copy(drop_metrics=True)
    assert main(["train", "xor", "--updates", "2", "--resume", "--out", str(run), "--no-progress"]) == 0
    assert json.loads((run / "metrics.json").read_text())["updates"] == 2


# -- fit targets ------------------------------------------------------------------------

def target_without_segments(c):
    err = c.fit_error(c.target(lambda b: b.segments.clear()))
    assert "target.nix" in err and "no segments" in err and "one Segment per trial" in err


def target_with_one_sample_per_segment(c):
    def one(block):
        for seg in block.segments:
            seg.analogsignals = [s[:1] for s in seg.analogsignals]

    err = c.fit_error(c.target(one))
    assert "target.nix" in err and "has 1 sample(s)" in err and "at least two samples" in err


def target_segments_with_different_sampling_periods(c):
    def slower(block):
        seg = block.segments[1]
        seg.analogsignals = [neo.AnalogSignal(s.magnitude, units=s.units, sampling_period=0.02 * pq.s, name=s.name,
                                              array_annotations=s.array_annotations) for s in seg.analogsignals]

    err = c.fit_error(c.target(slower))
    assert "'trial 1' is sampled every 0.02 s" in err and "every 0.01 s" in err and "one time grid" in err


def target_with_non_json_network_annotation(c):
    err = c.fit_error(c.target(lambda b: b.annotations.__setitem__("network_spec", "{not json")))
    assert "'network_spec' annotation of" in err and "target.nix" in err and "not valid JSON" in err
    assert "--network SPEC.json" in err


def network_option_that_is_no_spec(c):
    target = c.request.getfixturevalue("fit_files") / "good.nix"
    (c.tmp / "five.json").write_text("5")
    err = c.fit_error(target, "--network", str(c.tmp / "five.json"))
    assert "--network" in err and "five.json" in err and "not a network spec" in err and "ColumnNetwork.spec()" in err
    (c.tmp / "half.json").write_text('{"params": {}}')
    err = c.fit_error(target, "--network", str(c.tmp / "half.json"))
    assert "half.json does not build a network" in err and "ColumnNetwork.spec()" in err
    err = c.fit_error(target, "--network", str(c.tmp / "missing.json"))
    assert "missing.json: no such file" in err


def foreign_nix_layout_with_network(c):
    import nixio

    path = c.tmp / "foreign.nix"
    f = nixio.File.open(str(path), nixio.FileMode.Overwrite)
    f.create_block("recording", "session").create_data_array("rates", "nix.sampled", data=[[1.0, 2.0], [3.0, 4.0]])
    f.close()
    err = c.fit_error(path, "--network", str(c.spec))
    assert "foreign.nix" in err and "no segments" in err and "colplugin.to_neo" in err
    empty = c.tmp / "empty.nix"
    nixio.File.open(str(empty), nixio.FileMode.Overwrite).close()
    err = c.fit_error(empty, "--network", str(c.spec))
    assert "empty.nix holds no Neo Block" in err and "save_nix" in err


def target_channels_without_annotations(c):
    def bare(block):
        for seg in block.segments:
            s = seg.analogsignals[0]
            seg.analogsignals[0] = neo.AnalogSignal(s.magnitude, units="Hz", sampling_period=s.sampling_period,
                                                    name="rate")

    err = c.fit_error(c.target(bare), "--network", str(c.spec))
    assert "target.nix" in err and "no area/column/population annotations" in err and "array_annotations" in err


def target_rates_without_unit(c):
    def dimensionless(block):
        for seg in block.segments:
            s = seg.analogsignals[0]
            seg.analogsignals[0] = neo.AnalogSignal(s.magnitude, units="dimensionless", name="rate",
                                                    sampling_period=s.sampling_period,
                                                    array_annotations=s.array_annotations)

    err = c.fit_error(c.target(dimensionless))
    assert "target.nix" in err and "signal 'rate' has no units" in err and "units='Hz'" in err


def target_without_input_is_refused_not_fitted_against_zero(c):
    def no_input(block):
        for seg in block.segments:
            seg.analogsignals = [s for s in seg.analogsignals if s.name != "input"]

    err = c.fit_error(c.target(no_input))
    assert "target.nix" in err and "no 'input' signal" in err and "AnalogSignal named 'input'" in err
    assert not (c.tmp / "fit").exists()
    block = cp.load_nix(c.tmp / "target.nix")  # the API: an explicit stimulus is the way for trials without input
    net = cp.ColumnNetwork.from_spec(json.loads(c.spec.read_text()))
    with pytest.raises(NeoError, match="stimulus=Stimulus"):
        FitTarget.from_block(block, net)
    task = FitTarget.from_block(block, net, stimulus=cp.Stimulus.none(2, net.n_inputs))
    assert task.stim.batch_size == 2


def target_input_in_some_segments_only(c):
    def half(block):
        seg = block.segments[1]
        seg.analogsignals = [s for s in seg.analogsignals if s.name != "input"]

    block = cp.load_nix(c.target(half))
    with pytest.raises(NeoError, match=r"\['trial 1'\] have no 'input' signal"):
        stimulus_from_neo(block)


def input_signal_is_never_taken_for_the_rates(c):
    seg = neo.Segment(name="s")
    seg.analogsignals.append(neo.AnalogSignal(np.full((5, 2), 20.0), units="Hz", sampling_rate=1 * pq.kHz,
                                              name="input"))
    block = neo.Block()
    block.segments.append(seg)
    with pytest.raises(NeoError, match="neither a rate signal nor spike trains"):
        from_neo(block)


def spike_train_targets_work_from_the_cli(c):
    block = neo.Block()
    for b, rates in enumerate(((10.0, 5.0), (4.0, 12.0))):
        seg = neo.Segment(name=f"trial {b}")
        for col, rate in enumerate(rates):
            for i in range(3):
                times = np.sort((np.arange(0, 0.05, 1 / (20 * rate)) + i * 1e-3) % 0.05)
                seg.spiketrains.append(neo.SpikeTrain(times * pq.s, t_stop=0.05 * pq.s, area="mt", column=col,
                                                      population="L23E", neuron=i))
        u = np.zeros((50, 2))
        u[20:] = (30.0, 20.0) if b == 0 else (15.0, 35.0)
        seg.analogsignals.append(neo.AnalogSignal(u, units="Hz", sampling_period=1e-3 * pq.s, name="input"))
        block.segments.append(seg)
    target = cp.save_nix(block, c.tmp / "spikes.nix")
    out = c.tmp / "fit"
    assert main(["train", "fit", "--target", str(target), "--network", str(c.spec), "--updates", "1",
                 "--out", str(out), "--no-progress"]) == 0
    cfg = torch.load(out / "checkpoint.pt", weights_only=True)["task"]
    net = cp.ColumnNetwork.from_spec(json.loads(c.spec.read_text()))
    assert [net.channel_names[i] for i in cfg["channels"]] == ["mt[0].L23E", "mt[1].L23E"]


# -- training inputs ----------------------------------------------------------------------

def digits_batch_size_zero(c):
    err = c.cli_error(["train", "digits", "--batch-size", "0", "--out", str(c.tmp / "d"), "--no-progress"])
    assert "batch_size=0" in err and "--batch-size" in err and ">= 1" in err
    assert not (c.tmp / "d").exists()


def digits_other_bad_sizes(c):
    for args, fragment in ((["--batch-size", "5000"], "at most 1437"), (["--epochs", "inf"], "finite number"),
                           (["--epochs", "0"], "--epochs"), (["--eval-size", "-1"], "--eval-size"),
                           (["--eval-size", "100000"], "at most 360"), (["--columns", "0"], "--columns")):
        err = c.cli_error(["train", "digits", *args, "--updates", "1", "--out", str(c.tmp / "d"), "--no-progress"])
        assert fragment in err and args[1] in err, (args, err)


def non_positive_updates_and_learning_rates(c):
    for args, fragment in ((["--updates", "0"], "updates must be a whole number >= 1"),
                           (["--updates", "-2"], "got -2"), (["--lr", "0"], "lr must be a positive"),
                           (["--lr", "nan"], "got nan"), (["--lr", "-1"], "got -1.0")):
        err = c.cli_error(["train", "xor", *args, "--out", str(c.tmp / "x"), "--no-progress"])
        assert fragment in err, (args, err)
    task = get_task("xor")
    for kw, fragment in (({"batch_size": 0}, "batch_size"), ({"updates": 0}, "updates"), ({"lr": -0.1}, "lr")):
        with pytest.raises(ValueError, match=fragment):
            cp.train(task.build_network(seed=0), task, progress=False, **kw)


def task_options_out_of_range(c):
    from colplugin.tasks.decision import Decision
    from colplugin.tasks.xor import XOR

    for kw in ({"rate": -20.0}, {"jitter": 1.5}, {"init_jitter": float("nan")}, {"high": 0.1}):
        with pytest.raises(ValueError, match=f"XOR\\({next(iter(kw))}="):
            XOR(**kw)
    with pytest.raises(ValueError, match=r"Decision\(phase=0"):
        Decision(phase=0)


def seed_nan_and_other_bad_seeds(c):
    task = get_task("xor")
    for seed in (float("nan"), -1, 2 ** 63, 1.5, True, "0"):
        with pytest.raises(ValueError, match=r"seed must be a whole number in \[0, 2\^63\)") as info:
            cp.train(task.build_network(seed=0), task, 1, seed=seed, progress=False, evaluate=False)
        assert repr(seed) in str(info.value)


def final_loss_is_measured_after_training(c):
    task = get_task("xor")
    net = task.build_network(seed=0)
    res = cp.train(net, task, 1, seed=0, progress=False)
    last = res.metrics[-1]
    assert res.summary["final_loss_on"] == "test set"
    assert res.summary["final_loss"] == last["test_loss"] != last["loss"]
    assert res.summary["last_batch_loss"] == last["loss"]
    with torch.no_grad():  # the test loss of the returned weights, simulated again
        test = task.test_set()
        traj = cp.simulate(net, test.stimulus, task.duration, dt_out=task.dt_out, solver=task.solver)
    assert float(task.loss(traj, test)) == pytest.approx(res.summary["final_loss"], rel=1e-6)


def final_loss_without_evaluation_is_the_batch_after_the_step(c):
    task = get_task("xor")
    res = cp.train(task.build_network(seed=0), task, 1, seed=0, progress=False, evaluate=False)
    assert res.summary["final_loss_on"] == "last training batch"
    assert np.isfinite(res.summary["final_loss"]) and res.summary["final_loss"] != res.metrics[-1]["loss"]


def progress_bar_and_report_count_the_same_updates(c):
    import io

    from tqdm import tqdm as real_tqdm

    bars = []

    class Recording(real_tqdm):
        def __init__(self, *a, **kw):
            kw["file"] = io.StringIO()
            super().__init__(*a, **kw)
            bars.append(self)

    c.request.getfixturevalue("monkeypatch").setattr("tqdm.auto.tqdm", Recording)
    task = get_task("xor")  # stops once the test accuracy reaches 100 % (after one update at seed 0)
    res = cp.train(task.build_network(seed=0), task, 5, seed=0, progress=True)
    done = res.summary["updates"]
    assert done < 5 and [r["update"] for r in res.metrics] == list(range(done + 1))
    assert (bars[0].n, bars[0].total) == (done, done)


CASES = [checkpoint_metrics_not_json, checkpoint_without_spec, checkpoint_spec_is_a_number,
         checkpoint_spec_that_builds_no_network, checkpoint_update_and_generator_of_wrong_type,
         truncated_checkpoint_on_resume, pickle_payload_in_best_weights_is_never_run, best_weights_without_state_dict,
         evaluation_stimulus_without_times, evaluation_stimulus_of_wrong_shape_or_not_json,
         network_json_that_is_no_spec, resume_refuses_non_finite_weights, resume_refuses_non_finite_optimizer_state,
         resume_refuses_non_finite_learning_rate_and_guard_state, resume_refuses_optimizer_state_that_does_not_fit,
         an_intact_checkpoint_resumes,
         target_without_segments, target_with_one_sample_per_segment, target_segments_with_different_sampling_periods,
         target_with_non_json_network_annotation, network_option_that_is_no_spec, foreign_nix_layout_with_network,
         target_channels_without_annotations, target_rates_without_unit,
         target_without_input_is_refused_not_fitted_against_zero, target_input_in_some_segments_only,
         input_signal_is_never_taken_for_the_rates, spike_train_targets_work_from_the_cli,
         digits_batch_size_zero, digits_other_bad_sizes, non_positive_updates_and_learning_rates,
         task_options_out_of_range, seed_nan_and_other_bad_seeds, final_loss_is_measured_after_training,
         final_loss_without_evaluation_is_the_batch_after_the_step, progress_bar_and_report_count_the_same_updates]


@pytest.mark.parametrize("case", CASES, ids=[c.__name__ for c in CASES])
def test_catalogue_files(case, tmp_path, capsys, request):
    case(Ctx(tmp_path, capsys, request))
