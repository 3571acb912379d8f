"""Template augmentation of negation for the sentiment CNN: short phrases made from the human-rated word valences of
the VADER lexicon (Hutto & Gilbert 2014), labelled by a stated rule. **Augmentation, not data**: the phrases are
written by a rule, not rated by people; they are only ever added to the training sentences (never to the dev or
test split, nor to the corpus whose sentences the negation filters are ranked on).

The lexicon is ``vaderSentiment/vader_lexicon.txt`` of the same ``vaderSentiment==3.3.2`` source distribution as
the rated sentences (:mod:`unitscope.zoo.rated_sentences`; fetched once with pip, SHA-256-checked, kept in the user
cache): one line per token, ``token<TAB>mean valence<TAB>sd<TAB>[ten ratings]``, the mean of ten people's ratings
−4 … +4. Only lowercase alphabetic words with ``|valence| ≥ min_abs`` are used.

The rule: for each word ``w`` with valence ``v``, one plain phrase rated ``v`` and one negated phrase rated
``v × N_SCALAR`` — VADER's own negation constant (``N_SCALAR = -0.74`` in ``vaderSentiment.py``: a negation flips a
word's valence and damps it). The templates are drawn per word with a fixed seed from :data:`PLAIN` and
:data:`NEGATED`; none starts with "this", and the probes' words (``exclude``, default "good" and "bad") get no
phrase, so neither probe ("this is not good", "this is not bad") nor its negated word is among the phrases.

>>> plain, negated = phrases_for("dull", -1.7, seed=0)
>>> negated[0].split()[-1], round(negated[1], 3), plain[1]
('dull', 1.258, -1.7)
>>> is_word("dull"), is_word(":)"), is_word("o_o")
(True, False, False)
"""

from __future__ import annotations

import random
import re
from pathlib import Path

import numpy as np
import torch

from ..core.errors import UnitscopeError
from .rated_sentences import PACKAGE, ReviewSplit, verified_file
from .cache import cache_dir

__all__ = [
    "LEXICON",
    "LEXICON_SHA256",
    "N_SCALAR",
    "PLAIN",
    "NEGATED",
    "lexicon_path",
    "lexicon",
    "phrases_for",
    "negation_phrases",
    "is_word",
]

LEXICON = "vader_lexicon.txt"
LEXICON_SHA256 = "1ec9c6e9ee19aade328f8beb393a6afa71a5bb3acf7d3cc22d4ef568df374bf5"
N_SCALAR = -0.74  # vaderSentiment.py's N_SCALAR: a negated word's valence is its valence × this
PLAIN = ("{w}", "is {w}", "it is {w}", "it's {w}", "was {w}", "that is {w}", "so {w}", "really {w}")
NEGATED = (
    "not {w}",
    "is not {w}",
    "isn't {w}",
    "it is not {w}",
    "it's not {w}",
    "was not {w}",
    "wasn't {w}",
    "that is not {w}",
    "not so {w}",
    "not really {w}",
)
_WORD = re.compile(r"^[a-z]+$")


def is_word(token: str) -> bool:
    """A lowercase alphabetic word (the lexicon's emoticons and slang with punctuation are left out)."""
    return bool(_WORD.match(token))


def lexicon_path(*, source=None) -> Path:
    """The verified ``vader_lexicon.txt`` in the user cache (``cache_dir()/data``), fetched with pip from
    ``vaderSentiment==3.3.2`` (or taken from ``source``: the sdist or the text file) on first use; a file whose
    SHA-256 differs is an error, never silently used."""
    path = cache_dir() / "data" / LEXICON
    return verified_file(
        LEXICON,
        LEXICON_SHA256,
        source=source,
        what=f"not the lexicon of {PACKAGE}",
        hint=f"delete {path} and call again to download it anew",
    )


def lexicon(*, min_abs: float = 1.0, source=None) -> dict[str, float]:
    """word → mean human valence (−4 … 4) for the lexicon's alphabetic words with ``|valence| ≥ min_abs``."""
    out = {}
    for i, line in enumerate(lexicon_path(source=source).read_text(encoding="utf-8").splitlines(), start=1):
        parts = line.split("\t")
        if len(parts) < 2:
            raise UnitscopeError(f"line {i} of {LEXICON} is not `token<TAB>valence<TAB>…`", line=line[:80])
        if is_word(parts[0]) and abs(float(parts[1])) >= min_abs:
            out[parts[0]] = float(parts[1])
    return out


def phrases_for(word: str, valence: float, *, seed: int = 0):
    """``((plain phrase, valence), (negated phrase, valence × N_SCALAR))``, the templates drawn by ``seed`` and
    the word."""
    rng = random.Random(f"{seed}:{word}")
    return ((rng.choice(PLAIN).format(w=word), valence), (rng.choice(NEGATED).format(w=word), valence * N_SCALAR))


def negation_phrases(*, min_abs: float = 1.0, exclude=("good", "bad"), seed: int = 0, source=None) -> ReviewSplit:
    """The augmentation phrases (two per lexicon word, see the module's rule), labelled 1 when their rating is
    positive; ``scores`` are the rule's ratings. Words in ``exclude`` get none."""
    sentences, scores = [], []
    for word, v in sorted(lexicon(min_abs=min_abs, source=source).items()):
        if word in exclude:
            continue
        for s, r in phrases_for(word, v, seed=seed):
            sentences.append(s)
            scores.append(r)
    scores = np.asarray(scores, dtype=np.float32)
    return ReviewSplit(sentences, torch.tensor((scores > 0).astype(np.int64)), torch.from_numpy(scores))
