"""Figures read at a glance: panels per column, the input pattern in the title, legends that fit."""

import torch

import colplugin as cp
from colplugin.plotting import plot_overlay, plot_rates

from conftest import two_column_net


def test_overlay_has_a_panel_per_column_and_the_input_in_its_title():
    net = two_column_net(cp.load_preset("dl25"))
    stim = cp.Stimulus([0.0, 0.01], [[[0, 0], [20, 5]], [[0, 0], [0, 0]]])
    with torch.no_grad():
        traj = cp.simulate(net, stim, 0.02, dt_out=1e-4, solver=cp.Solver("euler", step=1e-4))
    run = cp.to_brian2(net, stim, 0.02, trial=None).run()
    fig = plot_overlay(traj, run, trial=0)
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in visible] == ["mt[0]", "mt[1]"]
    assert "from 0.01 s: [20, 5] Hz" in fig._suptitle.get_text()
    assert len(fig.legends) == 1 and len(fig.legends[0].get_texts()) == 8  # one legend: the 8 populations


def test_rate_legends_collapse_for_many_columns():
    net = cp.ColumnNetwork(cp.load_preset("dl25"), {"mt": ("mt", 12)})
    with torch.no_grad():
        traj = cp.simulate(net, duration=0.01, dt_out=1e-3)
    fig = plot_rates(traj)
    assert all(ax.get_legend() is None for ax in fig.axes)
    assert any("12 columns" in t.get_text() for t in fig.axes[0].texts)


def test_show_hands_a_package_figure_to_pyplot():
    import matplotlib.pyplot as plt

    from colplugin.plotting import new_figure, show

    fig = new_figure(figsize=(2, 2))
    fig.subplots().plot([0, 1], [0, 1])
    before = set(plt.get_fignums())
    shown = show(fig)  # pyplot now manages it: an interactive session and sphinx-gallery display it
    assert set(plt.get_fignums()) - before
    assert (shown is fig and shown.axes[0].has_data()) or shown.images  # adopted, or a rendering (matplotlib < 3.11)
    plt.close(shown)
