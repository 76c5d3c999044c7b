"""The command line: outputs, refusal to mix results, clear errors."""

import json

import pytest

from colplugin.cli import main

from conftest import assert_help_on_every_option


def test_simulate_writes_results_and_refuses_to_mix(tmp_path, capsys):
    out = tmp_path / "sim"
    assert main(["simulate", "--duration", "0.2", "--out", str(out)]) == 0
    rates = json.loads((out / "rates.json").read_text())
    assert "mt[0].L4E" in rates and (out / "rates.png").exists() and (out / "params.json").exists()
    before = (out / "rates.json").read_text()
    with pytest.raises(SystemExit, match="not empty"):
        main(["simulate", "--duration", "0.2", "--out", str(out)])
    assert (out / "rates.json").read_text() == before
    assert main(["simulate", "--duration", "0.2", "--out", str(out), "--overwrite"]) == 0


def test_bad_inputs_give_errors_not_tracebacks(tmp_path, capsys):
    bad = tmp_path / "p.toml"
    bad.write_text("base = 'dl25'\n[tau_m]\nvalue = -3\n")
    assert main(["simulate", "--params", str(bad), "--out", str(tmp_path / "x")]) == 2
    assert "tau_m" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "nothing"), "--out", str(tmp_path / "y")]) == 2
    assert "no checkpoint.pt" in capsys.readouterr().err
    corrupt = tmp_path / "run"
    corrupt.mkdir()
    (corrupt / "checkpoint.pt").write_bytes(b"not a checkpoint")
    assert main(["export", str(corrupt), "--out", str(tmp_path / "z")]) == 2
    assert "corrupt" in capsys.readouterr().err


def test_version_and_help_on_every_option(capsys):

    from colplugin import __version__

    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0 and __version__ in capsys.readouterr().out
    subparsers = assert_help_on_every_option()
    assert "--to" not in subparsers.choices["export"].format_help()
    from colplugin.tasks import TASKS

    train_choices = next(a for a in subparsers.choices["train"]._actions if a.dest == "task").choices
    assert set(train_choices) == set(TASKS)  # the task choices come from the registry


@pytest.mark.parametrize("option", [["--updates", "0"], ["--updates", "-5"], ["--lr", "0"], ["--lr", "-1"]])
def test_bad_training_settings_are_refused_before_work(option, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "xor", *option, "--out", str(out), "--no-progress"]) == 2
    assert option[0].lstrip("-") in capsys.readouterr().err
    assert not out.exists()
