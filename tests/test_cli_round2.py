"""Issue 25's command-line refusals: each bad value is refused before any work, with a message naming it."""

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
