"""Several trials of one built network (NEST): every trial starts from a fresh state.

Independent checks: a deterministic network (DC drive, fixed potentials, fixed weights and
delays) repeats its spikes exactly in every trial, and its first spikes fall where the LIF
equation puts them; the first trial is the single run with the same seed.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import colplugin as cp
from colplugin.spiking import (SPIKING_BACKENDS, Connection, LIFModel, PoissonInput, Population, RateProfile,
                               SpikingBackend, SpikingNetwork, SpikingResult, register_backend, simulate_spiking)
from colplugin.spiking.simulate import iter_spiking_trials

LIF = dict(C_m=250.0, tau_m=10.0, E_L=-65.0, V_reset=-65.0, V_th=-50.0, t_ref=2.0, tau_syn=0.5)


def _deterministic(adapting: bool = False, **model) -> SpikingNetwork:
    """DC-driven LIF populations with fixed weights and delays: nothing random after the connectivity."""
    lif = LIFModel(**{**LIF, **model})
    pops = [Population("E", 80, lif, I_dc=420.0, V0_mean=-60.0, V0_sd=0.0),
            Population("I", 20, lif, I_dc=400.0, V0_mean=-62.0, V0_sd=0.0)]
    conns = [Connection("E", "I", 400, 80.0, 0.0, 1.5, 0.0), Connection("I", "E", 600, -200.0, 0.0, 0.8, 0.0),
             Connection("E", "E", 300, 60.0, 0.0, 2.0, 0.0)]
    if adapting:  # an isolated adapting population with an initial threshold offset
        model = LIFModel(**LIF, threshold_jump=1.0, tau_threshold=200.0)
        pops.append(Population("A", 40, model, I_dc=450.0, V0_mean=-58.0, V0_sd=0.0, theta0=3.0))
    return SpikingNetwork("deterministic", tuple(pops), tuple(conns), ())


def _sorted(spikes):
    i, t = spikes
    order = np.lexsort((i, t))
    return i[order], t[order]


def test_every_trial_of_a_deterministic_network_repeats_the_first():
    pytest.importorskip("nest")
    net = _deterministic()
    results = list(iter_spiking_trials(net, 0.15, 3, backend="nest", seed=4))
    assert [r.settings["trial_in_network"] for r in results] == [0, 1, 2]
    assert all(r.settings["network_reused"] and r.settings["seed"] == 4 for r in results)
    for name in ("E", "I"):
        i0, t0 = _sorted(results[0].spikes[name])
        assert len(t0) > 100
        for r in results[1:]:  # the same state at the start gives the same spikes, to rounding
            i, t = _sorted(r.spikes[name])
            np.testing.assert_array_equal(i, i0)
            np.testing.assert_allclose(t, t0, atol=1e-12)
    # the first spike of E, by the LIF equation from V0 = -60 mV under 420 pA (R = tau_m / C_m = 40 MOhm)
    v_inf = LIF["E_L"] + 420.0 * LIF["tau_m"] / LIF["C_m"]
    t_first = LIF["tau_m"] * np.log((v_inf - (-60.0)) / (v_inf - LIF["V_th"])) * 1e-3  # 7.9 ms
    for r in results:
        assert abs(r.spikes["E"][1].min() - t_first) <= 1e-4 + 1e-12  # within the step that crossed


@pytest.mark.parametrize("model, duration", [
    (dict(tau_syn=5.0), 0.2),     # a pause of 102 ms: from any potential, neurons would reach threshold in it
    (dict(t_ref=20.0), 0.17),     # a refractory period longer than 20 synaptic time constants
    ({}, 0.10005),                # a trial that is not a whole number of steps
])
def test_trials_repeat_whatever_the_time_constants_and_the_length(model, duration):
    pytest.importorskip("nest")
    results = list(iter_spiking_trials(_deterministic(**model), duration, 3, backend="nest", seed=1))
    assert results[1].settings["trial_gap_ms"] >= max(model.get("t_ref", 0.0), 20 * model.get("tau_syn", 0.5))
    i0, t0 = _sorted(results[0].spikes["E"])
    assert len(t0) > 50
    for r in results[1:]:
        i, t = _sorted(r.spikes["E"])
        np.testing.assert_array_equal(i, i0)
        np.testing.assert_allclose(t, t0, atol=1e-12)


def test_refractory_adapting_neurons_stay_silent_in_the_pause():
    """gif_psc_exp clamps a refractory neuron's potential: the pause must silence it by its threshold.

    The adapting population fires in synchrony (DC, equal potentials); the trial ends 1.1 ms
    after one of its volleys, inside the refractory period, and the volley's targets spike at a
    delay of 9 ms, which a leak into the pause would move.
    """
    pytest.importorskip("nest")
    adapting = LIFModel(**LIF, threshold_jump=1.0, tau_threshold=200.0)
    net = SpikingNetwork("volleys", (Population("A", 40, adapting, I_dc=1000.0, V0_mean=-58.0, V0_sd=0.0, theta0=3.0),
                                     Population("E", 40, LIFModel(**LIF), I_dc=370.0, V0_mean=-60.0, V0_sd=0.0)),
                         (Connection("A", "E", 400, 60.0, 0.0, 9.0, 0.0),), ())
    results = list(iter_spiking_trials(net, 0.0937, 2, backend="nest", seed=1))
    for name in ("A", "E"):
        (i0, t0), (i1, t1) = _sorted(results[0].spikes[name]), _sorted(results[1].spikes[name])
        assert len(t0) > 50
        np.testing.assert_array_equal(i1, i0)
        np.testing.assert_allclose(t1, t0, atol=1e-9)


def test_the_first_trial_is_the_single_run_with_the_same_seed():
    pytest.importorskip("nest")
    lif = LIFModel(**LIF)
    net = SpikingNetwork("poisson", (Population("E", 50, lif, V0_mean=-58.0, V0_sd=4.0),),
                         (Connection("E", "E", 500, 50.0, 0.1, 1.5, 0.5),),
                         (PoissonInput("E", 1200.0, RateProfile((0.0, 50.0), (8.0, 12.0)), 87.8),))
    single = simulate_spiking(net, 0.1, backend="nest", seed=9)
    trials = list(iter_spiking_trials(net, 0.1, 2, backend="nest", seed=9))
    for a, b in zip(single.spikes["E"], trials[0].spikes["E"]):
        np.testing.assert_array_equal(a, b)
    # the second trial draws new potentials and new Poisson input: other spikes, the same kind of rate
    i1, t1 = trials[1].spikes["E"]
    assert not np.array_equal(t1, trials[0].spikes["E"][1])
    assert 0.8 < len(t1) / len(single.spikes["E"][1]) < 1.25  # ~340 spikes each (sd ~18)
    assert t1.min() >= 0 and t1.max() < 0.1


def test_adaptation_starts_from_zero_in_every_trial():
    """gif_psc_exp's threshold cannot be set: the pause between trials must clear it.

    The isolated adapting population fires about 40 spikes per 50 ms in each trial; had the
    adaptation of the trial before carried over (tau 200 ms), it would stay silent for the
    first 100 ms (measured while writing this test).
    """
    pytest.importorskip("nest")
    results = list(iter_spiking_trials(_deterministic(adapting=True), 0.2, 3, backend="nest", seed=2))
    edges = np.linspace(0.0, 0.2, 5)
    counts = [np.histogram(r.spikes["A"][1], edges)[0] for r in results]
    assert counts[0].min() > 20
    for c in counts[1:]:  # escape noise of 1 uV may move a spike by a step, not across 50 ms bins
        np.testing.assert_allclose(c, counts[0], atol=2)


def test_rebuilding_per_trial_uses_seed_plus_j():
    pytest.importorskip("nest")
    net = _deterministic()
    results = list(iter_spiking_trials(net, 0.05, 2, backend="nest", seed=3, reuse=False))
    assert [r.settings["seed"] for r in results] == [3, 4]
    assert not any(r.settings["network_reused"] for r in results)
    assert all(r.build_seconds > 0 for r in results)
    reused = list(iter_spiking_trials(net, 0.05, 2, backend="nest", seed=3))
    assert reused[0].build_seconds > 0 and reused[1].build_seconds == 0.0


CALLS: list[str] = []


def fake_run(net, duration, *, device, seed, threads, dt, directory):
    CALLS.append(f"run {seed}")
    return SpikingResult({p.name: (np.array([0]), np.array([0.0])) for p in net.populations},
                         {p.name: p.size for p in net.populations}, duration, {}, {}, {"total": 0.0})


@pytest.fixture
def fake_backend():
    backend = register_backend(SpikingBackend("fake_once", "json", "nothing to install", "test_spiking_trials:fake_run",
                                              title="Fake"))
    yield backend
    del SPIKING_BACKENDS["fake_once"]


def test_a_backend_without_reuse_builds_every_trial(fake_backend):
    CALLS.clear()
    net = _deterministic()
    results = list(iter_spiking_trials(net, 0.05, 3, backend="fake_once", seed=5))
    assert CALLS == ["run 5", "run 6", "run 7"]
    assert [r.settings["seed"] for r in results] == [5, 6, 7] and not results[0].settings["network_reused"]
    with pytest.raises(ValueError, match="cannot run several trials in one built network"):
        fake_backend.run_trials(net, 0.05, 2)


@pytest.mark.parametrize("kwargs, message", [
    (dict(trials=0), "trials must be a whole number >= 1"),
    (dict(trials=2.0), "trials must be a whole number >= 1"),
    (dict(trials=2, reuse="yes"), "reuse must be True or False"),
    (dict(trials=3, seed=2 ** 31 - 2), "seed \\+ trials - 1 must stay below"),
    (dict(trials=2, backend="nestor"), "unknown spiking backend 'nestor'"),
])
def test_bad_trial_settings_are_refused_before_any_run(kwargs, message):
    with pytest.raises((ValueError, TypeError), match=message):
        iter_spiking_trials(_deterministic(), 0.05, **kwargs)


def test_twin_on_nest_builds_each_condition_once(tmp_path):
    pytest.importorskip("nest")
    from colplugin.analysis.twin import twin_run

    net = cp.ColumnNetwork(cp.load_preset("pd14"), {"pd14": ("pd14", 1)}, [cp.Input("pd14")])
    conditions = cp.Stimulus([0.0], torch.tensor([[[0.0]], [[30.0]]]))
    r = twin_run(tmp_path, net, conditions, 0.1, backend="nest", scale=0.01, k_scale=0.3, trials=3, nix_trials=2,
                 nix_neurons=2, progress=False)
    saved = json.loads((tmp_path / "twin.json").read_text())
    assert saved["network_reused"] is True and r["network_reused"] is True
    assert saved["build_seconds"] > 0 and len(saved["spiking_wall_seconds"]) == 6
    md = (tmp_path / "report.md").read_text()
    assert "each condition's network built once with seed 0" in md
    block = cp.load_nix(tmp_path / "spikes.nix")
    assert [(s.annotations["trial"], s.annotations["seed"], s.annotations["network_reused"])
            for s in block.segments] == [(0, 0, True), (1, 0, True)] * 2
    again = twin_run(tmp_path / "rebuilt", net, conditions, 0.1, backend="nest", scale=0.01, k_scale=0.3, trials=2,
                     nix_neurons=2, progress=False, reuse=False)
    assert again["network_reused"] is False
    assert "trial j: a new build with seed 0 + j" in (tmp_path / "rebuilt" / "report.md").read_text()
