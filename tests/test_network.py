import numpy as np
import pytest
import torch

import colplugin as cp
from colplugin.params.names import SIGNS

from conftest import two_column_net


def test_layout_and_names(dl25):
    net = cp.ColumnNetwork(dl25, {"lower": ("mt", 2), "upper": ("mt", 1)},
                           [cp.Input("lower", channels=[0, 1], to="all", learnable=True),
                            cp.Feedforward("lower", "upper")])
    assert net.n_populations == 24 and net.n_inputs == 2
    assert net.index("upper", 0, "L4E") == 18
    assert net.channel_names[18] == "upper[0].L4E"
    ff = net.projection_weights("feedforward:lower->upper")
    assert len(ff["weight"]) == 4  # 2 source columns x (L4E, L4I)
    assert set(ff["source"]) == {"lower[0].L23E", "lower[1].L23E"}
    # the split rule: lower columns get N/2, the single upper column the full N. By hand,
    # K = ln(1 - P) / ln(1 - 1/(N N)) / N with PD14's P[L23E, L23E] = 0.1009 and MT's
    # N_L23E = 60606: 6446.1 (full N), 3223.1 (N/2 = 30303)
    K_low = net.W_intra[0, 0, 0] / 0.0878
    K_up = net.W_intra[1, 0, 0] / 0.0878
    assert float(K_low) == pytest.approx(3223.1, abs=0.05)
    assert float(K_up) == pytest.approx(6446.1, abs=0.05)


def test_dale_law_survives_arbitrary_updates(dl25):
    net = cp.ColumnNetwork(dl25, {"a": ("mt", 3)},
                           [cp.Lateral("a"), cp.Projection("a", "a", ["L23I", "L5E"], ["L4E"], "different")],
                           seed=1)
    gen = torch.Generator().manual_seed(0)
    opt = torch.optim.SGD(net.learnable_parameters(), lr=10.0)
    for _ in range(5):
        for p in net.learnable_parameters():
            p.grad = torch.randn(p.shape, generator=gen, dtype=p.dtype) * 100
        opt.step()
        w = net._weights("rec")
        src_sign = torch.as_tensor(SIGNS)[net.rec_src % 8]
        assert torch.all(w * src_sign >= 0)
        assert torch.any(w < 0) and torch.any(w > 0)


def test_storage_grows_with_connections_not_squared(dl25):
    def stored(n):
        src = np.repeat(np.arange(n), 10)
        pairs = np.stack([src, (src + np.tile(np.arange(1, 11), n)) % n], 1)
        net = cp.ColumnNetwork(dl25, {"a": ("mt", n)}, [cp.Lateral("a", columns=pairs)])
        return sum(t.numel() for t in list(net.buffers()) + list(net.parameters()))
    s1, s2 = stored(200), stored(2000)
    assert s2 / s1 == pytest.approx(10, rel=0.05)  # linear, not 100x


def test_dense_and_sparse_couplings_agree(dl25):
    net = two_column_net(dl25)
    y = net.initial_state(3, V=5.0)
    y = y + torch.linspace(0, 3, y.shape[1], dtype=y.dtype)
    u = torch.tensor([[10.0, 0.0], [0.0, 20.0], [5.0, 5.0]], dtype=torch.float64)
    dense = net.vector_field(y, u, dense=True)
    sparse = net.vector_field(y, u, dense=False)
    assert net.field().dense and not net.field(dense=False).dense
    torch.testing.assert_close(dense, sparse, rtol=1e-12, atol=1e-9)


def test_vector_field_matches_independent_numpy(dl25):
    from conftest import numpy_column_rhs

    net = cp.ColumnNetwork(dl25, {"mt": ("mt", 1)}, [cp.Input("mt")])
    s = np.linspace(-5, 12, 16)
    u = 12.0
    ext = np.zeros(8)
    ext[2], ext[3] = 295 * 0.0878 * u, 186 * 0.0878 * u
    rhs, _ = numpy_column_rhs(dl25, dl25.area_sizes("mt").astype(float), ext)
    ours = net.vector_field(torch.tensor(s).unsqueeze(0), torch.tensor([[u]], dtype=torch.float64))[0]
    np.testing.assert_allclose(ours.numpy(), rhs(0.0, s), rtol=1e-10)


@pytest.mark.parametrize("kwargs, fragment", [
    (dict(areas={"a": ("v9", 1)}), "unknown area 'v9'"),
    (dict(areas={"a": ("mt", 0)}), "positive integer"),
    (dict(areas={"a": ("mt", 2)}, projections=[cp.Feedforward("a", "b")]), "unknown area 'b'"),
    (dict(areas={"a": ("mt", 2)}, projections=[cp.Lateral("a", columns=[[0, 5]])]), "out of range"),
    (dict(areas={"a": ("mt", 2)}, projections=[cp.Lateral("a"), cp.Lateral("a")]), "unique"),
])
def test_bad_networks_raise(dl25, kwargs, fragment):
    with pytest.raises((ValueError, KeyError)) as info:
        cp.ColumnNetwork(dl25, **kwargs)
    assert fragment in str(info.value)


def test_spec_round_trip(dl25):
    net = two_column_net(dl25, seed=3)
    again = cp.ColumnNetwork.from_spec(net.spec())
    for a, b in zip(net.state_dict().values(), again.state_dict().values()):
        torch.testing.assert_close(a, b)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_runs_on_cuda(dl25):
    net = two_column_net(dl25, dtype=torch.float32).to("cuda")
    traj = cp.simulate(net, cp.Stimulus.constant([10.0, 0.0]), duration=0.05)
    assert traj.state.is_cuda and torch.isfinite(traj.state).all()


def test_column_indices_are_never_counted_from_the_end(dl25):
    net = cp.ColumnNetwork(dl25, {"mt": ("mt", 2)}, [cp.Input("mt")])
    assert net.index("mt", 1, "L23E") == 8
    for column in (-1, 2):
        with pytest.raises(IndexError, match=r"0\.\.1"):
            net.index("mt", column, "L23E")
    with pytest.raises(TypeError, match="integer"):
        net.index("mt", 0.5, "L23E")


def test_a_numpy_integer_seed_builds_the_same_network():
    import colplugin as cp

    build = lambda seed: cp.ColumnNetwork(cp.load_preset("dl25"), {"a": ("mt", 2)},  # noqa: E731
                                          [cp.Input("a", learnable=True), cp.Lateral("a", learnable=True)], seed=seed)
    a, b = build(np.int64(3)), build(3)
    assert a.seed == 3 and type(a.seed) is int
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
