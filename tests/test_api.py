"""The public API is one coherent surface: keyword-only defaults, one name per concept, one shape rule."""

import inspect

import pytest
import torch
import torch.nn as nn

import unitscope as us


def _public_callables():
    """Every function and public method reachable from ``unitscope.__all__`` (classes: their public methods)."""
    for name in us.__all__:
        obj = getattr(us, name)
        if inspect.isfunction(obj):
            yield name, obj
        elif inspect.isclass(obj) and not issubclass(obj, BaseException):
            for attr, fn in vars(obj).items():
                if inspect.isfunction(fn) and not attr.startswith("_"):
                    yield f"{name}.{attr}", fn


PUBLIC = sorted(_public_callables())


def test_the_public_surface_is_not_empty():
    names = {n for n, _ in PUBLIC}
    assert {"conductance", "attribute", "scan", "neuron_conductance", "ScanResult.top", "Scores.top"} <= names


@pytest.mark.parametrize("name,fn", PUBLIC, ids=[n for n, _ in PUBLIC])
def test_every_parameter_with_a_default_is_keyword_only(name, fn):
    positional = [p.name for p in inspect.signature(fn).parameters.values()
                  if p.default is not p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    assert not positional, f"{name}: {positional} should be keyword-only (after *)"


@pytest.mark.parametrize("name,fn", PUBLIC, ids=[n for n, _ in PUBLIC])
def test_method_is_the_rule_and_scores_what_to_compute(name, fn):
    params = inspect.signature(fn).parameters
    assert "methods" not in params, f"{name}: the scores to compute are called scores="
    if "method" in params:
        assert params["method"].default in ("gausslegendre", "adaptive"), f"{name}: method= is the integration rule"


def test_objectives_are_exported():
    assert us.objectives.channel("1", 0).layers == ("1",)


def test_shapes_examples_first():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 2))
    x = torch.randn(4, 3)
    s = us.conductance(net, x, ["1"], target=0, n_steps=8, gap_warning=None)
    assert s["1"].shape == (4, 5) and s.top("1", k=2).indices.shape == (4, 2)
    assert us.ablation_scores(net, x, "1", target=0).shape == (4, 5)
    assert us.neuron_conductance(net, x, "1", [0, 2, 4], target=0, n_steps=8).shape == (4, 3, 3)
    r = us.scan(net, [(x, torch.tensor([0, 1, 0, 1]))], ["1"], top_k=2, progress=False)
    assert r.top("1").indices.shape == (5, 2)  # the stated exception: units first, a scan has no example dim


def test_old_names_warn():
    net = nn.Sequential(nn.Linear(3, 5), nn.ReLU())
    s = us.activation(net, torch.randn(2, 3), ["1"])
    with pytest.warns(DeprecationWarning):
        assert s.method == s.score == "activation"
