"""A term of the model is one edit in colplugin.field: a test-only term moves every backend.

Two terms are added through the Field's extension mechanism (a subclass with one more
:class:`~colplugin.field.Term`), and torch (torchdiffeq), the fused solver and Brian2
(runtime device, numpy target, euler, dt = 0.1 ms) must all move by what a hand
calculation predicts for one Euler step from the same state:

* a constant current I_x onto L2/3E: dV/dt gains R I_x / tau_m, so after one step
  V moves by dt R I_x / tau_m = 1e-4 s * 80 MOhm * 0.5 nA / 0.02 s = 0.2 mV (dL25: R = 80 MOhm,
  tau_m = 20 ms), every other variable stays;
* an extra linear leak -g_x V on every population: V moves by -dt g_x V0 = -1e-4 s * 30/s * V0.
"""

import numpy as np
import pytest
import torch

import colplugin as cp
from colplugin.field import Field, Term

from conftest import one_euler_step, two_column_net

DT = 1e-4  # s
I_X = 0.5  # nA onto L2/3E
G_X = 30.0  # 1/s


def _on_l23e(f):
    v = torch.zeros(f.P, dtype=f.dtype, device=f.device)
    v[0::8] = I_X
    return v


CURRENT = Term("extra_current", "V", "one", lambda f: f.R * _on_l23e(f) / f.tau_m, "R * I_x / tau_m",
               ("I_x : amp (constant)",), lambda f: {"I_x": (_on_l23e(f), "nA")})
LEAK = Term("extra_leak", "V", "state", lambda f: -G_X, "-g_x * V", ("g_x : Hz (constant)",),
            lambda f: {"g_x": (np.full(f.P, G_X), "Hz")})


def _network(term):
    class ExtendedField(Field):
        terms = Field.terms + (term,)

    class ExtendedNetwork(cp.ColumnNetwork):
        field_class = ExtendedField

    base = two_column_net(cp.load_preset("dl25"))
    ext = ExtendedNetwork(base.params, base.areas, base.projections, seed=base.seed)
    return base, ext


def _y0(net):
    y = net.initial_state(1)
    y[0, :net.n_populations] = torch.linspace(-2.0, 12.0, net.n_populations, dtype=y.dtype)  # V0, mV
    y[0, net.n_populations:] = 0.5  # A0, mV
    return y


def _one_step(net, backend):
    return one_euler_step(net, backend, _y0(net), DT)


@pytest.mark.parametrize("term", [CURRENT, LEAK], ids=["current", "leak"])
@pytest.mark.parametrize("backend", ["torchdiffeq", "fused", pytest.param("brian2", marks=pytest.mark.brian2)])
def test_every_backend_moves_with_a_new_term(term, backend):
    base, ext = _network(term)
    P = base.n_populations
    V0 = _y0(base)[0, :P].numpy()
    expected = np.zeros(2 * P)
    if term is CURRENT:
        expected[0:P:8] = DT * 80.0 * I_X / 0.02  # dt R I_x / tau_m = 0.2 mV onto L2/3E
        assert expected.max() == pytest.approx(0.2)
    else:
        expected[:P] = -DT * G_X * V0
    shift = _one_step(ext, backend) - _one_step(base, backend)
    np.testing.assert_allclose(shift, expected, rtol=0, atol=1e-11)


def test_the_term_is_in_every_view():
    base, ext = _network(CURRENT)
    field = ext.field()
    assert "extra_current" in "\n".join(field.brian2().lines)
    model = field.brian2()
    assert model.values["I_x"][0] == pytest.approx(0.5e-9)  # amp
    # the fused solver's drive carries the term: R I_x / tau_m = 2000 mV/s onto L2/3E
    diff = field.fused().drive - base.field().fused().drive
    assert float(diff[0, 0, 0]) == pytest.approx(2000.0)
    assert float(diff.abs().sum()) == pytest.approx(2 * 2000.0)  # two columns, nothing else


def test_torch_and_brian2_agree_with_the_new_term_over_a_run():
    from colplugin.export import to_brian2

    _, ext = _network(LEAK)
    stim = cp.Stimulus([0.0, 0.0625], [[0.0, 0.0], [20.0, 10.0]])  # 2^-4 s: on the grid in float32 too
    run = to_brian2(ext, stim, duration=0.07).run()
    with torch.no_grad():
        traj = cp.simulate(ext, stim, duration=0.07, dt_out=DT, solver=cp.Solver("euler", step=DT))
        fused = cp.simulate(ext, stim, duration=0.07, dt_out=DT, solver=cp.Solver("euler", step=DT, backend="fused"))
    rt = traj.rate[: len(run.t), 0].numpy()
    assert np.max(np.abs(run.rate - rt) / rt) < 1e-11
    torch.testing.assert_close(fused.state, traj.state, rtol=1e-12, atol=1e-10)


def test_a_spec_of_a_network_with_extra_terms_is_never_rebuilt_without_them():
    base, ext = _network(LEAK)
    spec = ext.spec()
    assert spec["network_class"].endswith("ExtendedNetwork") and spec["field_class"].endswith("ExtendedField")
    assert "network_class" not in base.spec()  # a plain network's spec is unchanged
    with pytest.raises(cp.ParameterError, match=r"ExtendedNetwork.from_spec\(spec\)"):
        cp.ColumnNetwork.from_spec(spec)
    again = type(ext).from_spec(spec)  # its own class rebuilds it, terms included
    assert again.field_class is ext.field_class
    torch.testing.assert_close(again.vector_field(_y0(again), None), ext.vector_field(_y0(ext), None))
