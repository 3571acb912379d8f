"""Channel slices (core.slices): a unit's channel of a conv layer computed from the layer's input alone gives
the full layer's numbers; where the layer is not provably that, or the model changes it (a hook), the full layer is
used — the results are those of the full layer either way."""

import pytest
import torch
import torch.nn as nn

import unitscope as us
import unitscope.attribution.neuron as neuron_mod
from unitscope.core.sites import resolve
from unitscope.core.slices import ChannelSlice, channel_slice, full_layers
from unitscope.synthesis.generators import DecoderGenerator
from unitscope.synthesis.inverse_many import sample_inverse_sets


def _cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 6, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(6, 8, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(8 * 36, 5),
        nn.Tanh(),
        nn.Linear(5, 3),
    ).eval()


class Custom(nn.Module):
    """A forward that does not run its children in their order: no slice can be proven from the structure."""

    def __init__(self):
        super().__init__()
        self.conv, self.act = nn.Conv2d(1, 4, 3), nn.ReLU()

    def forward(self, x):
        return self.act(self.conv(x) + 1.0)


def _slice(net, name):
    return channel_slice(net, resolve(net, [name])[0])


def test_which_layers_get_a_slice():
    net = _cnn()
    assert _slice(net, "1").producer is net[0] and _slice(net, "3").producer is net[2]
    assert _slice(net, "2").producer is net[2] and _slice(net, "2").act is None  # the conv itself
    assert _slice(net, "6") is None and _slice(net, "5") is None  # linear layers: none
    assert _slice(net, "4") is None  # flatten: not a channel
    bn = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU())
    assert _slice(bn, "2") is None  # its input is the BN's
    assert _slice(Custom(), "act") is None
    grouped = nn.Sequential(nn.Conv2d(4, 4, 3, groups=2), nn.ReLU())
    assert _slice(grouped, "1") is None
    assert channel_slice(net, resolve(net, ["3"], use_input=True)[0]) is None


@pytest.mark.parametrize(
    "conv",
    [
        nn.Conv1d(3, 7, 3, stride=2, padding=1),
        nn.Conv2d(3, 7, 3, dilation=2),
        nn.Conv2d(3, 7, 3, padding=1, padding_mode="reflect"),
        nn.Conv3d(3, 7, 2, stride=(1, 2, 1)),
    ],
)
def test_slice_values_are_the_layers_channels(conv):
    torch.manual_seed(1)
    net = nn.Sequential(conv, nn.GELU()).eval()
    x = torch.randn(4, 3, *([6] * (conv.weight.dim() - 2)))
    sl = _slice(net, "1")
    full = net(x)
    ch = torch.tensor([6, 0, 3])
    torch.testing.assert_close(sl.values(x, ch), full[:, ch])
    rows = torch.tensor([2, 2, 5, 0])
    torch.testing.assert_close(sl.rows(x, rows)[:, 0], full[torch.arange(4), rows])


@pytest.mark.parametrize("layer", ["1", "2", "3"])
def test_neuron_conductance_through_slices_is_the_full_layers(monkeypatch, layer):
    net, x = _cnn(), torch.rand(3, 1, 6, 6, generator=torch.Generator().manual_seed(2))
    units = [0, 3, 4]
    calls = []
    real = neuron_mod._slice_vjp
    monkeypatch.setattr(neuron_mod, "_slice_vjp", lambda *a: calls.append(1) or real(*a))
    plain = us.neuron_conductance(net, x, layer, units, target=1, n_steps=8, path=us.PathConfig(unit_batch_size=2))
    paired = us.neuron_conductance(net, x, layer, [4, 0, 3, 3], examples=[0, 2, 2, 1], paired=True, target=1, n_steps=8)
    with full_layers():
        plain_full = us.neuron_conductance(
            net, x, layer, units, target=1, n_steps=8, path=us.PathConfig(unit_batch_size=2)
        )
        paired_full = us.neuron_conductance(
            net, x, layer, [4, 0, 3, 3], examples=[0, 2, 2, 1], paired=True, target=1, n_steps=8
        )
    assert plain.abs().sum() > 0 and paired.abs().sum() > 0 and calls  # not vacuous: the slices were used
    torch.testing.assert_close(plain, plain_full, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(paired, paired_full, rtol=1e-5, atol=1e-7)


def test_a_hook_that_changes_the_conv_output_keeps_the_full_layer():
    """The slice reads the weights; a forward hook on the conv doubles its output: the check sees that the slice
    does not give the recorded layer and the full backward is used (results as with no slices at all)."""
    net, x = _cnn(), torch.rand(2, 1, 6, 6, generator=torch.Generator().manual_seed(4))
    handle = net[2].register_forward_hook(lambda m, a, out: out * 2.0)
    try:
        got = us.neuron_conductance(net, x, "3", [1, 5], target=0, n_steps=8)
        gen = _generator()
        sets = sample_inverse_sets(net, "3", [(1, 0.05, 0.3)], gen, n_samples=3, seeds=[0], max_steps=30)
        with full_layers():
            want = us.neuron_conductance(net, x, "3", [1, 5], target=0, n_steps=8)
            sets_full = sample_inverse_sets(net, "3", [(1, 0.05, 0.3)], gen, n_samples=3, seeds=[0], max_steps=30)
    finally:
        handle.remove()
    assert got.abs().sum() > 0 and len(sets[0]) + sets[0].steps > 0
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)
    assert torch.equal(sets[0].codes, sets_full[0].codes) and sets[0].steps == sets_full[0].steps


def _generator():
    torch.manual_seed(5)
    dec = nn.Sequential(nn.Linear(4, 36), nn.Sigmoid(), nn.Unflatten(1, (1, 6, 6)))
    return DecoderGenerator(dec, latent_dim=4, code_bound=3.0)


def test_inverse_sets_through_slices_are_the_full_layers(monkeypatch):
    net, gen = _cnn(), _generator()
    used = []
    real = ChannelSlice.input_of
    monkeypatch.setattr(ChannelSlice, "input_of", lambda self, *a, **k: used.append(1) or real(self, *a, **k))
    with torch.no_grad():
        acts = net[:4](gen(torch.randn(64, 4))).mean((2, 3))
    lo, hi = acts.quantile(0.5, 0).tolist(), acts.quantile(0.9, 0).tolist()
    problems = [(u, lo[u], hi[u]) for u in (0, 2, 7)] + [(2, hi[2], float("inf"))]
    got = sample_inverse_sets(net, "3", problems, gen, n_samples=3, seeds=[1, 2, 3, 4], max_steps=40, block=8)
    one = us.sample_inverse_set(
        net,
        ("3", 2, lo[2], hi[2]),
        gen,
        n_samples=3,
        n_seeds=3,
        sampler=us.SamplerConfig(max_seed_steps=40),
        on_empty="ignore",
    )
    with full_layers():
        want = sample_inverse_sets(net, "3", problems, gen, n_samples=3, seeds=[1, 2, 3, 4], max_steps=40, block=8)
        one_full = us.sample_inverse_set(
            net,
            ("3", 2, lo[2], hi[2]),
            gen,
            n_samples=3,
            n_seeds=3,
            sampler=us.SamplerConfig(max_seed_steps=40),
            on_empty="ignore",
        )
    assert sum(len(s) for s in got) > 0 and len(one) > 0 and used  # not vacuous: the slices were used
    for a, b in zip(got, want):
        torch.testing.assert_close(a.codes, b.codes, rtol=1e-4, atol=1e-5)
        assert a.steps == b.steps and a.ok == b.ok
        assert bool(((a.activations >= a.a) & (a.activations <= a.b)).all())
    torch.testing.assert_close(one.codes, one_full.codes, rtol=1e-4, atol=1e-5)
    assert one.seed_steps == one_full.seed_steps
