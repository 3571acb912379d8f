"""Objectives, parameterizations, AM / IAM, Representative Substitution and class selectivity."""

import gc
import weakref

import pytest
import torch
import torch.nn as nn

from unitscope.core.errors import UnitscopeError
from unitscope.synthesis.maximize import (
    Maximized,
    _RedirectedReLU,
    activation_maximization,
    independent_am,
    maximize,
    representative_substitution,
)
from unitscope.synthesis.objectives import Objective, channel, element, independent
from unitscope.synthesis.params import FFT, Augment, Pixel, make_param
from unitscope.data.scan import class_selectivity

pytestmark = pytest.mark.usefixtures("one_thread")


ACTS = {
    "fc": torch.tensor([[1.0, 2.0, 3.0, 6.0], [0.0, 4.0, 1.0, -1.0]]),
    "conv": torch.arange(16.0).view(1, 2, 2, 4).expand(2, 2, 2, 4),
}


# ------------------------------------------------------------------------------------------ objectives --
def test_objective_algebra_exact():
    a, b = channel("fc", 0), channel("fc", 3)
    assert (a + b)(ACTS).tolist() == [7.0, -1.0]
    assert (-a)(ACTS).tolist() == [-1.0, -0.0]
    assert (0.5 * b)(ACTS).tolist() == [3.0, -0.5]
    assert (b * 0.5)(ACTS).tolist() == [3.0, -0.5]
    assert (a - b)(ACTS).tolist() == [-5.0, 1.0]
    assert (1 - b)(ACTS).tolist() == [-5.0, 2.0]
    assert (b - 1)(ACTS).tolist() == [5.0, -2.0]
    assert (2 + a)(ACTS).tolist() == [3.0, 2.0]
    assert (b / 2)(ACTS).tolist() == [3.0, -0.5]
    assert (a * b)(ACTS).tolist() == [6.0, -0.0]
    mixed = channel("fc", 1) + 2 * channel("conv", 1)
    assert mixed.layers == ("fc", "conv")
    assert mixed(ACTS).tolist() == [2.0 + 2 * 11.5, 4.0 + 2 * 11.5]  # channel 1 of conv: mean(8..15) = 11.5
    assert "fc" in repr(a - b)


def test_objective_per_row_units_element_and_independent_exact():
    rows = torch.tensor([3, 1])
    assert channel("fc", rows)(ACTS).tolist() == [6.0, 4.0]
    assert element("conv", (0, 1, 2))(ACTS).tolist() == [6.0, 6.0]
    assert element("conv", (-1, -1, -1))(ACTS).tolist() == [15.0, 15.0]
    # a_i − mean_{j≠i} a_j: row 0, unit 3: 6 − (1+2+3)/3 = 4; row 1, unit 1: 4 − (0+1−1)/3 = 4
    assert independent("fc", rows)(ACTS).tolist() == [4.0, 4.0]
    # conv channels averaged over space: 3.5 and 11.5
    assert independent("conv", 0)(ACTS).tolist() == [3.5 - 11.5, 3.5 - 11.5]


def test_objective_errors_name_the_layer():
    with pytest.raises(UnitscopeError, match="out of range.*'fc'"):
        channel("fc", 4)(ACTS)
    with pytest.raises(UnitscopeError, match="one unit per batch row"):
        independent("fc", torch.tensor([0, 1, 2]))(ACTS)
    with pytest.raises(UnitscopeError, match="outside layer"):
        element("conv", (2, 0, 0))(ACTS)
    with pytest.raises(UnitscopeError, match="not recorded"):
        channel("other", 0)(ACTS)


# -------------------------------------------------------------------------------------------- RS ------
def test_rs_exact_on_a_hand_made_table():
    # row b: every unit's activation on unit units[b]'s image
    acts = torch.tensor(
        [
            [5.0, 1.0, 2.0, 0.0, 7.0],  # unit 0 (5): one unit (7) exceeds → 1/5
            [5.0, 1.0, 2.0, 0.0, 7.0],  # unit 1 (1): 5, 2, 7 exceed → 3/5
            [0.0, 3.0, 3.0, 3.0, 1.0],  # unit 2 (3): ties do not count → 0
            [9.0, 9.0, 9.0, 9.0, 9.5],
        ]
    )  # unit 4 (9.5): the largest → 0
    rs = representative_substitution(acts, units=[0, 1, 2, 4])
    assert torch.equal(rs, torch.tensor([1, 3, 0, 0]) / 5)
    r = Maximized(
        images=torch.zeros(4, 1, 2, 2),
        trace=torch.zeros(1, 4),
        objective=torch.zeros(4),
        units=torch.tensor([0, 1, 2, 4]),
        activations=acts,
    )
    assert torch.equal(representative_substitution(r), rs)
    assert r.own.tolist() == [5.0, 1.0, 3.0, 9.5]
    with pytest.raises(UnitscopeError):
        representative_substitution(acts)


# ------------------------------------------------------------------------------------- AM and IAM ------
def small_cnn(seed=0, dropout=False):
    torch.manual_seed(seed)
    layers = [nn.Conv2d(1, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 8, 3, padding=1), nn.ReLU()]
    if dropout:
        layers.append(nn.Dropout(0.5))
    layers += [nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, 3)]
    return nn.Sequential(*layers)


def _own_activation(model, layer_idx, images, units):
    with torch.no_grad():
        a = model[: layer_idx + 1](images).flatten(2).mean(2)
    return a.gather(1, torch.as_tensor(units).view(-1, 1)).squeeze(1)


def test_am_increases_each_units_activation_and_iam_its_objective():
    net = small_cnn()
    with torch.no_grad():
        net[2].bias.fill_(0.05)  # every unit reachable from the start (dead units: see the redirect tests)
    units = list(range(8))
    start = make_param("pixel", 8, (1, 8, 8), value_range=(0.0, 1.0), seed=3)()
    r = activation_maximization(net, "3", units, shape=(1, 8, 8), steps=40, lr=0.1, seed=3, progress=False)
    assert r.layer == "3" and r.units.tolist() == units
    before = _own_activation(net, 3, start.detach(), units)
    assert torch.all(r.own > before + 1e-3), (before, r.own)
    # re-measured on the un-augmented images: equals a direct forward
    assert torch.allclose(r.own, _own_activation(net, 3, r.images, units), atol=1e-5)
    assert r.activation_trace.shape == (40, 8) and r.activations.shape == (8, 8)
    i = independent_am(net, "3", units, shape=(1, 8, 8), steps=40, lr=0.1, seed=3, progress=False, augment=False)
    assert torch.all(i.trace[-1] > i.trace[0])
    iam_direct = independent("3", torch.tensor(units))({"3": i.activations})
    assert torch.allclose(i.objective, iam_direct, atol=1e-5)


def test_am_reproducible_with_a_seed_and_rows_independent():
    net = small_cnn()
    kw = dict(shape=(1, 8, 8), steps=12, lr=0.1, progress=False)
    a = independent_am(net, "3", [0, 1, 2, 3], seed=5, **kw)
    b = independent_am(net, "3", [0, 1, 2, 3], seed=5, **kw)
    c = independent_am(net, "3", [0, 1, 2, 3], seed=6, **kw)
    assert torch.equal(a.images, b.images) and torch.equal(a.trace, b.trace)
    assert not torch.equal(a.images, c.images)
    # one batch row per unit, and rows do not interact: changing row 3's unit leaves rows 0-2 as they were
    d = independent_am(net, "3", [0, 1, 2, 7], seed=5, **kw)
    assert torch.allclose(a.images[:3], d.images[:3], atol=1e-6)
    assert not torch.allclose(a.images[3], d.images[3])


def _snapshot(model):
    return (
        [m.training for m in model.modules()],
        [p.requires_grad for p in model.parameters()],
        [None if p.grad is None else p.grad.clone() for p in model.parameters()],
        [p.detach().clone() for p in model.parameters()],
    )


def _hooks(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules())


def _assert_same(model, snap):
    training, req, grads, params = _snapshot(model)
    assert training == snap[0] and req == snap[1]
    assert all((g is None and h is None) or torch.equal(g, h) for g, h in zip(grads, snap[2]))
    assert all(torch.equal(p, q) for p, q in zip(params, snap[3]))
    assert _hooks(model) == 0


def _prepared_model():
    net = small_cnn(dropout=True).train()
    net[0].weight.requires_grad_(False)
    net[2].weight.grad = torch.full_like(net[2].weight, 0.25)
    return net


def test_model_untouched_after_a_run():
    net = _prepared_model()
    snap = _snapshot(net)
    activation_maximization(net, "3", [0, 1], shape=(1, 8, 8), steps=5, progress=False)
    _assert_same(net, snap)
    assert net.training


class Boom(Exception):
    pass


@pytest.mark.parametrize("bad", ["unit", "objective", "shape", "layer"])
def test_model_untouched_when_a_call_raises(bad):
    net = _prepared_model()
    snap = _snapshot(net)
    calls = []

    def explode(acts):
        calls.append(1)
        if len(calls) == 3:
            raise Boom
        return acts["3"].flatten(2).mean(2)[:, 0]

    with pytest.raises((UnitscopeError, Boom)) as info:
        if bad == "unit":
            independent_am(net, "3", [0, 99], shape=(1, 8, 8), steps=5, progress=False)
        elif bad == "objective":
            maximize(net, Objective(explode, ("3",), "explode"), batch=2, shape=(1, 8, 8), steps=5, progress=False)
        elif bad == "shape":
            activation_maximization(net, "3", [0], shape=(3, 8, 8), steps=5, progress=False)
        else:
            activation_maximization(net, "conv3", [0], shape=(1, 8, 8), steps=5, progress=False)
    if bad == "unit":
        assert "99" in str(info.value) and "'3'" in str(info.value)
    if bad == "shape":
        assert "(1, 3, 8, 8)" in str(info.value)
    _assert_same(net, snap)


def test_grayscale_non_square_and_rgb_fft_images_stay_in_range():
    net = small_cnn()
    for param in ("pixel", "fft"):
        r = activation_maximization(
            net, "3", [0, 5], shape=(1, 6, 11), param=param, steps=10, lr=0.5, value_range=(0.0, 1.0), progress=False
        )
        assert r.images.shape == (2, 1, 6, 11)
        assert r.images.min() >= 0 and r.images.max() <= 1
    torch.manual_seed(0)
    rgb = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    r = independent_am(
        rgb, "1", range(4), shape=(3, 12, 20), param="fft", value_range=(-1.0, 1.0), steps=10, lr=0.5, progress=False
    )
    assert r.images.shape == (4, 3, 12, 20)
    assert r.images.min() >= -1 and r.images.max() <= 1 and r.images.min() < 0 < r.images.max()


def test_parameterizations_and_augment_seeded_and_in_range():
    assert torch.equal(Pixel(2, (1, 5, 7), seed=1)(), Pixel(2, (1, 5, 7), seed=1)())
    f = FFT(2, (3, 9, 14), value_range=(-1.0, 1.0), seed=1)
    assert f().shape == (2, 3, 9, 14) and torch.equal(f(), FFT(2, (3, 9, 14), value_range=(-1.0, 1.0), seed=1)())
    img = torch.rand(3, 1, 10, 13)
    a1 = Augment(pad=0.2, jitter=0.1, degrees=20, seed=4)(img)
    a2 = Augment(pad=0.2, jitter=0.1, degrees=20, seed=4)(img)
    assert a1.shape == img.shape and torch.equal(a1, a2)
    assert a1.min() >= img.min() - 1e-6 and a1.max() <= img.max() + 1e-6
    # each row is transformed on its own: row 0 does not depend on rows 1-2
    b = Augment(pad=0.2, jitter=0.1, degrees=20, seed=4)(torch.cat([img[:1], torch.ones(2, 1, 10, 13)]))
    assert torch.allclose(b[0], a1[0])
    with pytest.raises(ValueError):
        make_param("wavelet", 1, (1, 4, 4))
    with pytest.raises(ValueError):
        Pixel(1, (1, 4, 4), value_range=(1.0, 0.0))


def test_redirected_relu_value_and_gradient():
    z = torch.tensor([[[-1.0, -2.0]], [[-1.0, 3.0]]]).view(2, 1, 2).requires_grad_(True)  # row 0 off everywhere
    out = _RedirectedReLU.apply(z)
    assert torch.equal(out, z.clamp_min(0))
    (-out.sum()).backward()  # maximizing: the gradient pushes every unit up
    # row 0 is off everywhere: redirected (−1 everywhere); row 1 is on somewhere: the true ReLU gradient
    assert z.grad.tolist() == [[[-1.0, -1.0]], [[0.0, -1.0]]]
    z.grad = None
    _RedirectedReLU.apply(z).sum().backward()  # pushing down: never below zero for an off unit
    assert z.grad.tolist() == [[[0.0, 0.0]], [[0.0, 1.0]]]


def test_redirect_switches_on_a_unit_that_starts_dead():
    lin = nn.Linear(2, 2)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, 1.0], [1.0, 1.0]]))
        lin.bias.copy_(torch.tensor([-1.5, 5.0]))  # unit 0 is off at the start (x ≈ 0.5)
    net = nn.Sequential(lin, nn.ReLU())
    off = activation_maximization(net, "1", [0], shape=(2,), steps=60, lr=0.2, redirect_relu=False, progress=False)
    on = activation_maximization(net, "1", [0], shape=(2,), steps=60, lr=0.2, progress=False)
    assert float(off.own) == 0.0  # stuck: zero gradient
    assert float(on.own) > 0.3  # redirected gradient switched it on (max 0.5 with inputs in [0, 1])


# ------------------------------------------------------------------------------------------ selectivity --
def test_selectivity_exact_on_known_class_means():
    # three units, three classes with unequal counts; post-ReLU values given directly
    x = torch.tensor(
        [
            [2.0, 0.0, 1.0],
            [4.0, 0.0, 1.0],  # class 0 (2 examples)
            [1.0, 5.0, 1.0],  # class 1 (1 example)
            [0.0, 0.0, 1.0],
            [0.0, 0.0, 1.0],
            [3.0, 0.0, 1.0],
        ]
    )  # class 2 (3 examples)
    y = torch.tensor([0, 0, 1, 2, 2, 2])
    net = nn.Sequential(nn.ReLU())
    loader = [(x[:4], y[:4]), (x[4:], y[4:])]
    sel = class_selectivity(net, loader, ["0"], num_classes=3, eps=0.0, progress=False)["0"]
    # unit 0: means 3, 1, 1 → (3 − 1) / (3 + 1) = 0.5; unit 1: 0, 5, 0 → 1; unit 2: 1, 1, 1 → 0
    assert torch.allclose(sel.class_means, torch.tensor([[3.0, 0, 1], [1, 5, 1], [1, 0, 1]]))
    assert torch.allclose(sel.index, torch.tensor([0.5, 1.0, 0.0]))
    assert sel.counts.tolist() == [2, 1, 3] and sel.preferred.tolist()[:2] == [0, 1]


def test_selectivity_averages_channels_over_space():
    x = torch.zeros(4, 2, 2, 2)
    x[:2, 0] = torch.tensor([[4.0, 0.0], [0.0, 0.0]])  # class 0: channel 0 mean 1
    x[2:, 1] = 2.0  # class 1: channel 1 mean 2
    sel = class_selectivity(nn.Sequential(nn.ReLU()), [(x, torch.tensor([0, 0, 1, 1]))], ["0"], progress=False)["0"]
    assert torch.allclose(sel.class_means, torch.tensor([[1.0, 0.0], [0.0, 2.0]]))
    assert torch.allclose(sel.index, torch.ones(2), atol=1e-6)


def test_selectivity_streams_batch_by_batch():
    seen = []
    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU())
    net.register_forward_pre_hook(lambda m, args: seen.append(args[0].shape[0]))
    refs = []

    def loader():  # a generator: batch k exists only once asked for; older batches must have been let go
        g = torch.Generator().manual_seed(0)
        for _ in range(6):
            gc.collect()
            assert all(r() is None for r in refs[:-1]), "an earlier batch is still held"
            x = torch.rand(5, 3, generator=g)
            refs.append(weakref.ref(x))
            yield x, torch.arange(5) % 2

    sel = class_selectivity(net, loader(), ["1"], num_classes=2, progress=False)["1"]
    net._forward_pre_hooks.clear()
    assert max(seen) == 5 and len(refs) == 6
    assert sel.counts.tolist() == [18, 12]
