"""The spiking twin of a trained run from the command line: Brian2 runtime and NEST, files and bad input.

``TwinTiny`` (test-only) is one MT column whose learnable input holds L2/3E near a rate;
its read-out from rates calls a condition solved when L2/3E fires at all.
"""

import importlib.util
import json

import numpy as np
import pytest
import torch

import colplugin as cp
from colplugin.cli import main
from colplugin.experiments import train_run
from colplugin.params.names import POPULATIONS
from colplugin.training import Batch, Task, TrainSettings, register_task
from conftest import one_column_input_net, sample_constant_target


@register_task
class TwinTiny(Task):
    """One MT column, a learnable input onto L4E/L4I; two conditions (5 and 15 Hz) of 0.1 s."""

    name = "twintiny"
    duration = 0.1
    dt_out = 0.05
    solver = cp.Solver("rk4", step=1e-3, backend="fused")
    settings = TrainSettings(updates=1, lr=0.1, batch_size=2)

    def build_network(self, params=None, seed=None):
        return one_column_input_net(params, seed)

    def sample(self, n, generator):
        return sample_constant_target(n, generator)

    def test_set(self):
        return Batch(self.evaluation_stimulus(), torch.full((2,), 3.0, dtype=torch.float64), {})

    def evaluation_stimulus(self):
        return cp.Stimulus([0.0], torch.tensor([[[5.0]], [[15.0]]], dtype=torch.float64))

    def loss(self, traj, batch):
        return torch.mean((traj.get("rate", "mt", 0, "L23E")[-1] - batch.target) ** 2)

    def accuracy_from_rates(self, rates, conditions):
        r = np.asarray(rates["mt[0].L23E"])
        assert r.shape[0] == conditions.batch_size
        return float((r > 0).mean())


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("twintiny")
    train_run(TwinTiny(), 0, out, progress=False)
    return out


def _check_outputs(out, backend, trials):
    from neo.io import NixIO

    r = json.loads((out / "twin.json").read_text())
    for key in ("task", "backend", "scale", "accuracy", "per_population", "wall_seconds"):
        assert key in r
    assert r["task"] == "twintiny" and r["backend"] == backend and r["scale"] == 0.01
    assert 0 <= r["accuracy"] <= 1 and r["dmf_accuracy"] == 1.0
    assert set(r["per_population"]) == {f"mt[0].{p}" for p in POPULATIONS}
    for name, row in r["per_population"].items():
        assert row["area"] == "mt" and row["column"] == 0 and name.endswith(row["population"])
        assert len(row["per_condition"]) == 2
        assert all(len(c["spiking_trials_hz"]) == trials for c in row["per_condition"])
        assert np.isfinite(row["relative_difference"]) and row["spiking_hz"] >= 0
    with NixIO(str(out / "spikes.nix"), "ro") as io:
        block = io.read_block()
    assert len(block.segments) == 2  # first trial of each condition
    trains = block.segments[0].spiketrains
    assert {st.annotations["population"] for st in trains} == set(POPULATIONS)
    st = trains[0]
    assert st.annotations["area"] == "mt" and st.annotations["column"] == 0 and "layer" in st.annotations
    assert len([t for t in trains if t.annotations["population"] == "L23E"]) == 3  # --nix-neurons 3
    md = (out / "report.md").read_text()
    assert "raster_condition1.png" in md and "overlay_condition0.png" in md and (out / "rates.png").is_file()


def test_twin_cli_brian2_runtime(run_dir, tmp_path, capsys):
    out = tmp_path / "twin"
    assert main(["twin", str(run_dir), "--backend", "brian2", "--device", "runtime", "--scale", "0.01",
                 "--k-scale", "0.1", "--trials", "1", "--nix-neurons", "3", "--out", str(out)]) == 0
    assert "task accuracy of the spiking twin" in capsys.readouterr().out
    _check_outputs(out, "brian2", 1)
    # every file the package writes is readable back by it: the twin's spikes are a fit target
    from colplugin.experiments import load_run

    net, stim, _ = load_run(run_dir)
    block = cp.load_nix(out / "spikes.nix")
    assert cp.ColumnNetwork.from_spec(json.loads(block.annotations["network_spec"])).spec() == net.spec()
    for seg in block.segments:
        u = next(s for s in seg.analogsignals if s.name == "input")
        assert str(u.units.dimensionality) == "Hz" and u.shape[1] == net.n_inputs
        assert np.allclose(u.magnitude[-1], stim.rates[seg.annotations["condition"], -1].numpy())
    fit = tmp_path / "fit"
    assert main(["train", "fit", "--target", str(out / "spikes.nix"), "--updates", "1", "--no-progress",
                 "--out", str(fit)]) == 0
    assert (fit / "checkpoint.pt").is_file()


def test_twin_cli_writes_nwb_on_request(run_dir, tmp_path):
    out = tmp_path / "twin"
    assert main(["twin", str(run_dir), "--device", "runtime", "--scale", "0.01", "--k-scale", "0.1", "--trials", "1",
                 "--nix-neurons", "3", "--no-progress", "--format", "both", "--out", str(out)]) == 0
    nix, nwb = cp.load_nix(out / "spikes.nix"), cp.load_nwb(out / "spikes.nwb")
    assert len(nwb.segments) == len(nix.segments) == 2
    for a, b in zip(nix.segments, nwb.segments):
        assert [st.annotations["population"] for st in a.spiketrains] == \
            [st.annotations["population"] for st in b.spiketrains]
        for x, y in zip(a.spiketrains, b.spiketrains):
            np.testing.assert_array_equal(x.rescale("s").magnitude, y.rescale("s").magnitude)
    assert nwb.annotations["network_spec"] == nix.annotations["network_spec"]


def test_twin_cli_nest(run_dir, tmp_path):
    pytest.importorskip("nest")
    out = tmp_path / "twin"
    assert main(["twin", str(run_dir), "--backend", "nest", "--scale", "0.01", "--k-scale", "0.1", "--trials", "1",
                 "--nix-neurons", "3", "--no-progress", "--out", str(out)]) == 0
    _check_outputs(out, "nest", 1)


def test_twin_cli_offers_the_registered_backends(run_dir, tmp_path, capsys):
    from colplugin.spiking import SPIKING_BACKENDS

    with pytest.raises(SystemExit) as info:
        main(["twin", str(run_dir), "--backend", "nestor", "--out", str(tmp_path / "twin")])
    assert info.value.code == 2 and not (tmp_path / "twin").exists()
    err = capsys.readouterr().err
    assert "invalid choice: 'nestor'" in err and all(repr(name) in err for name in SPIKING_BACKENDS)


@pytest.mark.parametrize("args, message", [
    (["--device", "gpu"], "unknown Brian2 device 'gpu'"),
    (["--scale", "0"], "scale must lie in (0, 1]"),
    (["--scale", "1.5"], "scale must lie in (0, 1]"),
    (["--k-scale", "-1"], "k_scale must lie in (0, 1]"),
    (["--trials", "0"], "trials must be a whole number >= 1"),
])
def test_twin_cli_refuses_bad_settings_before_any_work(run_dir, tmp_path, capsys, args, message):
    out = tmp_path / "twin"
    assert main(["twin", str(run_dir), *args, "--out", str(out)]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_twin_cli_refuses_a_missing_run(tmp_path, capsys):
    assert main(["twin", str(tmp_path / "nothing"), "--out", str(tmp_path / "twin")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "twin").exists()


def test_main_run_includes_a_twin_step(tmp_path):
    """``colplugin run``'s twin step: ``twin/`` with twin.json and its section in report.md."""
    from colplugin.experiments import main_run

    backend = "nest" if importlib.util.find_spec("nest") else "brian2"
    r = main_run(tmp_path, TwinTiny(), progress=False, validate_scale=None, twin_scale=0.01, twin_k_scale=0.1,
                 twin_backend=backend)
    assert r["twin"]["scale"] == 0.01 and 0 <= r["twin"]["accuracy"] <= 1
    assert json.loads((tmp_path / "twin" / "twin.json").read_text())["task"] == "twintiny"
    md = (tmp_path / "report.md").read_text()
    assert "Does it still work in spiking neurons?" in md and "twin/rates.png" in md
