"""Dictionary (sparse autoencoder) features as units, with an error node (issue 31): exact answers first."""

import copy
import dataclasses
import json
import resource

import pytest
import torch
import torch.nn as nn

import unitscope as us
from unitscope.core.dictionary import Dictionary

from splice import Join, Split

D, FEATS = 8, 24


class Tokens(nn.Module):
    """Token-major ``[N, T, D]``: a tanh layer (a cut), a linear mix, masked mean pooling, a head."""

    def __init__(self, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.inp, self.act, self.mid, self.out = nn.Linear(4, D), nn.Tanh(), nn.Linear(D, D), nn.Linear(D, 3)

    def forward(self, x, mask):
        h = self.mid(self.act(self.inp(x)))
        m = mask.to(h.dtype).unsqueeze(-1)
        return self.out((h * m).sum(1) / m.sum(1))


def data(n=3, t=5, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, t, 4, generator=g)
    mask = torch.ones(n, t, dtype=torch.long)
    mask[1, 3:] = 0
    mask[2, 4:] = 0
    return x, mask


def weights(d=D, f=FEATS, seed=2):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(d, f, generator=g) / d**0.5,
        0.1 * torch.randn(f, generator=g),
        torch.randn(f, d, generator=g) / f**0.5,
        0.1 * torch.randn(d, generator=g),
    )


def sae(activation="relu", **kw):
    W_enc, b_enc, W_dec, b_dec = weights()
    return Dictionary.from_weights(W_enc, b_enc, W_dec, b_dec, activation=activation, **kw)


def call(score, net, x, mask, layers, **kw):
    if score == "conductance":
        kw["path"] = dataclasses.replace(kw.get("path") or us.PathConfig(), gap_warning=None)
    return getattr(us, score)(net, x, layers, additional_forward_args=(mask,), mask=mask, **kw)


# --- exact answers -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["adaptive", "gausslegendre", "riemann_trapezoid"])
def test_identity_dictionary_is_exactly_the_layers_neuron_conductance(method, one_thread):
    net, (x, mask) = Tokens(), data()
    plain = call("conductance", net, x, mask, ["act"], target=1, method=method, n_steps=24)
    ident = call(
        "conductance",
        net,
        x,
        mask,
        ["act"],
        target=1,
        method=method,
        n_steps=24,
        dictionaries={"act": Dictionary.identity(D)},
    )
    feats, err = ident["act"]
    assert feats.shape == err.shape == plain["act"].shape
    assert torch.equal(feats, plain["act"])
    assert torch.equal(err, torch.zeros_like(err))
    assert torch.equal(ident.per_unit("act")[:, :D], plain.per_unit("act"))
    assert torch.equal(ident.per_unit("act")[:, D], torch.zeros(3))
    assert torch.equal(ident.delta["act"], plain.delta["act"])
    assert torch.equal(ident.n_evals, plain.n_evals)


def test_identity_dictionary_comparators_are_the_layers_own(one_thread):
    net, (x, mask) = Tokens(), data()
    ident = {"act": Dictionary.identity(D)}
    for score in ("grad_x_activation", "activation", "internal_influence"):
        kw = {} if score == "activation" else {"target": 2}
        a = call(score, net, x, mask, ["act"], dictionaries=ident, **kw)
        b = call(score, net, x, mask, ["act"], **kw)
        assert torch.equal(a["act"][0], b["act"]), score
        assert torch.equal(a.per_unit("act")[:, :D], b.per_unit("act")), score
        if score == "internal_influence":  # ∫ ∂F/∂ε dα = ∫ ∂F/∂y dα: the error node's influence is the layer's
            torch.testing.assert_close(a.per_unit("act")[:, D], b.per_unit("act").sum(1))
        else:  # ε = 0: no activation, no gradient × activation
            assert float(a.per_unit("act")[:, D].abs().max()) == 0.0, score


@pytest.mark.parametrize("kind", ["relu", "topk:5", "jumprelu"])
@pytest.mark.parametrize("method", ["adaptive", "gausslegendre"])
def test_features_plus_error_node_are_the_whole_output_difference_on_a_cut(kind, method, one_thread):
    net, (x, mask) = Tokens(), data()
    d = sae(kind, threshold=0.05 if kind == "jumprelu" else None, b_dec_pre=True)
    s = call("conductance", net, x, mask, ["act"], target=0, method=method, n_steps=48, dictionaries={"act": d})
    feats, err = s["act"]
    assert feats.shape == (3, 5, FEATS) and err.shape == (3, 5, D)
    per = s.per_unit("act")
    assert per.shape == (3, FEATS + 1)
    od = s.output_diff.double()
    # Σ features + error node = F(x) − F(x'): the layer is a cut, and the forward pass is unchanged
    assert float(((per.double().sum(1) - od).abs() / od.abs()).max()) < 1e-3
    assert float(s.relative_delta("act").max()) < 1e-3
    plain = call("conductance", net, x, mask, ["act"], target=0, method=method, n_steps=48)
    torch.testing.assert_close(s.output_diff, plain.output_diff, rtol=1e-6, atol=1e-7)
    # the per-unit view: features over the real tokens, then the error node over its positions and dims
    keep = mask.unsqueeze(-1).to(feats.dtype)
    torch.testing.assert_close(per[:, :FEATS], (feats * keep).sum(1))
    torch.testing.assert_close(per[:, FEATS], (err * keep).sum((1, 2)))
    # the error node takes a real share here (a random dictionary), and each feature has an error estimate
    assert float(per[:, FEATS].abs().min()) > 0
    assert s.per_unit_error("act").shape == (3, FEATS + 1)
    assert bool(torch.isfinite(s.per_unit_error("act")).all())


def test_the_layer_handed_on_is_unchanged_so_the_models_output_is(one_thread):
    net, (x, mask) = Tokens(), data()
    d = sae("topk:3")
    seen = {}
    net.out.register_forward_hook(lambda m, a, out: seen.setdefault("out", out.detach().clone()))
    try:
        us.activation(net, x, ["act"], additional_forward_args=(mask,), dictionaries={"act": d})
    finally:
        net.out._forward_hooks.clear()
    torch.testing.assert_close(seen["out"], net(x, mask), rtol=1e-6, atol=1e-6)
    f, err = d.split(net.act(net.inp(x)))
    torch.testing.assert_close(d.join(f, err), net.act(net.inp(x)), rtol=0, atol=1e-6)


@pytest.mark.parametrize("method", ["adaptive", "gausslegendre", "riemann_trapezoid"])
def test_eq2_summed_over_inputs_is_eq3_for_every_feature_and_the_error_node(method, one_thread):
    net, (x, mask) = Tokens(), data()
    d = {"act": sae("relu", b_dec_pre=True)}
    s = call("conductance", net, x, mask, ["act"], target=1, method=method, n_steps=32, dictionaries=d)
    units = list(range(FEATS + 1))  # every feature, and the error node (unit F)
    a = us.neuron_conductance(
        net,
        x,
        "act",
        units,
        target=1,
        method=method,
        n_steps=32,
        mask=mask,
        additional_forward_args=(mask,),
        dictionaries=d,
    )
    assert a.shape == (3, FEATS + 1, 5, 4)
    scale = float(s.per_unit("act").abs().max())
    assert float((a.sum((2, 3)) - s.per_unit("act")).abs().max()) < 1e-5 * scale
    pairs = us.neuron_conductance(
        net,
        x,
        "act",
        [FEATS, 3, 7],
        target=1,
        method=method,
        n_steps=32,
        mask=mask,
        additional_forward_args=(mask,),
        dictionaries=d,
        paired=True,
    )
    torch.testing.assert_close(pairs, torch.stack([a[0, FEATS], a[1, 3], a[2, 7]]), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("rule", ["riemann_left", "riemann_trapezoid", "riemann_middle", "gausslegendre"])
def test_same_numbers_as_captum_on_the_model_with_the_dictionary_spliced_in(rule, one_thread):
    from captum.attr import InternalInfluence, LayerConductance

    net, (x, mask) = Tokens(), data()
    d = sae("relu", b_dec_pre=True)
    spliced = copy.deepcopy(net)
    spliced.act = nn.Sequential(nn.Tanh(), Split(d), Join(d))
    kw = dict(target=2, n_steps=17, method=rule)
    captum = us.PathConfig(captum_compatible=True)
    ours = call("conductance", net, x, mask, ["act"], dictionaries={"act": d}, path=captum, **kw)
    infl = call("internal_influence", net, x, mask, ["act"], dictionaries={"act": d}, path=captum, **kw)
    ref = LayerConductance(spliced, spliced.act[1]).attribute(x, additional_forward_args=(mask,), **kw)
    ref_i = InternalInfluence(spliced, spliced.act[1]).attribute(x, additional_forward_args=(mask,), **kw)
    for mine, theirs in [*zip(ours["act"], ref), *zip(infl["act"], ref_i)]:
        assert mine.shape == theirs.shape
        assert float((mine - theirs.detach()).abs().max() / theirs.detach().abs().max()) < 1e-5


def test_several_dictionaries_at_several_layers_in_one_pass(one_thread):
    net, (x, mask) = Tokens(), data()
    d1, d2 = sae("relu"), Dictionary.from_weights(*weights(seed=5), activation="topk:4")
    both = call(
        "conductance",
        net,
        x,
        mask,
        ["act", "mid", "inp"],
        target=0,
        method="gausslegendre",
        n_steps=16,
        dictionaries={"act": d1, net.mid: d2},
    )
    one = call(
        "conductance", net, x, mask, ["mid"], target=0, method="gausslegendre", n_steps=16, dictionaries={"mid": d2}
    )
    for a, b in zip(both["mid"], one["mid"]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
    assert isinstance(both["act"], tuple) and not isinstance(both["inp"], tuple)
    assert both.per_unit("inp").shape == (3, D)


# --- the model and the dictionary handed back as they were ---------------------------------------------------------


def snapshot(*modules):
    out = []
    for m in modules:
        out.append(
            dict(
                training=[s.training for s in m.modules()],
                rg=[p.requires_grad for p in m.parameters()],
                grad=[None if p.grad is None else p.grad.clone() for p in m.parameters()],
                state={k: v.clone() for k, v in m.state_dict().items()},
                hooks=sum(
                    len(s._forward_hooks) + len(s._forward_pre_hooks) + len(s._backward_hooks) for s in m.modules()
                ),
            )
        )
    return out


def same(a, b):
    for x, y in zip(a, b):
        assert x["training"] == y["training"] and x["rg"] == y["rg"] and x["hooks"] == y["hooks"] == 0
        assert all((g is None and h is None) or torch.equal(g, h) for g, h in zip(x["grad"], y["grad"]))
        assert all(torch.equal(x["state"][k], y["state"][k]) for k in x["state"])


def test_model_and_dictionary_are_handed_back_unchanged_also_on_error(one_thread):
    net, (x, mask) = Tokens(), data()
    d = sae("relu").train()
    d.module.W_enc.grad = torch.ones_like(d.module.W_enc)
    net.train()
    net.inp.weight.grad = torch.ones_like(net.inp.weight)
    before = snapshot(net, d)
    dd = {"act": d}
    call("conductance", net, x, mask, ["act"], target=0, n_steps=8, dictionaries=dd)
    call("conductance", net, x, mask, ["act"], target=0, n_steps=8, method="gausslegendre", dictionaries=dd)
    call("grad_x_activation", net, x, mask, ["act"], target=0, dictionaries=dd)
    us.neuron_conductance(
        net, x, "act", [0, FEATS], target=0, n_steps=8, mask=mask, additional_forward_args=(mask,), dictionaries=dd
    )
    us.ablation_scores(net, x, "act", units=[0, 1, FEATS], target=0, additional_forward_args=(mask,), dictionaries=dd)
    same(before, snapshot(net, d))
    wrong = Dictionary.identity(D + 1)
    with pytest.raises(us.UnitscopeError, match="9 dims.*layer 'act' has 8"):
        call("conductance", net, x, mask, ["act"], target=0, n_steps=8, dictionaries={"act": wrong})
    same(before, snapshot(net, d))


def test_mistakes_are_one_clear_error():
    net, (x, mask) = Tokens(), data()
    with pytest.raises(us.UnitscopeError, match="not among the layers scored.*add 'mid'"):
        call("conductance", net, x, mask, ["act"], dictionaries={"mid": sae()})
    with pytest.raises(us.UnitscopeError, match="no encode"):
        call("conductance", net, x, mask, ["act"], dictionaries={"act": nn.Linear(2, 2)})
    with pytest.raises(us.UnitscopeError, match="decoder does not fit"):
        Dictionary.from_weights(torch.ones(4, 6), None, torch.ones(4, 6), None)
    with pytest.raises(us.UnitscopeError, match="topk:K"):
        Dictionary.from_weights(torch.ones(4, 6), None, torch.ones(6, 4), None, activation="topk")
    with pytest.raises(us.UnitscopeError, match="threshold"):
        Dictionary.from_weights(torch.ones(4, 6), None, torch.ones(6, 4), None, activation="jumprelu")
    with pytest.raises(us.UnitscopeError, match="unknown dictionary activation"):
        Dictionary.from_weights(torch.ones(4, 6), None, torch.ones(6, 4), None, activation="gelu")


# --- formats ------------------------------------------------------------------------------------------------------


def saelens_folder(path, architecture, extra_cfg=None, extra_weights=None):
    from safetensors.torch import save_file

    W_enc, b_enc, W_dec, b_dec = weights()
    path.mkdir()
    tensors = {"W_enc": W_enc, "b_enc": b_enc, "W_dec": W_dec, "b_dec": b_dec, **(extra_weights or {})}
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path / "sae_weights.safetensors"))
    cfg = {
        "architecture": architecture,
        "d_in": D,
        "d_sae": FEATS,
        "apply_b_dec_to_input": True,
        "hook_name": "blocks.0.hook_resid_post",
        "normalize_activations": "none",
        **(extra_cfg or {}),
    }
    (path / "cfg.json").write_text(json.dumps(cfg))
    return path


@pytest.mark.parametrize(
    "architecture,activation", [("standard", "relu"), ("topk", "topk:6"), ("jumprelu", "jumprelu")]
)
def test_a_saelens_folder_gives_the_numbers_of_its_weights(tmp_path, architecture, activation, one_thread):
    thr = torch.full((FEATS,), 0.07)
    folder = saelens_folder(
        tmp_path / "sae",
        architecture,
        {"k": 6} if architecture == "topk" else None,
        {"threshold": thr} if architecture == "jumprelu" else None,
    )
    loaded = Dictionary.from_saelens(folder)
    assert loaded.hook_name == "blocks.0.hook_resid_post" and loaded.n_features == FEATS and loaded.d_in == D
    W_enc, b_enc, W_dec, b_dec = weights()
    ref = Dictionary.from_weights(
        W_enc,
        b_enc,
        W_dec,
        b_dec,
        b_dec_pre=True,
        activation=activation,
        threshold=thr if architecture == "jumprelu" else None,
    )
    net, (x, mask) = Tokens(), data()
    kw = dict(target=0, method="gausslegendre", n_steps=12)
    a = call("conductance", net, x, mask, ["act"], dictionaries={"act": loaded}, **kw)
    b = call("conductance", net, x, mask, ["act"], dictionaries={"act": ref}, **kw)
    c = call("conductance", net, x, mask, ["act"], dictionaries={"act": str(folder)}, **kw)  # a path works too
    for p, q, r in zip(a["act"], b["act"], c["act"]):
        assert torch.equal(p, q) and torch.equal(p, r)
    y = torch.randn(6, D)
    f = loaded.encode(y)
    if architecture == "topk":
        assert int((f != 0).sum(1).max()) <= 6
    pre = (y - b_dec) @ W_enc + b_enc
    if architecture == "standard":
        torch.testing.assert_close(f, torch.relu(pre))
    if architecture == "jumprelu":
        torch.testing.assert_close(f, pre * (pre > 0.07))


def test_saelens_folders_that_cannot_be_read_say_why(tmp_path):
    with pytest.raises(us.UnitscopeError, match="has no cfg.json"):
        (tmp_path / "empty").mkdir()
        Dictionary.from_saelens(tmp_path / "empty")
    with pytest.raises(us.UnitscopeError, match="architecture 'gated'"):
        Dictionary.from_saelens(saelens_folder(tmp_path / "g", "gated"))
    with pytest.raises(us.UnitscopeError, match="no threshold"):
        Dictionary.from_saelens(saelens_folder(tmp_path / "j", "jumprelu"))
    with pytest.raises(us.UnitscopeError, match="normalizes its inputs"):
        Dictionary.from_saelens(
            saelens_folder(tmp_path / "n", "standard", {"normalize_activations": "expected_average_only_in"})
        )
    with pytest.raises(us.UnitscopeError, match=r"W_enc .* is \[8, 24\], but cfg.json says d_in=8, d_sae=99"):
        Dictionary.from_saelens(saelens_folder(tmp_path / "s", "standard", {"d_sae": 99}))


def test_a_plain_state_dict_loads_from_a_dict_a_pt_file_and_safetensors(tmp_path):
    from safetensors.torch import save_file

    W_enc, b_enc, W_dec, b_dec = weights()
    state = {"W_enc": W_enc, "b_enc": b_enc, "W_dec": W_dec, "b_dec": b_dec}
    torch.save(state, tmp_path / "sae.pt")
    save_file(state, str(tmp_path / "sae.safetensors"))
    linear = {
        "encoder.weight": W_enc.T.contiguous(),
        "encoder.bias": b_enc,
        "decoder.weight": W_dec.T.contiguous(),
        "decoder.bias": b_dec,
    }
    y = torch.randn(3, 5, D)
    want = Dictionary.from_weights(W_enc, b_enc, W_dec, b_dec).split(y)
    for src in (state, tmp_path / "sae.pt", str(tmp_path / "sae.safetensors"), linear):
        got = Dictionary.from_state_dict(src).split(y)
        assert all(torch.equal(g, w) for g, w in zip(got, want))
    assert Dictionary.load(tmp_path / "sae.pt").n_features == FEATS
    torch.save({"W_enc": W_enc}, tmp_path / "half.pt")
    with pytest.raises(us.UnitscopeError, match="no W_dec.*half.pt"):
        Dictionary.from_state_dict(tmp_path / "half.pt")
    torch.save({"W_enc": W_enc, "W_dec": W_dec, "how": nn.Linear(2, 2)}, tmp_path / "pickled.pt")
    with pytest.raises(us.UnitscopeError, match="weights_only=True"):
        Dictionary.from_state_dict(tmp_path / "pickled.pt")


def test_any_module_with_encode_and_decode_is_a_dictionary(one_thread):
    class Mine(nn.Module):  # float64 weights on a float32 model: run in its own dtype, handed back in the layer's
        def __init__(self):
            super().__init__()
            self.enc, self.dec = nn.Linear(D, 10).double(), nn.Linear(10, D).double()

        def encode(self, y):
            return torch.relu(self.enc(y))

        def decode(self, f):
            return self.dec(f)

    net, (x, mask) = Tokens(), data()
    s = call("conductance", net, x, mask, ["act"], target=0, n_steps=32, dictionaries={"act": Mine()})
    feats, err = s["act"]
    assert feats.dtype == err.dtype == torch.float32 and feats.shape == (3, 5, 10)
    assert float(((s.per_unit("act").double().sum(1) - s.output_diff) / s.output_diff).abs().max()) < 1e-3


def test_a_conv_layers_channels_through_a_dictionary(one_thread):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 6, 3), nn.ReLU(), nn.Conv2d(6, 4, 3), nn.Flatten(), nn.LazyLinear(2))
    x = torch.randn(2, 3, 7, 7)
    net(x)
    g = torch.Generator().manual_seed(3)
    d = Dictionary.from_weights(torch.randn(6, 9, generator=g), None, torch.randn(9, 6, generator=g) / 3, None, dim=1)
    s = us.conductance(net, x, ["1"], target=1, n_steps=48, dictionaries={"1": d})
    feats, err = s["1"]
    assert feats.shape == (2, 9, 5, 5) and err.shape == (2, 6, 5, 5)
    per = s.per_unit("1")
    torch.testing.assert_close(per[:, :9], feats.sum((2, 3)))
    torch.testing.assert_close(per[:, 9], err.sum((1, 2, 3)))
    assert float(((per.double().sum(1) - s.output_diff) / s.output_diff).abs().max()) < 1e-3


# --- the views of Scores ------------------------------------------------------------------------------------------


def test_scores_views_rank_features_and_the_error_node(one_thread):
    net, (x, mask) = Tokens(), data()
    d = {"act": sae("relu")}
    s = call("conductance", net, x, mask, ["act"], target=0, n_steps=24, dictionaries=d)
    per, err = s.per_unit("act"), s.per_unit_error("act")
    t = s.top("act", k=4, by="abs")
    torch.testing.assert_close(t.values, per.gather(1, t.indices))
    torch.testing.assert_close(t.errors, err.gather(1, t.indices))
    assert s.per_unit("act", part=0).shape == (3, FEATS) and s.per_unit("act", part=1).shape == (3, D)
    frame = s.to_frame(per_unit=True)
    assert len(frame) == 3 * (FEATS + 1) and int(frame["unit"].max()) == FEATS
    assert "act" in s.summary() and s.plot("act", k=5).axes
    a = call("activation", net, x, mask, ["act"], dictionaries=d)
    feats, eps = a["act"]
    keep = mask.bool()
    want = torch.stack([eps[i][keep[i]].norm(dim=-1).mean() for i in range(3)])  # mean ‖ε‖ over the real tokens
    torch.testing.assert_close(a.per_unit("act")[:, FEATS], want)
    torch.testing.assert_close(a.per_unit("act")[:, :FEATS], torch.stack([feats[i][keep[i]].mean(0) for i in range(3)]))


# --- ablation -----------------------------------------------------------------------------------------------------


def test_ablating_a_feature_changes_the_reconstruction_and_keeps_the_error_node(one_thread):
    net, (x, mask) = Tokens(), data()
    d = sae("relu", b_dec_pre=True)
    units = [0, 5, FEATS]
    got = us.ablation_scores(
        net, x, "act", units=units, target=1, additional_forward_args=(mask,), dictionaries={"act": d}
    )
    assert got.shape == (3, 3)
    y = net.act(net.inp(x))
    f, e = d.split(y)
    base = net.out(((net.mid(y)) * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True))[:, 1]
    for j, u in enumerate(units):
        if u < FEATS:
            f2 = f.clone()
            f2[..., u] = 0
            y2 = d.decode(f2) + e
        else:
            y2 = d.decode(f)  # the error node ablated: the layer replaced by its reconstruction
        F2 = net.out(((net.mid(y2)) * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True))[:, 1]
        torch.testing.assert_close(got[:, j], (base - F2).detach(), rtol=1e-5, atol=1e-6)
    with us.ablate(net, {"act": [0, 5]}, dictionaries={"act": d}):  # the context manager: the same rewrite
        out = net(x, mask)
    f2 = f.clone()
    f2[..., [0, 5]] = 0
    y2 = d.decode(f2) + e
    want = net.out(((net.mid(y2)) * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True))
    torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-6)
    assert sum(len(m._forward_hooks) for m in net.modules()) == 0
    every = us.ablation_scores(net, x, "act", target=1, additional_forward_args=(mask,), dictionaries={"act": d})
    assert every.shape == (3, FEATS + 1)
    torch.testing.assert_close(every[:, units], got)


# --- large dictionaries -------------------------------------------------------------------------------------------


def test_a_16k_feature_dictionary_on_a_few_tokens_stays_within_memory(one_thread):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(16, 64), nn.Tanh(), nn.Linear(64, 2))
    x = torch.randn(2, 4, 16)
    n = 16384
    g = torch.Generator().manual_seed(0)
    d = Dictionary.from_weights(
        torch.randn(64, n, generator=g) / 8, -0.5 + torch.zeros(n), torch.randn(n, 64, generator=g) / 64, None
    )
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    s = us.conductance(
        net, x, ["1"], target=lambda out: out[:, -1, 0], n_steps=16, internal_batch_size=8, dictionaries={"1": d}
    )
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    feats, err = s["1"]
    assert feats.shape == (2, 4, n)
    per = s.per_unit("1")
    assert per.shape == (2, n + 1)
    assert float(((per.double().sum(1) - s.output_diff) / s.output_diff).abs().max()) < 1e-3
    # dense per chunk: 16 nodes × 4 tokens × 16k features × (value, gradient) × 4 bytes ≈ 8 MB per example
    assert grown_mb < 1024


# --- dataset scans ------------------------------------------------------------------------------------------------


def test_a_scan_keeps_per_feature_statistics_and_the_error_node(tmp_path, one_thread):
    net = Tokens()
    loader = [(data(n=4, seed=10 + b)[0], torch.tensor([0, 1, 2, 1])) for b in range(3)]
    d = sae("relu")
    mask = torch.ones(4, 5, dtype=torch.long)  # the scan's batches: all tokens real
    kw = dict(
        scores=["activation", "conductance"],
        target=0,
        path=us.PathConfig(n_steps=12, method="gausslegendre"),
        top_k=3,
        additional_forward_args=(mask,),
        dictionaries={"act": d},
    )
    r = us.scan(net, loader, ["act"], **kw)
    assert r.mean("act", score="conductance").shape == (FEATS + 1,)
    per = torch.cat(
        [
            call(
                "conductance",
                net,
                x,
                mask,
                ["act"],
                target=0,
                n_steps=12,
                method="gausslegendre",
                dictionaries={"act": d},
            ).per_unit("act")
            for x, _ in loader
        ]
    )
    torch.testing.assert_close(r.mean("act", score="conductance"), per.double().mean(0), rtol=1e-6, atol=1e-9)
    top = r.top("act", score="conductance")
    assert torch.equal(top.indices[:, 0], per.argmax(0))
    assert r.class_means("act", score="activation").shape == (3, FEATS + 1)
    # a checkpoint remembers the dictionary: another one's scan is refused, the same one resumes
    ck = tmp_path / "scan.pt"
    us.scan(net, loader, ["act"], stream=us.StreamConfig(checkpoint=ck), **kw)
    again = us.scan(net, loader, ["act"], stream=us.StreamConfig(checkpoint=ck), **kw)
    torch.testing.assert_close(again.mean("act", score="conductance"), r.mean("act", score="conductance"))
    other = dict(kw, dictionaries={"act": sae("topk:3")})
    with pytest.raises(us.UnitscopeError, match="dictionaries"):
        us.scan(net, loader, ["act"], stream=us.StreamConfig(checkpoint=ck), **other)


# --- the atlas ----------------------------------------------------------------------------------------------------


def test_the_atlas_has_a_card_per_feature_and_one_for_the_error_node(one_thread):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, D), nn.Tanh(), nn.Linear(D, 3))
    x, y = torch.randn(10, 6), torch.arange(10) % 3
    d = sae("relu", b_dec_pre=True)
    a = us.atlas(
        net,
        (x, y),
        layers=["1"],
        dictionaries={"1": d},
        top_k=2,
        path=us.PathConfig(n_steps=12, method="gausslegendre"),
        progress=False,
    )
    assert len(a.units) == FEATS + 1
    assert [c["error_node"] for c in a.units] == [False] * FEATS + [True]
    info = a.meta["dictionaries"]["1"]
    assert info["features"] == FEATS and info["error_node"] == FEATS
    s = us.conductance(
        net,
        x,
        ["1"],
        target=None,
        n_steps=12,
        method="gausslegendre",
        dictionaries={"1": d},
        path=us.PathConfig(gap_warning=None),
    )
    mean = s.per_unit("1").double().mean(0)
    assert info["error_node_share"] == pytest.approx(float(mean[-1] / mean.sum()), rel=1e-5)
    for card in (a.units[3], a.units[FEATS]):
        assert card["importance"]["conductance"] == pytest.approx(float(mean[card["unit"]]), rel=1e-4, abs=1e-7)
        shading = a.tensors["1/exemplar_attr"][card["row"]]
        for j, e in enumerate(card["exemplars"]):
            want = float(s.per_unit("1")[e["index"], card["unit"]])
            assert e["conductance"] == pytest.approx(want, rel=1e-4, abs=1e-6)
            assert float(shading[j].sum()) == pytest.approx(want, rel=1e-4, abs=1e-6)  # Σ_i Eq. 2 = Eq. 3
    shading = a.tensors["1/exemplar_attr"]
    assert shading.shape[0] == FEATS + 1 and shading.shape[-1] == 6
    with pytest.raises(us.UnitscopeError, match="no synthetic inputs for dictionary features"):
        us.atlas(
            net,
            (x, y),
            layers=["1"],
            dictionaries={"1": d},
            synthesis=us.SynthesisConfig(synthesize=True),
            progress=False,
        )


def test_a_dictionary_on_a_layers_input_reads_what_the_layer_before_outputs(one_thread):
    net, (x, mask) = Tokens(), data()
    d = sae("relu")
    kw = dict(
        target=0,
        method="gausslegendre",
        n_steps=12,
        path=us.PathConfig(gap_warning=None),
        additional_forward_args=(mask,),
    )
    on_output = us.conductance(net, x, ["act"], dictionaries={"act": d}, **kw)
    on_input = us.conductance(net, x, ["mid"], dictionaries={"mid": d}, attribute_to_layer_input=True, **kw)
    for a, b in zip(on_output["act"], on_input["mid"]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
