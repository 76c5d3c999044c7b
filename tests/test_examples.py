"""Every example of the gallery runs as the documentation build runs it, and gives what it says.

Each script in ``examples/`` runs in a subprocess with ``--quick`` and no ``--out`` (the
gallery's arguments), from an empty working directory, with ``TMPDIR`` in the test's
temporary directory: the example must write its outputs into a temporary directory (never
into the working directory), leave open matplotlib figures with something drawn (what the
gallery scrapes), and its outputs are checked against numbers computed here.
"""

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import colplugin as cp

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

#: Runs an example as the gallery does (``--quick`` only), then reports the open figures: per figure the
#: number of things drawn (lines, collections, images, patches and texts of its axes, and figure images).
RUNNER = """
import json, runpy, sys
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
path = sys.argv[1]
sys.argv = [path, "--quick"]
runpy.run_path(path, run_name="__main__")
drawn = [len(f.images) + sum(len(ax.lines) + len(ax.collections) + len(ax.images) + len(ax.patches) + len(ax.texts)
                             for ax in f.axes) for f in map(plt.figure, plt.get_fignums())]
print("FIGURES " + json.dumps(drawn))
"""


def _xor(out, stdout):
    from colplugin.tasks.xor import XOR

    summary = json.loads((out / "summary.json").read_text())
    assert summary["seeds"] == 2 and (out / "figure1b.png").is_file()
    metrics = json.loads((out / "seed0" / "metrics.json").read_text())
    assert 1 <= metrics["updates"] <= 3
    # the checkpoint's test accuracy, computed here, is the one the run reports
    net = cp.load_checkpoint(out / "seed0" / "checkpoint.pt")["network"]
    task = XOR()
    test = task.test_set()
    with torch.no_grad():
        traj = cp.simulate(net, test.stimulus, duration=task.duration, dt_out=task.dt_out, solver=task.solver)
    assert task.accuracy(traj, test) == pytest.approx(metrics["final_accuracy"], abs=1e-9)
    assert re.search(r"upper\[0\]: computes \S+", stdout)
    return 3


def _decision(out, stdout):
    fig2 = json.loads((out / "figure2.json").read_text())
    assert (out / "figure2.png").is_file() and fig2["evidence_hz"] == list(np.arange(0, 21, 2.0))
    t, rates = np.asarray(fig2["t_s"]), np.asarray(fig2["rates_hz"])  # (T, levels, 2 columns, 4 layers)
    assert rates.shape == (len(t), 11, 2, 4) and np.all(np.isfinite(rates)) and np.all(rates >= 0)
    # the winner (higher L2/3E just before the stimulus ends), recomputed from the rates
    k_end = int(np.searchsorted(t, fig2["phases_s"][2])) - 1
    assert np.argmax(rates[k_end, :, :, 0], axis=1).tolist() == fig2["winner_column"]
    wins = sum(w == 0 for w in fig2["winner_column"][1:])
    assert f"the stronger input wins at {wins} of 10 evidence levels" in stdout
    nrmse = json.loads((out / "decision_metrics.json").read_text())["nrmse"]
    assert 0 < nrmse < 1 and f"normalised RMS error {nrmse:.3g}" in stdout
    assert (out / "figure2_raw.png").is_file()
    return 4  # training curve, Figure 2 as the paper draws it, the rates in Hz, the fit to Wong-Wang


def _neo_signal(path, name="rate"):
    """(t, values) of the signal ``name`` of every segment of a NIX file, read with Neo itself."""
    from neo.io import NixIO

    with NixIO(str(path), "ro") as io:
        block = io.read_block()
    sigs = [next(s for s in seg.analogsignals if s.name == name) for seg in block.segments]
    return sigs[0].times.rescale("s").magnitude, np.stack([s.rescale("Hz").magnitude for s in sigs], 1), sigs[0]


def _train_brian2_neo(out, stdout):
    t_torch, torch_rates, sig = _neo_signal(out / "torch.nix")
    t_b2, b2_rates, _ = _neo_signal(out / "brian2.nix")
    assert torch_rates.shape == (1001, 4, 24) and list(sig.array_annotations["area"][:2]) == ["lower", "lower"]
    n = min(len(t_torch), len(t_b2))
    np.testing.assert_allclose(t_b2[:n], t_torch[:n], atol=1e-12)
    # euler at 0.1 ms on both sides: the same numbers up to rounding, every trial and population
    rel = np.abs(b2_rates[:n] - torch_rates[:n]) / np.maximum(np.abs(torch_rates[:n]), 1e-3)
    assert rel.max() < 1e-9
    assert torch_rates[-1, :, 8:].std() > 0.01  # the four patterns give different responses
    return 2


def _neo_round_trip(out, stdout):
    # the hidden network, rebuilt here: the fit's Brian2 run must recover its noiseless rates
    hidden = cp.ColumnNetwork(cp.load_preset("dl25"), {"mt": ("mt", 2)},
                              [cp.Input("mt"), cp.Lateral("mt", init=50.0)], seed=1)
    hidden.set_projection_weights("lateral:mt:cross", 250.0)
    hidden.set_projection_weights("lateral:mt:self", 10.0)
    stim = cp.Stimulus([0.0, 0.1], [[[0, 0], [30, 20]], [[0, 0], [15, 35]]])
    with torch.no_grad():
        truth = cp.simulate(hidden, stim, duration=0.4, dt_out=0.01).rate.numpy()
    channels = ["mt[0].L23E", "mt[1].L23E", "mt[0].L23I", "mt[1].L23I"]
    truth = truth[:, :, [hidden.channel_names.index(c) for c in channels]]
    _, recording, _ = _neo_signal(out / "recording.nix")
    noise = np.sqrt(np.mean((recording - truth) ** 2) / np.mean(truth ** 2))
    assert 0.02 < noise < 0.08  # 5 % of each channel's RMS rate
    _, fit, sig = _neo_signal(out / "fit_brian2.nix")
    names = [f"{a}[{c}].{p}" for a, c, p in zip(*(sig.array_annotations[k] for k in ("area", "column", "population")))]
    fit = fit[:, :, [names.index(c) for c in channels]]
    n = min(len(fit), len(truth))
    err = np.sqrt(np.mean((fit[:n] - truth[:n]) ** 2) / np.mean(truth[:n] ** 2))
    assert err < 0.05, f"the fitted network's Brian2 rates are {100 * err:.1f} % off the hidden network's"
    return 2


def _spiking_twin(out, stdout):
    from neo.io import NixIO

    report = json.loads((out / "twin" / "twin.json").read_text())
    assert report["backend"] == "brian2" and report["scale"] == 0.01 and report["trials"] == 1
    assert 0 <= report["accuracy"] <= 1 and f"spiking {report['accuracy']:.3g}" in stdout
    # physics, not bookkeeping: the spiking L4E of a lower column fires more with both inputs on (11) than off (00)
    for col in (0, 1):
        per = report["per_population"][f"lower[{col}].L4E"]["per_condition"]
        assert per[3]["spiking_hz"] > per[0]["spiking_hz"] + 5.0
    with NixIO(str(out / "twin" / "spikes.nix"), "ro") as io:
        block = io.read_block()
    assert len(block.segments) == 4
    trains = block.segments[3].spiketrains
    assert len(trains) == 24 and {st.annotations["area"] for st in trains} == {"lower", "upper"}
    return 3


#: The checks of each example (every script in examples/ needs one) and how many figures it must leave.
CHECKS = {"xor.py": _xor, "decision.py": _decision, "train_brian2_neo.py": _train_brian2_neo,
          "neo_round_trip.py": _neo_round_trip, "spiking_twin.py": _spiking_twin}


def test_every_example_is_checked_and_in_gallery_format():
    scripts = sorted(p.name for p in EXAMPLES.glob("*.py"))
    assert scripts == sorted(CHECKS)
    assert (EXAMPLES / "GALLERY_HEADER.rst").read_text().startswith("Examples\n========\n")
    for name in scripts:
        source = (EXAMPLES / name).read_text()
        doc = ast.get_docstring(ast.parse(source), clean=False).strip("\n").splitlines()
        assert len(doc) > 3 and doc[1] == "=" * len(doc[0]) and doc[2] == "", f"{name}: the docstring's title"
        assert source.count("\n# %%\n") >= 3, f"{name}: code cells (# %%)"
        assert '"--quick"' in source and '"--out"' in source, f"{name}: --quick and --out options"


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_example_runs_as_in_the_gallery(name, tmp_path):
    work, tmp = tmp_path / "work", tmp_path / "tmp"
    work.mkdir()
    tmp.mkdir()
    env = {**os.environ, "MPLBACKEND": "Agg", "TMPDIR": str(tmp)}
    proc = subprocess.run([sys.executable, "-c", RUNNER, str(EXAMPLES / name)], cwd=work, capture_output=True,
                          text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not any(work.iterdir()), f"{name} wrote into its working directory: {list(work.iterdir())}"
    out = Path(re.search(r"^output directory: (.+)$", proc.stdout, re.M).group(1))
    assert out.is_dir() and tmp in out.parents, f"{name}: --quick without --out must write to a temporary directory"
    n_figures = CHECKS[name](out, proc.stdout)
    drawn = json.loads(proc.stdout.rsplit("FIGURES ", 1)[1])
    assert len(drawn) >= n_figures and all(d > 0 for d in drawn), drawn


def test_out_option(tmp_path):
    """``--out`` chooses the output directory."""
    proc = subprocess.run([sys.executable, str(EXAMPLES / "xor.py"), "--quick", "--out", str(tmp_path / "xor")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "MPLBACKEND": "Agg"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "xor" / "figure1b.png").is_file() and (tmp_path / "xor" / "seed1" / "metrics.json").is_file()


def test_readme_python_example_runs(tmp_path):
    """The README's 20-line example, as printed (trains 20 XOR updates, runs Brian2, writes NIX)."""
    readme = (EXAMPLES.parent / "README.md").read_text()
    code = readme.split("## Python in 20 lines")[1].split("```python")[1].split("```")[0]
    assert len(code.strip().splitlines()) <= 20
    from colplugin.solve import compiled

    # a fresh HOME, but with the solver kernel this installation has built (building it into a fresh cache is
    # tested in test_solve_compiled; here it would only add a compilation)
    ok, _ = compiled.kernel_available()
    kernels = {"COLPLUGIN_CACHE_DIR": str(Path(compiled._module()[0].__file__).parents[1])} if ok else {}
    proc = subprocess.run([sys.executable, "-c", "import torch; torch.set_num_threads(1)\n" + code],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          env={"MPLBACKEND": "Agg", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path), **kernels})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "torch.nix").is_file() and (tmp_path / "brian2.nix").is_file()
