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

The path's settings travel as one :class:`unitscope.PathConfig` (``path=``); these functions also take Captum's names
for four of its fields (``baselines``, ``n_steps``, ``method``, ``internal_batch_size``). The scores are a registry,
:data:`REGISTRY`: each :class:`Score` says what it needs from the pass over the path and how its values are finished,
and :func:`attribute` serves any set of them from one pass — a new score is one new entry.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn

from . import paths
from .adaptive import integrate_adaptive
from .config import PathConfig, path_config
from .cuts import cut_examples
from .engine import autograd_on, evaluate, integrate, outputs_at_x
from ..core.errors import CompletenessWarning, UnitscopeError
from ..core.inputs import Target as RowTarget
from ..core.inputs import make_target, model_device, prepare
from .estimates import diagnose_sums
from .results import Scores
from ..core.sites import resolve
from ..core.state import analysis_mode
from ..core.types import Baselines, Inputs, Layers, Target
from ..core.faults import model_errors
from ..core.units import find_mask, layer_specs
from ..core.dictionary import attach, dictionaries_mode

__all__ = [
    "conductance",
    "internal_influence",
    "grad_x_activation",
    "activation",
    "attribute",
    "SCORES",
    "REGISTRY",
    "Score",
    "chosen_scores",
]


@dataclass(frozen=True)
class Score:
    """One score of :func:`attribute`: what it needs from the pass and how it is finished.

    - ``on_path``: integrated along the path from the baselines (token ids then need an ``embedding``); otherwise
      read at the inputs (``α = 1``), from the path pass's end point when there is one;
    - ``target``: it differentiates the target ``F``; ``grad_at_x``: it needs ``∂F/∂y`` at the inputs;
    - ``needs``: what the path pass must integrate, ``"conductance"`` (``∂F/∂y · dy/dα``, Eq. 3) or ``"influence"``
      (``∂F/∂y``);
    - ``values(sums) -> {layer: [part, …]}``: its values from the pass's :class:`unitscope.attribution.engine.PathSums`;
    - ``errors``: the ``PathSums`` fields of its error estimates (``NAME_error``, ``NAME_unit_error``), or ``None``;
    - ``complete``: its sum over a layer is ``F(x) − F(x')`` — a completeness gap, the cut test of a layer with a
      large one and the gap warning;
    - ``captum(method, n_steps) -> (alphas, weights, conductance)``: Captum's own pass, for ``captum_compatible``."""

    name: str
    on_path: bool
    target: bool
    values: Callable
    grad_at_x: bool = False
    needs: str | None = None
    errors: str | None = None
    complete: bool = False
    captum: Callable | None = None


def _gradient_times_activation(sums) -> dict:
    return {k: [v * g for v, g in zip(sums.value_at_x[k], sums.grad_at_x[k])] for k in sums.value_at_x}


#: Every score by name, in the order its passes run. A new score is one entry here.
REGISTRY: dict[str, Score] = {
    s.name: s
    for s in (
        Score(
            "conductance",
            on_path=True,
            target=True,
            values=lambda sums: sums.conductance,
            needs="conductance",
            errors="conductance",
            complete=True,
            captum=lambda method, n: (paths.captum_rule(method, n + 1)[0], None, "left"),
        ),
        Score(
            "internal_influence",
            on_path=True,
            target=True,
            values=lambda sums: sums.influence,
            needs="influence",
            errors="influence",
            captum=lambda method, n: (*paths.captum_rule(method, n), None),
        ),
        Score("grad_x_activation", on_path=False, target=True, grad_at_x=True, values=_gradient_times_activation),
        Score("activation", on_path=False, target=False, values=lambda sums: sums.value_at_x),
    )
}

#: The scores ``attribute``/``scan`` compute (``scores=``, CLI ``--scores``); ``method`` is the integration rule.
SCORES = tuple(REGISTRY)


def chosen_scores(scores) -> list[Score]:
    """The :class:`Score` entries of ``scores`` (a name or a list of names); an unknown name is an error."""
    names = [scores] if isinstance(scores, str) else list(scores)
    unknown = [m for m in names if m not in REGISTRY]
    if unknown or not names:
        raise UnitscopeError(f"unknown score(s) {unknown}", hint=f"choose from {', '.join(REGISTRY)}")
    return [REGISTRY[m] for m in names]


def _endpoints(model, batch, target, internal_batch_size):
    """F(x) and F(x') by forward passes without a graph (used only when the path lacks its end points)."""
    n = batch.n
    example = torch.cat([torch.arange(n), torch.arange(n)])
    alpha = torch.cat([torch.ones(n), torch.zeros(n)]).double()
    step = 2 * n if internal_batch_size is None else max(1, internal_batch_size)
    Fs = []
    for r0 in range(0, 2 * n, step):
        ev = evaluate(model, batch, target, [], example[r0 : r0 + step], alpha[r0 : r0 + step], need_grad=False)
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
            warnings.warn(
                scores.messages[name][0] + (f" (and {more} more examples)" if more > 0 else ""),
                CompletenessWarning,
                stacklevel=3,
            )
            continue
        rel = scores.relative_delta(name)
        if cut is not None:  # checked: the gap of an example on which the layer is no cut is no error
            rel = torch.where(cut, rel, torch.zeros_like(rel))
        worst = int(rel.argmax())
        if float(rel[worst]) > threshold:
            if scores.settings.get("method") == "adaptive":
                advice = (
                    "if the layer is a cut of the network its units' error estimates are within tolerance, so "
                    "the layer is probably not one (a residual branch, a transformer MLP): its units need not "
                    "add up to F(x) − F(x')"
                )
            else:
                advice = "raise n_steps or use method='adaptive'"
            warnings.warn(
                f"{scores.score} of layer {name!r}: completeness gap {100 * float(rel[worst]):.1f}% of "
                f"|F(x) − F(x')| on example {worst} (threshold {100 * threshold:.1f}%, "
                f"{int(scores.n_evals[worst])} path points, method={scores.settings.get('method')!r}); {advice}",
                CompletenessWarning,
                stacklevel=3,
            )


def attribute(
    model: nn.Module,
    inputs: Inputs,
    layers: Layers,
    *,
    scores=SCORES,
    baselines: Baselines = None,
    target: Target = None,
    additional_forward_args=None,
    n_steps: int | None = None,
    method: str | None = None,
    internal_batch_size: int | None = None,
    attribute_to_layer_input: bool = False,
    path: PathConfig | None = None,
    progress: bool | None = None,
    spec=None,
    mask=None,
    embedding=None,
    dictionaries=None,
) -> dict[str, Scores]:
    """Several scores for several layers from one pass over the path: ``{score: Scores}``.

    The scores that integrate along the path from the baselines to the inputs (``conductance``,
    ``internal_influence``) share one pass; those read at the inputs (``grad_x_activation``, ``activation``) take its
    end point, or one forward (and backward) pass of their own.

    ``method`` (``path.method``) is ``"adaptive"`` (the default; with ``captum_compatible=True`` it means Captum's
    default, ``"gausslegendre"``): panels of the path are refined where the error estimates of the top 10 units
    per example and layer (and the gap of layers that are cuts) are largest, until they are within ``rtol``
    of the layer's largest |unit| or ``n_steps`` evaluations per example are spent (``scores.n_evals``);
    values only, one forward and backward per evaluation. Or a fixed rule: ``gausslegendre`` is applied as it is
    named to ``∂F/∂y · dy/dα``, with dy/dα by forward-mode autodiff (spectral accuracy on smooth paths; each
    evaluation costs more than a plain one: ``bench/floor.py`` measures it); ``riemann_left``, ``riemann_right``,
    ``riemann_middle`` and ``riemann_trapezoid`` place their nodes (plus both end points) and take the Stieltjes
    trapezoid of consecutive nodes, values only (second order — at least the rule's own order — and exact where
    ∂F/∂y is constant between nodes, as on a ReLU network's pieces; one plain forward and backward per node).
    A :class:`unitscope.CompletenessWarning` is issued for a layer that is not ok, or whose completeness gap exceeds
    ``path.gap_warning``.

    Parameters
    ----------
    model : nn.Module
        The network. It is handed back as it came (no hooks left; ``training`` flags, ``requires_grad`` and ``.grad``
        restored, also when the call raises); the analysis runs in eval mode.
    inputs : Tensor or tuple of Tensor
        A batch ``[N, ...]``, or a tuple of such tensors (one per positional input of the model). Token ids:
        ``activation`` and ``grad_x_activation`` take them as they are; the path scores need ``embedding=``.
    layers : str, nn.Module or list of them
        Dotted names from ``model.named_modules()`` or the modules themselves, one or a list; ``"NAME@K"`` for the
        K-th call of a module called several times per forward pass (:func:`unitscope.layer_names` lists them). A
        misspelt name is an error that lists the closest names.
    scores : str or sequence of str, default SCORES
        Which scores: any of :data:`SCORES` — ``"conductance"``, ``"internal_influence"``, ``"grad_x_activation"``,
        ``"activation"`` (a name or a list; :data:`REGISTRY` says what each needs). The default is all four.
    baselines : None, float, Tensor or tuple, default None
        The path's start ``x'``: Captum's name for ``path.baselines`` (see :class:`unitscope.PathConfig`). ``None``
        leaves it to ``path`` (zeros by default).
    target : None, int, sequence, Tensor, callable or tuple, default None
        Which scalar ``F`` of the output is explained: ``None`` — each example's top predicted class (pre-softmax, the
        papers' choice); an int; one class per example (a list or a tensor ``[N]``); a callable
        ``output -> Tensor [N]``; or, for dict / ``ModelOutput`` outputs, a tuple ``(key, *index)`` such as
        ``("logits", -1, token)`` (``output["logits"][:, -1, token]``).
    additional_forward_args : tuple, dict or None, default None
        Further arguments of ``model``: a tuple (positional arguments after the inputs) or a dict (keyword arguments,
        e.g. ``{"attention_mask": mask}``). Tensors whose first dim is the batch's follow the rows.
    n_steps : int or None, default None
        Captum's name for ``path.n_steps`` (see :class:`unitscope.PathConfig`; 50 by default).
    method : str or None, default None
        Captum's name for ``path.method`` (see :class:`unitscope.PathConfig`; ``"adaptive"`` by default).
    internal_batch_size : int or None, default None
        Captum's name for ``path.internal_batch_size`` (see :class:`unitscope.PathConfig`): rows (examples × path
        points) per forward and backward pass, the memory bound; ``None``: all at once.
    attribute_to_layer_input : bool, default False
        Score each layer's input instead of its output (as in Captum).
    path : PathConfig or None, default None
        How the path integral is computed: a :class:`unitscope.PathConfig` (``None``: ``PathConfig()``, 50 path
        points of the adaptive rule). ``baselines``, ``n_steps``, ``method`` and ``internal_batch_size`` may also be
        given as keywords, Captum's names for those fields: a keyword fills a field that ``path`` leaves at its
        default, one that disagrees with a field ``path`` sets is an error.
    progress : bool or None, default None
        ``None``: a progress bar on a terminal, progress lines in a log (``UNITSCOPE_PROGRESS=log``); ``False``: none.
    spec : str, UnitSpec, dict or None, default None
        What ``Scores.per_unit`` / ``top`` reduce to: a layout name, a :class:`unitscope.core.units.UnitSpec` or
        ``{layer: ...}`` (``None``: by the layer's layout — a conv's channels, a transformer layer's neurons).
    mask : Tensor or None, default None
        ``[N, T]``, 1 for a real token: leaves padding tokens out of those reductions (``None``: the
        ``attention_mask`` among ``additional_forward_args``, if any).
    embedding : str or None, default None
        For token-id inputs: the name of the module that embeds them, or ``"auto"`` (the one
        ``get_input_embeddings()`` returns, else the model's only ``nn.Embedding``). The path starts at its output
        (``baselines``: zeros, a token id such as the pad id, or embeddings).
    dictionaries : dict or None, default None
        ``{layer: dictionary}`` (a :class:`unitscope.Dictionary`, a module with ``encode``/``decode``, or the path of a
        SAELens folder or state-dict file; each layer among ``layers``): that layer is read as the dictionary's
        features ``f = encode(y)`` and its error node ``ε = y − decode(f)`` (the forward pass unchanged), so
        ``scores[layer]`` is ``(features [N, ..., F], error [N, ..., D])`` and ``per_unit(layer)`` is ``[N, F + 1]``,
        the error node last (:mod:`unitscope.core.dictionary`).

    Returns
    -------
    dict of str to Scores
        One :class:`unitscope.Scores` per score, in the order of ``scores``: ``out[score][layer]`` is shaped like the
        layer's output, ``[N, ...]``. For the path scores ``out[score].error[layer]`` is the per-unit error estimate
        (same shape), ``out[score].ok[layer]`` whether the layer met the tolerance (``max(rtol, gap_warning)``) and
        ``out[score].messages[layer]`` why not and what to try; for ``conductance``, ``delta[layer]`` is the
        completeness gap ``[N]`` (the sum of the layer's units minus ``F(x) − F(x')``).

    Raises
    ------
    UnitscopeError
        For a mistake it can name, with the layer, the shapes and what would work: an unknown layer (with the
        closest names), an unknown score or integration method, ``n_steps`` < 2, a keyword that disagrees with
        ``path``, inputs that are empty, non-finite or of different batch sizes, token ids without ``embedding``,
        baselines that do not broadcast, a target out of range or that picks more than one value per example, a
        dictionary that does not fit its layer, or the model failing on the inputs or on points of the path. A
        gradient that cannot be had is an error, never zeros.

    Examples
    --------
    >>> import torch, torch.nn as nn
    >>> net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    >>> out = attribute(net, torch.ones(1, 3), ["1"], scores=["conductance", "activation"], target=1)
    >>> sorted(out), out["conductance"]["1"].shape, out["activation"]["1"].shape
    (['activation', 'conductance'], torch.Size([1, 4]), torch.Size([1, 4]))
    """
    chosen = chosen_scores(scores)
    cfg = path_config(
        path, baselines=baselines, n_steps=n_steps, method=method, internal_batch_size=internal_batch_size
    )
    n_steps, rtol, gap_warning = cfg.n_steps, cfg.rtol, cfg.gap_warning
    captum_compatible, internal_batch_size = cfg.captum_compatible, cfg.internal_batch_size
    method = "gausslegendre" if captum_compatible and cfg.method == "adaptive" else cfg.method  # Captum's default
    sites = attach(
        model,
        resolve(model, layers, use_input=attribute_to_layer_input),
        dictionaries,
        use_input=attribute_to_layer_input,
    )
    modules = {id(s.module): s.name for s in sites}
    on_path = [s for s in chosen if s.on_path]
    at_x = [s for s in chosen if not s.on_path]
    names = [s.name for s in chosen]
    batch = prepare(
        inputs,
        cfg.baselines,
        additional_forward_args,
        device=model_device(model),
        allow_ids=not on_path,
        embedding=embedding,
        model=model,
    )
    n = batch.n
    settings = dict(n_steps=n_steps, method=method, captum_compatible=captum_compatible)
    results: dict[str, Scores] = {}
    with (
        model_errors(model, inputs=batch.inputs),
        analysis_mode(model),
        dictionaries_mode(s.dictionary for s in sites),
        autograd_on(),
    ):
        needs_target = any(s.target for s in chosen)
        if needs_target and target is None:
            tgt = make_target(None, n, outputs_at_x(model, batch, internal_batch_size))
        elif needs_target:
            tgt = make_target(target, n)
        else:
            tgt = RowTarget(rows_fn=lambda out, example: torch.zeros(example.numel()))
        target_index = tgt.index

        runs = []  # (scores served, PathSums)
        influence = any(s.needs == "influence" for s in on_path)  # the pass sums it only when a score reads it
        if on_path and method == "adaptive":
            runs.append(
                (
                    on_path + at_x,
                    integrate_adaptive(
                        model,
                        batch,
                        tgt,
                        sites,
                        budget=n_steps,
                        rtol=rtol,
                        internal_batch_size=internal_batch_size,
                        progress=progress,
                        influence=influence,
                    ),
                )
            )
        elif on_path and captum_compatible:  # Captum's own pass for each score, in the registry's order
            for s in REGISTRY.values():
                if s in on_path:
                    assert s.captum is not None, s.name  # every score on the path names Captum's pass
                    alphas, weights, mode = s.captum(method, n_steps)
                    runs.append(
                        (
                            [s],
                            integrate(
                                model,
                                batch,
                                tgt,
                                sites,
                                alphas,
                                weights,
                                conductance=mode,
                                internal_batch_size=internal_batch_size,
                                progress=progress,
                                estimate=False,
                            ),
                        )
                    )
        elif on_path:
            alphas, weights = paths.path_nodes(method, n_steps)
            mode = (
                None
                if not any(s.needs == "conductance" for s in on_path)
                else ("spectral" if paths.TANGENTS == "values" else "jvp")
                if method in paths.JVP_RULES
                else "trapezoid"
            )
            runs.append(
                (
                    on_path + at_x,
                    integrate(
                        model,
                        batch,
                        tgt,
                        sites,
                        alphas,
                        weights,
                        conductance=mode,
                        internal_batch_size=internal_batch_size,
                        progress=progress,
                        influence=influence,
                    ),
                )
            )
        served = {s.name for ss, _ in runs for s in ss}
        if any(s.name not in served for s in at_x):
            runs.append(
                (
                    at_x,
                    integrate(
                        model,
                        batch,
                        tgt,
                        sites,
                        torch.ones(1, dtype=torch.float64),
                        None,
                        conductance=None,
                        need_grad=any(s.grad_at_x for s in chosen),
                        internal_batch_size=internal_batch_size,
                        progress=progress,
                        estimate=False,
                    ),
                )
            )

        token_mask = find_mask(mask, additional_forward_args, inputs)
        specs = None
        for served_scores, sums in runs:
            for score in served_scores:
                if score.name not in results:
                    results[score.name] = _finish(
                        score,
                        sums,
                        model,
                        batch,
                        tgt,
                        sites,
                        cfg,
                        method,
                        spec,
                        specs,
                        target_index,
                        modules,
                        settings,
                        token_mask,
                    )
                    specs = results[score.name].specs
    for name in names:
        if REGISTRY[name].complete:
            _check_gaps(results[name], gap_warning)
    return {m: results[m] for m in names}


def _finish(
    score: Score,
    sums,
    model,
    batch,
    tgt,
    sites,
    cfg: PathConfig,
    method: str,
    spec,
    specs,
    target_index,
    modules,
    settings,
    token_mask,
) -> Scores:
    """One score's :class:`Scores` from the pass that served it: values, error estimates, and for a complete score the
    completeness gap, the cut test of layers with a large gap and the diagnosis of each layer."""
    n, is_tuple = batch.n, sums.is_tuple
    delta = output_diff = error = unit_error = cuts = None
    if score.errors and not cfg.captum_compatible:
        raw, unit_raw = getattr(sums, score.errors + "_error"), getattr(sums, score.errors + "_unit_error")
        if raw:
            error = _unwrap(raw, is_tuple, sites)
            unit_error = _unwrap(unit_raw, is_tuple, sites)
    raw_values = score.values(sums)
    if score.complete:
        F_x, F_b = sums.F_x, sums.F_baseline
        if torch.isnan(F_x).any() or torch.isnan(F_b).any():
            F_x, F_b = _endpoints(model, batch, tgt, cfg.internal_batch_size)
    values = _unwrap(raw_values, is_tuple, sites)
    if score.complete:
        rdtype = _result_dtype(values)
        output_diff = (F_x - F_b).to(rdtype)
        delta = {
            s.name: (sum(p.double().cpu().flatten(1).sum(1) for p in raw_values[s.name]) - (F_x - F_b)).to(rdtype)
            for s in sites
        }
    if specs is None:
        specs = layer_specs(model, sites, values, spec)
    n_evals = sums.n_evals if score.on_path else torch.ones(n, dtype=torch.long)
    ok = messages = None
    tol = max(cfg.rtol, cfg.gap_warning if cfg.gap_warning is not None else 0.05)
    if score.complete:
        # a gap above the tolerance: is the layer a cut (then the gap is an error) or bypassed?
        assert output_diff is not None and delta is not None  # set above for a complete score
        od = output_diff.double().abs()
        wide = [st for st in sites if bool((delta[st.name].double().abs() > tol * od).any())]
        cuts = cut_examples(model, batch, tgt, wide, internal_batch_size=cfg.internal_batch_size)
    if unit_error is not None:
        out_diff = output_diff if output_diff is not None else torch.ones(n)
        ok, messages = diagnose_sums(
            sums, values, unit_error, delta, out_diff, sites, method=method, tol=tol, cuts=cuts
        )
    result = Scores(
        score.name,
        values,
        delta=delta,
        output_diff=output_diff,
        n_evals=n_evals,
        target=target_index,
        modules=modules,
        settings=settings,
        error=error,
        unit_error=unit_error,
        ok=ok,
        messages=messages,
        specs=specs,
        mask=token_mask,
    )
    if cuts is not None:  # a complete score
        result.cut = cuts
    return result


def conductance(
    model: nn.Module,
    inputs: Inputs,
    layers: Layers,
    *,
    baselines: Baselines = None,
    target: Target = None,
    additional_forward_args=None,
    n_steps: int | None = None,
    method: str | None = None,
    internal_batch_size: int | None = None,
    attribute_to_layer_input: bool = False,
    path: PathConfig | None = None,
    progress: bool | None = None,
    spec=None,
    mask=None,
    embedding=None,
    dictionaries=None,
) -> Scores:
    """Total conductance of every unit of every layer in ``layers`` (Eq. 3), with its completeness gap.

    The conductance of unit ``y_j`` is ``∫_0^1 ∂F/∂y_j(x_α) · dy_j/dα dα`` along the straight path ``x_α`` from the
    baselines ``x'`` to the inputs ``x``; over a layer that is a cut of the network the units add up to
    ``F(x) − F(x')``. One pass of :func:`attribute` with ``scores=["conductance"]``.

    Parameters
    ----------
    model : nn.Module
        The network. It is handed back as it came (no hooks left; ``training`` flags, ``requires_grad`` and ``.grad``
        restored, also when the call raises); the analysis runs in eval mode.
    inputs : Tensor or tuple of Tensor
        A batch ``[N, ...]``, or a tuple of such tensors (one per positional input of the model); integer token ids
        with ``embedding=``.
    layers : str, nn.Module or list of them
        Dotted names from ``model.named_modules()`` or the modules themselves, one or a list; ``"NAME@K"`` for the
        K-th call of a module called several times per forward pass (:func:`unitscope.layer_names` lists them). A
        misspelt name is an error that lists the closest names.
    baselines : None, float, Tensor or tuple, default None
        The path's start ``x'``: Captum's name for ``path.baselines`` (see :class:`unitscope.PathConfig`). ``None``
        leaves it to ``path`` (zeros by default).
    target : None, int, sequence, Tensor, callable or tuple, default None
        Which scalar ``F`` of the output is explained: ``None`` — each example's top predicted class (pre-softmax, the
        papers' choice); an int; one class per example (a list or a tensor ``[N]``); a callable
        ``output -> Tensor [N]``; or, for dict / ``ModelOutput`` outputs, a tuple ``(key, *index)`` such as
        ``("logits", -1, token)`` (``output["logits"][:, -1, token]``).
    additional_forward_args : tuple, dict or None, default None
        Further arguments of ``model``: a tuple (positional arguments after the inputs) or a dict (keyword arguments,
        e.g. ``{"attention_mask": mask}``). Tensors whose first dim is the batch's follow the rows.
    n_steps : int or None, default None
        Captum's name for ``path.n_steps`` (see :class:`unitscope.PathConfig`; 50 by default).
    method : str or None, default None
        Captum's name for ``path.method`` (see :class:`unitscope.PathConfig`; ``"adaptive"`` by default).
    internal_batch_size : int or None, default None
        Captum's name for ``path.internal_batch_size`` (see :class:`unitscope.PathConfig`): rows (examples × path
        points) per forward and backward pass, the memory bound; ``None``: all at once.
    attribute_to_layer_input : bool, default False
        Score each layer's input instead of its output (as in Captum).
    path : PathConfig or None, default None
        How the path integral is computed: a :class:`unitscope.PathConfig` (``None``: ``PathConfig()``, 50 path
        points of the adaptive rule). ``baselines``, ``n_steps``, ``method`` and ``internal_batch_size`` may also be
        given as keywords, Captum's names for those fields: a keyword fills a field that ``path`` leaves at its
        default, one that disagrees with a field ``path`` sets is an error.
    progress : bool or None, default None
        ``None``: a progress bar on a terminal, progress lines in a log (``UNITSCOPE_PROGRESS=log``); ``False``: none.
    spec : str, UnitSpec, dict or None, default None
        What ``Scores.per_unit`` / ``top`` reduce to: a layout name, a :class:`unitscope.core.units.UnitSpec` or
        ``{layer: ...}`` (``None``: by the layer's layout — a conv's channels, a transformer layer's neurons).
    mask : Tensor or None, default None
        ``[N, T]``, 1 for a real token: leaves padding tokens out of those reductions (``None``: the
        ``attention_mask`` among ``additional_forward_args``, if any).
    embedding : str or None, default None
        For token-id inputs: the name of the module that embeds them, or ``"auto"`` (the one
        ``get_input_embeddings()`` returns, else the model's only ``nn.Embedding``). The path starts at its output
        (``baselines``: zeros, a token id such as the pad id, or embeddings).
    dictionaries : dict or None, default None
        ``{layer: dictionary}`` (a :class:`unitscope.Dictionary`, a module with ``encode``/``decode``, or the path of a
        SAELens folder or state-dict file; each layer among ``layers``): that layer is read as the dictionary's
        features ``f = encode(y)`` and its error node ``ε = y − decode(f)`` (the forward pass unchanged), so
        ``scores[layer]`` is ``(features [N, ..., F], error [N, ..., D])`` and ``per_unit(layer)`` is ``[N, F + 1]``,
        the error node last (:mod:`unitscope.core.dictionary`).

    Returns
    -------
    Scores
        ``s[layer]`` is shaped like the layer's output, ``[N, ...]`` (a tuple for a layer with tuple outputs or a
        dictionary); ``s.error[layer]`` is the per-unit error estimate of the same shape,
        ``s.ok[layer]`` whether the layer met the tolerance (``s.messages[layer]`` says why not and what to try),
        ``s.delta[layer]`` the completeness gap ``[N]`` and ``s.n_evals`` the path points spent per example ``[N]``.
        What ``± error`` means: the guide's "Importance and its error bars".

    Raises
    ------
    UnitscopeError
        For a mistake it can name, with the layer, the shapes and what would work: an unknown layer (with the
        closest names), an unknown score or integration method, ``n_steps`` < 2, a keyword that disagrees with
        ``path``, inputs that are empty, non-finite or of different batch sizes, token ids without ``embedding``,
        baselines that do not broadcast, a target out of range or that picks more than one value per example, a
        dictionary that does not fit its layer, or the model failing on the inputs or on points of the path. A
        gradient that cannot be had is an error, never zeros.

    Examples
    --------
    >>> import torch, torch.nn as nn
    >>> net = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 1))
    >>> s = conductance(net, torch.ones(3, 2), net[1], n_steps=32)
    >>> s[net[1]].shape, s.delta["1"].shape
    (torch.Size([3, 2]), torch.Size([3]))
    """
    return attribute(
        model,
        inputs,
        layers,
        scores=["conductance"],
        baselines=baselines,
        target=target,
        additional_forward_args=additional_forward_args,
        n_steps=n_steps,
        method=method,
        internal_batch_size=internal_batch_size,
        attribute_to_layer_input=attribute_to_layer_input,
        path=path,
        progress=progress,
        spec=spec,
        mask=mask,
        embedding=embedding,
        dictionaries=dictionaries,
    )["conductance"]


def internal_influence(
    model: nn.Module,
    inputs: Inputs,
    layers: Layers,
    *,
    baselines: Baselines = None,
    target: Target = None,
    additional_forward_args=None,
    n_steps: int | None = None,
    method: str | None = None,
    internal_batch_size: int | None = None,
    attribute_to_layer_input: bool = False,
    path: PathConfig | None = None,
    progress: bool | None = None,
    spec=None,
    mask=None,
    embedding=None,
    dictionaries=None,
) -> Scores:
    """Internal influence (Datta et al. 2018): ``∫_0^1 ∂F/∂y(x_α) dα`` for every unit of ``layers``.

    The gradient of ``F`` with respect to each unit, averaged along the path from the baselines to the inputs; the
    parameters are those of :func:`conductance`. One pass of :func:`attribute` with ``scores=["internal_influence"]``.

    Parameters
    ----------
    model : nn.Module
        The network. It is handed back as it came (no hooks left; ``training`` flags, ``requires_grad`` and ``.grad``
        restored, also when the call raises); the analysis runs in eval mode.
    inputs : Tensor or tuple of Tensor
        A batch ``[N, ...]``, or a tuple of such tensors (one per positional input of the model); integer token ids
        with ``embedding=``.
    layers : str, nn.Module or list of them
        Dotted names from ``model.named_modules()`` or the modules themselves, one or a list; ``"NAME@K"`` for the
        K-th call of a module called several times per forward pass (:func:`unitscope.layer_names` lists them). A
        misspelt name is an error that lists the closest names.
    baselines : None, float, Tensor or tuple, default None
        The path's start ``x'``: Captum's name for ``path.baselines`` (see :class:`unitscope.PathConfig`). ``None``
        leaves it to ``path`` (zeros by default).
    target : None, int, sequence, Tensor, callable or tuple, default None
        Which scalar ``F`` of the output is explained: ``None`` — each example's top predicted class (pre-softmax, the
        papers' choice); an int; one class per example (a list or a tensor ``[N]``); a callable
        ``output -> Tensor [N]``; or, for dict / ``ModelOutput`` outputs, a tuple ``(key, *index)`` such as
        ``("logits", -1, token)`` (``output["logits"][:, -1, token]``).
    additional_forward_args : tuple, dict or None, default None
        Further arguments of ``model``: a tuple (positional arguments after the inputs) or a dict (keyword arguments,
        e.g. ``{"attention_mask": mask}``). Tensors whose first dim is the batch's follow the rows.
    n_steps : int or None, default None
        Captum's name for ``path.n_steps`` (see :class:`unitscope.PathConfig`; 50 by default).
    method : str or None, default None
        Captum's name for ``path.method`` (see :class:`unitscope.PathConfig`; ``"adaptive"`` by default).
    internal_batch_size : int or None, default None
        Captum's name for ``path.internal_batch_size`` (see :class:`unitscope.PathConfig`): rows (examples × path
        points) per forward and backward pass, the memory bound; ``None``: all at once.
    attribute_to_layer_input : bool, default False
        Score each layer's input instead of its output (as in Captum).
    path : PathConfig or None, default None
        How the path integral is computed: a :class:`unitscope.PathConfig` (``None``: ``PathConfig()``, 50 path
        points of the adaptive rule). ``baselines``, ``n_steps``, ``method`` and ``internal_batch_size`` may also be
        given as keywords, Captum's names for those fields: a keyword fills a field that ``path`` leaves at its
        default, one that disagrees with a field ``path`` sets is an error.
    progress : bool or None, default None
        ``None``: a progress bar on a terminal, progress lines in a log (``UNITSCOPE_PROGRESS=log``); ``False``: none.
    spec : str, UnitSpec, dict or None, default None
        What ``Scores.per_unit`` / ``top`` reduce to: a layout name, a :class:`unitscope.core.units.UnitSpec` or
        ``{layer: ...}`` (``None``: by the layer's layout — a conv's channels, a transformer layer's neurons).
    mask : Tensor or None, default None
        ``[N, T]``, 1 for a real token: leaves padding tokens out of those reductions (``None``: the
        ``attention_mask`` among ``additional_forward_args``, if any).
    embedding : str or None, default None
        For token-id inputs: the name of the module that embeds them, or ``"auto"`` (the one
        ``get_input_embeddings()`` returns, else the model's only ``nn.Embedding``). The path starts at its output
        (``baselines``: zeros, a token id such as the pad id, or embeddings).
    dictionaries : dict or None, default None
        ``{layer: dictionary}`` (a :class:`unitscope.Dictionary`, a module with ``encode``/``decode``, or the path of a
        SAELens folder or state-dict file; each layer among ``layers``): that layer is read as the dictionary's
        features ``f = encode(y)`` and its error node ``ε = y − decode(f)`` (the forward pass unchanged), so
        ``scores[layer]`` is ``(features [N, ..., F], error [N, ..., D])`` and ``per_unit(layer)`` is ``[N, F + 1]``,
        the error node last (:mod:`unitscope.core.dictionary`).

    Returns
    -------
    Scores
        ``s[layer]`` is shaped like the layer's output, ``[N, ...]`` (a tuple for a layer with tuple outputs or a
        dictionary); ``s.error[layer]`` is the per-unit error estimate of the same shape and
        ``s.ok[layer]`` whether the layer met the tolerance (``s.messages[layer]`` says why not). No completeness
        gap: the influences need not add up to anything.

    Raises
    ------
    UnitscopeError
        For a mistake it can name, with the layer, the shapes and what would work: an unknown layer (with the
        closest names), an unknown score or integration method, ``n_steps`` < 2, a keyword that disagrees with
        ``path``, inputs that are empty, non-finite or of different batch sizes, token ids without ``embedding``,
        baselines that do not broadcast, a target out of range or that picks more than one value per example, a
        dictionary that does not fit its layer, or the model failing on the inputs or on points of the path. A
        gradient that cannot be had is an error, never zeros.

    Examples
    --------
    >>> import torch, torch.nn as nn
    >>> net = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
    >>> s = internal_influence(net, torch.ones(2, 2), ["1"], n_steps=8, method="gausslegendre")
    >>> s["1"].shape, torch.allclose(s["1"][0], net[2].weight[0].detach())   # F is linear in the ReLU's output
    (torch.Size([2, 3]), True)
    """
    return attribute(
        model,
        inputs,
        layers,
        scores=["internal_influence"],
        baselines=baselines,
        target=target,
        additional_forward_args=additional_forward_args,
        n_steps=n_steps,
        method=method,
        internal_batch_size=internal_batch_size,
        attribute_to_layer_input=attribute_to_layer_input,
        path=path,
        progress=progress,
        spec=spec,
        mask=mask,
        embedding=embedding,
        dictionaries=dictionaries,
    )["internal_influence"]


def grad_x_activation(
    model: nn.Module,
    inputs: Inputs,
    layers: Layers,
    *,
    target: Target = None,
    additional_forward_args=None,
    attribute_to_layer_input: bool = False,
    internal_batch_size: int | None = None,
    spec=None,
    mask=None,
    dictionaries=None,
) -> Scores:
    """Gradient × activation ``y · ∂F/∂y`` at the input, for every unit of ``layers``.

    One forward and one backward pass (no path): the first-order estimate of each unit's share of ``F(x)``.

    Parameters
    ----------
    model : nn.Module
        The network. It is handed back as it came (no hooks left; ``training`` flags, ``requires_grad`` and ``.grad``
        restored, also when the call raises); the analysis runs in eval mode.
    inputs : Tensor or tuple of Tensor
        A batch ``[N, ...]``, or a tuple of such tensors (one per positional input of the model); token ids are
        accepted as they are (nothing is integrated along a path).
    layers : str, nn.Module or list of them
        Dotted names from ``model.named_modules()`` or the modules themselves, one or a list; ``"NAME@K"`` for the
        K-th call of a module called several times per forward pass (:func:`unitscope.layer_names` lists them). A
        misspelt name is an error that lists the closest names.
    target : None, int, sequence, Tensor, callable or tuple, default None
        Which scalar ``F`` of the output is explained: ``None`` — each example's top predicted class (pre-softmax, the
        papers' choice); an int; one class per example (a list or a tensor ``[N]``); a callable
        ``output -> Tensor [N]``; or, for dict / ``ModelOutput`` outputs, a tuple ``(key, *index)`` such as
        ``("logits", -1, token)`` (``output["logits"][:, -1, token]``).
    additional_forward_args : tuple, dict or None, default None
        Further arguments of ``model``: a tuple (positional arguments after the inputs) or a dict (keyword arguments,
        e.g. ``{"attention_mask": mask}``). Tensors whose first dim is the batch's follow the rows.
    attribute_to_layer_input : bool, default False
        Score each layer's input instead of its output (as in Captum).
    internal_batch_size : int or None, default None
        Examples per forward (and backward) pass: the memory bound; ``None``: all at once.
    spec : str, UnitSpec, dict or None, default None
        What ``Scores.per_unit`` / ``top`` reduce to: a layout name, a :class:`unitscope.core.units.UnitSpec` or
        ``{layer: ...}`` (``None``: by the layer's layout — a conv's channels, a transformer layer's neurons).
    mask : Tensor or None, default None
        ``[N, T]``, 1 for a real token: leaves padding tokens out of those reductions (``None``: the
        ``attention_mask`` among ``additional_forward_args``, if any).
    dictionaries : dict or None, default None
        ``{layer: dictionary}`` (a :class:`unitscope.Dictionary`, a module with ``encode``/``decode``, or the path of a
        SAELens folder or state-dict file; each layer among ``layers``): that layer is read as the dictionary's
        features ``f = encode(y)`` and its error node ``ε = y − decode(f)`` (the forward pass unchanged), so
        ``scores[layer]`` is ``(features [N, ..., F], error [N, ..., D])`` and ``per_unit(layer)`` is ``[N, F + 1]``,
        the error node last (:mod:`unitscope.core.dictionary`).

    Returns
    -------
    Scores
        ``s[layer]`` is shaped like the layer's output, ``[N, ...]`` (a tuple for a layer with tuple outputs or a
        dictionary); no error estimates (nothing is integrated).

    Raises
    ------
    UnitscopeError
        For a mistake it can name, with the layer, the shapes and what would work: an unknown layer (with the
        closest names), inputs that are empty, non-finite or of different batch sizes, a target out of range, a
        dictionary that does not fit its layer, or the model failing on the inputs.

    Examples
    --------
    >>> import torch, torch.nn as nn
    >>> net = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 2))
    >>> s = grad_x_activation(net, torch.ones(4, 2), ["1"], target=0)
    >>> s["1"].shape
    torch.Size([4, 3])
    """
    return attribute(
        model,
        inputs,
        layers,
        scores=["grad_x_activation"],
        target=target,
        additional_forward_args=additional_forward_args,
        internal_batch_size=internal_batch_size,
        attribute_to_layer_input=attribute_to_layer_input,
        spec=spec,
        mask=mask,
        dictionaries=dictionaries,
    )["grad_x_activation"]


def activation(
    model: nn.Module,
    inputs: Inputs,
    layers: Layers,
    *,
    additional_forward_args=None,
    attribute_to_layer_input: bool = False,
    internal_batch_size: int | None = None,
    spec=None,
    mask=None,
    dictionaries=None,
) -> Scores:
    """The layers' activations at the input (no gradients); token ids are accepted as inputs.

    One forward pass, read at the layers (their outputs, or their inputs with ``attribute_to_layer_input``).

    Parameters
    ----------
    model : nn.Module
        The network. It is handed back as it came (no hooks left; ``training`` flags, ``requires_grad`` and ``.grad``
        restored, also when the call raises); the analysis runs in eval mode.
    inputs : Tensor or tuple of Tensor
        A batch ``[N, ...]``, or a tuple of such tensors (one per positional input of the model); token ids are
        accepted as they are (nothing is integrated along a path).
    layers : str, nn.Module or list of them
        Dotted names from ``model.named_modules()`` or the modules themselves, one or a list; ``"NAME@K"`` for the
        K-th call of a module called several times per forward pass (:func:`unitscope.layer_names` lists them). A
        misspelt name is an error that lists the closest names.
    additional_forward_args : tuple, dict or None, default None
        Further arguments of ``model``: a tuple (positional arguments after the inputs) or a dict (keyword arguments,
        e.g. ``{"attention_mask": mask}``). Tensors whose first dim is the batch's follow the rows.
    attribute_to_layer_input : bool, default False
        Score each layer's input instead of its output (as in Captum).
    internal_batch_size : int or None, default None
        Examples per forward (and backward) pass: the memory bound; ``None``: all at once.
    spec : str, UnitSpec, dict or None, default None
        What ``Scores.per_unit`` / ``top`` reduce to: a layout name, a :class:`unitscope.core.units.UnitSpec` or
        ``{layer: ...}`` (``None``: by the layer's layout — a conv's channels, a transformer layer's neurons).
    mask : Tensor or None, default None
        ``[N, T]``, 1 for a real token: leaves padding tokens out of those reductions (``None``: the
        ``attention_mask`` among ``additional_forward_args``, if any).
    dictionaries : dict or None, default None
        ``{layer: dictionary}`` (a :class:`unitscope.Dictionary`, a module with ``encode``/``decode``, or the path of a
        SAELens folder or state-dict file; each layer among ``layers``): that layer is read as the dictionary's
        features ``f = encode(y)`` and its error node ``ε = y − decode(f)`` (the forward pass unchanged), so
        ``scores[layer]`` is ``(features [N, ..., F], error [N, ..., D])`` and ``per_unit(layer)`` is ``[N, F + 1]``,
        the error node last (:mod:`unitscope.core.dictionary`).

    Returns
    -------
    Scores
        ``s[layer]`` is shaped like the layer's output, ``[N, ...]`` (a tuple for a layer with tuple outputs or a
        dictionary); the values the layer computed on the inputs.

    Raises
    ------
    UnitscopeError
        For a mistake it can name, with the layer, the shapes and what would work: an unknown layer (with the
        closest names), inputs that are empty, non-finite or of different batch sizes, a
        dictionary that does not fit its layer, or the model failing on the inputs.

    Examples
    --------
    >>> import torch, torch.nn as nn
    >>> net = nn.Sequential(nn.Linear(2, 3), nn.ReLU())
    >>> s = activation(net, -torch.ones(2, 2), ["1"])
    >>> s["1"].shape, bool((s["1"] >= 0).all())
    (torch.Size([2, 3]), True)
    """
    return attribute(
        model,
        inputs,
        layers,
        scores=["activation"],
        additional_forward_args=additional_forward_args,
        internal_batch_size=internal_batch_size,
        attribute_to_layer_input=attribute_to_layer_input,
        spec=spec,
        mask=mask,
        dictionaries=dictionaries,
    )["activation"]
