"""Command-line refusals: each bad value is refused before any work, with a message naming it."""

import pytest

from colplugin.cli import main


@pytest.mark.parametrize("args, fragment", [
    (["train", "xor", "--nproc", "0"], "--nproc"),
    (["train", "xor", "--nproc", "-1"], "--nproc"),
    (["train", "xor", "--seed", str(2 ** 64)], "--seed"),
    (["train", "xor", "--seed", "-3"], "--seed"),
])
def test_bad_numbers_are_refused_by_the_parser(capsys, args, fragment):
    with pytest.raises(SystemExit) as info:
        main(args)
    assert info.value.code == 2 and fragment in capsys.readouterr().err


def test_an_empty_out_is_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit):
        main(["train", "xor", "--out", "", "--updates", "1"])
    assert "--out is empty" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()  # nothing written to the default place


def test_a_checkpoint_with_nan_weights_is_refused(tmp_path):
    import torch

    import colplugin as cp
    from colplugin.tasks import XOR
    from colplugin.training.trainer import CheckpointError, load_checkpoint, save_checkpoint

    net = XOR().build_network(cp.load_preset("dl25"), seed=0)
    with torch.no_grad():
        net.inp_theta[0] = float("nan")
    save_checkpoint(tmp_path / "ck.pt", net, XOR(), update=3)
    with pytest.raises(CheckpointError, match="non-finite"):
        load_checkpoint(tmp_path / "ck.pt")


@pytest.mark.parametrize("channels", [[-1], [0, -2], [1.5]])
def test_negative_or_fractional_input_channels_are_refused(channels):
    import colplugin as cp

    with pytest.raises(ValueError, match="input channels"):
        cp.Input("a", channels=channels, to="all")


def test_the_command_line_and_the_api_share_every_spiking_default():
    """One place for each default: `colplugin run/validate/twin/calibrate` and their Python functions agree."""
    import inspect

    from colplugin.analysis.calibration import calibrate
    from colplugin.analysis.twin import TwinSettings
    from colplugin.analysis.validation import StimulusValidationSettings, ValidationSettings
    from colplugin.cli import build_parser
    from colplugin.experiments import main_run

    sub = next(a for a in build_parser()._actions if a.dest == "command").choices

    def cli(command):
        return {a.dest: a.default for a in sub[command]._actions}

    def api(fn):
        return {k: p.default for k, p in inspect.signature(fn).parameters.items()}

    run, m = cli("run"), api(main_run)
    for opt in ("validate_scale", "validate_duration", "twin_scale", "twin_k_scale", "twin_trials"):
        assert run[opt] == m[opt], opt
    val, v, vs = cli("validate"), api(ValidationSettings), api(StimulusValidationSettings)
    for opt in ("scale", "k_scale", "seed", "backend", "threads"):
        assert val[opt] == v[opt] == vs[opt], opt
    assert val["rate"] == vs["rate"]
    # duration, seeds, device and preset differ between microcircuit and stimulus: None, read from the settings
    assert all(val[k] is None for k in ("duration", "seeds", "device", "preset"))
    tw, t = cli("twin"), api(TwinSettings)  # twin_run takes a TwinSettings (or its fields as keywords)
    for opt in ("backend", "scale", "k_scale", "trials", "seed", "threads", "nix_neurons"):
        assert tw[opt] == t[opt], opt
    assert cli("calibrate")["scale"] == api(calibrate)["scale"]


def test_export_writes_nwb_beside_nix_on_request(tmp_path):
    import numpy as np

    import colplugin as cp

    run, exp = tmp_path / "run", tmp_path / "exp"
    assert main(["train", "xor", "--updates", "1", "--no-progress", "--out", str(run)]) == 0
    assert main(["export", str(run), "--format", "both", "--out", str(exp)]) == 0
    for name in ("torch", "brian2"):
        nix, nwb = cp.load_nix(exp / f"{name}.nix"), cp.load_nwb(exp / f"{name}.nwb")
        assert len(nix.segments) == len(nwb.segments) == 4  # the four XOR conditions
        for a, b in zip(nix.segments, nwb.segments):
            ra = next(s for s in a.analogsignals if s.name == "rate")
            rb = next(s for s in b.analogsignals if s.name == "rate")
            assert ra.units == rb.units and np.array_equal(ra.magnitude, rb.magnitude)
            assert list(ra.array_annotations["population"]) == list(rb.array_annotations["population"])
    with pytest.raises(SystemExit):  # argparse: the formats are nix, nwb, both
        main(["export", str(run), "--format", "hdf5", "--out", str(tmp_path / "x")])
