"""``python -m unitscope.studies.sentiment [--quick] [--out DIR] [--seed N]``: the conductance paper's
sentiment-CNN study (Dhamdhere et al. 2018, section 6) on the real movie-review sentences of Hutto & Gilbert
(2014), with the Kim (2014) CNN of :mod:`unitscope.zoo.sentiment` (trained once, then loaded from the cache).

>>> import torch
>>> ablation_ratio(torch.tensor([[1.0, 2.0, -1.0], [0.5, 0.5, 0.0]]))
tensor([0.5000, 1.0000])
>>> signs, table = division_of_labour(torch.tensor([[0.5, -0.2, 0.001], [-0.3, -0.1, 0.0]]), min_share=0.5)
>>> signs.tolist(), table["both_signs"].tolist()
([[1, -1, 0], [-1, -1, 0]], [True, False, False])

1. **Agreement with ablation.** Conductance, internal influence, gradient × activation and activation of the
   256 max-pooled filters (layer ``filters``), taken from the embeddings (baseline: the zero embedding, which is
   also the padding), target: the predicted class's logit (the paper's choice); per test sentence, the Pearson
   correlation between a method's scores of its top-10 filters and those filters' ablation scores.
2. **How additive are ablations?** Per sentence ``|Σ_f abl_f| / Σ_f |abl_f|`` over all 256 filters (1: every
   filter's ablation pushes the same way), as a histogram.
3. **Division of labour.** The sign of each filter's conductance (``|c| < 0.01`` → 0) for
   ``F = logit(positive) − logit(negative)`` (blue: pushes towards *positive* sentiment, red: towards
   *negative*, green: near zero) on ~4,000 sentences of the corpus, as a heat-map with rows and columns ordered by
   SciPy hierarchical clustering; and the share of filters that take both signs on ≥ 10 % of the sentences each.
4. **Negation filters.** For "this is not good" and "this is not bad": the filters with the highest
   conductance (for ``F = ±(logit(positive) − logit(negative))``, signed towards the predicted class) whose
   per-token conductance (Eq. 2, summed over the 50 embedding dimensions) falls on the negated phrase — at least
   half of its absolute per-token conductance on "not good" / "not bad", at least a fifth, positive, on "not"
   itself; then the 20 corpus sentences where each of those filters has the highest conductance (same ``F``),
   the share of them that hold a negation against the corpus base rate, and the analogue of the paper's Figures 4
   and 5: those sentences with the tokens carrying the conductance coloured and the n-gram that the filter's max
   over time picked underlined (``sentiment_negation.html``, ``sentiment_negation.png``, caption
   ``sentiment_negation_caption.md``).
5. **Recipes.** Every recipe of :data:`unitscope.zoo.sentiment.RECIPES` in the cache (``--train-recipes``: all):
   data, tokens, vectors, test / dev accuracy and both probes' log-odds (``sentiment_recipes.csv``).

Writes CSV + Markdown tables, PNG figures, an HTML snippet, ``sentiment.json`` and the report's ``manifest.json`` to
``--out``; the last line printed is that JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from ..data.ablation import ablation_scores
from ..attribution.neuron import neuron_conductance
from ..attribution.scores import METHODS, attribute
from ..core.state import torch_threads, restores_process_state
from .agreement import ablation_agreement, summarize_agreement
from .sentiment_figures import (PAPER_PEARSON, division_figure, negation_caption, negation_figure, negation_html,
                                ratio_figure, write_manifest)
from .tables import write_table

__all__ = ["run", "main", "agreement", "ablation_ratio", "corpus_conductance", "division_of_labour",
           "per_token", "negation_filters", "negation_examples", "negation_html", "NegationProbe", "log_odds",
           "PAPER_PEARSON", "NEGATION_PROBES"]

NEGATION_PROBES = ("this is not good", "this is not bad")
LAYER = "filters"
#: sentences per part: agreement (None: the whole test split), corpus (conductance for the negation search;
#: None: every sentence), division (a random subset of the corpus), examples (top sentences per negation filter)
QUICK = {"agreement": 100, "corpus": 500, "division": 500, "examples": 20, "agreement_steps": 32,
         "corpus_steps": 16}
FULL = {"agreement": None, "corpus": None, "division": 4000, "examples": 20, "agreement_steps": 50,
        "corpus_steps": 20}


def log_odds(out: torch.Tensor) -> torch.Tensor:
    """``logit(positive) − logit(negative)``: one signed sentiment score per example."""
    return out[:, 1] - out[:, 0]


def _signed_log_odds(sign: int):
    return lambda out: sign * (out[:, 1] - out[:, 0])


def _by_length(sentences, size: int):
    """Index groups of about ``size`` sentences of similar length (less padding per batch)."""
    order = sorted(range(len(sentences)), key=lambda i: (len(sentences[i]), i))
    return [order[i:i + size] for i in range(0, len(order), size)]


def _n_filters(net) -> int:
    f = net.model.filters
    return len(f.windows) * f.maps


def _progress(total, desc):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="sentence", leave=False)


def _write(df: pd.DataFrame, out: str, name: str, *, index: bool = True) -> None:
    write_table(df, out, name, index=index)


# ---------------------------------------------------------------------------------------- 1 and 2 --
def agreement(net, sentences, *, k: int = 10, n_steps: int = 50, batch: int = 100):
    """``(per-sentence agreement rows, ablation scores [N, filters], conductance completeness gap [N])``; the
    target is each sentence's predicted class."""
    n_f = _n_filters(net)
    frames, abl, gaps = [], torch.empty(len(sentences), n_f), torch.empty(len(sentences))
    with _progress(len(sentences), "agreement with ablation") as bar:
        for idx in _by_length(sentences, batch):
            _, emb = net.encode([sentences[i] for i in idx])
            scores = attribute(net.model, emb, [LAYER], scores=METHODS, n_steps=n_steps, gap_warning=None)
            df = ablation_agreement(net.model, emb, LAYER, k=k, scores=scores)
            df["example"] = [idx[i] for i in df["example"]]
            frames.append(df)
            abl[idx] = ablation_scores(net.model, emb, LAYER)
            gaps[idx] = scores["conductance"].relative_delta(LAYER)
            bar.update(len(idx))
    df = pd.concat(frames, ignore_index=True).sort_values(["score", "example"], kind="stable")
    df["sentence"] = [sentences[i] for i in df["example"]]
    return df.reset_index(drop=True), abl, gaps


def ablation_ratio(abl: torch.Tensor) -> torch.Tensor:
    """``|Σ_f abl_f| / Σ_f |abl_f|`` per sentence (row)."""
    return abl.sum(1).abs() / abl.abs().sum(1).clamp_min(1e-12)


# ------------------------------------------------------------------------------------------------ 3 --
def corpus_conductance(net, sentences, *, n_steps: int = 20, batch: int = 250):
    """``(conductance [N, filters], relative completeness gap [N])`` of every filter for ``F`` = log-odds."""
    cond, gaps = torch.empty(len(sentences), _n_filters(net)), torch.empty(len(sentences))
    with _progress(len(sentences), "filter conductance on the corpus") as bar:
        for idx in _by_length(sentences, batch):
            _, emb = net.encode([sentences[i] for i in idx])
            s = attribute(net.model, emb, [LAYER], scores=["conductance"], target=log_odds, n_steps=n_steps,
                          gap_warning=None)["conductance"]
            cond[idx] = s[LAYER]
            gaps[idx] = s.relative_delta(LAYER)
            bar.update(len(idx))
    return cond, gaps


def division_of_labour(cond: torch.Tensor, *, threshold: float = 0.01, min_share: float = 0.10, windows=None):
    """``(signs [N, filters] in {−1, 0, 1} (int8), per-filter table)`` from a conductance matrix: ``|c| <
    threshold`` is 0; a filter takes *both signs* when each sign occurs on at least ``min_share`` of the rows."""
    signs = torch.where(cond.abs() < threshold, torch.zeros_like(cond), cond.sign()).to(torch.int8)
    pos = (signs == 1).float().mean(0)
    neg = (signs == -1).float().mean(0)
    n_f = cond.shape[1]
    table = pd.DataFrame({"filter": np.arange(n_f), "positive": pos.numpy(), "negative": neg.numpy(),
                          "zero": 1 - (pos + neg).numpy(), "mean_conductance": cond.mean(0).numpy(),
                          "both_signs": ((pos >= min_share) & (neg >= min_share)).numpy()})
    if windows is not None:
        table.insert(1, "window", np.repeat(list(windows), n_f // len(windows)))
    return signs, table


# ------------------------------------------------------------------------------------------------ 4 --
def per_token(net, sentences, units, *, target=log_odds, n_steps: int = 32, batch: int = 32):
    """Per-token conductance through each unit, ``[U, N, T]`` (Eq. 2 summed over the embedding dimensions;
    T = the longest sentence's token count, padding cut off), and each sentence's tokens."""
    from ..zoo.sentiment import MIN_PAD

    toks = [net.tokens(s) for s in sentences]
    t_max = max(1, max(len(t) for t in toks))
    out = torch.zeros(len(units), len(sentences), t_max)
    for idx in _by_length(sentences, batch):
        _, emb = net.encode([sentences[i] for i in idx])
        a = neuron_conductance(net.model, emb, LAYER, list(units), target=target, n_steps=n_steps,
                               internal_batch_size=16 * n_steps, unit_batch_size=32)
        a = a.sum(-1)[:, :, MIN_PAD:].transpose(0, 1)  # [U, n, T'] — summed over the embedding dims, leading padding dropped
        for j, i in enumerate(idx):
            out[:, i, :len(toks[i])] = a[:, j, :len(toks[i])]
    return out, toks


@dataclass
class NegationProbe:
    """One probe sentence and the filters whose conductance falls on its negated phrase."""
    probe: str
    tokens: list[str]
    phrase: list[int]             # token positions of the negated phrase ("not", "good")
    predicted: str                # "positive" / "negative"
    sign: int                     # +1: F = log-odds, −1: F = −log-odds (F points at the predicted class)
    log_odds: float
    table: pd.DataFrame           # the candidate filters, most conductance first
    found: list[int]              # the filters whose per-token conductance falls on the phrase
    attributions: dict = field(default_factory=dict)  # filter → per-token conductance on the probe
    ngrams: dict = field(default_factory=dict)        # filter → (start, stop) of the n-gram its max picked


def negation_filters(net, probe: str, *, candidates: int = 30, top: int = 3, min_phrase_share: float = 0.5,
                     min_negation_share: float = 0.2, n_steps: int = 64) -> NegationProbe:
    """The ``top`` filters with the highest conductance on ``probe`` (among the ``candidates`` highest) whose
    per-token conductance falls on the negated phrase (the first negation token and the word after it): at least
    ``min_phrase_share`` of the filter's absolute per-token conductance on the phrase, and at least
    ``min_negation_share`` of it, positive, on the negation token. ``F`` = the log-odds signed towards the
    predicted class."""
    from ..core.errors import UnitscopeError
    from ..zoo.sentiment import NEGATIONS, negation_mask

    tokens = net.tokens(probe)
    mask = negation_mask(tokens).tolist()
    neg = next((j for j, m in enumerate(mask) if m), None)
    end = neg
    while end is not None and end + 1 < len(tokens) and mask[end + 1]:
        end += 1  # WordPiece splits "isn't" into three negation pieces
    if neg is None or end + 1 >= len(tokens):
        raise UnitscopeError("a negation probe needs a negation followed by a word", probe=probe,
                             negations=list(NEGATIONS))
    phrase = list(range(neg, end + 2))
    _, emb = net.encode([probe])
    with torch.no_grad():
        lo = float(log_odds(net.model(emb))[0])
    sign = 1 if lo >= 0 else -1
    target = _signed_log_odds(sign)
    cond = attribute(net.model, emb, [LAYER], scores=["conductance"], target=target, n_steps=n_steps,
                     gap_warning=None)["conductance"][LAYER][0]
    cand = [int(f) for f in cond.topk(min(candidates, cond.numel())).indices if cond[f] > 0]
    attr, _ = per_token(net, [probe], cand, target=target, n_steps=n_steps)
    a = attr[:, 0, :len(tokens)]
    mass = a.abs().sum(1).clamp_min(1e-12)
    phrase_share = a[:, phrase].abs().sum(1) / mass
    neg_share = a[:, neg:end + 1].sum(1).clamp_min(0) / mass
    falls = (phrase_share >= min_phrase_share) & (neg_share >= min_negation_share)
    table = pd.DataFrame({"rank": np.arange(1, len(cand) + 1), "filter": cand,
                          "conductance": [float(cond[f]) for f in cand], "per_token_sum": a.sum(1).numpy(),
                          "phrase_share": phrase_share.numpy(), "negation_share": neg_share.numpy(),
                          "falls_on_phrase": falls.numpy(),
                          "per_token": [" ".join(f"{w}[{v:+.3f}]" for w, v in zip(tokens, row.tolist()))
                                        for row in a]})
    found = [f for f, ok in zip(cand, falls.tolist()) if ok][:top]
    return NegationProbe(probe, tokens, phrase, "positive" if sign > 0 else "negative", sign, lo, table, found,
                         {f: a[cand.index(f)].tolist() for f in found},
                         {f: picked_ngram(net, probe, f) for f in found})


def negation_examples(net, sentences, cond: torch.Tensor, probe: NegationProbe, *, k: int = 5,
                      n_steps: int = 32) -> list[dict]:
    """For each filter found for ``probe``: the ``k`` sentences of ``sentences`` where it has the highest
    conductance (``cond``: log-odds conductance ``[N, filters]``, signed like the probe's ``F``), with its
    per-token conductance there, the share of it on negation tokens, whether the sentence holds a negation
    (:func:`~unitscope.zoo.sentiment.has_negation`, the corpus base rate's definition) and the n-gram that the
    filter's max over time picked (token positions ``ngram = [start, stop)``)."""
    from ..zoo.sentiment import has_negation, negation_mask

    if not probe.found:
        return []
    signed = probe.sign * cond[:, probe.found]                       # [N, found]
    picks = signed.topk(min(k, len(sentences)), dim=0).indices.T     # [found, k]
    union = sorted(set(picks.flatten().tolist()))
    attr, toks = per_token(net, [sentences[i] for i in union], probe.found, target=_signed_log_odds(probe.sign),
                           n_steps=n_steps)
    rows = []
    for u, f in enumerate(probe.found):
        for rank, i in enumerate(picks[u].tolist(), start=1):
            j = union.index(i)
            t = toks[j]
            a = attr[u, j, :len(t)].tolist()
            total = sum(abs(v) for v in a) or 1e-12
            neg = negation_mask(t).tolist()
            start, stop = picked_ngram(net, sentences[i], f)
            rows.append({"probe": probe.probe, "filter": f, "rank": rank, "sentence": sentences[i],
                         "conductance": float(signed[i, u]), "tokens": t, "attributions": a,
                         "negation_share": sum(abs(v) for m, v in zip(neg, a) if m) / total,
                         "has_negation": has_negation(sentences[i]), "ngram": [start, stop],
                         "ngram_text": " ".join(t[start:stop]), "ngram_has_negation": any(neg[start:stop])})
    return rows


def picked_ngram(net, sentence: str, f: int) -> tuple[int, int]:
    """``(start, stop)``: the token positions of the window that filter ``f``'s max over time picked in
    ``sentence`` (clipped to the sentence's tokens; padding positions are not tokens)."""
    from ..zoo.sentiment import MIN_PAD

    filt = net.model.filters
    w = filt.windows[f // filt.maps]
    _, emb = net.encode([sentence])
    with torch.no_grad():
        t = int(torch.relu(filt.convs[f"w{w}"](emb.transpose(1, 2)))[0, f % filt.maps].argmax()) - MIN_PAD
    n = len(net.tokens(sentence))
    return max(0, t), max(0, min(n, t + w))


def recipe_table(*, train: bool = False, maps: int = 64) -> pd.DataFrame:
    """One row per recipe of :data:`~unitscope.zoo.sentiment.RECIPES` whose model is in the cache (every recipe
    with ``train``: the missing ones are trained, a few minutes each): data, tokens, vectors, training sentences,
    test / dev accuracy (held-out movie-review sentences), best epoch and both probes' log-odds, measured now."""
    from ..zoo.sentiment import RECIPES, is_cached, sentiment_cnn

    rows = []
    for name, r in RECIPES.items():
        if not (train or is_cached(name, maps=maps)):
            continue
        net = sentiment_cnn(recipe=name, maps=maps, progress=False)
        lo = net.log_odds(list(NEGATION_PROBES)).tolist()
        rows.append({"recipe": name, "data": "+".join(r["domains"]), "tokens": r["tokens"],
                     "vectors": r["vectors"] or "random", "fine_tuned": not r["freeze"],
                     "max_norm": r["max_norm"] or "none", "n_train": net.info.get("n_train"),
                     "test_accuracy": round(net.test_accuracy, 4), "dev_accuracy": round(net.dev_accuracy, 4),
                     "best_epoch": net.info["best_epoch"],
                     **{f"log_odds[{p}]": round(v, 3) for p, v in zip(NEGATION_PROBES, lo)},
                     "both_probes_right": lo[0] < 0 < lo[1]})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------ entry --
def run(out: str, *, quick: bool = False, seed: int = 0, threads: int | None = 1, net=None, data=None,
        sizes: dict | None = None, recipe: str | None = None, train_recipes: bool = False, echo=print) -> dict:
    """Run the whole study, write its tables and figures into ``out`` and return the summary dict.

    ``net``/``data``: a trained :class:`~unitscope.zoo.sentiment.TrainedSentiment` and the
    :class:`~unitscope.zoo.sentiment.MovieReviews` (default: the cached model of ``recipe`` — default
    ``DEFAULT_RECIPE`` — and the real data); ``sizes`` overrides entries of ``QUICK``/``FULL``; ``seed`` draws the
    corpus and division sentences; ``train_recipes``: train every recipe missing from the cache for the recipe
    table (otherwise it lists the cached ones).
    """
    os.makedirs(out, exist_ok=True)
    with torch_threads(threads), torch.enable_grad():
        return _run(out, quick, seed, net, data, {**(QUICK if quick else FULL), **(sizes or {})}, echo, recipe,
                    train_recipes)


def _run(out, quick, seed, net, data, sz, echo, recipe=None, train_recipes=False) -> dict:
    from ..zoo.sentiment import has_negation, movie_reviews, sentiment_cnn, tokenize

    seconds = {}
    t0 = time.perf_counter()
    data = data if data is not None else movie_reviews()
    given = net is not None
    net = net if given else sentiment_cnn(**({"recipe": recipe} if recipe else {}))
    seconds["data_and_model"] = time.perf_counter() - t0
    recipes = recipe_table(train=train_recipes) if not given else pd.DataFrame()
    if len(recipes):
        _write(recipes, out, "sentiment_recipes", index=False)
        echo("recipes tried (held-out movie-review test sentences; log-odds = logit(pos) − logit(neg)):")
        echo(recipes.drop(columns=["max_norm"]).to_string(index=False))
    echo(f"movie reviews: {data.n_total} sentences, {data.n_zero} with score 0 dropped; train/dev/test "
         f"{len(data.train)}/{len(data.dev)}/{len(data.test)}. Sentiment CNN, recipe "
         f"{net.info.get('recipe', '?')} ({'cached' if net.cached else 'trained'}; "
         f"{net.info.get('n_train', len(data.train))} training sentences): test accuracy {net.test_accuracy:.3f}, "
         f"dev {net.dev_accuracy:.3f} (epoch {net.info['best_epoch']})")

    # 1. agreement with ablation ------------------------------------------------------------------------
    t0 = time.perf_counter()
    sents = data.test.sentences[:sz["agreement"]] if sz["agreement"] else data.test.sentences
    agree, abl, gaps = agreement(net, sents, k=10, n_steps=sz["agreement_steps"])
    summary = summarize_agreement(agree)
    summary["paper"] = [PAPER_PEARSON.get(m, float("nan")) for m in summary.index]
    _write(summary, out, "sentiment_agreement")
    agree.drop(columns=["sentence"]).to_csv(os.path.join(out, "sentiment_agreement_rows.csv"), index=False)
    seconds["agreement"] = time.perf_counter() - t0
    echo(f"\nagreement with ablation (top-10 filters, {len(sents)} test sentences, {sz['agreement_steps']} path "
         f"points; conductance completeness gap: median {100 * float(gaps.median()):.2f}%, "
         f"max {100 * float(gaps.max()):.2f}%):")
    echo(summary[["mean", "median", "paper", "n"]].to_string(float_format=lambda v: f"{v:+.3f}"))

    # 2. additivity of ablations ------------------------------------------------------------------------
    ratio = ablation_ratio(abl).numpy()
    pd.DataFrame({"sentence": sents, "ratio": ratio, "sum": abl.sum(1).numpy(), "abs_sum": abl.abs().sum(1).numpy()}) \
        .to_csv(os.path.join(out, "sentiment_ablation_ratio.csv"), index=False)
    ratio_figure(ratio, os.path.join(out, "sentiment_ablation_ratio.png"))
    echo(f"\n|Σ ablation| / Σ |ablation| over the {abl.shape[1]} filters: median {np.median(ratio):.3f}, "
         f"mean {ratio.mean():.3f}, share ≥ 0.9: {(ratio >= 0.9).mean():.2f}")

    # 3. conductance on the corpus; division of labour ---------------------------------------------------
    t0 = time.perf_counter()
    everything = data.all().sentences
    rng = np.random.default_rng(seed)
    n_corpus = min(sz["corpus"] or len(everything), len(everything))
    pick = np.sort(rng.choice(len(everything), size=n_corpus, replace=False))
    corpus = [everything[i] for i in pick]
    cond, corpus_gaps = corpus_conductance(net, corpus, n_steps=sz["corpus_steps"])
    seconds["corpus_conductance"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    div = np.sort(rng.choice(len(corpus), size=min(sz["division"], len(corpus)), replace=False))
    signs, per_filter = division_of_labour(cond[div], windows=net.model.filters.windows)
    both = float(per_filter["both_signs"].mean())
    _write(per_filter, out, "sentiment_division", index=False)
    division_figure(signs, os.path.join(out, "sentiment_division.png"),
                     f"sign of filter conductance for logit(pos) − logit(neg), {len(div)} sentences "
                     f"(red −, green |c| < 0.01, blue +)")
    seconds["division"] = time.perf_counter() - t0
    share = {k: round(float((signs == v).float().mean()), 3) for k, v in (("positive", 1), ("negative", -1),
                                                                           ("zero", 0))}
    mostly_pos = int(((per_filter["positive"] >= 0.1) & (per_filter["negative"] < 0.1)).sum())
    mostly_neg = int(((per_filter["negative"] >= 0.1) & (per_filter["positive"] < 0.1)).sum())
    quiet = int(((per_filter["negative"] < 0.1) & (per_filter["positive"] < 0.1)).sum())
    echo(f"\ndivision of labour ({len(div)} sentences, {sz['corpus_steps']} path points, completeness gap median "
         f"{100 * float(corpus_gaps.median()):.2f}%): {100 * both:.1f}% of the {signs.shape[1]} filters take both "
         f"signs on ≥ 10% of the sentences each; {mostly_pos} positive-only, {mostly_neg} negative-only, {quiet} "
         f"mostly ≈ 0 (signs: {100 * share['positive']:.1f}% +, {100 * share['negative']:.1f}% −, "
         f"{100 * share['zero']:.1f}% ≈ 0)")

    # 4. negation filters --------------------------------------------------------------------------------
    t0 = time.perf_counter()
    probes = [negation_filters(net, p) for p in NEGATION_PROBES]
    examples = [e for p in probes for e in negation_examples(net, corpus, cond, p, k=sz["examples"])]
    pd.concat([p.table.assign(probe=p.probe) for p in probes], ignore_index=True) \
        .pipe(lambda df: _write(df, out, "sentiment_negation", index=False))
    pd.DataFrame([{**{k: v for k, v in e.items() if k not in ("tokens", "attributions")},
                   "per_token": " ".join(f"{w}[{v:+.3f}]" for w, v in zip(e["tokens"], e["attributions"])
                                         if abs(v) > 1e-3)} for e in examples],
                 columns=["probe", "filter", "rank", "sentence", "conductance", "negation_share", "has_negation",
                          "ngram_text", "ngram_has_negation", "per_token"]).to_csv(os.path.join(out, "sentiment_negation_examples.csv"), index=False)
    from ..zoo.sentiment import NEGATIONS

    corpus_tokens = [tokenize(s) for s in corpus]
    neg_tokens = sum(w in NEGATIONS for t in corpus_tokens for w in t) / max(1, sum(len(t) for t in corpus_tokens))
    neg_sentences = float(np.mean([has_negation(s) for s in corpus]))
    negation_html(probes, examples, os.path.join(out, "sentiment_negation.html"), base_rate=neg_sentences,
                  windows=net.model.filters.windows, maps=net.model.filters.maps)
    negation_figure(probes, examples, os.path.join(out, "sentiment_negation.png"))
    with open(os.path.join(out, "sentiment_negation_caption.md"), "w") as fh:
        fh.write(negation_caption(probes, examples, neg_sentences, len(corpus), sz["examples"]))
    seconds["negation"] = time.perf_counter() - t0
    negation = {}
    for p in probes:
        echo(f"\n“{p.probe}”: predicted {p.predicted} (log-odds {p.log_odds:+.2f}); filters with the highest "
             f"conductance whose per-token conductance falls on “{' '.join(p.tokens[i] for i in p.phrase)}”: "
             f"{p.found or 'none'}")
        echo(p.table.head(10).drop(columns=["rank"]).to_string(index=False, float_format=lambda v: f"{v:+.3f}"))
        filters = []
        for f in p.found:
            ex = [e for e in examples if e["probe"] == p.probe and e["filter"] == f]
            row = p.table.set_index("filter").loc[f]
            filters.append({"filter": f, "rank_by_conductance": int(row["rank"]),
                            "conductance": round(float(row["conductance"]), 4),
                            "phrase_share": round(float(row["phrase_share"]), 3),
                            "top_sentences_with_negation": round(float(np.mean([e["has_negation"] for e in ex])), 3),
                            "top_sentences_with_negation_vs_base_rate": round(
                                float(np.mean([e["has_negation"] for e in ex])) / max(neg_sentences, 1e-12), 2),
                            "top_ngrams_with_negation": round(float(np.mean([e["ngram_has_negation"] for e in ex])),
                                                              3),
                            "n_top_sentences": len(ex),
                            "top_sentences_negation_share": round(float(np.mean([e["negation_share"] for e in ex])),
                                                                  3)})
            for e in ex[:5]:
                echo(f"  #{f} top {e['rank']} ({e['conductance']:+.3f}): "
                     + " ".join(f"{w}[{v:+.2f}]" if abs(v) > 0.01 else w for w, v in
                                zip(e["tokens"], e["attributions"])))
        negation[p.probe] = {"predicted": p.predicted, "log_odds": round(p.log_odds, 3), "filters": filters}
    echo(f"\n{100 * neg_sentences:.1f}% of the {len(corpus)} corpus sentences contain not/n't/no/never (the base "
         f"rate for the share of a filter's top sentences that do)")

    result = {"test_accuracy": round(net.test_accuracy, 4), "dev_accuracy": round(net.dev_accuracy, 4),
              "quick": bool(quick), "seed": seed,
              "pearson": {m: round(float(v), 3) for m, v in summary["mean"].items()},
              "pearson_median": {m: round(float(v), 3) for m, v in summary["median"].items()},
              "paper_pearson": PAPER_PEARSON, "n_agreement": len(sents),
              "conductance_gap_median": round(float(gaps.median()), 5),
              "ablation_ratio_median": round(float(np.median(ratio)), 3),
              "ablation_ratio_mean": round(float(ratio.mean()), 3),
              "both_sign_filter_share": round(both, 3), "n_division": len(div), "sign_shares": share,
              "negation_filters": {p.probe: p.found for p in probes}, "negation": negation,
              "negation_token_share_in_corpus": round(neg_tokens, 4),
              "negation_sentence_share_in_corpus": round(neg_sentences, 4), "n_corpus": len(corpus),
              "recipe": net.info.get("recipe"), "n_train": net.info.get("n_train"),
              "recipes": recipes.to_dict(orient="records"),
              "figures": {"sentiment_negation.png": "sentiment_negation_caption.md",
                          "sentiment_negation.html": "sentiment_negation_caption.md"},
              "seconds": {k: round(v, 1) for k, v in seconds.items()}}
    with open(os.path.join(out, "sentiment.json"), "w") as fh:
        json.dump(result, fh, indent=1)
    write_manifest(out, result, net, probes, examples, neg_sentences, len(corpus), sz, bool(len(recipes)))
    return result


@restores_process_state
def main(argv=None) -> dict:
    p = argparse.ArgumentParser(prog="python -m unitscope.studies.sentiment", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help=f"fewer sentences and path points: {QUICK} (full: {FULL}; None = all)")
    p.add_argument("--out", default="unitscope-out/sentiment")
    p.add_argument("--seed", type=int, default=0, help="draws the corpus and division-of-labour sentences")
    p.add_argument("--recipe", default=None, help="the model's recipe (default: zoo.sentiment.DEFAULT_RECIPE)")
    p.add_argument("--train-recipes", action="store_true",
                   help="train every recipe missing from the cache for the recipe table (minutes each)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (default 1: faster than 2 for this small model on a busy machine)")
    args = p.parse_args(argv)
    result = run(args.out, quick=args.quick, seed=args.seed, threads=args.threads, recipe=args.recipe,
                 train_recipes=args.train_recipes,
                 echo=lambda *a: print(*a, flush=True))
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
