"""The baselines the inverse-set paper compares its sampler with: :func:`penalized_am` (multi-start activation
maximization with a penalty for leaving ``[a, b]``) and :func:`langevin_sampler` (PPGN-style Langevin dynamics in
code space, conditioned on the range). Both return only samples verified by a fresh forward pass.
"""

from __future__ import annotations

import math
import time

import torch
import torch.nn as nn
from ..core.inputs import model_device, result_dtype
from ..core.progress import bar as progress_bar

from .generators import PixelEncoder
from .inverse_problem import InverseSet, _as_constraints, _frozen, _Problem, _project

__all__ = ["penalized_am", "langevin_sampler"]


# ----------------------------------------------------------------------------------------------------- baselines


def _band_penalty(prob, f, margin: float = 0.0):
    """Squared distance (in units of each range's scale) outside ``[a, b]`` shrunk by ``margin`` each side."""
    sc = prob.scale.to(f)
    lo, hi = prob.lo.to(f) + margin * sc, prob.hi.to(f) - margin * sc
    return (((lo - f).clamp(min=0) + (f - hi).clamp(min=0)) / sc).pow(2).sum(1)


def _setup(model, constraints, generator, encoder, n, seed):
    cons = _as_constraints(constraints)
    prob = _Problem(model, cons, generator, encoder if encoder is not None else PixelEncoder())
    rng = torch.Generator().manual_seed(seed)
    device = model_device(model, torch.device("cpu"))
    z = generator.sample_codes(n, generator=rng).to(device)
    with torch.no_grad():
        _, f0, _ = prob(z)
    width = prob.hi - prob.lo
    prob.scale = torch.where(torch.isfinite(width), width, f0.std(0).cpu().clamp(min=1.0))
    return cons, prob, rng, z


def _finish(prob, method, codes, proposed, feasible, seconds, n_samples, steps):
    t = time.perf_counter()
    codes = codes[:n_samples]
    with torch.no_grad():
        x, f, _ = (
            prob(codes, full=True)
            if len(codes)
            else (  # no sample, but shaped like one
                torch.empty(0, *prob.generator(codes.new_zeros(1, *codes.shape[1:])).shape[1:]),
                torch.empty(0, len(prob.constraints)),
                None,
            )
        )
    good = prob.inside(f) if len(codes) else torch.zeros(0, dtype=torch.bool)
    verify = time.perf_counter() - t
    rd = result_dtype(prob.model)  # results in the model's dtype, float32 at least
    res = InverseSet(
        x[good].cpu().to(rd),
        codes[good].cpu(),
        f[good].cpu().to(rd),
        prob.constraints,
        method=method,
        proposed=proposed,
        feasible=feasible,
        verified_rate=float(good.float().mean()) if len(good) else 0.0,
        sample_steps=steps,
        sample_seconds=seconds,
        verify_seconds=verify,
        ok=bool(len(codes)),
    )
    res.report = f"{method}: {len(res)} samples, {100 * res.feasible_rate:.1f}% of candidates feasible"
    return res


def penalized_am(
    model: nn.Module,
    constraints,
    generator,
    *,
    encoder=None,
    n_samples: int = 256,
    steps: int = 100,
    lr: float = 0.05,
    penalty: float = 100.0,
    margin: float = 0.02,
    batch: int | None = None,
    seed: int = 0,
    progress: bool | None = None,
) -> InverseSet:
    """Baseline: multi-start activation maximization from random codes — maximize ``Σ f/scale`` with a penalty
    ``penalty·dist(f, [a + margin, b − margin])²`` for leaving the range (the same margin as the sampler's slack),
    ``steps`` Adam steps per start; the final codes that are inside every range are the samples (``n_samples``
    starts, run ``batch`` at a time)."""
    batch = batch or n_samples
    cons, prob, rng, z0 = _setup(model, constraints, generator, encoder, 8, seed)
    kept, proposed, feasible = [], 0, 0
    t0 = time.perf_counter()
    with _frozen(model, generator, prob.encoder):
        for start in progress_bar(
            range(0, n_samples, batch), desc="penalized AM", progress=False if progress is False else None
        ):
            z = generator.sample_codes(min(batch, n_samples - start), generator=rng).to(z0.device).requires_grad_(True)
            opt = torch.optim.Adam([z], lr=lr * (float(z.detach().std()) or 1.0))
            for _ in range(steps):
                _, f, _ = prob(z)
                loss = (-(f / prob.scale.to(f)).sum(1) + penalty * _band_penalty(prob, f, margin)).sum()
                opt.zero_grad()
                loss.backward()
                opt.step()
                with torch.no_grad():
                    z.copy_(_project(generator, z))
            with torch.no_grad():
                _, f, _ = prob(z)
            ok = prob.inside(f)
            proposed += len(z)
            feasible += int(ok.sum())
            kept.append(z.detach()[ok])
    return _finish(
        prob,
        "penalized_am",
        torch.cat(kept),
        proposed,
        feasible,
        time.perf_counter() - t0,
        n_samples,
        steps * math.ceil(n_samples / batch),
    )


def langevin_sampler(
    model: nn.Module,
    constraints,
    generator,
    *,
    encoder=None,
    n_samples: int = 256,
    chains: int = 32,
    step: float = 0.01,
    condition: float = 10.0,
    margin: float = 0.02,
    temperature: float = 1.0,
    burn_in: int = 100,
    thin: int = 10,
    max_steps: int = 5000,
    seed: int = 0,
    progress: bool | None = None,
) -> InverseSet:
    """Baseline: PPGN-style Langevin dynamics in code space, conditioned on the range.

    ``z ← z + step·(∇ log p(z) − condition·∇ dist(f(G(z)), [a, b])²) + √(2·step·temperature)·ε`` with the
    standard-normal prior ``p(z)`` of the generator's codes; ``chains`` chains in parallel; after ``burn_in``
    steps every ``thin``-th state that is inside every range is a sample."""
    cons, prob, rng, z = _setup(model, constraints, generator, encoder, chains, seed)
    code_std = float(z.std()) or 1.0
    kept, n_kept, proposed, feasible, t = [], 0, 0, 0, 0
    noise = math.sqrt(2 * step * temperature) * code_std
    t0 = time.perf_counter()
    with _frozen(model, generator, prob.encoder):
        bar = progress_bar(
            total=n_samples, desc="Langevin", unit="sample", progress=False if progress is False else None
        )
        while n_kept < n_samples and t < max_steps:
            z = z.detach().requires_grad_(True)
            _, f, _ = prob(z)
            if t >= burn_in and (t - burn_in) % thin == 0:
                ok = prob.inside(f.detach())
                proposed += len(z)
                feasible += int(ok.sum())
                if ok.any():
                    kept.append(z.detach()[ok].clone())
                    n_kept += int(ok.sum())
                    bar.update(int(ok.sum()))
            energy = (0.5 * (z / code_std).pow(2).sum(1) + condition * _band_penalty(prob, f, margin)).sum()
            (gz,) = torch.autograd.grad(energy, z)
            with torch.no_grad():
                z = _project(generator, z - step * code_std**2 * gz + noise * torch.randn(z.shape, generator=rng).to(z))
            t += 1
        bar.close()
    codes = torch.cat(kept) if kept else torch.empty(0, generator.latent_dim)
    return _finish(prob, "langevin", codes, proposed, feasible, time.perf_counter() - t0, n_samples, t)
