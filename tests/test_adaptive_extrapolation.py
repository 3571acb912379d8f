"""The adaptive rule's Romberg step: on a smooth path each panel's Simpson value, with its error scaled by the
measured ratio; at kinks (a ReLU net) the trapezoid, to the bit."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import unitscope as us
from unitscope.attribution import adaptive


class Sin(nn.Module):
    def forward(self, x):
        return torch.sin(x)


class ExpSum(nn.Module):
    """``F = Σ_i exp(y_i)`` with ``y = sin(x)``: ``∂F/∂y_i = exp(y_i)``, so the conductance of unit ``i`` on any path
    is ``exp(y_i(x)) − exp(y_i(x'))`` exactly."""

    def __init__(self):
        super().__init__()
        self.y = Sin()

    def forward(self, x):
        return self.y(x).exp().sum(1, keepdim=True)


def _run(net, x, n, monkeypatch=None, smooth=None):
    if smooth is not None:
        monkeypatch.setattr(adaptive, "SMOOTH", smooth)
    return us.conductance(net, x, ["y"], target=0, n_steps=n, path=us.PathConfig(gap_warning=None, rtol=1e-12))


def test_coarse_path_is_not_extrapolated(monkeypatch):
    """Under MIN_PAIRS sibling pairs (16 evaluations) the ratio is not trusted: the trapezoid, to the bit."""
    x = 2.5 * torch.randn(2, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    s = _run(ExpSum().double(), x, 16)
    t = _run(ExpSum().double(), x, 16, monkeypatch, smooth=-1.0)
    assert torch.equal(s["y"], t["y"]) and torch.equal(s.unit_error["y"], t.unit_error["y"])


@pytest.mark.parametrize("n", [32, 64])
def test_smooth_path_extrapolated_beats_the_trapezoid_and_stays_bounded(monkeypatch, n):
    x = 2.5 * torch.randn(3, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    net = ExpSum().double()
    exact = torch.sin(x).exp() - 1.0  # y(x') = sin(0) = 0
    s = _run(net, x, n)
    trap = _run(net, x, n, monkeypatch, smooth=-1.0)  # never extrapolate: the plain trapezoid
    err, err_trap = (s["y"] - exact).abs(), (trap["y"] - exact).abs()
    assert float(err.max()) < 0.1 * float(err_trap.max()), (float(err.max()), float(err_trap.max()))
    # the error bar still bounds the true error (read ± 3 × error as a bound), and is smaller than the trapezoid's
    assert bool((err <= 3 * s.unit_error["y"] + 1e-15).all())
    assert float(s.unit_error["y"].max()) < float(trap.unit_error["y"].max())
    assert bool((s.n_evals == trap.n_evals).all())  # the same nodes: only the final step differs


def test_kinked_path_keeps_the_trapezoid_to_the_bit(monkeypatch):
    """A ReLU net: the path's integrand jumps at kinks, the ratio is far from a smooth one's, nothing is
    extrapolated."""
    torch.manual_seed(1)
    net = nn.Sequential(nn.Linear(6, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 1)).double()
    x = 3 * torch.randn(4, 6, dtype=torch.float64)
    s = us.conductance(net, x, ["1"], target=0, n_steps=48, path=us.PathConfig(gap_warning=None, rtol=1e-12))
    monkeypatch.setattr(adaptive, "SMOOTH", -1.0)
    t = us.conductance(net, x, ["1"], target=0, n_steps=48, path=us.PathConfig(gap_warning=None, rtol=1e-12))
    assert torch.equal(s["1"], t["1"]) and torch.equal(s.unit_error["1"], t.unit_error["1"])


def test_ratio_separates_smooth_from_kinked():
    """``_extrapolate``'s measure on synthetic panels: a smooth integrand's ratio falls below SMOOTH, a step's
    does not."""
    alpha = torch.linspace(0, 1, 17, dtype=torch.float64)[None]  # 8 panels, 4 sibling pairs
    pair = adaptive._left_siblings(alpha)
    assert pair.tolist() == [[True, False, True, False, True, False, True]]

    def ratio_applied(g):
        y = alpha.clone()
        gs, ys = g[..., None], y[..., None]
        dy = ys[:, 1:] - ys[:, :-1]
        s = 0.5 * (gs[:, 1:] + gs[:, :-1]) * dy
        t2 = s[:, 0::2] + s[:, 1::2]
        t1 = 0.5 * (gs[:, 0:-1:2] + gs[:, 2::2]) * (ys[:, 2::2] - ys[:, 0:-1:2])
        e = 0.5 * (t2 - t1)
        corr, e2 = adaptive._extrapolate(gs, t2, t1, e, ys[:, 4::2] - ys[:, 0:-4:2], pair.view(1, -1, 1))
        return bool(corr.abs().sum() > 0), float(e2.abs().sum() / e.abs().sum())

    applied, scale = ratio_applied(torch.exp(3 * alpha))
    assert applied and scale < adaptive.SMOOTH
    applied, scale = ratio_applied(torch.sign(torch.sin(37 * alpha)))  # many kinks: no order to extrapolate
    assert not applied and scale == 1.0
