"""The model a user hands us is never changed — also when a call fails."""

import pytest
import torch
import torch.nn as nn

import unitscope as us
from nets import cnn


class Boom(nn.Module):
    def __init__(self, exc):
        super().__init__()
        self.exc = exc

    def forward(self, x):
        raise self.exc


def snapshot(model):
    return {
        "training": [m.training for m in model.modules()],
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "grad_ids": [id(p.grad) for p in model.parameters()],
        "grads": [None if p.grad is None else p.grad.clone() for p in model.parameters()],
        "state": {k: v.clone() for k, v in model.state_dict().items()},
        "hooks": sum(
            len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules()
        ),
    }


def assert_same(before, model):
    after = snapshot(model)
    assert after["training"] == before["training"]
    assert after["requires_grad"] == before["requires_grad"]
    assert after["grad_ids"] == before["grad_ids"]
    for a, b in zip(after["grads"], before["grads"]):
        assert (a is None and b is None) or torch.equal(a, b)
    for k in before["state"]:
        assert torch.equal(after["state"][k], before["state"][k]), k
    assert after["hooks"] == before["hooks"] == 0


def prepared_model():
    net = cnn(21).train()
    net.append(nn.Dropout(0.5))
    net[0].weight.requires_grad_(False)  # a frozen parameter must stay frozen
    net[3].weight.grad = torch.randn_like(net[3].weight)  # a pending gradient must survive
    return net


CALLS = {
    "conductance": lambda net, x: us.conductance(net, x, ["0", "3"], n_steps=8, path=us.PathConfig(gap_warning=None)),
    "adaptive": lambda net, x: us.conductance(
        net, x, ["3"], n_steps=12, method="adaptive", path=us.PathConfig(gap_warning=None)
    ),
    "influence": lambda net, x: us.internal_influence(net, x, ["3"], n_steps=8),
    "gxa": lambda net, x: us.grad_x_activation(net, x, ["3"]),
    "activation": lambda net, x: us.activation(net, x, ["3"]),
}


@pytest.mark.parametrize("call", sorted(CALLS))
def test_untouched_after_success(call):
    net, x = prepared_model(), torch.randn(2, 3, 8, 8)
    before = snapshot(net)
    CALLS[call](net, x)
    assert_same(before, net)
    assert net.training and net[1].training


def test_batchnorm_statistics_not_updated_and_eval_mode_used():
    net, x = prepared_model(), torch.randn(2, 3, 8, 8)
    a = us.activation(net, x, ["10"])["10"]  # the Dropout layer: eval mode means identity
    assert torch.equal(a, us.activation(net, x, ["10"])["10"])


@pytest.mark.parametrize("bad", ["unknown_layer", "bad_target", "module_raises", "interrupt"])
def test_untouched_after_failure(bad):
    net, x = prepared_model(), torch.randn(2, 3, 8, 8)
    if bad == "module_raises":
        net[4] = Boom(RuntimeError("boom"))
    if bad == "interrupt":
        net[4] = Boom(KeyboardInterrupt())
    before = snapshot(net)
    expected = {
        "unknown_layer": us.UnitscopeError,
        "bad_target": us.UnitscopeError,
        "module_raises": us.UnitscopeError,
        "interrupt": KeyboardInterrupt,
    }[bad]
    with pytest.raises(expected) as raised:
        if bad == "unknown_layer":
            us.conductance(net, x, ["0", "nope"], n_steps=4)
        elif bad == "bad_target":
            us.conductance(net, x, ["0", "3"], target=99, n_steps=4)
        else:
            us.conductance(net, x, ["0", "3"], n_steps=4)
    if bad == "module_raises":  # the model's own error is named (layer '4') and chained, not swallowed
        assert "'4'" in str(raised.value) and isinstance(raised.value.__cause__, RuntimeError)
    assert_same(before, net)


def test_results_hold_no_graph_and_live_on_cpu():
    net, x = cnn(22), torch.randn(2, 3, 8, 8)
    out = us.attribute(net, x, ["0", "3"], n_steps=6, path=us.PathConfig(gap_warning=None))
    for scores in out.values():
        for layer in scores:
            t = scores[layer]
            assert not t.requires_grad and t.grad_fn is None and t.device.type == "cpu"
