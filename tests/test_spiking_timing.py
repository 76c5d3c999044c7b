"""Build and simulation time of every spiking run, reported separately (SpikingResult, twin.json, validation)."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch

import colplugin as cp
from colplugin.spiking import SpikingResult, pd14_microcircuit, simulate_spiking, spiking_backend, spiking_twin
from colplugin.spiking.result import timing_md, timing_summary

TIMING_KEYS = ("build_seconds", "simulate_seconds", "simulate_seconds_per_model_second")


def _check_run_times(res, elapsed):
    assert res.build_seconds >= 0 and res.simulate_seconds > 0
    assert res.build_seconds == res.wall_seconds["build"] and res.simulate_seconds == res.wall_seconds["run"]
    # an independent measure: the wall time of the call around the run
    assert res.build_seconds + res.simulate_seconds <= res.wall_seconds["total"] <= elapsed


def _check_summary(r, runs, model_seconds, total):
    for key in TIMING_KEYS:
        assert isinstance(r[key], float) and r[key] >= 0, key
    assert r["build_seconds"] + r["simulate_seconds"] <= total
    assert len(runs) == model_seconds[0]
    assert r["simulate_seconds_per_model_second"] == pytest.approx(r["simulate_seconds"] / np.prod(model_seconds))


@pytest.fixture(scope="module")
def tiny():
    net = cp.ColumnNetwork(cp.load_preset("dl25"), {"mt": ("mt", 1)}, [cp.Input("mt")])
    stim = cp.Stimulus([0.0, 0.1], [[0.0], [30.0]])
    return net, stim


def test_nest_run_times_build_and_simulation_apart(tiny):
    pytest.importorskip("nest")
    net = spiking_twin(*tiny, scale=0.02, k_scale=0.05, duration=0.2)
    t0 = time.perf_counter()
    res = simulate_spiking(net, 0.2, backend="nest", seed=1)
    _check_run_times(res, time.perf_counter() - t0)


@pytest.mark.brian2
def test_brian2_runtime_run_times_build_and_simulation_apart():
    net = pd14_microcircuit(scale=0.01, k_scale=0.3)  # test_microcircuit's tiny run: Brian2 reuses its code
    t0 = time.perf_counter()
    res = simulate_spiking(net, 0.1, backend="brian2", device="runtime", seed=2)
    _check_run_times(res, time.perf_counter() - t0)


@pytest.mark.brian2
def test_twin_json_and_report_give_build_and_simulation_time(tmp_path):
    from colplugin.analysis.twin import twin_run

    # a PD14 column without adaptation: the neurons of the tiny microcircuit, whose generated code Brian2 reuses
    net = cp.ColumnNetwork(cp.load_preset("pd14"), {"pd14": ("pd14", 1)}, [cp.Input("pd14")])
    conditions = cp.Stimulus([0.0], torch.tensor([[[0.0]], [[30.0]]]))  # two conditions, one segment
    r = twin_run(tmp_path, net, conditions, 0.2, backend="brian2", device="runtime", scale=0.01, k_scale=0.3,
                 trials=2, nix_neurons=2, progress=False)
    saved = json.loads((tmp_path / "twin.json").read_text())
    for key in TIMING_KEYS:
        assert saved[key] == pytest.approx(r[key])
    # 2 conditions x 2 trials of 0.2 s; the twin's own wall time bounds the spiking runs'
    _check_summary(saved, saved["spiking_wall_seconds"], (4, 0.2), saved["wall_seconds"])
    assert saved["build_seconds"] + saved["simulate_seconds"] <= sum(saved["spiking_wall_seconds"])
    md = (tmp_path / "report.md").read_text()
    assert f"build {saved['build_seconds']:.2f} s" in md and f"simulation {saved['simulate_seconds']:.2f} s" in md
    assert "per simulated second" in md


def test_validate_stimulus_gives_build_and_simulation_time_nest(tmp_path):
    pytest.importorskip("nest")
    from colplugin.analysis.validation import validate_stimulus

    t0 = time.perf_counter()
    r = validate_stimulus(tmp_path, scale=0.01, k_scale=0.3, duration=0.6, t_on=0.3, seeds=2, backend="nest")
    elapsed = time.perf_counter() - t0
    saved = json.loads((tmp_path / "stimulus.json").read_text())
    _check_summary(saved, saved["seeds"], (2, 0.6), saved["wall_seconds"])
    assert saved["wall_seconds"] <= elapsed and r["build_seconds"] == saved["build_seconds"]
    md = (tmp_path / "report.md").read_text()
    assert f"build {saved['build_seconds']:.2f} s (creating and connecting the NEST nodes)" in md


def test_a_result_without_times_still_constructs():
    spikes = {"a": (np.array([0]), np.array([0.01]))}
    bare = SpikingResult(spikes, {"a": 1}, 0.1, {})
    assert bare.build_seconds is None and bare.simulate_seconds is None
    # a backend that reports wall_seconds' build and run gives the times too
    old = SpikingResult(spikes, {"a": 1}, 0.1, {}, {}, {"build": 0.5, "run": 2.0, "total": 3.0})
    assert (old.build_seconds, old.simulate_seconds) == (0.5, 2.0)
    summary = timing_summary([0.5, None], [2.0, 1.0], 0.2)
    assert summary == {"build_seconds": None, "simulate_seconds": 3.0, "simulate_seconds_per_model_second": 15.0}
    assert timing_md(summary, ("b", "s")) == ""  # not measured: no sentence
    assert timing_md(timing_summary([0.5], [2.0], 0.1)) == \
        "Spiking runs in all: build 0.50 s, simulation 2.00 s; 20 s of simulation per simulated second."
    assert timing_md(timing_summary([0.5], [2.0], 0.1), spiking_backend("nest").timing_counts).startswith(
        "Spiking runs in all: build 0.50 s (creating and connecting the NEST nodes), simulation 2.00 s (the run")


def test_validate_microcircuit_gives_build_and_simulation_time_nest(tmp_path):
    pytest.importorskip("nest")
    from colplugin.analysis.validation import validate_microcircuit

    r = validate_microcircuit(tmp_path, scale=0.01, duration=0.7, transient=0.2, k_scale=0.3, seeds=1,
                              backend="nest", progress=False, nix_neurons=2)
    _check_summary(r, r["seeds"], (1, 0.7), r["wall_seconds"])
    md = (tmp_path / "report.md").read_text()
    assert f"build {r['build_seconds']:.2f} s" in md and f"simulation {r['simulate_seconds']:.2f} s" in md
    # comparison.json stays what its readers expect: one row per population
    assert isinstance(json.loads((tmp_path / "comparison.json").read_text()), list)
