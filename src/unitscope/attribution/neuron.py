"""Per-input conductance through chosen units (Eq. 2 of Dhamdhere et al.), all units in batched backwards.

>>> import torch, torch.nn as nn
>>> net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
>>> x = torch.randn(2, 3)
>>> a = neuron_conductance(net, x, layer="1", units=[0, 3], target=1, n_steps=64)
>>> a.shape   # [N, units, *input_shape]
torch.Size([2, 2, 3])

For unit ``y`` and input feature ``i``: ``Cond_i^y(x) = (x_i − x'_i) ∫_0^1 ∂F/∂y(x_α) · ∂y/∂x_i(x_α) dα``.
A channel (an ``int`` unit) is a filter: its conductance is the **sum of its units' conductances**,
``Σ_j ∂F/∂y_j · ∂y_j/∂x_i`` — not ``(Σ_j ∂F/∂y_j)(Σ_j ∂y_j/∂x_i)``, which is what Captum's
``NeuronConductance`` computes when its selector sums a channel. Summed over input features, a unit's
result is its (layer) conductance.

Cost: the forward pass and ∂F/∂y are shared by every unit; only the backward from the layer to the
inputs is per unit, and those run batched (``is_grads_batched``), ``unit_batch_size`` units at a time. Where the
layer is a convolution, or an elementwise activation right after one (:mod:`unitscope.core.slices`), a
unit's backward starts at that layer's input, through the unit's own weights only: on the digits CNN's
``features.relu2`` that skips the dense backward through ``conv2``'s 64 channels (the numbers are the same).
"""

from __future__ import annotations

import warnings

import torch
import torch.nn as nn

from . import paths
from ..core.capture import Recorder
from ..core.errors import CompletenessWarning, UnitscopeError
from ..core.units import find_mask, pick_part, resolve_units
from ..core.dictionary import attach, dictionaries_mode
from ..core.faults import is_oom, with_oom_hint
from ..core.inputs import make_target, model_device, prepare
from .adaptive import integrate_adaptive
from .config import PathConfig, path_config
from .cuts import cut_examples
from .estimates import diagnose_sums
from .engine import autograd_on, integrate, off_the_path, outputs_at_x, work_dtype
from ..core.sites import resolve
from ..core.slices import channel_slice
from ..core.state import analysis_mode
from ..core.types import Baselines, Inputs, Layer, Target

__all__ = ["neuron_conductance"]


def neuron_conductance(
    model: nn.Module,
    inputs: Inputs,
    layer: Layer,
    units,
    *,
    baselines: Baselines = None,
    target: Target = None,
    additional_forward_args=None,
    n_steps: int | None = None,
    method: str | None = None,
    internal_batch_size: int | None = None,
    attribute_to_layer_input: bool = False,
    path: PathConfig | None = None,
    paired: bool = False,
    examples=None,
    spec=None,
    embedding=None,
    mask=None,
    dictionaries=None,
) -> torch.Tensor | tuple[torch.Tensor, ...]:
    """Input attributions through each unit of ``units``: a tensor ``[N, U, *input_shape]`` (a tuple of such
    tensors for tuple inputs).

    Eq. 2 of the paper: the conductance of each input element through one unit, ``∫ ∂F/∂y_u · ∂y_u/∂x dα`` along
    the path, times ``x − x'``. ``units``: ints — units of the layer's unit specification (a conv channel, a
    transformer neuron at every token, a head; ``spec`` to choose, :mod:`unitscope.core.units`) — and/or element
    tuples of one layer's output. A layer with a tuple output (``nn.LSTM``): ``spec=UnitSpec.tokens(part=0)``
    picks its tensor by index (default the first). Token ids: ``embedding="NAME"``, and the attributions are
    over that module's output ``[N, U, T, D]``. On token-major layers a unit given as an int (a neuron, a head)
    is its positions at the real tokens only: ``mask`` (``[N, T]``, 1 = a real token; default the
    ``attention_mask`` among ``additional_forward_args``) leaves padding out, so that summed over the inputs the
    result is the unit's conductance as ``Scores.per_unit`` reports it with the same mask (Σ_i Eq. 2 = Eq. 3).

    ``path``: a :class:`unitscope.PathConfig` (default ``PathConfig()``); ``baselines``, ``n_steps``, ``method`` and
    ``internal_batch_size`` are Captum's names for its fields, as in :func:`unitscope.conductance`;
    ``path.unit_batch_size`` units run their backward passes together (default 64), and a layer that is not ok
    (as :func:`unitscope.conductance` would mark it, within ``path.gap_warning``) is a
    :class:`unitscope.CompletenessWarning`. ``path.captum_compatible`` has no meaning here: Captum's
    ``NeuronConductance`` sums a channel's gradients before the product (see the module docs).

    ``method``: ``"adaptive"`` (the default, as in :func:`unitscope.conductance`): the nodes are placed per example
    by the adaptive rule for this layer with all ``n_steps`` evaluations spent (a layer total that converges early
    would leave Eq. 2's integrand unresolved), then Eq. 2 is integrated on them with the composite trapezoid (one
    more pass over those nodes, with the per-unit backwards), and each unit's total over the inputs is matched,
    example by example, to its conductance from the adaptive pass (Eq. 3, the estimate whose error is known: see
    ``_matched``). ``gausslegendre`` uses its own nodes and weights (summed over the inputs: ``conductance`` with the
    same rule, to rounding); a ``riemann_*`` rule its nodes plus both end points with the composite trapezoid, each
    unit's total matched to ``conductance``'s Stieltjes trapezoid on the same nodes, as for ``"adaptive"``.

    ``paired=True``: ``units[i]`` belongs to example ``i`` only (``len(units) == N``) and the result is
    ``[N, *input_shape]`` — one backward for all pairs, e.g. every unit's own exemplars at once. With
    ``examples`` (one example index per unit, any number of pairs, ``[P, *input_shape]``) pairs share their
    example's forward pass and ∂F/∂y: only the backward from the layer to the inputs is per pair (the ``j``-th
    pairs of every example in one backward), so many units of a few distinct inputs cost one forward per input.

    ``dictionaries`` (``{layer: dictionary}`` as in :func:`unitscope.conductance`): the layer is read as its
    dictionary's features and error node; an int
    unit ``u < F`` is feature ``u`` (at every real token), ``u = F`` the error node (all its positions and dims), a
    tuple an element of the features ``[..., F]``. Summed over the inputs, each is its ``Scores.per_unit`` value.

    Parameters
    ----------
    model : nn.Module
        The network, handed back as it came (as in :func:`unitscope.conductance`).
    inputs : Tensor or tuple of Tensor
        A batch ``[N, ...]`` or a tuple of such tensors; integer token ids with ``embedding=``.
    layer : str or nn.Module
        One layer: a dotted name from ``model.named_modules()`` (``"NAME@K"`` for the K-th call), or the module.
    units : sequence of int or tuple
        The units to attribute through: ints (units of the layer's unit specification) and/or element tuples of the
        layer's output (without the batch dim). With ``paired=True`` one per example, or one per entry of
        ``examples``.
    baselines : None, float, Tensor or tuple, default None
        Captum's name for ``path.baselines`` (see :class:`unitscope.PathConfig`; zeros by default).
    target : None, int, sequence, Tensor, callable or tuple, default None
        Which scalar ``F`` of the output is explained, as in :func:`unitscope.conductance` (``None``: each example's
        top predicted class).
    additional_forward_args : tuple, dict or None, default None
        Further arguments of ``model`` (a tuple after the inputs, or a dict of keywords such as
        ``{"attention_mask": mask}``).
    n_steps : int or None, default None
        Captum's name for ``path.n_steps`` (see :class:`unitscope.PathConfig`; 50 by default).
    method : str or None, default None
        Captum's name for ``path.method`` (see :class:`unitscope.PathConfig`; ``"adaptive"`` by default).
    internal_batch_size : int or None, default None
        Captum's name for ``path.internal_batch_size`` (see :class:`unitscope.PathConfig`): path rows per pass.
    attribute_to_layer_input : bool, default False
        Attribute through the layer's input instead of its output.
    path : PathConfig or None, default None
        How the path integral is computed (``None``: ``PathConfig()``); its ``unit_batch_size`` sets how many units
        run their backward passes together.
    paired : bool, default False
        ``units[i]`` belongs to example ``i`` only (or to ``examples[i]``): the result has no unit dim.
    examples : sequence of int or None, default None
        With ``paired=True``: the example index of each unit (any number of pairs, indices into the inputs).
    spec : str, UnitSpec or None, default None
        What an int unit means (``None``: by the layer's layout; :mod:`unitscope.core.units`).
    embedding : str or None, default None
        For token-id inputs: the name of the module that embeds them, or ``"auto"``; the attributions are over its
        output.
    mask : Tensor or None, default None
        ``[N, T]``, 1 for a real token (``None``: the ``attention_mask`` among ``additional_forward_args``): an int
        unit of a token-major layer is its positions at the real tokens.
    dictionaries : dict or None, default None
        ``{layer: dictionary}`` as in :func:`unitscope.conductance`: the layer is read as its dictionary's features
        and error node.

    Returns
    -------
    Tensor or tuple of Tensor
        ``[N, U, *input_shape]`` (``U = len(units)``); with ``paired=True`` ``[N, *input_shape]``, with ``examples``
        ``[P, *input_shape]`` (one row per pair); with ``embedding`` the input shape is the embedding's output
        ``[T, D]``. A tuple of such tensors for tuple inputs. Summed over the input dims, a unit's row is its
        conductance (``Scores.per_unit``).

    Raises
    ------
    UnitscopeError
        More than one layer, ``path.captum_compatible=True`` (there is no Captum-compatible estimate),
        ``examples`` without ``paired=True``, ``paired=True`` without one unit per example, ``examples`` outside the
        inputs, a unit out of range, a layer that does not depend on the inputs through autograd, and every mistake
        :func:`unitscope.conductance` names (unknown layer, method, target, inputs, ...).

    Examples
    --------
    >>> import torch, torch.nn as nn
    >>> torch.manual_seed(0) and None
    >>> net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    >>> x = torch.randn(2, 3)
    >>> full = neuron_conductance(net, x, layer="1", units=[0, 3], target=1, n_steps=16)
    >>> pair = neuron_conductance(net, x, layer="1", units=[0, 3], target=1, n_steps=16, paired=True)
    >>> torch.allclose(pair, torch.stack([full[0, 0], full[1, 1]]))
    True
    >>> many = neuron_conductance(net, x, layer="1", units=[0, 3, 3], examples=[0, 0, 1], target=1, n_steps=16,
    ...                           paired=True)
    >>> torch.allclose(many, torch.stack([full[0, 0], full[0, 1], full[1, 1]]))
    True
    >>> full.shape, pair.shape, many.shape
    (torch.Size([2, 2, 3]), torch.Size([2, 3]), torch.Size([3, 3]))
    """
    sites = resolve(model, [layer], use_input=attribute_to_layer_input)
    if len(sites) != 1:
        raise UnitscopeError("neuron_conductance takes one layer", layers=[s.name for s in sites])
    sites = attach(model, sites, dictionaries, use_input=attribute_to_layer_input)
    site = sites[0]
    cfg = path_config(
        path, baselines=baselines, n_steps=n_steps, method=method, internal_batch_size=internal_batch_size
    )
    if cfg.captum_compatible:
        raise UnitscopeError(
            "neuron_conductance has no Captum-compatible estimate",
            hint="Captum's NeuronConductance sums a channel's gradients before the product, which "
            "is not Eq. 2: leave captum_compatible=False here",
        )
    n_steps, method, internal_batch_size = cfg.n_steps, cfg.method, cfg.internal_batch_size
    unit_batch_size = cfg.unit_batch_size
    batch = prepare(
        inputs, cfg.baselines, additional_forward_args, device=model_device(model), embedding=embedding, model=model
    )
    n = batch.n
    if examples is not None and not paired:
        raise UnitscopeError("examples= goes with paired=True (one example per unit)")
    if paired:
        pair_ex = torch.arange(n) if examples is None else torch.as_tensor(examples).long().flatten()
        if len(pair_ex) != len(units) or (examples is None and len(units) != n):
            raise UnitscopeError(
                "paired=True takes one unit per example (or examples=, one per unit)",
                units=len(units),
                examples=n if examples is None else len(pair_ex),
            )
        if len(pair_ex) and not (0 <= int(pair_ex.min()) and int(pair_ex.max()) < n):
            raise UnitscopeError(
                "examples= indexes the inputs", inputs=n, got=sorted({int(pair_ex.min()), int(pair_ex.max())})
            )
        # slot[p]: pair p is the slot[p]-th pair of its example; pair_of[j][e]: example e's j-th pair (-1: none)
        order = torch.argsort(pair_ex, stable=True)
        first = torch.searchsorted(pair_ex[order], pair_ex[order], right=False)
        slot = torch.empty_like(pair_ex)
        slot[order] = torch.arange(len(order)) - first
        n_slots = int(slot.max()) + 1 if len(slot) else 0
        pair_of = torch.full((n_slots, n), -1, dtype=torch.long)
        pair_of[slot, pair_ex] = torch.arange(len(pair_ex))
    token_mask = find_mask(mask, additional_forward_args, inputs)
    whole = torch.tensor(
        [
            not isinstance(u, tuple)  # an int-like unit (not one element): its real tokens only
            for u in ([units] if isinstance(units, (int, tuple)) else list(units))
        ]
    )
    # whole channels of a conv layer: each unit's backward goes through its own weights only (core.slices)
    sl = channel_slice(model, site) if bool(whole.all()) and site.dictionary is None else None
    with analysis_mode(model), dictionaries_mode([site.dictionary]), autograd_on():
        out_x = outputs_at_x(model, batch, internal_batch_size) if target is None else None
        tgt = make_target(target, n, out_x)
        eq3 = None
        if method == "adaptive":
            example_all, alpha_all, weight_all, pass_sums = _adaptive_rows(
                model, batch, tgt, site, n_steps, internal_batch_size
            )
            eq3 = pass_sums.conductance[site.name]
            if cfg.gap_warning is not None:
                _warn_unresolved(model, batch, tgt, site, pass_sums, internal_batch_size, tol=cfg.gap_warning)
        elif method in paths.JVP_RULES:  # the rule on ∂F/∂y · ∂y/∂x_i: summed over inputs, conductance's rule
            alphas, weights = paths.rule(method, n_steps)
            example_all, alpha_all, weight_all = _same_rows(alphas, weights, n)
        else:  # conductance's Stieltjes trapezoid on the rule's nodes and both ends: its totals, matched below
            alphas, _ = paths.path_nodes(method, n_steps)
            example_all, alpha_all, weight_all = _same_rows(alphas, paths.stieltjes_weights(alphas), n)
            trapezoid = integrate(
                model,
                batch,
                tgt,
                [site],
                alphas,
                None,
                conductance="trapezoid",
                internal_batch_size=internal_batch_size,
                progress=False,
                estimate=False,
            ).conductance
            assert trapezoid is not None  # conductance="trapezoid" was asked
            eq3 = trapezoid[site.name]
        total = example_all.numel()
        rows_per_chunk = total if internal_batch_size is None else max(1, internal_batch_size)
        sums = None
        masks = None
        for r0 in range(0, total, rows_per_chunk):
            example = example_all[r0 : r0 + rows_per_chunk]
            alpha = alpha_all[r0 : r0 + rows_per_chunk]
            w = weight_all[r0 : r0 + rows_per_chunk]
            rows = tuple(r.requires_grad_(True) for r in batch.path_rows(example, alpha))
            recorder = Recorder(sites if sl is None else [*sites, sl.input_site], need_grad=True)
            with torch.enable_grad():
                with recorder.active():
                    output = batch.call(model, rows, example)
                F = tgt(output, example)
                h = None if sl is None else recorder.parts[sl.input_site.name][0]
                parts = recorder.parts[site.name]
                part = getattr(spec, "part", None)
                g: torch.Tensor | None
                if site.dictionary is not None and part is None:
                    # features and error node side by side along the dictionary's dim: one tensor, F + D wide there
                    ddim = _dictionary_dim(site.dictionary, parts[0])
                    got_g = (
                        torch.autograd.grad(F.sum(), parts, retain_graph=True, allow_unused=True)
                        if F.requires_grad
                        else (None, None)
                    )
                    if all(t is None for t in got_g):
                        raise off_the_path(site.name)
                    y = torch.cat(parts, ddim)
                    g = torch.cat([torch.zeros_like(p) if t is None else t for p, t in zip(parts, got_g)], ddim)
                else:
                    y = pick_part(tuple(parts), part, site.name) if recorder.is_tuple[site.name] else parts[0]
                    (g,) = (
                        torch.autograd.grad(F.sum(), y, retain_graph=True, allow_unused=True)
                        if F.requires_grad
                        else (None,)
                    )
                if g is None:
                    raise off_the_path(site.name)
                if masks is None and site.dictionary is not None and part is None:
                    sp = resolve_units(
                        spec, model=model, name=site.name, module=site.module, shape=tuple(parts[0].shape)
                    )
                    masks = _dictionary_masks(sp, units, parts, ddim, site.name).to(y)
                elif masks is None:
                    sp = resolve_units(spec, model=model, name=site.name, module=site.module, shape=tuple(y.shape))
                    masks = sp.unit_masks(units, tuple(y.shape[1:]), site.name).to(y)
                    channel_of = masks.reshape(*masks.shape[:2], -1).any(2).float().argmax(1)  # [U]: units' channels
                    asked = channel_of.unique()
                    if (
                        sl is not None
                        and h is not None
                        and (
                            sp.layout != "channels"
                            or token_mask is not None
                            or not sl.agrees(sl.values(h, asked), y[:, asked.to(y.device)])
                        )
                    ):
                        sl = None  # not the channels of the layer as recorded: the full backward
                # a whole unit (an int) of a token-major layer: its real tokens only (elements are taken as given)
                keep = None if token_mask is None else sp.token_keep(y, token_mask[example])
                g_kept = g if keep is None else g * keep.to(g)
                got: list[torch.Tensor] | None = None  # per input [U, rows, ...]
                got_pairs: list[tuple[list[torch.Tensor], torch.Tensor]] = []  # paired: per slot (grads, pairs)
                ub = masks.shape[0] if unit_batch_size is None else max(1, unit_batch_size)
                if paired:  # row r goes with its example's j-th pair: one plain backward per slot j
                    slots = [j for j in range(n_slots) if bool((pair_of[j][example] >= 0).any())]
                    for i, j in enumerate(slots):
                        p_r = pair_of[j][example]  # [rows]: the pair of each row (-1: none)
                        has = (p_r >= 0).to(g.device).view(-1, *([1] * (g.dim() - 1)))
                        p_c = p_r.clamp(min=0).to(g.device)
                        if keep is None:  # no token mask: every unit takes ∂F/∂y as it is
                            g_u = g
                        else:
                            own = whole.to(g.device)[p_c].view(-1, *([1] * (g.dim() - 1)))
                            g_u = torch.where(own, g_kept, g)
                        if sl is not None and h is not None:  # the rows' own channels, then from the layer's input
                            ch = channel_of.to(g.device)[p_c]
                            ch = torch.where(has.flatten(), ch, ch[has.flatten()][0])
                            v = torch.where(has, g.gather(1, _channel_index(ch, g)), 0.0)
                            gs = torch.autograd.grad(
                                h,
                                rows,
                                grad_outputs=_slice_vjp(sl, h, ch, v),
                                allow_unused=True,
                                retain_graph=i < len(slots) - 1,
                            )
                        else:
                            v = torch.where(has, masks[p_c.to(masks.device)] * g_u, 0.0)
                            gs = torch.autograd.grad(
                                y, rows, grad_outputs=v, allow_unused=True, retain_graph=i < len(slots) - 1
                            )
                        got_pairs.append((_input_grads(gs, rows, site.name), p_r))
                for u0 in range(0, 0 if paired else masks.shape[0], ub):
                    # sliced: per unit, its channel's backward to the layer's input, then one vmap
                    if sl is not None and h is not None:
                        v = torch.stack(
                            [
                                _slice_vjp(
                                    sl, h, torch.full((len(g),), int(c), device=g.device), g[:, int(c)].unsqueeze(1)
                                )
                                for c in channel_of[u0 : u0 + ub]
                            ]
                        )
                        grads = _batched_vjp(h, rows, v, site.name)
                    else:
                        pick = whole[u0 : u0 + ub].to(g.device).view(-1, *([1] * g.dim()))
                        v = masks[u0 : u0 + ub].unsqueeze(1) * torch.where(pick, g_kept.unsqueeze(0), g.unsqueeze(0))
                        grads = _batched_vjp(y, rows, v, site.name)
                    got = grads if got is None else [torch.cat([a, b]) for a, b in zip(got, grads)]
            if paired:
                if sums is None:
                    sums = [work_dtype(x).new_zeros((len(pair_ex), *x.shape[1:])) for x in batch.inputs]
                for grads, p_r in got_pairs:
                    on = (p_r >= 0).nonzero().flatten()
                    for s, gx in zip(sums, grads):
                        gx = work_dtype(gx)[on.to(gx.device)]
                        wk = w[on].to(gx).view(-1, *([1] * (gx.dim() - 1)))
                        s.index_add_(0, p_r[on].to(gx.device), gx * wk)
                continue
            assert got is not None  # at least one unit
            got = [work_dtype(gx) for gx in got]
            if sums is None:
                sums = [work_dtype(x).new_zeros((masks.shape[0], *x.shape)) for x in batch.inputs]
            for s, gx in zip(sums, got):
                wk = w.to(gx).view(1, -1, *([1] * (gx.dim() - 2)))
                s.index_add_(1, example.to(gx.device), gx * wk)
        if paired:
            if sums is None:
                sums = [work_dtype(x).new_zeros((len(pair_ex), *x.shape[1:])) for x in batch.inputs]
            ex_d = pair_ex.to(sums[0].device)
            result = tuple(
                (s * (x - b)[ex_d]).contiguous().detach().cpu() for s, x, b in zip(sums, batch.inputs, batch.baselines)
            )  # [P, *input_shape]
        else:
            assert sums is not None  # at least one path row
            result = tuple(
                (s * (x - b).unsqueeze(0)).transpose(0, 1).contiguous().detach().cpu()
                for s, x, b in zip(sums, batch.inputs, batch.baselines)
            )  # [N, U, *input_shape]: examples first
        if eq3 is not None and masks is not None:
            if site.dictionary is not None and getattr(spec, "part", None) is None:
                cond = torch.cat(list(eq3), _dictionary_dim(site.dictionary, eq3[0]))
            else:
                cond = pick_part(tuple(eq3), getattr(spec, "part", None), site.name) if len(eq3) > 1 else eq3[0]
            result = _matched(result, cond, masks, whole, sp.token_keep(cond, token_mask), pair_ex if paired else None)
    return result if batch.is_tuple else result[0]


def _dictionary_dim(dictionary, f: torch.Tensor) -> int:
    """The dim of ``f`` (``[N, ...]``) that a dictionary's features run along."""
    return dictionary.dim if dictionary.dim >= 0 else f.dim() + dictionary.dim


def _dictionary_masks(sp, units, parts, ddim: int, layer: str) -> torch.Tensor:
    """``[U, *shape]`` masks over one example of ``cat(features, error, ddim)``: an int ``u < F`` is feature ``u``
    of ``sp`` (the features' spec), ``u = F`` the error node (every element of ``ε``), a tuple an element of the
    features."""
    f, err = parts
    n_feat = f.shape[ddim]
    units = [units] if isinstance(units, (int, tuple)) or torch.is_tensor(units) and units.dim() == 0 else list(units)
    d = ddim - 1  # the dim within one example
    rows = []
    for u in units:
        if not isinstance(u, tuple) and not isinstance(u, bool) and int(u) == n_feat:
            m_f = torch.zeros(f.shape[1:], dtype=torch.bool)
            m_e = torch.ones(err.shape[1:], dtype=torch.bool)
        else:
            if not isinstance(u, tuple) and not isinstance(u, bool) and not 0 <= int(u) < n_feat:
                raise UnitscopeError(
                    f"unit {int(u)} is out of range for the dictionary of layer {layer!r}",
                    layer=layer,
                    hint=f"its features are 0 … {n_feat - 1}, its error node {n_feat}",
                )
            m_f = sp.unit_masks(u if isinstance(u, tuple) else int(u), tuple(f.shape[1:]), layer)[0]
            m_e = torch.zeros(err.shape[1:], dtype=torch.bool)
        rows.append(torch.cat([m_f, m_e], d))
    return torch.stack(rows)


def _matched(result: tuple, cond: torch.Tensor, masks: torch.Tensor, whole: torch.Tensor, keep, pair_ex):
    """The per-input attributions of the Stieltjes rules (the adaptive default, ``riemann_*``) corrected, unit by unit
    and example by example, so that summed over the inputs they give the unit's conductance on the same nodes (Eq. 3,
    whose error is estimated). The trapezoid of Eq. 2 on those nodes misses mostly by a common factor (a unit that
    switches on inside an interval scales every input's share alike): a scale within [0.1, 10] is applied to every
    input; otherwise (the two disagree in sign or in earnest, on a unit near zero) the difference is spread over the
    inputs in proportion to their |attribution|."""
    cond = cond.detach().cpu().to(torch.float64)
    masks = masks.detach().cpu().to(torch.float64)
    kept = cond if keep is None else cond * keep.cpu()
    flat = lambda t: t.reshape(t.shape[0], -1)  # noqa: E731
    if pair_ex is None:  # [N, U]: mask u over example e, a whole unit at the real tokens only
        want = torch.where(whole.view(1, -1), flat(kept) @ flat(masks).T, flat(cond) @ flat(masks).T)
        dims = 2
    else:  # [P]: pair p is unit p of example pair_ex[p]
        rows = torch.where(whole.view(-1, *([1] * (cond.dim() - 1))), kept[pair_ex], cond[pair_ex])
        want = (flat(rows) * flat(masks)).sum(1)
        dims = 1
    got = sum(r.double().flatten(dims).sum(dims) for r in result)
    size = sum(r.double().abs().flatten(dims).sum(dims) for r in result)
    shape = lambda r: (*want.shape, *([1] * (r.dim() - dims)))  # noqa: E731
    ratio = want / torch.where(got == 0, torch.ones_like(got), got)
    scale = (got != 0) & (ratio >= 0.1) & (ratio <= 10.0)
    ratio = torch.where(scale, ratio, torch.ones_like(ratio))
    spread = torch.where(scale | (size == 0), torch.zeros_like(got), (want - got) / torch.where(size == 0, 1.0, size))
    return tuple(
        (r.double() * ratio.view(shape(r)) + r.double().abs() * spread.view(shape(r))).to(r.dtype) for r in result
    )


def _warn_unresolved(model, batch, target, site, sums, internal_batch_size, tol: float = 0.05) -> None:
    """A :class:`CompletenessWarning` when the layer's own conductance on these nodes is not ok (as
    :func:`unitscope.conductance` would mark it): per-input conductance through it is then no better resolved."""
    parts = [p.detach().cpu() for p in sums.conductance[site.name]]
    errors = [e.detach().cpu() for e in sums.conductance_unit_error[site.name]]
    value = tuple(parts) if len(parts) > 1 else parts[0]
    error = tuple(errors) if len(errors) > 1 else errors[0]
    out_diff = (sums.F_x - sums.F_baseline).double()
    delta = sum(p.double().flatten(1).sum(1) for p in parts) - out_diff
    cuts = (
        cut_examples(model, batch, target, [site], internal_batch_size=internal_batch_size)
        if bool((delta.abs() > tol * out_diff.abs()).any())
        else None
    )
    ok, messages = diagnose_sums(
        sums,
        {site.name: value},
        {site.name: error},
        {site.name: delta},
        out_diff,
        [site],
        method="adaptive",
        tol=tol,
        cuts=cuts,
    )
    if not ok[site.name]:
        more = len(messages[site.name]) - 1
        warnings.warn(
            "per-input conductance through an unresolved layer: "
            + messages[site.name][0]
            + (f" (and {more} more examples)" if more > 0 else ""),
            CompletenessWarning,
            stacklevel=3,
        )


def _same_rows(alphas: torch.Tensor, weights: torch.Tensor, n: int):
    """``(example, alpha, weight)`` per path row when every example has the same nodes and weights."""
    return torch.arange(n).repeat_interleave(alphas.numel()), alphas.repeat(n), weights.repeat(n)


def _adaptive_rows(model, batch, target, site, budget: int, internal_batch_size):
    """``(example, alpha, weight)`` per path row: the nodes the adaptive rule places for ``site`` on each example,
    with the weights of the composite trapezoid on them (they sum to one per example), and that pass's sums (the
    layer's conductance, its error estimates, F at both ends)."""
    sums = integrate_adaptive(
        model,
        batch,
        target,
        [site],
        budget=budget,
        rtol=0.0,
        internal_batch_size=internal_batch_size,
        progress=False,
        influence=False,
    )
    examples, alphas, weights = [], [], []
    assert sums.diagnosis is not None  # the adaptive pass fills it
    for e in range(batch.n):
        a = torch.sort(sums.diagnosis[e]["alpha"].double()).values
        w = paths.stieltjes_weights(a)
        examples.append(torch.full((a.numel(),), e, dtype=torch.long))
        alphas.append(a)
        weights.append(w)
    return torch.cat(examples), torch.cat(alphas), torch.cat(weights), sums


def _channel_index(ch: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Gather index ``[R, 1, ...]`` picking channel ``ch[r]`` of row ``r`` of ``like``."""
    return ch.view(-1, *([1] * (like.dim() - 1))).expand(-1, 1, *like.shape[2:])


def _slice_vjp(sl, h: torch.Tensor, ch: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``∂(v · y_ch)/∂h`` with row ``r``'s channel ``ch[r]`` of the layer computed from its input ``h`` alone
    (``v``: ``[R, 1, ...]``): the same numbers as the full layer's backward, at the cost of those channels."""
    h_d = h.detach().requires_grad_(True)
    with torch.enable_grad():
        y_c = sl.rows(h_d, ch)
    return torch.autograd.grad(y_c, h_d, grad_outputs=v)[0]


def _input_grads(gs, rows: tuple, layer: str, batched: int | None = None) -> list[torch.Tensor]:
    """The gradients of a unit with respect to the inputs; an input the layer does not read (one of a tuple)
    truly gets zeros, but a layer that reads none of them through autograd is an error, never all zeros."""
    if all(g is None for g in gs):
        raise UnitscopeError(
            f"layer {layer!r} does not depend on the inputs through autograd, so the "
            "conductance of its units with respect to the inputs cannot be had",
            layer=layer,
            hint="the model detaches the inputs (or computes the layer from a copy without "
            "gradients) before this layer; for token ids pass embedding='NAME' so the "
            "attributions are over that module's output",
        )
    shape = () if batched is None else (batched,)
    return [r.new_zeros((*shape, *r.shape)) if g is None else g.detach() for r, g in zip(rows, gs)]


def _batched_vjp(y: torch.Tensor, rows: tuple, v: torch.Tensor, layer: str) -> list[torch.Tensor]:
    """``[∂(v_u · y)/∂rows for u]`` in one vmapped backward; a loop if an op has no batching rule."""
    try:  # the graph is kept until the batched call succeeds, so the loop below can still use it
        gs = torch.autograd.grad(y, rows, grad_outputs=v, is_grads_batched=True, retain_graph=True, allow_unused=True)
        return _input_grads(gs, rows, layer, batched=v.shape[0])
    except RuntimeError as e:  # an op without a batching rule (vmap); out-of-memory is not retried
        if is_oom(e):
            with_oom_hint(e)
            raise
        out = []
        for k in range(v.shape[0]):
            gs = torch.autograd.grad(y, rows, grad_outputs=v[k], retain_graph=True, allow_unused=True)
            out.append(_input_grads(gs, rows, layer))
        return [torch.stack(parts) for parts in zip(*out)]
