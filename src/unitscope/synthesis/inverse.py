"""Sampling the inverse set of a unit: many diverse inputs ``x = G(z)`` whose activation lies in ``[a, b]``.

>>> import torch, torch.nn as nn
>>> torch.manual_seed(0) and None
>>> net = nn.Sequential(nn.Linear(2, 1))                  # f(x) = w·x + c: its inverse set is a slab
>>> g = DecoderGenerator(nn.Identity(), latent_dim=2, code_bound=3.0)
>>> r = sample_inverse_set(net, ("0", 0, 0.5, 1.0), g, n_samples=64, n_seeds=8, seed=0, progress=False)
>>> len(r), bool(((r.activations >= 0.5) & (r.activations <= 1.0)).all())
(64, True)

Several constraints ``(layer, unit, a, b)`` give the intersection of their inverse sets (same or different
layers). A unit is an ``int`` (a channel: the mean over the remaining dims) or a tuple (one element of the
per-example output), as in :mod:`unitscope.synthesis.objectives`.

The sampler (Hada & Carreira-Perpiñán):

1. **Seeds.** ``K`` codes maximize their spread ``Σ_{i<j} ‖E(G(z_i)) − E(G(z_j))‖²`` subject to
   ``a ≤ f(G(z_k)) ≤ b``, by a bound-constrained augmented Lagrangian: slack ``s ∈ [a, b]`` with
   ``f − s = 0``, ``L = −spread − Σ λ(f − s) + μ/2 Σ (f − s)²``; the slack is updated in closed form
   (``s = clip(f − λ/μ, a, b)``) between gradient steps on ``z``; λ and μ (×``mu_factor`` while infeasible) are
   updated every ``inner_steps``; it stops as soon as every seed is feasible.
2. **Sampling.** From the current samples, single gradient steps of ``L`` with λ, μ fixed, where the spread now
   also pushes away from every earlier sample; the new points that are feasible are kept (a rejected step is
   retried from the same point with half the step), until ``n_samples``. One forward+backward per step serves
   the feasibility check of the new batch and the gradient of the next step.
3. **Verification.** Every returned sample is checked by a fresh forward pass (no graph, its own batches).

An empty or unreachable range ends with a report (``result.ok`` is False, ``result.report`` says how close the
best code came), never a hang; a > b is an error at once. The baselines the paper compares with are here too:
:func:`penalized_am` (multi-start activation maximization with a penalty for leaving ``[a, b]``) and
:func:`langevin_sampler` (PPGN-style Langevin dynamics in code space, conditioned on the range).
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass

import torch
import torch.nn as nn
from ..core.progress import bar as progress_bar

from ..core.errors import UnitscopeError
from ..core.inputs import model_device, result_dtype
from .generators import DecoderGenerator, PixelEncoder
from .inverse_baselines import langevin_sampler, penalized_am
from .inverse_problem import (
    Constraint,
    InverseSet,
    InverseSetWarning,
    _as_constraints,
    _closest_report,
    _frozen,
    _Problem,
    _project,
    _spread,
    diversity,
    evaluate,
)

__all__ = [
    "Constraint",
    "InverseSet",
    "InverseSetWarning",
    "SamplerConfig",
    "sample_inverse_set",
    "penalized_am",
    "langevin_sampler",
    "evaluate",
    "diversity",
    "DecoderGenerator",
]


# --------------------------------------------------------------------------------------------------------- sampler


@dataclass(frozen=True)
class SamplerConfig:
    """The inverse-set sampler's settings (the augmented Lagrangian of the module docs).

    ``diversity_weight``: the spread's weight against the constraints. ``lr``: Adam step on the codes in the seed
    phase, in units of the codes' typical spread; ``max_seed_steps``: its most steps; ``patience``: seed steps
    without progress before the seed phase gives up. ``inner_steps``: gradient steps between updates of the
    multipliers λ; ``mu``: the first penalty, multiplied by ``mu_factor`` (at most ``mu_max``) while infeasible.
    ``margin``: the slack is kept this share of the range width inside ``[a, b]`` so that the last gradient step does
    not land on the edge. ``step_size``: the length of one sampling step, as a fraction of a typical code's norm;
    ``guard``: each sampling step is shortened (or turned along the boundary) so that its first-order prediction of
    the activations stays this share of the width inside; ``max_sample_steps``: the sampling phase's most steps
    (default ``max(50, 8 ⌈n_samples / n_seeds⌉)``).

    A frozen dataclass, passed as ``sampler=`` to :func:`sample_inverse_set`.

    Parameters
    ----------
    diversity_weight : float, default 1.0
        The spread's weight against the constraints.
    lr : float, default 0.2
        Adam's step on the codes in the seed phase, in units of the codes' typical spread.
    max_seed_steps : int, default 400
        The seed phase's most steps.
    inner_steps : int, default 10
        Gradient steps between updates of the multipliers λ.
    mu : float, default 10.0
        The first penalty μ.
    mu_factor : float, default 2.0
        μ is multiplied by this while the seeds are infeasible...
    mu_max : float, default 1e6
        ... up to this.
    margin : float, default 0.02
        The slack is kept this share of the range width inside ``[a, b]``.
    guard : float, default 0.1
        Each sampling step keeps its first-order prediction of the activations this share of the width inside.
    step_size : float, default 0.1
        One sampling step's length, as a fraction of a typical code's norm.
    max_sample_steps : int or None, default None
        The sampling phase's most steps (``None``: ``max(50, 8 ⌈n_samples / n_seeds⌉)``).
    patience : int, default 20
        Seed steps without progress before the seed phase gives up.

    Raises
    ------
    UnitscopeError
        Nothing at construction; ``sampler=`` something else than a ``SamplerConfig`` is an error of
        :func:`sample_inverse_set`.

    Examples
    --------
    >>> SamplerConfig(lr=0.1).max_seed_steps
    400
    """

    diversity_weight: float = 1.0
    lr: float = 0.2
    max_seed_steps: int = 400
    inner_steps: int = 10
    mu: float = 10.0
    mu_factor: float = 2.0
    mu_max: float = 1e6
    margin: float = 0.02
    guard: float = 0.1
    step_size: float = 0.1
    max_sample_steps: int | None = None
    patience: int = 20


def sample_inverse_set(
    model: nn.Module,
    constraints,
    generator,
    *,
    encoder=None,
    n_samples: int = 256,
    n_seeds: int = 32,
    seed: int = 0,
    sampler: SamplerConfig | None = None,
    on_empty: str = "warn",
    progress: bool | None = None,
) -> InverseSet:
    """Sample ``n_samples`` inputs ``G(z)`` with every constraint ``a ≤ f ≤ b`` met (see the module docs).

    ``encoder``: ``E`` for distances (default: the generator's output, flattened). ``n_seeds``: the seeds the
    sampling starts from; ``seed``: the codes' random start. ``sampler``: a :class:`SamplerConfig` (default
    ``SamplerConfig()``), the optimizer's settings. ``on_empty``: ``"warn"`` (return an empty, ``ok=False`` result
    with its ``report``), ``"raise"`` (UnitscopeError), or ``"ignore"``.

    Parameters
    ----------
    model : nn.Module
        The network whose units are constrained; only read (frozen during the call, restored afterwards).
    constraints : tuple, Constraint or list of them
        ``(layer, unit, a, b)`` — ``a ≤ unit of layer ≤ b`` — or a list of them (the intersection of their inverse
        sets); a unit is an int (a channel: the mean over the remaining dims) or a tuple (one element of one
        example's output); ``a = -inf`` or ``b = inf`` for a one-sided range.
    generator : Generator
        ``G``: codes to inputs, with ``sample_codes`` (e.g.
        :class:`unitscope.synthesis.generators.DecoderGenerator` around a decoder, or an FFT image generator).
    encoder : nn.Module or None, default None
        ``E``, the space in which the samples' spread is measured (``None``: the generator's output, flattened).
    n_samples : int, default 256
        How many samples to return.
    n_seeds : int, default 32
        The seeds the sampling starts from (at most ``n_samples``).
    seed : int, default 0
        Seeds the codes' random start: the same seed, the same samples.
    sampler : SamplerConfig or None, default None
        The optimizer's settings (``None``: ``SamplerConfig()``).
    on_empty : {"warn", "raise", "ignore"}, default "warn"
        What an unreachable range (or fewer samples than asked for) does: an ``InverseSetWarning`` and a result with
        ``ok=False``, a ``UnitscopeError`` (no feasible seed), or nothing.
    progress : bool or None, default None
        ``None``: bars over the seed and sampling phases on a terminal; ``False``: none.

    Returns
    -------
    InverseSet
        ``samples [S, *input_shape]`` (``S ≤ n_samples``, every one checked by a fresh forward pass), ``codes
        [S, latent_dim]``, ``activations [S, n_constraints]``, ``ok`` (all ``n_samples`` found), ``report`` (how it
        went, or how close the best code came to an unreachable range) and the counts and timings of each phase.

    Raises
    ------
    UnitscopeError
        An empty range (``a ≥ b``), a constraint that is not ``(layer, unit, a, b)`` or whose unit is neither an int
        nor a tuple, an unknown layer or a unit out of range, ``n_samples`` or ``n_seeds`` < 1, ``on_empty`` other
        than the three, ``sampler`` that is not a ``SamplerConfig``; with ``on_empty="raise"``, a range that no
        seed reached.

    Examples
    --------
    >>> import torch, torch.nn as nn
    >>> torch.manual_seed(0) and None
    >>> net = nn.Sequential(nn.Linear(2, 1))                  # f(x) = w·x + c: its inverse set is a slab
    >>> g = DecoderGenerator(nn.Identity(), latent_dim=2, code_bound=3.0)
    >>> r = sample_inverse_set(net, ("0", 0, 0.5, 1.0), g, n_samples=16, n_seeds=4, progress=False)
    >>> r.samples.shape, r.activations.shape, r.ok, bool(((r.activations >= 0.5) & (r.activations <= 1.0)).all())
    (torch.Size([16, 2]), torch.Size([16, 1]), True, True)
    """
    sampler = sampler if sampler is not None else SamplerConfig()
    if not isinstance(sampler, SamplerConfig):
        raise UnitscopeError("sampler must be a unitscope.SamplerConfig", got=type(sampler).__name__)
    diversity_weight, lr, max_seed_steps, inner_steps = (
        sampler.diversity_weight,
        sampler.lr,
        sampler.max_seed_steps,
        sampler.inner_steps,
    )
    mu, mu_factor, mu_max, margin, guard = sampler.mu, sampler.mu_factor, sampler.mu_max, sampler.margin, sampler.guard
    step_size, max_sample_steps, patience = sampler.step_size, sampler.max_sample_steps, sampler.patience
    if on_empty not in ("warn", "raise", "ignore"):
        raise UnitscopeError("on_empty must be 'warn', 'raise' or 'ignore'", got=on_empty)
    if n_samples < 1 or n_seeds < 1:
        raise UnitscopeError("n_samples and n_seeds must be positive", n_samples=n_samples, n_seeds=n_seeds)
    cons = _as_constraints(constraints)
    encoder = encoder if encoder is not None else PixelEncoder()
    prob = _Problem(model, cons, generator, encoder)
    n_seeds = min(n_seeds, n_samples)
    rng = torch.Generator().manual_seed(seed)
    device = model_device(model, torch.device("cpu"))
    desc = " ∩ ".join(str(c) for c in prob.constraints)
    max_sample_steps = max_sample_steps or max(50, 8 * math.ceil(n_samples / n_seeds))

    with _frozen(model, generator, encoder):  # gradients on, also under torch.no_grad() / inference_mode()
        # scales: the codes' typical spread and norm; each constraint's scale and the encoding's spread
        z0 = generator.sample_codes(max(n_seeds, 8), generator=rng).to(device)
        with torch.no_grad():
            _, f0, h0 = prob(z0)
        z = z0[:n_seeds].clone()
        code_std = float(z0.std()) or 1.0
        code_norm = float(z0.norm(dim=1).mean()) or 1.0
        width = prob.hi - prob.lo
        spread0 = f0.std(0).cpu().clamp(min=1e-6)
        prob.scale = torch.where(torch.isfinite(width), width, spread0.clamp(min=1.0))
        h_scale = float(_spread(h0).mean()) or 1.0
        # the slack's box, in scaled units, with a margin inside [a, b]
        s_lo = (prob.lo / prob.scale + margin).to(device)
        s_hi = (prob.hi / prob.scale - margin).to(device)

        # ---------------------------------------------------------------- seeds: augmented Lagrangian
        lam = torch.zeros(n_seeds, len(cons), device=device)
        mu_t = float(mu)
        z.requires_grad_(True)
        opt = torch.optim.Adam([z], lr=lr * code_std)
        proposed = feasible = 0
        fmin, fmax = f0.min(0).values.cpu(), f0.max(0).values.cpu()
        best_violation, since_best = float("inf"), 0
        t0 = time.perf_counter()
        steps = 0
        bar = progress_bar(
            total=max_seed_steps, desc="inverse set: seeds", unit="step", progress=False if progress is False else None
        )
        sc = prob.scale.to(device)
        while True:
            x, f, h = prob(z)
            fmin = torch.minimum(fmin, f.detach().min(0).values.cpu())
            fmax = torch.maximum(fmax, f.detach().max(0).values.cpu())
            inside = prob.inside(f.detach())
            v = float(prob.violation(f.detach()).mean())
            if v < best_violation - 1e-4:
                best_violation, since_best = v, 0
            else:
                since_best += 1
            if (
                bool(inside.all())
                or steps >= max_seed_steps
                or (since_best >= patience and (bool(inside.any()) or mu_t >= mu_max))
            ):
                break
            g = f / sc
            s = (g.detach() - lam / mu_t).clamp(min=s_lo, max=s_hi)  # closed-form slack update
            c = g - s
            al = (-lam * c + 0.5 * mu_t * c * c).sum()
            div = _spread(h).sum() / h_scale
            loss = al - diversity_weight * div
            opt.zero_grad()
            loss.backward()
            opt.step()
            with torch.no_grad():
                z.copy_(_project(generator, z))
            steps += 1
            bar.update(1)
            if steps % inner_steps == 0:  # multipliers and penalty
                lam = lam - mu_t * c.detach()
                if not bool(inside.all()):
                    mu_t = min(mu_t * mu_factor, mu_max)
        bar.close()
        seed_seconds = time.perf_counter() - t0
        keep = inside.nonzero().flatten()
        n_feasible_seeds = len(keep)
        proposed += n_seeds
        feasible += n_feasible_seeds

        empty = n_feasible_seeds == 0
        if empty:
            report = (
                f"no input reached {desc} in {steps} augmented-Lagrangian steps from {n_seeds} codes "
                f"(penalty μ = {mu_t:g}); the range looks unreachable through this generator:\n"
                + _closest_report(prob.constraints, fmin, fmax, best_violation)
            )
            with torch.no_grad():  # no sample, but shaped like one: [0, *input_shape]
                sample_shape = tuple(generator(z[:1]).shape[1:])
            res = InverseSet(
                torch.empty(0, *sample_shape, dtype=result_dtype(model)),
                torch.empty(0, z.shape[1]),
                torch.empty(0, len(cons)),
                prob.constraints,
                proposed=proposed,
                feasible=0,
                seeds_feasible=0,
                n_seeds=n_seeds,
                seed_steps=steps,
                seed_seconds=seed_seconds,
                ok=False,
                report=report,
                closest=list(zip(fmin.tolist(), fmax.tolist())),
            )
            if on_empty == "raise":
                raise UnitscopeError(report.splitlines()[0], hint="widen [a, b] or move it towards the values seen")
            if on_empty == "warn":
                warnings.warn(report, InverseSetWarning, stacklevel=2)
            return res

        # ---------------------------------------------------------------- sampling: single AL steps, fixed λ, μ
        t1 = time.perf_counter()
        zs = z.detach()[keep].clone()
        lam = lam[keep]
        pool_codes = [zs.clone()]
        with torch.no_grad():
            h_seed = h.detach()[keep]
        pool_sum, pool_sqsum, pool_n = h_seed.sum(0), float((h_seed * h_seed).sum()), len(keep)
        eta0 = step_size * code_norm
        eta = torch.full((len(zs),), eta0, device=device)
        n_have = len(keep)

        g_lo = (prob.lo / prob.scale + guard).to(device)  # the linearized step stays this far inside
        g_hi = (prob.hi / prob.scale - guard).to(device)

        def grad_at(zc, psum, psq, pn):
            """Forward+backward at ``zc``: values, encodings, ∇_z L and ∇_z f_k (rows are independent)."""
            zc = zc.detach().requires_grad_(True)
            _, fc, hc = prob(zc)
            g = fc / sc
            s = (g.detach() - lam / mu_t).clamp(min=s_lo, max=s_hi)
            c = g - s
            loss = (-lam * c + 0.5 * mu_t * c * c).sum() - diversity_weight * _spread(hc, psum, psq, pn).sum() / h_scale
            (gz,) = torch.autograd.grad(loss, zc, retain_graph=True)
            jac = torch.stack(
                [torch.autograd.grad(g[:, k].sum(), zc, retain_graph=k < g.shape[1] - 1)[0] for k in range(g.shape[1])]
            )  # [m, B, d]
            return g.detach(), hc.detach(), gz, jac

        def guarded(g, gz, jac, eta):
            """The normalized descent step, shortened (or turned along the boundary) so that the linearized
            constraint values stay inside the guarded box."""
            d = -eta.view(-1, 1) * gz / gz.norm(dim=1, keepdim=True).clamp(min=1e-12)

            def allowed(d):
                delta = (jac * d.unsqueeze(0)).sum(2).T  # [B, m] predicted change
                up = torch.where(delta > 0, (g_hi - g) / delta, torch.full_like(delta, float("inf")))
                down = torch.where(delta < 0, (g_lo - g) / delta, torch.full_like(delta, float("inf")))
                return torch.minimum(up, down).amin(1).clamp(min=0.0, max=1.0)

            t = allowed(d)
            short = t < 0.5
            if short.any():  # slide along the boundary
                for k in range(jac.shape[0]):
                    jk = jac[k]
                    along = (jk * d).sum(1, keepdim=True) / (jk * jk).sum(1, keepdim=True).clamp(min=1e-12)
                    d = torch.where(short.view(-1, 1), d - along * jk, d)
                d = eta.view(-1, 1) * d / d.norm(dim=1, keepdim=True).clamp(min=1e-12)
                t = torch.where(short, allowed(d), t)
            return d * t.view(-1, 1)

        g_cur, _, gz, jac = grad_at(zs, pool_sum, pool_sqsum, pool_n)
        sample_steps = 1
        bar = progress_bar(
            total=n_samples,
            initial=min(n_have, n_samples),
            desc="inverse set: sampling",
            unit="sample",
            progress=False if progress is False else None,
        )
        while n_have < n_samples and sample_steps < max_sample_steps:
            cand = _project(generator, zs + guarded(g_cur, gz, jac, eta))
            stuck = (cand - zs).norm(dim=1) <= 1e-2 * eta0
            if stuck.any():  # no feasible way further: restart near a random earlier sample, random direction
                pool = torch.cat(pool_codes)
                pick = pool[torch.randint(len(pool), (int(stuck.sum()),), generator=rng).to(device)]
                jitter = torch.randn(pick.shape, generator=rng).to(pick)
                jitter = 0.25 * eta0 * jitter / jitter.norm(dim=1, keepdim=True).clamp(min=1e-12)
                cand[stuck] = _project(generator, pick + jitter)
            moved = (cand - zs).norm(dim=1) > 1e-3 * eta0
            gc_, hc, gzc, jacc = grad_at(cand, pool_sum, pool_sqsum, pool_n)  # checks cand + next step's gradient
            sample_steps += 1
            fc = gc_ * sc
            ok = prob.inside(fc) & moved
            fmin, fmax = torch.minimum(fmin, fc.min(0).values.cpu()), torch.maximum(fmax, fc.max(0).values.cpu())
            proposed += int(moved.sum())
            feasible += int(ok.sum())
            if ok.any():
                pool_codes.append(cand[ok].clone())
                pool_sum = pool_sum + hc[ok].sum(0)
                pool_sqsum += float((hc[ok] ** 2).sum())
                pool_n += int(ok.sum())
                n_have += int(ok.sum())
                bar.update(min(int(ok.sum()), max(0, n_samples - bar.n)))
            keep_row = (ok | (stuck & moved)).view(-1, 1)  # restarted rows move on anyway
            zs, gz, g_cur = (
                torch.where(keep_row, cand, zs),
                torch.where(keep_row, gzc, gz),
                torch.where(keep_row, gc_, g_cur),
            )
            jac = torch.where(keep_row.unsqueeze(0), jacc, jac)
            eta = torch.where(ok | ~moved, (eta * 1.2).clamp(max=eta0), (eta * 0.5).clamp(min=eta0 / 64))
        bar.close()
        sample_seconds = time.perf_counter() - t1

        # ---------------------------------------------------------------- verification: fresh forward passes
        t2 = time.perf_counter()
        codes = torch.cat(pool_codes)[:n_samples]
        xs, fs, goods = [], [], []
        with torch.no_grad():
            for i in range(0, len(codes), 256):
                x_i, f_i, _ = prob(codes[i : i + 256], full=True)
                xs.append(x_i)
                fs.append(f_i)
                goods.append(prob.inside(f_i))
        x_all, f_all, good = torch.cat(xs), torch.cat(fs), torch.cat(goods)
        verified_rate = float(good.float().mean())
        verify_seconds = time.perf_counter() - t2

    rd = result_dtype(model)  # results in the model's dtype, float32 at least
    res = InverseSet(
        x_all[good].cpu().to(rd),
        codes[good].cpu(),
        f_all[good].cpu().to(rd),
        prob.constraints,
        proposed=proposed,
        feasible=feasible,
        verified_rate=verified_rate,
        seeds_feasible=n_feasible_seeds,
        n_seeds=n_seeds,
        seed_steps=steps,
        sample_steps=sample_steps,
        seed_seconds=seed_seconds,
        sample_seconds=sample_seconds,
        verify_seconds=verify_seconds,
        closest=list(zip(fmin.tolist(), fmax.tolist())),
    )
    dropped = int((~good).sum())
    parts = [
        f"{len(res)} samples of {desc}: {n_feasible_seeds}/{n_seeds} seeds feasible after {steps} steps, "
        f"{sample_steps} sampling steps, {100 * res.feasible_rate:.1f}% of candidates feasible"
    ]
    if dropped:
        parts.append(f"{dropped} samples failed the fresh verification pass and were dropped")
    if len(res) < n_samples:
        res.ok = False
        parts.append(
            f"only {len(res)} of the {n_samples} samples asked for were found (max_sample_steps={max_sample_steps})"
        )
        if on_empty == "warn":
            warnings.warn("; ".join(parts), InverseSetWarning, stacklevel=2)
    res.report = "; ".join(parts)
    return res
