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
