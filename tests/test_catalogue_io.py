"""Hostile inputs, round 2: output paths, network specs and sizes refused up front, one case per row.

Every case checks a refusal that names the argument, file or value and the fix, and that
nothing was written or replaced. No test writes to a device: special files are made in
``tmp_path`` (a FIFO, a symbolic link to ``/dev/null``), and the code must refuse them
before creating any temporary file or renaming anything.
"""

from __future__ import annotations

import copy
import json
import os
import stat
from pathlib import Path

import neo
import numpy as np
import pytest

import colplugin as cp
from colplugin._io import OutputDirectory, atomic_path, atomic_write_text
from colplugin.cli import main as _main
from colplugin.params import ParameterError
from colplugin.spiking.network import SpikingNetworkError, check_scaling


def main(args) -> int:
    """The exit status of ``colplugin ARGS`` (a refusal raises SystemExit(2) in-process)."""
    try:
        return _main(args)
    except SystemExit as exc:
        return exc.code


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# -- 1. atomic writes: special files, directories, empty paths, wrong blocks ------------------------
def test_atomic_path_refuses_a_fifo_before_creating_any_temporary_file(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match=r"pipe is a named pipe \(FIFO\), not a regular file; give the path of a "
                                         "regular file"):
        with atomic_path(fifo):
            raise AssertionError("the body must not run")
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)  # still the FIFO, not a regular file renamed onto it
    assert _names(tmp_path) == ["pipe"]  # no temporary file left


def test_atomic_path_refuses_a_link_to_a_device(tmp_path):
    link = tmp_path / "null.json"
    link.symlink_to("/dev/null")
    with pytest.raises(ValueError, match=r"null.json \(a link to /dev/null\) is a character device, not a regular "
                                         "file"):
        atomic_write_text(link, "{}")
    assert link.is_symlink() and os.readlink(link) == "/dev/null"
    assert _names(tmp_path) == ["null.json"]


def test_atomic_path_follows_a_link_to_a_regular_file(tmp_path):
    target = tmp_path / "real.json"
    target.write_text("old")
    link = tmp_path / "link.json"
    link.symlink_to(target)
    atomic_write_text(link, "new")
    assert link.is_symlink() and target.read_text() == "new"  # the file is written, the link stays a link
    assert _names(tmp_path) == ["link.json", "real.json"]


def test_atomic_path_refuses_a_dangling_link(tmp_path):
    link = tmp_path / "gone.json"
    link.symlink_to(tmp_path / "missing" / "x.json")
    with pytest.raises(ValueError, match="gone.json is a symbolic link to .*missing/x.json, which does not exist"):
        atomic_write_text(link, "{}")
    assert _names(tmp_path) == ["gone.json"]


def test_save_nix_refuses_a_directory(tmp_path):
    folder = tmp_path / "results"
    folder.mkdir()
    with pytest.raises(ValueError, match=r"save_nix\(block, path\): path .*results is a directory, not a regular "
                                         r"file; give a file path inside it, e.g. .*results/result.nix"):
        cp.save_nix(neo.Block(), folder)
    assert folder.is_dir() and _names(tmp_path) == ["results"] and _names(folder) == []


def test_save_nix_refuses_an_empty_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # Path('') is '.': an unguarded write would land here
    with pytest.raises(ValueError, match=r"save_nix\(block, path\): path is empty; give a file path"):
        cp.save_nix(neo.Block(), "")
    assert _names(tmp_path) == []


@pytest.mark.parametrize("block, named", [(None, "NoneType"), ([neo.Block()], "list")])
def test_save_nix_refuses_what_is_not_one_block(tmp_path, block, named):
    with pytest.raises(TypeError, match=rf"block must be one neo.Block, got {named}.*colplugin.to_neo\(result\)"):
        cp.save_nix(block, tmp_path / "x.nix")
    assert _names(tmp_path) == []


def test_load_nix_says_a_directory_is_a_directory(tmp_path):
    with pytest.raises(IsADirectoryError, match="is a directory, not a NIX file; pass the .nix file"):
        cp.load_nix(tmp_path)


# -- 2. --out whose lock or directory cannot be made ------------------------------------------------
def test_out_below_a_file_names_out_and_the_fix(tmp_path):
    (tmp_path / "file").write_text("mine")
    out = tmp_path / "file" / "sub" / "run"
    with pytest.raises(ValueError, match=r"cannot use --out .*file/sub/run: its parent directory .* cannot be "
                                         "created .*; give --out a directory you can write to"):
        OutputDirectory(out).claim()
    assert _names(tmp_path) == ["file"] and (tmp_path / "file").read_text() == "mine"


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc")
def test_out_in_proc_is_refused_by_the_cli(capsys):
    assert main(["simulate", "--duration", "0.05", "--out", "/proc/hostile"]) == 2
    err = capsys.readouterr().err
    assert "cannot use --out /proc/hostile: its lock file /proc/.hostile.lock cannot be created" in err
    assert "give --out a directory you can write to" in err and "[Errno" not in err


# -- 3. network specs: unknown keys, dtype ----------------------------------------------------------
@pytest.fixture(scope="module")
def spec():
    net = cp.ColumnNetwork(cp.load_preset("dl25"), {"mt": ("mt", 2)}, [cp.Input("mt"), cp.Lateral("mt")])
    return json.loads(json.dumps(net.spec()))


def _edited(spec, edit):
    s = copy.deepcopy(spec)
    edit(s)
    return s


@pytest.mark.parametrize("edit, message", [
    (lambda s: s.__setitem__("dtpye", "float32"),
     r"network spec: unknown key 'dtpye' \(did you mean 'dtype'\?\); the keys are params, areas, projections, dtype"),
    (lambda s: s["areas"]["mt"].__setitem__("colums", 3),
     r"area 'mt': unknown key 'colums' \(did you mean 'n_columns'\?\); the keys are kind, n_columns, split"),
    (lambda s: s["projections"][1].__setitem__("weight", 3.0),
     r"projection 'lateral:mt:cross': unknown key 'weight' \(did you mean 'init'\?\); the keys are kind, source"),
    (lambda s: s["projections"][0].__setitem__("chanels", [0, 1]),
     r"projection 'input:mt': unknown key 'chanels' \(did you mean 'channels'\?\)"),
    (lambda s: s["projections"][1].pop("source_pops"),
     r"projection 'lateral:mt:cross': missing key\(s\) 'source_pops' \(required: source, target"),
    (lambda s: s.__setitem__("dtype", "float16"),
     r"network spec: \"dtype\" is 'float16'; use \"float64\" \(the default\) or \"float32\""),
    (lambda s: s.__setitem__("areas", [["mt", 2]]),
     r"network spec: \"areas\" must map area names .*; pass a network.json written by colplugin"),
])
def test_a_bad_spec_is_refused_with_the_key_and_a_did_you_mean(spec, edit, message):
    with pytest.raises(ParameterError, match=message) as info:
        cp.ColumnNetwork.from_spec(_edited(spec, edit))
    text = str(info.value)
    assert len(text) < 200  # the command line's wrapper keeps the first 200 characters
    assert "dtype=torch" not in text and not text.rstrip(")").endswith("json.dump(network.spec(), file")


def test_export_of_a_misspelt_spec_names_the_key(spec, tmp_path, capsys):
    path = tmp_path / "net.json"
    path.write_text(json.dumps(_edited(spec, lambda s: s.__setitem__("dtpye", "float32"))))
    assert main(["export", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "unknown key 'dtpye' (did you mean 'dtype'?)" in err and not (tmp_path / "out").exists()


# -- 4. split columns: the per-column size is printed with enough digits ----------------------------
def test_split_columns_message_does_not_round_up_to_the_minimum():
    with pytest.raises(ValueError) as info:
        cp.ColumnNetwork(cp.load_preset("dl25"), {"mt": ("mt", 3114)}, [])
    text = str(info.value)
    assert "L5I with 3113/3114 = 0.9997 neurons per column" in text and "needs at least 1." in text
    assert "at most 3113 columns (--columns" in text and "--full" in text
    assert text.endswith("(Python: Area(..., split=False))")


# -- 5. spiking scale floor above 1 ------------------------------------------------------------------
def test_a_floor_above_one_says_no_scale_helps():
    with pytest.raises(SpikingNetworkError) as info:
        check_scaling(0.02, 0.5, {"mt[0].L5I": 3113 / 3000, "mt[0].L23E": 20683 / 3000}, what="this twin")
    text = str(info.value)
    assert "this twin cannot be built at any scale" in text and "mt[0].L5I, has 1.038 neuron(s)" in text
    assert "fewer columns per area" in text and "--full" in text and "scale of at least" not in text


def test_a_bad_k_scale_names_the_option():
    with pytest.raises(SpikingNetworkError, match=r"k_scale must lie in \(0, 1\].*give --k-scale a finite number "
                                                  r".*e.g. --k-scale 0.1 \(Python: None, the same as scale\)"):
        check_scaling(0.1, 2.0)


# -- 6. stimuli without trials or segments ----------------------------------------------------------
@pytest.mark.parametrize("rates, message", [
    (np.zeros((0, 1, 3)), r"Stimulus rates of shape \(0, 1, 3\) hold 0 trials; give at least one trial"),
    (np.zeros((2, 0, 3)), r"Stimulus rates of shape \(2, 0, 3\) hold 0 segments"),
    (np.zeros((0, 3)), r"Stimulus rates of shape \(0, 3\) hold 0 segments"),
])
def test_a_stimulus_without_trials_or_segments_is_refused(rates, message):
    with pytest.raises(ValueError, match=message):
        cp.Stimulus([0.0], rates)
