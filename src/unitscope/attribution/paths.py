"""Path integration rules: where on the straight path ``x' + α (x − x')`` to evaluate, with what weights.

>>> alphas, weights = rule("riemann_trapezoid", 5)
>>> alphas.tolist(), weights.tolist()
([0.0, 0.25, 0.5, 0.75, 1.0], [0.125, 0.25, 0.25, 0.25, 0.125])

Two flavours exist for every rule:

* ``rule(name, n)`` — quadrature that integrates constants exactly (weights sum to 1);
* ``captum_rule(name, n)`` — Captum's tables, kept for exact parity. They differ from ours only for
  ``riemann_trapezoid``, whose Captum weights are ``1/n`` with halved ends: they sum to ``(n−1)/n``,
  so an integral comes out ``1/n`` low (2 % at 50 steps).
"""

from __future__ import annotations

import numpy as np
import torch

from ..core.errors import UnitscopeError

__all__ = ["RULES", "JVP_RULES", "rule", "captum_rule", "path_nodes", "stieltjes_weights", "derivative_matrix"]

#: the rules whose conductance is the rule applied to ∂F/∂y · dy/dα with dy/dα by forward mode (spectral on
#: smooth paths); every other fixed rule takes the Stieltjes trapezoid of consecutive nodes on its nodes plus both end
#: points (values only: second order, at least the rule's own, and exact where ∂F/∂y is constant between nodes)
JVP_RULES = ("gausslegendre",)

#: where those rules' dy/dα comes from: ``"forward"`` (forward-mode autodiff, the default: per-input conductance
#: takes the same exact dy/dα, so that Eq. 2 summed over the inputs is Eq. 3 to rounding) or ``"values"`` (the
#: derivative of the polynomial through the values at the nodes and both ends, ``derivative_matrix``: no forward
#: mode, as accurate on the bench's models at a plain pass's cost, but no longer Eq. 2's sum; ``bench/stieltjes.py``,
#: ``bench/extrapolation.py``)
TANGENTS = "forward"

RULES = ("riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid", "gausslegendre")


def _check(name: str, n: int, *, allowed=RULES) -> None:
    if name not in allowed:
        raise UnitscopeError(f"unknown integration method {name!r}", hint=f"choose one of {', '.join(allowed)}")
    if not isinstance(n, int) or n < 2:
        raise UnitscopeError("n_steps must be an integer ≥ 2", n_steps=n)


def _alphas(name: str, n: int) -> np.ndarray:
    if name == "riemann_left":
        return np.linspace(0.0, 1.0 - 1.0 / n, n)
    if name == "riemann_right":
        return np.linspace(1.0 / n, 1.0, n)
    if name == "riemann_middle":
        return np.linspace(0.5 / n, 1.0 - 0.5 / n, n)
    if name == "riemann_trapezoid":
        return np.linspace(0.0, 1.0, n)
    nodes, _ = np.polynomial.legendre.leggauss(n)
    return (nodes + 1.0) / 2.0


def rule(name: str, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Nodes in [0, 1] and weights summing to one for ``n`` evaluations (float64)."""
    _check(name, n)
    alphas = _alphas(name, n)
    if name == "riemann_trapezoid":
        weights = np.full(n, 1.0 / (n - 1))
        weights[[0, -1]] /= 2
    elif name == "gausslegendre":
        weights = np.polynomial.legendre.leggauss(n)[1] / 2.0
    else:
        weights = np.full(n, 1.0 / n)
    return torch.from_numpy(alphas), torch.from_numpy(weights)


def captum_rule(name: str, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Captum's nodes and weights (``captum.attr._utils.approximation_methods``), for parity."""
    _check(name, n)
    alphas, weights = rule(name, n)
    if name == "riemann_trapezoid":
        weights = torch.full((n,), 1.0 / n, dtype=torch.float64)
        weights[[0, -1]] /= 2
    return alphas, weights


def path_nodes(name: str, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Nodes for a conductance estimate on the layer's own path: the rule's nodes plus both end points.

    Returns ``(alphas, influence_weights)`` sorted by alpha; an end point added here gets weight 0 (it
    serves the conductance differences and F(x), F(x') but not the internal-influence quadrature).
    """
    alphas, weights = rule(name, n)
    extra = [a for a in (0.0, 1.0) if not bool(torch.isclose(alphas, torch.tensor(a, dtype=alphas.dtype)).any())]
    if extra:
        alphas = torch.cat([alphas, torch.tensor(extra, dtype=alphas.dtype)])
        weights = torch.cat([weights, torch.zeros(len(extra), dtype=weights.dtype)])
    order = torch.argsort(alphas)
    return alphas[order], weights[order]


def stieltjes_weights(alphas: torch.Tensor) -> torch.Tensor:
    """The composite-trapezoid weights of sorted nodes ``alphas`` spanning [0, 1] (they sum to one): the quadrature
    that goes with the Stieltjes trapezoid on the same nodes (per-input conductance, Eq. 2).

    >>> stieltjes_weights(torch.tensor([0.0, 0.25, 1.0], dtype=torch.float64)).tolist()
    [0.125, 0.5, 0.375]
    """
    gaps = alphas[1:] - alphas[:-1]
    w = torch.zeros_like(alphas)
    w[:-1] += gaps / 2
    w[1:] += gaps / 2
    return w


def derivative_matrix(alphas: torch.Tensor) -> torch.Tensor:
    """``D`` ``[M, M]`` (float64): ``(D @ y)[i]`` is the derivative at ``alphas[i]`` of the polynomial through
    ``(alphas[j], y[j])`` — spectral differentiation, exact for polynomials of degree < M (barycentric weights, in
    logarithms so that no product of M differences under- or overflows).

    >>> a = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)
    >>> (derivative_matrix(a) @ a**2).tolist()
    [0.0, 1.0, 2.0]
    """
    x = alphas.to(torch.float64)
    diff = x[:, None] - x[None, :]
    off = ~torch.eye(x.numel(), dtype=torch.bool)
    logw = -torch.where(off, diff.abs(), torch.ones_like(diff)).log().sum(1)  # log |λ_j|
    sign = torch.where(off & (diff < 0), -1.0, 1.0).prod(1)  # sign of λ_j
    ratio = (sign[None, :] / sign[:, None]) * torch.exp(logw[None, :] - logw[:, None])  # λ_j / λ_i
    D = torch.where(off, ratio / torch.where(off, diff, torch.ones_like(diff)), torch.zeros_like(diff))
    return D - torch.diag(D.sum(1))
