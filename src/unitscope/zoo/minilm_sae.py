"""A sparse autoencoder on MiniLM's residual stream, trained by the zoo: a real dictionary to read features with.

>>> LAYER, N_FEATURES, N_FEATURES // 384
('bert.encoder.layer.2.output', 1536, 4)
>>> d = to_dictionary({"W_enc": torch.eye(2), "b_enc": torch.zeros(2), "W_dec": torch.eye(2), "b_dec": torch.ones(2)})
>>> d.hook_name, d.encode(torch.tensor([[3.0, 0.5]])).tolist()
('bert.encoder.layer.2.output', [[2.0, 0.0]])

**What it is.** A ReLU sparse autoencoder with an L1 penalty (not top-k: a ReLU of an affine map is continuous along
an integration path, so each feature's conductance is an ordinary path integral — a top-k encoder jumps where two
features swap ranks), ``f = relu((y − b_dec) W_enc + b_enc)``, ``ŷ = f W_dec + b_dec``, 1,536 features (4× MiniLM's
hidden size of 384) on the residual stream after the third of MiniLM's six layers (:data:`LAYER`, the output of
``bert.encoder.layer.2``: ``[N, T, 384]``, every token the attention mask keeps, [CLS] and [SEP] included — the
mean pooling reads them too). Loss: ``‖y − ŷ‖² / σ² + λ Σ_i f_i ‖W_dec,i‖ / σ`` (σ² the corpus's total variance per
token, λ ramped up over the first 5 % of the steps; the decoder-norm weighting keeps the penalty from being dodged
by shrinking ``f``), Adam, the learning rate decayed to 0 over the last 20 % of the steps. After training each
feature is rescaled so that its decoder row has unit norm (the reconstruction and every conductance are unchanged).

**Data.** MiniLM's activations on sentences drawn (seeded) from the zoo's rated-sentence corpora
(:mod:`unitscope.zoo.rated_sentences`: the movie-review *training* split and all of the tweets, Amazon and New York
Times sentences, HTML entities decoded); the movie-review dev and test splits are never seen, so the metrics below are
held out.

**The metrics SAE users read** (:func:`sae_metrics`, :func:`reconstruction_accuracy`, both in :func:`evaluate`), on
the tokens of the sentiment test split (:func:`unitscope.zoo.sentiment.movie_reviews`): L0 (active features per
token), the fraction of variance unexplained ``Σ‖y − ŷ‖² / Σ‖y − ȳ‖²``, the share of dead features (active on none of
those tokens) and the sentiment head's test accuracy with the layer replaced by its reconstruction ŷ at every token
against the accuracy as it is. ``python -m unitscope.studies.features`` prints them.

``minilm_sae()`` trains once (from an empty cache: a MiniLM pass over the corpus sentences up to the layer, 600 steps of
the SAE, the held-out metrics; its time: the README), deterministic (seeded,
``threads`` threads; the count is part of the cache key), cached like every zoo model
(:func:`unitscope.zoo.cache.cached_state`: keyed by a hash of the recipe, written atomically, read back with
``weights_only=True``), and returns a :class:`unitscope.Dictionary` whose ``hook_name`` is the layer
(``dictionaries={sae.hook_name: sae}``), with ``.info`` (the held-out metrics, the training's numbers) and ``.cached``.
:func:`save_saelens` writes it as a SAELens folder (``cfg.json`` + ``sae_weights.safetensors``) that
``Dictionary.from_saelens`` — and SAELens — read back.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from ..core.capture import hooked
from ..core.dictionary import Dictionary
from ..core.errors import UnitscopeError
from .cache import cached_state

__all__ = [
    "LAYER",
    "N_FEATURES",
    "CORPORA",
    "minilm_sae",
    "to_dictionary",
    "corpus",
    "layer_values",
    "sae_metrics",
    "reconstruction_accuracy",
    "evaluate",
    "save_saelens",
    "RECIPE",
]

LAYER = "bert.encoder.layer.2.output"  # the residual stream after the third of the six layers, [N, T, 384]
HIDDEN = 384
N_FEATURES = 4 * HIDDEN
CORPORA = ("movies-train", "tweets", "amazon", "nyt")
#: the shipped recipe: sentences drawn from CORPORA, optimisation and sparsity settings
RECIPE = dict(n_sentences=3000, n_features=N_FEATURES, l1=0.1, steps=600, batch_size=512, lr=3e-3, seed=0)
BATCH_SENTENCES = 64


class _Stop(Exception):
    """Raised by the capture hook once the layer has been computed: the layers above it are not run."""


def corpus(n: int | None = None, *, seed: int = 0) -> list[str]:
    """The SAE's training sentences: the movie-review training split and every tweet, Amazon and NYT sentence
    (:func:`~unitscope.zoo.rated_sentences.clean`-ed), ``n`` of them drawn without replacement (seeded; None: all)."""
    from .rated_sentences import clean, movie_reviews, rated_sentences

    pool = [clean(s) for s in movie_reviews().train.sentences]
    for domain in CORPORA[1:]:
        pool += [clean(s) for s in rated_sentences(domain, min_abs=0).sentences]
    if n is None or n >= len(pool):
        return pool
    pick = np.random.default_rng(seed).permutation(len(pool))[:n]
    return [pool[i] for i in sorted(pick)]


def _batches(lengths, size: int = BATCH_SENTENCES):
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    return [order[i : i + size] for i in range(0, len(order), size)]


def _tokens(lm, sentences):
    from .minilm import MAX_LENGTH

    return lm.tokenizer(list(sentences), padding=True, truncation=True, max_length=MAX_LENGTH, return_tensors="pt")


def layer_values(lm, sentences, *, layer: str = LAYER, progress: bool | None = False) -> torch.Tensor:
    """``[tokens, 384]``: MiniLM's ``layer`` output at every token the attention mask keeps, sentence after sentence
    (sentences batched by length; the layers above ``layer`` are not run). ``lm``: a :func:`~unitscope.zoo.minilm.
    minilm` or :func:`~unitscope.zoo.minilm.minilm_sentiment` (its ``bert`` is used)."""
    from ..core.progress import bar

    module = dict(lm.bert.named_modules(prefix="bert"))[layer]
    lengths = [len(s) for s in sentences]
    parts, seen = [None] * len(sentences), {}

    def stop(_m, _args, out):
        seen["y"] = out[0] if isinstance(out, tuple) else out
        raise _Stop

    with torch.no_grad(), hooked(forward={module: stop}):
        for idx in bar(_batches(lengths), desc=f"MiniLM {layer}", unit="batch", progress=progress):
            tok = _tokens(lm, [sentences[i] for i in idx])
            try:
                lm.bert(input_ids=tok["input_ids"], attention_mask=tok["attention_mask"])
            except _Stop:
                pass
            keep = tok["attention_mask"].bool()
            for j, i in enumerate(idx):
                parts[i] = seen["y"][j][keep[j]]
    return torch.cat(parts) if parts else torch.zeros(0, HIDDEN)


def _train(
    values: torch.Tensor,
    *,
    n_features: int,
    l1: float,
    steps: int,
    batch_size: int,
    lr: float,
    seed: int,
    progress: bool | None,
) -> tuple[dict, dict]:
    """The SAE's weights (SAELens's names and layout) trained on ``values`` ``[tokens, D]``; returns
    ``(state, numbers)``."""
    from ..core.progress import bar

    g = torch.Generator().manual_seed(seed)
    D = values.shape[1]
    mean = values.mean(0)
    var = float(((values - mean) ** 2).sum(1).mean())
    W_dec = torch.randn(n_features, D, generator=g)
    W_dec = 0.1 * W_dec / W_dec.norm(dim=1, keepdim=True)
    params = [torch.nn.Parameter(t) for t in (W_dec.T.clone(), torch.zeros(n_features), W_dec, mean.clone())]
    W_enc, b_enc, W_dec, b_dec = params
    opt = torch.optim.Adam(params, lr=lr)
    warm, decay = max(1, int(0.05 * steps)), max(1, int(0.2 * steps))
    last = {}
    for step in bar(range(steps), desc="training the MiniLM SAE", unit="step", progress=progress):
        x = values[torch.randint(0, values.shape[0], (batch_size,), generator=g)]
        f = torch.relu((x - b_dec) @ W_enc + b_enc)
        mse = ((f @ W_dec + b_dec - x) ** 2).sum(1).mean() / var
        sparsity = (f * W_dec.norm(dim=1)).sum(1).mean() / var**0.5
        loss = mse + l1 * min(1.0, step / warm) * sparsity
        opt.zero_grad()
        loss.backward()
        opt.step()
        for group in opt.param_groups:
            group["lr"] = lr * min(1.0, (steps - step - 1) / decay)
        if step == steps - 1:
            last = {"train_mse_over_variance": float(mse.detach()), "train_l0": float((f > 0).float().sum(1).mean())}
    with torch.no_grad():  # unit-norm decoder rows: f_i · ‖W_dec,i‖ is the feature, the reconstruction unchanged
        norm = W_dec.norm(dim=1).clamp_min(1e-12)
        state = {
            "W_enc": (W_enc * norm).detach().clone(),
            "b_enc": (b_enc * norm).detach().clone(),
            "W_dec": (W_dec / norm[:, None]).detach().clone(),
            "b_dec": b_dec.detach().clone(),
        }
    return state, dict(last, corpus_variance_per_token=var)


def to_dictionary(state: dict, *, layer: str = LAYER) -> Dictionary:
    """The SAE's weights (``W_enc [D, F]``, ``b_enc``, ``W_dec [F, D]``, ``b_dec``) as a :class:`Dictionary` that
    subtracts ``b_dec`` before encoding, ReLU, with ``hook_name = layer``."""
    d = Dictionary.from_weights(
        state["W_enc"], state["b_enc"], state["W_dec"], state["b_dec"], b_dec_pre=True, activation="relu"
    )
    d.hook_name, d.name = layer, "minilm-sae"
    return d


def sae_metrics(sae, values: torch.Tensor, *, chunk: int = 8192) -> dict:
    """L0, fraction of variance unexplained and dead-feature share of ``sae`` on ``values`` ``[tokens, D]``:

    * ``l0``: mean number of features with ``f > 0`` per token;
    * ``fvu``: ``Σ‖y − ŷ‖² / Σ‖y − ȳ‖²`` over the tokens (ȳ their mean);
    * ``dead_share``: the share of features that are 0 on every one of the tokens (``dead`` their count).

    >>> import torch
    >>> d = Dictionary.from_weights(torch.eye(2), None, torch.eye(2), None)
    >>> sae_metrics(d, torch.tensor([[1.0, -1.0], [3.0, 1.0]]))   # ŷ = relu(y): the -1 is lost
    {'l0': 1.5, 'fvu': 0.25, 'dead_share': 0.0, 'dead': 0, 'n_features': 2, 'n_tokens': 2}
    """
    values = torch.as_tensor(values)
    if values.dim() != 2 or values.shape[0] == 0:
        raise UnitscopeError("sae_metrics takes a layer's values [tokens, D]", shape=tuple(values.shape))
    values = values.double()
    mean = values.mean(0)
    active, fired, err, total = 0.0, None, 0.0, 0.0
    with torch.no_grad():
        for i in range(0, values.shape[0], chunk):
            y = values[i : i + chunk]
            f = sae.encode(y)
            on = f > 0
            active += float(on.sum())
            fired = on.any(0) if fired is None else fired | on.any(0)
            err += float(((sae.decode(f) - y) ** 2).sum())
            total += float(((y - mean) ** 2).sum())
    n, F = values.shape[0], int(fired.numel())
    dead = int((~fired).sum())
    return {
        "l0": round(active / n, 4),
        "fvu": round(err / total, 6),
        "dead_share": round(dead / F, 6),
        "dead": dead,
        "n_features": F,
        "n_tokens": n,
    }


def reconstruction_accuracy(
    lm, sae, sentences, labels, *, layer: str | None = None, progress: bool | None = False
) -> dict:
    """The sentiment head's accuracy on ``sentences`` as the model is and with ``layer`` (default: the SAE's
    ``hook_name``) replaced by its reconstruction ``decode(encode(y))`` at every token (``lm``:
    :func:`~unitscope.zoo.minilm.minilm_sentiment`). ``change`` = reconstructed − original (a fraction; −0.02 is
    two points of accuracy lost); ``agreement``: the share of sentences whose prediction stays the same."""
    from ..core.progress import bar

    layer = layer or sae.hook_name or LAYER
    if lm.model.head is None:
        raise UnitscopeError("reconstruction_accuracy needs the MiniLM sentiment model", hint="lm = minilm_sentiment()")
    module = dict(lm.model.named_modules())[layer]
    labels = torch.as_tensor(labels).long()
    pred = {"original": torch.zeros(len(sentences), dtype=torch.long), "reconstructed": None}
    pred["reconstructed"] = pred["original"].clone()

    def replace(_m, _args, out):
        if isinstance(out, tuple):
            return (sae(out[0]).to(out[0].dtype),) + tuple(out[1:])
        return sae(out).to(out.dtype)

    with torch.no_grad():
        for idx in bar(
            _batches([len(s) for s in sentences]),
            desc="sentiment head with the SAE's reconstruction",
            unit="batch",
            progress=progress,
        ):
            tok = _tokens(lm, [sentences[i] for i in idx])
            emb = lm.model.embed(tok["input_ids"])
            pred["original"][idx] = lm.model(emb, tok["attention_mask"]).argmax(1)
            with hooked(forward={module: replace}):
                pred["reconstructed"][idx] = lm.model(emb, tok["attention_mask"]).argmax(1)
    acc = {k: float((v == labels).float().mean()) for k, v in pred.items()}
    return {
        "accuracy": round(acc["original"], 6),
        "reconstructed_accuracy": round(acc["reconstructed"], 6),
        "change": round(acc["reconstructed"] - acc["original"], 6),
        "agreement": round(float((pred["original"] == pred["reconstructed"]).float().mean()), 6),
        "n_sentences": len(sentences),
    }


def evaluate(lm, sae, *, n: int | None = None, progress: bool | None = False) -> dict:
    """:func:`sae_metrics` on the tokens of the sentiment test split (its first ``n`` sentences; None: all 1,057)
    and :func:`reconstruction_accuracy` on the same sentences: ``{"l0", "fvu", "dead_share", …, "accuracy",
    "reconstructed_accuracy", "accuracy_change", "agreement", "n_sentences"}``."""
    from .rated_sentences import movie_reviews

    test = movie_reviews().test
    sentences, labels = list(test.sentences[:n]), test.labels[:n]
    out = sae_metrics(sae, layer_values(lm, sentences, layer=sae.hook_name or LAYER, progress=progress))
    acc = reconstruction_accuracy(lm, sae, sentences, labels, progress=progress)
    out.update(
        accuracy=acc["accuracy"],
        reconstructed_accuracy=acc["reconstructed_accuracy"],
        accuracy_change=acc["change"],
        agreement=acc["agreement"],
        n_sentences=acc["n_sentences"],
    )
    return out


def minilm_sae(
    *,
    n_sentences: int = RECIPE["n_sentences"],
    n_features: int = RECIPE["n_features"],
    l1: float = RECIPE["l1"],
    steps: int = RECIPE["steps"],
    batch_size: int = RECIPE["batch_size"],
    lr: float = RECIPE["lr"],
    seed: int = RECIPE["seed"],
    n_held_out: int | None = None,
    threads: int | None = 1,
    progress: bool | None = None,
) -> Dictionary:
    """The zoo's SAE on MiniLM's residual stream at :data:`LAYER` as a :class:`Dictionary` (``hook_name`` = the
    layer, ``info``, ``cached``), trained once on ``n_sentences`` corpus sentences (:func:`corpus`) and cached; the
    defaults are the shipped recipe (:data:`RECIPE`), smaller settings train a smaller, worse one (tests).
    ``info["test_l0"]``, ``["test_fvu"]``, ``["test_dead_share"]``: :func:`sae_metrics` on the tokens of the first
    ``n_held_out`` sentences of the sentiment test split (None: all 1,057), measured once after training."""
    from .minilm import MAX_LENGTH, PACKAGE

    if n_features < HIDDEN:
        raise UnitscopeError(
            "an SAE needs at least as many features as the layer has dims", n_features=n_features, d_in=HIDDEN
        )
    recipe = dict(
        model="minilm-sae",
        base=PACKAGE,
        layer=LAYER,
        corpora=list(CORPORA),
        n_sentences=n_sentences,
        n_features=n_features,
        activation="relu",
        sparsity="l1-decoder-norm",
        l1=l1,
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        optimizer="adam",
        seed=seed,
        max_length=MAX_LENGTH,
        version=1,
    )
    if n_held_out is not None:
        recipe["n_held_out"] = n_held_out

    def train():
        from ..core.progress import note
        from .cache import cache_dir
        from .minilm import minilm
        from .rated_sentences import movie_reviews

        if progress is not False:
            note(
                f"training the MiniLM SAE once ({n_features} features at {LAYER}, {n_sentences} sentences, {steps} "
                f"steps; a minute or two on one CPU thread), then cached in {cache_dir()}"
            )
        torch.manual_seed(seed)
        start = time.perf_counter()
        lm = minilm()
        values = layer_values(lm, corpus(n_sentences, seed=seed), progress=progress)
        collect = time.perf_counter() - start
        state, numbers = _train(
            values,
            n_features=n_features,
            l1=l1,
            steps=steps,
            batch_size=batch_size,
            lr=lr,
            seed=seed,
            progress=progress,
        )
        fit = time.perf_counter() - start - collect
        test = list(movie_reviews().test.sentences[:n_held_out])
        held_out = sae_metrics(to_dictionary(state), layer_values(lm, test))
        info = dict(
            numbers,
            n_train_tokens=int(values.shape[0]),
            collect_seconds=round(collect, 2),
            train_seconds=round(fit, 2),
            held_out=f"movie-review test split: {len(test)} sentences",
            **{f"test_{k}": v for k, v in held_out.items()},
        )
        return state, info

    state, info, cached = cached_state("minilm-sae", recipe, train, threads=threads)
    d = to_dictionary(state)
    d.info, d.cached = info, cached
    return d


def save_saelens(sae: Dictionary, folder) -> Path:
    """Write ``sae`` (a :class:`Dictionary` of weights: :func:`minilm_sae`, ``from_weights``) as a SAELens folder —
    ``cfg.json`` (``architecture: standard``, ``d_in``, ``d_sae``, ``hook_name``, ``apply_b_dec_to_input``) and
    ``sae_weights.safetensors`` (``W_enc``, ``b_enc``, ``W_dec``, ``b_dec``) — each file written atomically; returns
    the folder. ``Dictionary.from_saelens(folder)`` reads it back."""
    from safetensors.torch import save

    from ..core.dictionary import LinearDictionary
    from ..core.files import atomic_write_bytes, atomic_write_text

    m = sae.module if isinstance(sae, Dictionary) else sae
    if not isinstance(m, LinearDictionary) or m.activation != "relu":
        raise UnitscopeError(
            "save_saelens writes ReLU dictionaries of weights",
            got=type(m).__name__,
            hint="build one with Dictionary.from_weights(..., activation='relu')",
        )
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    weights = {k: getattr(m, k).detach().contiguous().clone() for k in ("W_enc", "b_enc", "W_dec", "b_dec")}
    cfg = {
        "architecture": "standard",
        "d_in": m.d_in,
        "d_sae": m.n_features,
        "activation_fn_str": "relu",
        "apply_b_dec_to_input": m.b_dec_pre,
        "hook_name": getattr(sae, "hook_name", None) or LAYER,
        "model_name": "sentence-transformers/all-MiniLM-L6-v2",
        "normalize_activations": "none",
        "dtype": "float32",
        "context_size": 128,
    }
    atomic_write_bytes(folder / "sae_weights.safetensors", save(weights))
    atomic_write_text(folder / "cfg.json", json.dumps(cfg, indent=1) + "\n")
    return folder
