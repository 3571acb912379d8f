"""Inverse sets of many units at once: the seed phase of :func:`unitscope.synthesis.inverse.sample_inverse_set`
run for ``P`` independent problems ``a_p ≤ unit_p ≤ b_p`` (one layer) in one batch of ``P × K`` codes.

>>> import torch, torch.nn as nn
>>> net = nn.Sequential(nn.Linear(2, 3))
>>> g = DecoderGenerator(nn.Identity(), latent_dim=2, code_bound=3.0)
>>> sets = sample_inverse_sets(net, "0", [(0, 0.0, 0.5), (2, -0.5, 0.0)], g, n_samples=4, seeds=[1, 2])
>>> [len(s) for s in sets], all(bool(((s.activations >= p[1]) & (s.activations <= p[2])).all())
...                             for s, p in zip(sets, [(0, 0.0, 0.5), (2, -0.5, 0.0)]))
([4, 4], True)

Each problem has its own ``K`` codes drawn from its own seed, its own multipliers λ and penalty μ, and its own
diversity term (distances only among its own codes); a problem whose codes are all inside its range is frozen
while the others go on. The rows of different problems never interact, so a problem's result depends on its
seed and on the problems batched with it only through floating-point batching (the step size comes from the
generator's code scale, not from the codes drawn). Every returned sample passed a
fresh forward check. This is the seed phase only: for many samples of one inverse set use ``sample_inverse_set``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
from ..core.progress import bar as progress_bar

from ..core.capture import Recorder
from ..core.errors import UnitscopeError
from ..core.inputs import in_model_dtype, model_device, result_dtype
from ..core.sites import resolve
from ..core.slices import channel_slice
from .generators import DecoderGenerator
from .inverse import _frozen, _project
from .objectives import Acts, channel

__all__ = ["UnitInverseSet", "sample_inverse_sets"]


@dataclass
class UnitInverseSet:
    """Verified samples of one problem: ``samples [n, *x]``, ``codes [n, d]``, ``activations [n]``."""

    unit: int
    a: float
    b: float
    samples: torch.Tensor
    codes: torch.Tensor
    activations: torch.Tensor
    steps: int
    ok: bool

    def __len__(self):
        return len(self.codes)


def _group_spread(h: torch.Tensor) -> torch.Tensor:
    """``h [P, K, D]`` → ``[P, K]``: each row's mean squared distance to the other rows of its group."""
    k = h.shape[1]
    if k < 2:
        return h.new_zeros(h.shape[:2])
    sq = (h * h).sum(2)
    return (k * sq + sq.sum(1, keepdim=True) - 2 * torch.einsum("pkd,pd->pk", h, h.sum(1))) / (k - 1)


def _code_std(generator) -> float:
    """The generator's code scale (its ``code_std``, else a fixed reference draw's): every problem's Adam step, whatever
    it is batched with."""
    std = getattr(generator, "code_std", None)
    if std is None:
        std = float(generator.sample_codes(256, generator=torch.Generator().manual_seed(0)).std())
    return float(std) or 1.0


def sample_inverse_sets(
    model: nn.Module,
    layer,
    problems,
    generator,
    *,
    n_samples: int = 4,
    seeds=None,
    max_steps: int = 200,
    lr: float = 0.2,
    inner_steps: int = 10,
    mu: float = 10.0,
    mu_factor: float = 2.0,
    mu_max: float = 1e6,
    margin: float = 0.02,
    diversity_weight: float = 1.0,
    patience: int = 30,
    block: int | None = None,
    progress: bool | None = None,
) -> list[UnitInverseSet]:
    """For each ``(unit, a, b)`` of ``problems`` (channels of ``layer``; ``b`` may be ``inf``), up to
    ``n_samples`` diverse inputs ``G(z)`` with ``a ≤ unit ≤ b``; ``seeds[p]`` seeds problem ``p``'s codes.

    ``block``: codes per generator + model call, every call exactly that many (the last padded): a problem's
    numbers are then bit-for-bit the same whatever problems it is batched with (``None``: one call for all)."""
    problems = [(int(u), float(a), float(b)) for u, a, b in problems]
    if not problems:
        return []
    if any(not a < b for _, a, b in problems):
        raise UnitscopeError("every range needs a < b", ranges=[(a, b) for _, a, b in problems if not a < b][:5])
    if n_samples < 1:
        raise UnitscopeError("n_samples must be positive", n_samples=n_samples)
    (site,) = resolve(model, [layer])
    seeds = list(range(len(problems))) if seeds is None else [int(s) for s in seeds]
    p_n, k = len(problems), int(n_samples)
    device = model_device(model, torch.device("cpu"))
    units = torch.tensor([u for u, _, _ in problems], device=device).repeat_interleave(k)
    lo = torch.tensor([a for _, a, _ in problems], device=device).view(-1, 1)
    hi = torch.tensor([b for _, _, b in problems], device=device).view(-1, 1)

    # a channel of a conv layer alone costs that channel only; kept after one check against the full layer
    sl = channel_slice(model, site)
    specs = None

    def run(z, rows=None, full=False):
        """``(x, f [p, K])`` for the problems ``rows`` (all by default): only their codes are evaluated; through
        the slice unless ``full``."""
        nonlocal specs
        zz = (z if rows is None else z[rows]).reshape(-1, z.shape[-1])
        u = (units.view(p_n, k) if rows is None else units.view(p_n, k)[rows]).reshape(-1)
        size = max(1, len(zz) if block is None else int(block))
        xs, fs = [], []
        for i in range(0, len(zz), size):
            n = min(size, len(zz) - i)
            pad = size - n
            zb, ub = zz[i : i + n], u[i : i + n]
            if pad:
                zb, ub = torch.cat([zb, zb[-1:].expand(pad, -1)]), torch.cat([ub, ub[-1:].expand(pad)])
            x = in_model_dtype(model, generator(zb))
            if sl is None or full:
                rec = Recorder([site], stop_when_done=True)
                with rec.active():
                    model(x)
                # the layer's own unit specification (a transformer's neurons, not its tokens), once per call
                acts = Acts.recorded(model, [site], {site.name: rec.parts[site.name][0]}, specs)
                specs = acts.specs
                f = channel(site.name, ub)(acts)
            else:  # only the rows' own channels of the layer, from its producer's input
                y = sl.rows(sl.input_of(model, x), ub)
                f = channel(site.name, 0)({site.name: y})
            xs.append(x[:n])
            fs.append(f[:n].to(result_dtype(model)))  # the sampler's arithmetic: float32 at least
        return torch.cat(xs), torch.cat(fs).view(-1, k)

    with _frozen(model, generator, None):
        z0 = torch.stack([generator.sample_codes(k, generator=torch.Generator().manual_seed(s)) for s in seeds])
        z = z0.to(device).clone()
        with torch.no_grad():
            x0, f0 = run(z, full=True)
            if sl is not None and not sl.agrees(run(z)[1], f0):
                sl = None
        width = hi - lo
        spread0 = f0.std(1, keepdim=True).clamp(min=1e-6) if k > 1 else torch.ones_like(lo)
        scale = torch.where(torch.isfinite(width), width, spread0.clamp(min=1.0))
        h_scale = _group_spread(x0.reshape(p_n, k, -1)).mean(1, keepdim=True).clamp(min=1e-12)
        s_lo, s_hi = lo / scale + margin, hi / scale - margin
        code_std = _code_std(generator)
        lam = torch.zeros(p_n, k, device=device, dtype=f0.dtype)
        mu_t = torch.full((p_n, 1), float(mu), device=device, dtype=f0.dtype)
        finished = torch.zeros(p_n, dtype=torch.bool, device=device)
        best = torch.full((p_n,), float("inf"), device=device, dtype=f0.dtype)
        since = torch.zeros(p_n, dtype=torch.long, device=device)
        done_steps = torch.zeros(p_n, dtype=torch.long)
        z.requires_grad_(True)
        opt = torch.optim.Adam([z], lr=lr * code_std)
        steps = 0
        bar = progress_bar(
            total=max_steps,
            desc=f"inverse sets of {p_n} units×bands",
            unit="step",
            progress=False if progress is False else None,
        )
        while True:
            rows = (~finished).nonzero().flatten()  # only unfinished problems are evaluated
            x, f = run(z, rows)
            fd = f.detach()
            a_, b_, sc = lo[rows], hi[rows], scale[rows]
            inside = (fd >= a_) & (fd <= b_)
            violation = ((a_ - fd).clamp(min=0) + (fd - b_).clamp(min=0)).div(sc).amax(1)
            improved = violation < best[rows] - 1e-4
            best[rows] = torch.where(improved, violation, best[rows])
            since[rows] = torch.where(improved, torch.zeros_like(since[rows]), since[rows] + 1)
            give_up = (since[rows] >= patience) & (inside.any(1) | (mu_t[rows].squeeze(1) >= mu_max))
            newly = inside.all(1) | give_up
            done_steps[rows[newly].cpu()] = steps
            if bool(newly.all()) or steps >= max_steps:
                finished[rows[newly]] = True
                break
            # the step is taken for the rows still open after this evaluation
            g = f / sc
            s = torch.minimum(torch.maximum(g.detach() - lam[rows] / mu_t[rows], s_lo[rows]), s_hi[rows])
            c = g - s
            open_ = (~newly).float().view(-1, 1)
            al = ((-lam[rows] * c + 0.5 * mu_t[rows] * c * c) * open_).sum()
            div = (_group_spread(x.reshape(len(rows), k, -1)) / h_scale[rows] * open_).sum()
            loss = al - diversity_weight * div
            finished[rows[newly]] = True
            opt.zero_grad()
            loss.backward()
            keep = z.detach().clone()
            opt.step()
            with torch.no_grad():
                z.copy_(torch.where(finished.view(-1, 1, 1), keep, _project(generator, z)))
            steps += 1
            bar.update(1)
            if steps % inner_steps == 0:
                lam[rows] = lam[rows] - mu_t[rows] * c.detach() * open_
                grow = (~inside.all(1) & ~newly).view(-1, 1)
                mu_t[rows] = torch.where(grow, (mu_t[rows] * mu_factor).clamp(max=mu_max), mu_t[rows])
        bar.close()
        done_steps[~finished.cpu()] = steps
        with torch.no_grad():  # fresh verification pass on the final codes
            x, f = run(z.detach(), full=True)
            inside = (f >= lo) & (f <= hi)
    out = []
    rd = result_dtype(model)  # results in the model's dtype, float32 at least
    for p, (u, a, b) in enumerate(problems):
        ok = inside[p].cpu()
        out.append(
            UnitInverseSet(
                u,
                a,
                b,
                x.view(p_n, k, *x.shape[1:])[p][ok.to(x.device)].detach().cpu().to(rd),
                z.detach()[p][ok.to(z.device)].cpu(),
                f[p][ok.to(f.device)].detach().cpu().to(rd),
                int(done_steps[p]),
                bool(ok.all()),
            )
        )
    return out


DecoderGenerator = DecoderGenerator  # re-exported for the doctest
