"""Completeness: for every layer, Σ_units conductance = F(x) − F(x'), and the gap shrinks with n_steps."""

import numpy as np
import pytest
import torch
import torch.nn as nn

import unitscope as us
from nets import TupleNet, cnn, mlp, resnet

CASES = {
    "mlp": (lambda: mlp(1), lambda: torch.randn(3, 5), ["0", "1", "2", "3"]),
    "cnn_bn": (lambda: cnn(2), lambda: torch.randn(2, 3, 8, 8), ["0", "1", "2", "3", "6"]),
    "residual": (lambda: resnet(3), lambda: torch.randn(2, 3, 8, 8), ["0", "1", "2"]),
    "tuple_layer": (lambda: TupleNet().eval(), lambda: torch.randn(3, 6), ["fc1", "split"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_gap_shrinks_and_is_small_at_many_steps(case):
    make, inputs, layers = CASES[case]
    net, x = make().double(), inputs().double()  # float64: the test is of the integration, not of rounding
    coarse = us.conductance(net, x, layers, n_steps=8, method="riemann_trapezoid", path=us.PathConfig(gap_warning=None))
    fine = us.conductance(
        net,
        x,
        layers,
        n_steps=4096,
        method="riemann_trapezoid",
        path=us.PathConfig(gap_warning=None),
        internal_batch_size=2048,
    )
    adaptive = us.conductance(
        net, x, layers, n_steps=512, method="adaptive", path=us.PathConfig(rtol=1e-6, gap_warning=None)
    )
    scale = float(fine.output_diff.abs().max())
    for layer in layers:
        # uniform nodes converge only like 1/n across ReLU kinks: measured against the batch's largest |ΔF|
        assert float(fine.delta[layer].abs().max()) / scale < 1e-3, layer
        # adaptive is driven by the top units' error estimates (and the gaps of cuts), all within 1e-3
        assert float(us.relative_unit_error(adaptive[layer], adaptive.unit_error[layer]).max()) < 1e-3, layer
        assert float(adaptive.relative_delta(layer).max()) < 2e-3, layer
        assert float(fine.relative_delta(layer).max()) <= float(coarse.relative_delta(layer).max()) + 1e-6, layer


def test_tuple_layer_gives_tuple_scores_and_the_parts_add_up():
    net, x = TupleNet().eval(), torch.randn(3, 6)
    s = us.conductance(net, x, ["split"], n_steps=256, path=us.PathConfig(gap_warning=None))
    a, b = s["split"]
    assert a.shape == (3, 4) and b.shape == (3, 4)
    total = a.sum(1) + b.sum(1)
    torch.testing.assert_close(total, s.output_diff, atol=1e-3, rtol=1e-3)


def test_smooth_network_matches_a_literal_quadrature_of_eq3():
    """Slow reference: Σ_k w_k ∂F/∂y(x_k) · dy/dα(x_k) with dy/dα by forward-mode AD (torch.func.jvp)."""
    net = mlp(4, act=nn.Tanh)
    x, xb = torch.randn(2, 5), torch.randn(2, 5) * 0.1
    t, w = np.polynomial.legendre.leggauss(40)
    alphas, weights = (t + 1) / 2, w / 2
    ref = torch.zeros(2, 12)
    for a, wk in zip(alphas, weights):
        xa = xb + float(a) * (x - xb)
        y, dy = torch.func.jvp(lambda inp: net[:3](inp), (xa,), (x - xb,))
        y = y.detach().requires_grad_()
        F = net[3:](y)[:, 0].sum()
        (g,) = torch.autograd.grad(F, y)
        ref += float(wk) * g * dy
    ours = us.conductance(
        net, x, ["2"], baselines=xb, target=0, n_steps=40, method="gausslegendre", path=us.PathConfig(gap_warning=None)
    )["2"]
    torch.testing.assert_close(ours, ref, atol=1e-6, rtol=1e-5)  # the rule is the rule
    ada = us.conductance(
        net, x, ["2"], baselines=xb, target=0, n_steps=200, path=us.PathConfig(rtol=1e-4, gap_warning=None)
    )["2"]
    torch.testing.assert_close(ada, ref, atol=1e-4, rtol=1e-3)


def test_adaptive_beats_uniform_at_equal_budget():
    net, x = cnn(5), torch.randn(3, 3, 8, 8)
    layers = ["0", "3", "6"]
    uni = us.conductance(net, x, layers, n_steps=32, method="riemann_trapezoid", path=us.PathConfig(gap_warning=None))
    ada = us.conductance(net, x, layers, n_steps=32, method="adaptive", path=us.PathConfig(rtol=1e-9, gap_warning=None))
    assert int(ada.n_evals.max()) <= 32
    worst = lambda s: max(float(s.relative_delta(layer).max()) for layer in layers)  # noqa: E731
    assert worst(ada) < worst(uni)


def test_adaptive_stops_early_when_converged():
    net, x = mlp(6), torch.randn(2, 5)
    s = us.conductance(net, x, ["4"], n_steps=256, method="adaptive", path=us.PathConfig(rtol=1e-3))
    # the last layer is linear in the path's layer values: the first coarse pass is already exact
    assert int(s.n_evals.max()) < 256
    assert float(s.relative_delta("4").max()) < 1e-3


def test_gap_warning_names_the_layer():
    net, x = cnn(7), torch.randn(2, 3, 8, 8)
    with pytest.warns(us.CompletenessWarning, match="layer '0'"):
        us.conductance(net, x, ["0"], n_steps=3, method="riemann_trapezoid", path=us.PathConfig(gap_warning=1e-6))
