"""The zoo's MiniLM SAE trained with small settings from an empty model cache, shared by the SAE and features-study
tests: ``from sae_fixtures import sae_cache, small_sae``.

The cache is a temporary folder (``UNITSCOPE_CACHE`` points there while the fixtures and the tests that use them run)
that holds links to what the SAE needs and is not under test: the rated-sentence files and the MiniLM sentiment head's
entries of the user cache (fetched / trained there once, as the other zoo tests do). No SAE entry is linked: the SAE
trains here. Module-scoped (the variable is put back after each module, so no other test sees this cache) and
memoized: the first module that asks trains it (a few seconds), the second one gets the same objects.
"""

import os

import pytest

#: small settings: 160 sentences (about 4,000 tokens), 60 steps of 256 tokens; held-out metrics on 64 test sentences
SMALL = dict(n_sentences=160, steps=60, batch_size=256, n_held_out=64)
_MEMO = {}


def _fresh_cache(root):
    from unitscope.zoo.cache import cache_dir
    from unitscope.zoo.minilm import minilm_sentiment
    from unitscope.zoo.rated_sentences import DOMAINS, movie_reviews, rated_sentences

    movie_reviews()
    for domain in DOMAINS:
        rated_sentences(domain)
    _MEMO["lm"] = minilm_sentiment(progress=False)  # trained into the user cache once, if it is not there yet
    user = cache_dir()
    os.symlink(user / "data", root / "data", target_is_directory=True)
    for entry in user.glob("minilm-sentiment-*.pt"):
        os.symlink(entry, root / entry.name)
    return root


@pytest.fixture(scope="module")
def sae_cache(tmp_path_factory):
    """A model cache with no SAE in it (a session's first use) and UNITSCOPE_CACHE pointing at it."""
    if "root" not in _MEMO:
        _MEMO["root"] = _fresh_cache(tmp_path_factory.mktemp("unitscope-cache"))
    before = os.environ.get("UNITSCOPE_CACHE")
    os.environ["UNITSCOPE_CACHE"] = str(_MEMO["root"])
    try:
        yield _MEMO["root"]
    finally:
        if before is None:
            os.environ.pop("UNITSCOPE_CACHE", None)
        else:
            os.environ["UNITSCOPE_CACHE"] = before


@pytest.fixture(scope="module")
def small_sae(sae_cache):
    """``(first, second)``: the small SAE as trained into the empty cache, and as read back from it."""
    from unitscope.zoo.minilm_sae import minilm_sae

    if "sae" not in _MEMO:
        _MEMO["sae"] = (minilm_sae(**SMALL, progress=False), minilm_sae(**SMALL, progress=False))
    return _MEMO["sae"]


@pytest.fixture(scope="module")
def lm(sae_cache):
    """The zoo's MiniLM sentiment model (its head from the user cache, linked)."""
    from unitscope.zoo.minilm import minilm_sentiment

    if "lm" not in _MEMO:
        _MEMO["lm"] = minilm_sentiment(progress=False)
    return _MEMO["lm"]
