"""A large completeness gap is an error on a layer that is a cut and no error on one that is bypassed: the model is
asked which it is (:mod:`unitscope.attribution.cuts`), never guessed from the size of the gap."""

import warnings

import pytest
import torch
import torch.nn as nn

import unitscope as us
from unitscope.core.errors import CompletenessWarning


class Residual(nn.Module):
    """``out(x + mlp(x))``: ``mlp.1`` (the GELU) is bypassed by the skip connection, ``block`` (the sum) is a cut."""

    def __init__(self):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(6, 12), nn.GELU(), nn.Linear(12, 6))
        self.block = nn.Identity()
        self.out = nn.Linear(6, 3)

    def forward(self, x):
        return self.out(self.block(x + self.mlp(x)))


def test_a_bypassed_layer_is_no_cut_gets_no_warning_and_a_cut_is_checked():
    torch.manual_seed(0)
    net, x = Residual().eval(), torch.randn(4, 6)
    with warnings.catch_warnings():
        warnings.simplefilter("error", CompletenessWarning)
        s = us.conductance(net, x, ["mlp.1", "block"], target=0, n_steps=64)
    assert float(s.relative_delta("mlp.1").max()) > 0.05  # its units need not add up to F(x) − F(x')
    assert s.ok["mlp.1"] and not bool(s.cut["mlp.1"].any())
    assert float(s.relative_delta("block").max()) < 1e-2 and s.ok["block"]


def test_a_cut_with_a_gap_above_the_tolerance_is_never_ok():
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    net = timm.create_model("convnext_atto", pretrained=False, num_classes=10).eval()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    layers = ["stages.0", "stages.1", "stages.2", "stages.3"]  # each stage's output is a cut
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CompletenessWarning)
        s = us.conductance(net, x, layers, n_steps=64)
    for name in layers:
        gap = s.relative_delta(name)
        assert bool(s.cut[name][gap > 0.05].all()), (name, s.cut[name])
        assert not (float(gap.max()) > 0.05 and s.ok[name]), (name, gap)
        if not s.ok[name]:
            assert name in s.messages[name][0] and "a cut" in s.messages[name][0] and "α ≈" in s.messages[name][0]


def test_per_input_conductance_takes_the_adaptive_default_and_sums_to_the_layer_conductance():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 16), nn.Tanh(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3)).eval()
    x = 3 * torch.randn(4, 5)
    units = list(range(16))
    a = us.neuron_conductance(net, x, "3", units=units, target=1, n_steps=32)  # method="adaptive", as conductance
    s = us.conductance(net, x, ["3"], target=1, n_steps=32)
    torch.testing.assert_close(a.sum(-1), s["3"], rtol=1e-4, atol=1e-7)
    # and it is accurate: against a 4000-point trapezoid of Eq. 2
    ref = us.neuron_conductance(net, x, "3", units=units, target=1, n_steps=4000, method="riemann_trapezoid")
    scale = ref.sum(-1).abs().amax(1, keepdim=True)
    assert float(((a.sum(-1) - ref.sum(-1)).abs() / scale).max()) < 0.02
    with torch.inference_mode():
        torch.testing.assert_close(us.neuron_conductance(net, x, "3", units=units, target=1, n_steps=32), a)
