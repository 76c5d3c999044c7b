import json

import pytest
import torch

import colplugin as cp
from colplugin.tasks.fit import fit
from colplugin.export.neo import NeoError, stimulus_from_neo


def _net(params, seed):
    return cp.ColumnNetwork(params, {"mt": ("mt", 2)}, [cp.Input("mt"), cp.Lateral("mt", init=50.0)], seed=seed)


@pytest.fixture(scope="module")
def target_block(tmp_path_factory):
    params = cp.load_preset("dl25")
    truth = _net(params, 1)
    truth.set_projection_weights("lateral:mt:cross", 250.0)
    truth.set_projection_weights("lateral:mt:self", 10.0)
    stim = cp.Stimulus([0.0, 0.1], [[[0, 0], [30, 20]], [[0, 0], [15, 35]]])
    with torch.no_grad():
        traj = cp.simulate(truth, stim, duration=0.3, dt_out=0.01)
    path = cp.save_nix(cp.to_neo(traj), tmp_path_factory.mktemp("fit") / "target.nix")
    return cp.load_nix(path), traj


def test_stimulus_survives_the_nix_file(target_block):
    block, traj = target_block
    stim = stimulus_from_neo(block)
    torch.testing.assert_close(stim.times, traj.stimulus.times)
    torch.testing.assert_close(stim.rates, traj.stimulus.rates)


def test_fit_recovers_a_known_network(target_block):
    block, _ = target_block
    net = _net(cp.load_preset("dl25"), 5)
    chans = ["mt[0].L23E", "mt[1].L23E", "mt[0].L23I", "mt[1].L23I"]
    res = fit(net, block, chans, updates=20, progress=False)
    before = 1 - res.metrics[0]["test_accuracy"]
    after = 1 - res.summary["final_accuracy"]
    assert after < 0.05 and after < 0.5 * before


def test_fit_rejects_unknown_channels(target_block):
    block, _ = target_block
    with pytest.raises(NeoError, match="no channel"):
        fit(_net(cp.load_preset("dl25"), 5), block, ["mt[3].L23E"], updates=1, progress=False)


def test_fit_is_a_task_of_the_cli_and_its_run_exports(tmp_path, capsys):
    """`colplugin train fit` goes through the same run path as every task, so `export` works on it."""
    from colplugin.cli import main

    truth = _net(cp.load_preset("dl25"), 1)
    truth.set_projection_weights("lateral:mt:cross", 250.0)
    stim = cp.Stimulus([0.0, 0.02], [[[0, 0], [30, 20]], [[0, 0], [15, 35]]])
    with torch.no_grad():  # a short target keeps the Brian2 runs of the export short
        traj = cp.simulate(truth, stim, duration=0.05, dt_out=0.01)
    target = cp.save_nix(cp.to_neo(traj), tmp_path / "target.nix")
    block = cp.load_nix(target)
    run = tmp_path / "fit"
    assert main(["train", "fit", "--target", str(target), "--populations", "mt[0].L23E,mt[1].L23E",
                 "--updates", "2", "--seed", "5", "--out", str(run), "--no-progress"]) == 0
    assert "fit seed 5: 2 updates" in capsys.readouterr().out
    for name in ("checkpoint.pt", "best_weights.pt", "metrics.json", "network.json", "evaluation_stimulus.json",
                 "training.png", "weights.png"):
        assert (run / name).is_file(), name
    api = fit(_net(cp.load_preset("dl25"), 5), block, ["mt[0].L23E", "mt[1].L23E"], updates=2, progress=False,
              seed=5)
    cli = json.loads((run / "metrics.json").read_text())
    assert [r["loss"] for r in cli["per_update"]] == [r["loss"] for r in api.metrics]
    assert cli["final_accuracy"] == api.summary["final_accuracy"] and cli["keep_best"] is True
    assert main(["export", str(run), "--out", str(tmp_path / "export")]) == 0
    agree = json.loads((tmp_path / "export" / "agreement.json").read_text())
    assert agree["duration_s"] == pytest.approx(float(traj.t[-1])) and len(agree["euler"]["per_trial"]) == 2
    assert agree["euler"]["max_rel"] < 1e-6


def test_fit_options_need_a_target(tmp_path, capsys):
    from colplugin.cli import main

    assert main(["train", "fit", "--out", str(tmp_path / "x")]) == 2
    assert "--target" in capsys.readouterr().err
