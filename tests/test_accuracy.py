"""Exactness: closed-form answers, grad modes, dtypes; the error falls as it should with the number of nodes."""

import pytest
import torch
import torch.nn as nn

import unitscope as us
from nets import cnn, mlp


# --- the caller's grad mode and dtype do not change the numbers -------------------------------------------------


def _all_methods(net, x, **kw):
    out = us.attribute(net, x, ["1", "3"], target=1, n_steps=12, path=us.PathConfig(gap_warning=None), **kw)
    out["neuron"] = us.neuron_conductance(net, x, "1", units=[0, 3], target=1, n_steps=12)
    return out


@pytest.mark.parametrize("mode", ["no_grad", "inference_mode"])
def test_same_numbers_inside_no_grad_and_inference_mode(mode):
    net, x = mlp(1, act=nn.Tanh), torch.randn(3, 5)
    ref = _all_methods(net, x)
    with getattr(torch, mode)():
        x_inside = x.clone()  # an inference tensor under inference_mode
        got = _all_methods(net, x_inside)
        assert torch.is_grad_enabled() is False  # the caller's mode is back
    for name, r in ref.items():
        if isinstance(r, torch.Tensor):
            torch.testing.assert_close(got[name], r, rtol=0, atol=0)
            continue
        for layer in r:
            assert float(r[layer].abs().max()) > 0, (name, layer)
            torch.testing.assert_close(got[name][layer], r[layer], rtol=0, atol=0)


class Detached(nn.Module):
    def __init__(self):
        super().__init__()
        self.body, self.act, self.head = nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2)
        self.aux = nn.Linear(4, 3)

    def forward(self, x):
        self.aux(x)  # runs, but the output does not depend on it
        return self.head(self.act(self.body(x)).detach())


@pytest.mark.parametrize("method", ["conductance", "internal_influence", "grad_x_activation"])
def test_a_gradient_that_cannot_be_had_is_an_error_not_zeros(method):
    net, x = Detached().eval(), torch.randn(2, 4)
    with pytest.raises(us.UnitscopeError, match="cannot be had"):
        us.attribute(net, x, ["act"], scores=[method], target=0, n_steps=8, path=us.PathConfig(gap_warning=None))


def test_a_layer_off_the_output_path_is_an_error_naming_it():
    class Aux(nn.Module):
        def __init__(self):
            super().__init__()
            self.body, self.aux = nn.Linear(4, 2), nn.Linear(4, 3)

        def forward(self, x):
            self.aux(x)
            return self.body(x)

    with pytest.raises(us.UnitscopeError, match="layer 'aux'"):
        us.conductance(
            Aux().eval(), torch.randn(2, 4), ["aux", "body"], target=0, n_steps=8, path=us.PathConfig(gap_warning=None)
        )


class InputDetached(nn.Module):
    def __init__(self):
        super().__init__()
        self.body, self.act, self.head = nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2)

    def forward(self, x):
        return self.head(self.act(self.body(x.detach())))


@pytest.mark.parametrize("paired", [False, True])
def test_per_input_conductance_that_cannot_be_had_is_an_error_not_zeros(paired):
    x = torch.randn(2, 4)
    # the layer does not read the inputs through autograd: before, every attribution came back as zeros
    with pytest.raises(us.UnitscopeError, match="layer 'act' does not depend on the inputs"):
        us.neuron_conductance(InputDetached().eval(), x, "act", units=[0, 1], target=0, n_steps=8, paired=paired)
    # the output does not read the layer (Detached.aux): named, not PyTorch's "appears to not have been used"
    with pytest.raises(us.UnitscopeError, match="target does not depend on layer 'aux'"):
        us.neuron_conductance(Detached().eval(), x, "aux", units=[0, 1], target=0, n_steps=8, paired=paired)


def test_float64_in_float64_out_and_half_integrates_in_float32():
    net, x = cnn(3), torch.randn(2, 3, 8, 8)
    s64 = us.attribute(net.double(), x.double(), ["0", "6"], target=1, n_steps=16, path=us.PathConfig(gap_warning=None))
    for scores in s64.values():
        for layer in scores:
            assert scores[layer].dtype == torch.float64
    assert s64["conductance"].delta["0"].dtype == torch.float64
    n64 = us.neuron_conductance(net, x.double(), "3", units=[1], target=1, n_steps=8)
    assert n64.dtype == torch.float64
    net16, x16 = cnn(3).to(torch.bfloat16), x.to(torch.bfloat16)
    s16 = us.conductance(net16, x16, ["3"], target=1, n_steps=16, path=us.PathConfig(gap_warning=None))
    assert s16["3"].dtype == torch.float32
    ref = us.conductance(
        cnn(3).double(), x16.double(), ["3"], target=1, n_steps=16, path=us.PathConfig(gap_warning=None)
    )
    # bfloat16 forward passes, float32 sums: close to the float64 numbers at bfloat16's resolution
    scale = float(ref["3"].abs().max())
    assert float((s16["3"].double() - ref["3"]).abs().max()) < 0.05 * scale


# --- closed-form answers and convergence ------------------------------------------------------------------------


def test_captums_toy_mlp_is_390_on_linear0():
    """Captum's test_simple_input_conductance: x = (0, 100, 0) through BasicModel_MultiLayer; the path crosses a
    ReLU kink at α = 0.1, and the exact conductance of linear0's unit 1 is 300 + 90 = 390."""
    basic_models = pytest.importorskip("captum.testing.helpers.basic_models")
    net, x = basic_models.BasicModel_MultiLayer().eval(), torch.tensor([[0.0, 100.0, 0.0]])
    ada = us.conductance(net, x, ["linear0"], target=0, n_steps=64, path=us.PathConfig(rtol=1e-6, gap_warning=None))
    assert int(ada.n_evals.max()) <= 64
    assert float(ada["linear0"][0, 1]) == pytest.approx(390.0, abs=0.01)
    assert float(ada["linear0"][0, 1] - 390).__abs__() <= 3 * float(ada.error["linear0"][0, 1]) + 1e-4
    mid = us.conductance(
        net, x, ["linear0"], target=0, n_steps=500, method="riemann_middle", path=us.PathConfig(gap_warning=None)
    )
    assert float(mid["linear0"][0, 1]) == pytest.approx(390.0, abs=0.01)
    gl = us.conductance(
        net, x, ["linear0"], target=0, n_steps=500, method="gausslegendre", path=us.PathConfig(gap_warning=None)
    )
    # Gauss–Legendre across a kink is first order; its error bar says so
    assert abs(float(gl["linear0"][0, 1]) - 390) <= 3 * float(gl.error["linear0"][0, 1])


def _reference(net, x, layer, smooth=False):
    """Smooth: 256-node Gauss–Legendre (spectral); piecewise linear: adaptive bisection finds every kink and the
    trapezoid of consecutive nodes is exact between kinks."""
    if smooth:
        return us.conductance(
            net, x, [layer], target=0, n_steps=256, method="gausslegendre", path=us.PathConfig(gap_warning=None)
        )[layer]
    return us.conductance(
        net,
        x,
        [layer],
        target=0,
        n_steps=4096,
        path=us.PathConfig(rtol=1e-12, gap_warning=None),
        internal_batch_size=8192,
    )[layer]


@pytest.mark.parametrize("act", [nn.ReLU, nn.Tanh, nn.GELU])
def test_error_falls_as_c_over_n_or_faster_for_layer_and_per_input_conductance(act):
    net, x = mlp(7, act=act).double(), 4 * torch.randn(3, 5, dtype=torch.float64)
    smooth = act is not nn.ReLU
    ref = _reference(net, x, "2", smooth=smooth)
    steps = (4, 8, 16) if smooth else (8, 32, 128)
    errs, nerrs = {}, {}
    for n in steps:
        s = us.conductance(
            net, x, ["2"], target=0, n_steps=n, method="gausslegendre", path=us.PathConfig(gap_warning=None)
        )
        errs[n] = float((s["2"] - ref).abs().max())
        nc = us.neuron_conductance(net, x, "2", units=list(range(12)), target=0, n_steps=n, method="gausslegendre")
        nerrs[n] = float((nc.sum(2) - ref).abs().max())  # Σ_i Eq. 2 = Eq. 3
    a, b, c = steps
    for e in (errs, nerrs):
        assert e[a] > 1e-9, e  # the coarse estimate is not already exact: the test can fail
        assert e[b] <= 2 * e[a] * a / b + 1e-12 and e[c] <= 2 * e[b] * b / c + 1e-12, e  # at least C/n
        if smooth:  # much faster than 1/n
            assert e[c] <= e[a] / 30 + 1e-12, e


@pytest.mark.parametrize("rule", ["gausslegendre", "riemann_trapezoid", "riemann_middle"])
def test_per_input_conductance_sums_to_layer_conductance_of_the_same_rule(rule):
    net, x = cnn(9).double(), torch.randn(2, 3, 8, 8, dtype=torch.float64)
    layer = us.conductance(net, x, ["3"], target=1, n_steps=12, method=rule, path=us.PathConfig(gap_warning=None))["3"]
    per_input = us.neuron_conductance(net, x, "3", units=list(range(12)), target=1, n_steps=12, method=rule)
    torch.testing.assert_close(per_input.flatten(2).sum(2), layer.sum((2, 3)), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("act", [nn.ReLU, nn.Tanh])
def test_error_bars_cover_the_true_error_of_the_top_units(act):
    hits = total = 0
    for seed in range(4):
        net, x = mlp(20 + seed, act=act).double(), torch.randn(4, 5, dtype=torch.float64)
        for layer in ("1", "3"):
            ref = _reference(net, x, layer, smooth=act is not nn.ReLU)
            s = us.conductance(net, x, [layer], target=0, n_steps=24, path=us.PathConfig(gap_warning=None))
            top = ref.abs().topk(10, dim=1).indices
            true = (s[layer] - ref).abs().gather(1, top)
            est = s.error[layer].gather(1, top)
            floor = 1e-6 * float(ref.abs().max())
            hits += int((true <= 3 * est + floor).sum())
            total += true.numel()
    assert hits / total >= 0.9, hits / total


def test_a_near_singular_path_is_diagnosed_not_ranked_with_confidence():
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    net, x = timm.create_model("convnext_atto", pretrained=False).eval(), torch.randn(2, 3, 64, 64)
    with pytest.warns(us.CompletenessWarning) as caught:
        s = us.conductance(net, x, ["stages.1"], n_steps=64)
    assert s.ok["stages.1"] is False
    msg = s.messages["stages.1"][0]
    assert "'stages.1'" in msg and "α ≈ 0" in msg and "baseline" in msg and "near-singular" in msg
    assert all("use method='adaptive'" not in str(w.message) and "raise n_steps" not in str(w.message) for w in caught)
    with pytest.warns(us.CompletenessWarning, match="not ok"):
        s.top("stages.1", k=5)
    assert "NOT OK" in s.summary()
    fine = us.conductance(
        net,
        x,
        ["stages.1"],
        baselines=x.mean((2, 3), keepdim=True) * 0 + 0.5,
        n_steps=64,
        path=us.PathConfig(gap_warning=None),
    )
    assert fine.ok["stages.1"] is True


@pytest.mark.parametrize("rule", ["gausslegendre", "riemann_trapezoid", "riemann_middle", "riemann_left"])
def test_fixed_rules_error_bars_never_fall_below_the_rounding_of_their_sums(rule):
    """A linear layer feeding a linear readout: every rule is exact up to rounding, so the two embedded rules agree
    and only the rounding floor ``eps · Σ|terms| ≥ eps · |sum|`` is left; it covers the float64 error and is no
    larger than rounding."""
    torch.manual_seed(3)
    net = nn.Sequential(nn.Linear(5, 6), nn.Linear(6, 2)).double()
    x = 3 * torch.randn(4, 5, dtype=torch.float64)
    with torch.no_grad():
        at_x, at_0 = net[0](x), net[0](torch.zeros(1, 5, dtype=torch.float64))
        exact = net[1].weight[0] * (at_x - at_0)
        # the reference is a float64 computation too: its own rounding, eps · the magnitude of what it subtracts
        exact_rounding = torch.finfo(torch.float64).eps * net[1].weight[0].abs() * (at_x.abs() + at_0.abs())
    s = us.conductance(net, x, ["0"], target=0, n_steps=8, method=rule, path=us.PathConfig(gap_warning=None))
    eps = torch.finfo(torch.float64).eps
    assert bool((s.error["0"] >= eps * s["0"].abs()).all()) and bool((s.error["0"] > 0).all())
    assert bool(((s["0"] - exact).abs() <= 3 * s.error["0"] + exact_rounding).all())
    assert float(s.error["0"].max()) < 1e-13 * float(exact.abs().max())
    assert bool((s.unit_error["0"] >= s.error["0"] - 1e-30).all())
