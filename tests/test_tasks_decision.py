"""The reduced Wong-Wang (2006) model behaves as WW06 describes."""

import pytest
import torch

from colplugin.tasks.decision import wong_wang


def _run(mu, sigma=0.0, seed=0):
    return wong_wang(torch.tensor(mu, dtype=torch.float64), 3.0, stim_on=0.5, stim_off=2.0, sigma=sigma,
                     dt_out=0.01, generator=torch.Generator().manual_seed(seed))


def test_resting_rates_before_stimulus():
    r = _run([[30.0, 30.0]])["rate"]
    # spontaneous state ~1-2 Hz (WW06 Fig. 2)
    assert 0.5 < float(r[40, 0, 0]) < 3.0


def test_winner_take_all_for_unequal_inputs():
    r = _run([[32.0, 28.0], [28.0, 32.0]])["rate"]
    end_stim = 199
    assert r[end_stim, 0, 0] > 15 > r[end_stim, 0, 1]  # pool 1 reaches the 15 Hz decision threshold
    assert r[end_stim, 1, 1] > 15 > r[end_stim, 1, 0]


def test_persistent_activity_after_input_ends():
    r = _run([[32.0, 28.0]])["rate"]
    assert r[-1, 0, 0] > 15 and r[-1, 0, 1] < 5  # working memory: winner stays high 1 s later


def test_no_decision_for_equal_inputs_without_noise():
    r = _run([[30.0, 30.0]])["rate"]
    torch.testing.assert_close(r[..., 0], r[..., 1], rtol=0, atol=0)
    assert r[-1, 0, 0] < 5  # returns to the spontaneous state


def test_noise_breaks_the_symmetry():
    out = _run([[30.0, 30.0]] * 8, sigma=0.02, seed=3)["rate"]
    end = out[199]
    winners = (end[:, 0] > end[:, 1]).sum()
    assert torch.all(end.max(1).values > 15)  # every noisy trial decides
    assert 0 < winners < 8  # and both pools win sometimes


def test_dopri5_agrees_with_fine_euler_steps():
    """Second method: the noiseless default (dopri5) against Euler steps of 20 us."""
    mu = torch.tensor([[32.0, 28.0], [25.0, 26.0]], dtype=torch.float64)
    kw = dict(stim_on=0.3, stim_off=1.0, sigma=0.0, dt_out=0.01)
    a = wong_wang(mu, 1.5, **kw)["rate"]
    e = wong_wang(mu, 1.5, method="euler", dt=2e-5, **kw)["rate"]
    assert a.shape == e.shape == (151, 2, 2)
    torch.testing.assert_close(a, e, rtol=0, atol=5e-3)  # Hz; Euler's error is O(dt)


def test_decision_times_by_hand():
    import numpy as np

    from colplugin.tasks.decision import decision_times

    t = np.arange(0, 1.0, 0.1)
    r = np.zeros((10, 3, 2))
    r[4:, 0, 0] = 1.0  # crosses at 0.4 s
    r[7:, 1, 1] = 1.0  # crosses at 0.7 s, after t_off = 0.6 s: no decision
    got = decision_times(r, t, 0.2, 0.6, 0.75)
    assert got[0] == pytest.approx(0.2) and np.isnan(got[1]) and np.isnan(got[2])


def test_metrics_of_a_perfect_fit(monkeypatch):
    """Columns that output exactly the WW targets score nrmse 0, rank correlation 1, all winners right."""
    import importlib

    from colplugin.tasks import Decision
    from colplugin.tasks.decision import decision_metrics

    task = Decision()
    batch = task.held_out(12)
    module = importlib.import_module("colplugin.tasks.decision")

    class Fake:
        t = torch.arange(batch.target.shape[0], dtype=torch.float64) * task.dt_out

    monkeypatch.setattr(module, "simulate", lambda *a, **k: Fake())
    monkeypatch.setattr(module, "_asymmetric", lambda net, factor: net)  # the fake's output has no weights
    monkeypatch.setattr(Decision, "output", lambda self, traj: batch.target)
    m = decision_metrics(None, task, n=12)
    assert m["nrmse"] == 0.0 and m["winner_correct"] == 1.0 and m["persistence"] == 1.0
    assert m["persistence_asymmetric"] == 1.0
    assert m["decided_pairs"] >= 3 and m["decision_time_rank_correlation"] == pytest.approx(1.0)


def test_nrmse_floor_single_rest_by_hand():
    """Target 0 before and after a stimulus of 0.5 s, a winner at 1 Hz after it: the best rest is by hand."""
    import numpy as np

    from colplugin.tasks.decision import nrmse_floor_single_rest

    t = np.arange(0, 1.5, 0.1)  # 15 samples: 5 pre, 5 stimulus, 5 post
    target = np.zeros((15, 1, 2))
    target[5:10, 0, 0] = 2.0  # the stimulus phase (matched exactly by the bound)
    target[10:, 0, 0] = 1.0  # the winner stays at 1 Hz
    got = nrmse_floor_single_rest(target, t, 0.5, 1.0)
    # outside the stimulus: 20 samples, 5 of them at 1 Hz, the rest 0 -> best constant 0.25 Hz,
    # squared error 5 * 0.75^2 + 15 * 0.25^2 = 3.75 over all 30 values; range 2 Hz
    assert got["rest_hz"] == pytest.approx(0.25, abs=1e-3)
    assert got["nrmse"] == pytest.approx(np.sqrt(3.75 / 30) / 2.0, rel=1e-6)


def test_decision_dynamics_without_lateral_weights_nothing_persists():
    """No lateral coupling: the stimulated column falls back to the rest rate (a single attractor), and
    the membrane time scales are close to tau_m (20 ms, preset dl25) while adaptation is tau_a (10 s)."""
    from colplugin.tasks import Decision
    from colplugin.tasks.decision import decision_dynamics

    task = Decision()
    net = task.build_network(seed=0)
    d = decision_dynamics(net, task, n=8, cross_nA=(0.0,), self_nA=(0.0,))
    (row,) = d["persistence_scan"]
    assert not row["persists"] and row["rest_symmetric"]
    assert row["post_end_hz"][0] == pytest.approx(row["rest_hz"], rel=0.05)
    membrane = d["time_constants_ms"]["rest"]["membrane"]
    assert 20.0 <= membrane[0] < 40.0 and d["time_constants_ms"]["rest"]["adaptation"][0] == pytest.approx(1e4)
    assert d["max_persistent_winner_hz"] == 0.0


def test_lateral_columns_option():
    from colplugin.tasks import Decision

    net = Decision(lateral_columns="all").build_network(seed=0)
    targets = net.projection_weights("lateral:mt:cross")["target"]
    assert sorted(targets) == ["mt[0].L23I", "mt[0].L23I", "mt[1].L23I", "mt[1].L23I"]
    assert Decision().build_network(seed=0).projection_weights("lateral:mt:cross")["target"] == \
        ["mt[1].L23I", "mt[0].L23I"]
    with pytest.raises(ValueError, match="lateral_columns"):
        Decision(lateral_columns="same")


def test_resume_refuses_other_task_options(tmp_path):
    """A decision run trained deterministically cannot be resumed as the stochastic variant."""
    import colplugin as cp
    from colplugin.tasks import Decision
    from colplugin.training.trainer import CheckpointError

    task = Decision()
    net = task.build_network(seed=0)
    cp.train(net, task, updates=1, out=tmp_path, progress=False, evaluate=False)
    (tmp_path / "metrics.json").unlink()  # as if interrupted
    noisy = Decision(noise_mV=0.5)
    with pytest.raises(CheckpointError, match="noise_mV"):
        cp.train(noisy.build_network(seed=0), noisy, updates=2, out=tmp_path, progress=False, resume=True,
                 evaluate=False)


def test_figure2_starts_at_rest_and_normalises_each_layer(tmp_path):
    import numpy as np

    from colplugin.params.names import POPULATIONS
    from colplugin.solve.fixed_points import resting_state
    from colplugin.tasks.decision import Decision, figure2

    task = Decision()
    net = task.build_network(seed=0)
    n = figure2(net, task, out=tmp_path, evidence=np.array([0.0, 10.0, 20.0]))
    rates = np.asarray(n["rates_hz"])  # (T, levels, 2 columns, 4 E populations)
    t = np.asarray(n["t_s"])
    pre = t < task.phase
    # from the rest state: no transient before the stimulus (a zero state gives Hz-sized jumps at t = 0)
    assert np.max(np.abs(rates[pre] - rates[0])) < 1e-6
    layers = np.asarray(n["layer_rates_normalised"])
    assert layers.shape == (len(t), 3, 2, 4)
    np.testing.assert_allclose(layers.min(axis=(0, 1, 2)), 0.0, atol=1e-12)
    np.testing.assert_allclose(layers.max(axis=(0, 1, 2)), 1.0, atol=1e-12)
    # a layer's rate is the mean of its E and I population, recomputed here from a simulation of the same trials
    lo, hi = np.asarray(n["layer_rate_range_hz"]).T
    with torch.no_grad():
        rest = resting_state(net)
    i23e, i23i = (net.index("mt", 0, POPULATIONS.index(p)) for p in ("L23E", "L23I"))
    r_rest = net.rates(rest)[0]
    expected = 0.5 * (float(r_rest[i23e]) + float(r_rest[i23i]))
    assert layers[0, 0, 0, 0] == pytest.approx((expected - lo[0]) / (hi[0] - lo[0]), abs=1e-6)
    assert (tmp_path / "figure2.png").is_file() and (tmp_path / "figure2_raw.png").is_file()


def test_gating_option_maps_wong_wang_onto_the_task_axes():
    """gating_parameters: tau_G = tau_S / time_scale, gamma_G = gamma * time_scale * rate_scale (0.1 s / 10 and
    0.641 * 10 * 20, by hand), so gamma tau r at the scaled rates is Wong & Wang's at theirs; --gating itself
    uses the fitted slow gating (FITTED_GATING) unless the parameters bring their own."""
    from colplugin.cli import build_parser
    from colplugin.params import load_preset
    from colplugin.tasks.decision import FITTED_GATING, Decision, gating_parameters

    ww = gating_parameters(Decision())
    assert ww["tau_G"] == pytest.approx(0.01) and ww["gamma_G"] == pytest.approx(128.2)
    assert ww["gamma_G"] * ww["tau_G"] * (40.0 / 20) == pytest.approx(0.641 * 0.1 * 40.0)
    assert Decision().build_network(seed=0).gating is None  # the paper's network is ungated
    net = Decision(gating=True).build_network(seed=0)
    assert net.gating.tau == pytest.approx(FITTED_GATING["tau_G"])
    assert net.gating.gamma * net.gating.tau == pytest.approx(1.0)  # G saturates above 1 Hz (WW's 20 Hz / 20)
    own = load_preset("dl25").with_overrides({"gating": "inter_column", **ww})
    assert Decision(gating=True).build_network(own, seed=0).gating.tau == pytest.approx(0.01)  # the user's wins
    args = build_parser().parse_args(["train", "decision", "--gating"])
    assert Decision.from_args(args).gating is True
    assert Decision.from_args(build_parser().parse_args(["train", "decision"])).gating is False
    assert Decision.from_config(Decision(gating=True).config()).gating is True  # a checkpoint rebuilds it
    with pytest.raises(ValueError, match="gating"):
        Decision(gating="yes")


def test_gated_start_holds_the_stronger_inputs_winner_with_a_2_percent_asymmetry():
    """The gated network's start (fitted gating and weights): for inputs 20 / 16 Hz either way round, the
    column with the stronger input wins by the end of the stimulus and stays above Wong-Wang's decision
    threshold (15 Hz / 20) after it while the other stays below, also with column 0's self-excitation x1.02 or
    x0.98. Wong & Wang's 10 ms gating on the task's axes, with the same weights, does not."""
    import importlib

    from colplugin.params import load_preset
    from colplugin.solve.simulate import simulate
    from colplugin.tasks.decision import Decision, gating_parameters

    module = importlib.import_module("colplugin.tasks.decision")
    task = Decision(gating=True)
    mu = torch.tensor([[20.0, 16.0], [16.0, 20.0]], dtype=torch.float64)
    threshold = 15.0 / task.rate_scale
    k_end = int(round(2 * task.phase / task.dt_out)) - 1

    def holds(net) -> bool:
        with torch.no_grad():
            y = task.output(simulate(net, task.stimulus(mu), task.duration, dt_out=task.dt_out, solver=task.solver))
        at_offset, end = y[k_end], y[-1]
        return (at_offset.argmax(1).tolist() == [0, 1] and end.argmax(1).tolist() == [0, 1]
                and min(float(end[0, 0]), float(end[1, 1])) >= threshold
                and max(float(end[0, 1]), float(end[1, 0])) < threshold)

    net = task.build_network(seed=0)
    for probe in (net, module._asymmetric(net, 1.02), module._asymmetric(net, 0.98)):
        assert holds(probe)
    fast = task.build_network(load_preset("dl25").with_overrides({"gating": "inter_column",
                                                                   **gating_parameters(task)}), seed=0)
    assert not holds(fast)  # 10 ms gating: one column wins before the stimulus, whatever the inputs


def test_spontaneous_decision_only_where_the_undecided_state_is_a_saddle():
    """Without input, the paper's network stays at its stable rest for the whole window (None); the gated one,
    whose undecided state is a saddle (a positive eigenvalue at the fixed point Newton finds after one phase),
    picks a winner by itself, later than the stimulus would come (one phase)."""
    import importlib

    import numpy as np

    from colplugin.solve.fixed_points import jacobian, resting_state
    from colplugin.tasks.decision import Decision

    module = importlib.import_module("colplugin.tasks.decision")
    paper = Decision()
    assert module._spontaneous_decision(module._asymmetric(paper.build_network(seed=0), 1.02), paper, 0.75) is None
    task = Decision(gating=True)
    net = module._asymmetric(task.build_network(seed=0), 1.02)
    with torch.no_grad():
        undecided = resting_state(net, settle=task.phase)
        decided = resting_state(net, settle=4.0)
    growth = [float(np.linalg.eigvals(jacobian(net, y, None).numpy()).real.max()) for y in (undecided, decided)]
    assert growth[0] > 0 > growth[1]  # a saddle, then the stable state it decides into
    when = module._spontaneous_decision(net, task, 15.0 / task.rate_scale)
    assert when is not None and when > task.phase


def test_a_2_percent_asymmetry_scales_column_0s_self_excitation_only():
    import importlib

    from colplugin.tasks import Decision

    net = Decision().build_network(seed=0)
    probe = importlib.import_module("colplugin.tasks.decision")._asymmetric(net, 1.02)
    a, b = net.projection_weights("lateral:mt:self"), probe.projection_weights("lateral:mt:self")
    for src, wa, wb in zip(a["source"], a["weight"], b["weight"]):
        assert wb == pytest.approx(wa * (1.02 if src.startswith("mt[0].") else 1.0), rel=1e-12)
    cross_a, cross_b = (x.projection_weights("lateral:mt:cross")["weight"] for x in (net, probe))
    assert list(cross_a) == list(cross_b)
