"""A fixed rule's pass accumulates internal influence only when a score asks for it; asked alone or together, each
score's values and error bars are the same to the bit."""

import pytest
import torch

import unitscope as us
from nets import cnn


@pytest.mark.parametrize("method", ["riemann_trapezoid", "riemann_left", "gausslegendre"])
def test_conductance_and_influence_alone_equal_them_together(method):
    torch.manual_seed(0)
    net, x = cnn(), torch.randn(3, 3, 8, 8)
    kw = dict(target=1, n_steps=10, method=method, path=us.PathConfig(gap_warning=None))
    both = us.attribute(net, x, ["1", "4"], scores=["conductance", "internal_influence"], **kw)
    alone = {
        "conductance": us.conductance(net, x, ["1", "4"], **kw),
        "internal_influence": us.internal_influence(net, x, ["1", "4"], **kw),
    }
    for name, s in alone.items():
        for layer in ["1", "4"]:
            assert torch.equal(s[layer], both[name][layer]), (name, layer)
            assert torch.equal(s.error[layer], both[name].error[layer]), (name, layer)
            assert s.ok[layer] == both[name].ok[layer]


def test_conductance_alone_does_not_accumulate_influence(monkeypatch):
    from unitscope.attribution import scores

    seen = []
    real = scores.integrate

    def spy(*a, **k):
        out = real(*a, **k)
        seen.append(out.influence)
        return out

    monkeypatch.setattr(scores, "integrate", spy)
    net, x = cnn(), torch.randn(2, 3, 8, 8)
    us.conductance(net, x, ["1"], target=0, n_steps=8, method="riemann_trapezoid")
    us.internal_influence(net, x, ["1"], target=0, n_steps=8, method="riemann_trapezoid")
    assert seen[0] is None and seen[1] is not None
