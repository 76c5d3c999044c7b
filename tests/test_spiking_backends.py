"""The spiking backends are a registry: a new simulator is one record, and every front door sees it."""

from __future__ import annotations

import numpy as np
import pytest

from colplugin.cli import build_parser
from colplugin.spiking import (SPIKING_BACKENDS, SpikingBackend, SpikingResult, pd14_microcircuit, register_backend,
                               simulate_spiking, spiking_backend)

CALLS: list[dict] = []


def fake_run(net, duration, *, device, seed, threads, dt, directory):
    """A 'simulator' whose neuron 0 of every population fires once at t = seed * dt."""
    CALLS.append(dict(device=device, seed=seed, threads=threads, dt=dt, directory=directory))
    spikes = {p.name: (np.array([0]), np.array([seed * dt])) for p in net.populations}
    return SpikingResult(spikes, {p.name: p.size for p in net.populations}, duration,
                         {"backend": "fake", "device": device, "seed": seed}, {p.name: {} for p in net.populations},
                         {"total": 0.0})


@pytest.fixture
def fake():
    backend = register_backend(SpikingBackend("fake", "json", "nothing to install", "test_spiking_backends:fake_run",
                                              devices=("cpu", "gpu"), project_devices=("gpu",), title="Fake"))
    yield backend
    del SPIKING_BACKENDS["fake"]


def test_a_registered_backend_runs_through_simulate_spiking(fake):
    net = pd14_microcircuit(None, 0.02, 0.1)
    res = simulate_spiking(net, 0.1, backend="fake", device="gpu", seed=7, threads=3)
    assert CALLS[-1] == dict(device="gpu", seed=7, threads=3, dt=1e-4, directory=None)
    t = res.spikes["L23E"][1]
    assert t.tolist() == [7e-4]  # the seed reached the run function
    with pytest.raises(ValueError, match="unknown Fake device 'tpu'; use one of 'cpu', 'gpu'"):
        simulate_spiking(net, 0.1, backend="fake", device="tpu")


def test_the_command_line_offers_every_registered_backend(fake):
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    for command in ("validate", "twin", "calibrate"):
        backend = next(a for a in sub.choices[command]._actions if a.dest == "backend")
        assert set(backend.choices) == set(SPIKING_BACKENDS) and "fake" in backend.choices


def test_project_directories_and_labels_come_from_the_record(fake):
    import shutil

    assert fake.project_directory("cpu") is None
    d = fake.project_directory("gpu")
    assert d is not None and "colplugin_fake_" in d
    shutil.rmtree(d)
    assert fake.label("gpu") == "fake gpu" and spiking_backend("nest").label("runtime") == "nest"


def test_a_missing_simulator_is_named_with_its_install_command():
    ghost = SpikingBackend("ghost", "no_such_module_colplugin", "pip install ghost-sim", "x:y", title="Ghost")
    with pytest.raises(RuntimeError, match="needs Ghost, which is not installed: pip install ghost-sim"):
        ghost.check_installed()
    with pytest.raises(ValueError, match="unknown spiking backend 'ghost'"):
        spiking_backend("ghost")


def poisson_run(net, duration, *, device, seed, threads, dt, directory):
    """A 'simulator' whose every neuron fires as a Poisson process of 4 Hz (no dynamics at all)."""
    rng = np.random.default_rng(seed)
    spikes = {}
    for p in net.populations:
        counts = rng.poisson(4.0 * duration, p.size)
        idx = np.repeat(np.arange(p.size), counts)
        t = rng.uniform(0.0, duration, idx.size)
        order = np.argsort(t)
        spikes[p.name] = (idx[order], t[order])
    return SpikingResult(spikes, {p.name: p.size for p in net.populations}, duration,
                         {"backend": "poisson", "device": device, "seed": seed, "poisson_version": "1"},
                         {p.name: {} for p in net.populations}, {"build": 0.0, "run": 0.0, "total": 0.0})


@pytest.fixture
def poisson():
    backend = register_backend(SpikingBackend("poisson", "numpy", "nothing to install",
                                              "test_spiking_backends:poisson_run",
                                              devices=("cpu",), title="Poisson",
                                              timing_counts=("nothing", "drawing spikes")))
    yield backend
    del SPIKING_BACKENDS["poisson"]


def test_a_test_only_backend_goes_through_twin_and_validate(poisson, tmp_path, capsys):
    import json

    from colplugin.cli import main

    run = tmp_path / "xor"
    assert main(["train", "xor", "--updates", "1", "--out", str(run), "--no-progress"]) == 0
    assert main(["twin", str(run), "--backend", "poisson", "--scale", "0.02", "--trials", "1", "--nix-neurons", "1",
                 "--out", str(tmp_path / "twin")]) == 0
    twin = json.loads((tmp_path / "twin" / "twin.json").read_text())
    assert twin["backend"] == "poisson" and twin["device"] == "cpu"  # the backend's default device
    rates = np.array([v["spiking_hz"] for v in twin["per_population"].values()])
    assert len(rates) == 24  # 3 columns x 8 populations, read from the fake's spikes with Elephant
    assert abs(rates.mean() - 4.0) < 0.5 and np.all(np.abs(rates - 4.0) < 2.0)  # Poisson estimates of 4 Hz
    assert "drawing spikes" in (tmp_path / "twin" / "report.md").read_text()
    code = main(["validate", "microcircuit", "--backend", "poisson", "--scale", "0.02", "--duration", "0.7",
                 "--seeds", "1", "--format", "nwb", "--out", str(tmp_path / "val")])
    assert code in (0, 1)  # 1: a judged check failed (4 Hz everywhere is not PD14), every result written
    rows = json.loads((tmp_path / "val" / "comparison.json").read_text())
    assert len(rows) == 8 and all(abs(r["spiking_rate"] - 4.0) < 1.5 for r in rows)  # the fake's 4 Hz
    assert "poisson cpu" in (tmp_path / "val" / "report.md").read_text()
