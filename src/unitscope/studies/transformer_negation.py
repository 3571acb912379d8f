"""Negation neurons of MiniLM: per-token conductance (an MLP layer's own ``[tokens × 1536]`` conductance, for the
log-odds) on test sentences with a negation; neurons ranked by the share of their attribution mass on negation
tokens; their values on "not good" / "not bad" probes and highlighted corpus sentences — side by side with the
sentiment CNN's negation filters (:func:`unitscope.studies.sentiment.negation_filters` on the same sentences).

>>> unit_label(2, 1265), fmt(["not", "good"], [0.5, -0.25])
('L2:n1265', 'not[+0.500] good[-0.250]')
"""

from __future__ import annotations

import os

import pandas as pd
import torch

from ..core.units import UnitSpec
from .tables import write_table
from .transformer_scores import layers, score_sentences

__all__ = ["negation_neurons", "probe_neurons", "cnn_negation", "negation_section", "unit_label", "fmt"]

WORDS = UnitSpec.tokens(reduce="sum")  # per-token values [layers, T, 1536] → [layers, 1536], over the words


def unit_label(layer: int, neuron: int) -> str:
    """``L2:n1265``: neuron 1265 of layer 2's MLP."""
    return f"L{layer}:n{neuron}"


def fmt(tokens, values) -> str:
    """``word[+0.123] …``: tokens with their values."""
    return " ".join(f"{w}[{v:+.3f}]" for w, v in zip(tokens, values))


def negation_neurons(per_token, tokens, cond_total: dict, *, candidates: int = 64) -> pd.DataFrame:
    """Neurons ranked by the share of their per-token |conductance| (log-odds) that lands on negation tokens.

    ``per_token``: per sentence ``[6, T_i, 1536]``; ``cond_total``: ``{layer index: [N, 1536]}`` total conductance
    (candidates: the ``candidates`` neurons of each layer with the largest mean |conductance|). One row per
    candidate, sorted by ``negation_share``; ``attrs["token_share"]`` is the share of tokens that are negations
    (what a neuron with no preference would get).
    """
    from ..zoo.minilm import negation_mask

    neg = [negation_mask(t) for t in tokens]
    rows = []
    for li, total in cond_total.items():
        cand = total.abs().mean(0).topk(candidates).indices
        mass = torch.zeros(len(cand))
        neg_mass = torch.zeros(len(cand))
        dominated = torch.zeros(len(cand))
        signed = torch.zeros(len(cand))
        for v, m in zip(per_token, neg):
            a = v[li][:, cand]  # [T, C]
            mass += a.abs().sum(0)
            on = a[m].abs().sum(0)
            neg_mass += on
            dominated += (on > 0.5 * a.abs().sum(0)).float()
            signed += a[m].sum(0)
        n_neg = int(sum(int(m.sum()) for m in neg))
        for j, u in enumerate(cand.tolist()):
            rows.append(
                {
                    "layer": li,
                    "neuron": u,
                    "negation_share": float(neg_mass[j] / mass[j].clamp_min(1e-12)),
                    "sentences_dominated": float(dominated[j] / len(per_token)),
                    "mean_attr_on_negation": float(signed[j] / max(1, n_neg)),
                    "mean_abs_conductance": float(total[:, u].abs().mean()),
                }
            )
    df = pd.DataFrame(rows).sort_values("negation_share", ascending=False).reset_index(drop=True)
    df.attrs["token_share"] = sum(int(m.sum()) for m in neg) / max(1, sum(len(t) for t in tokens))
    return df


def probe_neurons(
    lm,
    probe: str,
    *,
    candidates: int = 60,
    top: int = 3,
    min_phrase_share: float = 0.5,
    min_negation_share: float = 0.2,
    n_steps: int = 32,
) -> dict:
    """The MiniLM analogue of ``studies.sentiment.negation_filters``: among the ``candidates`` MLP neurons (all six
    layers pooled) with the highest conductance on ``probe``'s words (``F`` = the log-odds signed towards the
    predicted class), the ``top`` ones whose per-token conductance falls on the negated phrase — at least
    ``min_phrase_share`` of its absolute per-token conductance on the negation and the word after it, and at least
    ``min_negation_share`` of it, positive, on the negation itself."""
    from ..core.errors import UnitscopeError
    from ..zoo.minilm import log_odds, negation_mask

    enc = lm.encode([probe])
    tokens = enc.tokens[0]
    neg = negation_mask(tokens).nonzero().flatten().tolist()
    if not neg or neg[-1] + 1 >= len(tokens):
        raise UnitscopeError("a negation probe needs a negation followed by a word", probe=probe, tokens=tokens)
    phrase = neg + [neg[-1] + 1]
    with torch.no_grad():
        lo = float(log_odds(lm.on_ids(enc.ids, enc.attention_mask))[0])
    sign = 1 if lo >= 0 else -1
    sc = score_sentences(
        lm,
        [probe],
        scores=["conductance"],
        target=lambda out: sign * log_odds(out),
        n_steps=n_steps,
        per_token=True,
        progress=False,
    )
    a = sc["per_token"][0]  # [6, T, 1536]: the words' per-token conductance
    total = WORDS.per_unit(a, "sum").flatten()  # [6 · 1536]: each neuron over the words
    cand = [int(u) for u in total.topk(candidates).indices if total[u] > 0]
    rows = []
    for u in cand:
        li, j = divmod(u, 1536)
        v = a[li, :, j]
        mass = float(v.abs().sum()) or 1e-12
        rows.append(
            {
                "layer": li,
                "neuron": j,
                "conductance": float(total[u]),
                "phrase_share": float(v[phrase].abs().sum()) / mass,
                "negation_share": float(v[neg].clamp_min(0).sum()) / mass,
                "per_token": fmt(tokens, v.tolist()),
                "values": v.tolist(),
            }
        )
    table = pd.DataFrame(rows)
    table["falls_on_phrase"] = (table["phrase_share"] >= min_phrase_share) & (
        table["negation_share"] >= min_negation_share
    )
    found = table[table["falls_on_phrase"]].head(top)
    return {
        "probe": probe,
        "tokens": tokens,
        "phrase": phrase,
        "sign": sign,
        "log_odds": lo,
        "predicted": "positive" if sign > 0 else "negative",
        "table": table,
        "found": [(int(r.layer), int(r.neuron)) for r in found.itertuples()],
        "attributions": {(int(r.layer), int(r.neuron)): r.values for r in found.itertuples()},
    }


def cnn_negation(corpus, probes, *, n_steps: int = 16, recipe: str | None = None):
    """The sentiment CNN's negation filters for the same probes (``studies.sentiment.negation_filters``) and its
    top corpus sentences among ``corpus`` (``negation_examples``); ``recipe``: the CNN's (default: the zoo's)."""
    from ..zoo.sentiment import DEFAULT_RECIPE, sentiment_cnn
    from .sentiment import corpus_conductance
    from .sentiment_negation import negation_examples, negation_filters

    net = sentiment_cnn(recipe=recipe or DEFAULT_RECIPE, progress=False)
    cond, _ = corpus_conductance(net, corpus, n_steps=n_steps)
    out = []
    for probe in probes:
        found = negation_filters(net, probe)
        by_filter = found.table.set_index("filter")
        ex = negation_examples(net, corpus, cond, found, k=1, n_steps=n_steps)
        out.append(
            {
                "probe": probe,
                "predicted": found.predicted,
                "log_odds": round(found.log_odds, 3),
                "filters": [
                    {
                        "filter": int(f),
                        "per_token": fmt(found.tokens, found.attributions[f]),
                        "phrase_share": round(float(by_filter.loc[f, "phrase_share"]), 3),
                        "negation_share": round(float(by_filter.loc[f, "negation_share"]), 3),
                    }
                    for f in found.found
                ],
                "examples": [
                    {
                        "filter": int(e["filter"]),
                        "sentence": e["sentence"],
                        "per_token": fmt(e["tokens"], e["attributions"]),
                        "negation_share": round(float(e["negation_share"]), 3),
                    }
                    for e in ex
                ],
            }
        )
    return net, out


def negation_section(
    lm,
    corpus,
    probes,
    out: str,
    *,
    n_steps: int,
    probe_steps: int,
    candidates: int,
    with_cnn: bool = True,
    cnn_recipe: str | None = None,
    progress: bool | None = None,
) -> dict:
    """The whole negation part on ``corpus`` (test sentences with a negation) and the ``probes``: writes
    ``transformer_negation_corpus``, ``transformer_negation_vs_cnn`` (tables) and
    ``transformer_negation_examples.md``; returns what the summary, the figure and the report need."""
    from ..core.progress import note
    from ..zoo.minilm import log_odds, negation_mask

    mlp, _ = layers()
    neg = score_sentences(
        lm,
        corpus,
        scores=["conductance"],
        target=log_odds,
        n_steps=n_steps,
        per_token=True,
        progress=progress,
        desc="per-token conductance, negation sentences",
    )
    totals = {li: neg["neurons"]["conductance"][l] for li, l in enumerate(mlp)}
    table = negation_neurons(neg["per_token"], neg["tokens"], totals, candidates=candidates)
    write_table(table, out, "transformer_negation_corpus", index=False)
    chance = table.attrs["token_share"]
    note(f"negation probes: {', '.join(repr(p) for p in probes)} ({probe_steps} path points each)")
    found = [probe_neurons(lm, pr, n_steps=probe_steps) for pr in probes]
    lines = [
        "## MiniLM neurons whose per-token conductance falls on the negated phrase",
        "",
        "F = log-odds towards the predicted class; `L2:n1265` is neuron 1265 of layer 2's MLP; values are its "
        "conductance at each token position.",
        "",
    ]
    negation, highlighted, fig_rows = [], [], []
    for pr in found:
        lines.append(
            f"- **{pr['probe']}**: predicted {pr['predicted']} (log-odds {pr['log_odds']:+.2f}); neurons "
            f"on “{' '.join(pr['tokens'][i] for i in pr['phrase'])}”: "
            f"{', '.join(unit_label(l, j) for l, j in pr['found']) or 'none'} "
            f"(of {len(pr['table'])} candidates)"
        )
        t = pr["table"].set_index(["layer", "neuron"])
        for li, j in pr["found"]:
            r = t.loc[(li, j)]
            negation.append(
                {
                    "probe": pr["probe"],
                    "layer": li,
                    "neuron": j,
                    "conductance": round(float(r["conductance"]), 4),
                    "phrase_share": round(float(r["phrase_share"]), 3),
                    "negation_share": round(float(r["negation_share"]), 3),
                    "per_token": r["per_token"],
                }
            )
            lines.append(f"  - {unit_label(li, j)}: {r['per_token']}")
            # the corpus sentences where this neuron's conductance (signed like the probe's F) is highest
            signed = pr["sign"] * totals[li][:, j]
            for i in signed.topk(min(2, len(corpus))).indices.tolist():
                vals = pr["sign"] * neg["per_token"][i][li][:, j]
                m = negation_mask(neg["tokens"][i])
                share = float(vals[m].abs().sum() / vals.abs().sum().clamp_min(1e-12))
                highlighted.append(
                    {
                        "probe": pr["probe"],
                        "layer": li,
                        "neuron": j,
                        "sentence": corpus[i],
                        "negation_share": round(share, 3),
                        "tokens": [[w, round(float(v), 4)] for w, v in zip(neg["tokens"][i], vals.tolist())],
                    }
                )
                lines.append(f"    - corpus: {fmt(neg['tokens'][i], vals.tolist())} (on negations: {share:.2f})")
        fig_rows.append(
            (
                f"MiniLM: {pr['probe']!r} → {pr['predicted']} (log-odds {pr['log_odds']:+.2f}); F = the "
                "log-odds towards that prediction",
                pr["tokens"],
                {unit_label(l, j): v for (l, j), v in pr["attributions"].items()},
            )
        )
    best = table.head(5)
    shown = best.assign(unit=[unit_label(int(r.layer), int(r.neuron)) for r in best.itertuples()])
    shown = shown[["unit"] + [c for c in best.columns if c not in ("layer", "neuron")]]
    lines += [
        "",
        f"## corpus ranking: share of per-token |conductance| on negation WordPieces ({len(corpus)} test "
        f"sentences with a negation; negations are {100 * chance:.1f}% of their tokens)",
        "",
        shown.to_markdown(index=False, floatfmt=".3f"),
        "",
    ]
    for r in best.head(2).itertuples():
        li, j = int(r.layer), int(r.neuron)
        on = torch.tensor(
            [float(v[li][negation_mask(t), j].abs().sum()) for v, t in zip(neg["per_token"], neg["tokens"])]
        )
        i = int(on.argmax())
        vals = neg["per_token"][i][li][:, j]
        fig_rows.append(
            (
                f"MiniLM {unit_label(li, j)} (corpus; F = log-odds of positive): {corpus[i][:70]}",
                neg["tokens"][i][:30],
                {unit_label(li, j): vals[:30].numpy()},
            )
        )

    cnn = None
    if with_cnn:
        note(
            "the sentiment CNN's negation filters on the same probes and sentences"
            + (f" (its {cnn_recipe!r} recipe)" if cnn_recipe else "")
        )
        net, cnn_probes = cnn_negation(corpus, probes, recipe=cnn_recipe)
        cnn = {"test_accuracy": round(net.test_accuracy, 4), "recipe": cnn_recipe or "default", "probes": cnn_probes}
        side = pd.DataFrame(
            [
                {
                    "probe": pr["probe"],
                    "minilm_predicted": pr["predicted"],
                    "minilm_neurons": ", ".join(unit_label(l, j) for l, j in pr["found"]) or "none",
                    "cnn_predicted": c["predicted"],
                    "cnn_filters": ", ".join(f"#{f['filter']}" for f in c["filters"]) or "none",
                }
                for pr, c in zip(found, cnn_probes)
            ]
        )
        write_table(side, out, "transformer_negation_vs_cnn", index=False)
        lines += [
            "",
            f"## side by side with the sentiment CNN ({cnn['recipe']} recipe, test accuracy "
            f"{cnn['test_accuracy']:.3f}; "
            f"per-token conductance = Eq. 2 through the filter, summed over the embedding dims)",
            "",
            side.to_markdown(index=False),
            "",
        ]
        for c in cnn_probes:
            for f in c["filters"]:
                lines.append(f"- CNN #{f['filter']} on **{c['probe']}**: {f['per_token']}")
            for e in c["examples"]:
                lines.append(f"  - corpus (#{e['filter']}): {e['per_token']} (on negations: {e['negation_share']:.2f})")
    with open(os.path.join(out, "transformer_negation_examples.md"), "w") as fh:
        fh.write("\n".join(lines) + "\n")
    return {
        "table": table,
        "best": best,
        "chance": chance,
        "probes": found,
        "negation": negation,
        "highlighted": highlighted,
        "fig_rows": fig_rows,
        "cnn": cnn,
        "lines": lines,
    }
