"""The engine against the slow literal implementation (:mod:`conformance.reference`) on three architectures, at
high resolution: a ResNet-18 (a ReLU shared by two calls), an LSTM (a tuple output), GPT-2 (paths from the token
embedding; the reference runs an eager-attention copy with the same weights, since the fused SDPA kernel has no
double backward).

* Eq. 3 with a fixed rule: ``us.conductance(method=rule)`` = ``Σ_k w_k ∂F/∂y ⊙ dy/dα`` at the same nodes
  (Gauss–Legendre), or the Stieltjes trapezoid on the rule's nodes plus both ends (the Riemann rules), float32
  rounding apart;
* Eq. 3 adaptive at a large budget = the Riemann–Stieltjes sum on a fine uniform grid (both converge to the
  integral; the tolerance is the grid's own error);
* Eq. 2: ``us.neuron_conductance`` = the per-input formula, unit by unit, point by point.
"""

from __future__ import annotations

import copy
import functools

import pytest
import torch

import unitscope as us
from unitscope.attribution import paths

from conformance import reference as R
from conformance.architectures import build
from conformance.checks import assert_untouched, close, first, layer_values, snapshot, top_class

# which fixed rules the library documents as "the rule applied to ∂F/∂y · dy/dα" (the others: the Stieltjes
# trapezoid of consecutive nodes, on the rule's nodes plus both end points)
JVP_RULES = getattr(paths, "JVP_RULES", paths.RULES)

N_RULE = 32  # points of the fixed rule, engine and reference alike
N_GRID = 129  # the reference's uniform grid for the Stieltjes sum


@functools.lru_cache(maxsize=None)
def reference_model(name: str):
    """The model the reference differentiates twice: the same model, or an eager-attention copy of it."""
    a = build(name)
    if name != "hf_gpt2":
        return a.model
    m = copy.deepcopy(a.model)
    m.hf.set_attn_implementation("eager")
    return m.eval()


CASES = {
    # arch: (layer for Eq. 3, layer for Eq. 2, units for Eq. 2, grid tolerance)
    "tv_resnet18": ("layer1.0.relu@1", "layer2", [0, 5], None),
    "torch_lstm": ("rnn", "act", [0, 3], 1e-3),
    "hf_gpt2": ("hf.transformer.h.0", "hf.transformer.h.1.mlp.act", [0, 7], 2e-3),
}
# the ResNet's integrand (ReLUs switching along the path from the zero image) is too rough for a grid of a few
# hundred points to converge (129 vs 257 points: 3 % apart), so the Stieltjes comparison runs on the smooth two

# one path point per pass, as the reference: in a batch, convolutions round differently — enough to flip ReLUs
# that sit on a kink and move single elements by ~0.5 % (plain torch does the same; rows alone agree to 2e-7)
ONE_ROW = dict(internal_batch_size=1)


def _kw(a):
    return dict(embedding=a.embedding, additional_forward_args=a.additional_forward_args)


def _ref_kw(a):
    return dict(embedding=a.embedding, forward_args=a.additional_forward_args or ())


@pytest.mark.parametrize("rule", ["gausslegendre", "riemann_middle"])
@pytest.mark.parametrize("arch", sorted(CASES))
def test_conductance_equals_the_literal_rule(arch, rule):
    a = build(arch)
    layer = CASES[arch][0]
    target = top_class(a)
    before = snapshot(a.model)
    s = us.conductance(
        a.model,
        a.inputs,
        [layer],
        target=target,
        method=rule,
        n_steps=N_RULE,
        path=us.PathConfig(gap_warning=None),
        **ONE_ROW,
        **_kw(a),
    )
    assert_untouched(before, a.model)
    if rule in JVP_RULES:  # the rule applied to ∂F/∂y · dy/dα
        ref = R.conductance_rule(
            reference_model(arch), a.inputs, layer, target=target, rule=rule, n_steps=N_RULE, **_ref_kw(a)
        )
    else:  # the Stieltjes trapezoid on the rule's nodes and both ends
        alphas = sorted(set(R.nodes(rule, N_RULE)[0]) | {0.0, 1.0})
        ref = R.conductance_stieltjes(
            reference_model(arch), a.inputs, layer, target=target, alphas=alphas, **_ref_kw(a)
        )
    close(first(s[layer]), ref, 2e-5, f"{arch} {layer} {rule}")


@pytest.mark.parametrize("arch", [name for name in sorted(CASES) if CASES[name][3] is not None])
def test_adaptive_conductance_converges_to_the_stieltjes_sum(arch):
    a = build(arch)
    layer, tol = CASES[arch][0], CASES[arch][3]
    target = top_class(a)
    s = us.conductance(
        a.model,
        a.inputs,
        [layer],
        target=target,
        method="adaptive",
        n_steps=128,
        path=us.PathConfig(gap_warning=None),
        **_kw(a),
    )
    ref = R.conductance_trapezoid(reference_model(arch), a.inputs, layer, target=target, n_points=N_GRID, **_ref_kw(a))
    close(first(s[layer]), ref, tol, f"{arch} {layer}: adaptive (128) vs a {N_GRID}-point grid")


@pytest.mark.parametrize("arch", sorted(CASES))
def test_neuron_conductance_equals_the_literal_eq2(arch):
    a = build(arch)
    _, layer, units, _ = CASES[arch]
    target = top_class(a)
    got = us.neuron_conductance(
        a.model,
        a.inputs,
        layer=layer,
        units=units,
        target=target,
        method="gausslegendre",
        n_steps=N_RULE,
        **ONE_ROW,
        **_kw(a),
    )
    y = layer_values(a, [layer])[layer]
    masks = torch.zeros(len(units), *y.shape[1:])
    for k, u in enumerate(units):  # a conv channel; a neuron at every token; a feature
        if y.dim() == 4 or y.dim() == 2:
            masks[k, u] = 1
        else:
            masks[k, ..., u] = 1
    ref = R.neuron_conductance_rule(
        reference_model(arch), a.inputs, layer, masks, target=target, n_steps=N_RULE, **_ref_kw(a)
    )
    close(got, ref, 2e-5, f"{arch} {layer} units {units}")
