"""Part 4 of the sentiment study (:mod:`unitscope.studies.sentiment`): filters that carry negation.

For "this is not good" and "this is not bad": the filters with the highest conductance (for
``F = ±(logit(positive) − logit(negative))``, signed towards the predicted class) whose per-token conductance
(Eq. 2, summed over the 50 embedding dimensions) falls on the negated phrase; then the corpus sentences where each
of them has the highest conductance, the share of those that hold a negation against the corpus base rate, and the
n-gram that the filter's max over time picked.

>>> log_odds(torch.tensor([[0.5, 2.0]])).tolist()
[1.5]
>>> _by_length(["a long one", "b", "cc"], 2)
[[1, 2], [0]]
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from ..attribution.config import PathConfig
from ..attribution.neuron import neuron_conductance
from ..attribution.scores import attribute
from .sentiment_figures import negation_caption, negation_figure, negation_html
from .tables import write_table

__all__ = [
    "NEGATION_PROBES",
    "LAYER",
    "log_odds",
    "per_token",
    "NegationProbe",
    "negation_filters",
    "negation_examples",
    "picked_ngram",
    "negation_section",
]

NEGATION_PROBES = ("this is not good", "this is not bad")
LAYER = "filters"


def log_odds(out: torch.Tensor) -> torch.Tensor:
    """``logit(positive) − logit(negative)``: one signed sentiment score per example."""
    return out[:, 1] - out[:, 0]


def _signed_log_odds(sign: int):
    return lambda out: sign * (out[:, 1] - out[:, 0])


def _by_length(sentences, size: int):
    """Index groups of about ``size`` sentences of similar length (less padding per batch)."""
    order = sorted(range(len(sentences)), key=lambda i: (len(sentences[i]), i))
    return [order[i : i + size] for i in range(0, len(order), size)]


def per_token(net, sentences, units, *, target=log_odds, n_steps: int = 32, batch: int = 32):
    """Per-token conductance through each unit, ``[U, N, T]`` (Eq. 2 summed over the embedding dimensions;
    T = the longest sentence's token count, padding cut off), and each sentence's tokens."""
    from ..zoo.sentiment import MIN_PAD

    toks = [net.tokens(s) for s in sentences]
    t_max = max(1, max(len(t) for t in toks))
    out = torch.zeros(len(units), len(sentences), t_max)
    for idx in _by_length(sentences, batch):
        _, emb = net.encode([sentences[i] for i in idx])
        a = neuron_conductance(
            net.model,
            emb,
            LAYER,
            list(units),
            target=target,
            n_steps=n_steps,
            internal_batch_size=16 * n_steps,
            path=PathConfig(unit_batch_size=32),
            method="gausslegendre",
        )
        # [U, n, T'] — summed over the embedding dims, leading padding dropped
        a = a.sum(-1)[:, :, MIN_PAD:].transpose(0, 1)
        for j, i in enumerate(idx):
            out[:, i, : len(toks[i])] = a[:, j, : len(toks[i])]
    return out, toks


@dataclass
class NegationProbe:
    """One probe sentence and the filters whose conductance falls on its negated phrase."""

    probe: str
    tokens: list[str]
    phrase: list[int]  # token positions of the negated phrase ("not", "good")
    predicted: str  # "positive" / "negative"
    sign: int  # +1: F = log-odds, −1: F = −log-odds (F points at the predicted class)
    log_odds: float
    table: pd.DataFrame  # the candidate filters, most conductance first
    found: list[int]  # the filters whose per-token conductance falls on the phrase
    attributions: dict = field(default_factory=dict)  # filter → per-token conductance on the probe
    ngrams: dict = field(default_factory=dict)  # filter → (start, stop) of the n-gram its max picked


def negation_filters(
    net,
    probe: str,
    *,
    candidates: int = 30,
    top: int = 3,
    min_phrase_share: float = 0.5,
    min_negation_share: float = 0.2,
    n_steps: int = 64,
) -> NegationProbe:
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
        raise UnitscopeError(
            "a negation probe needs a negation followed by a word", probe=probe, negations=list(NEGATIONS)
        )
    phrase = list(range(neg, end + 2))
    _, emb = net.encode([probe])
    with torch.no_grad():
        lo = float(log_odds(net.model(emb))[0])
    sign = 1 if lo >= 0 else -1
    target = _signed_log_odds(sign)
    cond = attribute(
        net.model,
        emb,
        [LAYER],
        scores=["conductance"],
        target=target,
        n_steps=n_steps,
        path=PathConfig(gap_warning=None),
    )["conductance"][LAYER][0]
    cand = [int(f) for f in cond.topk(min(candidates, cond.numel())).indices if cond[f] > 0]
    attr, _ = per_token(net, [probe], cand, target=target, n_steps=n_steps)
    a = attr[:, 0, : len(tokens)]
    mass = a.abs().sum(1).clamp_min(1e-12)
    phrase_share = a[:, phrase].abs().sum(1) / mass
    neg_share = a[:, neg : end + 1].sum(1).clamp_min(0) / mass
    falls = (phrase_share >= min_phrase_share) & (neg_share >= min_negation_share)
    table = pd.DataFrame(
        {
            "rank": np.arange(1, len(cand) + 1),
            "filter": cand,
            "conductance": [float(cond[f]) for f in cand],
            "per_token_sum": a.sum(1).numpy(),
            "phrase_share": phrase_share.numpy(),
            "negation_share": neg_share.numpy(),
            "falls_on_phrase": falls.numpy(),
            "per_token": [" ".join(f"{w}[{v:+.3f}]" for w, v in zip(tokens, row.tolist())) for row in a],
        }
    )
    found = [f for f, ok in zip(cand, falls.tolist()) if ok][:top]
    return NegationProbe(
        probe,
        tokens,
        phrase,
        "positive" if sign > 0 else "negative",
        sign,
        lo,
        table,
        found,
        {f: a[cand.index(f)].tolist() for f in found},
        {f: picked_ngram(net, probe, f) for f in found},
    )


def negation_examples(
    net, sentences, cond: torch.Tensor, probe: NegationProbe, *, k: int = 5, n_steps: int = 32
) -> list[dict]:
    """For each filter found for ``probe``: the ``k`` sentences of ``sentences`` where it has the highest
    conductance (``cond``: log-odds conductance ``[N, filters]``, signed like the probe's ``F``), with its
    per-token conductance there, the share of it on negation tokens, whether the sentence holds a negation
    (:func:`~unitscope.zoo.sentiment.has_negation`, the corpus base rate's definition) and the n-gram that the
    filter's max over time picked (token positions ``ngram = [start, stop)``)."""
    from ..zoo.sentiment import has_negation, negation_mask

    if not probe.found:
        return []
    signed = probe.sign * cond[:, probe.found]  # [N, found]
    picks = signed.topk(min(k, len(sentences)), dim=0).indices.T  # [found, k]
    union = sorted(set(picks.flatten().tolist()))
    attr, toks = per_token(
        net, [sentences[i] for i in union], probe.found, target=_signed_log_odds(probe.sign), n_steps=n_steps
    )
    rows = []
    for u, f in enumerate(probe.found):
        for rank, i in enumerate(picks[u].tolist(), start=1):
            j = union.index(i)
            t = toks[j]
            a = attr[u, j, : len(t)].tolist()
            total = sum(abs(v) for v in a) or 1e-12
            neg = negation_mask(t).tolist()
            start, stop = picked_ngram(net, sentences[i], f)
            rows.append(
                {
                    "probe": probe.probe,
                    "filter": f,
                    "rank": rank,
                    "sentence": sentences[i],
                    "conductance": float(signed[i, u]),
                    "tokens": t,
                    "attributions": a,
                    "negation_share": sum(abs(v) for m, v in zip(neg, a) if m) / total,
                    "has_negation": has_negation(sentences[i]),
                    "ngram": [start, stop],
                    "ngram_text": " ".join(t[start:stop]),
                    "ngram_has_negation": any(neg[start:stop]),
                }
            )
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


def negation_section(net, corpus, cond: torch.Tensor, out: str, *, k: int = 20, echo=print):
    """Part 4 of the study: both probes' negation filters (:func:`negation_filters`), their top ``k`` sentences of
    ``corpus`` (``cond``: its log-odds conductance ``[N, filters]``), the tables, the Figures 4/5 analogue and its
    caption in ``out``. Returns ``(summary, probes, examples, base rate)``; ``summary`` holds the JSON's
    ``negation``, ``negation_filters``, ``negation_token_share_in_corpus`` and
    ``negation_sentence_share_in_corpus``."""
    from ..zoo.sentiment import NEGATIONS, has_negation, tokenize

    probes = [negation_filters(net, p) for p in NEGATION_PROBES]
    examples = [e for p in probes for e in negation_examples(net, corpus, cond, p, k=k)]
    pd.concat([p.table.assign(probe=p.probe) for p in probes], ignore_index=True).pipe(
        lambda df: write_table(df, out, "sentiment_negation", index=False)
    )
    pd.DataFrame(
        [
            {
                **{key: v for key, v in e.items() if key not in ("tokens", "attributions")},
                "per_token": " ".join(
                    f"{w}[{v:+.3f}]" for w, v in zip(e["tokens"], e["attributions"]) if abs(v) > 1e-3
                ),
            }
            for e in examples
        ],
        columns=[
            "probe",
            "filter",
            "rank",
            "sentence",
            "conductance",
            "negation_share",
            "has_negation",
            "ngram_text",
            "ngram_has_negation",
            "per_token",
        ],
    ).to_csv(os.path.join(out, "sentiment_negation_examples.csv"), index=False)
    corpus_tokens = [tokenize(s) for s in corpus]
    neg_tokens = sum(w in NEGATIONS for t in corpus_tokens for w in t) / max(1, sum(len(t) for t in corpus_tokens))
    neg_sentences = float(np.mean([has_negation(s) for s in corpus]))
    negation_html(
        probes,
        examples,
        os.path.join(out, "sentiment_negation.html"),
        base_rate=neg_sentences,
        windows=net.model.filters.windows,
        maps=net.model.filters.maps,
    )
    negation_figure(probes, examples, os.path.join(out, "sentiment_negation.png"))
    with open(os.path.join(out, "sentiment_negation_caption.md"), "w") as fh:
        fh.write(negation_caption(probes, examples, neg_sentences, len(corpus), k))
    negation = {}
    for p in probes:
        echo(
            f"\n“{p.probe}”: predicted {p.predicted} (log-odds {p.log_odds:+.2f}); filters with the highest "
            f"conductance whose per-token conductance falls on “{' '.join(p.tokens[i] for i in p.phrase)}”: "
            f"{p.found or 'none'}"
        )
        echo(p.table.head(10).drop(columns=["rank"]).to_string(index=False, float_format=lambda v: f"{v:+.3f}"))
        filters = []
        for f in p.found:
            ex = [e for e in examples if e["probe"] == p.probe and e["filter"] == f]
            row = p.table.set_index("filter").loc[f]
            filters.append(
                {
                    "filter": f,
                    "rank_by_conductance": int(row["rank"]),
                    "conductance": round(float(row["conductance"]), 4),
                    "phrase_share": round(float(row["phrase_share"]), 3),
                    "top_sentences_with_negation": round(float(np.mean([e["has_negation"] for e in ex])), 3),
                    "top_sentences_with_negation_vs_base_rate": round(
                        float(np.mean([e["has_negation"] for e in ex])) / max(neg_sentences, 1e-12), 2
                    ),
                    "top_ngrams_with_negation": round(float(np.mean([e["ngram_has_negation"] for e in ex])), 3),
                    "n_top_sentences": len(ex),
                    "top_sentences_negation_share": round(float(np.mean([e["negation_share"] for e in ex])), 3),
                }
            )
            for e in ex[:5]:
                echo(
                    f"  #{f} top {e['rank']} ({e['conductance']:+.3f}): "
                    + " ".join(f"{w}[{v:+.2f}]" if abs(v) > 0.01 else w for w, v in zip(e["tokens"], e["attributions"]))
                )
        negation[p.probe] = {"predicted": p.predicted, "log_odds": round(p.log_odds, 3), "filters": filters}
    echo(
        f"\n{100 * neg_sentences:.1f}% of the {len(corpus)} corpus sentences contain not/n't/no/never (the base "
        f"rate for the share of a filter's top sentences that do)"
    )
    summary = {
        "negation_filters": {p.probe: p.found for p in probes},
        "negation": negation,
        "negation_token_share_in_corpus": round(neg_tokens, 4),
        "negation_sentence_share_in_corpus": round(neg_sentences, 4),
    }
    return summary, probes, examples, neg_sentences
