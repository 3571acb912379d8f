"""``python -m unitscope.studies.transformer [--quick] [--out DIR]``: which neurons of a real pretrained transformer
matter — the conductance study on ``all-MiniLM-L6-v2`` with a linear sentiment head trained on the movie-review
sentences (same split as the sentiment CNN; MiniLM frozen).

The model takes token ids (``lm.on_ids``); attributions start at the word-embedding output
(``embedding="bert.embeddings.word_embeddings"``; baseline: the [PAD] embedding at every non-special token), the
attention mask goes through ``additional_forward_args``, where the library finds it. Units follow the library's unit
specification: the MLP neurons of all six layers (each layer's intermediate activation ``[tokens × 1536]`` is
token-major: a neuron's score is reduced over the tokens the attention mask keeps) and, as a second granularity, the
attention heads (``UnitSpec.heads(12)`` on each self-attention output: a head's 32 dims over the tokens). All six
MLP layers, six attention layers and the residual stream after each layer are scored in ONE call per batch of
sentences.

1. **Completeness.** MiniLM is a residual network: the MLP neurons of a layer are *not* a cut (the residual
   bypasses them), so their conductance sums to the part of ``F(x) − F(x')`` that flows through that MLP — the
   *MLP share* — not to all of it. The completeness gap is measured where it must vanish: on the residual stream
   after each layer (``bert.encoder.layer.i``), per layer; with the adaptive rule beside the fixed one.
2. **Agreement with ablation** (per layer, test sentences): per sentence and score, the top-``k`` neurons by the
   score, their ablation scores (``F(x) − F(x with the neuron set to 0 at every token)``, F = the predicted
   class's logit) and the Pearson correlation; the same for the 12 heads of each layer (all 12 ranked).
   **Flips**: how many of the top neurons (by a score), ablated together, change the prediction.
   **Both-sign share**: the share of neurons whose conductance for ``logit(pos) − logit(neg)`` is > 0.01 on ≥ 10 %
   of the sentences and < −0.01 on ≥ 10 % (the sentiment CNN study's "division of labour" statistic).
3. **Negation neurons** (:mod:`unitscope.studies.transformer_negation`): per-token conductance on test sentences
   with a negation, "not good" / "not bad" probes, side by side with the sentiment CNN's negation filters.

The parts: :mod:`~unitscope.studies.transformer_scores` (one ``attribute`` call per batch),
:mod:`~unitscope.studies.transformer_ablation` (the library's ablation on the same units),
:mod:`~unitscope.studies.transformer_negation`, :mod:`~unitscope.studies.transformer_figures` (figures and the
report's manifest entry). Writes CSV, Markdown, PNG and ``manifest.json`` to ``--out``; the last line printed is
one JSON object.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from ..attribution.scores import SCORES
from ..core.progress import note
from ..core.state import restores_process_state
from .common import Config, Result, finish, study_parser
from .tables import write_table
from .transformer_ablation import agreement_and_flips, summarize_agreement, summarize_flips
from .transformer_figures import agreement_figure, layer_figure, strips_figure, write_manifest
from .transformer_negation import negation_section
from .transformer_scores import CUTS, adaptive_vs_fixed, both_sign_share, gap_by_steps, layers, score_sentences

__all__ = ["main", "run", "TransformerConfig", "CUTS", "QUICK", "FULL"]

#: (agreement sentences, path points, negation sentences, top-k, most neurons ablated for a flip)
QUICK = dict(n_agree=6, steps=8, n_neg=4, k=10, max_flip=10, probe_steps=16, candidates=32)
FULL = dict(n_agree=120, steps=32, n_neg=60, k=10, max_flip=20, probe_steps=32, candidates=64)


@dataclass
class TransformerConfig(Config):
    """:class:`unitscope.studies.common.Config` plus ``threads`` (torch threads; the machine is shared) and
    ``no_cnn`` (skip the comparison with the sentiment CNN)."""

    out: str = "unitscope-out/transformer"
    threads: int = 1
    no_cnn: bool = False


def _quick_cnn_recipe() -> str:
    """The sentiment CNN of the quick run: the quick recipe, as in the sentiment study's --quick (the default's first
    training needs a MiniLM pass over 17,841 sentences)."""
    from ..zoo.sentiment import QUICK_RECIPE

    return QUICK_RECIPE


@restores_process_state
def main(argv=None) -> dict:
    p = study_parser(
        "transformer",
        __doc__,
        quick="smoke run: 6 agreement sentences (full: 120), 8 path points (full: 32, adaptive), 4 "
        "negation sentences (full: 60), no adaptive comparison; the completeness gap also measured "
        "at 32 points on 3 of the sentences",
    )
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1: the machine is shared)")
    p.add_argument("--no-cnn", action="store_true", help="skip the comparison with the sentiment CNN")
    args = p.parse_args(argv)
    return finish(run(TransformerConfig.from_args(args)))


def _layer_table(sc: dict) -> pd.DataFrame:
    mlp, att = layers()
    by_layer = pd.DataFrame(
        {
            "layer": range(6),
            "cut_gap_median": sc["cut_gap"].median(0).values.numpy(),
            "cut_gap_max": sc["cut_gap"].max(0).values.numpy(),
            "mlp_share_median": sc["mlp_share"].median(0).values.numpy(),
            "attention_share_median": sc["attention_share"].median(0).values.numpy(),
        }
    )
    to_log_odds = (2 * sc["sign"]).unsqueeze(1)  # F = the predicted logit; ×2·sign: the log-odds (±2 logits)
    by_layer["both_sign_share"] = [both_sign_share(sc["neurons"]["conductance"][l] * to_log_odds) for l in mlp]
    by_layer["head_both_sign_share"] = [both_sign_share(sc["heads"]["conductance"][l] * to_log_odds) for l in att]
    return by_layer


def _print_tables(by_layer, summary, head_summary, flip_summary, *, n, steps, evals, seconds, k, max_flip):
    print(
        f"\n{n} test sentences, {steps} path points ({evals} evaluations each), "
        f"6 MLP + 6 attention layers + 6 residual cuts in one call per batch ({seconds:.1f}s):"
    )
    print(by_layer.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    for title, df, col in (
        (f"\nagreement with ablation (mean Pearson, top-{k} neurons per sentence and layer):", summary, "mean"),
        ("the same, ablation = the neuron's value at the baseline input:", summary, "mean_to_baseline"),
        ("heads (all 12 per layer):", head_summary, "mean"),
    ):
        print(title)
        print(df.pivot(index="layer", columns="score", values=col).to_string(float_format=lambda v: f"{v:+.3f}"))
    print(f"flips (top neurons ablated together, up to {max_flip}):")
    print(flip_summary.to_string(index=False, float_format=lambda v: f"{v:.2f}"), flush=True)


@restores_process_state
def run(config: TransformerConfig) -> Result:
    """The study with ``config``: writes its tables, figures, ``transformer.json`` and ``manifest.json`` into
    ``config.out``."""
    from ..zoo.minilm import minilm_sentiment
    from ..zoo.sentiment import NEGATIONS, movie_reviews, tokenize
    from .sentiment_negation import NEGATION_PROBES

    out = config.out
    os.makedirs(out, exist_ok=True)
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    torch.set_grad_enabled(True)
    warnings.filterwarnings("ignore", category=UserWarning, module="transformers")
    seconds = {}
    t0 = time.perf_counter()
    data = movie_reviews()
    lm = minilm_sentiment(progress=None)
    seconds["data_and_model"] = time.perf_counter() - t0
    print(
        f"all-MiniLM-L6-v2 + linear head ({'cached' if lm.cached else 'trained'}, C={lm.info['C']}): test "
        f"accuracy {lm.test_accuracy:.3f}, dev {lm.dev_accuracy:.3f} ({lm.info['n_train']}/{lm.info['n_dev']}/"
        f"{lm.info['n_test']} sentences)",
        flush=True,
    )
    size = QUICK if config.quick else FULL
    n_agree, steps, k, max_flip = size["n_agree"], size["steps"], size["k"], size["max_flip"]

    # 1 + 2. one call per batch: all scores, all 18 sites ------------------------------------------------------
    t0 = time.perf_counter()
    rng = np.random.default_rng(config.seed)
    pick = np.sort(rng.choice(len(data.test), size=min(n_agree, len(data.test)), replace=False))
    sents = [data.test.sentences[i] for i in pick]
    note(f"scores: {len(sents)} test sentences, 4 scores × 18 sites, {steps} adaptive path points")
    sc = score_sentences(lm, sents, n_steps=steps)
    seconds["scores"] = time.perf_counter() - t0
    by_layer = _layer_table(sc)

    gap_check = None
    if config.quick:  # why a quick run's gap is larger than the full run's: the same sentences at the full budget
        t0 = time.perf_counter()
        few = sents[:3]
        note(f"completeness gap at {steps} and {FULL['steps']} path points on {len(few)} of the sentences")
        gap_check = {
            "steps": steps,
            "full_steps": FULL["steps"],
            "n_sentences": len(few),
            **gap_by_steps(lm, few, [steps, FULL["steps"]], target=sc["label"][: len(few)].tolist()),
        }
        seconds["gap_check"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    note(f"ablation: top-{k} neurons and all 12 heads of 6 layers, {len(sents)} sentences")
    agree, head_agree, flips, _ = agreement_and_flips(lm, sc, k=k, max_flip=max_flip)
    seconds["ablation"] = time.perf_counter() - t0
    summary, head_summary = summarize_agreement(agree), summarize_agreement(head_agree)
    flip_summary = summarize_flips(flips, max_flip)
    for df, name in (
        (by_layer, "transformer_layers"),
        (summary, "transformer_agreement"),
        (head_summary, "transformer_head_agreement"),
        (flip_summary, "transformer_flips"),
    ):
        write_table(df, out, name, index=False)
    agree.to_csv(os.path.join(out, "transformer_agreement_rows.csv"), index=False)
    scale = f"{len(sents)} test sentences, {steps} path points" + (" (quick)" if config.quick else "")
    layer_figure(
        by_layer,
        os.path.join(out, "transformer_layers.png"),
        gap_check=gap_check,
        title=f"MiniLM + sentiment head: sub-layer shares and completeness ({scale})",
    )
    agreement_figure(
        summary,
        head_summary,
        os.path.join(out, "transformer_agreement.png"),
        title=f"MiniLM: agreement of each score with ablation ({scale})",
    )
    _print_tables(
        by_layer,
        summary,
        head_summary,
        flip_summary,
        n=len(sents),
        steps=steps,
        evals=int(sc["n_evals"].max()),
        seconds=seconds["scores"],
        k=k,
        max_flip=max_flip,
    )
    if gap_check:
        print(
            f"\nquick mode's completeness gap, {gap_check['n_sentences']} of the sentences (residual cuts alone): "
            f"median "
            f"{gap_check['median']} and worst {gap_check['worst']} by path points",
            flush=True,
        )

    def mean_by(df, col):
        return {m: float(df[df["score"] == m][col].mean()) for m in SCORES}

    adaptive = None
    if not config.quick:
        t0 = time.perf_counter()
        note("residual-cut completeness gap: adaptive vs Gauss–Legendre at 16 evaluations, 6 sentences")
        adaptive = adaptive_vs_fixed(lm, sents[:6], budget=16)
        seconds["adaptive"] = time.perf_counter() - t0
        print(f"\nresidual-cut completeness gap, 6 sentences, 16 evaluations each: {adaptive}", flush=True)

    # 3. negation neurons -------------------------------------------------------------------------------------
    t0 = time.perf_counter()
    negset = set(NEGATIONS)
    corpus = [s for s in data.test.sentences if negset & set(tokenize(s))][: size["n_neg"]]
    note(f"negation: per-token conductance on {len(corpus)} test sentences with a negation")
    neg = negation_section(
        lm,
        corpus,
        NEGATION_PROBES,
        out,
        n_steps=steps,
        probe_steps=size["probe_steps"],
        candidates=size["candidates"],
        with_cnn=not config.no_cnn,
        cnn_recipe=_quick_cnn_recipe() if config.quick else None,
    )
    strips_figure(neg["fig_rows"], os.path.join(out, "transformer_negation.png"))
    seconds["negation"] = time.perf_counter() - t0
    print("\n" + "\n".join(neg["lines"]), flush=True)

    cnn = neg["cnn"]
    result = {
        "model": "all-MiniLM-L6-v2 (frozen) + linear head on the mean-pooled embedding",
        "test_accuracy": round(lm.test_accuracy, 4),
        "dev_accuracy": round(lm.dev_accuracy, 4),
        "cnn_test_accuracy": cnn["test_accuracy"] if cnn else None,
        "n_agreement": len(sents),
        "n_steps": steps,
        "k": k,
        "completeness_gap_by_layer": {
            "site": "residual stream after each layer (bert.encoder.layer.i)",
            "median": [round(float(v), 6) for v in by_layer["cut_gap_median"]],
            "max": [round(float(v), 6) for v in by_layer["cut_gap_max"]],
        },
        "mlp_share_by_layer": [round(float(v), 4) for v in by_layer["mlp_share_median"]],
        "attention_share_by_layer": [round(float(v), 4) for v in by_layer["attention_share_median"]],
        "adaptive_vs_fixed": adaptive,
        "pearson": {m: round(v, 3) for m, v in mean_by(agree, "pearson").items()},
        "pearson_by_layer": {m: [round(float(v), 3) for v in summary[summary["score"] == m]["mean"]] for m in SCORES},
        "head_pearson": {m: round(v, 3) for m, v in mean_by(head_agree, "pearson").items()},
        "pearson_ablation_to_baseline": {m: round(v, 3) for m, v in mean_by(agree, "pearson_to_baseline").items()},
        "pearson_ablation_to_baseline_by_layer": {
            m: [round(float(v), 3) for v in summary[summary["score"] == m]["mean_to_baseline"]] for m in SCORES
        },
        "head_pearson_ablation_to_baseline": {
            m: round(v, 3) for m, v in mean_by(head_agree, "pearson_to_baseline").items()
        },
        "flips_by_layer": {
            m: {
                "flipped_within": max_flip,
                "flipped_share": [round(float(v), 3) for v in g["flipped"]],
                "median_flips_at": [None if np.isnan(v) else float(v) for v in g["median_flips_at"]],
            }
            for m, g in flip_summary.groupby("score", sort=False)
        },
        "both_sign_share_by_layer": [round(float(v), 3) for v in by_layer["both_sign_share"]],
        "head_both_sign_share_by_layer": [round(float(v), 3) for v in by_layer["head_both_sign_share"]],
        "negation_neurons": neg["negation"],
        "negation_corpus_top": [
            {"layer": int(r.layer), "neuron": int(r.neuron), "negation_share": round(float(r.negation_share), 3)}
            for r in neg["best"].itertuples()
        ],
        "negation_token_share": round(neg["chance"], 3),
        "n_negation": len(corpus),
        "cnn_negation": cnn,
        "highlighted": neg["highlighted"],
        "quick_gap_by_steps": gap_check,
        "seconds": {k_: round(v, 1) for k_, v in seconds.items()},
    }
    with open(os.path.join(out, "transformer.json"), "w") as fh:
        json.dump(result, fh, indent=1)
    write_manifest(out, result, quick=config.quick, gap_check=gap_check)
    return Result(value=result, summary=result, out=out)


if __name__ == "__main__":
    main()
