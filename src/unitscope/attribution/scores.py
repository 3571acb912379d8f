"""Importance of hidden units: conductance and its comparators, every requested layer in one pass.

>>> import torch, torch.nn as nn
>>> torch.manual_seed(0) and None
>>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
>>> s = conductance(net, torch.randn(2, 4), layers=["1", "2"], target=0, n_steps=64)
>>> s["1"].shape, bool(s.relative_delta("1").max() < 1e-3)
(torch.Size([2, 8]), True)

Argument names follow Captum's. Differences from Captum, by design:

* ``conductance`` integrates on the layer's own path with the trapezoid of consecutive nodes
  (``½(∂F/∂y_k + ∂F/∂y_{k+1}) · Δy``), on the rule's nodes plus both end points; Captum's
  ``LayerConductance`` uses the left node's gradient only, on ``n_steps + 1`` nodes of the rule, ignoring
  the rule's weights. ``captum_compatible=True`` reproduces Captum's estimate exactly.
* ``internal_influence`` uses quadrature weights that sum to one; Captum's ``riemann_trapezoid`` weights
  sum to ``(n − 1)/n``. ``captum_compatible=True`` uses Captum's.
* ``target=None`` means the top predicted class of each example (pre-softmax), as in the papers.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn as nn

from . import paths
from .adaptive import integrate_adaptive
from .cuts import cut_examples
from .engine import autograd_on, evaluate, integrate, outputs_at_x
from ..core.errors import CompletenessWarning, UnitscopeError
from ..core.inputs import Target, make_target, model_device, prepare
from .estimates import diagnose_sums
from .results import Scores
from ..core.sites import resolve
from ..core.state import analysis_mode
from ..core.faults import model_errors
from ..core.units import find_mask, layer_specs
from ..core.dictionary import attach, dictionaries_mode

__all__ = ["conductance", "internal_influence", "grad_x_activation", "activation", "attribute", "SCORES"]

#: The scores ``attribute``/``scan`` compute (``scores=``, CLI ``--scores``); ``method`` is the integration rule.
SCORES = ("conductance", "internal_influence", "grad_x_activation", "activation")


def _endpoints(model, batch, target, internal_batch_size):
    """F(x) and F(x') by forward passes without a graph (used only when the path lacks its end points)."""
    n = batch.n
    example = torch.cat([torch.arange(n), torch.arange(n)])
    alpha = torch.cat([torch.ones(n), torch.zeros(n)]).double()
    step = 2 * n if internal_batch_size is None else max(1, internal_batch_size)
    Fs = []
    for r0 in range(0, 2 * n, step):
        ev = evaluate(model, batch, target, [], example[r0:r0 + step], alpha[r0:r0 + step], need_grad=False)
        Fs.append(ev.F.double().cpu())
    F = torch.cat(Fs)
    return F[:n], F[n:]


def _unwrap(parts_by_site, is_tuple, sites, dtype=None):
    """Detached CPU results in the model's dtype (float32 at least)."""
    out = {}
    for s in sites:
        parts = [p.detach().cpu() if dtype is None else p.detach().to(dtype).cpu() for p in parts_by_site[s.name]]
        out[s.name] = tuple(parts) if is_tuple.get(s.name) else parts[0]
    return out


def _result_dtype(values: dict) -> torch.dtype:
    first = next(iter(values.values()))
    return (first[0] if isinstance(first, tuple) else first).dtype


def _check_gaps(scores: Scores, threshold: float | None) -> None:
    """A CompletenessWarning per layer that is not ok (its message says where and what to try), and for a
    gap above ``threshold`` on a layer that is ok."""
    if threshold is None or not scores.delta:
        return
    for name in scores.layers:
        cut = getattr(scores, "cut", {}).get(name)
        if scores.ok and not scores.ok.get(name, True):
            more = len(scores.messages[name]) - 1
            warnings.warn(scores.messages[name][0] + (f" (and {more} more examples)" if more > 0 else ""),
                          CompletenessWarning, stacklevel=3)
            continue
        rel = scores.relative_delta(name)
        if cut is not None:   # checked: the gap of an example on which the layer is no cut is no error
            rel = torch.where(cut, rel, torch.zeros_like(rel))
        worst = int(rel.argmax())
        if float(rel[worst]) > threshold:
            if scores.settings.get("method") == "adaptive":
                advice = ("if the layer is a cut of the network its units' error estimates are within tolerance, so "
                          "the layer is probably not one (a residual branch, a transformer MLP): its units need not "
                          "add up to F(x) − F(x')")
            else:
                advice = "raise n_steps or use method='adaptive'"
            warnings.warn(
                f"{scores.score} of layer {name!r}: completeness gap {100 * float(rel[worst]):.1f}% of "
                f"|F(x) − F(x')| on example {worst} (threshold {100 * threshold:.1f}%, "
                f"{int(scores.n_evals[worst])} path points, method={scores.settings.get('method')!r}); {advice}",
                CompletenessWarning, stacklevel=3)


def attribute(model: nn.Module, inputs, layers, *, scores=SCORES, baselines=None, target=None,
              additional_forward_args=None, n_steps: int = 50, method: str = "adaptive",
              internal_batch_size: int | None = None, attribute_to_layer_input: bool = False,
              captum_compatible: bool = False, rtol: float = 1e-3, gap_warning: float | None = 0.05,
              progress: bool | None = None, spec=None, mask=None, embedding=None,
              dictionaries=None) -> dict[str, Scores]:
    """Several scores for several layers from one pass over the path: ``{score: Scores}``.

    >>> import torch, torch.nn as nn
    >>> net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    >>> out = attribute(net, torch.ones(1, 3), ["1"], scores=["conductance", "activation"], target=1)
    >>> sorted(out)
    ['activation', 'conductance']

    ``scores``: any of :data:`SCORES` (a name or a list).
    ``method`` is ``"adaptive"`` (the default; with ``captum_compatible=True`` it means Captum's default,
    ``"gausslegendre"``): panels of the path are refined where the error estimates of the top 10 units
    per example and layer (and the gap of layers that are cuts) are largest, until they are within ``rtol``
    of the layer's largest |unit| or ``n_steps`` evaluations per example are spent (``scores.n_evals``);
    values only, one forward and backward per evaluation. Or a fixed rule: ``gausslegendre`` is applied as it is
    named to ``∂F/∂y · dy/dα``, with dy/dα by forward-mode autodiff (spectral accuracy on smooth paths; each
    evaluation costs about 2–3× a plain one on CPU: ``bench/floor.py``); ``riemann_left``, ``riemann_right``,
    ``riemann_middle`` and ``riemann_trapezoid`` place their nodes (plus both end points) and take the Stieltjes
    trapezoid of consecutive nodes, values only (second order — at least the rule's own order — and exact where
    ∂F/∂y is constant between nodes, as on a ReLU network's pieces; one plain forward and backward per node).
    ``scores.error[layer]`` is the per-unit error estimate, ``scores.ok[layer]`` whether the layer met the tolerance
    (``max(rtol, gap_warning)``), ``scores.messages[layer]`` says why not and what to try.
    A :class:`CompletenessWarning` is issued for a layer that is not ok, or whose gap exceeds ``gap_warning``.
    ``spec`` (a layout name, a :class:`unitscope.core.units.UnitSpec` or ``{layer: ...}``) sets what
    ``Scores.per_unit``/``top`` reduce to (default: by the layer's layout); ``mask`` (``[N, T]``; default: the
    ``attention_mask`` among ``additional_forward_args``) leaves padding tokens out of those reductions.
    Token ids: ``activation``/``grad_x_activation`` take them as inputs; path methods need ``embedding`` (the
    name of the module that embeds them, or ``"auto"``: the one ``get_input_embeddings()`` returns, else the model's
    only ``nn.Embedding``): the path starts at its output (``baselines``: zeros, a token id such
    as the pad id, or embeddings).
    ``dictionaries``: ``{layer: dictionary}`` (a :class:`unitscope.Dictionary`, a module with ``encode``/``decode``,
    or the path of a SAELens folder or state-dict file; each layer among ``layers``): that layer is read as the
    dictionary's features ``f = encode(y)`` and its error node ``ε = y − decode(f)`` (the forward pass unchanged:
    ``decode(f) + ε`` is handed on), so ``scores[layer]`` is ``(features [N, ..., F], error [N, ..., D])`` and
    ``per_unit(layer)`` is ``[N, F + 1]``, the error node last (:mod:`unitscope.core.dictionary`).
    """
    methods = [scores] if isinstance(scores, str) else list(scores)
    unknown = [m for m in methods if m not in SCORES]
    if unknown or not methods:
        raise UnitscopeError(f"unknown score(s) {unknown}", hint=f"choose from {', '.join(SCORES)}")
    if captum_compatible and method == "adaptive":
        method = "gausslegendre"  # Captum's default rule: captum_compatible reproduces Captum's estimates
    if method != "adaptive" and method not in paths.RULES:
        raise UnitscopeError(f"unknown integration method {method!r}",
                             hint=f"choose one of {', '.join(paths.RULES + ('adaptive',))}")
    if not isinstance(n_steps, int) or n_steps < 2:
        raise UnitscopeError("n_steps must be an integer ≥ 2", n_steps=n_steps)
    sites = attach(model, resolve(model, layers, use_input=attribute_to_layer_input), dictionaries,
                   use_input=attribute_to_layer_input)
    modules = {id(s.module): s.name for s in sites}
    path_methods = [m for m in methods if m in ("conductance", "internal_influence")]
    batch = prepare(inputs, baselines, additional_forward_args, device=model_device(model), allow_ids=not path_methods,
                    embedding=embedding, model=model)
    n = batch.n
    point_methods = [m for m in methods if m in ("grad_x_activation", "activation")]
    settings = dict(n_steps=n_steps, method=method, captum_compatible=captum_compatible)
    results: dict[str, Scores] = {}
    with model_errors(model, inputs=batch.inputs), analysis_mode(model), \
            dictionaries_mode(s.dictionary for s in sites), autograd_on():
        needs_target = bool(path_methods) or "grad_x_activation" in methods
        if needs_target and target is None:
            tgt = make_target(None, n, outputs_at_x(model, batch, internal_batch_size))
        elif needs_target:
            tgt = make_target(target, n)
        else:
            tgt = Target(rows_fn=lambda out, example: torch.zeros(example.numel()))
        target_index = tgt.index

        runs = []  # (methods served, PathSums)
        if path_methods and method == "adaptive":
            runs.append((path_methods + point_methods,
                         integrate_adaptive(model, batch, tgt, sites, budget=n_steps, rtol=rtol,
                                            internal_batch_size=internal_batch_size, progress=progress,
                                            influence="internal_influence" in path_methods)))
        elif path_methods and captum_compatible:
            if "conductance" in path_methods:
                alphas, _ = paths.captum_rule(method, n_steps + 1)
                runs.append((["conductance"], integrate(model, batch, tgt, sites, alphas, None, conductance="left",
                                                        internal_batch_size=internal_batch_size, progress=progress,
                                                        estimate=False)))
            if "internal_influence" in path_methods:
                alphas, weights = paths.captum_rule(method, n_steps)
                runs.append((["internal_influence"], integrate(model, batch, tgt, sites, alphas, weights,
                                                               conductance=None,
                                                               internal_batch_size=internal_batch_size,
                                                               progress=progress, estimate=False)))
        elif path_methods:
            alphas, weights = paths.path_nodes(method, n_steps)
            runs.append((path_methods + point_methods,
                         integrate(model, batch, tgt, sites, alphas, weights,
                                   conductance=(None if "conductance" not in path_methods else
                                                "jvp" if method in paths.JVP_RULES else "trapezoid"),
                                   internal_batch_size=internal_batch_size, progress=progress)))
        served = {m for ms, _ in runs for m in ms}
        if any(m not in served for m in point_methods):
            runs.append((point_methods, integrate(model, batch, tgt, sites, torch.ones(1, dtype=torch.float64), None,
                                                  conductance=None, need_grad="grad_x_activation" in methods,
                                                  internal_batch_size=internal_batch_size, progress=progress,
                                                  estimate=False)))
            served = {m for ms, _ in runs for m in ms}

        token_mask = find_mask(mask, additional_forward_args, inputs)
        specs = None
        for served_methods, sums in runs:
            is_tuple = sums.is_tuple
            for m in served_methods:
                if m in results or m not in methods:
                    continue
                delta = output_diff = None
                error = unit_error = None
                if m in ("conductance", "internal_influence") and not captum_compatible:
                    key = "conductance" if m == "conductance" else "influence"
                    raw, unit_raw = getattr(sums, key + "_error"), getattr(sums, key + "_unit_error")
                    if raw:
                        error = _unwrap(raw, is_tuple, sites)
                        unit_error = _unwrap(unit_raw, is_tuple, sites)
                if m == "conductance":
                    F_x, F_b = sums.F_x, sums.F_baseline
                    if torch.isnan(F_x).any() or torch.isnan(F_b).any():
                        F_x, F_b = _endpoints(model, batch, tgt, internal_batch_size)
                    values = _unwrap(sums.conductance, is_tuple, sites)
                    rdtype = _result_dtype(values)
                    output_diff = (F_x - F_b).to(rdtype)
                    delta = {s.name: (sum(p.double().cpu().flatten(1).sum(1) for p in sums.conductance[s.name])
                                      - (F_x - F_b)).to(rdtype) for s in sites}
                elif m == "internal_influence":
                    values = _unwrap(sums.influence, is_tuple, sites)
                elif m == "activation":
                    values = _unwrap(sums.value_at_x, is_tuple, sites)
                else:
                    prod = {k: [v * g for v, g in zip(sums.value_at_x[k], sums.grad_at_x[k])]
                            for k in sums.value_at_x}
                    values = _unwrap(prod, is_tuple, sites)
                if specs is None:
                    specs = layer_specs(model, sites, values, spec)
                n_evals = sums.n_evals if m in ("conductance", "internal_influence") else torch.ones(n, dtype=torch.long)
                ok = messages = None
                tol = max(rtol, gap_warning if gap_warning is not None else 0.05)
                if m == "conductance":
                    # a gap above the tolerance: is the layer a cut (then the gap is an error) or bypassed?
                    od = output_diff.double().abs()
                    wide = [st for st in sites if bool((delta[st.name].double().abs() > tol * od).any())]
                    cuts = cut_examples(model, batch, tgt, wide, internal_batch_size=internal_batch_size)
                if unit_error is not None:
                    out_diff = output_diff if output_diff is not None else torch.ones(n)
                    ok, messages = diagnose_sums(sums, values, unit_error, delta if m == "conductance" else None,
                                                 out_diff, sites, method=method, tol=tol,
                                                 cuts=cuts if m == "conductance" else None)
                results[m] = Scores(m, values, delta=delta, output_diff=output_diff, n_evals=n_evals,
                                    target=target_index, modules=modules, settings=settings, error=error,
                                    unit_error=unit_error, ok=ok, messages=messages, specs=specs,
                                    mask=token_mask)
                if m == "conductance":
                    results[m].cut = cuts
    if "conductance" in results:
        _check_gaps(results["conductance"], gap_warning)
    return {m: results[m] for m in methods}


def conductance(model: nn.Module, inputs, layers, *, baselines=None, target=None, additional_forward_args=None,
                n_steps: int = 50, method: str = "adaptive", internal_batch_size: int | None = None,
                attribute_to_layer_input: bool = False, captum_compatible: bool = False, rtol: float = 1e-3,
                gap_warning: float | None = 0.05, progress: bool | None = None, spec=None, mask=None,
                embedding=None, dictionaries=None) -> Scores:
    """Total conductance of every unit of every layer in ``layers`` (Eq. 3), with its completeness gap.

    >>> import torch, torch.nn as nn
    >>> net = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 1))
    >>> s = conductance(net, torch.ones(3, 2), net[1], n_steps=32)
    >>> s[net[1]].shape, s.delta["1"].shape
    (torch.Size([3, 2]), torch.Size([3]))
    """
    return attribute(model, inputs, layers, scores=["conductance"], baselines=baselines, target=target,
                     additional_forward_args=additional_forward_args, n_steps=n_steps, method=method,
                     internal_batch_size=internal_batch_size, attribute_to_layer_input=attribute_to_layer_input,
                     captum_compatible=captum_compatible, rtol=rtol, gap_warning=gap_warning,
                     progress=progress, spec=spec, mask=mask, embedding=embedding,
                     dictionaries=dictionaries)["conductance"]


def internal_influence(model: nn.Module, inputs, layers, *, baselines=None, target=None,
                       additional_forward_args=None, n_steps: int = 50, method: str = "adaptive",
                       internal_batch_size: int | None = None, attribute_to_layer_input: bool = False,
                       captum_compatible: bool = False, progress: bool | None = None, spec=None, mask=None,
                       embedding=None, dictionaries=None) -> Scores:
    """Internal influence (Datta et al. 2018): ``∫_0^1 ∂F/∂y(x_α) dα`` for every unit of ``layers``."""
    return attribute(model, inputs, layers, scores=["internal_influence"], baselines=baselines, target=target,
                     additional_forward_args=additional_forward_args, n_steps=n_steps, method=method,
                     internal_batch_size=internal_batch_size, attribute_to_layer_input=attribute_to_layer_input,
                     captum_compatible=captum_compatible, progress=progress, spec=spec, mask=mask,
                     embedding=embedding, dictionaries=dictionaries)["internal_influence"]


def grad_x_activation(model: nn.Module, inputs, layers, *, target=None, additional_forward_args=None,
                      attribute_to_layer_input: bool = False, internal_batch_size: int | None = None,
                      spec=None, mask=None, dictionaries=None) -> Scores:
    """Gradient × activation ``y · ∂F/∂y`` at the input, for every unit of ``layers``."""
    return attribute(model, inputs, layers, scores=["grad_x_activation"], target=target,
                     additional_forward_args=additional_forward_args, internal_batch_size=internal_batch_size,
                     attribute_to_layer_input=attribute_to_layer_input, spec=spec, mask=mask,
                     dictionaries=dictionaries)["grad_x_activation"]


def activation(model: nn.Module, inputs, layers, *, additional_forward_args=None,
               attribute_to_layer_input: bool = False,
               internal_batch_size: int | None = None, spec=None, mask=None, dictionaries=None) -> Scores:
    """The layers' activations at the input (no gradients); token ids are accepted as inputs."""
    return attribute(model, inputs, layers, scores=["activation"], additional_forward_args=additional_forward_args,
                     internal_batch_size=internal_batch_size,
                     attribute_to_layer_input=attribute_to_layer_input, spec=spec, mask=mask,
                     dictionaries=dictionaries)["activation"]
