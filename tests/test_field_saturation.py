"""The rate saturation r_max (r = f / (1 + f / r_max)): the same model on every backend."""

import math

import numpy as np
import pytest
import torch

import colplugin as cp
from colplugin.field import transfer_numpy
from colplugin.params import ParameterError
from colplugin.solve.simulate import SimulationError

from conftest import solve_with_gradients, two_area_net, two_column_net

R_MAX_L23E = 1.5  # Hz


def _saturated(dl25, r_max=R_MAX_L23E):
    r = [math.inf] * 8
    r[0] = r_max  # L2/3E
    return dl25.with_overrides({"r_max": r})


def _stim():
    rates = np.array([[[0, 0], [15, 5], [0, 0]], [[0, 0], [2, 30], [10, 10]], [[0, 0], [20, 20], [0, 0]]], float)
    return cp.Stimulus([0.0, 0.0203, 0.05], rates)


def test_presets_do_not_saturate_and_bad_values_are_refused(dl25):
    assert np.all(np.isinf(dl25["r_max"])) and np.all(np.isinf(cp.load_preset("pd14")["r_max"]))
    p = dl25.with_overrides({"r_max": {"value": [0.002] + [math.inf] * 7, "unit": "kHz"}})
    assert p["r_max"][0] == 2.0 and np.isinf(p["r_max"][1])
    for bad in ([0.0] + [math.inf] * 7, [-1.0] + [math.inf] * 7, [math.nan] + [math.inf] * 7,
                [-math.inf] + [math.inf] * 7):
        with pytest.raises(ParameterError, match="r_max"):
            dl25.with_overrides({"r_max": bad})


def test_saturation_survives_a_parameter_file_round_trip(dl25, tmp_path):
    p = _saturated(dl25)
    p.save(tmp_path / "params.json")
    q = cp.load_params(tmp_path / "params.json")
    assert q["r_max"][0] == R_MAX_L23E and np.all(np.isinf(q["r_max"][1:]))


def test_rates_are_f_over_one_plus_f_over_r_max(dl25):
    """The network's and the field's rates against f (scipy's exprel form) saturated by hand."""
    net = two_column_net(_saturated(dl25))
    p = net.params
    y = torch.zeros(1, 32, dtype=torch.float64)
    y[0, :16] = torch.linspace(-5, 40, 16, dtype=torch.float64)  # V; A = 0
    f = transfer_numpy(y[0, :16].numpy(), p["a"], p["b"], p["d"])
    expected = f.copy()
    for i in (0, 8):  # the L2/3E of both columns
        expected[i] = f[i] / (1 + f[i] / R_MAX_L23E)
    np.testing.assert_allclose(net.rates(y)[0].numpy(), expected, rtol=1e-13)
    np.testing.assert_allclose(net.field().rates(y)[0].numpy(), expected, rtol=1e-13)
    assert expected[8] < R_MAX_L23E < f[8]  # V = 29 mV: f far above r_max, the saturated rate just below


@pytest.mark.parametrize("method", ["euler", "rk4"])
@pytest.mark.parametrize("dense", [True, False])
def test_fused_matches_autograd_through_torchdiffeq(dl25, method, dense):
    """States and gradients of the fused solver's saturated stage and slope against torch's autograd."""
    net = two_column_net(_saturated(dl25))
    net.rec_theta.data += 0.3 * torch.randn_like(net.rec_theta)
    step = 2e-4 if method == "euler" else 1e-3
    ref, ref_g, _ = solve_with_gradients(net, cp.Solver(method, step=step), _stim(), 0.08, 0.005)
    run = solve_with_gradients if dense else _solve_sparse
    state, g, _ = run(net, cp.Solver(method, step=step, backend="fused"), _stim(), 0.08, 0.005)
    assert float(net.rates(ref)[:, :, 0].max()) > 0.5 * R_MAX_L23E  # the saturation is in play
    torch.testing.assert_close(state, ref, rtol=1e-11, atol=1e-10)
    for a, b in zip(g, ref_g):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def _solve_sparse(net, *args):
    """solve_with_gradients with the network's field forced to the sparse form (blocks plus edges)."""
    orig = net.field

    def sparse_field(*args, **kwargs):
        kwargs["dense"] = False
        return orig(*args, **kwargs)

    net.field = sparse_field
    try:
        return solve_with_gradients(net, *args)
    finally:
        del net.field


def test_gradcheck_of_the_saturated_fused_backward(dl25):
    net = two_column_net(_saturated(dl25, r_max=0.5))
    theta = net.rec_theta.detach().clone()
    del net.rec_theta
    stim = cp.Stimulus([0.0, 0.004], [[0, 0], [20, 5]])
    solver = cp.Solver("dopri5", backend="fused")

    def output(th):
        net.rec_theta = th
        return cp.simulate(net, stim, duration=0.008, dt_out=0.004, solver=solver).rate[1:]

    assert torch.autograd.gradcheck(output, (theta.clone().requires_grad_(),))


def test_the_default_solver_saturates_as_torchdiffeq(dl25):
    """simulate's default (the fused solver, compiled kernel where it builds) on a saturated field:
    torchdiffeq's dopri5 at tight tolerances to 1e-6. The kernel against the eager loop to rounding:
    tests/test_solve_compiled.py."""
    net = two_column_net(_saturated(dl25))
    stim = cp.Stimulus([0.0], [[20, 10]])
    auto = cp.simulate(net, stim, 0.02, dt_out=0.01, solver=cp.Solver("dopri5", rtol=1e-9, atol=1e-9, backend="fused"))
    ref = cp.simulate(net, stim, 0.02, dt_out=0.01, solver=cp.Solver("dopri5", rtol=1e-9, atol=1e-9))
    assert float(ref.rate[..., 0].max()) > 0.5 * R_MAX_L23E
    torch.testing.assert_close(auto.rate, ref.rate, rtol=1e-6, atol=1e-8)


def test_a_saturated_population_is_not_a_runaway(dl25):
    """Strong L2/3E self-excitation: f(V - A) of L2/3E passes max_rate, its saturated rate cannot."""
    net = cp.ColumnNetwork(_saturated(dl25, r_max=2.0), {"mt": ("mt", 1)},
                           [cp.Input("mt"), cp.Lateral("mt", init=20000.0, jitter=0.0)], seed=0)
    stim = cp.Stimulus([0.0], [[20.0]])
    with torch.no_grad():
        traj = cp.simulate(net, stim, 0.1, dt_out=0.01, max_rate=500.0)
    p = net.params
    f = transfer_numpy((traj.V - traj.A)[..., 0].numpy(), p["a"], p["b"], p["d"])
    assert f.max() > 500.0  # unsaturated, this would be a runaway
    assert float(traj.rate[..., 0].max()) < 2.0
    plain = cp.ColumnNetwork(dl25, {"mt": ("mt", 1)}, [cp.Input("mt"), cp.Lateral("mt", init=20000.0, jitter=0.0)],
                             seed=0)
    with pytest.raises(SimulationError, match="runaway"), torch.no_grad():
        cp.simulate(plain, stim, 0.1, dt_out=0.01, max_rate=500.0)


@pytest.mark.brian2
def test_brian2_export_saturates_as_torch(dl25):
    from colplugin.export import to_brian2

    net = two_column_net(_saturated(dl25, r_max=1.0))
    stim = cp.Stimulus([0.0, 0.0625], np.array([[[0, 0], [20, 10]], [[0, 0], [3, 30]]], float))
    run = to_brian2(net, stim, duration=0.08, trial=None).run()
    with torch.no_grad():
        traj = cp.simulate(net, stim, duration=0.08, dt_out=1e-4, solver=cp.Solver("euler", step=1e-4))
    rb, rt = run.trial_rates, traj.rate[: len(run.t)].numpy()
    assert rt[..., 0].max() > 0.5
    assert float(np.max(np.abs(rb - rt) / np.abs(rt))) < 1e-11


def test_the_spiking_twin_refuses_a_saturated_network(dl25):
    from colplugin.spiking import spiking_twin

    with pytest.raises(ValueError, match="saturates the rates of L23E.*1.5 Hz"):
        spiking_twin(two_column_net(_saturated(dl25)), scale=0.01)


def test_sparse_two_area_network_saturates_alike(dl25):
    """A sparse field with edges, eager: dopri5 against torchdiffeq's dopri5 at tight tolerances."""
    net = two_area_net(_saturated(dl25, r_max=0.8))
    stim = cp.Stimulus([0.0], [[20.0, 5.0, 30.0]])
    kw = dict(rtol=1e-10, atol=1e-10)
    a = cp.simulate(net, stim, 0.03, dt_out=0.01, solver=cp.Solver("dopri5", backend="fused", **kw))
    b = cp.simulate(net, stim, 0.03, dt_out=0.01, solver=cp.Solver("dopri5", **kw))
    assert float(b.rate[..., net.index("a", 0, "L23E")].max()) > 0.2
    torch.testing.assert_close(a.rate, b.rate, rtol=1e-7, atol=1e-9)


def test_every_population_saturated_runs_and_stays_below_r_max(dl25):
    """No population left for the runaway watch: still no false alarm, on both loops."""
    net = two_column_net(dl25.with_overrides({"r_max": [100.0] * 8}))
    stim = cp.Stimulus([0.0], [[20, 10]])
    for solver in (cp.Solver("rk4", step=1e-4), cp.Solver("dopri5", backend="fused")):
        with torch.no_grad():
            traj = cp.simulate(net, stim, 0.02, dt_out=0.01, solver=solver)
        assert 0 < float(traj.rate.max()) < 100.0


def test_parameter_files_stay_standard_json(dl25):
    import json

    for p in (dl25, _saturated(dl25)):
        text = json.dumps(p.to_dict(), allow_nan=False)  # no Infinity tokens
        assert cp.Params.from_dict(json.loads(text)) == p


def test_the_lif_mean_field_analysis_refuses_a_saturated_set(dl25):
    from colplugin.analysis.transfer import dmf_fixed_point

    with pytest.raises(ParameterError, match="r_max"):
        dmf_fixed_point(_saturated(dl25))
