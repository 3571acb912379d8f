"""The sentiment recipes' training aids (word / embedding dropout on the input, EMA and last-epochs weight
averaging, label smoothing) and that adding recipes leaves the old recipes' cache keys as they were."""

import pytest
import torch

from unitscope.core.errors import UnitscopeError
from unitscope.zoo import sentiment as zs
from unitscope.zoo.cache import entry_path
from unitscope.zoo.sentiment_regularizers import LastEpochs, WeightAverage, input_dropout

# the recipes' cache keys (with the training's thread count, 1, in them since issue 32: the entries trained before
# that, on unfixed thread counts, are not found again); adding recipes must leave them as they are
OLD_KEYS = {
    "scratch-movies": "755c959607d5a1cf",
    "scratch-all": "d90910af2eee6e93",
    "minilm-movies": "d87587af98a91015",
    "minilm-all": "9d4bede721b7cafd",
    "minilm-all-static": "5e9ed138269d843f",
    "minilm-all-movies2x": "00ca329ee032394a",
    "minilm-token-all": "7953e3706719ae38",
    "minilm-context-all": "0c66fcdd02d0dbd1",
    "minilm-context-soft": "7dcdbe376b5063ed",
    "minilm-context-soft-long": "5a1d81ea790b491f",
    "minilm-context-soft-balanced": "bc3754799dbaf531",
    "minilm-context-soft2": "d3d20ae78b4648f5",
    "minilm-context-soft4": "7eec2655dbbd52e8",
    "minilm-context-soft-negx3": "ad96dd9d69ccd06b",
    "minilm-context-soft-vader": "393fb508cb1e7565",
    "minilm-context-vader": "d235826a50a54e7e",
    "quick": "95a96fba9e8e5a69",
}
KNOWN = {
    "domains",
    "tokens",
    "vectors",
    "freeze",
    "max_norm",
    "epochs",
    "patience",
    "lr",
    "min_abs",
    "movie_copies",
    "movie_min_abs",
    "balanced",
    "lr_decay",
    "soft",
    "negation_copies",
    "augment",
    "augment_min_abs",
    "ema",
    "average_last",
    "word_dropout",
    "embed_dropout",
    "label_smoothing",
}


def key(name: str, threads: int = 1) -> str:
    return entry_path("sentiment-cnn", zs._cache_key(name)[1], threads=threads).name[len("sentiment-cnn-") : -3]


def test_old_recipes_keep_their_cache_keys(tmp_path, monkeypatch):
    monkeypatch.setenv("UNITSCOPE_CACHE", str(tmp_path))
    assert {n: key(n) for n in OLD_KEYS} == OLD_KEYS
    assert key("quick", threads=2) != OLD_KEYS["quick"]  # the thread count is part of the key
    new = set(zs.RECIPES) - set(OLD_KEYS)
    assert {"minilm-context-soft-vader-ema", "minilm-context-soft-vader-wdrop"} <= new
    assert not {key(n) for n in new} & set(OLD_KEYS.values())
    for name, r in zs.RECIPES.items():  # a misspelt option would be silently ignored by the training
        assert set(r) <= KNOWN, (name, set(r) - KNOWN)


def test_word_dropout_drops_whole_tokens_at_its_rate():
    g = torch.Generator().manual_seed(0)
    emb = torch.randn(400, 50, 8, generator=g)
    emb[:, :6] = 0  # padding
    out = input_dropout(emb, word=0.25, g=torch.Generator().manual_seed(1))
    dropped = (out == 0).all(-1)
    kept = ~dropped
    assert torch.equal(out[kept], emb[kept])  # no rescaling: a kept token is unchanged
    assert bool(dropped[:, :6].all())  # padding stays zero
    assert float(dropped[:, 6:].float().mean()) == pytest.approx(0.25, abs=0.01)
    again = input_dropout(emb, word=0.25, g=torch.Generator().manual_seed(1))
    assert torch.equal(out, again)  # drawn from the generator given, not from the global RNG


def test_embedding_dropout_is_inverted_dropout_on_the_entries():
    emb = torch.ones(200, 30, 50)
    out = input_dropout(emb, embed=0.2, g=torch.Generator().manual_seed(0))
    assert set(out.unique().tolist()) == {0.0, 1.25}
    assert float((out == 0).float().mean()) == pytest.approx(0.2, abs=0.01)
    assert float(out.mean()) == pytest.approx(1.0, abs=0.02)  # expectation kept
    with pytest.raises(UnitscopeError, match="probability"):
        input_dropout(emb, word=1.0, g=torch.Generator())


def test_ema_of_the_weights_is_the_exponential_average_of_each_step():
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 2)
    avg = WeightAverage(net, ema=0.9)
    assert avg.averaging and avg.model() is not net
    expected = None
    for _ in range(5):
        with torch.no_grad():
            net.weight.add_(torch.randn_like(net.weight))
        avg.step()
        w = net.weight.detach().clone()
        expected = w if expected is None else 0.9 * expected + 0.1 * w  # the first step copies the weights
    assert torch.allclose(avg.model().weight, expected, atol=1e-6)
    assert not torch.allclose(net.weight, expected)  # the trained model is not replaced


def test_last_epochs_average_and_plain_training():
    net = torch.nn.Linear(2, 1, bias=False)
    avg = WeightAverage(net, last_epochs=2)
    seen = []
    for w in (1.0, 3.0, 7.0):
        with torch.no_grad():
            net.weight.fill_(w)
        avg.step()
        avg.epoch()
        seen.append(avg.model().weight.detach()[0, 0].item())
    assert seen == [1.0, 2.0, 5.0]  # the mean of the last (up to) two epochs
    plain = WeightAverage(net)
    assert not plain.averaging and plain.model() is net
    with pytest.raises(UnitscopeError, match="one way"):
        WeightAverage(net, ema=0.9, last_epochs=2)
    with pytest.raises(UnitscopeError, match="at least 1"):
        LastEpochs(0)


@pytest.mark.parametrize(
    "extra", [dict(ema=0.99, word_dropout=0.1, embed_dropout=0.1), dict(average_last=2, soft=1.0, label_smoothing=0.1)]
)
def test_training_with_the_aids_keeps_what_dev_saw(monkeypatch, extra):
    """A short training on 400 of the real sentences: the state kept is the averaged one whose dev accuracy is
    reported, and the trained weights' own dev accuracy is recorded beside it."""
    real = zs.training_sentences

    def few(r, data, real_only=False):
        s, y, rating = real(r, data, real_only=real_only)
        return s[:400], y[:400], rating[:400]

    monkeypatch.setattr(zs, "training_sentences", few)
    r = dict(zs.RECIPES["quick"], epochs=2, **extra)
    state, info = zs._train(r, "test", 4, 50, 2, 0.0, 0, False)
    assert len(info["dev_history"]) == len(info["dev_history_raw"]) == 2
    model = zs.SentimentCNN(len(zs.WordPieces()), maps=4)
    model.load_state_dict(state)
    data = zs.movie_reviews()
    assert zs._accuracy(model.eval(), zs.WordPieces(), data.dev) == pytest.approx(info["dev_accuracy"])
    assert info["dev_accuracy"] == max(info["dev_history"])
