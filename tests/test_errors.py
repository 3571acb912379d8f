"""Bad input gets one clear error that names the problem."""

import pytest
import torch

import unitscope as us
from nets import cnn


@pytest.fixture
def net():
    return cnn(31)


def test_unknown_layer_lists_closest_names(net):
    with pytest.raises(us.UnitscopeError, match=r"unknown layer '3x'.*closest valid names: '3'"):
        us.conductance(net, torch.randn(1, 3, 8, 8), ["3x"])


def test_baseline_shape_mismatch_names_both_shapes(net):
    with pytest.raises(us.UnitscopeError, match=r"baseline_shape=\(1, 3, 4, 4\).*input_shape=\(2, 3, 8, 8\)"):
        us.conductance(net, torch.randn(2, 3, 8, 8), ["0"], baselines=torch.zeros(1, 3, 4, 4))


def test_non_finite_inputs(net):
    x = torch.randn(2, 3, 8, 8)
    x[1, 0, 0, 0] = float("nan")
    with pytest.raises(us.UnitscopeError, match="non-finite"):
        us.conductance(net, x, ["0"])


def test_target_out_of_range(net):
    with pytest.raises(us.UnitscopeError, match=r"target out of range: the model has 5 outputs.*targets=\[7\]"):
        us.conductance(net, torch.randn(2, 3, 8, 8), ["0"], target=[1, 7])


def test_target_list_of_wrong_length(net):
    with pytest.raises(us.UnitscopeError, match="one class per example"):
        us.internal_influence(net, torch.randn(2, 3, 8, 8), ["0"], target=[1, 2, 3])


def test_empty_batch(net):
    with pytest.raises(us.UnitscopeError, match="batch is empty"):
        us.conductance(net, torch.randn(0, 3, 8, 8), ["0"])


def test_unknown_rule_and_bad_steps(net):
    x = torch.randn(1, 3, 8, 8)
    with pytest.raises(us.UnitscopeError, match="unknown integration method 'simpson'"):
        us.conductance(net, x, ["0"], method="simpson")
    with pytest.raises(us.UnitscopeError, match="n_steps"):
        us.conductance(net, x, ["0"], n_steps=1)


class WithSpare(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.used, self.unused = torch.nn.Linear(3, 2), torch.nn.Linear(2, 2)

    def forward(self, x):
        return self.used(x)


def test_layer_that_does_not_run():
    with pytest.raises(us.UnitscopeError, match="'unused' did not run"):
        us.activation(WithSpare(), torch.randn(1, 3), ["unused"])


def test_layer_that_runs_twice():
    relu = torch.nn.ReLU()
    net = torch.nn.Sequential(torch.nn.Linear(3, 3), relu, torch.nn.Linear(3, 3), relu)
    with pytest.raises(us.UnitscopeError, match="ran 2 times"):
        us.activation(net, torch.randn(1, 3), ["1"])


def test_integer_inputs_explain_embeddings():
    emb = torch.nn.Sequential(torch.nn.Embedding(10, 4))
    with pytest.raises(us.UnitscopeError, match="for token ids pass embedding='NAME'"):
        us.conductance(emb, torch.tensor([[1, 2]]), ["0"])
