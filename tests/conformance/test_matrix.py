"""The conformance matrix: models nobody here wrote × the public functions × the invariants DESIGN promises.

Every case checks, besides its own numbers (recomputed with plain hooks, :mod:`conformance.checks`): the model
handed back unchanged, results in the model's dtype (float32 at least), and that nothing but a ``UnitscopeError``
escapes. The outcome of each (architecture, function) pair goes into the table printed at the end
(``conftest.py``). Known library bugs are ``xfail(strict=True)`` cases listed in :data:`KNOWN`.
"""

from __future__ import annotations

import functools
import warnings

import pytest
import torch

import unitscope as us
from unitscope.attribution import paths
from unitscope.attribution.paths import RULES

from conformance import reference as R
from conformance.architectures import ARCHITECTURES, ATTENTION, build
from conformance.checks import (
    ablated_output,
    assert_untouched,
    close,
    first,
    forward_at,
    grads_at,
    layer_values,
    result_dtype,
    run,
    snapshot,
    top_class,
    unit_values,
)

ARCHS = list(ARCHITECTURES)
IMAGE_ARCHS = [
    "tv_resnet18",
    "tv_mobilenet_v3_small",
    "tv_efficientnet_b0",
    "tv_convnext_tiny",
    "tv_regnet_x_400mf",
    "tv_vit",
    "timm_vit_tiny",
    "timm_convnext_atto",
    "timm_swin",
    "timm_resnet10t_aa",
    "hf_vit",
    "float64_mobilenet_v3_small",
    "bfloat16_convnext_atto",
]
ADAPTIVE_STEPS = 16  # the adaptive rule's budget per example (the conductance column: the default, 50)
FIXED_STEPS = 8  # points of a fixed rule (the invariants hold at any resolution: flagged or within 1 %)
TOL = 0.01  # the completeness tolerance asked for (gap_warning)
# the fixed rules applied to ∂F/∂y · dy/dα (the others take the Stieltjes trapezoid of consecutive nodes)
JVP_RULES = getattr(paths, "JVP_RULES", RULES)

# (arch, fn) -> the exact cause; strict xfails: remove the entry when the library is fixed
KNOWN: dict = {}


def cases(fns, archs=ARCHS):
    out = []
    for a in archs:
        for f in fns:
            reason = KNOWN.get((a, f))
            marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
            out.append(pytest.param(a, f, marks=marks, id=f"{a}-{f}"))
    return out


def kw(a, forward_args=None) -> dict:
    return dict(
        embedding=a.embedding,
        additional_forward_args=a.additional_forward_args if forward_args is None else forward_args,
    )


def layers_of(a) -> list[str]:
    return list(a.cuts + a.non_cuts)


def check_dtype(a, value, what):
    for t in value if isinstance(value, tuple) else (value,):
        assert t.dtype == result_dtype(a.dtype), f"{what}: {t.dtype}, model in {a.dtype}"
        assert not t.requires_grad and t.grad_fn is None, f"{what}: holds an autograd graph"
        assert t.device.type == "cpu"


def rtol_of(a, tight=1e-4):
    """bfloat16 models: one rounding of the forward pass (~0.4 %) dominates."""
    return 3e-2 if a.dtype == torch.bfloat16 else tight


def flag(request, status):
    request.node.user_properties.append(("status", status))


# ---------------------------------------------------------------------------------------------------------------
# the layer names the builders use are the library's


@pytest.mark.parametrize("arch", ARCHS)
def test_layers_exist_and_model_is_in_eval_mode(arch):
    a = build(arch)
    names = us.layer_names(a.model, inputs=a.args if a.additional_forward_args else a.inputs)
    missing = [
        n
        for n in layers_of(a) + list(a.extra.get("odd_layers", ())) + ([a.embedding] if a.embedding else [])
        if n not in names
    ]
    assert not missing, f"{arch}: not among layer_names: {missing}"
    assert not any(m.training for m in a.model.modules())
    assert (arch in IMAGE_ARCHS) == (a.kind == "image") and (arch in TEXT_ARCHS) == (a.kind == "text")
    assert (arch in ATTENTION) == a.attention
    out = a.model(*a.args)
    assert out.dim() == 2 and out.shape[0] == 2 and out.shape[1] == a.n_classes


# ---------------------------------------------------------------------------------------------------------------
# conductance: every rule; completeness on cuts or a flag that names the layer

CONDUCTANCE_FNS = [f"conductance:{m}" for m in ("adaptive",) + RULES]


@pytest.mark.parametrize("arch,fn", cases(CONDUCTANCE_FNS))
def test_conductance(arch, fn, request):
    a = build(arch)
    method = fn.split(":")[1]
    layers = layers_of(a)
    before = snapshot(a.model)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        steps = {} if method == "adaptive" else {"n_steps": FIXED_STEPS}  # adaptive: the default budget (50)
        s = run(
            us.conductance,
            a.model,
            a.inputs,
            layers,
            method=method,
            path=us.PathConfig(gap_warning=TOL),
            **steps,
            **kw(a),
        )
    assert_untouched(before, a.model)
    assert s.layers == layers
    values = layer_values(a, layers)
    for layer in layers:
        check_dtype(a, s[layer], layer)
        assert first(s[layer]).shape == values[layer].shape, layer
        assert torch.isfinite(first(s[layer])).all(), layer
        assert s.delta[layer].shape == (2,)
    # F(x) − F(x'), recomputed
    target = top_class(a)
    rows = torch.arange(2)
    want = forward_at(a, 1.0)[rows, target].double() - forward_at(a, 0.0)[rows, target].double()
    close(s.output_diff, want, rtol_of(a, 1e-4), "output_diff")
    assert float(want.abs().max()) > 1e-6, "F(x) = F(x'): nothing to attribute (a constant model)"
    if method in JVP_RULES:  # Σ_units ∂F/∂y · dy/dα = dF/dα on every cut: the same totals, however coarse the rule
        parts = [v if isinstance(v, tuple) else (v,) for v in (s[layer] for layer in a.cuts)]
        totals = torch.stack([sum(p.double().flatten(1).sum(1) for p in ps) for ps in parts])
        size = max(float(sum(p.double().abs().flatten(1).sum(1) for p in ps).max()) for ps in parts)  # rounding scale
        close(totals, totals[:1].expand_as(totals), rtol_of(a, 1e-4), f"layer totals on the cuts {a.cuts}", scale=size)
    warned = " ".join(str(w.message) for w in caught if issubclass(w.category, us.CompletenessWarning))
    flagged = []
    for layer in a.cuts:
        rel = float(s.relative_delta(layer).max())
        if rel <= TOL and s.ok[layer]:
            continue
        assert not s.ok[layer], f"cut {layer!r}: completeness gap {100 * rel:.3g} % with ok=True"
        msgs = s.messages[layer]
        assert msgs and all(layer in m for m in msgs), f"cut {layer!r} not ok; its messages {msgs} do not name it"
        assert layer in warned, f"cut {layer!r} not ok but no CompletenessWarning names it"
        flagged.append(layer)
    flag(request, "flagged" if flagged else "ok")


# ---------------------------------------------------------------------------------------------------------------
# comparators against plain hooks / the literal reference


@pytest.mark.parametrize("arch,fn", cases(["internal_influence"]))
def test_internal_influence(arch, fn):
    a = build(arch)
    layers = [a.cuts[-1]] + list(a.non_cuts[:1])
    target = top_class(a)
    before = snapshot(a.model)
    # one row per pass, as the reference: group convolutions (RegNet) round differently in a batch, enough to
    # flip ReLUs on the path and move single rows' gradients by several % (plain torch does it too)
    s = run(
        us.internal_influence,
        a.model,
        a.inputs,
        layers,
        target=target,
        method="gausslegendre",
        n_steps=FIXED_STEPS,
        internal_batch_size=1,
        **kw(a),
    )
    assert_untouched(before, a.model)
    for layer in layers:
        check_dtype(a, s[layer], layer)
        ref = R.influence_rule(
            a.model,
            a.inputs,
            layer,
            target=target,
            n_steps=FIXED_STEPS,
            embedding=a.embedding,
            forward_args=a.additional_forward_args or (),
        )
        close(s[layer], ref, rtol_of(a), f"influence of {layer}")


@pytest.mark.parametrize("arch,fn", cases(["grad_x_activation"]))
def test_grad_x_activation(arch, fn):
    a = build(arch)
    layers = layers_of(a)
    target = top_class(a)
    before = snapshot(a.model)
    s = run(
        us.grad_x_activation,
        a.model,
        a.inputs,
        layers,
        target=target,
        additional_forward_args=a.additional_forward_args,
    )
    assert_untouched(before, a.model)
    for layer in layers:
        check_dtype(a, s[layer], layer)
        y, g = grads_at(a, layer, target)
        close(s[layer], y.double() * g.double(), rtol_of(a, 1e-5), f"grad×activation of {layer}")


@pytest.mark.parametrize("arch,fn", cases(["activation"]))
def test_activation(arch, fn):
    a = build(arch)
    layers = layers_of(a)
    before = snapshot(a.model)
    s = run(us.activation, a.model, a.inputs, layers, additional_forward_args=a.additional_forward_args)
    assert_untouched(before, a.model)
    values = layer_values(a, layers)
    for layer in layers:
        check_dtype(a, s[layer], layer)
        close(s[layer], values[layer], 1e-6, f"activation of {layer}")


def _unit_dim(a, layer, y):
    """DESIGN "Units": conv [N, C, H, W] → C (a channels-last [N, H, W, C] stage → C); token-major [N, T, D] → the
    D neurons over the real tokens; [N, D] → D. Returns (unit dim, the dims averaged over)."""
    if y.dim() == 2:
        return 1, ()
    if y.dim() == 4 and layer not in a.extra.get("channels_last", ()):
        return 1, (2, 3)
    return y.dim() - 1, tuple(range(1, y.dim() - 1))


@pytest.mark.parametrize("arch,fn", cases(["units"]))
def test_units_by_layout(arch, fn):
    a = build(arch)
    layers = layers_of(a)
    s = run(us.activation, a.model, a.inputs, layers, additional_forward_args=a.additional_forward_args)
    values = layer_values(a, layers)
    mask = a.additional_forward_args[0].double() if a.kind == "text" else None
    for layer in layers:
        y = values[layer].double()
        dim, over = _unit_dim(a, layer, y)
        if mask is not None and y.dim() == 3:  # the mean over the real tokens
            want = (y * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
        else:
            want = y.movedim(dim, -1).mean(tuple(range(1, y.dim() - 1))) if over else y
        close(s.per_unit(layer), want, 1e-5, f"per-unit activation of {layer} ({s.unit_spec(layer).layout})")


# ---------------------------------------------------------------------------------------------------------------
# Eq. 2 (neuron_conductance): Σ over the inputs = Eq. 3 of the same unit, same rule and nodes


def untouched_call(a, fn, *args, **kw_):
    """``fn(*args, **kw_)`` checked like every call: nothing raw escapes, the model is handed back unchanged."""
    before = snapshot(a.model)
    out = run(fn, *args, **kw_)
    assert_untouched(before, a.model)
    return out


@functools.lru_cache(maxsize=None)
def neuron_full(arch: str, method: str = "gausslegendre"):
    a = build(arch)
    n = ADAPTIVE_STEPS if method == "adaptive" else FIXED_STEPS
    return untouched_call(
        a,
        us.neuron_conductance,
        a.model,
        a.inputs,
        layer=a.layer,
        units=list(a.units),
        method=method,
        n_steps=n,
        **kw(a),
    )


@functools.lru_cache(maxsize=None)
def layer_conductance(arch: str, method: str, layer: str):
    a = build(arch)
    n = ADAPTIVE_STEPS if method == "adaptive" else FIXED_STEPS
    return untouched_call(
        a,
        us.conductance,
        a.model,
        a.inputs,
        [layer],
        method=method,
        n_steps=n,
        path=us.PathConfig(gap_warning=None),
        **kw(a),
    )


@pytest.mark.parametrize("arch,fn", cases(["neuron:gausslegendre", "neuron:riemann_middle", "neuron:adaptive"]))
def test_neuron_conductance_sums_to_layer_conductance(arch, fn):
    a = build(arch)
    method = fn.split(":")[1]
    got = neuron_full(arch, method)
    check_dtype(a, got, "neuron_conductance")
    embedded = layer_values(a, [a.embedding])[a.embedding] if a.embedding else a.inputs
    assert got.shape == (2, len(a.units), *embedded.shape[1:])
    s = layer_conductance(arch, method, a.layer)
    eq3 = s.per_unit(a.layer)[:, list(a.units)].double()
    eq2 = got.double().flatten(2).sum(2)
    slack = 0.0
    if method == "adaptive":  # other nodes than the layer's own run: within that run's error estimate
        slack = 2 * float(s.unit_error[a.layer][:, list(a.units)].abs().max())
    err = float((eq2 - eq3).abs().max())
    assert err <= rtol_of(a) * float(eq3.abs().max().clamp_min(1e-30)) + slack, (eq2, eq3)


FLAGGED_PATHS = ["tv_convnext_tiny", "mlp_layernorm_nobias"]  # LayerNorm of an exact 0 at the zero baseline


@pytest.mark.parametrize("arch,fn", cases(["neuron:flag"], FLAGGED_PATHS))
def test_neuron_conductance_says_when_its_path_is_not_resolved(arch, fn):
    """DESIGN: never a confident ranking of garbage. Where conductance marks the layer not ok, Eq. 2 through its
    units (the same rule and budget) must say so too: a CompletenessWarning naming the layer."""
    a = build(arch)
    s = layer_conductance(arch, "adaptive", a.layer)
    assert not s.ok[a.layer], "precondition: the layer's conductance is marked not ok"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run(
            us.neuron_conductance,
            a.model,
            a.inputs,
            layer=a.layer,
            units=list(a.units),
            method="adaptive",
            n_steps=ADAPTIVE_STEPS,
            **kw(a),
        )
    said = [str(w.message) for w in caught if issubclass(w.category, us.CompletenessWarning)]
    assert any(a.layer in m for m in said), f"no CompletenessWarning names {a.layer!r}: {said}"


@pytest.mark.parametrize("arch,fn", cases(["neuron:paired"]))
def test_neuron_conductance_paired(arch, fn):
    a = build(arch)
    units = [a.units[0], a.units[1]]
    before = snapshot(a.model)
    pair = run(
        us.neuron_conductance,
        a.model,
        a.inputs,
        layer=a.layer,
        units=units,
        paired=True,
        method="gausslegendre",
        n_steps=FIXED_STEPS,
        **kw(a),
    )
    assert_untouched(before, a.model)
    check_dtype(a, pair, "paired")
    full = neuron_full(arch)
    close(pair, torch.stack([full[0, 0], full[1, 1]]), 1e-5, "paired vs per-unit")


# ---------------------------------------------------------------------------------------------------------------
# ablation, scans, selectivity


@pytest.mark.parametrize("arch,fn", cases(["ablation_scores"]))
def test_ablation_scores(arch, fn):
    a = build(arch)
    units = list(a.units) + [2]
    target = top_class(a)
    before = snapshot(a.model)
    got = run(
        us.ablation_scores, a.model, a.inputs, a.layer, units=units, additional_forward_args=a.additional_forward_args
    )
    assert_untouched(before, a.model)
    check_dtype(a, got, "ablation_scores")
    assert got.shape == (2, len(units))
    spec = us.activation(a.model, a.inputs, [a.layer], additional_forward_args=a.additional_forward_args).unit_spec(
        a.layer
    )
    rows = torch.arange(2)
    F = forward_at(a, 1.0)[rows, target].double()
    want = torch.stack([F - ablated_output(a, a.layer, u, spec)[rows, target].double() for u in units], 1)
    close(got, want, rtol_of(a, 1e-5), "F(x) − F(x with the unit ablated)", scale=float(F.abs().max()))


def _batches(a):
    if a.kind == "text":
        return [
            {"input_ids": a.inputs, "attention_mask": a.additional_forward_args[0], "labels": a.labels},
            {"input_ids": a.more_inputs, "attention_mask": a.more_forward_args[0], "labels": a.more_labels},
        ]
    return [(a.inputs, a.labels), (a.more_inputs, a.more_labels)]


MAGNITUDE: dict = {}  # (arch, layer) -> max |y| seen: the scale of float32 rounding in means of y


def _own_units(a, layer, inputs, forward_args, reduce):
    """Per-unit activations ``[N, U]`` of ``layer`` from plain hooks (units as the library's spec says)."""
    spec = us.activation(a.model, a.inputs, [layer], additional_forward_args=a.additional_forward_args).unit_spec(layer)
    y = layer_values(a, [layer], inputs, forward_args)[layer]
    key = (a.name, layer)
    MAGNITUDE[key] = max(MAGNITUDE.get(key, 0.0), float(first(y).abs().max()))
    mask = forward_args[0] if a.kind == "text" else None
    return unit_values(y, spec, reduce=reduce, mask=mask)


def close_means(a, layer, got, want, what):
    """Means of a layer's values: float32 rounding scales with the values, not with their mean."""
    close(got, want, rtol_of(a, 1e-5), what, scale=max(float(want.abs().max()), MAGNITUDE[(a.name, layer)]))


@pytest.mark.parametrize("arch,fn", cases(["scan"]))
def test_scan_two_batches(arch, fn):
    a = build(arch)
    layer = a.layer
    before = snapshot(a.model)
    r = run(
        us.scan,
        a.model,
        _batches(a),
        [layer],
        scores=["activation", "conductance"],
        path=us.PathConfig(method="adaptive", n_steps=8),
        top_k=2,
        num_classes=2,
        embedding=a.embedding,
        progress=False,
    )
    assert_untouched(before, a.model)
    acts = torch.cat(
        [
            _own_units(a, layer, a.inputs, a.additional_forward_args, "mean"),
            _own_units(a, layer, a.more_inputs, a.more_forward_args, "mean"),
        ]
    )
    close_means(a, layer, r.mean(layer, score="activation"), acts.mean(0), "scan mean activation")
    labels = torch.cat([a.labels, a.more_labels])
    class_means = torch.stack([acts[labels == k].mean(0) for k in (0, 1)])
    close_means(a, layer, r.class_means(layer, score="activation"), class_means, "scan class means")
    conds = []
    for x, fa in ((a.inputs, a.additional_forward_args), (a.more_inputs, a.more_forward_args)):
        s = run(
            us.conductance,
            a.model,
            x,
            [layer],
            method="adaptive",
            n_steps=8,
            path=us.PathConfig(gap_warning=None),
            **kw(a, fa),
        )
        conds.append(s.per_unit(layer).double())
    close(r.mean(layer, score="conductance"), torch.cat(conds).mean(0), rtol_of(a, 1e-4), "scan mean conductance")
    top = r.top(layer, score="activation")
    assert top.indices.shape[1] == 2 and set(top.indices.flatten().tolist()) <= {0, 1, 2, 3}
    best = acts.argmax(0)
    assert torch.equal(top.indices[:, 0], best), "the top example of each unit"


@pytest.mark.parametrize("arch,fn", cases(["class_selectivity"]))
def test_class_selectivity(arch, fn):
    a = build(arch)
    layer = a.layer
    before = snapshot(a.model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # units that take negative values get NaN, with a warning
        sel = run(us.class_selectivity, a.model, _batches(a), [layer], num_classes=2, progress=False)[layer]
    assert_untouched(before, a.model)
    acts = torch.cat(
        [
            _own_units(a, layer, a.inputs, a.additional_forward_args, "mean"),
            _own_units(a, layer, a.more_inputs, a.more_forward_args, "mean"),
        ]
    )
    labels = torch.cat([a.labels, a.more_labels])
    means = torch.stack([acts[labels == k].mean(0) for k in (0, 1)])
    close_means(a, layer, sel.class_means, means, "class means")
    top, rest = means.max(0).values, means.min(0).values
    want = (top - rest) / (top + rest + 1e-7)
    defined = sel.defined
    assert torch.equal(defined, (acts >= 0).all(0)), "index defined exactly where the unit never goes negative"
    if defined.any():
        close(sel.index[defined], want[defined], 1e-4, "selectivity index")
        assert ((sel.index[defined] >= 0) & (sel.index[defined] <= 1)).all()


# ---------------------------------------------------------------------------------------------------------------
# images: IAM, inverse sets, a one-layer atlas


def _image_layer(a):
    return a.extra.get("image_layer") or (a.cuts[0] if a.cuts[0] != "stem" else a.cuts[1])


@pytest.mark.parametrize("arch,fn", cases(["independent_am"], IMAGE_ARCHS))
def test_independent_am(arch, fn):
    a = build(arch)
    layer = _image_layer(a)
    before = snapshot(a.model)
    r = run(us.independent_am, a.model, layer, [0, 1], shape=a.image_shape, steps=2, progress=False)
    assert_untouched(before, a.model)
    assert r.images.shape == (2, *a.image_shape)
    check_dtype(a, r.images, "IAM images")
    check_dtype(a, r.activations, "IAM activations")
    assert float(r.images.min()) >= 0 and float(r.images.max()) <= 1
    own = _own_units(a, layer, r.images.to(a.dtype), None, "mean")
    close_means(a, layer, r.activations, own, "IAM activations on the returned images")
    close_means(a, layer, r.own, own[[0, 1], [0, 1]], "each row's own unit")


@pytest.mark.parametrize("arch,fn", cases(["sample_inverse_set"], IMAGE_ARCHS))
def test_sample_inverse_set(arch, fn):
    from unitscope.synthesis.generators import FFTImageGenerator

    a = build(arch)
    layer = _image_layer(a)
    g = FFTImageGenerator(a.image_shape)
    codes = g.sample_codes(8, generator=torch.Generator().manual_seed(0))
    seen = _own_units(a, layer, g(codes).to(a.dtype), None, "mean")[:, 0]
    lo, hi = float(seen.quantile(0.25)), float(seen.quantile(0.75))
    before = snapshot(a.model)
    r = run(
        us.sample_inverse_set,
        a.model,
        [(layer, 0, lo, hi)],
        g,
        n_samples=4,
        n_seeds=2,
        sampler=us.SamplerConfig(max_seed_steps=20, max_sample_steps=4),
        progress=False,
    )
    assert_untouched(before, a.model)
    assert len(r) <= 4
    check_dtype(a, r.samples, "inverse-set samples")
    if len(r):
        own = _own_units(a, layer, r.samples.to(a.dtype), None, "mean")[:, 0]
        width = hi - lo
        assert ((own >= lo - 1e-4 * width) & (own <= hi + 1e-4 * width)).all(), (lo, hi, own)
        close_means(a, layer, r.activations[:, 0], own, "the verified activations")
    else:
        assert not r.ok and r.report
    assert r.samples.shape == (len(r), *a.image_shape)


@pytest.mark.parametrize("arch,fn", cases(["inverse:unreachable"], ["tv_mobilenet_v3_small"]))
def test_unreachable_inverse_set_is_reported(arch, fn):
    from unitscope.synthesis.generators import FFTImageGenerator

    a = build(arch)
    layer = _image_layer(a)
    before = snapshot(a.model)
    r = run(
        us.sample_inverse_set,
        a.model,
        [(layer, 0, 1e6, 2e6)],
        FFTImageGenerator(a.image_shape),
        n_samples=2,
        n_seeds=2,
        sampler=us.SamplerConfig(max_seed_steps=6, patience=2),
        on_empty="ignore",
        progress=False,
    )
    assert_untouched(before, a.model)
    assert len(r) == 0 and not r.ok and layer in r.report
    assert r.samples.shape == (0, *a.image_shape) and r.activations.shape == (0, 1)


@pytest.mark.parametrize("arch,fn", cases(["atlas"], IMAGE_ARCHS))
def test_atlas_one_layer(arch, fn):
    a = build(arch)
    layer = _image_layer(a)
    x, y = torch.cat([a.inputs, a.more_inputs]), torch.cat([a.labels, a.more_labels])
    before = snapshot(a.model)
    at = run(
        us.atlas,
        a.model,
        (x, y),
        layers=[layer],
        units={layer: [0, 1]},
        top_k=2,
        share_k=1,
        bins=8,
        path=us.PathConfig(n_steps=4),
        synthesis=us.SynthesisConfig(iam_steps=2, inverse_samples=1, inverse_steps=2),
        progress=False,
    )
    assert_untouched(before, a.model)
    assert [(u["layer"], u["unit"]) for u in at.units] == [(layer, 0), (layer, 1)]
    acts = _own_units(a, layer, x, None, "mean")
    for u in at.units:
        for e in u["exemplars"]:
            want = float(acts[e["index"], u["unit"]])
            assert abs(e["activation"] - want) <= rtol_of(a, 1e-5) * MAGNITUDE[(a.name, layer)] + 1e-6, (e, want)
        by_act = [e["index"] for e in u["exemplars"] if e["by"] == "activation"]
        assert by_act == acts[:, u["unit"]].argsort(descending=True)[: len(by_act)].tolist()
        means = [float(acts[y == k, u["unit"]].mean()) for k in (0, 1)]
        assert u["class_means"] == pytest.approx(means, abs=rtol_of(a, 1e-5) * MAGNITUDE[(a.name, layer)] + 1e-6)


# ---------------------------------------------------------------------------------------------------------------
# the same numbers inside torch.no_grad() and torch.inference_mode()


@functools.lru_cache(maxsize=None)
def outside(arch: str) -> dict:
    a = build(arch)
    return _grad_free_calls(a)


def _grad_free_calls(a) -> dict:
    """A function known broken on the architecture (its own cell shows it) is left out here."""
    target = top_class(a)
    calls = {
        "conductance": run(
            us.conductance,
            a.model,
            a.inputs,
            list(a.cuts),
            target=target,
            n_steps=8,
            path=us.PathConfig(gap_warning=None),
            **kw(a),
        ),
        "neuron_conductance": run(
            us.neuron_conductance,
            a.model,
            a.inputs,
            layer=a.layer,
            units=list(a.units),
            target=target,
            n_steps=4,
            **kw(a),
        ),
        "grad_x_activation": run(
            us.grad_x_activation,
            a.model,
            a.inputs,
            [a.layer],
            target=target,
            additional_forward_args=a.additional_forward_args,
        ),
    }
    if (a.name, "ablation_scores") not in KNOWN:
        calls["ablation_scores"] = run(
            us.ablation_scores,
            a.model,
            a.inputs,
            a.layer,
            units=list(a.units),
            target=target,
            additional_forward_args=a.additional_forward_args,
        )
    return calls


@pytest.mark.parametrize("arch,fn", cases(["no_grad", "inference_mode"]))
def test_same_numbers_without_grad(arch, fn):
    a = build(arch)
    ref = outside(arch)
    context = torch.no_grad if fn == "no_grad" else torch.inference_mode
    before = snapshot(a.model)
    with context():
        got = _grad_free_calls(a)
    assert_untouched(before, a.model)
    for name in ref:
        r, g = ref[name], got[name]
        if isinstance(r, us.Scores):
            for layer in r.layers:
                close(g[layer], r[layer], 1e-6, f"{name} {layer}")
                if r.delta:
                    close(g.delta[layer], r.delta[layer], 1e-6, f"{name} delta {layer}")
        else:
            close(g, r, 1e-6, name)


@pytest.mark.parametrize("arch,fn", cases(["atlas:no_grad"], ["tv_mobilenet_v3_small", "timm_resnet10t_aa"]))
def test_atlas_under_no_grad(arch, fn):
    a = build(arch)
    layer = _image_layer(a)
    x, y = torch.cat([a.inputs, a.more_inputs]), torch.cat([a.labels, a.more_labels])
    settings = dict(
        layers=[layer],
        units={layer: [0]},
        top_k=2,
        share_k=1,
        bins=8,
        path=us.PathConfig(n_steps=4),
        synthesis=us.SynthesisConfig(synthesize=False),
        progress=False,
    )
    ref = run(us.atlas, a.model, (x, y), **settings)
    with torch.no_grad():
        got = run(us.atlas, a.model, (x, y), **settings)
    assert got.units == ref.units


# ---------------------------------------------------------------------------------------------------------------
# failures: a UnitscopeError naming the layer or argument, and the model unchanged


def _malformed(a):
    """Inputs the model cannot take: an image with 2 channels, a sequence with a feature short, a token id past
    the vocabulary."""
    if a.kind == "text":
        ids = a.inputs.clone()
        ids[1, 1] = 10**4
        return ids, None
    return a.inputs[:, :2] if a.kind == "image" else a.inputs[..., :-1], None


@pytest.mark.parametrize("arch,fn", cases(["errors"]))
def test_failures_name_what_is_wrong_and_leave_the_model(arch, fn):
    a = build(arch)
    before = snapshot(a.model)
    with pytest.raises(us.UnitscopeError, match="no_such_layer") as e:
        run(us.conductance, a.model, a.inputs, [a.cuts[0], "no_such_layer"], n_steps=4, **kw(a))
    names = us.layer_names(a.model)
    assert any(f"'{n}'" in str(e.value) for n in names), f"no valid layer name suggested: {e.value}"
    assert_untouched(before, a.model)
    with pytest.raises(us.UnitscopeError, match="no_such_layer"):
        run(
            us.ablation_scores,
            a.model,
            a.inputs,
            "no_such_layer",
            units=[0],
            additional_forward_args=a.additional_forward_args,
        )
    assert_untouched(before, a.model)
    with pytest.raises(us.UnitscopeError, match="target"):
        run(us.conductance, a.model, a.inputs, [a.cuts[0]], target=a.n_classes + 3, n_steps=4, **kw(a))
    assert_untouched(before, a.model)
    with pytest.raises(us.UnitscopeError, match=a.layer.replace(".", r"\.")):
        run(us.neuron_conductance, a.model, a.inputs, layer=a.layer, units=[10**6], n_steps=4, **kw(a))
    assert_untouched(before, a.model)


TEXT_ARCHS = ["hf_gpt2", "hf_bert", "hf_llama", "hf_qwen2", "hf_bart", "hf_distilbert"]


@pytest.mark.parametrize("arch,fn", cases(["errors:inputs"]))
def test_inputs_the_model_cannot_take(arch, fn):
    """The model itself raises (with hooks in place): a UnitscopeError, and the model as it was."""
    a = build(arch)
    before = snapshot(a.model)
    inputs, forward_args = _malformed(a)
    for call in (
        lambda: us.conductance(a.model, inputs, [a.cuts[0]], n_steps=4, **kw(a, forward_args)),
        lambda: us.activation(
            a.model, inputs, [a.cuts[0]], additional_forward_args=forward_args or a.additional_forward_args
        ),
    ):
        with pytest.raises(us.UnitscopeError):
            run(call)
        assert_untouched(before, a.model)


ODD_ARCHS = ["timm_swin", "torch_gru"]  # their builders name an odd layer (extra["odd_layers"])


@pytest.mark.parametrize("arch,fn", cases(["odd_layers"], ODD_ARCHS))
def test_odd_layers_work_or_fail_cleanly(arch, fn):
    """A layer whose output is not ``[N, ...]`` (Swin's windows, GRU's ``h_n``): results or a UnitscopeError
    that names it — never a raw exception."""
    a = build(arch)
    layer = a.extra["odd_layers"][0]
    before = snapshot(a.model)
    for f in (
        lambda: us.conductance(a.model, a.inputs, [layer], n_steps=8, path=us.PathConfig(gap_warning=None)),
        lambda: us.conductance(
            a.model, a.inputs, [layer], n_steps=8, method="gausslegendre", path=us.PathConfig(gap_warning=None)
        ),
    ):
        try:
            run(f)
        except us.UnitscopeError as e:
            assert layer in str(e)
        assert_untouched(before, a.model)


# ---------------------------------------------------------------------------------------------------------------
# Captum parity (captum_compatible=True) on one layer per architecture where LayerConductance runs

# token models: Captum interpolates the inputs themselves (ids); bfloat16: Captum integrates in bfloat16, we in float32
CAPTUM_ARCHS = [
    n
    for n in ARCHS
    if n not in ("hf_gpt2", "hf_bert", "hf_llama", "hf_qwen2", "hf_bart", "hf_distilbert", "bfloat16_convnext_atto")
]


@pytest.mark.parametrize("arch,fn", cases(["captum"], CAPTUM_ARCHS))
def test_captum_parity(arch, fn, request):
    from captum.attr import LayerConductance

    a = build(arch)
    layer = a.captum_layer or a.cuts[1]
    target = top_class(a)
    before = snapshot(a.model)
    ours = run(
        us.conductance,
        a.model,
        a.inputs,
        [layer],
        target=target,
        n_steps=FIXED_STEPS,
        method="gausslegendre",
        path=us.PathConfig(captum_compatible=True, gap_warning=None),
    )
    assert_untouched(before, a.model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = LayerConductance(a.model, a.model.get_submodule(layer)).attribute(
            a.inputs, target=target, n_steps=FIXED_STEPS, method="gausslegendre"
        )
    close(ours[layer], ref.detach(), rtol_of(a, 1e-5), f"captum_compatible conductance of {layer}")
