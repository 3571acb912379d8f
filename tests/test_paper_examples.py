"""The conductance paper's toy examples have exact answers."""

import pytest
import torch

import unitscope as us
from nets import TwoFeatures, saturation_net, sign_net

X, XB = torch.ones(1, 1), torch.zeros(1, 1)


def test_saturation_gradient_x_activation_is_zero_and_influence_half():
    net = saturation_net()
    gxa = us.grad_x_activation(net, X, ["0"], target=None)
    assert gxa["0"].item() == pytest.approx(0.0, abs=1e-7)
    infl = us.internal_influence(net, X, ["0"], baselines=XB, n_steps=50, method="gausslegendre")
    assert infl["0"].item() == pytest.approx(0.5, abs=1e-2)
    # midpoints on either side of the kink integrate this step function exactly
    infl = us.internal_influence(net, X, ["0"], baselines=XB, n_steps=100, method="riemann_middle")
    assert infl["0"].item() == pytest.approx(0.5, abs=1e-6)


def test_saturation_conductance_is_one():
    net = saturation_net()
    s = us.conductance(
        net, X, ["0"], baselines=XB, n_steps=64, method="adaptive", path=us.PathConfig(rtol=1e-7, gap_warning=None)
    )
    assert s["0"].item() == pytest.approx(1.0, abs=1e-6)
    assert s.delta["0"].abs().item() < 1e-6
    s = us.conductance(net, X, ["0"], baselines=XB, n_steps=50, path=us.PathConfig(gap_warning=None))
    assert s["0"].item() == pytest.approx(1.0, abs=2e-2)


def test_sign_conductance_minus_one_influence_plus_one():
    net = sign_net()
    for method in ("gausslegendre", "riemann_trapezoid", "riemann_left"):
        s = us.conductance(net, X, ["0"], baselines=XB, n_steps=10, method=method)
        assert s["0"].item() == pytest.approx(-1.0, abs=1e-6)
        i = us.internal_influence(net, X, ["0"], baselines=XB, n_steps=10, method=method)
        assert i["0"].item() == pytest.approx(1.0, abs=1e-6)


def test_linearity_unit_conductances_are_weighted_output_differences():
    net = TwoFeatures()
    x, xb = torch.tensor([[0.7, 0.4], [1.0, -0.3]]), torch.tensor([[-0.2, 0.1]])
    a, b = 2.5, -1.5
    F = lambda out: a * out[:, 0] + b * out[:, 1]  # noqa: E731
    s = us.conductance(
        net, x, ["units"], baselines=xb, target=F, n_steps=64, method="adaptive", path=us.PathConfig(rtol=1e-7)
    )
    y, yb = net(x).detach(), net(xb).detach()
    torch.testing.assert_close(s["units"][:, 0], a * (y[:, 0] - yb[:, 0]), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(s["units"][:, 1], b * (y[:, 1] - yb[:, 1]), atol=1e-5, rtol=1e-5)


def test_linearity_in_the_output_function():
    net = TwoFeatures()
    x = torch.tensor([[0.7, 0.4]])
    # a fixed rule is linear in F exactly (adaptive places its nodes by F, so only within its tolerance)
    c1 = us.conductance(net, x, ["pre"], target=0, n_steps=30, method="gausslegendre")["pre"]
    c2 = us.conductance(net, x, ["pre"], target=1, n_steps=30, method="gausslegendre")["pre"]
    both = us.conductance(
        net, x, ["pre"], target=lambda o: 3 * o[:, 0] - 2 * o[:, 1], n_steps=30, method="gausslegendre"
    )["pre"]
    torch.testing.assert_close(both, 3 * c1 - 2 * c2, atol=1e-5, rtol=1e-5)
