"""Per-input conductance through units (Eq. 2): sums to layer conductance, is the paper's filter quantity."""

import warnings

import pytest
import torch
import torch.nn as nn
from captum.attr import NeuronConductance

import unitscope as us
from nets import TwoInputs, cnn, mlp


def test_summed_over_inputs_equals_layer_conductance():
    net, x = mlp(51, act=nn.Tanh), torch.randn(3, 5)
    a = us.neuron_conductance(net, x, "1", units=[0, 4, 9], target=2, n_steps=64)
    layer = us.conductance(net, x, ["1"], target=2, n_steps=64, path=us.PathConfig(gap_warning=None))["1"]
    torch.testing.assert_close(a.sum(2), layer[:, [0, 4, 9]], atol=1e-4, rtol=1e-3)


def test_channel_is_the_sum_of_its_units_and_matches_captum_per_unit():
    net, x = cnn(52), torch.randn(2, 3, 8, 8)
    channel = us.neuron_conductance(net, x, "6", units=[3], target=[1, 4], n_steps=12, method="gausslegendre")[:, 0]
    per_unit = us.neuron_conductance(
        net,
        x,
        "6",
        units=[(3, i, j) for i in range(4) for j in range(4)],
        target=[1, 4],
        n_steps=12,
        method="gausslegendre",
    )
    torch.testing.assert_close(channel, per_unit.sum(1), atol=1e-6, rtol=1e-5)
    nc = NeuronConductance(net, net[6])
    ref = sum(
        nc.attribute(x, neuron_selector=(3, i, j), target=[1, 4], n_steps=12, method="gausslegendre")
        for i in range(4)
        for j in range(4)
    )
    torch.testing.assert_close(channel, ref.detach(), atol=1e-6, rtol=1e-4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        summed_selector = nc.attribute(
            x, neuron_selector=lambda y: y[:, 3].sum((1, 2)), target=[1, 4], n_steps=12, method="gausslegendre"
        ).detach()
    # Captum's summed selector computes (Σ_j ∂F/∂y_j)(Σ_j ∂y_j/∂x_i): a different quantity
    assert float((summed_selector - channel).abs().max()) > 0.1 * float(channel.abs().max())


def test_tuple_inputs_and_element_units():
    net = TwoInputs().eval()
    x1, x2, scale = torch.randn(2, 4), torch.randn(2, 3), torch.tensor([1.0, 0.5])
    a1, a2 = us.neuron_conductance(
        net, (x1, x2), "mix", units=[(2,), (5,)], target=0, additional_forward_args=(scale,), n_steps=40
    )
    assert a1.shape == (2, 2, 4) and a2.shape == (2, 2, 3)
    layer = us.conductance(
        net,
        (x1, x2),
        ["mix"],
        target=0,
        additional_forward_args=(scale,),
        n_steps=200,
        path=us.PathConfig(gap_warning=None),
    )["mix"]
    torch.testing.assert_close(a1.sum(2) + a2.sum(2), layer[:, [2, 5]], atol=2e-3, rtol=2e-2)


def test_bad_units_name_the_layer_and_shape():
    net, x = cnn(53), torch.randn(1, 3, 8, 8)
    with pytest.raises(us.UnitscopeError, match=r"channel 40 is out of range for layer '3'.*unit_shape=\(12, 8, 8\)"):
        us.neuron_conductance(net, x, "3", units=[40])
    with pytest.raises(us.UnitscopeError, match="outside layer"):
        us.neuron_conductance(net, x, "3", units=[(1, 9, 0)])


def test_pairs_sharing_an_input_equal_the_per_unit_result():
    """paired=True with examples=: several units of one input share its forward pass, and each pair is exactly
    (same numbers, bit for bit) the paired result of that unit on a copy of its input."""
    torch.manual_seed(0)
    net, x = cnn(), torch.randn(3, 3, 8, 8)
    units, examples = [0, 2, 1, 2, 0], [0, 0, 0, 1, 2]
    kw = dict(layer="4", target=1, n_steps=8, internal_batch_size=3 * 8)
    got = us.neuron_conductance(net, x, units=units, examples=examples, paired=True, **kw)
    full = us.neuron_conductance(net, x, units=[0, 1, 2], target=1, n_steps=8, layer="4")
    assert got.shape == (5, 3, 8, 8)
    assert torch.allclose(got, full[examples, units], atol=1e-6)
    for p, (u, e) in enumerate(zip(units, examples)):  # each pair alone: its input three times, one unit each
        one = us.neuron_conductance(net, x[[e, e, e]], units=[u, u, u], paired=True, **kw)
        assert torch.equal(got[p], one[0])
    with pytest.raises(us.UnitscopeError, match="examples"):
        us.neuron_conductance(net, x, units=[0], examples=[5], paired=True, **kw)
