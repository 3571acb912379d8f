"""The sentiment CNN of the conductance paper (Kim 2014) and its tokens: the word tokenizer and vocabulary, the
encoding with zero padding, the model (embeddings in, the 256 max-pooled ``filters``), a trained model's wrapper.
How it is trained: :mod:`unitscope.zoo.sentiment`.

>>> tokenize("It isn't bad -- it's NOT good, either.")
['it', 'is', "n't", 'bad', '-', '-', 'it', "'s", 'not', 'good', ',', 'either', '.']
>>> v = Vocab.build([["not", "good"], ["not", "bad"]], min_count=2)
>>> v.itos, v.encode(["not", "awful"])
(['<pad>', '<unk>', 'not'], [2, 1])
>>> import torch
>>> model = SentimentCNN(vocab_size=len(v))
>>> ids, emb = encode(["not good", "not bad"], v, model)
>>> ids.shape, emb.shape, model(emb).shape, model.filters(emb).shape
(torch.Size([2, 14]), torch.Size([2, 14, 50]), torch.Size([2, 2]), torch.Size([2, 256]))

The model takes **embeddings** (``model(model.embed(ids))``), so attributions can start at the embedding
layer's output with a zero-embedding baseline; the 256 max-pooled filters are one layer, ``"filters"``.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

import torch
import torch.nn as nn

from ..core.errors import UnitscopeError
from .minilm_vectors import NEGATIONS
from .rated_sentences import ReviewSplit

__all__ = [
    "tokenize",
    "has_negation",
    "Vocab",
    "encode",
    "Filters",
    "SentimentCNN",
    "TrainedSentiment",
    "PAD",
    "UNK",
    "MIN_PAD",
]

PAD, UNK = "<pad>", "<unk>"
MIN_PAD = 6  # zero embeddings on each side: ≥ the widest window, so extra padding never changes the output

_QUOTES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u201c": '"', "\u201d": '"', "\u2013": "-", "\u2014": "-"})
_TOKEN = re.compile(r"\w+(?=n't\b)|n't\b|'(?:s|re|ve|ll|d|m)\b|\w+(?:-\w+)*|''|[^\w\s]")


# ------------------------------------------------------------------------------------ tokens, vocab --
def tokenize(text: str) -> list[str]:
    """Lowercased words and punctuation; ``n't`` and clitics (``'s``, ``'re`` …) split off, so negations
    (``not``, ``n't``, ``no``, ``never``) are tokens of their own; ``''`` is a double quote."""
    tokens = _TOKEN.findall(text.translate(_QUOTES).lower())
    return ['"' if t == "''" else t for t in tokens]


def has_negation(sentence: str) -> bool:
    """Whether the sentence holds not / n't / no / never (as words: :func:`tokenize`), whatever the model's
    tokens — the definition behind the corpus base rate and the negation share of a filter's top sentences."""
    return any(w in NEGATIONS for w in tokenize(sentence))


class Vocab:
    """Token ↔ id over the word tokens of :func:`tokenize`. ``<pad>`` is 0 (its embedding is the zero vector),
    ``<unk>`` is 1."""

    name = "words"

    def __init__(self, itos: list[str]):
        if itos[:2] != [PAD, UNK]:
            raise UnitscopeError("a vocabulary starts with <pad>, <unk>", first=itos[:2])
        self.itos = list(itos)
        self.stoi = {t: i for i, t in enumerate(self.itos)}

    @classmethod
    def build(cls, token_lists, min_count: int = 2) -> "Vocab":
        """Tokens seen at least ``min_count`` times, most frequent first (ties alphabetical)."""
        counts = Counter(t for tokens in token_lists for t in tokens)
        words = sorted((t for t, c in counts.items() if c >= min_count), key=lambda t: (-counts[t], t))
        return cls([PAD, UNK] + words)

    @staticmethod
    def tokenize(text: str) -> list[str]:
        return tokenize(text)

    def encode(self, tokens) -> list[int]:
        return [self.stoi.get(t, 1) for t in tokens]

    def __len__(self):
        return len(self.itos)

    def __contains__(self, token):
        return token in self.stoi


def encode(sentences, vocab, model: "SentimentCNN | None" = None, *, min_pad: int = MIN_PAD):
    """``(ids [N, T], embeddings [N, T, dim] or None)``: each sentence tokenized by ``vocab`` (:class:`Vocab` or
    :class:`WordPieces`), ``min_pad`` pad tokens on each side, then right-padded to the longest. Pad embeddings
    are 0 (the attribution baseline)."""
    if isinstance(sentences, str):
        sentences = [sentences]
    rows = [[0] * min_pad + vocab.encode(vocab.tokenize(s)) + [0] * min_pad for s in sentences]
    return _pad(rows), (None if model is None else _embed(model, rows))


def _pad(rows) -> torch.Tensor:
    ids = torch.zeros(len(rows), max(len(r) for r in rows), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
    return ids


def _embed(model, rows):
    with torch.no_grad():
        return model.embed(_pad(rows))


# ------------------------------------------------------------------------------------------- model --
class Filters(nn.Module):
    """Convolutions over time (one per window size, ``maps`` feature maps each), ReLU, 1-max pooling over time,
    concatenated: ``[N, T, dim]`` → ``[N, len(windows) · maps]`` (window 3 first)."""

    def __init__(self, dim: int = 50, windows=(3, 4, 5, 6), maps: int = 64):
        super().__init__()
        self.windows, self.maps = tuple(windows), maps
        self.convs = nn.ModuleDict({f"w{w}": nn.Conv1d(dim, maps, w) for w in self.windows})

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        x = emb.transpose(1, 2)
        return torch.cat([torch.relu(conv(x)).amax(2) for conv in self.convs.values()], 1)


class SentimentCNN(nn.Module):
    """Kim (2014): 50-dim embeddings; windows 3, 4, 5, 6 × 64 maps, ReLU, max over time (``filters``, 256);
    dropout; ``fc`` (10) + ``relu_fc``; ``out`` (2 logits: negative, positive).

    ``forward(emb)`` takes embeddings ``[N, T, 50]``; ``embed(ids)`` makes them from token ids.
    """

    def __init__(
        self,
        vocab_size: int,
        dim: int = 50,
        windows=(3, 4, 5, 6),
        maps: int = 64,
        hidden: int = 10,
        dropout: float = 0.5,
    ):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, dim, padding_idx=0)
        self.filters = Filters(dim, windows, maps)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(len(windows) * maps, hidden)
        self.relu_fc = nn.ReLU()
        self.out = nn.Linear(hidden, 2)

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.embedding(ids)

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        if emb.dim() != 3 or emb.shape[-1] != self.embedding.embedding_dim:
            raise UnitscopeError(
                "SentimentCNN takes embeddings [N, T, dim]; use model.embed(ids) on token ids",
                shape=tuple(emb.shape),
                dim=self.embedding.embedding_dim,
            )
        return self.out(self.relu_fc(self.fc(self.dropout(self.filters(emb)))))


@dataclass
class TrainedSentiment:
    model: SentimentCNN
    vocab: object  # Vocab (word tokens) or WordPieces (MiniLM's WordPiece tokens)
    info: dict  # test/dev accuracy, best epoch, training time, the recipe's numbers
    cached: bool  # loaded from the user cache (no training this time)

    @property
    def min_pad(self) -> int:
        """Zero embeddings on each side of an encoded sentence (token ``t`` is at position ``min_pad + t``)."""
        return MIN_PAD

    @property
    def test_accuracy(self) -> float:
        return self.info["test_accuracy"]

    @property
    def dev_accuracy(self) -> float:
        return self.info["dev_accuracy"]

    def tokens(self, sentence: str) -> list[str]:
        """The model's tokens of ``sentence`` (position ``t`` is ``MIN_PAD + t`` in the encoded ids)."""
        return self.vocab.tokenize(sentence)

    def encode(self, sentences):
        """``(ids, embeddings)`` for ``sentences`` (see :func:`encode`)."""
        return encode(sentences, self.vocab, self.model)

    def predict(self, sentences) -> torch.Tensor:
        """Predicted labels (1 positive)."""
        return _predict(self.model, self.vocab, sentences)

    def log_odds(self, sentences) -> torch.Tensor:
        """``logit(positive) − logit(negative)`` per sentence, ``[N]``."""
        _, emb = self.encode(sentences)
        was = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                out = self.model(emb)
        finally:
            self.model.train(was)
        return out[:, 1] - out[:, 0]


def _predict(model, vocab, sentences, batch_size: int = 512) -> torch.Tensor:
    was = model.training
    model.eval()
    preds = []
    try:
        with torch.no_grad():
            for i in range(0, len(sentences), batch_size):
                _, emb = encode(sentences[i : i + batch_size], vocab, model)
                preds.append(model(emb).argmax(1))
    finally:
        model.train(was)
    return torch.cat(preds)


def _accuracy(model, vocab, split: ReviewSplit) -> float:
    return float((_predict(model, vocab, split.sentences) == split.labels).float().mean())
