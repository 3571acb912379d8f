"""dy/dα where forward-mode autodiff cannot give it (issue 13 item 5: a gradient that cannot be had is an error,
never a zero). The double-backward JVP equals forward mode where both work; models with an op that has no forward
derivative (a custom autograd.Function without jvp, ``nn.LSTM``'s mkldnn kernel) get the same numbers as their
forward-mode twins; a tiny Llama (hf: folder) works with every layer at once; an op that cannot be differentiated
twice either (CPU flash attention) is an error that names the layers, the op and what works instead."""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import unitscope as us
from unitscope.attribution import paths
from unitscope.attribution.engine import evaluate
from unitscope.attribution.path_tangents import missing_forward_derivative, path_tangents
from unitscope.core.errors import UnitscopeError
from unitscope.core.inputs import Batch, Target
from unitscope.core.sites import resolve

pytestmark = pytest.mark.usefixtures("one_thread")


class _TanhWithoutJvp(torch.autograd.Function):
    """tanh with a (twice differentiable) backward and no forward-mode derivative."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.tanh(x)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * (1 - torch.tanh(x) ** 2)


class PlainTanh(nn.Module):
    def forward(self, x):
        return _TanhWithoutJvp.apply(x)


def mlp(tanh: nn.Module) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 8), nn.GELU(), nn.Linear(8, 8), tanh, nn.Linear(8, 3)).eval()


def _snapshot(model):
    return (
        {k: v.detach().clone() for k, v in model.state_dict().items()},
        model.training,
        [p.requires_grad for p in model.parameters()],
        [p.grad for p in model.parameters()],
        sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules()),
    )


def _untouched(model, before):
    after = _snapshot(model)
    assert all(torch.equal(before[0][k], after[0][k]) for k in before[0])
    assert before[1:] == after[1:] and all(g is None for g in after[3]) and after[4] == 0


def test_double_backward_jvp_equals_forward_mode_on_a_gelu_tanh_mlp():
    net = mlp(nn.Tanh())
    x = torch.randn(3, 5, generator=torch.Generator().manual_seed(1))
    batch = Batch((x,), (torch.zeros_like(x),), False, (), 3)
    sites = resolve(net, ["0", "1", "3"])
    example = torch.arange(3).repeat_interleave(4)
    alpha = torch.tensor([0.0, 0.3, 0.7, 1.0]).repeat(3)
    target = Target(rows_fn=lambda out, ex: out[:, 0])
    ev = evaluate(net, batch, target, sites, example, alpha, need_grad=True, tangents=True)
    dbl = path_tangents(net, batch, sites, example, alpha)
    for s in sites:
        assert float(ev.tangents[s.name][0].abs().max()) > 0.1
        torch.testing.assert_close(dbl[s.name][0], ev.tangents[s.name][0], rtol=1e-5, atol=1e-6)
    # layer "0" is linear in the input: dy/dα = W (x − x') exactly
    torch.testing.assert_close(dbl["0"][0], (x @ net[0].weight.T)[example], rtol=1e-5, atol=1e-6)


def test_a_model_without_forward_derivative_gets_the_forward_mode_numbers():
    with torch.autograd.forward_ad.dual_level(), pytest.raises(NotImplementedError) as info:
        PlainTanh()(torch.autograd.forward_ad.make_dual(torch.ones(2), torch.ones(2)))
    assert missing_forward_derivative(info.value) is not None
    smooth, plain = mlp(nn.Tanh()), mlp(PlainTanh())
    x = torch.randn(4, 5, generator=torch.Generator().manual_seed(2))
    before = _snapshot(plain)
    kw = dict(method="gausslegendre", n_steps=12, path=us.PathConfig(gap_warning=None))
    want = us.conductance(smooth, x, ["1", "3"], **kw)
    got = us.conductance(plain, x, ["1", "3"], **kw)
    for name in ("1", "3"):
        torch.testing.assert_close(got[name], want[name], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(got.delta[name], want.delta[name], rtol=1e-4, atol=1e-6)
        assert float(got.relative_delta(name).max()) < 1e-3
    with torch.no_grad():  # the same numbers inside no_grad
        torch.testing.assert_close(us.conductance(plain, x, ["3"], **kw)["3"], want["3"], rtol=1e-5, atol=1e-6)
    _untouched(plain, before)


def test_only_forward_modes_report_of_a_missing_derivative_is_taken():
    msg = "Trying to use forward AD with aten::silu_backward that does not support it."
    assert missing_forward_derivative(NotImplementedError(msg)) == "aten::silu_backward"
    assert missing_forward_derivative(RuntimeError(msg)) is None
    assert missing_forward_derivative(NotImplementedError("something else")) is None


class LSTMNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(4, 6, batch_first=True)
        self.act = nn.Tanh()
        self.head = nn.Linear(6, 3)

    def forward(self, x):
        out, _ = self.lstm(x)
        return self.head(self.act(out[:, -1]))


def test_lstm_gausslegendre_is_complete_and_agrees_with_the_trapezoid():
    torch.manual_seed(0)
    net = LSTMNet().eval()
    x = torch.randn(3, 5, 4, generator=torch.Generator().manual_seed(3))
    before = _snapshot(net)
    s = us.conductance(
        net, x, ["lstm", "act"], method="gausslegendre", n_steps=16, path=us.PathConfig(gap_warning=None)
    )
    for name in ("lstm", "act"):  # both are cuts
        assert float(s.relative_delta(name).max()) < 1e-4, s.relative_delta(name)
    fine = us.conductance(net, x, ["act"], method="adaptive", n_steps=256, path=us.PathConfig(gap_warning=None))
    torch.testing.assert_close(s["act"], fine["act"], rtol=1e-3, atol=1e-4)
    _untouched(net, before)


class FlashAttention(nn.Module):
    def __init__(self):
        super().__init__()
        self.inp = nn.Linear(4, 8)
        self.mix = nn.Identity()
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        h = self.inp(x)
        return self.head(self.mix(F.scaled_dot_product_attention(h, h, h)).mean(1))


def test_flash_attention_gets_dy_dalpha_through_the_math_kernel_and_the_kernel_choice_is_put_back():
    torch.manual_seed(0)
    net = FlashAttention().eval()
    x = torch.randn(2, 5, 4, generator=torch.Generator().manual_seed(4))
    before = _snapshot(net)
    flags = (
        torch.backends.cuda.flash_sdp_enabled(),
        torch.backends.cuda.mem_efficient_sdp_enabled(),
        torch.backends.cuda.math_sdp_enabled(),
    )
    s = us.conductance(net, x, ["mix"], method="gausslegendre", n_steps=16, path=us.PathConfig(gap_warning=None))
    assert flags == (
        torch.backends.cuda.flash_sdp_enabled(),
        torch.backends.cuda.mem_efficient_sdp_enabled(),
        torch.backends.cuda.math_sdp_enabled(),
    )
    _untouched(net, before)
    assert float(s.relative_delta("mix").max()) < 1e-3, s.relative_delta("mix")
    fine = us.conductance(net, x, ["mix"], method="adaptive", n_steps=256, path=us.PathConfig(gap_warning=None))
    torch.testing.assert_close(s["mix"], fine["mix"], rtol=1e-2, atol=1e-4)


class _Opaque(torch.autograd.Function):
    """tanh with a backward that can run only once, and no jvp: no forward mode, no double backward."""

    @staticmethod
    def forward(ctx, x):
        y = torch.tanh(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        return g * (1 - y * y)


class OpaqueNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.inp = nn.Linear(4, 8)
        self.mix = nn.Identity()
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        return self.head(self.mix(_Opaque.apply(self.inp(x))))


def test_no_exact_way_is_an_error_that_names_layer_op_and_what_works():
    torch.manual_seed(0)
    net = OpaqueNet().eval()
    x = torch.randn(2, 4, generator=torch.Generator().manual_seed(4))
    before = _snapshot(net)
    with pytest.raises(
        UnitscopeError,
        match=r"dy/dα for layer 'mix' cannot be had: a custom autograd.Function "
        r"without jvp\(\) in the model's own forward\(\)"
        r".*method='adaptive'",
    ) as info:
        us.conductance(net, x, ["mix"], method="gausslegendre", n_steps=8)
    assert "differentiated twice" in str(info.value) and "riemann_trapezoid" in str(info.value)
    _untouched(net, before)
    # what the message offers does work
    a = us.conductance(net, x, ["mix"], method="adaptive", n_steps=64, path=us.PathConfig(gap_warning=None))
    assert float(a.relative_delta("mix").max()) < 1e-2
    c = us.conductance(
        net,
        x,
        ["mix"],
        method="riemann_trapezoid",
        path=us.PathConfig(captum_compatible=True, gap_warning=None),
        n_steps=64,
    )
    assert float(c.relative_delta("mix").max()) < 0.1


def test_gausslegendre_with_tangents_from_the_values_needs_no_forward_derivative(monkeypatch):
    """dy/dα from the values (``paths.TANGENTS = "values"``): the model without any forward derivative runs,
    complete, close to the adaptive rule, and untouched."""
    monkeypatch.setattr(paths, "TANGENTS", "values")
    torch.manual_seed(0)
    net = OpaqueNet().eval()
    x = torch.randn(2, 4, generator=torch.Generator().manual_seed(4))
    before = _snapshot(net)
    s = us.conductance(net, x, ["mix"], method="gausslegendre", n_steps=16, path=us.PathConfig(gap_warning=None))
    _untouched(net, before)
    assert float(s.relative_delta("mix").max()) < 1e-3
    a = us.conductance(net, x, ["mix"], method="adaptive", n_steps=256, path=us.PathConfig(gap_warning=None))
    scale = float(a["mix"].abs().max())
    assert float((s["mix"] - a["mix"]).abs().max()) < 1e-3 * scale


transformers = pytest.importorskip("transformers")


def test_tiny_llama_gausslegendre_with_every_layer_at_once(tmp_path):
    from unitscope.loading import load_model

    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        vocab_size=10,
        max_position_embeddings=32,
        pad_token_id=0,
        bos_token_id=2,
        eos_token_id=5,
    )
    transformers.LlamaForCausalLM(cfg).save_pretrained(tmp_path / "m")
    model = load_model(f"hf:{tmp_path / 'm'}").model
    ids, mask = torch.tensor([[2, 3, 4, 5], [6, 7, 0, 0]]), torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    before = _snapshot(model)
    cuts = ["model.layers.0", "model.layers.1", "model.norm"]
    # the residual stream after each block, its norm, and the SiLU inside block 1 (below it, a recorded layer's
    # dual tensors used to reach aten::silu_backward in the backward pass: NotImplementedError)
    s = us.conductance(
        model,
        ids,
        cuts + ["model.layers.1.mlp.act_fn"],
        embedding="model.embed_tokens",
        additional_forward_args=(mask,),
        method="gausslegendre",
        n_steps=128,
        path=us.PathConfig(gap_warning=None),
    )
    for name in cuts:
        assert float(s.relative_delta(name).max()) < 1e-3, (name, s.relative_delta(name))
    assert s["model.layers.1.mlp.act_fn"].shape == (2, 4, 32)
    alone = us.conductance(
        model,
        ids,
        ["model.layers.1.mlp.act_fn"],
        embedding="model.embed_tokens",
        additional_forward_args=(mask,),
        method="gausslegendre",
        n_steps=128,
        path=us.PathConfig(gap_warning=None),
    )
    torch.testing.assert_close(s["model.layers.1.mlp.act_fn"], alone["model.layers.1.mlp.act_fn"], rtol=1e-4, atol=1e-6)
    _untouched(model, before)
