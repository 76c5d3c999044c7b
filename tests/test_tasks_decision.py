"""The reduced Wong-Wang (2006) model behaves as WW06 describes."""

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
