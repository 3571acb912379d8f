"""Agreement with Captum on every case both implement (``captum_compatible=True`` reproduces its estimates)."""

import pytest
import torch
from captum.attr import InternalInfluence, LayerActivation, LayerConductance, LayerGradientXActivation

import unitscope as us
from nets import TwoInputs, cnn, linear, mlp

RULES = ["riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid", "gausslegendre"]


def close(ours, ref, rtol=1e-5):
    ref = ref.detach()
    scale = ref.abs().max().clamp_min(1e-8)
    assert float((ours - ref).abs().max() / scale) < rtol


def toy():
    """Hand-set weights: a 2-2-1 network with a ReLU whose kink the path crosses."""
    net = torch.nn.Sequential(linear([[1.0, -1.0], [0.5, 2.0]], bias=-0.2), torch.nn.ReLU(), linear([[1.5, -0.7]]))
    return net.eval(), torch.tensor([[1.0, 0.5], [0.3, 0.9]])


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("maker", ["toy", "cnn"])
def test_conductance_and_influence_match_captum(rule, maker):
    if maker == "toy":
        net, x = toy()
        layers, target = ["0", "1"], 0
    else:
        net, x = cnn(11), torch.randn(3, 3, 8, 8)
        layers, target = ["0", "2", "3", "6"], [0, 2, 4]
    cond = us.conductance(
        net,
        x,
        layers,
        target=target,
        n_steps=17,
        method=rule,
        path=us.PathConfig(captum_compatible=True, gap_warning=None),
    )
    infl = us.internal_influence(
        net, x, layers, target=target, n_steps=17, method=rule, path=us.PathConfig(captum_compatible=True)
    )
    for layer in layers:
        module = net.get_submodule(layer)
        close(cond[layer], LayerConductance(net, module).attribute(x, target=target, n_steps=17, method=rule))
        close(infl[layer], InternalInfluence(net, module).attribute(x, target=target, n_steps=17, method=rule))


def test_gradient_x_activation_and_activation_match_captum():
    net, x = cnn(12), torch.randn(4, 3, 8, 8)
    for layer in ["0", "3", "9"]:
        module = net.get_submodule(layer)
        close(
            us.grad_x_activation(net, x, [layer], target=3)[layer],
            LayerGradientXActivation(net, module).attribute(x, target=3),
        )
        close(us.activation(net, x, [layer])[layer], LayerActivation(net, module).attribute(x))


def test_layer_input_tuple_inputs_and_extra_args_match_captum():
    net = TwoInputs().eval()
    x1, x2, scale = torch.randn(3, 4), torch.randn(3, 3), torch.tensor([1.0, 2.0, -1.0])
    b = (torch.full((1, 4), 0.1), 0.2)
    for to_input in (False, True):
        ours = us.conductance(
            net,
            (x1, x2),
            ["mix"],
            baselines=b,
            target=1,
            additional_forward_args=(scale,),
            n_steps=20,
            path=us.PathConfig(captum_compatible=True, gap_warning=None),
            attribute_to_layer_input=to_input,
        )
        ref = LayerConductance(net, net.mix).attribute(
            (x1, x2),
            baselines=(b[0].expand(3, 4), b[1]),
            target=1,
            additional_forward_args=(scale,),
            n_steps=20,
            attribute_to_layer_input=to_input,
        )
        close(ours["mix"], ref)


def test_default_estimate_converges_to_captums_limit():
    """Ours at 200 steps and Captum's at 4000 estimate the same integral."""
    net, x = mlp(13), torch.randn(2, 5)
    ours = us.conductance(net, x, ["2"], target=1, n_steps=200, path=us.PathConfig(gap_warning=None))["2"]
    ref = LayerConductance(net, net[2]).attribute(x, target=1, n_steps=4000, method="riemann_trapezoid")
    close(ours, ref, rtol=2e-3)


def test_trapezoid_weights_differ_from_captums_as_documented():
    """Captum's trapezoid weights sum to (n−1)/n: its internal influence of a linear layer is low by 1/n."""
    net, x = mlp(14), torch.randn(2, 5)
    ours = us.internal_influence(net, x, ["4"], target=0, n_steps=50, method="riemann_trapezoid")["4"]
    ref = InternalInfluence(net, net[4]).attribute(x, target=0, n_steps=50, method="riemann_trapezoid")
    torch.testing.assert_close(ref, ours * 49 / 50, atol=1e-6, rtol=1e-5)
