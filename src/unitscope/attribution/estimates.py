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

__all__ = ["ERROR_FACTOR", "combine", "combine_units", "rounding", "reduce_units", "relative_unit_error", "diagnose"]

# e_p = ERROR_FACTOR · (T₂ − T₁) on a panel: the fine trapezoid's error is (T₂ − T₁)/3 on a smooth path
# (second order) and about T₂ − T₁ across a kink (first order); ½ is within a factor of 3 of both. Checked on
# held-out models (bench/error_calibration.py: digits CNN and VGG, not scored by bench/accuracy.py): the 95th
# percentile of true error / |T₂ − T₁|-estimate is 1.46 ≤ 3·½, so true ≤ 3·estimate for 95 % of top-10 units.
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

    ``value`` is shaped like the layer, ``unit_error`` is ``[N, units]`` (``Scores.unit_error``); for a tuple
    layer, tuples of both (the worst part counts)."""
    if isinstance(value, tuple):
        return torch.stack([relative_unit_error(v, e, k=k) for v, e in zip(value, unit_error)]).amax(0)
    v, e = reduce_units(value.double()), unit_error.double()
    k = min(k, v.shape[1])
    idx = v.abs().topk(k, dim=1).indices
    scale = v.abs().amax(1).clamp_min(1e-30)
    return e.gather(1, idx).amax(1) / scale


def _spike(profile, e: int):
    """``(ratio, alpha)`` of the largest |∂F/∂y| at a node of example ``e`` against the median on its path."""
    alphas, norms = profile
    a, g = alphas[e], norms[e]
    if g is None or g.numel() < 3:
        return 0.0, float("nan")
    med = float(g.median())
    k = int(g.argmax())
    ratio = float(g[k]) / med if med > 0 else (math.inf if float(g[k]) > 0 else 0.0)
    return ratio, float(a[k])


def diagnose(name: str, value, error, gap, output_diff, profile, *, method: str, tol: float, n_evals,
             trouble_alpha=None) -> tuple[bool, list[str]]:
    """Whether a layer's numbers can be trusted, and if not, a message per bad example: the layer, where on
    the path (α) the trouble is and what to try."""
    rel = relative_unit_error(value, error)
    messages = []
    for e in range(rel.numel()):
        unit_bad = float(rel[e]) > tol
        total = float(sum(u[e].sum() for u in error)) if isinstance(error, tuple) else float(error[e].sum())
        # a cut's gap is the error the estimate speaks of; a non-cut layer's gap says nothing about accuracy
        gap_bad = gap is not None and tol * abs(float(output_diff[e])) < abs(float(gap[e])) <= 3 * total + 1e-12
        ratio, at = _spike(profile, e) if profile is not None else (0.0, float("nan"))
        off = gap is not None and abs(float(gap[e])) > tol * max(abs(float(output_diff[e])), 1e-12)
        singular = ratio >= SINGULAR_RATIO and (off or unit_bad)
        if not (unit_bad or gap_bad or singular):
            continue
        where = at if ratio >= SINGULAR_RATIO else (trouble_alpha[e] if trouble_alpha is not None else at)
        msg = (f"layer {name!r}, example {e}: the error estimate of the top units is {100 * float(rel[e]):.2g}% of "
               f"the layer's largest |unit| (tolerance {100 * tol:.2g}%)"
               + (f", the completeness gap {100 * abs(float(gap[e])) / max(abs(float(output_diff[e])), 1e-12):.3g}% of "
                  "|F(x) − F(x')|" if off else "")
               + f" after {int(n_evals[e])} evaluations (method={method!r}); the trouble is at α ≈ {where:.3g} "
               "on the path")
        if ratio >= SINGULAR_RATIO:
            msg += (f", where |∂F/∂y| is {ratio:.2g}× its median: the integrand is near-singular there (for example "
                    "a LayerNorm over an all-zero activation at the baseline), so more path points will not help; "
                    "try another baseline: a blurred input, uniform noise, or the data mean")
        elif method == "adaptive":
            msg += "; raise n_steps (the evaluation budget) or try another baseline (a blurred input, the data mean)"
        else:
            msg += "; use method='adaptive' or raise n_steps"
        messages.append(msg)
    return not messages, messages
