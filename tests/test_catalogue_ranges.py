"""A catalogue of physically implausible inputs: one case per row, each refused up front.

Parameter values off by a unit prefix or absurd in magnitude (``colplugin.params.ranges``)
and neuron scales below the floor of ``colplugin.spiking.network.MIN_POPULATION_NEURONS``.
Every case checks that the message names the value and the fix; the expected numbers are
computed here from the shipped files, not copied from the code. Nothing builds or runs a
spiking simulation: each refusal comes before that.
"""

from __future__ import annotations

import json
import math
import tomllib
from importlib import resources

import numpy as np
import pytest
import quantities as pq

import colplugin as cp
from colplugin.cli import main
from colplugin.params import ParameterError
from colplugin.params.ranges import RANGES
from colplugin.spiking.network import MIN_POPULATION_NEURONS, SpikingNetworkError

from conftest import two_column_net

AREAS = tomllib.loads((resources.files("colplugin.params") / "areas.toml").read_text())["areas"]
POPS = ("L23E", "L23I", "L4E", "L4I", "L5E", "L5I", "L6E", "L6I")


def _toml(tmp_path, text, name="p.toml"):
    path = tmp_path / name
    path.write_text('base = "dl25"\n' + text)
    return path


def _param_error(path) -> str:
    with pytest.raises(ParameterError) as info:
        cp.load_params(path)
    return str(info.value)


def _cli_error(capsys, args) -> str:
    capsys.readouterr()
    assert main(args) == 2
    return capsys.readouterr().err


def _floor(sizes) -> tuple[float, str, float]:
    """The floor computed here: MIN neurons / the smallest full-size population."""
    i = int(np.argmin(sizes))
    return MIN_POPULATION_NEURONS / sizes[i], POPS[i], float(sizes[i])


# -- 1. Parameter values: a unit prefix off, absurd magnitudes ----------------------------

def capacitance_in_farads(tmp_path, capsys):
    msg = _param_error(_toml(tmp_path, 'C = "250 F"\n'))
    assert "'C'" in msg and f"{250 * 1e12:.6g} pF" in msg and "'250 F'" in msg  # the value, as read and given
    assert "10 pF to 2000 pF" in msg and "PD14 Table 5 uses 250 pF" in msg  # the range and its source
    assert 'C = "250 pF"' in msg and "Fix:" in msg  # the fix: the value that was meant


def rate_offset_1e308(tmp_path, capsys):
    msg = _param_error(_toml(tmp_path, 'b = "1e308 Hz"\n'))
    assert "'b'" in msg and "1e+308 Hz" in msg and "-10000 Hz to 10000 Hz" in msg and "Fix: give b within" in msg


def tau_m_1e_minus_300_s(tmp_path, capsys):
    msg = _param_error(_toml(tmp_path, 'tau_m = "1e-300 s"\n'))
    assert "'tau_m'" in msg and f"{1e-300 * 1e3:.6g} ms" in msg and "1 ms to 100 ms" in msg and "Fix:" in msg


def tau_m_in_s_where_ms_are_meant(tmp_path, capsys):
    msg = _param_error(_toml(tmp_path, 'tau_m = "20 s"\n'))
    assert "20000 ms" in msg and "'20 s'" in msg and 'tau_m = "20 ms"' in msg and "1e3" in msg


def tau_s_table_in_s(tmp_path, capsys):
    msg = _param_error(_toml(tmp_path, '[tau_s]\nvalue = 0.5\nunit = "s"\n'))
    assert "'tau_s'" in msg and "500 ms" in msg and 'tau_s = "0.5 ms"' in msg


def psc_in_nA_where_pA_are_meant(tmp_path, capsys):
    msg = _param_error(_toml(tmp_path, 'J_E = "87.81 nA"\n'))
    assert "'J_E'" in msg and "87.81 nA" in msg and 'J_E = "0.08781 nA"' in msg


def adaptation_in_V_s(tmp_path, capsys):
    msg = _param_error(_toml(tmp_path, '[kappa]\nvalue = [1.5, 0, 0, 0, 0, 0, 0, 0]\nunit = "V*s"\n'))
    assert "'kappa[L23E]'" in msg and "1500 mV*s" in msg and "1.5 mV*s for kappa[L23E]" in msg


def area_of_1e12_neurons(tmp_path, capsys):
    msg = _param_error(_toml(tmp_path, "[areas.mt]\nvalue = [" + ", ".join(["1e12"] * 8) + "]\n"))
    largest = max(max(v["value"]) for v in AREAS.values())  # V1 L2/3E in areas.toml
    assert "'areas.mt[L23E]'" in msg and "1e+12 neurons" in msg and "1 to 1e+06 neurons" in msg
    assert f"{largest:,}" in msg and "Fix: give a number of neurons" in msg


def python_override_in_farads(tmp_path, capsys):
    with pytest.raises(ParameterError) as info:
        cp.load_preset("pd14", overrides={"C": 250 * pq.F})
    assert "'C'" in str(info.value) and 'C = "250 pF"' in str(info.value)
    with pytest.raises(ParameterError, match="'tau_a'"):  # a plain number is in the internal unit (s)
        cp.load_preset("dl25", overrides={"tau_a": 1e4})


def cli_params_file_refused_with_exit_2(tmp_path, capsys):
    path = _toml(tmp_path, 'C = "250 F"\n')
    err = _cli_error(capsys, ["simulate", "--params", str(path), "--duration", "0.01", "--out",
                              str(tmp_path / "sim")])
    assert "'C'" in err and 'C = "250 pF"' in err and not (tmp_path / "sim").exists()


def ranges_edges_are_inclusive_and_just_outside_refused(tmp_path, capsys):
    """The bounds decide: the bound itself loads, 1 % beyond it does not (so no range is vacuous)."""
    scalars = [k for k, r in RANGES.items() if k in cp.params.SPECS and cp.params.SPECS[k].shape is None]
    assert len(scalars) >= 15
    for key in scalars:
        r = RANGES[key]
        for edge, outside in ((r.low, r.low - 0.01 * max(abs(r.low), 1e-3)), (r.high, r.high + 0.01 * abs(r.high))):
            if (key, edge) in (("V_th", r.low), ("V_reset", r.high)):
                continue  # V_th must lie above V_reset, which must lie in the same range
            partner = {"V_th": {"V_reset": edge - 1}, "V_reset": {"V_th": edge + 1}}.get(key, {})
            cp.load_preset("pd14", overrides={**partner, key: edge})
            with pytest.raises(ParameterError, match=f"'{key}'"):  # below 0 the sign rule may refuse it first
                cp.load_preset("pd14", overrides={**partner, key: outside})


def every_shipped_preset_loads(tmp_path, capsys):
    """Generous enough: every preset loads, with every area of areas.toml, and every range has a source."""
    for name in cp.params.PRESETS:
        p = cp.load_preset(name)
        assert set(AREAS) <= set(p.areas)
    assert all(r.source and r.low < r.high for r in RANGES.values())
    assert set(RANGES) <= set(cp.params.SPECS) | {"areas"}


# -- 2. Scale floors: every path refuses before building ----------------------------------

def calibrate_scale_1e_minus_9(tmp_path, capsys):
    floor, pop, size = _floor(AREAS["mt"]["value"])  # calibrate: one full MT column of dl25
    out = tmp_path / "cal"
    err = _cli_error(capsys, ["calibrate", "--preset", "dl25", "--backend", "brian2", "--scale", "1e-9",
                              "--out", str(out)])
    assert "scale 1e-09" in err and f"{pop} ({size:g} neurons at full size)" in err
    assert f"fewer than the {MIN_POPULATION_NEURONS} neurons a population needs" in err and "MIN_" not in err
    assert f"at least {math.ceil(floor * 1e4) / 1e4:.2g}" in err and not out.exists()
    from colplugin.analysis.calibration import spiking_step_rates

    with pytest.raises(SpikingNetworkError, match="below the floor"):  # the API refuses too
        spiking_step_rates(cp.load_preset("dl25"), [0.0], scale=1e-9, backend="brian2")


def twin_scale_1e_minus_9(tmp_path, capsys):
    net = two_column_net(cp.load_preset("dl25"))  # MT split in two: each column has half the neurons
    spec = tmp_path / "network.json"
    spec.write_text(json.dumps(net.spec()))
    floor, pop, size = _floor(np.asarray(AREAS["mt"]["value"]) / 2)
    out = tmp_path / "twin"
    err = _cli_error(capsys, ["twin", str(spec), "--backend", "brian2", "--device", "runtime", "--scale", "1e-9",
                              "--out", str(out)])
    assert "scale 1e-09" in err and f"{pop} ({size:g} neurons at full size)" in err and "Fix:" in err
    assert not out.exists()
    from colplugin.analysis.twin import twin_run

    stim = cp.Stimulus([0.0], [[5.0]])
    with pytest.raises(ValueError, match=f"{MIN_POPULATION_NEURONS} / {size:g}"):
        twin_run(tmp_path / "api", net, stim, 0.1, scale=1e-9, backend="brian2", device="runtime")
    assert not (tmp_path / "api").exists()


def validate_microcircuit_scale_1e_minus_9(tmp_path, capsys):
    out = tmp_path / "val"
    err = _cli_error(capsys, ["validate", "microcircuit", "--scale", "1e-9", "--duration", "0.7", "--seeds", "1",
                              "--device", "runtime", "--out", str(out)])
    smallest = min(cp.load_preset("pd14").area_sizes("pd14"))  # L5I, 1065 neurons (PD14 Table 5)
    assert "scale 1e-09" in err and f"{MIN_POPULATION_NEURONS} / {smallest:g}" in err
    assert "Fix: use a scale of at least" in err and not out.exists() and "removed" not in err


def microcircuit_floor_matches_the_pd14_sizes(tmp_path, capsys):
    from colplugin.spiking import pd14_microcircuit

    floor, pop, size = _floor(AREAS["pd14"]["value"])  # L5I, 1065 neurons
    pd14_microcircuit(scale=0.01)  # the tests' smallest scale keeps round(10.65) = 11 neurons
    below = 0.9 * floor  # round(0.9 * 10) = 9 neurons
    with pytest.raises(SpikingNetworkError) as info:
        pd14_microcircuit(scale=below)
    msg = str(info.value)
    assert f"scale {below:g}" in msg and pop in msg and "9 neuron(s)" in msg and "Fix:" in msg


def twin_floor_is_exact_at_the_boundary(tmp_path, capsys):
    from colplugin.analysis.twin import check_twin_scale

    net = two_column_net(cp.load_preset("dl25"))
    floor, _, _ = _floor(np.asarray(AREAS["mt"]["value"]) / 2)
    assert check_twin_scale(net, floor * 1.001, 0.5) == 0.5
    with pytest.raises(SpikingNetworkError, match="below the floor"):
        check_twin_scale(net, floor * 0.999, 0.5)


@pytest.mark.parametrize("args, fragment", [
    (["--scale", "nan"], "scale must lie in (0, 1]"), (["--scale", "inf"], "scale must lie in (0, 1]"),
    (["--scale", "-0.1"], "scale must lie in (0, 1]"), (["--k-scale", "nan"], "k_scale must lie in (0, 1]"),
    (["--k-scale", "inf"], "k_scale must lie in (0, 1]"), (["--k-scale", "0"], "k_scale must lie in (0, 1]"),
])
def test_nan_inf_and_nonpositive_scales(tmp_path, capsys, args, fragment):
    spec = tmp_path / "network.json"
    spec.write_text(json.dumps(two_column_net(cp.load_preset("dl25")).spec()))
    err = _cli_error(capsys, ["twin", str(spec), "--backend", "brian2", *args, "--out", str(tmp_path / "t")])
    assert fragment in err and "got " + args[1] in err and "fix:" in err
    err = _cli_error(capsys, ["calibrate", "--backend", "brian2", *args, "--out", str(tmp_path / "c")])
    assert fragment in err
    from colplugin.spiking import pd14_microcircuit

    value = float(args[1])
    kwargs = {"scale": value} if args[0] == "--scale" else {"k_scale": value}
    with pytest.raises(ValueError, match=r"scale must"):
        pd14_microcircuit(**kwargs)


CASES = [
    capacitance_in_farads, rate_offset_1e308, tau_m_1e_minus_300_s, tau_m_in_s_where_ms_are_meant, tau_s_table_in_s,
    psc_in_nA_where_pA_are_meant, adaptation_in_V_s, area_of_1e12_neurons, python_override_in_farads,
    cli_params_file_refused_with_exit_2, ranges_edges_are_inclusive_and_just_outside_refused,
    every_shipped_preset_loads, calibrate_scale_1e_minus_9, twin_scale_1e_minus_9,
    validate_microcircuit_scale_1e_minus_9, microcircuit_floor_matches_the_pd14_sizes,
    twin_floor_is_exact_at_the_boundary,
]


@pytest.mark.parametrize("case", CASES, ids=[c.__name__ for c in CASES])
def test_catalogue_ranges(case, tmp_path, capsys):
    case(tmp_path, capsys)
