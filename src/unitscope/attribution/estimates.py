"""Per-unit error estimates and the diagnosis of a path that did not converge.

>>> import torch
>>> combine(torch.tensor([0.5, -0.25]), torch.tensor([0.0625, 0.25])).tolist()
[0.5, 0.5]
>>> reduce_units(torch.ones(2, 3, 4, 4)).shape, reduce_units(torch.ones(2, 5, 7)).shape
(torch.Size([2, 3]), torch.Size([2, 7]))

A unit is what the bench and the adaptive rule watch: a channel of a conv layer ``[N, C, H, W]`` (summed
over positions), a neuron of a token-major layer ``[N, T, D]`` (summed over tokens), an element otherwise.
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "ERROR_FACTOR",
    "combine",
    "combine_units",
    "rounding",
    "reduce_units",
    "relative_unit_error",
    "diagnose",
    "diagnose_sums",
]

# e_p = ERROR_FACTOR · (T₂ − T₁) on a panel: the fine trapezoid's error is (T₂ − T₁)/3 on a smooth path
# (second order) and about T₂ − T₁ across a kink (first order); ½ is within a factor of 3 of both.
# bench/error_calibration.py checks the factor against a fine reference on held-out models (results.ERROR_MEANING).
ERROR_FACTOR = 0.5
SINGULAR_RATIO = 1e3  # |∂F/∂y| at one node this many times its median on the path: a near-singular integrand


def combine(signed: torch.Tensor, squares: torch.Tensor) -> torch.Tensor:
    """A unit's error from its panels: ``max(|Σ e_p|, √Σ e_p²)``."""
    return torch.maximum(signed.abs(), squares.clamp_min(0).sqrt())


def combine_units(signed: torch.Tensor, unit_squares: torch.Tensor, element_squares: torch.Tensor) -> torch.Tensor:
    """A unit's error from its panels: ``max(|Σ_p e_p|, √Σ_p e_p², √Σ_p Σ_elements e_{p,i}²)``.

    ``e_p`` is the unit's panel error (a channel's: summed over its positions, ``reduce_units``), so a panel whose
    positions' errors happen to cancel in the sum over panels still counts with its own size; the last term is the
    same root sum of squares over the unit's elements (positions or tokens whose errors are independent).

    >>> combine_units(torch.tensor([0.1]), torch.tensor([0.25]), torch.tensor([0.04])).tolist()
    [0.5]
    """
    return torch.maximum(combine(signed, unit_squares), element_squares.clamp_min(0).sqrt())


def rounding(abs_sum: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The floating-point error of a sum whose terms' magnitudes add up to ``abs_sum``: ``eps · Σ|terms|``.

    Below it the quadrature's error estimate says nothing (two rules that agree to the last bit still differ from
    the exact sum by rounding), so the per-unit error never falls under it; reduce it like the values (a channel's
    is the sum over its positions)."""
    return torch.finfo(dtype).eps * abs_sum


def reduce_units(t: torch.Tensor) -> torch.Tensor:
    """``[B, *unit_shape]`` → ``[B, units]``: channels of ``[C, H, W]``, neurons of ``[T, D]``, else flat."""
    if t.dim() == 4:
        return t.flatten(2).sum(2)
    if t.dim() == 3:
        return t.sum(1)
    return t.reshape(t.shape[0], -1)


def relative_unit_error(value: torch.Tensor, unit_error: torch.Tensor, *, k: int = 10) -> torch.Tensor:
    """``[N]``: the largest error of the ``k`` largest |units| per example, relative to the largest |unit|.

    The measure the adaptive rule's tolerance ``rtol`` and a layer's ``ok`` are about: per example, the units with
    the ``k`` largest |values| (by the layer's unit specification), their largest error estimate, divided by the
    largest |unit|.

    Parameters
    ----------
    value : Tensor or tuple of Tensor
        A layer's scores, shaped like the layer (``Scores[layer]``, ``[N, ...]``); for a tuple layer, a tuple.
    unit_error : Tensor or tuple of Tensor
        ``[N, units]``: the error estimate per unit (``Scores.unit_error[layer]``); a tuple for a tuple layer (the
        worst part counts).
    k : int, default 10
        How many of the largest |units| are looked at (all of them if the layer has fewer).

    Returns
    -------
    Tensor
        ``[N]``, float64: the relative error per example.

    Raises
    ------
    UnitscopeError
        Nothing of its own; shapes that do not fit are PyTorch's ``RuntimeError``.

    Examples
    --------
    >>> import torch, torch.nn as nn, unitscope as us
    >>> with torch.random.fork_rng():   # the same weights in any test order; the global RNG is put back
    ...     _ = torch.manual_seed(0)
    ...     net = nn.Sequential(nn.Linear(3, 6), nn.Tanh(), nn.Linear(6, 1))
    >>> s = us.conductance(net, torch.ones(2, 3), ["0"], n_steps=16)
    >>> rel = us.relative_unit_error(s["0"], s.unit_error["0"], k=3)
    >>> rel.shape, bool((rel < 1e-3).all())
    (torch.Size([2]), True)
    """
    if isinstance(value, tuple):
        return torch.stack([relative_unit_error(v, e, k=k) for v, e in zip(value, unit_error)]).amax(0)
    v, e = reduce_units(value.double()), unit_error.double()
    k = min(k, v.shape[1])
    idx = v.abs().topk(k, dim=1).indices
    scale = v.abs().amax(1).clamp_min(1e-30)
    return e.gather(1, idx).amax(1) / scale


def _spikes(profile, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(ratio [n], alpha [n])``: per example, the largest |∂F/∂y| at a node against the median on its path, and
    where it is. ``profile`` is ``(alphas, norms)``: ``[n, M]`` tensors (fixed rules) or per-example lists (the
    adaptive rule; paths of equal length are taken together)."""
    alphas, norms = profile
    ratio = torch.zeros(n, dtype=torch.float64)
    at = torch.full((n,), float("nan"), dtype=torch.float64)
    if torch.is_tensor(norms):
        groups = [(torch.arange(n), alphas, norms)] if norms.shape[1] >= 3 else []
    else:
        lengths = torch.tensor([-1 if g is None else g.numel() for g in norms])
        groups = []
        for m in torch.unique(lengths).tolist():
            if m < 3:
                continue
            rows = (lengths == m).nonzero().flatten()
            groups.append(
                (rows, torch.stack([alphas[e] for e in rows.tolist()]), torch.stack([norms[e] for e in rows.tolist()]))
            )
    for rows, a, g in groups:
        g = g.double()
        med = g.median(1).values
        k = g.argmax(1, keepdim=True)
        top = g.gather(1, k)[:, 0]
        inf = torch.where(top > 0, math.inf, 0.0).to(torch.float64)
        ratio[rows] = torch.where(med > 0, top / med, inf)
        at[rows] = a.gather(1, k)[:, 0].double()
    return ratio, at


def diagnose(
    name: str,
    value,
    error,
    gap,
    output_diff,
    profile,
    *,
    method: str,
    tol: float,
    n_evals,
    trouble_alpha=None,
    cut=None,
) -> tuple[bool, list[str]]:
    """Whether a layer's numbers can be trusted, and if not, a message per bad example: the layer, where on
    the path (α) the trouble is and what to try. ``cut`` (``[N]`` bool, from
    :func:`unitscope.attribution.cuts.cut_examples`; ``None``: not checked): on an example where the layer is a cut,
    a gap above the tolerance is an error whatever the per-unit estimates say; where it is not, the gap says
    nothing about accuracy."""
    rel = relative_unit_error(value, error)
    n = rel.numel()
    unit_bad = rel > tol
    # a cut's gap is the error the estimate speaks of; a non-cut layer's gap says nothing about accuracy
    if gap is not None:
        total = sum(u.sum(1) for u in error) if isinstance(error, tuple) else error.sum(1)
        od, g = output_diff.double().abs(), gap.double().abs()
        plausible = g <= 3 * total.double() + 1e-12  # unchecked: a gap far above the estimates means no cut
        gap_bad = (tol * od < g) & (plausible if cut is None else cut)
        off = g > tol * torch.where(od < 1e-12, 1e-12, od)
        if cut is not None:
            off = off & cut
    else:
        gap_bad = off = torch.zeros(n, dtype=torch.bool)
    if profile is not None:
        ratio, at = _spikes(profile, n)
    else:
        ratio, at = torch.zeros(n, dtype=torch.float64), torch.full((n,), float("nan"), dtype=torch.float64)
    singular = (ratio >= SINGULAR_RATIO) & (off | unit_bad)
    messages = []
    for e in (unit_bad | gap_bad | singular).nonzero().flatten().tolist():
        r = float(ratio[e])
        where = (
            float(at[e]) if r >= SINGULAR_RATIO else (trouble_alpha[e] if trouble_alpha is not None else float(at[e]))
        )
        msg = (
            f"layer {name!r}, example {e}: the error estimate of the top units is {100 * float(rel[e]):.2g}% of "
            f"the layer's largest |unit| (tolerance {100 * tol:.2g}%)"
            + (
                f", the completeness gap {100 * abs(float(gap[e])) / max(abs(float(output_diff[e])), 1e-12):.3g}% of "
                "|F(x) − F(x')|"
                + (
                    " on a layer that is a cut (the output depends on the input only through it)"
                    if cut is not None and bool(cut[e])
                    else ""
                )
                if bool(off[e])
                else ""
            )
            + f" after {int(n_evals[e])} evaluations (method={method!r}); the trouble is at α ≈ {where:.3g} "
            "on the path"
        )
        if r >= SINGULAR_RATIO:
            msg += (
                f", where |∂F/∂y| is {r:.2g}× its median: the integrand is near-singular there (for example "
                "a LayerNorm over an all-zero activation at the baseline), so more path points will not help; "
                "try another baseline: a blurred input, uniform noise, or the data mean"
            )
        elif method == "adaptive":
            msg += "; raise n_steps (the evaluation budget) or try another baseline (a blurred input, the data mean)"
        else:
            msg += "; use method='adaptive' or raise n_steps"
        messages.append(msg)
    return not messages, messages


def diagnose_sums(
    sums,
    values: dict,
    unit_error: dict,
    delta: dict | None,
    output_diff,
    sites,
    *,
    method: str,
    tol: float,
    cuts: dict | None = None,
) -> tuple[dict, dict]:
    """:func:`diagnose` for every site of a path pass (``sums``: its ``PathSums``, with the adaptive rule's
    per-example diagnosis and the |∂F/∂y| profile when it has them): ``({site: ok}, {site: messages})``."""
    ok, messages = {}, {}
    trouble = None
    if sums.diagnosis:
        trouble = []
        for e in range(len(sums.diagnosis)):
            d = sums.diagnosis[e]
            k = int(d["score"].argmax()) if d["score"].numel() else 0
            trouble.append(float((d["a"][k] + d["b"][k]) / 2) if d["a"].numel() else float("nan"))
    for s in sites:
        profile = sums.grad_profile.get(s.name) if sums.grad_profile else None
        ok[s.name], messages[s.name] = diagnose(
            s.name,
            values[s.name],
            unit_error[s.name],
            delta[s.name] if delta else None,
            output_diff,
            profile,
            method=method,
            tol=tol,
            n_evals=sums.n_evals,
            trouble_alpha=trouble,
            cut=(cuts or {}).get(s.name),
        )
    return ok, messages
