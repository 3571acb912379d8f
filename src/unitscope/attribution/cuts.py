"""Which layers are cuts of the network, per example: does the output depend on the input only through the layer?

A layer's completeness gap ``Σ_units Cond − (F(x) − F(x'))`` is an integration error only on a cut; on a residual
branch or a transformer MLP the units need not add up to ``F(x) − F(x')`` at all. Rather than guess which case a
large gap is, :func:`cut_examples` asks the model: at the input ``x``, with the layer's output replaced by its
value at the baseline ``x'``, a cut gives ``F(x')`` again (to rounding); a layer that is bypassed does not. Two
forward passes without gradients per checked layer (one at ``x'`` records every layer, then one patched pass at
``x`` per layer), only for the layers whose gap is above the tolerance.

>>> import torch, torch.nn as nn
>>> from unitscope.core.inputs import make_target, prepare
>>> from unitscope.core.sites import resolve
>>> class Skip(nn.Module):
...     def __init__(self):
...         super().__init__()
...         self.branch, self.out = nn.Linear(2, 2), nn.Linear(2, 1)
...     def forward(self, x):
...         return self.out(x + self.branch(x))
>>> net = Skip()
>>> batch = prepare(torch.ones(1, 2), None, None, device=None, model=net)
>>> cuts = cut_examples(net, batch, make_target(0, 1), resolve(net, ["branch", "out"]))
>>> cuts["branch"].tolist(), cuts["out"].tolist()
([False], [True])
"""

from __future__ import annotations

import torch

from ..core.capture import Recorder
from ..core.inputs import Batch, Target
from ..core.sites import Site

__all__ = ["cut_examples"]

#: |F(patched) − F(x')| within this share of |F(x) − F(x')| (plus rounding) counts as a cut
CUT_RTOL = 1e-3


def _forward(model, batch: Batch, target: Target, sites: list[Site], example, alpha, replace=None):
    """F of each row (float64, CPU) and the recorded parts of ``sites``, one pass without gradients."""
    recorder = Recorder(sites, replace=replace)
    with torch.inference_mode(False), torch.no_grad():
        with recorder.active():
            output = batch.call(model, batch.path_rows(example, alpha), example)
        F = target(output, example)
    return F.detach().double().cpu(), recorder.parts


def cut_examples(
    model, batch: Batch, target: Target, sites: list[Site], *, internal_batch_size: int | None = None
) -> dict[str, torch.Tensor]:
    """``{site: Tensor[N] of bool}``: whether replacing the site's output at ``x`` by its value at ``x'`` gives
    ``F(x')``, example by example (``True``: the layer is a cut for that example)."""
    n = batch.n
    step = n if internal_batch_size is None else max(1, internal_batch_size)
    out = {s.name: torch.zeros(n, dtype=torch.bool) for s in sites}
    for e0 in range(0, n, step):
        ex = torch.arange(e0, min(n, e0 + step))
        zeros, ones = torch.zeros(ex.numel(), dtype=torch.float64), torch.ones(ex.numel(), dtype=torch.float64)
        F_b, base = _forward(model, batch, target, sites, ex, zeros)
        F_x, _ = _forward(model, batch, target, [], ex, ones)
        scale = (F_x - F_b).abs()
        rounding = 64 * torch.finfo(torch.float32).eps * (F_x.abs() + F_b.abs())
        for s in sites:
            parts = [p.detach() for p in base[s.name]]
            patch = {s.name: lambda got, parts=parts: [b.to(g.dtype) for b, g in zip(parts, got)]}
            F_p, _ = _forward(model, batch, target, [s], ex, ones, replace=patch)
            out[s.name][ex] = (F_p - F_b).abs() <= CUT_RTOL * scale + rounding
    return out
