"""Exactness: closed-form answers, grad modes, dtypes; the error falls as it should with the number of nodes."""

import pytest
import torch
import torch.nn as nn

import unitscope as us
from nets import cnn, mlp


# --- the caller's grad mode and dtype do not change the numbers -------------------------------------------------

def _all_methods(net, x, **kw):
    out = us.attribute(net, x, ["1", "3"], target=1, n_steps=12, gap_warning=None, **kw)
    out["neuron"] = us.neuron_conductance(net, x, "1", units=[0, 3], target=1, n_steps=12)
    return out


@pytest.mark.parametrize("mode", ["no_grad", "inference_mode"])
def test_same_numbers_inside_no_grad_and_inference_mode(mode):
    net, x = mlp(1, act=nn.Tanh), torch.randn(3, 5)
    ref = _all_methods(net, x)
    with getattr(torch, mode)():
        x_inside = x.clone()  # an inference tensor under inference_mode
        got = _all_methods(net, x_inside)
        assert torch.is_grad_enabled() is False  # the caller's mode is back
    for name, r in ref.items():
        if isinstance(r, torch.Tensor):
            torch.testing.assert_close(got[name], r, rtol=0, atol=0)
            continue
        for layer in r:
            assert float(r[layer].abs().max()) > 0, (name, layer)
            torch.testing.assert_close(got[name][layer], r[layer], rtol=0, atol=0)


class Detached(nn.Module):
    def __init__(self):
        super().__init__()
        self.body, self.act, self.head = nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2)
        self.aux = nn.Linear(4, 3)

    def forward(self, x):
        self.aux(x)  # runs, but the output does not depend on it
        return self.head(self.act(self.body(x)).detach())


@pytest.mark.parametrize("method", ["conductance", "internal_influence", "grad_x_activation"])
def test_a_gradient_that_cannot_be_had_is_an_error_not_zeros(method):
    net, x = Detached().eval(), torch.randn(2, 4)
    with pytest.raises(us.UnitscopeError, match="cannot be had"):
        us.attribute(net, x, ["act"], scores=[method], target=0, n_steps=8, gap_warning=None)


def test_a_layer_off_the_output_path_is_an_error_naming_it():
    class Aux(nn.Module):
        def __init__(self):
            super().__init__()
            self.body, self.aux = nn.Linear(4, 2), nn.Linear(4, 3)

        def forward(self, x):
            self.aux(x)
            return self.body(x)

    with pytest.raises(us.UnitscopeError, match="layer 'aux'"):
        us.conductance(Aux().eval(), torch.randn(2, 4), ["aux", "body"], target=0, n_steps=8, gap_warning=None)


def test_float64_in_float64_out_and_half_integrates_in_float32():
    net, x = cnn(3), torch.randn(2, 3, 8, 8)
    s64 = us.attribute(net.double(), x.double(), ["0", "6"], target=1, n_steps=16, gap_warning=None)
    for scores in s64.values():
        for layer in scores:
            assert scores[layer].dtype == torch.float64
    assert s64["conductance"].delta["0"].dtype == torch.float64
    n64 = us.neuron_conductance(net, x.double(), "3", units=[1], target=1, n_steps=8)
    assert n64.dtype == torch.float64
    net16, x16 = cnn(3).to(torch.bfloat16), x.to(torch.bfloat16)
    s16 = us.conductance(net16, x16, ["3"], target=1, n_steps=16, gap_warning=None)
    assert s16["3"].dtype == torch.float32
    ref = us.conductance(cnn(3).double(), x16.double(), ["3"], target=1, n_steps=16, gap_warning=None)
    # bfloat16 forward passes, float32 sums: close to the float64 numbers at bfloat16's resolution
    scale = float(ref["3"].abs().max())
    assert float((s16["3"].double() - ref["3"]).abs().max()) < 0.05 * scale
