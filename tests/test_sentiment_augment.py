"""The negation augmentation (VADER-lexicon template phrases) and the oversampling of real negated sentences: the
rule, the lexicon's checksum, and that neither reaches the dev / test split or the negation filters' corpus."""

import hashlib

import pytest
import torch

from unitscope.core.errors import UnitscopeError
from unitscope.zoo import sentiment as zs
from unitscope.zoo import sentiment_augment as sa
from unitscope.zoo.sentiment import has_negation, movie_reviews, training_sentences

LEXICON_LINES = (
    "\n".join(
        [
            "bad\t-2.5\t0.67082\t[-3, -2, -4, -3, -2, -2, -3, -2, -2, -2]",
            "dull\t-1.7\t0.45826\t[-2, -2, -2, -1, -2, -2, -2, -1, -1, -2]",
            "great\t3.1\t0.7\t[2, 4, 4, 4, 3, 3, 3, 3, 2, 3]",
            "meh\t-0.3\t0.5\t[0, 0, -1, 0, 0, 0, -1, 0, 0, -1]",
            ":)\t2.0\t0.6\t[2, 2, 2, 2, 2, 2, 2, 2, 2, 2]",
        ]
    )
    + "\n"
)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("UNITSCOPE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_a_lexicon_with_another_checksum_is_refused(cache, tmp_path):
    fake = tmp_path / "vader_lexicon.txt"
    fake.write_text(LEXICON_LINES)
    with pytest.raises(UnitscopeError, match="checksum mismatch"):
        sa.lexicon_path(source=fake)
    assert not (cache / "data" / sa.LEXICON).exists()  # never kept


def test_the_rule_on_a_small_lexicon(monkeypatch, tmp_path):
    fake = tmp_path / "vader_lexicon.txt"
    fake.write_text(LEXICON_LINES)
    monkeypatch.setattr(sa, "lexicon_path", lambda source=None: fake)
    assert sa.lexicon() == {"bad": -2.5, "dull": -1.7, "great": 3.1}  # |valence| >= 1, words only
    p = sa.negation_phrases()
    # two phrases per word, the probes' word "bad" left out: plain rated v, negated rated v × N_SCALAR = v × −0.74
    assert len(p) == 4 and not any("bad" in s.split() for s in p.sentences)
    ratings = dict(zip(p.sentences, p.scores.tolist()))
    for s, r in ratings.items():
        word = s.split()[-1]
        v = {"dull": -1.7, "great": 3.1}[word]
        assert r == pytest.approx(v * sa.N_SCALAR if has_negation(s) else v, abs=1e-6)
    assert sum(has_negation(s) for s in p.sentences) == 2 and not any(s.startswith("this") for s in p.sentences)
    assert (p.labels == (p.scores > 0)).all()
    assert sa.negation_phrases().sentences == p.sentences  # the templates are drawn with a fixed seed


def test_every_template_is_negated_or_not_as_it_claims():
    for t in sa.PLAIN:
        assert not has_negation(t.format(w="dull")) and not t.startswith("this")
    for t in sa.NEGATED:
        assert has_negation(t.format(w="dull")) and not t.startswith("this")


# The real lexicon (from the user cache, or fetched with pip from vaderSentiment==3.3.2) and the real rated data.
def test_augmentation_only_in_training_never_in_dev_test_or_corpus():
    path = sa.lexicon_path()
    assert hashlib.sha256(path.read_bytes()).hexdigest() == sa.LEXICON_SHA256
    words = sa.lexicon()
    assert words["bad"] == -2.5 and words["good"] == 1.9 and len(words) == 5578  # measured on the real file
    aug = sa.negation_phrases()
    assert len(aug) == 2 * (5578 - 2)
    assert all(has_negation(s) for s in aug.sentences[1::2])  # (plain, negated) per word, in that order
    # the plain phrases hold no negation, but for the one lexicon word that is a negation itself ("no", −1.2)
    assert [s for s in aug.sentences[0::2] if has_negation(s)] == ["that is no"]
    probes = {"this is not good", "this is not bad"}
    assert not probes & set(aug.sentences) and not {"not good", "not bad", "isn't bad"} & set(aug.sentences)
    data = movie_reviews()
    r = zs.RECIPES["minilm-context-soft-vader"]
    sentences, labels, ratings = training_sentences(r, data)
    real, real_labels, _ = training_sentences(r, data, real_only=True)
    default, _, _ = training_sentences(zs.RECIPES["minilm-context-soft"], data)  # no augmentation
    assert real == default  # the in-context vectors are the default's (the same sentences averaged over)
    assert sentences[: len(real)] == real and sentences[len(real) :] == aug.sentences
    assert torch.equal(labels[len(real) :], aug.labels) and torch.equal(ratings[len(real) :], aug.scores)
    held_out = set(data.dev.sentences) | set(data.test.sentences) | set(data.all().sentences)
    assert not held_out & set(aug.sentences)  # no phrase is a dev / test / corpus sentence (the corpus is data.all())
    assert len(data.all()) == 10568  # the filters' corpus is still the movie reviews alone


def test_negated_real_sentences_oversampled():
    data = movie_reviews()
    base, base_labels, _ = training_sentences(zs.RECIPES["minilm-context-soft"], data)
    r = zs.RECIPES["minilm-context-soft-negx3"]
    sentences, labels, ratings = training_sentences(r, data)
    neg = [s for s in base if has_negation(s)]
    assert len(sentences) == len(base) + 2 * len(neg) and sentences[len(base) :] == neg * 2
    assert (labels == (ratings > 0)).all() and torch.equal(labels[: len(base)], base_labels)
    assert training_sentences(r, data, real_only=True)[0] == base
    assert not set(data.dev.sentences) & set(sentences[len(base) :])


def test_augmented_recipes_have_their_own_cache_keys():
    from unitscope.zoo.cache import recipe_key

    key = zs._cache_key("minilm-context-soft-vader")[1]
    assert key["augmentation"]["lexicon"] == sa.LEXICON_SHA256 and key["augmentation"]["n_scalar"] == -0.74
    assert "augmentation" not in zs._cache_key("minilm-context-soft")[1]
    assert recipe_key(key) != recipe_key(zs._cache_key("minilm-context-soft")[1])
    with pytest.raises(UnitscopeError, match="augmentation"):
        training_sentences(dict(zs.RECIPES["minilm-context-soft"], augment="back-translation"), movie_reviews())


def test_the_augmentation_is_stated_in_words():
    note = zs.augmentation_note("minilm-context-soft-vader")
    assert note.startswith("AUGMENTED with 11,152 template phrases") and "not rated by people" in note
    assert "never in dev / test / the corpus" in note
    assert "repeated 3× per epoch" in zs.augmentation_note("minilm-context-soft-negx3")
    assert zs.augmentation_note("minilm-context-soft") is None and zs.augmentation_note(zs.QUICK_RECIPE) is None


def test_the_default_recipe_is_augmented_and_says_so():
    # the default (chosen by dev accuracy and the probes' signs) trains on the augmentation phrases, so its study
    # headline must state it
    assert zs.RECIPES[zs.DEFAULT_RECIPE].get("augment") == "vader-negation"
    assert zs.augmentation_note(zs.DEFAULT_RECIPE).startswith("AUGMENTED")
    assert not zs.RECIPES[zs.QUICK_RECIPE].get("augment")  # --quick: no lexicon, no MiniLM pass
