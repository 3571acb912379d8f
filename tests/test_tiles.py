"""The bookkeeping runs over a layer in tiles of whole units (``attribution/tiles.py``): the adaptive rule's final
sums and the fixed rules' consecutive-node sums. However a layer is cut, the values and error bars are the same to
rounding, and an example's numbers under the adaptive rule stay those of the example alone."""

import pytest
import torch
import torch.nn as nn

import unitscope as us

from nets import cnn
from test_adaptive_batching import FIELDS, _run, _same
from unitscope.attribution import adaptive, engine, tiles


def _smooth_net():
    torch.manual_seed(2)
    return nn.Sequential(nn.Linear(6, 24), nn.Tanh(), nn.Linear(24, 24), nn.GELU(), nn.Linear(24, 3)).double().eval()


def _spy_tiles(monkeypatch):
    """The number of tiles of every layer ``final`` cuts, as a list that fills while the rule runs."""
    counts, real = [], adaptive._tiles

    def spy(buf, count):
        dim, spans = real(buf, count)
        counts.append(len(spans))
        return dim, spans

    monkeypatch.setattr(adaptive, "_tiles", spy)
    return counts


def _close(a, b):
    assert torch.equal(a.n_evals, b.n_evals)
    for field in FIELDS:
        for name, parts in getattr(a, field).items():
            for p, q in zip(parts, getattr(b, field)[name]):
                torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("case", ["cnn", "smooth"])
def test_one_unit_per_tile_gives_the_numbers_of_one_tile(monkeypatch, case):
    """A tile of a single channel or neuron against the whole layer at once: the Romberg step's ratio is summed over
    the tiles (the smooth net's layers take the step), the per-unit sums keep their positions together."""
    if case == "cnn":
        torch.manual_seed(0)
        net, x, layers = cnn(3).double().eval(), torch.randn(3, 3, 8, 8, dtype=torch.float64), ["2", "6", "10"]
    else:
        net, x, layers = _smooth_net(), torch.randn(4, 6, dtype=torch.float64), ["1", "3"]
    kw = dict(budget=65, rtol=0.0, watch=4)
    monkeypatch.setattr(tiles, "TILE_BYTES", 1 << 40)
    whole = _run(net, x, layers, 1, **kw)
    monkeypatch.setattr(tiles, "TILE_BYTES", 1)
    assert len(adaptive._tiles(torch.zeros(1, 65, 24), 65)[1]) == 24  # one unit per tile
    counts = _spy_tiles(monkeypatch)
    _close(whole, _run(net, x, layers, 1, **kw))
    assert counts and min(counts) > 1
    if case == "smooth":  # the step applied: the values are not the trapezoid's
        spy = []
        real = adaptive._romberg_apply
        monkeypatch.setattr(adaptive, "_romberg_apply", lambda *a: spy.append(a[3] / a[4]) or real(*a))
        _run(net, x, layers, 1, **kw)
        assert spy and min(float(r.min()) for r in spy) <= adaptive.SMOOTH


def test_small_tiles_keep_an_example_alone_the_same(monkeypatch):
    monkeypatch.setattr(tiles, "TILE_BYTES", 4096)
    torch.manual_seed(0)
    net, x = cnn(3).double().eval(), torch.randn(4, 3, 8, 8, dtype=torch.float64)
    layers, kw = ["2", "6", "10"], dict(budget=40, rtol=1e-9, watch=4)
    counts = _spy_tiles(monkeypatch)
    together = _run(net, x, layers, 2, **kw)
    assert counts and max(counts) > 1
    for e in range(4):
        _same(together, _run(net, x[e : e + 1], layers, 2, **kw), [e])


def test_tiles_cover_the_layer_in_whole_units():
    for shape, dim in (((2, 9, 5, 3, 3), 2), ((2, 9, 7, 11), 3), ((2, 9, 13), 2)):
        got_dim, spans = adaptive._tiles(torch.zeros(shape), 9)
        assert got_dim == dim
        assert spans[0][0] == 0 and sum(size for _, size in spans) == shape[dim]
        assert all(a + n == b for (a, n), (b, _) in zip(spans, spans[1:]))


@pytest.mark.parametrize("method", ["riemann_trapezoid", "riemann_left", "gausslegendre"])
def test_fixed_rules_in_tiles_of_one_unit(monkeypatch, method):
    """Conductance, internal influence and their error bars with a tile per channel against one tile per layer, the
    path cut into chunks of 7 rows (nodes carried across chunks, tiled with the chunk's)."""
    torch.manual_seed(0)
    net, x = cnn(3).double().eval(), torch.randn(3, 3, 8, 8, dtype=torch.float64)
    kw = dict(n_steps=20, method=method, internal_batch_size=7, progress=False, path=us.PathConfig(gap_warning=None))

    def run():
        return us.attribute(net, x, ["2", "6"], scores=("conductance", "internal_influence"), **kw)

    monkeypatch.setattr(tiles, "TILE_BYTES", 1 << 40)
    whole = run()
    monkeypatch.setattr(tiles, "TILE_BYTES", 1)
    counts, real = [], engine.tiles
    monkeypatch.setattr(engine, "tiles", lambda t, count: counts.append(len(real(t, count)[1])) or real(t, count))
    cut = run()
    assert counts and min(counts) > 1
    for score in ("conductance", "internal_influence"):
        for layer in ("2", "6"):
            pairs = [(whole[score][layer], cut[score][layer])]
            pairs += [(getattr(whole[score], f)[layer], getattr(cut[score], f)[layer]) for f in ("error", "unit_error")]
            for a, b in pairs:
                torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-15)
