"""Every example runs (at reduced size) as a test."""

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.mark.parametrize("name", ["xor.py", "decision.py", "neo_round_trip.py"])
def test_example_runs(name, tmp_path):
    proc = subprocess.run([sys.executable, str(EXAMPLES / name), "--quick", "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=600, env={"MPLBACKEND": "Agg",
                                                                            "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    if name == "neo_round_trip.py":
        line = [ln for ln in proc.stdout.splitlines() if ln.startswith("relative RMS")][0]
        final = float(line.split("->")[1].split("%")[0])
        assert final < 5.0  # the fit recovers the known network's rates within 5 % RMS


def test_readme_python_example_runs(tmp_path):
    """The README's 20-line example, as printed (trains 20 XOR updates, runs Brian2, writes NIX)."""
    readme = (EXAMPLES.parent / "README.md").read_text()
    code = readme.split("## Python in 20 lines")[1].split("```python")[1].split("```")[0]
    assert len(code.strip().splitlines()) <= 20
    proc = subprocess.run([sys.executable, "-c", "import torch; torch.set_num_threads(1)\n" + code],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          env={"MPLBACKEND": "Agg", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "torch.nix").is_file() and (tmp_path / "brian2.nix").is_file()
