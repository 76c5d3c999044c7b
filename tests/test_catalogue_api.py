"""A catalogue of hostile Python API inputs: one row per case, each refused up front.

Projections and inputs (Dale's law: ``init`` is a magnitude), networks (bools, dtypes, seeds),
``simulate`` (durations, output spacing, stimulus, network, max_rate, y0), ``Solver``, and
parameter files and overrides. Every refusal is checked for the argument, the value and the
fix in its message; expected numbers (the nearest dividing ``dt_out``, magnitudes) are
computed here. A few rows check that the neighbouring valid inputs still work, so that a
refusal of everything would fail.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch

import colplugin as cp
from colplugin.params import ParameterError

NAN, INF = float("nan"), float("inf")


def _message(exc_type, call) -> str:
    with pytest.raises(exc_type) as info:
        call()
    return str(info.value)


def _net(params):
    return cp.ColumnNetwork(params, {"mt": ("mt", 1)})


# -- 1, 4: projections and inputs -------------------------------------------------------------------
@pytest.mark.parametrize("call, fragments", [
    # an excitatory source with a negative init: the weights' sign would flip
    (lambda: cp.Projection("a", "b", ["L23E"], ["L4E"], init=-3.0, jitter=0),
     ["init=-3.0", "magnitude", "Dale's law", "excitatory", f"init={abs(-3.0):g}"]),
    # an inhibitory source: still a magnitude (its sign is already negative)
    (lambda: cp.Projection("a", "b", ["L23I"], ["L4E"], init=-2.5, jitter=0),
     ["init=-2.5", "inhibitory", f"init={abs(-2.5):g}"]),
    (lambda: cp.Feedforward("a", "b", init=-1.0), ["init=-1.0", "init=1"]),
    (lambda: cp.Input("mt", init=-50.0), ["Input('mt')", "init=-50.0", "excitatory", "init=50"]),
    (lambda: cp.Projection("a", "b", ["L23E"], ["L4E"], init=NAN), ["init=nan", "finite", "init=8.78"]),
    (lambda: cp.Projection("a", "b", ["L23E"], ["L4E"], init=INF), ["init=inf", "finite"]),
    (lambda: cp.Input("mt", init=NAN), ["Input('mt')", "init=nan", "finite"]),
    (lambda: cp.Input("mt", init=INF), ["init=inf", "finite"]),
    (lambda: cp.Projection("a", "b", ["L23E"], ["L4E"], init=0.0, learnable=True),
     ["init=0", "learnable", "init > 0"]),
    (lambda: cp.Input("mt", jitter=-0.5), ["jitter=-0.5", "[0, 1]", "U(1 - jitter, 1 + jitter)"]),
    (lambda: cp.Projection("a", "b", ["L23E"], ["L4E"], jitter=-0.1), ["jitter=-0.1", "[0, 1]"]),
    (lambda: cp.Projection("a", "b", ["L23E"], ["L4E"], jitter=1.5), ["jitter=1.5", "negative magnitudes"]),
    (lambda: cp.Projection("a", "b", [], []), ["_pops=[]", "connect nothing", "['L23E']"]),
    (lambda: cp.Projection("a", "b", [], ["L4E"]), ["source_pops=[]", "at least one"]),
    (lambda: cp.Projection("a", "b", ["L23E"], ["L9X"]), ["target_pops=['L9X']", "'L9X'", "L23E"]),
    (lambda: cp.Projection("a", "b", ["L23E"], ["L4E"], kind="zzz"), ["kind='zzz'", "'feedforward'"]),
])
def test_projection_refused_at_construction(call, fragments):
    msg = _message((ValueError, TypeError), call)
    for f in fragments:
        assert f in msg, (f, msg)


def test_valid_projection_inputs_still_build(dl25):
    """The neighbours of the refused rows: magnitudes >= 0, jitter in [0, 1], the thalamic default."""
    net = cp.ColumnNetwork(dl25, {"mt": ("mt", 2)},
                           [cp.Input("mt"), cp.Input("mt", init=0.0, name="off"),
                            cp.Lateral("mt", init=3.0, jitter=1.0),
                            cp.Projection("mt", "mt", ["L23I"], ["L4E"], "different", False, 2.0, 0.0)],
                           seed=0)
    w = net.projection_weights("projection:mt->mt")["weight"]
    assert len(w) == 2 and all(x == -2.0 for x in w)  # inhibitory source: magnitude 2 nA, sign from L2/3I
    assert all(x == 0 for x in net.projection_weights("off")["weight"])


# -- 3, 5: networks ---------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, fragments", [
    (dict(areas={"mt": ("mt", True)}), ["n_columns", "True", "bool", "('mt', 1)"]),
    (dict(areas={"mt": ("mt", 1)}, dtype=torch.int32), ["dtype=torch.int32", "torch.float64", "torch.float32"]),
    (dict(areas={"mt": ("mt", 1)}, dtype=torch.float16), ["dtype=torch.float16", "torch.float64"]),
    (dict(areas={"mt": ("mt", 1)}, dtype=torch.bfloat16), ["dtype=torch.bfloat16", "torch.float64"]),
    (dict(areas={"mt": ("mt", 1)}, seed="x"), ["seed='x'", "[0, 2**63)", "seed=0"]),
    (dict(areas={"mt": ("mt", 1)}, seed=-1), ["seed=-1", "[0, 2**63)"]),
    (dict(areas={"mt": ("mt", 1)}, seed=2 ** 63), [f"seed={2 ** 63}", "[0, 2**63)"]),
    (dict(areas={"mt": ("mt", 1)}, seed=True), ["seed=True", "[0, 2**63)"]),
])
def test_network_refused_at_construction(dl25, kwargs, fragments):
    msg = _message((ValueError, TypeError), lambda: cp.ColumnNetwork(dl25, **kwargs))
    for f in fragments:
        assert f in msg, (f, msg)


def test_network_float32_and_largest_seed_still_build(dl25):
    net = cp.ColumnNetwork(dl25, {"mt": ("mt", 1)}, dtype=torch.float32, seed=2 ** 63 - 1)
    assert net.W_intra.dtype == torch.float32


# -- 2, 3: simulate and Solver ----------------------------------------------------------------------
def _nearest_dividing(duration, dt_out):
    n = max(1, round(duration / dt_out))
    return duration / n


@pytest.mark.parametrize("args, kwargs, exc, fragments", [
    # a dt_out that does not divide the duration: both named, the nearest dividing one suggested
    ((None, 0.1), dict(dt_out=0.03), ValueError,
     ["dt_out=0.03", "duration=0.1", f"dt_out={_nearest_dividing(0.1, 0.03):.6g}", "0.09 s or 0.12 s"]),
    ((None, 0.05), dict(dt_out=0.02), ValueError,
     ["dt_out=0.02", "duration=0.05", f"dt_out={_nearest_dividing(0.05, 0.02):.6g}"]),
    # a duration shorter than the default output spacing: duration named, and the CLI's --duration
    ((None, 1e-6), {}, ValueError, ["duration=1e-06", "dt_out=0.001", "--duration", "dt_out=1e-06"]),
    ((None, 0.01), dict(dt_out=0.02), ValueError, ["duration=0.01", "dt_out=0.02"]),
    ((None, True), {}, TypeError, ["duration=True", "bool", "duration=1.0"]),
    ((None, "1"), {}, TypeError, ["duration='1'", "str", "duration=1.0"]),
    ((None, torch.tensor([0.05, 0.1])), {}, TypeError, ["duration=tensor", "duration=1.0"]),
    ((None, -0.1), {}, ValueError, ["duration=-0.1", "positive"]),
    ((None, 0.05), dict(dt_out=True), TypeError, ["dt_out=True", "bool"]),
    (([[1.0]], 0.05), {}, TypeError, ["stimulus", "Stimulus", "list", "stimulus=None"]),
    ((None, 0.05), dict(max_rate=-1), ValueError, ["max_rate=-1", "positive", "max_rate=2000.0"]),
    ((None, 0.05), dict(max_rate=NAN), ValueError, ["max_rate=nan", "positive"]),
    ((None, 0.05), dict(max_rate=True), ValueError, ["max_rate=True", "positive"]),
    ((None, 0.05), dict(y0=torch.full((16,), NAN)), ValueError, ["y0", "NaN or inf", "initial_state()"]),
    ((None, 0.05), dict(y0=torch.zeros(16).index_fill_(0, torch.tensor([3]), INF)), ValueError,
     ["y0", "NaN or inf at 1", "initial_state()"]),
    ((None, 0.05), dict(solver="rk4"), TypeError, ["solver", "Solver('rk4'"]),
])
def test_simulate_refused_up_front(dl25, args, kwargs, exc, fragments):
    net = _net(dl25)
    msg = _message(exc, lambda: cp.simulate(net, *args, **kwargs))
    for f in fragments:
        assert f in msg, (f, msg)


def test_simulate_stimulus_fix_names_the_networks_channels(dl25):
    net = cp.ColumnNetwork(dl25, {"mt": ("mt", 2)}, [cp.Input("mt")])
    msg = _message(TypeError, lambda: cp.simulate(net, [[1.0, 2.0]], 0.05))
    assert "Stimulus" in msg and f"[20.0] * {net.n_inputs}" in msg and "list" in msg


def test_simulate_refuses_a_non_network():
    msg = _message(TypeError, lambda: cp.simulate("net", None, 0.05))
    assert "ColumnNetwork" in msg and "'net'" in msg and "str" in msg and "cp.ColumnNetwork(" in msg


def test_simulate_refusals_come_before_any_work(dl25, monkeypatch):
    """The argument checks run before the field is built (nothing is solved or allocated)."""
    net = _net(dl25)
    calls = []
    monkeypatch.setattr(type(net), "field", lambda self, *a, **k: calls.append(1))
    for kwargs in (dict(dt_out=0.03), dict(max_rate=-1.0), dict(y0=torch.full((16,), NAN))):
        with pytest.raises(ValueError):
            cp.simulate(net, None, 0.1, **kwargs)
    assert calls == []


def test_simulate_accepts_a_0d_tensor_duration_and_dividing_dt_out(dl25):
    net = _net(dl25)
    traj = cp.simulate(net, None, torch.tensor(0.05), dt_out=0.01, solver=cp.Solver("euler", step=1e-3))
    assert traj.t.tolist() == pytest.approx([0.0, 0.01, 0.02, 0.03, 0.04, 0.05], abs=1e-15)


def test_simulate_recording_clock_rule(dl25):
    """The documented exception: at least 5 whole dt_out intervals, the last one ends at duration."""
    net = _net(dl25)
    solver = cp.Solver("euler", step=1e-3)
    traj = cp.simulate(net, None, 0.06, dt_out=0.007, solver=solver)
    assert len(traj.t) == math.floor(0.06 / 0.007) + 2 and float(traj.t[-1]) == 0.06
    assert float(traj.t[-2]) == pytest.approx(8 * 0.007)
    traj = cp.simulate(net, None, 0.0105, solver=solver)  # the default 1 ms clock, any duration
    assert float(traj.t[-1]) == 0.0105 and float(traj.t[-2]) == pytest.approx(0.010)


@pytest.mark.parametrize("kwargs, fragments", [
    (dict(max_steps=0), ["max_steps=0", ">= 1", "1_000_000"]),
    (dict(max_steps=-5), ["max_steps=-5", ">= 1"]),
    (dict(max_steps=2.5), ["max_steps=2.5", "whole number"]),
    (dict(max_steps=True), ["max_steps=True", "bool"]),
    (dict(step=True), ["step=True", "bool"]),
    (dict(method="dopri5", rtol=NAN), ["rtol=nan", "positive and finite"]),
    (dict(rtol=1e-6), ["rtol and atol", "adaptive", "fixed step"]),
    (dict(control=cp.ErrorControl()), ["rk4", "FixedStep(step)"]),
    (dict(method="dopri5", control=cp.FixedStep()), ["dopri5", "ErrorControl(rtol, atol)"]),
    (dict(engine="fused"), ["Engine(backend"]),
])
def test_solver_refused_at_construction(kwargs, fragments):
    kwargs = {"method": "rk4", **kwargs}
    msg = _message((ValueError, TypeError), lambda: cp.Solver(**kwargs))
    for f in fragments:
        assert f in msg, (f, msg)


# -- 6: parameters -----------------------------------------------------------------------------------
def _toml(tmp_path, text, name="p.toml"):
    path = tmp_path / name
    path.write_text('base = "dl25"\n' + text)
    return path


@pytest.mark.parametrize("text, fragments", [
    ('[preset]\nname = 5\n', ["[preset] name = 5", "int", "must be a string", 'name = "my_set"']),
    ('[preset]\ndescription = 3.5\n', ["[preset] description = 3.5", "must be a string"]),
    ('[preset]\ndefault_area = true\n', ["[preset] default_area = True", "must be a string", 'default_area = "mt"']),
    ('tau_m = true\n', ["'tau_m' = True", "boolean", 'tau_m = "NUMBER s"']),
    ('[tau_m]\nvalue = false\nunit = "ms"\n', ["'tau_m' = False", "boolean"]),
    ('[kappa]\nvalue = [true, 0, 0, 0, 0, 0, 0, 0]\nunit = "mV*s"\n', ["'kappa'", "boolean", "[kappa] value = ["]),
])
def test_parameter_files_refused(tmp_path, text, fragments):
    path = _toml(tmp_path, text)
    msg = _message(ParameterError, lambda: cp.load_params(path))
    assert str(path) in msg
    assert "True UNIT" not in msg
    for f in fragments:
        assert f in msg, (f, msg)


def test_incompatible_unit_is_shown_once(tmp_path):
    path = _toml(tmp_path, 'tau_m = "20 kg"\n')
    msg = _message(ParameterError, lambda: cp.load_params(path))
    assert "'20 kg'" in msg and "'20 kg' kg" not in msg and "compatible with s" in msg
    path = _toml(tmp_path, '[tau_m]\nvalue = 20\nunit = "kg"\n')
    msg = _message(ParameterError, lambda: cp.load_params(path))
    assert "20 kg" in msg and "20 kg kg" not in msg


@pytest.mark.parametrize("overrides, fragments", [
    ({"tau_m": None}, ["'tau_m' = None", "not a value", "leave tau_m out"]),
    ({"tau_m": True}, ["'tau_m' = True", "boolean"]),
    ({"K_bg": [True] * 8}, ["'K_bg'", "boolean"]),
    ([("tau_m", "20 ms")], ["overrides must be a mapping", "list", "dict(pairs)", "{'tau_m': '20 ms'}"]),
    ("tau_m=20ms", ["overrides must be a mapping", "str"]),
    ({"name": 5}, ["'name' = 5", "must be a string"]),
    ({"default_area": None}, ["'default_area' = None", "must be a string"]),
])
def test_overrides_refused(overrides, fragments):
    msg = _message(ParameterError, lambda: cp.load_preset("dl25", overrides=overrides))
    assert "nan" not in msg
    for f in fragments:
        assert f in msg, (f, msg)


def test_unreadable_parameter_files_name_the_file(tmp_path):
    binary = tmp_path / "bin.toml"
    binary.write_bytes(bytes(range(256)))
    msg = _message(ParameterError, lambda: cp.load_params(binary))
    assert str(binary) in msg and "TOML" in msg
    msg = _message(ParameterError, lambda: cp.load_params(tmp_path))
    assert str(tmp_path) in msg and "directory" in msg
    msg = _message(ParameterError, lambda: cp.load_params(tmp_path / "missing.toml"))
    assert str(tmp_path / "missing.toml") in msg and "does not exist" in msg


def test_g_with_layer_ratio_warns_where_the_user_sets_it(tmp_path):
    """dl25 inherits g from pd14 unused (no warning); a g the user sets there has no effect (warned)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert cp.load_preset("dl25")["inhibition"] == "layer_ratio"
        cp.load_params(_toml(tmp_path, 'g = -5\ninhibition = "g"\n', "with_g.toml"))
        cp.load_preset("dl25", overrides={"g": -5, "inhibition": "g"})
        cp.load_preset("pd14", overrides={"g": -5})
    path = _toml(tmp_path, "g = -5\n")
    with pytest.warns(UserWarning) as rec:
        p = cp.load_params(path)
    msg = str(rec[0].message)
    assert str(path) in msg and "g = -5" in msg and 'inhibition = "layer_ratio"' in msg and 'inhibition = "g"' in msg
    assert p["g"] == -5
    with pytest.warns(UserWarning, match="'inhibition': 'g'"):
        cp.load_preset("dl25", overrides={"g": -6})


def test_unknown_preset_and_area_advise_cli_and_python(dl25):
    msg = _message(ParameterError, lambda: cp.load_preset("dl26"))
    assert "'dl26'" in msg and "--preset FILE.toml" in msg and "load_params(path)" in msg
    msg = _message(ParameterError, lambda: cp.ColumnNetwork(dl25, {"a": ("v9", 1)}))
    assert "'v9'" in msg and "[areas.NAME]" in msg and "--preset" in msg and "overrides={'areas.NAME'" in msg
