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

import json
import os
import time
import numpy as np
import pandas as pd
import torch

from ..attribution.config import PathConfig
from ..attribution.scores import SCORES, attribute
from ..core.progress import bar as progress_bar
from ..core.state import restores_process_state, torch_threads
from ..data.ablation import ablation_scores
from .agreement import ablation_agreement, summarize_agreement
from .common import study_parser
from .sentiment_figures import PAPER_PEARSON, division_figure, negation_html, ratio_figure, write_manifest
from .sentiment_negation import (
    LAYER,
    NEGATION_PROBES,
    NegationProbe,
    _by_length,
    log_odds,
    negation_examples,
    negation_filters,
    negation_section,
    per_token,
    picked_ngram,
)
from .tables import write_table

__all__ = [
    "run",
    "main",
    "agreement",
    "ablation_ratio",
    "corpus_conductance",
    "division_of_labour",
    "per_token",
    "negation_filters",
    "negation_examples",
    "negation_html",
    "NegationProbe",
    "log_odds",
    "PAPER_PEARSON",
    "NEGATION_PROBES",
    "picked_ngram",
    "negation_section",
    "recipe_table",
]

#: sentences per part: agreement (None: the whole test split), corpus (conductance for the negation search;
#: None: every sentence), division (a random subset of the corpus), examples (top sentences per negation filter)
QUICK = {"agreement": 100, "corpus": 500, "division": 500, "examples": 20, "agreement_steps": 32, "corpus_steps": 16}
FULL = {"agreement": None, "corpus": None, "division": 4000, "examples": 20, "agreement_steps": 50, "corpus_steps": 20}


def _n_filters(net) -> int:
    f = net.model.filters
    return len(f.windows) * f.maps


def _progress(total, desc):
    return progress_bar(total=total, desc=desc, unit="sentence")


def _write(df: pd.DataFrame, out: str, name: str, *, index: bool = True) -> None:
    write_table(df, out, name, index=index)


# ---------------------------------------------------------------------------------------- 1 and 2 --
def agreement(net, sentences, *, k: int = 10, n_steps: int = 50, batch: int = 100):
    """``(per-sentence agreement rows, ablation scores [N, filters], conductance completeness gap [N], F(x) − F(x')
    [N])`` (the gap relative to ``|F(x) − F(x')|``); the target is each sentence's predicted class. A row per
    sentence and ``score`` (conductance, internal influence, …): its Pearson r with ablation over the top-``k``
    filters, those filters, their ``scores`` and ``ablation_scores``."""
    n_f = _n_filters(net)
    frames, abl, gaps, diffs = (
        [],
        torch.empty(len(sentences), n_f),
        torch.empty(len(sentences)),
        torch.empty(len(sentences)),
    )
    with _progress(len(sentences), "agreement with ablation") as bar:
        for idx in _by_length(sentences, batch):
            _, emb = net.encode([sentences[i] for i in idx])
            scores = attribute(
                net.model, emb, [LAYER], scores=SCORES, n_steps=n_steps, path=PathConfig(gap_warning=None)
            )
            df = ablation_agreement(net.model, emb, LAYER, k=k, scores=scores)
            df["example"] = [idx[i] for i in df["example"]]
            frames.append(df)
            abl[idx] = ablation_scores(net.model, emb, LAYER)
            gaps[idx] = scores["conductance"].relative_delta(LAYER)
            diffs[idx] = scores["conductance"].output_diff.float()
            bar.update(len(idx))
    df = pd.concat(frames, ignore_index=True).sort_values(["score", "example"], kind="stable")
    df["sentence"] = [sentences[i] for i in df["example"]]
    return df.reset_index(drop=True), abl, gaps, diffs


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
            s = attribute(
                net.model,
                emb,
                [LAYER],
                scores=["conductance"],
                target=log_odds,
                n_steps=n_steps,
                path=PathConfig(gap_warning=None),
            )["conductance"]
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
    table = pd.DataFrame(
        {
            "filter": np.arange(n_f),
            "positive": pos.numpy(),
            "negative": neg.numpy(),
            "zero": 1 - (pos + neg).numpy(),
            "mean_conductance": cond.mean(0).numpy(),
            "both_signs": ((pos >= min_share) & (neg >= min_share)).numpy(),
        }
    )
    if windows is not None:
        table.insert(1, "window", np.repeat(list(windows), n_f // len(windows)))
    return signs, table


# ------------------------------------------------------------------------------------------------ 5 --
#: the optional recipe keys shown in the recipe table (see :data:`unitscope.zoo.sentiment.RECIPES`)
OPTIONS = (
    "soft",
    "balanced",
    "movie_min_abs",
    "movie_copies",
    "lr_decay",
    "negation_copies",
    "augment",
    "ema",
    "average_last",
    "word_dropout",
    "embed_dropout",
    "label_smoothing",
)


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
        rows.append(
            {
                "recipe": name,
                "data": "+".join(r["domains"]),
                "tokens": r["tokens"],
                "vectors": r["vectors"] or "random",
                "fine_tuned": not r["freeze"],
                "max_norm": r["max_norm"] or "none",
                "n_train": net.info.get("n_train"),
                "options": ", ".join(f"{k}={r[k]}" for k in OPTIONS if r.get(k)) or "—",
                "test_accuracy": round(net.test_accuracy, 4),
                "dev_accuracy": round(net.dev_accuracy, 4),
                "best_epoch": net.info["best_epoch"],
                **{f"log_odds[{p}]": round(v, 3) for p, v in zip(NEGATION_PROBES, lo)},
                "both_probes_right": lo[0] < 0 < lo[1],
            }
        )
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------ entry --
def run(
    out: str,
    *,
    quick: bool = False,
    seed: int = 0,
    threads: int | None = 1,
    net=None,
    data=None,
    sizes: dict | None = None,
    recipe: str | None = None,
    train_recipes: bool = False,
    echo=print,
) -> dict:
    """Run the whole study, write its tables and figures into ``out`` and return the summary dict.

    ``net``/``data``: a trained :class:`~unitscope.zoo.sentiment.TrainedSentiment` and the
    :class:`~unitscope.zoo.sentiment.MovieReviews` (default: the cached model of ``recipe`` — default
    ``DEFAULT_RECIPE`` — and the real data); ``sizes`` overrides entries of ``QUICK``/``FULL``; ``seed`` draws the
    corpus and division sentences; ``train_recipes``: train every recipe missing from the cache for the recipe
    table (otherwise it lists the cached ones).
    """
    os.makedirs(out, exist_ok=True)
    with torch_threads(threads), torch.enable_grad():
        return _run(
            out, quick, seed, net, data, {**(QUICK if quick else FULL), **(sizes or {})}, echo, recipe, train_recipes
        )


def _run(out, quick, seed, net, data, sz, echo, recipe=None, train_recipes=False) -> dict:
    from ..zoo.sentiment import DEFAULT_RECIPE, QUICK_RECIPE, RECIPES, augmentation_note, movie_reviews, sentiment_cnn

    seconds = {}
    t0 = time.perf_counter()
    data = data if data is not None else movie_reviews()
    given = net is not None
    recipe = recipe or (QUICK_RECIPE if quick else DEFAULT_RECIPE)
    net = net if given else sentiment_cnn(recipe=recipe)
    name = net.info.get("recipe", "?")
    model_note = (
        f"quick recipe '{name}': {RECIPES[name]['epochs']} epochs, not the full study's '{DEFAULT_RECIPE}'"
        if name == QUICK_RECIPE
        else f"recipe '{name}'"
    )
    augmentation = augmentation_note(name) if name in RECIPES else None
    if augmentation:
        model_note += f" — {augmentation}"
    seconds["data_and_model"] = time.perf_counter() - t0
    recipes = recipe_table(train=train_recipes) if not given else pd.DataFrame()
    if len(recipes):
        _write(recipes, out, "sentiment_recipes", index=False)
        echo("recipes tried (held-out movie-review test sentences; log-odds = logit(pos) − logit(neg)):")
        echo(recipes.drop(columns=["max_norm"]).to_string(index=False))
    echo(
        f"movie reviews: {data.n_total} sentences, {data.n_zero} with score 0 dropped; train/dev/test "
        f"{len(data.train)}/{len(data.dev)}/{len(data.test)}. Sentiment CNN, {model_note} "
        f"({'cached' if net.cached else 'trained'}; "
        f"{net.info.get('n_train', len(data.train))} training sentences): test accuracy {net.test_accuracy:.3f}, "
        f"dev {net.dev_accuracy:.3f} (epoch {net.info['best_epoch']})"
    )

    # 1. agreement with ablation ------------------------------------------------------------------------
    t0 = time.perf_counter()
    sents = data.test.sentences[: sz["agreement"]] if sz["agreement"] else data.test.sentences
    agree, abl, gaps, diffs = agreement(net, sents, k=10, n_steps=sz["agreement_steps"])
    worst = int(gaps.argmax())  # a relative gap is large where F(x) − F(x') is small: both are said
    summary = summarize_agreement(agree)
    summary["paper"] = [PAPER_PEARSON.get(m, float("nan")) for m in summary.index]
    _write(summary, out, "sentiment_agreement")
    agree.drop(columns=["sentence"]).to_csv(os.path.join(out, "sentiment_agreement_rows.csv"), index=False)
    seconds["agreement"] = time.perf_counter() - t0
    echo(
        f"\nagreement with ablation (top-10 filters, {len(sents)} test sentences, {sz['agreement_steps']} path "
        f"points; conductance completeness gap: median {100 * float(gaps.median()):.2f}%, "
        f"max {100 * float(gaps.max()):.2f}%, on a sentence where F(x) − F(x') = {float(diffs[worst]):.3g}: "
        f"{float(gaps[worst] * diffs[worst].abs()):.2g} in logits):"
    )
    echo(summary[["mean", "median", "paper", "n"]].to_string(float_format=lambda v: f"{v:+.3f}"))

    # 2. additivity of ablations ------------------------------------------------------------------------
    ratio = ablation_ratio(abl).numpy()
    pd.DataFrame(
        {"sentence": sents, "ratio": ratio, "sum": abl.sum(1).numpy(), "abs_sum": abl.abs().sum(1).numpy()}
    ).to_csv(os.path.join(out, "sentiment_ablation_ratio.csv"), index=False)
    ratio_figure(ratio, os.path.join(out, "sentiment_ablation_ratio.png"))
    echo(
        f"\n|Σ ablation| / Σ |ablation| over the {abl.shape[1]} filters: median {np.median(ratio):.3f}, "
        f"mean {ratio.mean():.3f}, share ≥ 0.9: {(ratio >= 0.9).mean():.2f}"
    )

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
    division_figure(
        signs,
        os.path.join(out, "sentiment_division.png"),
        f"sign of filter conductance for logit(pos) − logit(neg), {len(div)} sentences "
        f"(blue −, green |c| < 0.01, red +)",
    )
    seconds["division"] = time.perf_counter() - t0
    share = {
        k: round(float((signs == v).float().mean()), 3) for k, v in (("positive", 1), ("negative", -1), ("zero", 0))
    }
    mostly_pos = int(((per_filter["positive"] >= 0.1) & (per_filter["negative"] < 0.1)).sum())
    mostly_neg = int(((per_filter["negative"] >= 0.1) & (per_filter["positive"] < 0.1)).sum())
    quiet = int(((per_filter["negative"] < 0.1) & (per_filter["positive"] < 0.1)).sum())
    echo(
        f"\ndivision of labour ({len(div)} sentences, {sz['corpus_steps']} path points, completeness gap median "
        f"{100 * float(corpus_gaps.median()):.2f}%): {100 * both:.1f}% of the {signs.shape[1]} filters take both "
        f"signs on ≥ 10% of the sentences each; {mostly_pos} positive-only, {mostly_neg} negative-only, {quiet} "
        f"mostly ≈ 0 (signs: {100 * share['positive']:.1f}% +, {100 * share['negative']:.1f}% −, "
        f"{100 * share['zero']:.1f}% ≈ 0)"
    )

    # 4. negation filters --------------------------------------------------------------------------------
    t0 = time.perf_counter()
    negation, probes, examples, neg_sentences = negation_section(net, corpus, cond, out, k=sz["examples"], echo=echo)
    seconds["negation"] = time.perf_counter() - t0

    result = {
        "test_accuracy": round(net.test_accuracy, 4),
        "dev_accuracy": round(net.dev_accuracy, 4),
        "quick": bool(quick),
        "seed": seed,
        "pearson": {m: round(float(v), 3) for m, v in summary["mean"].items()},
        "pearson_median": {m: round(float(v), 3) for m, v in summary["median"].items()},
        "paper_pearson": PAPER_PEARSON,
        "n_agreement": len(sents),
        "conductance_gap_median": round(float(gaps.median()), 5),
        "conductance_gap_max": {
            "relative": round(float(gaps[worst]), 5),
            "output_diff": round(float(diffs[worst]), 6),
            "absolute": round(float(gaps[worst] * diffs[worst].abs()), 6),
            "sentence": sents[worst],
        },
        "ablation_ratio_median": round(float(np.median(ratio)), 3),
        "ablation_ratio_mean": round(float(ratio.mean()), 3),
        "both_sign_filter_share": round(both, 3),
        "n_division": len(div),
        "sign_shares": share,
        **negation,
        "n_corpus": len(corpus),
        "recipe": net.info.get("recipe"),
        "model": model_note,
        "n_train": net.info.get("n_train"),
        "augmentation": augmentation,
        "n_augmented": net.info.get("n_augmented", 0),
        "recipes": recipes.to_dict(orient="records"),
        "figures": {
            "sentiment_negation.png": "sentiment_negation_caption.md",
            "sentiment_negation.html": "sentiment_negation_caption.md",
        },
        "seconds": {k: round(v, 1) for k, v in seconds.items()},
    }
    with open(os.path.join(out, "sentiment.json"), "w") as fh:
        json.dump(result, fh, indent=1)
    write_manifest(out, result, net, probes, examples, neg_sentences, len(corpus), sz, bool(len(recipes)))
    return result


@restores_process_state
def main(argv=None) -> dict:
    p = study_parser(
        "sentiment",
        __doc__,
        quick=f"the quick recipe's model ('quick': 2 epochs, cached apart from "
        f"the default) and fewer sentences and path points: {QUICK} (full: {FULL}; None = all)",
        seed="draws the corpus and division-of-labour sentences (default: 0)",
    )
    p.add_argument(
        "--recipe",
        default=None,
        help="the model's recipe (default: zoo.sentiment.DEFAULT_RECIPE; with --quick: QUICK_RECIPE)",
    )
    p.add_argument(
        "--train-recipes",
        action="store_true",
        help="train every recipe missing from the cache for the recipe table (minutes each)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (default 1: faster than 2 for this small model on a busy machine)",
    )
    args = p.parse_args(argv)
    result = run(
        args.out,
        quick=args.quick,
        seed=args.seed,
        threads=args.threads,
        recipe=args.recipe,
        train_recipes=args.train_recipes,
        echo=lambda *a: print(*a, flush=True),
    )
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
