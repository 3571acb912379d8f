"""The features study's figure and its entry in the report (:mod:`unitscope.studies.features`).

>>> import tempfile, os, torch, pandas as pd
>>> from unitscope.report.figures import read_figure_info
>>> d = tempfile.mkdtemp()
>>> tab = pd.DataFrame({"conductance": [0.5, 0.2], "grad_x_activation": [0.6, 0.3], "activation": [0.1, 0.0]},
...                    index=pd.Index(["features", "neurons"], name="kind"))
>>> path = concentration_figure(torch.randn(3, 40), torch.randn(3, 20), torch.randn(3), torch.ones(3), tab,
...                             os.path.join(d, "c.png"))
>>> read_figure_info(path)["title"].startswith("MiniLM layer 2")
True
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["concentration_figure", "write_manifest"]


def _curve(values: torch.Tensor, ks) -> np.ndarray:
    a = values.abs().double().sort(1, descending=True).values
    cum = a.cumsum(1) / a.sum(1, keepdim=True).clamp_min(1e-30)
    return np.array([float(cum[:, min(k, a.shape[1]) - 1].median()) for k in ks])


def concentration_figure(
    features: torch.Tensor,
    neurons: torch.Tensor,
    error: torch.Tensor,
    output_diff: torch.Tensor,
    pearson_tab,
    path: str,
) -> str:
    """Left: the median share of Σ|conductance| carried by the top-k units, features against neurons; middle: the
    error node's share of F(x) − F(x') per sentence; right: mean Pearson with ablation to the baseline value."""
    from ..report.figures import plt, save_figure

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    ks = [k for k in (1, 2, 3, 5, 7, 10, 15, 20, 30, 50, 70, 100, 150, 200, 300, 384) if k <= features.shape[1]]
    ax = axes[0]
    ax.plot(ks, _curve(features, ks), "o-", label=f"SAE features ({features.shape[1]})", color="#1f77b4")
    kn = [k for k in ks if k <= neurons.shape[1]]
    ax.plot(kn, _curve(neurons, kn), "s-", label=f"neurons ({neurons.shape[1]})", color="#ff7f0e")
    ax.set_xscale("log")
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("top-k units by |conductance|")
    ax.set_ylabel("median share of Σ|conductance|")
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title("how concentrated the conductance is")
    ax = axes[1]
    share = (error.double() / output_diff.double()).numpy()
    ax.hist(np.clip(share, -3, 3), bins=20, color="#7f7f7f")
    ax.axvline(float(np.median(share)), color="k", ls="--", lw=1, label=f"median {np.median(share):+.2f}")
    ax.set_xlabel("error node's conductance / (F(x) − F(x')), clipped to ±3")
    ax.set_ylabel("sentences")
    ax.legend(fontsize=8)
    ax.set_title("the error node's share")
    ax = axes[2]
    kinds, scores = list(pearson_tab.index), list(pearson_tab.columns)
    width = 0.8 / max(1, len(kinds))
    for j, kind in enumerate(kinds):
        ax.bar(np.arange(len(scores)) + j * width, pearson_tab.loc[kind].values, width, label=kind)
    ax.set_xticks(np.arange(len(scores)) + width * (len(kinds) - 1) / 2)
    ax.set_xticklabels([s.replace("grad_x_activation", "grad × act") for s in scores])
    ax.axhline(0, color="k", lw=0.5)
    ax.set_ylim(-1, 1)
    ax.set_ylabel("mean Pearson r with ablation")
    ax.legend(fontsize=8)
    ax.set_title("agreement with ablation to the baseline")
    fig.suptitle("MiniLM layer 2 residual stream: SAE features against neurons (F = the predicted class's logit)")
    fig.tight_layout()
    return save_figure(fig, path)


def _pct(v: float) -> str:
    return f"{100 * v:.1f} %"


def write_manifest(out: str, result: dict, *, quick: bool) -> str:
    """The report's entry for the study (:func:`unitscope.report.manifest.write_entry`)."""
    from ..report.manifest import write_entry

    m, n, k = result["sae"], result["n_sentences"], result["k"]
    gap, conc, err = result["completeness_gap"], result["concentration"], result["error_node_share"]
    pf, pn = result["pearson_to_baseline"]["features"], result["pearson_to_baseline"]["neurons"]
    heads = [
        f"The zoo's SAE on MiniLM's residual stream after layer 2 ({result['n_features']} ReLU features, L1) measured "
        f"on {m['n_sentences']} held-out movie-review test sentences ({m['n_tokens']} tokens): L0 {m['l0']:.1f} active "
        f"features per token, fraction of variance unexplained {m['fvu']:.3f}, {_pct(m['dead_share'])} dead features.",
        f"Replacing the layer by the SAE's reconstruction changes the sentiment head's accuracy on those sentences "
        f"from {_pct(m['accuracy'])} to {_pct(m['reconstructed_accuracy'])} ({100 * m['accuracy_change']:+.1f} "
        f"points); {_pct(m['agreement'])} of the predictions stay the same.",
        f"Completeness over the {result['n_features']} features plus the error node, {n} test sentences, at most "
        f"{result['n_steps']} adaptive path points: median gap {_pct(gap['features_plus_error_median'])} (max "
        f"{_pct(gap['features_plus_error_max'])}); over the layer's 384 neurons: median "
        f"{_pct(gap['neurons_median'])} (max {_pct(gap['neurons_max'])}).",
        f"The error node carries {err['pooled']:+.2f} of F(x) − F(x') pooled over the sentences (the predicted logit's "
        f"change from the [PAD] baseline; median per sentence {err['median']:+.2f}) and a median "
        f"{_pct(err['abs_share_median'])} of Σ|conductance| over features + error node; the SAE's squared error "
        f"per word is {result['error_at_baseline']['ratio']:.1f}× as large at the [PAD] baseline as on the text, "
        "and the error node's conductance is its change along the path.",
        f"The top 10 features carry a median {_pct(conc['features']['top_share'])} of Σ|conductance| over the "
        f"features, the top 10 neurons {_pct(conc['neurons']['top_share'])} over the neurons; 80 % takes "
        f"{conc['features']['units_for_share']:.0f} features against {conc['neurons']['units_for_share']:.0f} "
        "neurons (medians over the sentences).",
        f"Agreement with ablation to the baseline value (mean Pearson r over the top-{k} units of {n} sentences): "
        f"features — conductance {pf['conductance']:+.2f}, gradient × activation {pf['grad_x_activation']:+.2f}, "
        f"activation {pf['activation']:+.2f}; neurons — {pn['conductance']:+.2f}, {pn['grad_x_activation']:+.2f}, "
        f"{pn['activation']:+.2f}.",
    ]
    for e in result["negation"]:
        f0 = e["features"][0]
        heads.append(
            f"On “{e['probe']}” (log-odds {e['log_odds']:+.2f}) the top feature is #{f0['feature']} "
            f"(conductance {f0['conductance']:+.3f} for the log-odds, most active on '{f0['peak_token']}', "
            f"{_pct(f0['negation_token_share'])} of its conductance on the negation token)."
        )
    figures = [
        (
            "features_concentration.png",
            "Left: the median share of a sentence's Σ|conductance| that its top-k units carry, the SAE's features "
            "(blue) against the same layer's neurons (orange); a curve that rises sooner means fewer units carry "
            "the prediction. Middle: per sentence, the error node's conductance as a share of F(x) − F(x') "
            "(1 = all of it; the features carry the rest, with sign). Right: mean Pearson r between a score's "
            f"values of the top-{k} units and their ablation-to-baseline effects (set to the unit's value at the "
            "baseline input at every token); 1 = the score ranks units as ablation does.",
        )
    ]
    tables = [
        (
            "features_units.csv",
            "Features against neurons: the median share of Σ|conductance| carried by the top "
            "10, the units needed for 80 % of it, and the completeness gap (median, max; relative to |F(x) − "
            "F(x')|).",
        ),
        (
            "features_top.csv",
            "The features with the largest mean |conductance| for the log-odds over the "
            "sentences (sign: + towards positive), how often they are active, and the test-sentence tokens they "
            "are most active on.",
        ),
        ("features_top_neurons.csv", "The same for the layer's neurons."),
        ("features_agreement.csv", f"Mean Pearson r with ablation to the baseline value, top-{k} units."),
        (
            "features_negation.csv",
            "Each negation probe's top five features: conductance for the log-odds, "
            "share on the negation token, lift on negations in the test sentences, per-token activation and "
            "conductance.",
        ),
    ]
    scale = f"{n} test sentences, {result['n_steps']} path points; SAE metrics on {m['n_sentences']} test sentences" + (
        " (quick)" if quick else ""
    )
    return write_entry(
        out,
        title="MiniLM: SAE features against neurons",
        order=75,
        name="features",
        quick=quick,
        scale=scale,
        description=(
            "A sparse autoencoder trained by unitscope's zoo on the residual stream of all-MiniLM-L6-v2 "
            "after its third layer rewrites that layer as decode(encode(y)) + ε: its features and the error "
            "node ε are units like neurons. Conductance (from the [PAD] baseline, F = the predicted class's "
            "logit of the linear sentiment head) of every feature, the error node and the layer's 384 "
            "neurons comes from one pass along the path; completeness must hold over features + error node "
            "and over the neurons, since the layer is a cut of the network. The tables say which features "
            "matter and what they respond to, how the scores agree with ablation, and how the negation "
            "probes read through features."
        ),
        headlines=heads,
        figures=figures,
        tables=tables,
        summary="features.json",
    )
