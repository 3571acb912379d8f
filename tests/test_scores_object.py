"""The Scores object: views, chunking, tables."""

import pytest
import torch

import unitscope as us
from nets import cnn, mlp


def test_per_channel_top_and_frame():
    net, x = cnn(41), torch.randn(2, 3, 8, 8)
    s = us.conductance(net, x, ["3", net[6]], n_steps=10, path=us.PathConfig(gap_warning=None))
    assert s.layers == ["3", "6"]
    pc = s.per_channel("3")
    assert pc.shape == (2, 12)
    torch.testing.assert_close(pc, s["3"].sum((2, 3)))
    top = s.top("3", k=4)
    assert top.indices.shape == (2, 4)
    assert torch.all(top.values[:, :-1] >= top.values[:, 1:])
    top_abs = s.top(net[3], k=3, by="abs")
    assert torch.equal(top_abs.values.abs(), pc.abs().topk(3, dim=1).values)
    frame = s.to_frame()
    assert len(frame) == 2 * (12 * 8 * 8 + 12 * 4 * 4)
    assert set(frame.columns) >= {"score", "layer", "example", "unit", "channel", "value", "delta"}
    by_channel = s.to_frame(per_channel=True)
    row = by_channel[(by_channel.layer == "3") & (by_channel.example == 1) & (by_channel.unit == 5)]
    assert float(row.value.iloc[0]) == pytest.approx(float(pc[1, 5]), rel=1e-6)
    assert "gap" in s.summary()
    with pytest.raises(us.UnitscopeError, match="no scores for layer '0'"):
        s["0"]


@pytest.mark.parametrize("method", ["gausslegendre", "riemann_trapezoid", "adaptive"])
def test_internal_batch_size_gives_the_same_numbers(method):
    net, x = cnn(42), torch.randn(3, 3, 8, 8)
    full = us.attribute(net, x, ["0", "6"], n_steps=12, method=method, path=us.PathConfig(gap_warning=None))
    for ibs in (5, 16, 40):
        chunked = us.attribute(
            net, x, ["0", "6"], n_steps=12, method=method, internal_batch_size=ibs, path=us.PathConfig(gap_warning=None)
        )
        for m in full:
            for layer in ("0", "6"):
                torch.testing.assert_close(chunked[m][layer], full[m][layer], atol=1e-5, rtol=1e-4)


def test_one_pass_serves_all_methods_like_separate_calls():
    net, x = mlp(43), torch.randn(3, 5)
    together = us.attribute(net, x, ["1", "3"], n_steps=20, path=us.PathConfig(gap_warning=None))
    torch.testing.assert_close(
        together["conductance"]["1"],
        us.conductance(net, x, ["1"], n_steps=20, path=us.PathConfig(gap_warning=None))["1"],
    )
    torch.testing.assert_close(
        together["internal_influence"]["3"], us.internal_influence(net, x, ["3"], n_steps=20)["3"]
    )
    torch.testing.assert_close(together["grad_x_activation"]["1"], us.grad_x_activation(net, x, ["1"])["1"])
    torch.testing.assert_close(together["activation"]["3"], us.activation(net, x, ["3"])["3"])


def test_targets_none_int_list_callable_agree():
    net, x = mlp(44), torch.randn(3, 5)
    top = net(x).argmax(1)
    a = us.conductance(net, x, ["1"], target=None, n_steps=10, path=us.PathConfig(gap_warning=None))
    b = us.conductance(net, x, ["1"], target=top.tolist(), n_steps=10, path=us.PathConfig(gap_warning=None))
    torch.testing.assert_close(a["1"], b["1"])
    assert a.target.tolist() == top.tolist()
    d = us.conductance(net, x, ["1"], target=torch.tensor(2), n_steps=10, path=us.PathConfig(gap_warning=None))
    e = us.conductance(net, x, ["1"], target=[2, 2, 2], n_steps=10, path=us.PathConfig(gap_warning=None))
    f = us.conductance(net, x, ["1"], target=lambda out: out[:, 2], n_steps=10, path=us.PathConfig(gap_warning=None))
    torch.testing.assert_close(d["1"], e["1"])
    torch.testing.assert_close(d["1"], f["1"])


def test_baselines_scalar_and_broadcast():
    net, x = mlp(45), torch.randn(3, 5)
    a = us.conductance(net, x, ["1"], baselines=0.25, target=0, n_steps=10, path=us.PathConfig(gap_warning=None))
    b = us.conductance(
        net, x, ["1"], baselines=torch.full((5,), 0.25), target=0, n_steps=10, path=us.PathConfig(gap_warning=None)
    )
    c = us.conductance(
        net, x, ["1"], baselines=torch.full((3, 5), 0.25), target=0, n_steps=10, path=us.PathConfig(gap_warning=None)
    )
    torch.testing.assert_close(a["1"], b["1"])
    torch.testing.assert_close(a["1"], c["1"])
