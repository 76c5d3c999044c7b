"""A catalogue of bad inputs and reliability problems: one case per row, so each stays fixed.

Every case calls the API or ``colplugin.cli.main`` in-process and checks either a clear
error (the message names the value and the fix) or the fixed behaviour. Cases are fast:
nothing trains more than one update or runs a spiking circuit.
"""

from __future__ import annotations

import argparse
import json

import neo
import numpy as np
import pytest
import quantities as pq
import torch

import colplugin as cp
from colplugin.cli import build_parser, main
from colplugin.export.neo import NeoError, from_neo, stimulus_from_neo
from colplugin.params import ParameterError

from conftest import two_column_net, assert_help_on_every_option


def _toml(tmp_path, text, name="p.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def _param_error(path) -> str:
    with pytest.raises(ParameterError) as info:
        cp.load_params(path)
    return str(info.value)


def _cli_error(capsys, args) -> str:
    capsys.readouterr()
    assert main(args) == 2
    return capsys.readouterr().err


def _net():
    return two_column_net(cp.load_preset("dl25"))


# -- 3. Parameters ------------------------------------------------------------------------

def toml_bare_number_has_no_unit(tmp_path, capsys):
    msg = _param_error(_toml(tmp_path, 'base = "dl25"\ntau_m = 10\n'))
    assert "'tau_m' = 10 has no unit" in msg and 'unit = "UNIT"' in msg and "convertible to s" in msg


def toml_table_without_unit_is_the_same_error(tmp_path, capsys):
    msg = _param_error(_toml(tmp_path, 'base = "dl25"\n[tau_m]\nvalue = 10\n'))
    assert "'tau_m' = 10 has no unit" in msg


def toml_both_spellings_with_a_unit_agree(tmp_path, capsys):
    a = cp.load_params(_toml(tmp_path, 'base = "dl25"\ntau_m = "10 ms"\n', "a.toml"))
    b = cp.load_params(_toml(tmp_path, 'base = "dl25"\n[tau_m]\nvalue = 10\nunit = "ms"\n', "b.toml"))
    assert a["tau_m"] == b["tau_m"] == pytest.approx(0.010)
    # in Python a plain number is in the internal unit, in both spellings
    p = cp.load_preset("dl25", overrides={"tau_m": 0.01})
    q = cp.load_preset("dl25", overrides={"tau_m": {"value": 0.01}})
    assert p["tau_m"] == q["tau_m"] == 0.01


def toml_typo_inside_a_table(tmp_path, capsys):
    msg = _param_error(_toml(tmp_path, 'base = "dl25"\n[tau_m]\nvalue = 10\nunti = "ms"\n'))
    assert "'unti'" in msg and "did you mean 'unit'" in msg


def toml_typo_in_preset_table(tmp_path, capsys):
    msg = _param_error(_toml(tmp_path, 'base = "dl25"\n[preset]\ndefualt_area = "v1"\n'))
    assert "'defualt_area'" in msg and "did you mean 'default_area'" in msg


def toml_unknown_top_level_key(tmp_path, capsys):
    msg = _param_error(_toml(tmp_path, 'base = "dl25"\n[area.toy]\nvalue = [1, 1, 1, 1, 1, 1, 1, 1]\n'))
    assert "'area'" in msg and "did you mean 'areas'" in msg
    msg = _param_error(_toml(tmp_path, 'base = "dl25"\ntau_mm = "1 ms"\n', "q.toml"))
    assert "did you mean 'tau_m'" in msg


def fractional_population_sizes(tmp_path, capsys):
    path = _toml(tmp_path, 'base = "dl25"\n[areas.toy]\nvalue = [100.5, 30, 100, 30, 100, 30, 100, 30]\n')
    msg = _param_error(path)
    assert "areas.toy" in msg and "whole numbers" in msg and "100.5" in msg
    err = _cli_error(capsys, ["simulate", "--params", str(path), "--out", str(tmp_path / "sim")])
    assert "whole numbers" in err and "runaway" not in err and not (tmp_path / "sim").exists()


# -- 4. Command line ------------------------------------------------------------------------

def updates_zero_negative_and_lr_zero(tmp_path, capsys):
    for option in (["--updates", "0"], ["--updates", "-5"], ["--lr", "0"]):
        out = tmp_path / "run"
        err = _cli_error(capsys, ["train", "xor", *option, "--out", str(out), "--no-progress"])
        assert option[0].lstrip("-") in err and option[1] in err and "Traceback" not in err
        assert not out.exists()


def reproduce_honours_updates(tmp_path, capsys, monkeypatch):
    import colplugin.experiments as experiments

    seen = {}

    def record(task, seed, out, **kw):
        seen["updates"] = kw.get("updates")
        raise RuntimeError("stop after recording")

    monkeypatch.setattr(experiments, "train_run", record)
    main(["reproduce", "xor", "--updates", "3", "--seeds", "1", "--out", str(tmp_path / "r"), "--no-progress"])
    assert seen["updates"] == 3


def out_is_a_file(tmp_path, capsys):
    f = tmp_path / "afile"
    f.write_text("")
    with pytest.raises(SystemExit) as info:
        main(["simulate", "--duration", "0.1", "--out", str(f)])
    assert info.value.code == 2 and "is a file" in str(info.value)


def threads_must_be_positive(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["train", "xor", "--threads", "0", "--out", str(tmp_path / "t")])
    assert info.value.code == 2 and "--threads" in capsys.readouterr().err


def validate_too_short_duration_refused_up_front(tmp_path, capsys):
    err = _cli_error(capsys, ["validate", "microcircuit", "--duration", "0.3", "--out", str(tmp_path / "v")])
    assert "duration" in err and "longer duration" in err
    assert not (tmp_path / "v").exists()


def export_of_broken_network_json(tmp_path, capsys):
    spec = tmp_path / "network.json"
    spec.write_text("{")
    err = _cli_error(capsys, ["export", str(spec), "--out", str(tmp_path / "e")])
    assert "network.json" in err and "not valid JSON" in err


def to_brian2_bad_trial_and_method(tmp_path, capsys):
    from colplugin.export import to_brian2

    stim = cp.Stimulus([0.0], np.ones((4, 1, 2)))
    with pytest.raises(IndexError, match="trial 7.*0..3"):
        to_brian2(_net(), stim, duration=0.01, trial=7)
    with pytest.raises(ValueError, match="'foo'.*euler"):
        to_brian2(_net(), stim, duration=0.01, method="foo")


def ragged_stimulus(tmp_path, capsys):
    with pytest.raises(ValueError, match="regular array.*same number of input channels"):
        cp.Stimulus([0.0, 0.1], [[0.0, 0.0], [20.0]])


def change_point_after_duration(tmp_path, capsys):
    stim = cp.Stimulus([0.0, 0.5], [[0.0, 0.0], [20.0, 0.0]])
    with pytest.raises(ValueError, match=r"changes at t = 0.5 s.*duration = 0.1 s"):
        cp.simulate(_net(), stim, duration=0.1)
    with pytest.raises(ValueError, match="at or after the end"):
        cp.simulate(_net(), stim, duration=0.5)  # a change at the very end cannot act either


def negative_or_missing_column(tmp_path, capsys):
    with torch.no_grad():
        traj = cp.simulate(_net(), duration=0.01)
    assert traj.get("rate", "mt", 1, "L23E").shape == (11, 1)
    for column in (-1, 2):
        with pytest.raises(IndexError, match=rf"column {column} does not exist.*2 column\(s\), indices 0..1"):
            traj.get("rate", "mt", column, "L23E")


def version_option(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0 and cp.__version__ in capsys.readouterr().out


def help_on_every_option(tmp_path, capsys):
    assert_help_on_every_option()


# -- 5. Neo pipeline --------------------------------------------------------------------------

def _stim_different_times():
    return cp.Stimulus([0.0, 0.01, 0.03], [[[0, 0], [20, 10], [5, 5]], [[0, 0], [0, 0], [8, 2]]])


def torch_nix_inputs_changing_at_different_times(tmp_path, capsys):
    stim = _stim_different_times()
    with torch.no_grad():
        traj = cp.simulate(_net(), stim, duration=0.05, dt_out=1e-3)
    back = stimulus_from_neo(cp.load_nix(cp.save_nix(cp.to_neo(traj), tmp_path / "torch.nix")))
    np.testing.assert_allclose(back.times.numpy(), [0.0, 0.01, 0.03])
    np.testing.assert_allclose(back.rates.numpy(), stim.rates.numpy())


def brian2_nix_has_input_and_epochs(tmp_path, capsys):
    from colplugin.export import to_brian2

    stim = _stim_different_times()
    run = to_brian2(_net(), stim, duration=0.05, trial=None, dt=1e-3).run()
    block = cp.load_nix(cp.save_nix(cp.to_neo(run), tmp_path / "brian2.nix"))
    for seg in block.segments:
        assert [s.name for s in seg.analogsignals] == ["rate", "input"]
        assert seg.epochs and seg.epochs[0].name == "stimulus"
    np.testing.assert_allclose(stimulus_from_neo(block).rates.numpy(), stim.rates.numpy())


def spike_trains_per_population(tmp_path, capsys):
    seg = neo.Segment(name="spontaneous")
    for pop, rate in (("L23E", 5.0), ("L4E", 20.0)):
        for i in range(4):
            times = np.sort((np.arange(0.0, 1.0, 1.0 / rate) + (i + 0.5) / (4 * rate)) % 1.0)
            seg.spiketrains.append(neo.SpikeTrain(times * pq.s, t_stop=1 * pq.s, area="pd14", column=0,
                                                  population=pop, neuron=i))
    block = neo.Block()
    block.segments.append(seg)
    t, r = from_neo(block, populations=["L23E"])
    assert r.shape == (len(t), 1, 1)  # one channel per population, not one per neuron


def nan_and_negative_targets(tmp_path, capsys):
    for values, fragment in ((np.array([[1.0, np.nan], [1.0, 2.0]]), "NaN"),
                             (np.array([[1.0, -0.5], [1.0, 2.0]]), "negative")):
        seg = neo.Segment(name="s")
        seg.analogsignals.append(neo.AnalogSignal(values, units="Hz", sampling_rate=1 * pq.kHz, name="rate"))
        block = neo.Block()
        block.segments.append(seg)
        with pytest.raises(NeoError, match=fragment):
            from_neo(block)


def annotations_are_json_and_seed_an_int(tmp_path, capsys):
    from colplugin.export import to_brian2

    net = _net()
    with torch.no_grad():
        traj = cp.simulate(net, duration=0.01)
    for block in (cp.to_neo(traj, seed=3), cp.to_neo(to_brian2(net, duration=0.01, dt=1e-3).run(), seed=3)):
        assert isinstance(json.loads(block.annotations["solver"]), dict)
        assert isinstance(json.loads(block.annotations["network_spec"]), dict)
        assert block.annotations["seed"] == 3 and isinstance(block.annotations["seed"], int)


def same_sample_count_in_every_file(tmp_path, capsys):
    from colplugin.export import to_brian2

    net, stim = _net(), _stim_different_times()
    with torch.no_grad():
        traj = cp.simulate(net, stim, duration=0.05, dt_out=1e-3, solver=cp.Solver("euler", step=1e-3))
    run = to_brian2(net, stim, duration=0.05, trial=None, dt=1e-3).run()
    a, b = cp.to_neo(traj).segments[0].analogsignals[0], cp.to_neo(run).segments[0].analogsignals[0]
    assert a.shape == b.shape == (51, 16)
    np.testing.assert_allclose(run.t, traj.t.numpy(), atol=1e-12)
    np.testing.assert_allclose(run.trial_rates, traj.rate.numpy(), rtol=1e-9, atol=1e-9)


# -- 6.-7. Exports and use ------------------------------------------------------------------------

def model_py_states_requirements_and_trials(tmp_path, capsys):
    from colplugin.export import export_brian2_script

    paths = export_brian2_script(_net(), tmp_path / "model.py", _stim_different_times(), duration=0.05)
    text = paths["script"].read_text()
    assert "numpy < 2.4" in text and "brian2 >= 2.9" in text
    assert "--trial" in text and "Runs every trial of the exported batch (2)" in text
    assert "running trial(s)" in text


def validation_failure_exit_status(tmp_path, capsys, monkeypatch):
    import functools

    import colplugin.analysis.validation as validation

    @functools.wraps(validation.validate_microcircuit)
    def failing(out, settings=None, **kw):
        return {"table_md": "| table |", "within20": True, "within30": False, "ordering": True,
                "wall_seconds": 0.0, "peak_mb": 0.0}

    monkeypatch.setattr(validation, "validate_microcircuit", failing)
    out = tmp_path / "v"
    assert main(["validate", "microcircuit", "--out", str(out)]) == 1
    assert "within30" in capsys.readouterr().err and out.is_dir()  # the results are kept
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert "1 when a check" in sub["validate"].format_help().replace("\n", " ")


def training_runs_on_one_thread_unless_told(tmp_path, capsys, monkeypatch):
    # behaviour, not the argparse default: `colplugin train` without --threads trains with one torch thread
    # (measured here: one XOR training update with 1 thread is several times faster than with 2), also when the
    # process started with more; --threads 2 gives two
    import torch

    import colplugin.experiments as experiments

    seen = []

    def recording(*args, **kwargs):
        seen.append(torch.get_num_threads())
        raise KeyboardInterrupt  # stop before any training work

    monkeypatch.setattr(experiments, "train_run", recording)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        for extra in ([], ["--threads", "2"]):
            main(["train", "xor", "--out", str(tmp_path / f"t{len(extra)}"), "--no-progress", *extra])
    finally:
        torch.set_num_threads(before)
    assert seen == [1, 2]


def brian2_progress_only_when_long(tmp_path, capsys):
    from colplugin.export import to_brian2

    to_brian2(_net(), duration=0.01).run()
    assert capsys.readouterr().err == ""
    to_brian2(_net(), duration=0.01).run(report_period=1e-9)
    assert "Brian2:" in capsys.readouterr().err


CASES = [
    toml_bare_number_has_no_unit, toml_table_without_unit_is_the_same_error, toml_both_spellings_with_a_unit_agree,
    toml_typo_inside_a_table, toml_typo_in_preset_table, toml_unknown_top_level_key, fractional_population_sizes,
    updates_zero_negative_and_lr_zero, reproduce_honours_updates, out_is_a_file, threads_must_be_positive,
    validate_too_short_duration_refused_up_front, export_of_broken_network_json, to_brian2_bad_trial_and_method,
    ragged_stimulus, change_point_after_duration, negative_or_missing_column, version_option, help_on_every_option,
    torch_nix_inputs_changing_at_different_times, brian2_nix_has_input_and_epochs, spike_trains_per_population,
    nan_and_negative_targets, annotations_are_json_and_seed_an_int, same_sample_count_in_every_file,
    model_py_states_requirements_and_trials, validation_failure_exit_status, training_runs_on_one_thread_unless_told,
    brian2_progress_only_when_long,
]


@pytest.mark.parametrize("case", CASES, ids=[c.__name__ for c in CASES])
def test_catalogue(case, tmp_path, capsys, monkeypatch):
    import inspect

    kwargs = {"monkeypatch": monkeypatch} if "monkeypatch" in inspect.signature(case).parameters else {}
    case(tmp_path, capsys, **kwargs)
