"""Inverse-set sampling: closed-form inverse sets (slabs of a linear unit), intersections, unreachable ranges,
diversity, reproducibility, and the model left untouched."""

import time
import warnings

import pytest
import torch
import torch.nn as nn

from unitscope.core.errors import UnitscopeError
from unitscope.synthesis.generators import DecoderGenerator, FFTImageGenerator, LayerEncoder, early_block
from unitscope.synthesis.inverse import (
    Constraint,
    InverseSetWarning,
    diversity,
    evaluate,
    langevin_sampler,
    penalized_am,
    sample_inverse_set,
)


def linear_net():
    """f(x) = x₀ + x₁ (unit 0) and g(x) = x₀ − x₁ (unit 1); ReLU after; a last layer h = relu(f) + relu(g)."""
    net = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 1))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0, 1.0], [1.0, -1.0]]))
        net[0].bias.zero_()
        net[2].weight.fill_(1.0)
        net[2].bias.zero_()
    return net


pytestmark = pytest.mark.usefixtures("one_thread")


IDENTITY = DecoderGenerator(nn.Identity(), latent_dim=2, code_bound=3.0)  # x = z, z ∈ [-3, 3]²


def test_every_sample_lies_in_the_slab():
    net = linear_net()
    r = sample_inverse_set(net, ("0", 0, 0.5, 1.0), IDENTITY, n_samples=96, n_seeds=12, seed=0, progress=False)
    assert r.ok and len(r) == 96
    s = r.samples.sum(1)  # closed form: the slab 0.5 ≤ x₀ + x₁ ≤ 1
    assert bool(((s >= 0.5) & (s <= 1.0)).all())
    f, inside = evaluate(net, ("0", 0, 0.5, 1.0), r.samples)  # a fresh forward pass agrees
    assert bool(inside.all()) and torch.allclose(f[:, 0], s, atol=1e-5)
    assert torch.allclose(r.activations[:, 0], s, atol=1e-5)
    assert r.verified_rate == 1.0 and 0.0 < r.feasible_rate <= 1.0
    assert r.samples.abs().max() <= 3.0  # codes kept in the generator's box
    assert len({tuple(row) for row in r.codes.tolist()}) == len(r)  # no duplicates


def test_one_sided_ranges():
    net = linear_net()
    up = sample_inverse_set(net, ("0", 0, 4.0, float("inf")), IDENTITY, n_samples=32, n_seeds=8, progress=False)
    down = sample_inverse_set(net, ("0", 0, float("-inf"), -4.0), IDENTITY, n_samples=32, n_seeds=8, progress=False)
    assert len(up) == len(down) == 32
    assert bool((up.samples.sum(1) >= 4).all()) and bool((down.samples.sum(1) <= -4).all())


def test_intersection_of_units_in_different_layers():
    net = linear_net()
    cons = [Constraint("0", 0, 0.0, 1.0), ("0", 1, 0.5, 2.0), ("2", 0, 1.0, 2.5)]
    r = sample_inverse_set(net, cons, IDENTITY, n_samples=64, n_seeds=8, seed=1, progress=False)
    assert r.ok and len(r) == 64
    x0, x1 = r.samples[:, 0], r.samples[:, 1]
    f, g = x0 + x1, x0 - x1
    h = f.clamp(min=0) + g.clamp(min=0)
    assert bool(((f >= 0) & (f <= 1) & (g >= 0.5) & (g <= 2) & (h >= 1) & (h <= 2.5)).all())
    assert r.activations.shape == (64, 3)


def test_element_units_and_conv_channels():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(48, 2))
    gen = DecoderGenerator(nn.Sequential(nn.Linear(4, 16), nn.Sigmoid()), latent_dim=4, output_shape=(1, 4, 4))
    with torch.no_grad():
        base = net[1](net[0](gen(gen.sample_codes(64))))
    lo = float(base[:, 2].mean((1, 2)).median())
    cons = [("1", 2, lo, lo + 0.2), ("1", (0, 1, 1), -1.0, 10.0)]
    r = sample_inverse_set(net, cons, gen, encoder=LayerEncoder(net, "1"), n_samples=40, n_seeds=8, progress=False)
    assert len(r) == 40
    with torch.no_grad():
        a = net[1](net[0](r.samples))
    ch = a[:, 2].mean((1, 2))
    assert bool(((ch >= lo) & (ch <= lo + 0.2)).all()) and bool((a[:, 0, 1, 1] <= 10).all())


@pytest.mark.parametrize("rng", [(-2.0, -1.0), (10.0, 11.0)])  # ReLU < 0; beyond x₀ + x₁ ≤ 6 in the box
def test_unreachable_range_ends_with_a_report(rng):
    net = linear_net()
    layer = "1" if rng[1] < 0 else "0"
    t = time.perf_counter()
    with pytest.warns(InverseSetWarning, match="unreachable"):
        r = sample_inverse_set(net, (layer, 0, *rng), IDENTITY, n_samples=32, n_seeds=8, progress=False)
    assert time.perf_counter() - t < 30
    assert not r.ok and len(r) == 0 and r.samples.numel() == 0
    assert "activations seen" in r.report and str(Constraint(layer, 0, *rng)) in r.report
    lo, hi = r.closest[0]  # the report says how close it came: every value seen is outside
    assert (lo > rng[1]) if rng[1] < 0 else (hi < rng[0])
    with pytest.raises(UnitscopeError, match="no input reached"):
        sample_inverse_set(net, (layer, 0, *rng), IDENTITY, n_samples=8, n_seeds=4, on_empty="raise", progress=False)


def test_bad_arguments_are_clear_errors():
    net = linear_net()
    with pytest.raises(UnitscopeError, match="empty range"):
        sample_inverse_set(net, ("0", 0, 2.0, 1.0), IDENTITY, progress=False)
    with pytest.raises(UnitscopeError, match="closest valid names"):
        sample_inverse_set(net, ("O", 0, 0.0, 1.0), IDENTITY, progress=False)
    with pytest.raises(UnitscopeError, match="channel 5 out of range.*shape=\\(2,\\)"):
        sample_inverse_set(net, ("0", 5, 0.0, 1.0), IDENTITY, progress=False)


def test_diversity_beats_degenerate_samplers():
    net = linear_net()
    r = sample_inverse_set(net, ("0", 0, 0.5, 1.0), IDENTITY, n_samples=128, n_seeds=16, seed=0, progress=False)
    ours = diversity(r.samples)["pixel"]
    # uniform samples of the same slab (rejection from the box): a non-degenerate reference
    g = torch.Generator().manual_seed(0)
    z = torch.rand(20000, 2, generator=g) * 6 - 3
    slab = z[(z.sum(1) >= 0.5) & (z.sum(1) <= 1.0)][:128]
    uniform = diversity(slab)["pixel"]
    # a degenerate sampler: one feasible point plus tiny noise
    degenerate = diversity(r.samples[:1] + 1e-3 * torch.randn(128, 2, generator=g))["pixel"]
    assert ours > 0.9 * uniform and ours > 100 * degenerate
    # and more diverse than penalized AM, which piles up at the top of the range
    am = penalized_am(net, ("0", 0, 0.5, 1.0), IDENTITY, n_samples=64, steps=60, progress=False)
    assert ours > diversity(am.samples)["pixel"]


def test_seeded_runs_are_reproducible():
    net = linear_net()
    kw = dict(n_samples=48, n_seeds=8, progress=False)
    a = sample_inverse_set(net, ("0", 1, -1.0, 0.0), IDENTITY, seed=3, **kw)
    b = sample_inverse_set(net, ("0", 1, -1.0, 0.0), IDENTITY, seed=3, **kw)
    c = sample_inverse_set(net, ("0", 1, -1.0, 0.0), IDENTITY, seed=4, **kw)
    assert torch.equal(a.codes, b.codes) and not torch.equal(a.codes, c.codes)


def _snapshot(model):
    return {
        "training": [m.training for m in model.modules()],
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "grads": [None if p.grad is None else p.grad.clone() for p in model.parameters()],
        "state": {k: v.clone() for k, v in model.state_dict().items()},
        "hooks": sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules()),
    }


def _same(before, after):
    assert before["training"] == after["training"] and before["requires_grad"] == after["requires_grad"]
    assert before["hooks"] == after["hooks"] == 0
    for x, y in zip(before["grads"], after["grads"]):
        assert (x is None and y is None) or torch.equal(x, y)
    assert all(torch.equal(before["state"][k], after["state"][k]) for k in before["state"])


def test_model_generator_and_encoder_untouched():
    net = linear_net().train()
    net[0].weight.grad = torch.ones(2, 2)
    net[2].weight.requires_grad_(False)
    dec = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.5)).train()
    gen = DecoderGenerator(dec, latent_dim=2)
    before, before_dec = _snapshot(net), _snapshot(dec)
    for fn in (sample_inverse_set, penalized_am, langevin_sampler):
        kw = dict(n_samples=16, progress=False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", InverseSetWarning)
            fn(net, ("0", 0, -0.5, 0.5), gen, encoder=LayerEncoder(net, "1"), **kw)
        with pytest.raises(UnitscopeError):
            fn(net, ("0", 9, -0.5, 0.5), gen, **kw)
    _same(before, _snapshot(net))
    _same(before_dec, _snapshot(dec))


def test_fft_generator_for_image_models():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    gen = FFTImageGenerator((3, 12, 10), value_range=(-1.0, 1.0))
    x = gen(gen.sample_codes(64, generator=torch.Generator().manual_seed(0)))
    assert x.shape == (64, 3, 12, 10) and x.min() >= -1 and x.max() <= 1
    with torch.no_grad():
        v = net(x)[:, 0]
    a, b = float(v.quantile(0.7)), float(v.quantile(0.7)) + float(v.std())
    r = sample_inverse_set(net, ("4", 0, a, b), gen, encoder=early_block(net), n_samples=48, n_seeds=8, progress=False)
    assert len(r) == 48 and r.samples.shape[1:] == (3, 12, 10)
    assert bool(evaluate(net, ("4", 0, a, b), r.samples)[1].all())


def test_baselines_return_only_verified_samples():
    net = linear_net()
    for fn in (penalized_am, langevin_sampler):
        r = fn(net, ("0", 0, 0.5, 1.0), IDENTITY, n_samples=32, progress=False)
        s = r.samples.sum(1)
        assert len(r) > 0 and bool(((s >= 0.5) & (s <= 1.0)).all()) and r.proposed >= len(r)


def test_digits_logit_band_with_the_vae():
    from unitscope.zoo import digits_cnn
    from unitscope.zoo.digits_vae import digits_encoder, digits_generator

    model = digits_cnn().model
    r = sample_inverse_set(
        model,
        ("classifier.fc2", 3, 10.0, 20.0),
        digits_generator(),
        encoder=digits_encoder(model),
        n_samples=64,
        n_seeds=16,
        progress=False,
    )
    assert len(r) == 64 and r.samples.shape[1:] == (1, 8, 8)
    with torch.no_grad():
        logit = model(r.samples)[:, 3]
    assert bool(((logit >= 10) & (logit <= 20)).all())
    assert r.samples.min() >= 0 and r.samples.max() <= 1


def test_study_entry_point_contract(tmp_path, capsys):
    import json

    from unitscope.studies import inverse as study

    summary = study.main(["--quick", "--out", str(tmp_path), "--seed", "0"])
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert json.loads(last)["feasible_rate"] == pytest.approx(summary["feasible_rate"])
    names = {p.name for p in tmp_path.iterdir()}
    assert {
        "inverse.json",
        "inverse_methods.csv",
        "inverse_methods.md",
        "inverse_bands.csv",
        "inverse_logit_bands.png",
        "inverse_hidden_bands.png",
        "inverse_intersection.png",
    } <= names
    assert set(summary["methods"]) == {"augmented_lagrangian", "penalized_am", "langevin"}
    assert all(r["verified_rate"] == 1.0 for r in summary["methods"].values() if r["n"])
