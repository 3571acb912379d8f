"""Models nobody here wrote, built from configs with random weights: a Llama-style causal LM from ``transformers``
(saved with ``save_pretrained``, loaded through ``hf:``) and a timm ViT. Completeness on layers that are cuts,
Σ_i Eq. 2 = Eq. 3, the unit conventions (neurons over real tokens, heads), padding left out, ``unitscope scan
hf:FOLDER sentences.txt`` over batches of different lengths, and the model untouched."""

import json

import pytest
import torch
import torch.nn as nn

import unitscope as us
from unitscope.core.units import UnitSpec

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

WORDS = ["[PAD]", "[UNK]", "a", "fine", "film", ".", "not", "good", "bad", "movie"]
ACT = "model.layers.1.mlp.act_fn"  # Llama's SiLU of the gate: [N, T, intermediate_size]


def _tokenizer():
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]")


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    from unitscope.loading import load_model

    folder = tmp_path_factory.mktemp("llama") / "m"
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        vocab_size=len(WORDS),
        max_position_embeddings=32,
        pad_token_id=0,
        bos_token_id=2,
        eos_token_id=5,
    )
    transformers.LlamaForCausalLM(cfg).save_pretrained(folder)
    _tokenizer().save_pretrained(folder)
    loaded = load_model(f"hf:{folder}")
    return str(folder), loaded


def _snapshot(model):
    return (
        {k: v.detach().clone() for k, v in model.state_dict().items()},
        model.training,
        [p.requires_grad for p in model.parameters()],
        [p.grad for p in model.parameters()],
        sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules()),
    )


def _assert_untouched(model, before):
    after = _snapshot(model)
    assert all(torch.equal(before[0][k], after[0][k]) for k in before[0])
    assert before[1:3] == after[1:3] and all(g is None for g in after[3]) and after[4] == before[4] == 0


def test_llama_from_hf_folder_complete_on_cuts_eq2_sums_to_eq3_and_untouched(llama):
    _, loaded = llama
    model, emb = loaded.model, loaded.extra["embedding"]
    assert emb == "model.embed_tokens"
    enc = loaded.extra["tokenizer"](["a fine film .", "not good"], padding=True, return_tensors="pt")
    ids, mask = enc["input_ids"], enc["attention_mask"]
    assert mask.tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]]
    before = _snapshot(model)
    kw = dict(embedding=emb, additional_forward_args=(mask,))
    cuts = ["model.layers.0", "model.layers.1", "model.norm"]  # the residual stream after each block, its norm
    # the adaptive rule (the default); the fixed rules on these layers: tests/test_path_tangents.py
    s = us.conductance(model, ids, cuts + [ACT], path=us.PathConfig(gap_warning=None), n_steps=128, **kw)
    for name in cuts:
        assert float(s.relative_delta(name).max()) < 1e-2, (name, s.relative_delta(name))
    # units: the 32 MLP neurons, summed over the real tokens only (example 1 has two padding tokens)
    assert s.unit_spec(ACT).layout == "tokens"
    per = s.per_unit(ACT)
    assert per.shape == (2, 32)
    torch.testing.assert_close(per[1], s[ACT][1, :2].sum(0))
    torch.testing.assert_close(per[0], s[ACT][0].sum(0))
    a = us.activation(model, ids, [ACT], additional_forward_args=(mask,))
    torch.testing.assert_close(a.per_unit(ACT)[1], a[ACT][1, :2].mean(0))  # activations: the mean over real tokens
    heads = us.activation(model, ids, ["model.layers.1.self_attn.o_proj"], additional_forward_args=(mask,))
    assert heads.per_unit("model.layers.1.self_attn.o_proj", spec=UnitSpec.heads(2)).shape == (2, 2)
    # Σ_i Eq. 2 = Eq. 3: per-input conductance through a neuron, summed over the embedding's outputs
    units = [0, 7, 31]
    per_input = us.neuron_conductance(model, ids, layer=ACT, units=units, method="gausslegendre", n_steps=128, **kw)
    assert per_input.shape == (2, 3, 4, 16)
    torch.testing.assert_close(per_input.sum((2, 3)), per[:, units], rtol=2e-2, atol=2e-4)
    _assert_untouched(model, before)


def test_neuron_conductance_leaves_padding_out_through_the_attention_mask():
    class MeanPool(nn.Module):
        """Token ids → embedding → a GELU layer [N, T, 32] → the mean over *all* tokens (the mask ignored, so the
        padding tokens do move the output) → 2 logits."""

        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.emb, self.fc, self.act, self.out = nn.Embedding(10, 8), nn.Linear(8, 32), nn.GELU(), nn.Linear(32, 2)

        def forward(self, ids):
            return self.out(self.act(self.fc(self.emb(ids))).mean(1))

    model = MeanPool()
    ids = torch.tensor([[2, 3, 4, 5], [6, 7, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    layer, units = "act", [1, 9, 30]
    kw = dict(embedding="emb", target=1, method="gausslegendre", n_steps=24)
    kept = us.neuron_conductance(model, ids, layer=layer, units=units, mask=mask, **kw)
    everything = us.neuron_conductance(model, ids, layer=layer, units=units, **kw)
    s = us.conductance(model, ids, [layer], path=us.PathConfig(gap_warning=None), mask=mask, **kw)
    raw = s[layer]  # [N, T, 32]
    torch.testing.assert_close(kept.sum((2, 3)), s.per_unit(layer)[:, units], rtol=1e-3, atol=1e-5)
    torch.testing.assert_close(kept.sum((2, 3))[1], raw[1, :2, units].sum(0), rtol=1e-3, atol=1e-5)
    torch.testing.assert_close(everything.sum((2, 3))[1], raw[1, :, units].sum(0), rtol=1e-3, atol=1e-5)
    share = raw[1, 2:, units].abs().sum() / raw[1, :, units].abs().sum()
    print(f"padding tokens' share of the units' conductance in example 1: {float(share):.3f}")
    assert share > 0.05  # the padding tokens matter in this model ...
    gone = (kept[1] - everything[1]).abs().sum() / everything[1].abs().sum()
    assert gone > 0.05  # ... and their share is gone
    torch.testing.assert_close(kept[0], everything[0])  # nothing padded in example 0
    # paired units too
    pair = us.neuron_conductance(model, ids, layer=layer, units=[9, 30], mask=mask, paired=True, **kw)
    torch.testing.assert_close(pair, torch.stack([kept[0, 1], kept[1, 2]]), rtol=1e-4, atol=1e-6)


def test_scan_hf_folder_sentences_over_batches_of_different_lengths(llama, tmp_path):
    from unitscope.cli import main as cli_main
    from unitscope.data.scan import ScanResult

    folder, loaded = llama
    sentences = ["a fine film .", "bad", "not a good movie at all .", "a film", "good good good", "not bad ."]
    (tmp_path / "s.txt").write_text("\n".join(sentences) + "\n")
    out = tmp_path / "out"
    main = getattr(cli_main, "main", cli_main)
    rc = main(
        [
            "scan",
            f"hf:{folder}",
            str(tmp_path / "s.txt"),
            "--layers",
            ACT,
            "model.layers.1",
            "--batch-size",
            "2",
            "--n-steps",
            "8",
            "--top-k",
            "2",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    summary = json.loads((out / "scan.json").read_text())
    assert summary["examples"] == 6 and summary["layers"] == [ACT, "model.layers.1"]
    r = ScanResult.load(out / "scan.pt")
    assert r.mean(ACT, score="activation").shape == (32,)
    assert r.mean("model.layers.1", score="conductance").shape == (16,)
    # each sentence alone (no padding): the scan's per-unit activation is the mean over its real tokens
    tok = loaded.extra["tokenizer"]
    alone = []
    for text in sentences:
        ids = tok([text], return_tensors="pt")["input_ids"]
        alone.append(us.activation(loaded.model, ids, [ACT])[ACT][0].mean(0))
    torch.testing.assert_close(
        r.mean(ACT, score="activation").float(), torch.stack(alone).mean(0), rtol=1e-4, atol=1e-6
    )
    top = r.top(ACT, score="activation", unit=3)
    assert top.indices.shape == (2,) and set(top.indices.tolist()) <= set(range(6))
    best = int(r.mean(ACT, score="activation").argmax())
    md = (out / "top_sentences.md").read_text()
    first = r.top(ACT, score="activation", unit=best).indices[0]
    assert (
        f"## unit {best} " in md
        and f"1. ({float(r.top(ACT, score='activation', unit=best).values[0]):.3g}) {sentences[int(first)]}" in md
    )
    assert "top_sentences.md" in summary["files"]


def _vit(fused: bool = False):
    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    model = VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, num_classes=3).eval()
    for block in model.blocks:  # fixed rules need forward-mode autodiff, which the fused attention kernel lacks
        block.attn.fused_attn = fused
    return model


def test_timm_vit_complete_on_cuts_eq2_sums_to_eq3_units_and_untouched():
    model = _vit()
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    before = _snapshot(model)
    act, attn = "blocks.1.mlp.act", "blocks.0.attn"
    kw = dict(method="gausslegendre", n_steps=32, target=1)
    s = us.conductance(
        model, x, ["blocks.0", "blocks.1", "norm", act, attn], path=us.PathConfig(gap_warning=None), **kw
    )
    for name in ("blocks.0", "blocks.1", "norm"):  # the residual stream (17 tokens: [CLS] + 16 patches)
        assert float(s.relative_delta(name).max()) < 1e-2, (name, s.relative_delta(name))
    assert s[act].shape == (2, 17, 128) and s.unit_spec(act).layout == "tokens"
    torch.testing.assert_close(s.per_unit(act), s[act].sum(1))  # neurons, summed over tokens
    heads = s.per_unit(attn, spec=UnitSpec.heads(2))  # heads: [N, 2], each the sum over its 16 dims and the tokens
    torch.testing.assert_close(heads, s[attn].view(2, 17, 2, 16).sum((1, 3)))
    a = us.activation(model, x, [act])
    torch.testing.assert_close(a.per_unit(act), a[act].mean(1))
    units = [0, 17, 127]
    per_input = us.neuron_conductance(model, x, layer=act, units=units, **kw)  # [N, U, 3, 32, 32]
    assert per_input.shape == (2, 3, 3, 32, 32)
    torch.testing.assert_close(per_input.sum((2, 3, 4)), s.per_unit(act)[:, units], rtol=1e-3, atol=1e-5)
    _assert_untouched(model, before)


def test_timm_vit_with_its_fused_attention_still_scores_with_the_adaptive_rule():
    model = _vit(fused=True)
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    s = us.conductance(
        model, x, ["blocks.1"], n_steps=64, target=0, path=us.PathConfig(gap_warning=None)
    )  # values only: no forward AD
    assert float(s.relative_delta("blocks.1").max()) < 1e-2
