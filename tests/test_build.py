"""The package is releasable: one version, an sdist and a wheel that install and run (no network)."""

from __future__ import annotations

import re
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from pathlib import Path

import pytest

import colplugin

ROOT = Path(__file__).resolve().parents[1]


def test_the_version_has_one_source():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "version" not in project and "version" in project["dynamic"]  # read from colplugin/_version.py
    cff = (ROOT / "CITATION.cff").read_text()
    assert re.search(r'^version: "([^"]+)"', cff, re.M).group(1) == colplugin.__version__
    assert "preferred-citation:" in cff and "Laminar-resolved Cortical Columns" in cff
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert f"## [{colplugin.__version__}]" in changelog and "## [Unreleased]" in changelog


@pytest.fixture(scope="module")
def dist(tmp_path_factory):
    pytest.importorskip("build")
    out = tmp_path_factory.mktemp("dist")
    # no isolation: the build uses the installed setuptools (no download); -x: no check of its version
    proc = subprocess.run([sys.executable, "-m", "build", "--no-isolation", "-x", "--sdist", "--wheel",
                           "--outdir", str(out), str(ROOT)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out


def test_the_wheel_holds_the_package_data_and_runs(dist, tmp_path):
    wheel = next(dist.glob(f"colplugin-{colplugin.__version__}-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    for data in ("colplugin/params/dl25.toml", "colplugin/params/pd14.toml", "colplugin/_siegert.cpp",
                 "colplugin/solve/_fused_kernel.c"):
        assert data in names, data
    assert not any(n.startswith("tests/") for n in names)
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--target", str(target),
                    str(wheel)], check=True, capture_output=True, timeout=300)
    smoke = ("import colplugin as cp, torch\n"
             "assert cp.__file__.startswith(%r), cp.__file__\n"
             "net = cp.ColumnNetwork(cp.load_preset('dl25'), {'mt': ('mt', 1)}, [cp.Input('mt')])\n"
             "r = cp.simulate(net, cp.Stimulus([0.0], [[20.0]]), 0.05).rate\n"
             "assert torch.isfinite(r).all()\n"
             "print(cp.__version__)\n") % str(target)
    # run from an empty directory with only the installed wheel ahead of the dependencies on the path; the solver
    # kernel from this installation's cache (the wheel's kernel source hashes to the same name; a build into a
    # fresh cache is tested in test_solve_compiled)
    from colplugin.solve import compiled

    ok, _ = compiled.kernel_available()
    kernels = {"COLPLUGIN_CACHE_DIR": str(Path(compiled._module()[0].__file__).parents[1])} if ok else {}
    proc = subprocess.run([sys.executable, "-c", smoke], capture_output=True, text=True, timeout=300, cwd=tmp_path,
                          env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path), **kernels})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == colplugin.__version__


def test_the_sdist_holds_the_sources_and_the_citation(dist):
    sdist = next(dist.glob(f"colplugin-{colplugin.__version__}.tar.gz"))
    names = {n.split("/", 1)[1] for n in tarfile.open(sdist).getnames() if "/" in n}
    for f in ("pyproject.toml", "README.md", "CITATION.cff", "CHANGELOG.md", "colplugin/_version.py",
              "colplugin/params/dl25.toml"):
        assert f in names, f
