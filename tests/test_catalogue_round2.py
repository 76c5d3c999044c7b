"""A catalogue of work refused before it starts: sizes, durations, rates and memory.

One case per row; each checks that the refusal comes before any work (no directory made,
nothing allocated) and that the message names the value and the fix. The expected numbers
are computed here from the inputs (neuron counts, bytes), not copied from the code.
"""

from __future__ import annotations

import math

import pytest

import colplugin as cp
from colplugin._io import check_memory
from colplugin.cli import main

GIB = 2**30


def _exit(args) -> int:
    try:
        return main(args)
    except SystemExit as exc:  # argparse and refusals exit with status 2 in-process
        return exc.code


def _cli(capsys, tmp_path, args) -> str:
    capsys.readouterr()
    assert _exit([*args, "--out", str(tmp_path / "o")]) == 2
    assert not (tmp_path / "o").exists()
    return capsys.readouterr().err


def simulate_duration_zero(tmp_path, capsys):
    err = _cli(capsys, tmp_path, ["simulate", "--duration", "0"])
    assert "--duration" in err and "0 must be a finite number > 0" in err and "nan" not in err


def simulate_duration_nan(tmp_path, capsys):
    assert "--duration: nan must be a finite number > 0" in _cli(capsys, tmp_path, ["simulate", "--duration", "nan"])


def simulate_input_huge(tmp_path, capsys):
    err = _cli(capsys, tmp_path, ["simulate", "--input", "1e308", "--duration", "0.1"])
    assert "1e+308 Hz is above 1000 Hz" in err and "give rates in Hz" in err


def simulate_input_negative(tmp_path, capsys):
    assert "--input: -5 must be a finite number >= 0" in _cli(capsys, tmp_path, ["simulate", "--input", "-5"])


def run_validate_scale_nan_before_training(tmp_path, capsys):
    err = _cli(capsys, tmp_path, ["run", "--validate-scale", "nan", "--no-progress"])
    assert "--validate-scale: nan must be a finite number >= 0" in err


def run_validate_scale_below_floor_before_training(tmp_path, capsys, monkeypatch):
    import colplugin.experiments as experiments

    def never(*a, **k):
        raise AssertionError("training started before the scale was checked")

    monkeypatch.setattr(experiments, "train_run", never)
    floor = 10 / min(cp.load_preset("pd14").area_sizes("pd14"))  # 10 neurons in L5I (1065)
    err = _cli(capsys, tmp_path, ["run", "--validate-scale", f"{floor / 2:g}", "--no-progress"])
    assert "--validate-scale" in err and "Fix: use a scale of at least" in err


def simulate_split_area_below_one_neuron_per_population(tmp_path, capsys):
    smallest = min(cp.load_preset("dl25").area_sizes("mt"))  # L5I of MT
    n = int(smallest) + 1  # one column more than L5I has neurons
    err = _cli(capsys, tmp_path, ["simulate", "--columns", str(n), "--duration", "0.1"])
    assert f"split into {n} columns" in err and f"at most {int(smallest)} columns" in err and "--full" in err


def simulate_columns_beyond_memory(tmp_path, capsys):
    err = _cli(capsys, tmp_path, ["simulate", "--columns", "100000000", "--full", "--duration", "0.1"])
    assert "100000000 columns" in err and "GiB" in err and "fewer columns" in err


def api_simulate_duration_1e308():
    net = cp.ColumnNetwork(cp.load_preset("dl25"), {"mt": ("mt", 1)})
    with pytest.raises(MemoryError, match=r"inf time points.*record less often"):
        cp.simulate(net, None, 1e308)


def api_simulate_recording_estimate_is_the_trajectory_size():
    net = cp.ColumnNetwork(cp.load_preset("dl25"), {"mt": ("mt", 1)})
    duration, dt_out = 1e6, 1e-3  # 1e9 time points of 16 states + 8 rates: 1.8e11 bytes, over 100 GiB
    expected = 8.0 * (16 * (duration / dt_out + 1 + 12) + 8 * (duration / dt_out + 1))
    with pytest.raises(MemoryError) as info:
        cp.simulate(net, None, duration, dt_out=dt_out)
    assert f"{expected / GIB:.3g} GiB" in str(info.value)


def api_stimulus_rate_above_the_ceiling():
    with pytest.raises(ValueError, match="2000 Hz is above 1000 Hz"):
        cp.Stimulus([0.0], [[2000.0]])
    cp.Stimulus([0.0], [[1000.0]])  # the ceiling itself is a rate


def api_network_memory_estimate_counts_all_to_all_pairs():
    p = cp.load_preset("dl25")
    n = 100_000
    with pytest.raises(MemoryError) as info:  # 1e10 column pairs x 2 population pairs x 64 B: ~1.2 TB
        cp.ColumnNetwork(p, {"a": cp.Area("mt", n, split=False), "b": cp.Area("mt", n, split=False)},
                         [cp.Feedforward("a", "b", columns="all")])
    assert f"{2 * n} columns and 1 projection(s)" in str(info.value)


def check_memory_refuses_inf_and_nan():
    for bad in (math.inf, math.nan):
        with pytest.raises(MemoryError):
            check_memory(bad, "x", "y", available=10 * GIB)
    check_memory(GIB, "x", "y", available=10 * GIB)
    with pytest.raises(MemoryError, match=r"needs about 9.5 GiB, and this machine has 10 GiB available; fix"):
        check_memory(9.5 * GIB, "x", "fix", available=10 * GIB)


def validate_duration_beyond_memory(tmp_path, capsys):
    err = _cli(capsys, tmp_path, ["validate", "microcircuit", "--duration", "1e9", "--seeds", "1",
                                  "--device", "runtime"])
    assert "spikes" in err and "GiB" in err and "shorten --duration" in err


def nest_threads_rise_to_the_connection_limit():
    import types

    from colplugin.spiking.nest import nest_threads

    twin = types.SimpleNamespace(n_synapses=149_493_294)  # the default calibrate twin: dl25 MT column, 0.1, k 1
    with pytest.warns(RuntimeWarning, match=r"at most 134,217,726 connections per thread.*running with 2 threads"):
        assert nest_threads(twin, 1) == 2  # 149.5 M / (2^27 - 2) -> 2 threads
    assert nest_threads(twin, 3) == 3
    assert nest_threads(types.SimpleNamespace(n_synapses=2**27 - 2), 1) == 1


def twin_trials_beyond_the_cap(tmp_path, capsys):
    err = _cli(capsys, tmp_path, ["twin", str(tmp_path), "--trials", "1000000"])
    assert "trials = 1000000 (--trials)" in err and "Give fewer trials" in err


def validate_duration_shorter_than_the_transient(tmp_path, capsys):
    err = _cli(capsys, tmp_path, ["validate", "microcircuit", "--duration", "0.4", "--device", "runtime"])
    assert "duration 0.4 s (--duration)" in err and "above 0.6 s" in err and "transient must" not in err


def _calibrate_levels(tmp_path, capsys, args, expected):
    assert expected in _cli(capsys, tmp_path, ["calibrate", "--backend", "brian2", *args])


def calibrate_levels_out_of_range(tmp_path, capsys):
    _calibrate_levels(tmp_path, capsys, ["--fit-levels", "0", "1e6"],
                      "--fit-levels 0 1e+06: input rates must lie in [0, 1000] Hz")


def calibrate_levels_given_twice(tmp_path, capsys):
    _calibrate_levels(tmp_path, capsys, ["--fit-levels", "10", "10"], "--fit-levels 10 10: a level is given twice")


def calibrate_held_out_level_also_fitted(tmp_path, capsys):
    _calibrate_levels(tmp_path, capsys, ["--fit-levels", "0", "10", "--held-out-levels", "10"], "share 10 Hz")


def simulate_empty_area(tmp_path, capsys):
    assert "--area is empty" in _cli(capsys, tmp_path, ["simulate", "--area", "", "--duration", "0.1"])


def threads_beyond_the_cores(tmp_path, capsys):
    import os

    most = 4 * (os.cpu_count() or 1)
    err = _cli(capsys, tmp_path, ["train", "xor", "--threads", "1000000", "--updates", "1"])
    assert "--threads" in err and f"give at most {most}" in err


def reproduce_seeds_beyond_the_cap(tmp_path, capsys):
    err = _cli(capsys, tmp_path, ["reproduce", "xor", "--seeds", "100000000"])
    assert "--seeds: 100000000 is more than 1000" in err


def validate_seeds_beyond_the_cap(tmp_path, capsys):
    err = _cli(capsys, tmp_path, ["validate", "microcircuit", "--seeds", "100000"])
    assert "--seeds: 100000 is more than 100" in err


def validate_stimulus_rate_above_the_ceiling(tmp_path, capsys):
    err = _cli(capsys, tmp_path, ["validate", "stimulus", "--rate", "1e9", "--device", "runtime"])
    assert "rate = 1000000000.0 Hz (--rate)" in err and "[0, 1000] Hz" in err


def validate_stimulus_refuses_the_microcircuit_preset(tmp_path, capsys):
    err = _cli(capsys, tmp_path, ["validate", "stimulus", "--preset", "pd14_lif"])
    assert "--preset pd14_lif applies to `validate microcircuit` only" in err


def a_device_for_a_backend_without_devices(tmp_path, capsys):
    for cmd in (["validate", "microcircuit"], ["twin", str(tmp_path)]):
        err = _cli(capsys, tmp_path, [*cmd, "--backend", "nest", "--device", "runtime"])
        assert "--device runtime belongs to Brian2; --backend nest has no devices" in err


def resume_and_overwrite_together(tmp_path, capsys):
    (tmp_path / "o").mkdir()
    capsys.readouterr()
    assert _exit(["train", "xor", "--resume", "--overwrite", "--out", str(tmp_path / "o")]) == 2
    assert "give one of them" in capsys.readouterr().err


def resume_of_a_directory_that_does_not_exist(tmp_path, capsys):
    err = _cli(capsys, tmp_path, ["train", "xor", "--resume"])
    assert f"--resume --out {tmp_path / 'o'}: no such directory" in err


def simulate_duration_below_the_recording_clock(tmp_path, capsys):
    assert "--duration 0.001 s: give at least 0.01 s" in _cli(capsys, tmp_path, ["simulate", "--duration", "0.001"])


def an_unknown_kernel_setting_is_named(monkeypatch):
    from colplugin.solve import compiled

    monkeypatch.setenv("COLPLUGIN_KERNEL", "bogus")
    with pytest.raises(ValueError, match="COLPLUGIN_KERNEL='bogus' is not a kernel setting; set it to 'eager'"):
        compiled._module.__wrapped__()


def calibrate_help_shows_the_default_values(capsys):
    from colplugin.analysis.calibration import FIT_LEVELS, HELD_OUT_LEVELS

    assert _exit(["calibrate", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert f"(default: {' '.join(f'{u:g}' for u in FIT_LEVELS)})" in out
    assert f"(default: {' '.join(f'{u:g}' for u in HELD_OUT_LEVELS)})" in out and "calibration." not in out


CASES = [v for k, v in dict(globals()).items() if callable(v) and not k.startswith("_")
         and getattr(v, "__module__", None) == __name__ and not k.startswith("test")]


@pytest.mark.parametrize("case", CASES, ids=[c.__name__ for c in CASES])
def test_catalogue_round2(case, tmp_path, capsys, monkeypatch):
    import inspect

    kwargs = {"tmp_path": tmp_path, "capsys": capsys, "monkeypatch": monkeypatch}
    case(**{k: kwargs[k] for k in inspect.signature(case).parameters})
