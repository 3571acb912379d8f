"""The path engine: forward and backward passes over points of the straight path, shared by every layer.

One call of :func:`evaluate` runs the model once on a batch of path rows and returns, for every site,
its values and ∂F/∂(values) from a single ``torch.autograd.grad`` call. :func:`integrate` streams the
nodes of a fixed rule through it in chunks and accumulates the integrals (``adaptive.py`` places nodes
where the per-interval completeness gap says they are needed).

Conductance on the layer's own path (Eq. 3 of Dhamdhere et al.) is estimated from consecutive nodes
``α_k < α_{k+1}`` as

* ``trapezoid`` (default): ``Σ_k ½(∂F/∂y(α_k) + ∂F/∂y(α_{k+1})) · (y(α_{k+1}) − y(α_k))`` — second order;
  its per-interval error, summed over a layer's units, is the interval's completeness gap
  ``ΔF_k − Σ_units ½(g_k + g_{k+1}) Δy_k``, which the adaptive rule drives down;
* ``left`` (Captum's ``LayerConductance``): ``Σ_k ∂F/∂y(α_k) · (y(α_{k+1}) − y(α_k))`` — first order.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from ..core.capture import Recorder
from ..core.errors import UnitscopeError
from ..core.inputs import Batch, Target
from ..core.sites import Site

__all__ = ["Evaluation", "evaluate", "integrate", "PathSums", "autograd_on", "work_dtype"]


@contextmanager
def autograd_on():
    """Gradients on for the block, whatever the caller's mode: inside ``torch.no_grad()`` and
    ``torch.inference_mode()`` the numbers are the same as outside (Captum does the same). The caller's
    mode is back on exit."""
    with torch.inference_mode(False), torch.enable_grad():
        yield


def work_dtype(t: torch.Tensor) -> torch.Tensor:
    """What path sums accumulate in: the tensor's own dtype, float32 for half precision."""
    return t.float() if t.is_floating_point() and t.element_size() < 4 else t


@dataclass
class Evaluation:
    F: torch.Tensor                              # [R]
    values: dict[str, list[torch.Tensor]]        # site -> parts, each [R, *unit_shape]
    grads: dict[str, list[torch.Tensor]] | None  # same shapes, ∂F/∂values
    output: object = None
    is_tuple: dict[str, bool] = field(default_factory=dict)


def evaluate(model: nn.Module, batch: Batch, target: Target, sites: list[Site], example: torch.Tensor,
             alpha: torch.Tensor, *, need_grad: bool, keep_output: bool = False) -> Evaluation:
    """One forward (and, with ``need_grad``, one backward) over the rows ``(example[r], alpha[r])``."""
    rows = batch.path_rows(example, alpha)
    recorder = Recorder(sites, need_grad=need_grad)
    with torch.inference_mode(False), torch.set_grad_enabled(need_grad):
        with recorder.active():
            output = model(*rows, *batch.extra_args(example))
        F = target(output, example)
        grads = None
        if need_grad:
            flat = [p for s in sites for p in recorder.parts[s.name]]
            if not F.requires_grad:
                raise UnitscopeError("the target does not depend on the scored layers through autograd, so "
                                     "∂F/∂y cannot be had", layers=[s.name for s in sites],
                                     hint="the model (or the target callable) detaches its output or computes "
                                          "it without gradients; score layers the output is differentiable in")
            got = torch.autograd.grad(F.sum(), flat, allow_unused=True)
            grads, i = {}, 0
            for s in sites:
                k = len(recorder.parts[s.name])
                part = got[i:i + k]
                if all(g is None for g in part):
                    raise UnitscopeError(f"the target does not depend on layer {s.name!r} through autograd, so "
                                         "its gradient cannot be had", layer=s.name,
                                         hint="the layer is off the path to the output, or the model detaches "
                                              "it; pick a layer the output is computed from")
                # one unused part of a tuple output (e.g. attention weights nobody reads) truly has ∂F/∂y = 0
                grads[s.name] = [work_dtype(torch.zeros_like(p) if g is None else g.detach())
                                 for p, g in zip(recorder.parts[s.name], part)]
                i += k
    values = {s.name: [work_dtype(p.detach()) for p in recorder.parts[s.name]] for s in sites}
    out = None
    if keep_output and torch.is_tensor(output):
        out = output.detach()
    return Evaluation(work_dtype(F.detach()), values, grads, out, dict(recorder.is_tuple))


@dataclass
class PathSums:
    """What a pass over the path accumulates, per site and part, on the model's device."""

    conductance: dict[str, list[torch.Tensor]] | None = None
    influence: dict[str, list[torch.Tensor]] | None = None
    value_at_x: dict[str, list[torch.Tensor]] | None = None
    grad_at_x: dict[str, list[torch.Tensor]] | None = None
    F_x: torch.Tensor | None = None
    F_baseline: torch.Tensor | None = None
    n_evals: torch.Tensor | None = None
    is_tuple: dict[str, bool] = field(default_factory=dict)
    interval_gaps: list | None = None


def _plan(n: int, m: int, internal_batch_size: int | None) -> tuple[int, int]:
    """Examples per block and nodes per chunk so that one chunk holds at most ``internal_batch_size`` rows."""
    if internal_batch_size is None or internal_batch_size >= n * m:
        return n, m
    if internal_batch_size < 1:
        from ..core.errors import UnitscopeError
        raise UnitscopeError("internal_batch_size must be a positive integer", internal_batch_size=internal_batch_size)
    if internal_batch_size >= m:
        return internal_batch_size // m, m
    return 1, internal_batch_size


def integrate(model, batch: Batch, target: Target, sites: list[Site], alphas: torch.Tensor,
              weights: torch.Tensor | None, *, conductance: str | None = "trapezoid",
              need_grad: bool = True, internal_batch_size: int | None = None, progress: bool | None = None) -> PathSums:
    """Stream the nodes ``alphas`` (sorted, [M]) for every example through the model.

    Accumulates the layer-path conductance (``"trapezoid"``, ``"left"`` or ``None``), the quadrature
    ``Σ_k w_k ∂F/∂y(α_k)`` when ``weights`` is given, values and gradients at α = 1 and F at both ends.
    Only one node of layer values per site is carried between chunks, so memory does not grow with M.
    """
    n, m = batch.n, alphas.numel()
    E, P = _plan(n, m, internal_batch_size)
    sums = PathSums(conductance={} if conductance else None, influence={} if weights is not None else None)
    F_x = torch.full((n,), float("nan"), dtype=torch.float64)
    F_b = torch.full((n,), float("nan"), dtype=torch.float64)
    value_x, grad_x = {}, {}
    cond, infl = {}, {}
    chunks = [(e0, p0) for e0 in range(0, n, E) for p0 in range(0, m, P)]
    bar = tqdm(chunks, desc="path", unit="chunk", disable=True if progress is False else (None if len(chunks) > 4 else True),
               leave=False)
    carry = None
    for e0, p0 in bar:
        ex = torch.arange(e0, min(n, e0 + E))
        al = alphas[p0:p0 + P]
        ne, na = ex.numel(), al.numel()
        example = ex.repeat_interleave(na)
        alpha = al.repeat(ne)
        ev = evaluate(model, batch, target, sites, example, alpha, need_grad=need_grad)
        sums.is_tuple = ev.is_tuple
        Fv = ev.F.view(ne, na).to(torch.float64).cpu()
        at0 = torch.isclose(al, torch.zeros((), dtype=al.dtype))
        at1 = torch.isclose(al, torch.ones((), dtype=al.dtype))
        if at0.any():
            F_b[ex] = Fv[:, int(at0.nonzero()[0])]
        if at1.any():
            F_x[ex] = Fv[:, int(at1.nonzero()[0])]
        if p0 == 0:
            carry = None
        new_carry = {}
        for s in sites:
            ys = [v.view(ne, na, *v.shape[1:]) for v in ev.values[s.name]]
            gs = [g.view(ne, na, *g.shape[1:]) for g in ev.grads[s.name]] if need_grad else None
            if at1.any():
                k = int(at1.nonzero()[0])
                value_x.setdefault(s.name, [None] * len(ys))
                for i, y in enumerate(ys):
                    value_x[s.name][i] = _store(value_x[s.name][i], ex, y[:, k], n)
                if need_grad:
                    grad_x.setdefault(s.name, [None] * len(gs))
                    for i, g in enumerate(gs):
                        grad_x[s.name][i] = _store(grad_x[s.name][i], ex, g[:, k], n)
            if weights is not None:
                w = weights[p0:p0 + P].to(device=gs[0].device, dtype=gs[0].dtype)
                parts = [(g * w.view(1, -1, *([1] * (g.dim() - 2)))).sum(1) for g in gs]
                _accumulate(infl, s.name, ex, parts, n)
            if conductance:
                if carry is not None:
                    ys = [torch.cat([c.unsqueeze(1), y], 1) for c, y in zip(carry[s.name][0], ys)]
                    gs = [torch.cat([c.unsqueeze(1), g], 1) for c, g in zip(carry[s.name][1], gs)]
                if ys[0].shape[1] > 1:
                    parts = []
                    for y, g in zip(ys, gs):
                        dy = y[:, 1:] - y[:, :-1]
                        gm = g[:, :-1] if conductance == "left" else 0.5 * (g[:, 1:] + g[:, :-1])
                        parts.append((gm * dy).sum(1))
                    _accumulate(cond, s.name, ex, parts, n)
                new_carry[s.name] = ([y[:, -1] for y in ys], [g[:, -1] for g in gs])
        carry = new_carry if conductance else None
    sums.conductance = cond if conductance else None
    sums.influence = infl if weights is not None else None
    sums.value_at_x = value_x or None
    sums.grad_at_x = grad_x or None
    sums.F_x, sums.F_baseline = F_x, F_b
    sums.n_evals = torch.full((n,), m, dtype=torch.long)
    return sums


def _store(buf, ex, value, n):
    if buf is None:
        buf = value.new_zeros((n, *value.shape[1:]))
    buf[ex.to(buf.device)] = value
    return buf


def _accumulate(acc: dict, name: str, ex: torch.Tensor, parts: list[torch.Tensor], n: int) -> None:
    if name not in acc:
        acc[name] = [p.new_zeros((n, *p.shape[1:])) for p in parts]
    idx = ex.to(parts[0].device)
    for a, p in zip(acc[name], parts):
        a[idx] += p
