"""The conductance paper's sentiment CNN (Kim 2014) on sentences rated by people (Hutto & Gilbert, ICWSM 2014).

The data (:mod:`unitscope.zoo.rated_sentences`): movie-review snippets, tweets, Amazon review snippets and New
York Times editorial snippets rated −4 … +4 by people, from the ``vaderSentiment==3.3.2`` source distribution
(fetched once with pip, checked by SHA-256). The held-out movie-review sentences are the test set.

Recipes (:data:`RECIPES`, each its own cache entry):

* ``"minilm-all"`` (the default): MiniLM's WordPiece tokens, embeddings initialised with a 50-dim PCA of MiniLM's
  input token embeddings (:mod:`unitscope.zoo.minilm_vectors`) and fine-tuned, trained on the movie-review train
  split plus every tweet / Amazon / NYT snippet with |rating| ≥ 0.5; dropout 0.5 and a max-norm of 3 on the rows
  of the fully connected layers (Kim 2014); early stopping on the movie-review dev split.
* ``"scratch-movies"``: the first recipe — own word tokenizer, random embeddings, movie reviews only.

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
import time
from collections import Counter
from dataclasses import dataclass

import torch
import torch.nn as nn

from ..core.errors import UnitscopeError
from ..core.state import torch_threads
from .cache import cached_state
from .minilm_vectors import NEGATIONS, WordPieces, negation_mask, word_vectors
from .rated_sentences import (FILENAME, INNER_ARCHIVE, N_SENTENCES, PACKAGE, SHA256, DOMAINS, MovieReviews,
                              ReviewSplit, movie_reviews, movie_reviews_path, rated_sentences)

__all__ = ["MovieReviews", "ReviewSplit", "movie_reviews", "movie_reviews_path", "rated_sentences", "tokenize",
           "Vocab", "WordPieces", "Filters", "SentimentCNN", "TrainedSentiment", "sentiment_cnn", "encode",
           "NEGATIONS", "negation_mask", "has_negation", "RECIPES", "FILENAME", "SHA256", "PACKAGE",
           "INNER_ARCHIVE", "N_SENTENCES", "DOMAINS", "is_cached", "DEFAULT_RECIPE"]

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
        ids[i, :len(r)] = torch.tensor(r, dtype=torch.long)
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

    def __init__(self, vocab_size: int, dim: int = 50, windows=(3, 4, 5, 6), maps: int = 64, hidden: int = 10,
                 dropout: float = 0.5):
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
            raise UnitscopeError("SentimentCNN takes embeddings [N, T, dim]; use model.embed(ids) on token ids",
                                 shape=tuple(emb.shape), dim=self.embedding.embedding_dim)
        return self.out(self.relu_fc(self.fc(self.dropout(self.filters(emb)))))


@dataclass
class TrainedSentiment:
    model: SentimentCNN
    vocab: object   # Vocab (word tokens) or WordPieces (MiniLM's WordPiece tokens)
    info: dict      # test/dev accuracy, best epoch, training time, the recipe's numbers
    cached: bool    # loaded from the user cache (no training this time)

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
                _, emb = encode(sentences[i:i + batch_size], vocab, model)
                preds.append(model(emb).argmax(1))
    finally:
        model.train(was)
    return torch.cat(preds)


def _accuracy(model, vocab, split: ReviewSplit) -> float:
    return float((_predict(model, vocab, split.sentences) == split.labels).float().mean())


# ---------------------------------------------------------------------------------------- recipes --
#: name → how the model is made: ``domains`` trained on (the movie reviews' train split + every sentence of the
#: other domains with |rating| ≥ ``min_abs``), ``tokens`` ("words": :class:`Vocab`; "wordpiece": MiniLM's),
#: ``vectors`` (None: random N(0, 1); else :func:`~unitscope.zoo.minilm_vectors.word_vectors`), ``freeze`` (keep
#: the vectors fixed), ``max_norm`` (rows of ``fc`` and ``out``, None: off), ``patience`` (early stopping on the
#: dev accuracy; None: every epoch, the best one kept), Adam ``lr``; ``movie_copies`` (optional): the movie-review
#: training sentences repeated that many times per epoch (oversampling the test domain).
RECIPES = {
    "scratch-movies": dict(domains=("movies",), tokens="words", vectors=None, freeze=False, max_norm=None,
                           epochs=15, patience=None, lr=2e-3, min_abs=None),
    "scratch-all": dict(domains=("movies", "tweets", "amazon", "nyt"), tokens="wordpiece", vectors=None,
                        freeze=False, max_norm=3.0, epochs=12, patience=3, lr=1e-3, min_abs=0.5),
    "minilm-movies": dict(domains=("movies",), tokens="wordpiece", vectors="minilm-input", freeze=False,
                          max_norm=3.0, epochs=12, patience=3, lr=1e-3, min_abs=0.5),
    "minilm-all": dict(domains=("movies", "tweets", "amazon", "nyt"), tokens="wordpiece", vectors="minilm-input",
                       freeze=False, max_norm=3.0, epochs=12, patience=3, lr=1e-3, min_abs=0.5),
    "minilm-all-static": dict(domains=("movies", "tweets", "amazon", "nyt"), tokens="wordpiece",
                              vectors="minilm-input", freeze=True, max_norm=3.0, epochs=12, patience=3, lr=1e-3,
                              min_abs=0.5),
    "minilm-all-movies2x": dict(domains=("movies", "tweets", "amazon", "nyt"), tokens="wordpiece",
                                vectors="minilm-input", freeze=False, max_norm=3.0, epochs=12, patience=3, lr=1e-3,
                                min_abs=0.5, movie_copies=2),
    "minilm-token-all": dict(domains=("movies", "tweets", "amazon", "nyt"), tokens="wordpiece",
                             vectors="minilm-token", freeze=False, max_norm=3.0, epochs=12, patience=3, lr=1e-3,
                             min_abs=0.5),
}
DEFAULT_RECIPE = "minilm-all"


def _training_data(r: dict, data: MovieReviews):
    copies = r.get("movie_copies", 1)  # the in-domain sentences repeated (oversampled) this many times per epoch
    sentences, labels = list(data.train.sentences) * copies, [data.train.labels.repeat(copies)]
    for d in r["domains"]:
        if d != "movies":
            extra = rated_sentences(d, min_abs=r["min_abs"])
            sentences += extra.sentences
            labels.append(extra.labels)
    return sentences, torch.cat(labels)


def _batches(lengths: torch.Tensor, batch_size: int, g: torch.Generator, bucket: bool):
    """Index batches: random (``bucket`` False), or of similar length (sorted with random tie-breaks, chunked,
    the chunks shuffled) — less padding, the same examples per epoch."""
    n = len(lengths)
    order = torch.randperm(n, generator=g)
    if bucket:
        order = order[torch.sort(lengths[order], stable=True).indices]
    chunks = [order[i:i + batch_size] for i in range(0, n, batch_size)]
    if bucket:
        chunks = [chunks[int(i)] for i in torch.randperm(len(chunks), generator=g)]
    return chunks


def _max_norm(model, limit):
    with torch.no_grad():
        for lin in (model.fc, model.out):
            norms = lin.weight.norm(dim=1, keepdim=True)
            lin.weight.mul_(norms.clamp(max=limit) / norms.clamp_min(1e-12))


def _legacy_recipe(min_count, maps, epochs, lr, batch_size, weight_decay, seed):
    """The first recipe's cache key, unchanged, so its cached model is found again."""
    return dict(model="sentiment-cnn", data=SHA256, split="stratified-80/10/10-seed0", tokenizer=2,
                min_count=min_count, dim=50, windows=[3, 4, 5, 6], maps=maps, hidden=10, dropout=0.5, epochs=epochs,
                lr=lr, batch_size=batch_size, weight_decay=weight_decay, seed=seed, min_pad=MIN_PAD, version=1)


def _cache_key(recipe, epochs=None, batch_size=50, min_count=2, weight_decay=0.0, maps=64, seed=0):
    if recipe not in RECIPES:
        raise UnitscopeError(f"unknown sentiment recipe {recipe!r}", choices=sorted(RECIPES))
    r = dict(RECIPES[recipe], epochs=epochs or RECIPES[recipe]["epochs"])
    if recipe == "scratch-movies":
        return r, _legacy_recipe(min_count, maps, r["epochs"], r["lr"], batch_size, weight_decay, seed)
    return r, dict(model="sentiment-cnn", recipe=recipe, **r, data={d: DOMAINS[d][1] for d in r["domains"]},
                   split="stratified-80/10/10-seed0", dim=50, windows=[3, 4, 5, 6], maps=maps, hidden=10,
                   dropout=0.5, batch_size=batch_size, weight_decay=weight_decay, seed=seed, min_pad=MIN_PAD,
                   version=2)


def is_cached(recipe: str = DEFAULT_RECIPE, **kw) -> bool:
    """Whether :func:`sentiment_cnn` with these arguments would load from the cache (no training)."""
    from .cache import cache_dir, recipe_key

    return (cache_dir() / f"sentiment-cnn-{recipe_key(_cache_key(recipe, **kw)[1])}.pt").exists()


def sentiment_cnn(*, recipe: str = DEFAULT_RECIPE, epochs: int | None = None, batch_size: int = 50,
                  min_count: int = 2, weight_decay: float = 0.0, maps: int = 64, seed: int = 0,
                  threads: int | None = 1, progress: bool | None = None) -> TrainedSentiment:
    """The sentiment CNN made by one of :data:`RECIPES` (default ``"minilm-all"``), trained once (Adam, dropout
    0.5, the weights of the epoch with the best movie-review dev accuracy kept), then loaded from the user cache.

    ``threads``: torch threads while training (restored afterwards); one is the default because these small
    convolutions gain little from more, and on a busy machine two threads' barriers can make them 10–30× slower.
    ``None`` keeps the current setting. ``maps``: feature maps per window size (the paper's 64; fewer for quick
    tests); ``epochs``: the most epochs (default: the recipe's); ``min_count``: the word vocabulary's (``words``
    tokens only). Every argument is part of the cache key.
    """
    r, key = _cache_key(recipe, epochs, batch_size, min_count, weight_decay, maps, seed)

    def train():
        with torch_threads(threads):
            return _train(r, maps, batch_size, min_count, weight_decay, seed, progress, legacy=recipe == "scratch-movies")

    state, info, cached = cached_state("sentiment-cnn", key, train)
    vocab = WordPieces() if r["tokens"] == "wordpiece" else Vocab(info["itos"])
    with torch.random.fork_rng(devices=[]):  # initial weights, replaced below: not from the global RNG
        model = SentimentCNN(len(vocab), maps=maps)
    model.load_state_dict(state)
    info = dict(info, recipe=recipe)
    return TrainedSentiment(model.eval(), vocab, info, cached)


def _train(r, maps, batch_size, min_count, weight_decay, seed, progress, *, legacy):
    from tqdm.auto import tqdm

    data = movie_reviews()
    sentences, y = _training_data(r, data)
    if r["tokens"] == "wordpiece":
        vocab = WordPieces()
    else:
        vocab = Vocab.build([tokenize(s) for s in sentences], min_count=min_count)
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    model = SentimentCNN(len(vocab), maps=maps)
    if r["vectors"] is not None:
        with torch.no_grad():
            model.embedding.weight.copy_(word_vectors(r["vectors"], dim=50, progress=progress))
    model.embedding.weight.requires_grad_(not r["freeze"])
    ids, _ = encode(sentences, vocab)
    lengths = (ids != 0).sum(1)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=r["lr"],
                           weight_decay=weight_decay)
    best, best_state, best_epoch, history = -1.0, None, 0, []
    start = time.perf_counter()
    bar = tqdm(range(1, r["epochs"] + 1), desc="training the sentiment CNN", unit="epoch",
               disable=True if progress is False else None, leave=False)
    for epoch in bar:
        model.train()
        for idx in _batches(lengths, batch_size, g, bucket=not legacy):
            t = int(lengths[idx].max()) + 2 * MIN_PAD
            loss = nn.functional.cross_entropy(model(model.embed(ids[idx, :t])), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            if r["max_norm"]:
                _max_norm(model, r["max_norm"])
        dev_acc = _accuracy(model, vocab, data.dev)
        history.append(dev_acc)
        if dev_acc > best:
            best, best_epoch = dev_acc, epoch
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        elif r["patience"] is not None and epoch - best_epoch >= r["patience"]:
            break
    bar.close()
    model.load_state_dict(best_state)
    model.eval()
    info = {"test_accuracy": _accuracy(model, vocab, data.test), "dev_accuracy": best, "best_epoch": best_epoch,
            "dev_history": history, "train_seconds": time.perf_counter() - start,
            "n_train": len(sentences), "n_dev": len(data.dev), "n_test": len(data.test),
            "n_train_movies": len(data.train)}
    if r["tokens"] == "words":
        info["itos"] = vocab.itos
    return model.state_dict(), info
