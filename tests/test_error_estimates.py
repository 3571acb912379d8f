"""The per-unit error estimates' arithmetic: closed-form panel errors, and the adaptive rule's running totals."""

import math

import torch

from nets import cnn
from unitscope.attribution import adaptive, engine
from unitscope.attribution.estimates import combine_units
from unitscope.core.inputs import make_target, prepare
from unitscope.core.sites import resolve
from unitscope.core.state import analysis_mode


def test_a_units_panel_errors_are_summed_over_its_positions_before_squaring():
    """One example, two panels, one channel with two positions: panel errors (+1, +1) then (−1, −1). Elementwise the
    signed sums cancel (0, 0) and the squares are 2 per position (√4 = 2 for the channel); the channel's own panel
    errors are +2 and −2, so √(2² + 2²) = 2√2 is its error."""
    acc = {}
    panels = torch.tensor([[1.0, 1.0], [-1.0, -1.0]], dtype=torch.float64).view(1, 2, 1, 2, 1)  # [ne, P, C, H, W]
    panels = panels / (0.5 * engine.ERROR_FACTOR)  # T₂ − T₁, which _error_sums scales to the estimate
    engine._accumulate_error_sums(acc, "layer", torch.arange(1), [engine._error_sums(panels)], 1)
    ((signed, squares, unit_squares),) = engine._pairs(acc)["layer"]
    assert signed.abs().max() == 0 and squares.flatten().tolist() == [2.0, 2.0]
    assert unit_squares.tolist() == [[8.0]]
    err = combine_units(signed.flatten(1).sum(1, keepdim=True), unit_squares, squares.flatten(1).sum(1, keepdim=True))
    assert math.isclose(float(err), 2 * math.sqrt(2), rel_tol=1e-15)


def test_adaptive_totals_equal_the_trapezoid_on_its_own_nodes():
    """The running totals (updated at every split) end as the Stieltjes trapezoid of consecutive nodes on the nodes
    the rule chose, computed afresh by the fixed-rule engine."""
    torch.manual_seed(0)
    net, x = cnn(5).double().eval(), torch.randn(2, 3, 8, 8, dtype=torch.float64)
    sites, batch = resolve(net, ["3"]), prepare(x, None, None, device="cpu")
    with analysis_mode(net):
        target = make_target(1, 2)
        sums = adaptive.integrate_adaptive(net, batch, target, sites, budget=23, rtol=1e-12, progress=False)
        for e in range(2):
            alphas = torch.sort(sums.diagnosis[e]["alpha"]).values
            one = prepare(x[e : e + 1], None, None, device="cpu")
            direct = engine.integrate(
                net, one, make_target(1, 1), sites, alphas, None, conductance="trapezoid", estimate=False
            )
            torch.testing.assert_close(
                sums.conductance["3"][0][e], direct.conductance["3"][0][0], rtol=1e-12, atol=1e-12
            )
    assert int(sums.n_evals.max()) <= 23
