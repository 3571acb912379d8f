"""A slow, literal implementation of conductance (Dhamdhere et al. 2018), to check the engine against.

>>> import torch, torch.nn as nn
>>> net = nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 1))
>>> x = torch.tensor([[1.0, -2.0]])
>>> cond = conductance_rule(net, x, "1", target=0, rule="gausslegendre", n_steps=16)
>>> gap = cond.sum() - (net(x)[0, 0] - net(torch.zeros_like(x))[0, 0]).double()
>>> bool(gap.abs() < 1e-5)
True

Everything is a Python loop: one example at a time, one path point at a time, one ``torch.autograd.grad`` call
per quantity. No batching, no adaptive panels, nothing from ``unitscope``. Hooks are ``register_forward_hook``
handles removed in ``finally``. The path is ``x_α = x' + α (x − x')`` in the input space, or in the output
space of an ``embedding`` module (token models: that module's output is replaced by the path point).

* Eq. 3, the rule's formula: ``Cond^y = Σ_k w_k · ∂F/∂y(x_{α_k}) ⊙ dy/dα(α_k)`` with ``dy/dα`` by the
  double-backward trick (``v ↦ ∂(v·y)/∂α``, then its gradient with respect to ``v``) — :func:`conductance_rule`;
* Eq. 3, its Riemann–Stieltjes form on given nodes (a rule's nodes plus both ends, or a uniform grid):
  ``Σ_k ½ (g_k + g_{k+1}) ⊙ (y_{k+1} − y_k)`` — :func:`conductance_stieltjes`, :func:`conductance_trapezoid`;
* Eq. 2: ``Cond_i^y = (x_i − x'_i) Σ_k w_k Σ_{j ∈ unit} ∂F/∂y_j · ∂y_j/∂x_i`` — :func:`neuron_conductance_rule`;
* internal influence: ``Σ_k w_k ∂F/∂y(x_{α_k})`` — :func:`influence_rule`.

Nodes and weights of the rules on ``[0, 1]`` are computed here from numpy (weights sum to one).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

__all__ = [
    "nodes",
    "conductance_rule",
    "conductance_stieltjes",
    "conductance_trapezoid",
    "neuron_conductance_rule",
    "influence_rule",
    "recorded",
    "find_module",
]


def nodes(rule: str, n: int) -> tuple[list[float], list[float]]:
    """``(alphas, weights)`` of ``rule`` with ``n`` points on ``[0, 1]``; the weights sum to one."""
    if rule == "gausslegendre":
        x, w = np.polynomial.legendre.leggauss(n)
        return list((x + 1) / 2), list(w / 2)
    if rule == "riemann_left":
        return [k / n for k in range(n)], [1 / n] * n
    if rule == "riemann_right":
        return [(k + 1) / n for k in range(n)], [1 / n] * n
    if rule == "riemann_middle":
        return [(k + 0.5) / n for k in range(n)], [1 / n] * n
    if rule == "riemann_trapezoid":
        return [k / (n - 1) for k in range(n)], [(0.5 if k in (0, n - 1) else 1.0) / (n - 1) for k in range(n)]
    raise ValueError(rule)


def find_module(model: nn.Module, site: str) -> tuple[nn.Module, int]:
    """The module of a site ``NAME`` or ``NAME@K`` and which of its calls (``K``, 0 by default)."""
    name, _, k = site.partition("@")
    return model.get_submodule(name), int(k or 0)


class recorded:
    """``with recorded(model, site) as rec:`` — ``rec.value`` is the site's output in the forward pass run inside
    (the ``K``-th call of ``NAME@K``; part 0 of a tuple output; the model continues with a copy of it).
    ``replace=(site, fn)``: that site's output is replaced by ``fn(output)`` (used for the embedding)."""

    def __init__(self, model: nn.Module, site: str | None, replace: tuple | None = None):
        self.model, self.site, self.replace = model, site, replace
        self.value, self.handles = None, []

    def __enter__(self):
        try:
            if self.replace is not None:
                module, k_want = find_module(self.model, self.replace[0])
                calls = [0]

                def swap(mod, args, out, calls=calls, k_want=k_want, fn=self.replace[1]):
                    k = calls[0]
                    calls[0] += 1
                    return fn(out) if k == k_want else None

                self.handles.append(module.register_forward_hook(swap))
            if self.site is not None:
                module, k_want = find_module(self.model, self.site)
                calls = [0]

                def keep(mod, args, out, calls=calls, k_want=k_want):
                    k = calls[0]
                    calls[0] += 1
                    if k != k_want:
                        return None
                    # the model goes on with a copy: an in-place op after the layer (SiLU(inplace=True) in
                    # torchvision's squeeze-excitation) must change neither the value kept nor its gradient
                    if isinstance(out, tuple):
                        self.value = out[0]
                        return (out[0].clone(), *out[1:])
                    self.value = out
                    return out.clone()

                self.handles.append(module.register_forward_hook(keep))
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()
        self.handles = []
        return False


def _example(inputs, e: int):
    return inputs[e : e + 1]


def _point(model, x, baseline, alpha, *, embedding, forward_args, site):
    """One forward pass at ``x' + α (x − x')`` (one example); returns (output, recorder). ``alpha`` may require grad.
    With ``embedding``: ``x`` are token ids, ``baseline`` embeddings; the embedding's output ``e`` is replaced by
    ``baseline + α (e − baseline)``."""
    if embedding is None:
        row = baseline + alpha * (x - baseline)
        rec = recorded(model, site)
        with rec:
            out = model(row, *forward_args)
        return out, rec, row
    holder = {}

    def along_path(e):
        holder["row"] = row = baseline.to(e.dtype) + alpha.to(e.dtype) * (e - baseline.to(e.dtype))
        return row

    rec = recorded(model, site, replace=(embedding, along_path))
    with rec:
        out = model(x, *forward_args)
    return out, rec, holder["row"]


def _setup(model, inputs, baselines, embedding, forward_args, e):
    x = _example(inputs, e)
    args = tuple(
        a[e : e + 1] if torch.is_tensor(a) and a.dim() > 0 and a.shape[0] == inputs.shape[0] else a
        for a in (forward_args or ())
    )
    if embedding is None:
        b = torch.zeros_like(x) if baselines is None else _example(baselines, e).to(x)
        return x, b, args
    with torch.no_grad():
        rec = recorded(model, embedding)
        with rec:
            model(x, *args)
    b = torch.zeros_like(rec.value) if baselines is None else _example(baselines, e).to(rec.value)
    return x, b, args


def _target_value(out, target, e):
    t = target[e] if isinstance(target, (list, tuple)) else target
    return out[0, int(t)]


def _with_grad(fn):
    def wrapped(*a, **k):
        with torch.enable_grad(), torch.inference_mode(False):
            return fn(*a, **k)

    wrapped.__doc__, wrapped.__name__ = fn.__doc__, fn.__name__
    return wrapped


@_with_grad
def conductance_rule(
    model, inputs, layer, *, target, rule="gausslegendre", n_steps=50, baselines=None, embedding=None, forward_args=()
):
    """Eq. 3 by the rule's formula, ``[N, *layer_shape]`` in float64: ``Σ_k w_k ∂F/∂y ⊙ dy/dα``."""
    alphas, weights = nodes(rule, n_steps)
    out_rows = []
    for e in range(inputs.shape[0]):
        x, b, args = _setup(model, inputs, baselines, embedding, forward_args, e)
        total = None
        for a, w in zip(alphas, weights):
            alpha = torch.tensor(a, dtype=b.dtype, requires_grad=True)
            out, rec, _ = _point(model, x, b, alpha, embedding=embedding, forward_args=args, site=layer)
            y = rec.value
            F = _target_value(out, target, e)
            (g,) = torch.autograd.grad(F, y, retain_graph=True)
            v = torch.zeros_like(y, requires_grad=True)
            (s,) = torch.autograd.grad(y, alpha, grad_outputs=v, create_graph=True)
            (dy,) = torch.autograd.grad(s, v)
            term = w * g.double() * dy.double()
            total = term if total is None else total + term
        out_rows.append(total.detach()[0])
    return torch.stack(out_rows)


@_with_grad
def conductance_stieltjes(model, inputs, layer, *, target, alphas, baselines=None, embedding=None, forward_args=()):
    """Eq. 3 as the Riemann–Stieltjes sum on the sorted nodes ``alphas`` (which should include 0 and 1):
    ``Σ_k ½ (∂F/∂y_k + ∂F/∂y_{k+1}) ⊙ (y_{k+1} − y_k)`` (float64)."""
    alphas = sorted(float(a) for a in alphas)
    out_rows = []
    for e in range(inputs.shape[0]):
        x, b, args = _setup(model, inputs, baselines, embedding, forward_args, e)
        ys, gs = [], []
        for a in alphas:
            out, rec, _ = _point(
                model, x, b, torch.tensor(a, dtype=b.dtype), embedding=embedding, forward_args=args, site=layer
            )
            F = _target_value(out, target, e)
            (g,) = torch.autograd.grad(F, rec.value)
            ys.append(rec.value.detach().double())
            gs.append(g.double())
        total = sum(0.5 * (gs[k] + gs[k + 1]) * (ys[k + 1] - ys[k]) for k in range(len(alphas) - 1))
        out_rows.append(total[0])
    return torch.stack(out_rows)


def conductance_trapezoid(model, inputs, layer, *, target, n_points=129, **kw):
    """:func:`conductance_stieltjes` on ``n_points`` uniform nodes including both ends."""
    return conductance_stieltjes(
        model, inputs, layer, target=target, alphas=[k / (n_points - 1) for k in range(n_points)], **kw
    )


@_with_grad
def influence_rule(
    model, inputs, layer, *, target, rule="gausslegendre", n_steps=50, baselines=None, embedding=None, forward_args=()
):
    """Internal influence ``Σ_k w_k ∂F/∂y(x_{α_k})``, ``[N, *layer_shape]`` (float64)."""
    alphas, weights = nodes(rule, n_steps)
    out_rows = []
    for e in range(inputs.shape[0]):
        x, b, args = _setup(model, inputs, baselines, embedding, forward_args, e)
        total = 0.0
        for a, w in zip(alphas, weights):
            out, rec, _ = _point(
                model, x, b, torch.tensor(a, dtype=b.dtype), embedding=embedding, forward_args=args, site=layer
            )
            (g,) = torch.autograd.grad(_target_value(out, target, e), rec.value)
            total = total + w * g.double()
        out_rows.append(total[0])
    return torch.stack(out_rows)


@_with_grad
def neuron_conductance_rule(
    model,
    inputs,
    layer,
    masks,
    *,
    target,
    rule="gausslegendre",
    n_steps=50,
    baselines=None,
    embedding=None,
    forward_args=(),
):
    """Eq. 2 through each unit: ``masks`` ``[U, *layer_shape]`` (1 on a unit's elements) →
    ``[N, U, *input_shape]`` (the embedding's output shape for token models), float64."""
    alphas, weights = nodes(rule, n_steps)
    out_rows = []
    for e in range(inputs.shape[0]):
        x, b, args = _setup(model, inputs, baselines, embedding, forward_args, e)
        per_unit = []
        for m in masks:
            total = 0.0
            for a, w in zip(alphas, weights):
                alpha = torch.tensor(a, dtype=b.dtype)
                if embedding is None:
                    x_leaf = (b + alpha * (x - b)).detach().requires_grad_(True)
                    rec = recorded(model, layer)
                    with rec:
                        out = model(x_leaf, *args)
                    row = x_leaf
                else:
                    out, rec, row = _point(model, x, b, alpha, embedding=embedding, forward_args=args, site=layer)
                y = rec.value
                (g,) = torch.autograd.grad(_target_value(out, target, e), y, retain_graph=True)
                (gx,) = torch.autograd.grad(y, row, grad_outputs=m.to(g)[None] * g)
                total = total + w * gx.double()
            diff = (x - b) if embedding is None else None
            if diff is None:
                with torch.no_grad():
                    rec = recorded(model, embedding)
                    with rec:
                        model(x, *args)
                    diff = rec.value - b
            per_unit.append((total * diff.double())[0])
        out_rows.append(torch.stack(per_unit))
    return torch.stack(out_rows)
