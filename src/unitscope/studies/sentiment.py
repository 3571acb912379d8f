"""``python -m unitscope.studies.sentiment [--quick] [--out DIR]``: the conductance paper's sentiment-CNN study
(Dhamdhere et al. 2018, section 6) on the real movie-review sentences of Hutto & Gilbert (2014).

1. **Agreement with ablation.** Conductance, internal influence, gradient × activation and activation of the
   256 max-pooled filters (layer ``filters``), taken from the embeddings (baseline: the zero embedding, which is
   also the padding), target: the predicted class's logit; per test sentence, the Pearson correlation between a
   method's scores of its top-10 filters and those filters' ablation scores — beside the paper's numbers.
2. **How additive are ablations?** Per sentence ``|Σ_f abl_f| / Σ_f |abl_f|`` over all 256 filters (1: every
   filter's ablation pushes the same way), as a histogram.
3. **Division of labour.** The sign of each filter's conductance (``|c| < 0.01`` → 0) on sentences from all
   splits, for ``F = logit(positive) − logit(negative)`` (so blue = pushes towards *positive* sentiment, red =
   towards *negative*, green = near zero), as a heat-map with rows and columns ordered by hierarchical
   clustering; and the share of filters that take both signs on ≥ 10 % of the sentences each.
4. **Negation filters.** Per-token conductance (Eq. 2, summed over the 50 embedding dims) through the filters
   that carry most conductance on corpus sentences with negations, for the same ``F``; filters whose attribution
   lands on ``not``/``n't``/``no``/``never`` are reported, with probes ("not good", "not bad", …) and highlighted
   corpus sentences.

Writes CSV, Markdown and PNG to ``--out``; the last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import pandas as pd
import torch

from ..ablation import ablation_scores
from ..neuron import neuron_conductance
from ..scores import METHODS, attribute
from .agreement import ablation_agreement, summarize_agreement

__all__ = ["main", "agreement", "ablation_ratio", "division_of_labour", "negation_filters", "PAPER_PEARSON",
           "log_odds"]

PAPER_PEARSON = {"conductance": 0.88, "internal_influence": -0.43, "grad_x_activation": 0.99, "activation": 0.19}
PROBES = ["not good", "not bad", "this movie is not good .", "this movie is not bad .", "it is never boring .",
          "i did n't like it .", "no fun at all .", "not a bad film , not a good one either ."]
LAYER = "filters"


def log_odds(out: torch.Tensor) -> torch.Tensor:
    """``logit(positive) − logit(negative)``: one signed sentiment score per example."""
    return out[:, 1] - out[:, 0]


def _by_length(sentences, size: int):
    """Index groups of about ``size`` sentences of similar length (less padding per batch)."""
    order = sorted(range(len(sentences)), key=lambda i: (len(sentences[i]), i))
    return [order[i:i + size] for i in range(0, len(order), size)]


def _write(df: pd.DataFrame, out: str, name: str, *, index: bool = True) -> None:
    df.to_csv(os.path.join(out, f"{name}.csv"), index=index)
    try:
        text = df.to_markdown(index=index, floatfmt=".3f")
    except ImportError:
        text = df.to_string(index=index)
    with open(os.path.join(out, f"{name}.md"), "w") as f:
        f.write(text + "\n")


# ---------------------------------------------------------------------------------------- 1 and 2 --
def agreement(net, sentences, *, k: int = 10, n_steps: int = 50, batch: int = 100):
    """``(per-sentence agreement rows, ablation scores [N, 256], conductance completeness gap [N])``."""
    frames, abl, gaps = [], torch.empty(len(sentences), 256), torch.empty(len(sentences))
    for idx in _by_length(sentences, batch):
        _, emb = net.encode([sentences[i] for i in idx])
        scores = attribute(net.model, emb, [LAYER], METHODS, n_steps=n_steps, gap_warning=None)
        df = ablation_agreement(net.model, emb, LAYER, k=k, scores=scores)
        df["example"] = [idx[i] for i in df["example"]]
        frames.append(df)
        abl[idx] = ablation_scores(net.model, emb, LAYER)
        gaps[idx] = scores["conductance"].relative_delta(LAYER)
    df = pd.concat(frames, ignore_index=True).sort_values(["method", "example"], kind="stable")
    df["sentence"] = [sentences[i] for i in df["example"]]
    return df.reset_index(drop=True), abl, gaps


def ablation_ratio(abl: torch.Tensor) -> torch.Tensor:
    """``|Σ_f abl_f| / Σ_f |abl_f|`` per sentence."""
    return abl.sum(1).abs() / abl.abs().sum(1).clamp_min(1e-12)


def _ratio_figure(ratio: np.ndarray, path: str) -> str:
    from ..report.figures import plt, save_figure

    fig, ax = plt.subplots(figsize=(4.2, 3.0))
    ax.hist(ratio, bins=np.linspace(0, 1, 21), color="tab:blue", edgecolor="white")
    ax.axvline(np.median(ratio), color="k", ls="--", lw=1, label=f"median {np.median(ratio):.2f}")
    ax.set_xlabel("|Σ ablation scores| / Σ |ablation scores|", fontsize=8)
    ax.set_ylabel("sentences", fontsize=8)
    ax.set_title(f"additivity of filter ablations ({len(ratio)} test sentences)", fontsize=9)
    ax.legend(fontsize=7)
    ax.tick_params(labelsize=7)
    fig.tight_layout()
    return save_figure(fig, path)


# ------------------------------------------------------------------------------------------------ 3 --
def division_of_labour(net, sentences, *, n_steps: int = 20, threshold: float = 0.01, min_share: float = 0.10,
                       batch: int = 250):
    """``(signs [N, 256] in {−1, 0, 1}, conductance [N, 256], per-filter table, completeness gap [N])`` for
    ``F`` = log-odds."""
    cond, gaps = torch.empty(len(sentences), 256), torch.empty(len(sentences))
    for idx in _by_length(sentences, batch):
        _, emb = net.encode([sentences[i] for i in idx])
        s = attribute(net.model, emb, [LAYER], ["conductance"], target=log_odds, n_steps=n_steps,
                      gap_warning=None)["conductance"]
        cond[idx] = s[LAYER]
        gaps[idx] = s.relative_delta(LAYER)
    signs = torch.where(cond.abs() < threshold, torch.zeros_like(cond), cond.sign()).to(torch.int8)
    pos = (signs == 1).float().mean(0)
    neg = (signs == -1).float().mean(0)
    table = pd.DataFrame({"filter": np.arange(256), "window": np.repeat(net.model.filters.windows, 64)[:256],
                          "positive": pos.numpy(), "negative": neg.numpy(), "zero": 1 - (pos + neg).numpy(),
                          "mean_conductance": cond.mean(0).numpy(),
                          "both_signs": ((pos >= min_share) & (neg >= min_share)).numpy()})
    return signs, cond, table, gaps


def _division_figure(signs: torch.Tensor, path: str, title: str) -> str:
    from matplotlib.colors import BoundaryNorm, ListedColormap
    from scipy.cluster.hierarchy import leaves_list, linkage

    from ..report.figures import plt, save_figure

    s = signs.numpy().astype(np.float64)
    rows = leaves_list(linkage(s, method="average", metric="hamming")) if s.shape[0] > 2 else np.arange(s.shape[0])
    cols = leaves_list(linkage(s.T, method="average", metric="hamming"))
    cmap = ListedColormap(["red", "green", "blue"])
    norm = BoundaryNorm([-1.5, -0.5, 0.5, 1.5], cmap.N)
    fig, ax = plt.subplots(figsize=(7.5, 6.0))
    im = ax.imshow(s[rows][:, cols], aspect="auto", interpolation="nearest", cmap=cmap, norm=norm)
    ax.set_xlabel("filter (clustered)", fontsize=8)
    ax.set_ylabel("sentence (clustered)", fontsize=8)
    ax.set_title(title, fontsize=9)
    ax.tick_params(labelsize=7)
    cb = fig.colorbar(im, ax=ax, ticks=[-1, 0, 1], fraction=0.04)
    cb.ax.set_yticklabels(["negative", "≈ 0", "positive"], fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path, dpi=120)


# ------------------------------------------------------------------------------------------------ 4 --
def per_token(net, sentences, units, *, n_steps: int = 16, batch: int = 32):
    """Per-token conductance through each unit (``[U, N, T]``, T = longest sentence's tokens, padding cut off)
    and each sentence's tokens, for ``F`` = log-odds."""
    from ..zoo.sentiment import MIN_PAD, tokenize

    toks = [tokenize(s) for s in sentences]
    t_max = max(len(t) for t in toks)
    out = torch.zeros(len(units), len(sentences), t_max)
    for idx in _by_length(sentences, batch):
        _, emb = net.encode([sentences[i] for i in idx])
        a = neuron_conductance(net.model, emb, LAYER, list(units), target=log_odds, n_steps=n_steps,
                               internal_batch_size=16 * n_steps, unit_batch_size=32)
        a = a.sum(-1)[:, :, MIN_PAD:]  # [U, n, T'] — sum over the embedding dims, leading padding dropped
        for j, i in enumerate(idx):
            out[:, i, :len(toks[i])] = a[:, j, :len(toks[i])]
    return out, toks


def negation_filters(net, corpus, *, candidates: int = 48, top: int = 5, n_steps: int = 16,
                     negations=None) -> tuple[pd.DataFrame, torch.Tensor, list[list[str]], list[int]]:
    """Rank filters by the share of their per-token attribution mass that lands on negation tokens in ``corpus``
    (sentences with a negation). Candidates: the ``candidates`` filters with the largest mean |conductance| on
    the corpus. Returns ``(table, per-token attributions [C, N, T], tokens, candidate filters)``."""
    from ..zoo.sentiment import NEGATIONS

    negations = set(negations or NEGATIONS)
    cond = torch.empty(len(corpus), 256)
    for idx in _by_length(corpus, 100):
        _, emb = net.encode([corpus[i] for i in idx])
        cond[idx] = attribute(net.model, emb, [LAYER], ["conductance"], target=log_odds, n_steps=n_steps,
                              gap_warning=None)["conductance"][LAYER]
    cand = cond.abs().mean(0).topk(candidates).indices.tolist()
    attr, toks = per_token(net, corpus, cand, n_steps=n_steps)
    is_neg = torch.zeros(attr.shape[1:], dtype=torch.bool)
    for i, t in enumerate(toks):
        for j, w in enumerate(t):
            is_neg[i, j] = w in negations
    mass = attr.abs().sum((1, 2))
    neg_mass = (attr.abs() * is_neg).sum((1, 2))
    neg_signed = (attr * is_neg).sum((1, 2)) / is_neg.sum().clamp_min(1)
    hit = ((attr.abs() * is_neg).sum(2) > 0.5 * attr.abs().sum(2)).float().mean(1)  # sentences where neg. dominates
    table = pd.DataFrame({"filter": cand, "negation_share": (neg_mass / mass.clamp_min(1e-12)).numpy(),
                          "sentences_dominated": hit.numpy(), "mean_attr_on_negation": neg_signed.numpy(),
                          "mean_abs_conductance": cond.abs().mean(0)[cand].numpy()})
    table = table.sort_values("negation_share", ascending=False).reset_index(drop=True)
    table.attrs["token_share"] = float(is_neg.sum()) / sum(len(t) for t in toks)
    return table, attr, toks, cand


def _fmt(tokens, values) -> str:
    return " ".join(f"{w}[{v:+.2f}]" for w, v in zip(tokens, values))


def _negation_figure(rows, path: str) -> str:
    """``rows``: (title, tokens, {filter: per-token values}) — one heat strip per sentence."""
    from ..report.figures import plt, save_figure

    height = sum(0.8 + 0.25 * len(r[2]) for r in rows)
    fig, axes = plt.subplots(len(rows), 1, figsize=(8, height), squeeze=False)
    for ax, (title, tokens, by_filter) in zip(axes[:, 0], rows):
        m = np.array([v[:len(tokens)] for v in by_filter.values()])
        lim = float(np.abs(m).max()) or 1.0
        ax.imshow(m, cmap="RdBu", vmin=-lim, vmax=lim, aspect="auto")
        ax.set_xticks(range(len(tokens)))
        ax.set_xticklabels(tokens, fontsize=6, rotation=60)
        ax.set_yticks(range(len(by_filter)))
        ax.set_yticklabels([f"#{f}" for f in by_filter], fontsize=6)
        ax.set_title(title, fontsize=7, loc="left")
    fig.tight_layout()
    return save_figure(fig, path, dpi=120)


# --------------------------------------------------------------------------------------------- main --
def main(argv=None) -> dict:
    from ..zoo.sentiment import NEGATIONS, movie_reviews, sentiment_cnn, tokenize

    p = argparse.ArgumentParser(prog="python -m unitscope.studies.sentiment", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="fewer sentences (agreement 100, division 500, negation 20; full: the whole test split, "
                        "4000, 150) and path points")
    p.add_argument("--out", default="unitscope-out/sentiment")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (default 1: faster than 2 for this small model on a busy machine)")
    args = p.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_grad_enabled(True)
    seconds = {}
    t0 = time.perf_counter()
    data = movie_reviews()
    net = sentiment_cnn()
    seconds["data_and_model"] = time.perf_counter() - t0
    print(f"movie reviews: {data.n_total} sentences, {data.n_zero} with score 0 dropped; train/dev/test "
          f"{len(data.train)}/{len(data.dev)}/{len(data.test)}. Sentiment CNN "
          f"({'cached' if net.cached else 'trained'}): test accuracy {net.test_accuracy:.3f}, "
          f"dev {net.dev_accuracy:.3f} (epoch {net.info['best_epoch']})", flush=True)

    n_agree, n_div, n_neg = (100, 500, 20) if args.quick else (len(data.test), 4000, 150)
    steps = 32 if args.quick else 50

    # 1. agreement with ablation ------------------------------------------------------------------------
    t0 = time.perf_counter()
    sents = data.test.sentences[:n_agree]
    agree, abl, gaps = agreement(net, sents, k=10, n_steps=steps)
    summary = summarize_agreement(agree)
    summary["paper"] = [PAPER_PEARSON.get(m, float("nan")) for m in summary.index]
    _write(summary, args.out, "sentiment_agreement")
    agree.drop(columns=["sentence"]).to_csv(os.path.join(args.out, "sentiment_agreement_rows.csv"), index=False)
    seconds["agreement"] = time.perf_counter() - t0
    print(f"\nagreement with ablation (top-10 filters, {len(sents)} test sentences, {steps} path points; conductance "
          f"completeness gap: median {100 * float(gaps.median()):.2f}%, max {100 * float(gaps.max()):.2f}%):")
    print(summary[["mean", "median", "paper", "n"]].to_string(float_format=lambda v: f"{v:+.3f}"), flush=True)

    # 2. additivity of ablations ------------------------------------------------------------------------
    ratio = ablation_ratio(abl).numpy()
    pd.DataFrame({"sentence": sents, "ratio": ratio, "sum": abl.sum(1).numpy(), "abs_sum": abl.abs().sum(1).numpy()}) \
        .to_csv(os.path.join(args.out, "sentiment_ablation_ratio.csv"), index=False)
    _ratio_figure(ratio, os.path.join(args.out, "sentiment_ablation_ratio.png"))
    print(f"\n|Σ ablation| / Σ |ablation| over the 256 filters: median {np.median(ratio):.3f}, "
          f"mean {ratio.mean():.3f}, share ≥ 0.9: {(ratio >= 0.9).mean():.2f}", flush=True)

    # 3. division of labour -----------------------------------------------------------------------------
    t0 = time.perf_counter()
    everything = data.all().sentences
    rng = np.random.default_rng(args.seed)
    pick = np.sort(rng.choice(len(everything), size=min(n_div, len(everything)), replace=False))
    div_sents = [everything[i] for i in pick]
    signs, cond, per_filter, div_gaps = division_of_labour(net, div_sents, n_steps=20)
    both = float(per_filter["both_signs"].mean())
    _write(per_filter, args.out, "sentiment_division", index=False)
    _division_figure(signs, os.path.join(args.out, "sentiment_division.png"),
                     f"sign of filter conductance for logit(pos) − logit(neg), {len(div_sents)} sentences "
                     f"(red −, green |c| < 0.01, blue +)")
    seconds["division"] = time.perf_counter() - t0
    mostly_pos = int(((per_filter["positive"] >= 0.1) & (per_filter["negative"] < 0.1)).sum())
    mostly_neg = int(((per_filter["negative"] >= 0.1) & (per_filter["positive"] < 0.1)).sum())
    quiet = int(((per_filter["negative"] < 0.1) & (per_filter["positive"] < 0.1)).sum())
    print(f"\ndivision of labour ({len(div_sents)} sentences, 20 path points, completeness gap median "
          f"{100 * float(div_gaps.median()):.2f}%): {100 * both:.1f}% of the 256 filters "
          f"take both signs on ≥ 10% of the sentences each; {mostly_pos} filters are positive-only, {mostly_neg} "
          f"negative-only, {quiet} mostly ≈ 0 (signs: {100 * float((signs == 1).float().mean()):.1f}% +, "
          f"{100 * float((signs == -1).float().mean()):.1f}% −, {100 * float((signs == 0).float().mean()):.1f}% ≈ 0)",
          flush=True)

    # 4. negation filters -------------------------------------------------------------------------------
    t0 = time.perf_counter()
    negset = set(NEGATIONS)
    corpus = [s for s in data.test.sentences if negset & set(tokenize(s))][:n_neg]
    table, attr, toks, cand = negation_filters(net, corpus, candidates=32 if args.quick else 64,
                                               n_steps=12 if args.quick else 16)
    _write(table, args.out, "sentiment_negation", index=False)
    top = table["filter"].head(5).tolist()
    chance = table.attrs["token_share"]
    print(f"\nnegation filters ({len(corpus)} test sentences with not/n't/no/never, {len(cand)} candidate filters; "
          f"negation tokens are {100 * chance:.1f}% of their tokens):")
    print(table.head(8).to_string(index=False, float_format=lambda v: f"{v:+.3f}"))
    probe_attr, probe_toks = per_token(net, PROBES, top, n_steps=16)
    with torch.no_grad():
        probe_pred = log_odds(net.model(net.encode(PROBES)[1]))
    lines = ["## probes (per-token conductance through the top negation filters, F = logit(pos) − logit(neg))", ""]
    fig_rows = []
    for i, s in enumerate(PROBES):
        lines.append(f"- **{s}** (log-odds {float(probe_pred[i]):+.2f})")
        for u, f in enumerate(top[:3]):
            lines.append(f"  - #{f}: {_fmt(probe_toks[i], probe_attr[u, i].tolist())}")
        if i < 4:
            fig_rows.append((f"{s!r} (log-odds {float(probe_pred[i]):+.2f})", probe_toks[i],
                             {f: probe_attr[u, i, :len(probe_toks[i])].numpy() for u, f in enumerate(top[:3])}))
    best = table["filter"].iloc[0]
    u0 = cand.index(best)
    neg_mass = torch.tensor([sum(abs(float(attr[u0, i, j])) for j, w in enumerate(t) if w in negset)
                             for i, t in enumerate(toks)])
    lines += ["", f"## corpus sentences where filter #{best} puts most attribution on a negation", ""]
    highlighted = []
    for i in neg_mass.argsort(descending=True)[:3].tolist():
        highlighted.append({"sentence": corpus[i], "filter": int(best),
                            "tokens": {w: round(float(v), 4) for w, v in zip(toks[i], attr[u0, i].tolist())
                                       if abs(v) > 1e-3}})
        lines.append(f"- {corpus[i]}")
        lines.append(f"  - #{best}: {_fmt(toks[i], attr[u0, i, :len(toks[i])].tolist())}")
        short = toks[i][:30]
        fig_rows.append((corpus[i][:90], short, {f: attr[cand.index(f), i, :len(short)].numpy() for f in top[:3]}))
    with open(os.path.join(args.out, "sentiment_negation_examples.md"), "w") as fh:
        fh.write("\n".join(lines) + "\n")
    _negation_figure(fig_rows, os.path.join(args.out, "sentiment_negation.png"))
    seconds["negation"] = time.perf_counter() - t0
    print("\n".join(lines), flush=True)
    negation = [{"filter": int(r.filter), "negation_share": round(float(r.negation_share), 3),
                 "mean_attr_on_negation": round(float(r.mean_attr_on_negation), 4)}
                for r in table.head(5).itertuples()]

    result = {"test_accuracy": round(net.test_accuracy, 4), "dev_accuracy": round(net.dev_accuracy, 4),
              "pearson": {m: round(float(v), 3) for m, v in summary["mean"].items()},
              "paper_pearson": PAPER_PEARSON, "n_agreement": len(sents),
              "conductance_gap_median": round(float(gaps.median()), 5),
              "ablation_ratio_median": round(float(np.median(ratio)), 3),
              "both_signs_share": round(both, 3), "n_division": len(div_sents),
              "negation_filters": negation, "negation_token_share": round(chance, 3),
              "highlighted": highlighted, "seconds": {k: round(v, 1) for k, v in seconds.items()}}
    with open(os.path.join(args.out, "sentiment.json"), "w") as fh:
        json.dump(result, fh, indent=1)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
