"""Figures and the report's manifest entry of the MiniLM study (:mod:`unitscope.studies.transformer`): the share of
the prediction through each sub-layer with the completeness gap on the residual stream, agreement with ablation
per layer, and per-token heat strips of the negation neurons (each with its colour bar).

>>> import numpy as np, tempfile, os
>>> from unitscope.report.figures import read_figure_info
>>> path = strips_figure([("probe", ["not", "good"], {"L2:n1": np.array([0.5, -0.1])})],
...                      os.path.join(tempfile.mkdtemp(), "strips.png"))
>>> info = read_figure_info(path); info["heatmaps"] == info["keyed"] == 1
True
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

__all__ = ["strips_figure", "layer_figure", "agreement_figure", "write_manifest"]


def strips_figure(rows, path: str) -> str:
    """``rows``: (title, tokens, {label: per-token values}) — one signed heat strip per sentence, each with its own
    colour bar (red +, blue −; symmetric around 0 at the strip's largest |value|)."""
    from ..report.figures import DIVERGING, plt, save_figure

    rows = [r for r in rows if r[2]]
    if not rows:
        rows = [("no negation neurons found", ["-"], {"-": np.zeros(1)})]
    height = sum(0.9 + 0.25 * len(r[2]) for r in rows)
    fig, axes = plt.subplots(len(rows), 1, figsize=(8.6, height), squeeze=False)
    for ax, (title, tokens, by_unit) in zip(axes[:, 0], rows):
        m = np.array([np.asarray(v, dtype=float)[: len(tokens)] for v in by_unit.values()])
        lim = float(np.abs(m).max()) or 1.0
        im = ax.imshow(m, cmap=DIVERGING, vmin=-lim, vmax=lim, aspect="auto")
        ax.set_xticks(range(len(tokens)))
        ax.set_xticklabels(tokens, fontsize=7, rotation=60)
        ax.set_yticks(range(len(by_unit)))
        ax.set_yticklabels(list(by_unit), fontsize=7)
        ax.set_title(title, fontsize=8, loc="left")
        cb = fig.colorbar(im, ax=ax, fraction=0.04, pad=0.01)
        cb.set_label("conductance", fontsize=6)
        cb.ax.tick_params(labelsize=6)
    fig.suptitle("Per-token conductance of MiniLM's negation neurons (red +, blue −)", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path, dpi=120)


def layer_figure(by_layer: pd.DataFrame, path: str, *, title: str, gap_check: dict | None = None) -> str:
    """Left: the median share of ``F(x) − F(x')`` through each layer's MLP neurons and attention heads. Right: the
    completeness gap on the residual stream after each layer (median and max over the sentences, log scale); with
    ``gap_check`` (a quick run's :func:`~unitscope.studies.transformer_scores.gap_by_steps`) also the median gap of
    the same cuts at the full run's number of path points."""
    from ..report.figures import plt, save_figure

    fig, axes = plt.subplots(1, 2, figsize=(8.5, 3.2))
    x = np.arange(len(by_layer))
    axes[0].bar(x - 0.2, by_layer["mlp_share_median"], 0.4, label="MLP neurons")
    axes[0].bar(x + 0.2, by_layer["attention_share_median"], 0.4, label="attention heads")
    axes[0].axhline(0, color="k", lw=0.5)
    axes[0].set_ylabel("Σ conductance / (F(x) − F(x')), median", fontsize=7)
    axes[0].set_title("share of the prediction through each sub-layer", fontsize=8)
    axes[0].legend(fontsize=7)
    axes[1].semilogy(x, by_layer["cut_gap_median"].clip(lower=1e-8), "o-", label="median")
    axes[1].semilogy(x, by_layer["cut_gap_max"].clip(lower=1e-8), "s--", label="max")
    if gap_check:
        full = str(gap_check["full_steps"])
        axes[1].semilogy(
            x,
            np.clip(gap_check["median_by_layer"][full], 1e-8, None),
            "^:",
            color="0.35",
            label=f"median at {full} points ({gap_check['n_sentences']} sentences, cuts alone)",
        )
    axes[1].set_title("completeness gap at the residual stream after the layer", fontsize=8)
    axes[1].set_ylabel("|gap| / |F(x) − F(x')|", fontsize=7)
    axes[1].legend(fontsize=7)
    for ax in axes:
        ax.set_xticks(x)
        ax.set_xticklabels([f"layer {i}" for i in x], fontsize=7)
        ax.tick_params(labelsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


def agreement_figure(summary: pd.DataFrame, heads: pd.DataFrame, path: str, *, title: str) -> str:
    """Mean Pearson r with the ablation scores per layer and score: MLP neurons (top-k) and attention heads."""
    from ..report.figures import plt, save_figure

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2), sharey=True)
    for ax, df, name in ((axes[0], summary, "MLP neurons (top-k)"), (axes[1], heads, "attention heads (all 12)")):
        for m, g in df.groupby("score", sort=False):
            ax.plot(g["layer"], g["mean"], "o-", label=m)
        ax.axhline(0, color="k", lw=0.5)
        ax.set_title(f"Pearson with ablation scores: {name}", fontsize=8)
        ax.set_xlabel("layer", fontsize=7)
        ax.tick_params(labelsize=7)
    axes[0].set_ylabel("mean Pearson over sentences", fontsize=7)
    axes[1].legend(fontsize=6)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


def _pct(v) -> str:
    return f"{100 * float(v):.2g} %"


def write_manifest(out: str, result: dict, *, quick: bool, gap_check: dict | None) -> str:
    """The report's entry for this study (:func:`unitscope.report.manifest.write_entry`)."""
    from ..report.manifest import write_entry

    n, steps, k = result["n_agreement"], result["n_steps"], result["k"]
    gap = result["completeness_gap_by_layer"]
    model = "all-MiniLM-L6-v2 (frozen) with a linear sentiment head"
    p, pb = result["pearson"], result["pearson_ablation_to_baseline"]
    heads = [
        f"The sentiment head on frozen all-MiniLM-L6-v2 labels {100 * result['test_accuracy']:.1f} % of the "
        f"held-out movie-review test sentences correctly (the sentiment CNN"
        + (" of the quick recipe" if quick else "")
        + ": "
        + (f"{100 * result['cnn_test_accuracy']:.1f} %)." if result.get("cnn_test_accuracy") else "not run)."),
        f"Completeness gap on the residual stream after each of the 6 layers, {n} test sentences, {steps} "
        f"adaptive path points: median {', '.join(_pct(v) for v in gap['median'])} (layer 0 … 5)"
        + (
            " — quick mode, see the first figure's caption for why this is larger than the full run's."
            if quick
            else "."
        ),
        f"Agreement of the top-{k} MLP neurons' scores with their ablation scores (mean Pearson r over {n} "
        f"sentences × 6 layers): conductance {p['conductance']:+.2f} against ablation to 0, "
        f"{pb['conductance']:+.2f} against ablation to the baseline value; gradient × activation "
        f"{p['grad_x_activation']:+.2f}; internal influence {p['internal_influence']:+.2f}.",
        "Share of MLP neurons whose conductance for the log-odds takes both signs (each on at least 10 % of the "
        f"sentences): {', '.join(_pct(v) for v in result['both_sign_share_by_layer'])} (layer 0 … 5).",
    ]
    first = {}
    for r in result["negation_neurons"]:  # the first neuron found on each probe
        first.setdefault(r["probe"], r)
    for r in first.values():
        heads.append(
            f"On “{r['probe']}”, neuron {r['neuron']} of layer {r['layer']}'s MLP puts "
            f"{100 * r['phrase_share']:.0f} % of its per-token conductance on the negated phrase."
        )
    gap_caption = (
        "Left: the median share of F(x) − F(x') (F = the predicted class's logit) whose conductance flows "
        "through each layer's 1,536 MLP neurons (blue) and its 12 attention heads (orange); the rest "
        "bypasses them through the residual stream, so these shares need not sum to 1. Right: the "
        "completeness gap |Σ conductance − (F(x) − F(x'))| / |F(x) − F(x')| on the residual stream "
        "after "
        "each layer — a cut of the network, where it must vanish — median and max over the sentences, "
        "log scale; the smaller, the more accurate the path integral."
    )
    if quick and gap_check:
        g = gap_check
        gap_caption += (
            f" Quick mode uses {g['steps']} path points per sentence on {n} sentences (the full run: "
            f"{g['full_steps']} on 120), so its gap is larger. Measured in this run on "
            f"{g['n_sentences']} of its sentences, with the conductance of the six cuts alone: the "
            f"median gap over the cuts is {_pct(g['median'][str(g['steps'])])} at {g['steps']} points "
            f"and {_pct(g['median'][str(g['full_steps'])])} at {g['full_steps']} (worst "
            f"{_pct(g['worst'][str(g['steps'])])} → {_pct(g['worst'][str(g['full_steps'])])}): the "
            "quick run's few path points make the difference, not the model or the method. The grey "
            f"dotted line is that {g['full_steps']}-point median per layer."
        )
    figures = [
        ("transformer_layers.png", gap_caption),
        (
            "transformer_agreement.png",
            f"Mean Pearson r, per layer and score, between a sentence's scores of its top-{k} MLP neurons (left) "
            "or of all 12 attention heads (right) and their ablation scores (the drop of the predicted class's "
            "logit when the unit is set to 0 at every token). 1 = the score ranks units exactly as ablation "
            "does; 0 = no relation.",
        ),
        (
            "transformer_negation.png",
            "Per-token conductance of the MLP neurons found on the negation probes (F = the log-odds towards "
            "the probe's prediction) and of the two neurons with the highest share on negations in the corpus "
            "sentences (F = the log-odds of positive): each row is one neuron, each column one WordPiece; blue "
            "pushes F up, red down. Each strip has its own colour bar (symmetric around 0 at its largest "
            "|value|).",
        ),
    ]
    tables = [
        (
            "transformer_layers.csv",
            "Per layer: completeness gap on the residual stream (median, max), the "
            "median MLP and attention shares of F(x) − F(x'), and the both-sign shares of neurons and heads.",
        ),
        (
            "transformer_agreement.csv",
            f"Mean / median Pearson r per layer and score, top-{k} MLP neurons "
            "(ablation to 0 and to the baseline value).",
        ),
        ("transformer_head_agreement.csv", "The same for the 12 attention heads of each layer."),
        (
            "transformer_flips.csv",
            "Top neurons (by a score) ablated together: the share of sentences whose "
            "prediction flips, and after how many neurons.",
        ),
        (
            "transformer_negation_corpus.csv",
            "Candidate neurons ranked by the share of their per-token "
            "|conductance| on negation WordPieces in the corpus sentences.",
        ),
    ]
    if os.path.exists(os.path.join(out, "transformer_negation_vs_cnn.csv")):
        tables.append(
            (
                "transformer_negation_vs_cnn.csv",
                "Per probe: MiniLM's negation neurons beside the sentiment CNN's negation filters.",
            )
        )
    description = (
        f"Which neurons of a real pretrained transformer matter: conductance on {model}, trained on the "
        "movie-review sentences. Attributions start at the word-embedding output (baseline: the [PAD] embedding at "
        "every word), the units are each layer's 1,536 MLP neurons (summed over the sentence's tokens) and its 12 "
        "attention heads. Read the first figure for how much of the prediction goes through each sub-layer and "
        "how exact the attributions are (the completeness gap, on the residual stream, where it must vanish); "
        "the second for whether a score ranks units as ablating them does (higher is better; ablation to 0 is the "
        "paper's, ablation to the baseline value is what conductance measures); the third for neurons that carry "
        "negation, token by token (red pushes the log-odds up, blue down)."
    )
    return str(
        write_entry(
            out,
            title="MiniLM (a real transformer): which neurons and heads matter",
            description=description,
            headlines=heads,
            figures=figures,
            tables=tables,
            documents=["transformer_negation_examples.md"],
            summary="transformer.json",
            quick=quick,
            order=70,
            name="transformer",
            scale=(
                f"{n} agreement sentences, {steps} path points, {result['n_negation']} negation sentences (full: 120, "
                "32, 60)"
            )
            if quick
            else None,
        )
    )
