"""Ablation: fix chosen units to a value and see what the prediction loses.

>>> import torch, torch.nn as nn
>>> net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
>>> x = torch.randn(5, 3)
>>> with ablate(net, {"1": [0, 2]}):
...     y = net(x)
>>> len(net[1]._forward_hooks)   # restored on exit
0
>>> ablation_scores(net, x, "1", target=0).shape   # [N, units]: drop of F when each unit alone is ablated
torch.Size([5, 4])

The paper ablates a filter by setting its bias to −∞, i.e. its post-ReLU output to 0: ``value=0`` on a
post-ReLU layer. ``value="mean"`` replaces a unit by its mean activation (pass ``mean=`` or a ``loader``).
Units follow the unit specification (:mod:`unitscope.core.units`): an int is a conv channel, a transformer
neuron at every token, a head (``spec="heads"``); a tuple is one element. Token ids are accepted as inputs.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn as nn

from ..core.capture import site_hooks
from ..core.dictionary import attach, dictionaries_mode
from ..core.errors import UnitscopeError
from ..core.faults import is_oom, model_errors, with_oom_hint
from ..core.inputs import make_target, model_device, prepare
from ..core.progress import bar
from ..core.sites import resolve
from ..core.state import analysis_mode
from ..core.types import Inputs, Layer, Target
from ..core.units import pick_part, resolve_units

__all__ = ["ablate", "ablation_scores", "cumulative_ablation", "mean_activation", "unit_mask"]


def unit_mask(units, shape: tuple, layer: str, spec=None) -> torch.Tensor:
    """A boolean mask over one example's layer output (``shape``, no batch) covering ``units``: ints are units
    of ``spec`` (default: channels, dim 1), tuples are elements."""
    spec = resolve_units("channels" if spec is None else spec, name=layer, shape=(1, *shape))
    if isinstance(units, (int, tuple)):
        units = [units]
    units = list(units)
    if not units:
        return torch.zeros(shape, dtype=torch.bool)
    return spec.unit_masks(units, shape, layer).any(0)


def _spec(model, site, spec, y):
    return resolve_units(spec, model=model, name=site.name, module=site.module, shape=tuple(y.shape))


def _parts(out, spec, layer: str):
    """(the tensor to ablate, rebuild(new) -> the module's output) for a tensor or a tuple output."""
    if torch.is_tensor(out):
        return out, lambda new: new
    if isinstance(out, tuple):
        i = 0 if spec is None or spec.part is None else spec.part
        y = pick_part(out, i, layer)
        if torch.is_tensor(y):

            def rebuild(new):
                parts = list(out)
                parts[i] = new
                return type(out)(*parts) if hasattr(out, "_fields") else type(out)(parts)

            return y, rebuild
    raise UnitscopeError(
        f"layer {layer!r} has an output of type {type(out).__name__}; only a tensor or a part of "
        "a tuple (UnitSpec(part=...)) can be ablated",
        layer=layer,
    )


def mean_activation(model: nn.Module, loader, layer, *, max_batches: int | None = None) -> torch.Tensor:
    """The mean of ``layer``'s output over a data loader (batches of inputs, or ``(inputs, labels)``)."""
    from ..attribution.scores import activation

    total: torch.Tensor | None = None
    count = 0
    for i, batch in enumerate(loader):
        if max_batches is not None and i >= max_batches:
            break
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        a = activation(model, x, [layer])
        v = a[a.layers[0]]
        total = v.sum(0) if total is None else total + v.sum(0)
        count += v.shape[0]
    if not count or total is None:
        raise UnitscopeError("the loader gave no examples", layer=str(layer))
    return total / count


def _replacement(value, mean, y: torch.Tensor, layer: str) -> torch.Tensor:
    """The per-example tensor that ablated units take."""
    if isinstance(value, str):
        if value != "mean":
            raise UnitscopeError(f"unknown ablation value {value!r}", hint="use a number, 'mean' or a tensor")
        if mean is None:
            raise UnitscopeError("value='mean' needs mean= (a tensor) or loader=", layer=layer)
        value = mean
    v = torch.as_tensor(value, dtype=y.dtype, device=y.device)
    try:
        return torch.broadcast_to(v, y.shape[1:])
    except RuntimeError:
        raise UnitscopeError(
            "the ablation value does not fit the layer",
            layer=layer,
            value_shape=tuple(v.shape),
            unit_shape=tuple(y.shape[1:]),
        ) from None


@contextmanager
def ablate(model: nn.Module, units_by_layer: dict, *, value=0.0, mean=None, loader=None, spec=None, dictionaries=None):
    """Within the block, the chosen units of each layer output ``value`` (0, ``"mean"`` or a tensor).

    ``units_by_layer``: ``{layer: units}`` — units of the layer's unit specification (ints: a conv channel,
    a transformer neuron at every token; ``spec`` to choose, e.g. ``"heads"``) and/or elements (tuples). The
    model is restored on exit, also on error. ``dictionaries`` (``{layer: dictionary}``, as in
    :func:`unitscope.conductance`): a layer's units are its dictionary's features (unit ``F``: the error node), and
    the layer outputs ``decode(f with the features ablated) + ε`` — the error node kept (ablating the error node:
    ``decode(f)``, the layer replaced by its reconstruction).

    Parameters
    ----------
    model : nn.Module
        The network; forward hooks on the layers are added for the block and removed on exit, also on error.
    units_by_layer : dict
        ``{layer: units}``: a layer (dotted name, ``"NAME@K"``, or the module) to an int, an element tuple, or a list
        of them.
    value : float, str or Tensor, default 0.0
        What the ablated units output: a number, ``"mean"`` (their mean activation, from ``mean`` or ``loader``), or
        a tensor that broadcasts to one example's layer output.
    mean : Tensor, dict or None, default None
        With ``value="mean"``: the layer's mean output (one example's shape), or ``{layer: mean}``.
    loader : iterable or None, default None
        With ``value="mean"`` and no ``mean``: batches of inputs (or ``(inputs, labels)``) to compute the means from.
    spec : str, UnitSpec, dict or None, default None
        What an int unit means (``None``: by the layer's layout, e.g. a conv's channels; ``"heads"`` for heads).
    dictionaries : dict or None, default None
        ``{layer: dictionary}`` as in :func:`unitscope.conductance`: the units are the dictionary's features, unit
        ``F`` its error node.

    Returns
    -------
    contextmanager
        A ``with`` block that yields ``model``, ablated inside the block and restored on exit.

    Raises
    ------
    UnitscopeError
        An unknown layer (with the closest names), an unknown ``value``, ``value="mean"`` without ``mean`` or
        ``loader``, a value that does not fit the layer, a unit out of range, or a layer whose output is not a
        tensor (or a part of a tuple that ``spec`` names); raised when the ablated forward pass runs.

    Examples
    --------
    >>> import torch, torch.nn as nn, unitscope as us
    >>> net = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
    >>> with us.ablate(net, {"1": [0, 2]}):
    ...     y = net[:2](torch.ones(2, 2))
    >>> y[:, 0].tolist(), y[:, 2].tolist(), len(net[1]._forward_hooks)
    ([0.0, 0.0], [0.0, 0.0], 0)
    """
    sites = resolve(model, list(units_by_layer))
    by_dict = {s.name: s.dictionary for s in attach(model, sites, dictionaries)}
    means = {}
    if isinstance(value, str) and value == "mean":
        for s, key in zip(sites, units_by_layer):
            if isinstance(mean, dict):
                means[s.name] = mean.get(key, mean.get(s.name))
            elif mean is not None:
                means[s.name] = mean
            elif loader is not None:
                means[s.name] = mean_activation(model, loader, s.name)
    fns = {}
    for s, key in zip(sites, units_by_layer):
        units = units_by_layer[key]

        def hook(module, args, out, site=s, units=units):
            if by_dict.get(site.name) is not None:
                return _ablated_through(by_dict[site.name], model, site, out, units, value, means.get(site.name), spec)
            first = spec.get(site.name) if isinstance(spec, dict) else spec
            y, rebuild = _parts(out, first if hasattr(first, "part") else None, site.name)
            sp = _spec(model, site, spec, y)
            mask = unit_mask(units, tuple(y.shape[1:]), site.name, sp).to(y.device)
            fill = _replacement(value, means.get(site.name), y, site.name)
            return rebuild(torch.where(mask, fill, y))

        fns[s] = hook
    with dictionaries_mode(by_dict.values()), site_hooks(model, fns):  # NAME@K: only that call of a module run
        yield model  # several times per forward pass


def ablation_scores(
    model: nn.Module,
    inputs: Inputs,
    layer: Layer,
    *,
    units=None,
    target: Target = None,
    value=0.0,
    mean=None,
    additional_forward_args=None,
    internal_batch_size: int = 256,
    spec=None,
    progress: bool | None = None,
    dictionaries=None,
) -> torch.Tensor:
    """``[N, U]``: ``F(x) − F(x with unit u alone ablated)`` for each unit (default: every unit of the layer's
    unit specification — the channels of a conv, the neurons of a transformer layer; ``spec`` to choose).

    All units of one example run as rows of batched forward passes (``internal_batch_size`` rows at a time): the layer's
    output is computed once per example and expanded, so the part of the model below the layer is not
    repeated (models that reuse an input below the layer fall back to repeating the inputs). ``progress``: a bar over
    the examples (see :func:`unitscope.core.progress.bar`).

    ``dictionaries`` (``{layer: dictionary}``, as in :func:`unitscope.conductance`): the units are the dictionary's
    features and, last (unit ``F``), its error node; ablating a feature changes the reconstruction ``decode(f)``, the
    error node kept; ablating the error node replaces the layer by its reconstruction (:func:`ablate`).

    Parameters
    ----------
    model : nn.Module
        The network, handed back as it came.
    inputs : Tensor or tuple of Tensor
        A batch ``[N, ...]`` or a tuple of such tensors; token ids are accepted.
    layer : str or nn.Module
        One layer: a dotted name (``"NAME@K"`` for the K-th call) or the module.
    units : int, tuple, sequence or None, default None
        The units to ablate one at a time: ints (units of the layer's unit specification) and/or element tuples
        (``None``: every unit of the specification).
    target : None, int, sequence, Tensor, callable or tuple, default None
        Which scalar ``F`` of the output, as in :func:`unitscope.conductance` (``None``: each example's top class
        on the unablated inputs).
    value : float, str or Tensor, default 0.0
        What an ablated unit outputs, as in :func:`ablate`.
    mean : Tensor or None, default None
        With ``value="mean"``: the layer's mean output (one example's shape).
    additional_forward_args : tuple, dict or None, default None
        Further arguments of ``model`` (a tuple after the inputs, or a dict of keywords).
    internal_batch_size : int, default 256
        Rows (examples × units) per forward pass: the memory bound.
    spec : str, UnitSpec, dict or None, default None
        What an int unit means (``None``: by the layer's layout).
    progress : bool or None, default None
        ``None``: a bar over the examples on a terminal; ``False``: none.
    dictionaries : dict or None, default None
        ``{layer: dictionary}`` as in :func:`unitscope.conductance`: the units are its features and the error node.

    Returns
    -------
    Tensor
        ``[N, U]`` (``U = len(units)``), in the model's dtype (float32 at least): the drop of ``F`` per example when
        each unit alone is ablated.

    Raises
    ------
    UnitscopeError
        An unknown layer, a layer that did not run in the forward pass, an unknown ``value``, ``value="mean"``
        without ``mean``, a value that does not fit the layer, a unit out of range, a target out of range, or inputs
        the model does not accept.

    Examples
    --------
    >>> import torch, torch.nn as nn, unitscope as us
    >>> net = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
    >>> x = torch.rand(4, 2)
    >>> drop = us.ablation_scores(net, x, "1")
    >>> drop.shape
    torch.Size([4, 3])
    >>> y = net[:2](x).detach()     # F is linear in the ReLU's output: each drop is w_u · y_u
    >>> torch.allclose(drop, y * net[2].weight[0].detach(), atol=1e-6)
    True
    """
    (site,) = attach(model, resolve(model, [layer]), dictionaries)
    batch = prepare(inputs, None, additional_forward_args, device=model_device(model), allow_ids=True)
    n = batch.n
    if site.dictionary is not None:
        with analysis_mode(model), dictionaries_mode([site.dictionary]), torch.no_grad():
            return _dictionary_ablation_scores(
                model, batch, site, units, target, value, mean, internal_batch_size, spec, progress
            )
    with analysis_mode(model), torch.no_grad():
        everyone = torch.arange(n)
        out_x, y = _output_and_layer(model, batch, site, spec)  # one unablated forward gives F(x) and the layer
        tgt = make_target(target, n, out_x)
        base = tgt(out_x, everyone)
        sp = _spec(model, site, spec, y)
        shape = tuple(y.shape[1:])
        if units is None:
            units = list(range(sp.n_units(tuple(y.shape), site.name)))
        units = [units] if isinstance(units, (int, tuple)) else list(units)
        masks = torch.stack([unit_mask(u, shape, site.name, sp) for u in units]).to(y.device)  # [U, *shape]
        fill = _replacement(value, mean, y, site.name)

        def ablated(ex, u0, u1):  # [e*u, *shape]: each row of ex with each unit of the chunk ablated
            return torch.where(masks[u0:u1].unsqueeze(0), fill, y[ex.to(y.device)].unsqueeze(1)).reshape(-1, *shape)

        scores = _drop_scores(
            model,
            batch,
            site,
            tgt,
            base,
            len(units),
            ablated,
            sp,
            internal_batch_size,
            f"ablation of {len(units)} units",
            progress,
        )
    # in the model's dtype, float32 at least (as every score)
    return scores.to(y.dtype if y.is_floating_point() and y.element_size() >= 4 else torch.float32)


def _drop_scores(model, batch, site, tgt, base, n_units, rows_of, sp, internal_batch_size, desc, progress):
    """``[N, n_units]`` float64: ``base − F`` with the layer's output replaced by ``rows_of(ex, u0, u1)`` (the
    ablated layer for the examples ``ex`` × the units ``u0 … u1 − 1``, example-major), at most
    ``internal_batch_size`` rows per forward pass."""
    n = batch.n
    scores = torch.empty(n, n_units, dtype=torch.float64)
    step = max(1, internal_batch_size)
    per = max(1, step // max(1, n_units))
    for e0 in bar(range(0, n, per), desc=desc, unit="batch", progress=progress):
        ex = torch.arange(e0, min(n, e0 + per))
        for u0 in range(0, n_units, step):
            u1 = min(n_units, u0 + step)
            example = ex.repeat_interleave(u1 - u0)
            F = _forward_with_layer(model, batch, site, ex, example, rows_of(ex, u0, u1), tgt, sp)
            scores[ex.unsqueeze(1), torch.arange(u0, u1).unsqueeze(0)] = (
                (base[example.to(base.device)] - F).double().cpu().view(len(ex), -1)
            )
    return scores


def cumulative_ablation(
    model: nn.Module,
    inputs,
    layer,
    order,
    *,
    max_units: int | None = None,
    target=None,
    value=0.0,
    mean=None,
    additional_forward_args=None,
    internal_batch_size: int = 256,
    spec=None,
    progress: bool | None = None,
) -> torch.Tensor:
    """``[N, M]``: ``F(x with the units order[i, :m] ablated together)`` for ``m = 1 … M`` — the curve behind "how
    many of the top units must go before the prediction changes" (``M = max_units``, default every column of
    ``order [N, ≥M]``; ``order`` holds unit indices of the layer's unit specification, e.g.
    ``scores.per_channel(layer).argsort(1, descending=True)``).

    >>> import torch, torch.nn as nn
    >>> net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    >>> x = torch.randn(5, 3)
    >>> cumulative_ablation(net, x, "1", torch.arange(4).repeat(5, 1), target=0).shape
    torch.Size([5, 4])

    ``target`` as in :func:`ablation_scores` (a callable such as ``lambda out: out.argmax(1).to(out.dtype)`` gives
    the predicted label after each ablation). Rows of one example run batched, ``internal_batch_size`` at a time;
    ``progress``: a bar over the examples.
    """
    (site,) = resolve(model, [layer])
    batch = prepare(inputs, None, additional_forward_args, device=model_device(model), allow_ids=True)
    n = batch.n
    order = torch.as_tensor(order)
    m_max = order.shape[1] if max_units is None else min(max_units, order.shape[1])
    with analysis_mode(model), torch.no_grad():
        out_x, y = _output_and_layer(model, batch, site, spec)
        tgt = make_target(target, n, out_x if target is None else None)
        sp = _spec(model, site, spec, y)
        shape = tuple(y.shape[1:])
        fill = _replacement(value, mean, y, site.name)
        out = torch.empty(n, m_max, dtype=torch.float64)
        for i in bar(range(n), desc=f"cumulative ablation of up to {m_max} units", unit="example", progress=progress):
            masks = torch.stack(
                [unit_mask([int(u) for u in order[i, :m]], shape, site.name, sp) for m in range(1, m_max + 1)]
            ).to(y.device)
            ablated = torch.where(masks, fill, y[i : i + 1])
            ex = torch.tensor([i])
            for r0 in range(0, m_max, internal_batch_size):
                part = ablated[r0 : r0 + internal_batch_size]
                out[i, r0 : r0 + part.shape[0]] = (
                    _forward_with_layer(model, batch, site, ex, ex.repeat(part.shape[0]), part, tgt, sp).double().cpu()
                )
    return out


def _output_and_layer(model, batch, site, spec=None):
    """``(the model's output, site's output)`` on the unablated inputs, from one forward pass (the layer's output a
    tensor, or the part of a tuple output that ``spec`` names)."""
    captured = {}

    def grab(module, args, out):
        captured["y"] = out

    with site_hooks(model, {site: grab}) as calls:
        out = batch.call(model, batch.inputs, torch.arange(batch.n))
    if "y" not in captured:
        ran = calls(site)
        raise UnitscopeError(
            f"layer {site.name!r} did not run in the model's forward pass",
            layer=site.name,
            hint=f"its module ran {ran} times: calls are @0 … @{ran - 1}"
            if ran
            else "pick a layer that forward() calls",
        )
    first = spec.get(site.name) if isinstance(spec, dict) else spec
    return out, _parts(captured["y"], first if hasattr(first, "part") else None, site.name)[0]


def _forward_with_layer(model, batch, site, ex, example, layer_rows, tgt, spec=None):
    """F of the rows whose ``site`` output is ``layer_rows``; inputs fed once per example when possible."""

    def expand(module, args, out):
        return _parts(out, spec, site.name)[1](layer_rows)

    try:
        with site_hooks(model, {site: expand}):
            out = batch.call(model, batch.path_rows(ex, torch.ones(ex.numel(), dtype=torch.float64)), ex)
        if _rows_of(out) == example.numel():
            return tgt(out, example)
    except (RuntimeError, IndexError) as e:  # rows fed once per example do not fit the expanded layer rows (a
        # residual sum or an attention mask of the examples' own batch size: torch raises RuntimeError, an index
        # into the mask IndexError): feed every row
        if isinstance(e, RuntimeError) and is_oom(e):
            with_oom_hint(e)
            raise
    with model_errors(model, inputs=batch.inputs), site_hooks(model, {site: expand}):
        out = batch.call(model, batch.path_rows(example, torch.ones(example.numel(), dtype=torch.float64)), example)
    return tgt(out, example)


def _rows_of(out) -> int | None:
    """The batch size of a model output (a tensor, a dict/ModelOutput or a tuple of tensors)."""
    if torch.is_tensor(out):
        return out.shape[0]
    vals = out.values() if isinstance(out, dict) else out if isinstance(out, (tuple, list)) else ()
    for v in vals:
        if torch.is_tensor(v) and v.dim():
            return v.shape[0]
    return None


def _feature_dim(dictionary, f: torch.Tensor) -> int:
    return dictionary.dim if dictionary.dim >= 0 else f.dim() + dictionary.dim


def _feature_units(dictionary, model, site, f, units, spec):
    """``(spec of the features, units as a list, n_features)``; the error node is unit ``n_features``."""
    sp = _spec(model, site, spec, f)
    n_feat = f.shape[_feature_dim(dictionary, f)]
    if units is None:
        units = list(range(sp.n_units(tuple(f.shape), site.name))) + [n_feat]
    units = [units] if isinstance(units, (int, tuple)) else list(units)
    for u in units:
        if not isinstance(u, tuple) and not 0 <= int(u) <= n_feat:
            raise UnitscopeError(
                f"unit {int(u)} is out of range for the dictionary of layer {site.name!r}",
                layer=site.name,
                hint=f"its features are 0 … {n_feat - 1}, its error node {n_feat}",
            )
    return sp, units, n_feat


def _feature_masks(units, n_feat, shape, layer, sp):
    """``([U, *shape] feature masks, [U] error-node flags)`` for a chunk of units (masks made per chunk: a 16k-feature
    dictionary's full set would be 16k × the layer's features)."""
    err = torch.tensor([not isinstance(u, tuple) and int(u) == n_feat for u in units])
    masks = torch.stack(
        [
            torch.zeros(shape, dtype=torch.bool) if e else unit_mask(u, shape, layer, sp)
            for u, e in zip(units, err.tolist())
        ]
    )
    return masks, err


def _ablated_through(dictionary, model, site, out, units, value, mean, spec):
    """The output of a layer read through ``dictionary`` with ``units`` ablated (:func:`ablate`)."""
    if not torch.is_tensor(out):
        raise UnitscopeError(
            f"layer {site.name!r} does not output one tensor, which a dictionary reads", layer=site.name
        )
    f, err = dictionary.split(out, layer=site.name)
    sp, units, n_feat = _feature_units(dictionary, model, site, f, units, spec)
    masks, is_err = _feature_masks(units, n_feat, tuple(f.shape[1:]), site.name, sp)
    fill = _replacement(value, mean, f, site.name)
    f = torch.where(masks.any(0).to(f.device), fill, f)
    return dictionary.join(f, torch.zeros_like(err) if bool(is_err.any()) else err)


def _dictionary_ablation_scores(model, batch, site, units, target, value, mean, internal_batch_size, spec, progress):
    """:func:`ablation_scores` of a layer read through its dictionary: ``[N, U]``."""
    d, n = site.dictionary, batch.n
    out_x, y = _output_and_layer(model, batch, site, None)
    if not torch.is_tensor(y):
        raise UnitscopeError(
            f"layer {site.name!r} does not output one tensor, which a dictionary reads", layer=site.name
        )
    tgt = make_target(target, n, out_x)
    base = tgt(out_x, torch.arange(n))
    f, err = d.split(y, layer=site.name)
    sp, units, n_feat = _feature_units(d, model, site, f, units, spec)
    fill = _replacement(value, mean, f, site.name)
    shape_f, shape_y = tuple(f.shape[1:]), tuple(y.shape[1:])

    def ablated(ex, u0, u1):  # the layer's rows rebuilt from the features with each chunk's unit ablated
        m, is_err = _feature_masks(units[u0:u1], n_feat, shape_f, site.name, sp)
        m, is_err = m.to(f.device), is_err.to(f.device)
        rows_f = torch.where(m.unsqueeze(0), fill, f[ex.to(f.device)].unsqueeze(1))  # [e, u, *shape_f]
        rows_e = err[ex.to(f.device)].unsqueeze(1).expand(-1, u1 - u0, *shape_y)
        rows_e = torch.where(is_err.view(1, -1, *([1] * len(shape_y))), torch.zeros_like(rows_e), rows_e)
        return d.join(rows_f.reshape(-1, *shape_f), rows_e.reshape(-1, *shape_y))

    scores = _drop_scores(
        model,
        batch,
        site,
        tgt,
        base,
        len(units),
        ablated,
        None,
        internal_batch_size,
        f"ablation of {len(units)} dictionary units",
        progress,
    )
    return scores.to(y.dtype if y.is_floating_point() and y.element_size() >= 4 else torch.float32)
