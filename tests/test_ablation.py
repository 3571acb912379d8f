"""Ablation: the context manager restores the model; batched ablation scores equal one forward per unit."""

import pytest
import torch
import torch.nn as nn

import unitscope as us
from unitscope.data.ablation import ablate, ablation_scores
from unitscope.studies import ablation_agreement, feature_selection, flip_counts, summarize_flips
from nets import Residual, cnn, mlp
from test_model_untouched import assert_same, snapshot


def slow_ablation_scores(net, x, layer, units, target):
    out = net(x).detach()
    base = out[torch.arange(len(x)), target]
    cols = []
    for u in units:
        with ablate(net, {layer: [u]}):
            cols.append(base - net(x).detach()[torch.arange(len(x)), target])
    return torch.stack(cols, 1)


@pytest.mark.parametrize("maker,layer", [(lambda: cnn(61), "4"), (lambda: mlp(62), "3")])
def test_batched_scores_equal_one_forward_per_unit(maker, layer):
    net = maker()
    x = torch.randn(4, 3, 8, 8) if isinstance(net[0], torch.nn.Conv2d) else torch.randn(4, 5)
    target = net(x).argmax(1)
    fast = ablation_scores(net, x, layer, target=None, internal_batch_size=7)
    units = list(range(fast.shape[1]))
    torch.testing.assert_close(fast, slow_ablation_scores(net, x, layer, units, target), atol=1e-5, rtol=1e-4)


def test_residual_model_falls_back_to_repeating_inputs():
    torch.manual_seed(63)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1), Residual(4), torch.nn.Flatten(), torch.nn.Linear(4 * 16, 3)
    ).eval()
    x = torch.randn(3, 3, 4, 4)
    fast = ablation_scores(net, x, "1.relu", target=0)
    slow = slow_ablation_scores(net, x, "1.relu", range(4), torch.zeros(3, dtype=torch.long))
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-4)


def test_ablate_values_and_restoration():
    net = cnn(64).train()
    x = torch.randn(2, 3, 8, 8)
    before = snapshot(net)
    net.eval()
    with ablate(net, {"2": [1, 3]}):
        a = us.activation(net, x, ["2"])["2"]
    assert torch.all(a[:, [1, 3]] == 0) and torch.any(a[:, 0] != 0)
    mean = torch.full((8, 8, 8), 0.5)
    with ablate(net, {"2": [(0, 1, 1)]}, value="mean", mean=mean):
        b = us.activation(net, x, ["2"])["2"]
    assert torch.all(b[:, 0, 1, 1] == 0.5)
    loader = [(x, None)]
    with ablate(net, {"2": [5]}, value="mean", loader=loader):
        c = us.activation(net, x, ["2"])["2"]
    torch.testing.assert_close(c[0, 5], a[:, 5].mean(0))
    net.train()
    with pytest.raises(RuntimeError):
        with ablate(net, {"2": [0]}):
            raise RuntimeError("inside")
    assert_same(before, net)
    with pytest.raises(us.UnitscopeError, match="channel 9 is out of range"):
        with ablate(net, {"2": [9]}):
            net.eval()(x)
    assert sum(len(m._forward_hooks) for m in net.modules()) == 0


def test_agreement_and_flips_on_a_small_cnn():
    net, x = cnn(65), torch.randn(8, 3, 8, 8)
    df = ablation_agreement(net, x, "7", k=6, n_steps=16)
    assert set(df.score) == {"conductance", "internal_influence", "grad_x_activation", "activation"}
    assert len(df) == 4 * 8 and df.pearson.between(-1, 1).all()
    # a ReLU layer that feeds a linear head: zeroing a channel removes exactly its term g·y(x), which is its
    # gradient × activation and (with no bias, so y(x') = 0) its conductance
    net2 = torch.nn.Sequential(
        torch.nn.Conv2d(3, 6, 3, padding=1, bias=False),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(6, 3),
    ).eval()
    df2 = ablation_agreement(net2, x, "1", k=6, n_steps=16, scores=["conductance", "grad_x_activation"])
    assert df2.pearson.min() > 0.999
    order = torch.arange(12).repeat(8, 1)
    flips = flip_counts(net, x, "7", order, max_units=12)
    s = summarize_flips(flips)
    assert s["never"] == int(flips.flips_at.isna().sum()) and len(flips) == 8
    assert s["never"] == 8 or 1 <= s["mean"] <= 12
    # ablating all 12 channels of the last ReLU leaves only the head's bias: every input whose label is not
    # the bias's top class must have flipped by then
    bias_class = int(net[-1].bias.argmax())
    labels = net(x).argmax(1)
    must_flip = (labels != bias_class).numpy()
    assert must_flip.any()
    assert flips["flips_at"][must_flip].notna().all()


def test_feature_selection_returns_accuracies():
    torch.manual_seed(66)
    net = mlp(66)
    x, y = torch.randn(120, 5), torch.randint(0, 4, (120,))
    df = feature_selection(net, x, y, x, y, "3", [[0, 1, 2]], ks=(2, 4), n_steps=8, random_repeats=2)
    assert set(df.score) == {"conductance", "internal_influence", "grad_x_activation", "activation", "random"}
    assert df.accuracy.between(0, 1).all() and len(df) == 5 * 2


def test_cumulative_ablation_equals_ablating_the_first_m_units_together():
    from unitscope.data.ablation import cumulative_ablation

    torch.manual_seed(3)
    net = nn.Sequential(nn.Conv2d(1, 5, 3), nn.ReLU(), nn.Flatten(), nn.Linear(5 * 6 * 6, 3)).eval()
    x = torch.randn(4, 1, 8, 8)
    order = torch.stack([torch.randperm(5) for _ in range(4)])
    got = cumulative_ablation(net, x, "1", order, target=1, internal_batch_size=2)
    assert got.shape == (4, 5)
    for i in range(4):
        for m in range(1, 6):
            with ablate(net, {"1": [int(u) for u in order[i, :m]]}), torch.no_grad():
                want = net(x[i : i + 1])[0, 1]
            assert abs(float(got[i, m - 1]) - float(want)) < 1e-5


def test_ablation_reports_progress_in_a_log_and_stays_silent_when_asked(monkeypatch, capsys):
    from unitscope.data.ablation import ablation_scores, cumulative_ablation

    monkeypatch.setenv("UNITSCOPE_PROGRESS", "log")
    monkeypatch.setenv("UNITSCOPE_PROGRESS_SECONDS", "0")
    net = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 2))
    x = torch.randn(5, 3)
    ablation_scores(net, x, "1", internal_batch_size=16)
    cumulative_ablation(net, x, "1", torch.arange(8).repeat(5, 1), target=0)
    err = capsys.readouterr().err.splitlines()
    assert "ablation of 8 units: 3/3 batches, 0 s elapsed" in err  # 5 examples, 2 (16 rows / 8) a batch
    assert err[-1] == "cumulative ablation of up to 8 units: 5/5 examples, 0 s elapsed"
    ablation_scores(net, x, "1", progress=False)
    cumulative_ablation(net, x, "1", torch.arange(8).repeat(5, 1), target=0, progress=False)
    assert capsys.readouterr().err == ""
