"""The unit specification on models nobody here wrote (random weights, tiny configs): transformer layers' units
are their neurons, not token positions; padding is left out; token ids enter at an embedding module."""

import pytest
import torch

import unitscope as us
from unitscope.core.units import UnitSpec

transformers = pytest.importorskip("transformers")


def tiny_gpt2(eager: bool = False):
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(n_layer=2, n_embd=16, n_head=2, n_positions=16, vocab_size=50)
    if eager:  # fixed rules need forward-mode autodiff, which CPU flash attention lacks
        cfg._attn_implementation = "eager"
    return transformers.GPT2LMHeadModel(cfg).eval()


def test_gpt2_mlp_units_are_its_4d_neurons_and_padding_is_left_out():
    model = tiny_gpt2()
    ids = torch.randint(0, 50, (2, 5))
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    s = us.activation(model, ids, ["transformer.h.1.mlp.act"], additional_forward_args={"attention_mask": mask})
    assert s["transformer.h.1.mlp.act"].shape == (2, 5, 64)
    assert s.unit_spec("transformer.h.1.mlp.act").layout == "tokens"
    per = s.per_unit("transformer.h.1.mlp.act")
    assert per.shape == (2, 64)
    raw = s["transformer.h.1.mlp.act"]
    torch.testing.assert_close(per[1], raw[1, :3].mean(0))  # the two padding tokens are left out
    torch.testing.assert_close(per[0], raw[0].mean(0))
    top = s.top("transformer.h.1.mlp.act", k=5)
    assert top.indices.shape == (2, 5) and int(top.indices.max()) < 64
    assert int(top.indices.max()) >= 5 or torch.equal(top.values, per.topk(5, 1).values)
    torch.testing.assert_close(top.values, per.topk(5, 1).values)
    heads = s.per_unit("transformer.h.1.mlp.act", spec=UnitSpec.heads(4))
    assert heads.shape == (2, 4)


def test_gpt2_token_ids_conductance_from_the_embedding_is_complete():
    model = tiny_gpt2()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ids = torch.randint(0, 50, (2, 4))
    target = ("logits", -1, 7)
    s = us.conductance(
        model,
        ids,
        layers=["transformer.h.0", "transformer.h.1.mlp.act"],
        embedding="transformer.wte",
        target=target,
        n_steps=64,
        path=us.PathConfig(gap_warning=None),
    )
    # transformer.h.0's first output is a cut (the residual stream): Σ units = F(x) − F(x')
    assert float(s.relative_delta("transformer.h.0").max()) < 1e-2
    assert s.per_unit("transformer.h.1.mlp.act").shape == (2, 64)
    g = us.grad_x_activation(model, ids, ["transformer.wte"], target=target)
    assert g["transformer.wte"].shape == (2, 4, 16)
    a = us.ablation_scores(model, ids, "transformer.h.1.mlp.act", units=[0, 1, 2], target=target)
    assert a.shape == (2, 3) and torch.isfinite(a).all()
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules()) == 0


def test_conv_channels_and_a_scan_over_batches_of_different_lengths():
    model = tiny_gpt2()
    loader = [
        {"input_ids": torch.randint(0, 50, (2, t)), "attention_mask": torch.ones(2, t, dtype=torch.long)}
        for t in (3, 6)
    ]
    r = us.scan(model, loader, ["transformer.h.1.mlp.act"], by=None, top_k=2)
    assert r.count == 4 and r.mean("transformer.h.1.mlp.act").shape == (64,)
    conv = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU())
    s = us.activation(conv, torch.randn(2, 3, 6, 6), ["1"])
    torch.testing.assert_close(s.per_unit("1"), s["1"].mean((2, 3)))
    assert s.unit_spec("1").layout == "channels"


def test_resnet18_shared_relu_has_one_site_per_call():
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=5).eval()
    x = torch.randn(2, 3, 32, 32)
    names = us.layer_names(model, inputs=x)
    assert "layer1.0.relu@0" in names and "layer1.0.relu@1" in names and "layer1.0.relu" not in names
    assert "relu" in names and "layer1.0.conv1" in names
    with pytest.raises(us.UnitscopeError, match="'layer1.0.relu@0', 'layer1.0.relu@1'"):
        us.activation(model, x, ["layer1.0.relu"])
    s = us.conductance(
        model,
        x,
        ["layer1.0.relu@0", "layer1.0.relu@1", "layer1.0.bn2"],
        target=1,
        n_steps=32,
        path=us.PathConfig(gap_warning=None),
    )
    a = us.activation(model, x, ["layer1.0.relu@0", "layer1.0.bn1"])
    torch.testing.assert_close(a["layer1.0.relu@0"], a["layer1.0.bn1"].clamp_min(0))
    # layer1.0.relu@1 (the block's output) is a cut: its units' conductances add up to F(x) − F(x')
    assert float(s.relative_delta("layer1.0.relu@1").max()) < 2e-2
    assert s.per_unit("layer1.0.relu@1").shape == (2, 64)


def test_per_input_conductance_sums_to_layer_conductance_on_gpt2_and_lstm():
    model = tiny_gpt2(eager=True)
    ids = torch.randint(0, 50, (2, 4))
    layer, target = "transformer.h.1.mlp.act", ("logits", -1, 3)
    kw = dict(embedding="transformer.wte", target=target, n_steps=48, method="riemann_trapezoid")
    per_input = us.neuron_conductance(model, ids, layer=layer, units=[0, 5, 63], **kw)  # [N, U, T, D]
    assert per_input.shape == (2, 3, 4, 16)
    total = us.conductance(model, ids, [layer], path=us.PathConfig(gap_warning=None), **kw)
    total = total.per_unit(layer)[:, [0, 5, 63]]
    torch.testing.assert_close(per_input.sum((2, 3)), total, rtol=2e-2, atol=2e-4)  # Σ_i Eq. 2 = Eq. 3

    class Tagger(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = torch.nn.LSTM(3, 5, batch_first=True)
            self.out = torch.nn.Linear(5, 2)

        def forward(self, x):
            return self.out(self.lstm(x)[0][:, -1])

    torch.manual_seed(1)
    net, x = Tagger(), torch.randn(2, 4, 3)
    a = us.neuron_conductance(net, x, layer="lstm", units=[1, 4], spec=UnitSpec.tokens(part=0), target=0, n_steps=64)
    s = us.conductance(
        net, x, ["lstm"], path=us.PathConfig(gap_warning=None), target=0, n_steps=256
    )  # adaptive: no forward AD in RNNs
    want = s.per_unit("lstm", spec=UnitSpec.tokens(part=0))[:, [1, 4]]
    torch.testing.assert_close(a.sum((2, 3)), want, rtol=2e-2, atol=2e-4)
