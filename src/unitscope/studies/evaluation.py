"""``python -m unitscope.studies.evaluation [--quick] [--out DIR]``: the conductance paper's three
evaluations — agreement with ablation, prediction flips, feature selection — on the digits CNNs trained on
real digits (and EfficientNet-Lite0 on the bundled photos unless ``--quick``).

Writes CSV and Markdown tables and scatter plots to ``--out``; the last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import pandas as pd
import torch

from ..attribution.scores import SCORES, attribute
from .agreement import ablation_agreement, flip_counts, summarize_agreement, summarize_flips
from .selection import feature_selection
from .tables import write_table

PAPER_PEARSON = {"inception": {"conductance": 0.79, "internal_influence": 0.49, "activation": 0.07,
                               "grad_x_activation": 0.92},
                 "sentiment_cnn": {"conductance": 0.88, "internal_influence": -0.43, "activation": 0.19,
                                   "grad_x_activation": 0.99}}
PAPER_FLIPS = {"mean": 3.7, "max": 16, "over_10": 0.03, "internal_influence_top10_flip_share": 0.05}


def _write(df: pd.DataFrame, out: str, name: str) -> None:
    write_table(df, out, name, index=True)


def scatter(df: pd.DataFrame, path: str, title: str) -> str:
    """Method score vs ablation score of every (input, top unit) pair, one panel per method."""
    from ..report.figures import plt, save_figure

    methods = list(dict.fromkeys(df["method"]))
    fig, axes = plt.subplots(1, len(methods), figsize=(3.2 * len(methods), 3.0), squeeze=False)
    for ax, m in zip(axes[0], methods):
        sub = df[df["method"] == m]
        xs = np.concatenate(sub["method_scores"].to_list())
        ys = np.concatenate(sub["ablation_scores"].to_list())
        ax.scatter(xs, ys, s=4, alpha=0.4)
        ax.set_title(f"{m}\nmean r = {sub['pearson'].mean():.2f}", fontsize=8)
        ax.set_xlabel("importance", fontsize=7)
        ax.set_ylabel("ablation score", fontsize=7)
        ax.tick_params(labelsize=6)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


def run_model(name, model, x, layer, out, *, k=10, n_steps=50, max_units=None, echo=print) -> dict:
    """Studies 1 and 2 for one model on inputs ``x`` at ``layer``."""
    t0 = time.perf_counter()
    scores = attribute(model, x, [layer], scores=SCORES, n_steps=n_steps, gap_warning=None)
    agree = ablation_agreement(model, x, layer, k=k, scores=scores)
    summary = summarize_agreement(agree)
    _write(summary, out, f"{name}_agreement")
    scatter(agree, os.path.join(out, f"{name}_agreement.png"), f"{name} {layer}: importance vs ablation")
    flips = flip_counts(model, x, layer, scores["conductance"].per_channel(layer).argsort(1, descending=True),
                        max_units=max_units)
    infl_top = flip_counts(model, x, layer,
                           scores["internal_influence"].per_channel(layer).argsort(1, descending=True),
                           max_units=10)
    fsum = summarize_flips(flips)
    fsum["internal_influence_top10_flip_share"] = float(infl_top["flip_top10"].mean())
    fsum["conductance_top10_flip_share"] = float(flips["flip_top10"].mean())
    pd.DataFrame([fsum]).to_csv(os.path.join(out, f"{name}_flips.csv"), index=False)
    echo(f"[{name}] {len(x)} inputs, layer {layer} ({time.perf_counter() - t0:.0f} s)")
    echo(summary.to_string(float_format=lambda v: f"{v:.3f}"))
    echo(f"  flips: mean {fsum['mean']:.2f}, max {fsum['max']:.0f}, share > 10: {fsum['over_10']:.2f}, never: "
         f"{fsum['never']} of {fsum['n']}; "
         f"internal influence top-10 flips {fsum['internal_influence_top10_flip_share']:.2f}")
    return {"pearson": summary["mean"].to_dict(), "flips": fsum}


def main(argv=None) -> dict:
    from ..zoo import digits_cnn, digits_data, digits_vgg

    p = argparse.ArgumentParser(prog="python -m unitscope.studies.evaluation", description=__doc__)
    p.add_argument("--quick", action="store_true", help="40 test digits, 12 path points, 480 training digits for feature selection; digits CNN only")
    p.add_argument("--out", default="unitscope-out/evaluation")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    torch.manual_seed(args.seed)
    train, test = digits_data()
    n_inputs = 40 if args.quick else 300
    steps = 12 if args.quick else 50
    results = {}
    cnn = digits_cnn().model
    results["digits_cnn"] = run_model("digits_cnn", cnn, test.x[:n_inputs], "features.relu3", args.out,
                                      n_steps=steps)
    if not args.quick:
        vgg = digits_vgg().model
        results["digits_vgg"] = run_model("digits_vgg", vgg, test.x[:n_inputs], "features.relu6", args.out,
                                          n_steps=steps)
        from ..zoo import efficientnet_lite0, photos

        net = efficientnet_lite0()
        xs = torch.stack([net.preprocess(im) for im in photos().values()])
        results["efficientnet_lite0"] = run_model("efficientnet_lite0", net.model, xs, "blocks.5", args.out,
                                                  n_steps=32)
    rng = np.random.default_rng(args.seed)
    label_sets = [list(range(5)), list(range(5, 10))] + [sorted(rng.choice(10, 5, replace=False).tolist())
                                                       for _ in range(1 if args.quick else 3)]
    n_train = 480 if args.quick else len(train.x)  # quick: a stratified-enough prefix of the shuffled split
    fs = feature_selection(cnn, train.x[:n_train], train.y[:n_train], test.x, test.y, "features.relu4", label_sets,
                           n_steps=8 if args.quick else 20)
    table = fs.pivot_table(index=["labels", "method"], columns="k", values="accuracy")
    mean = fs.groupby(["method", "k"])["accuracy"].mean().unstack("k")
    _write(table, args.out, "feature_selection_by_set")
    _write(mean, args.out, "feature_selection_mean")
    print("feature selection (digits CNN, features.relu4), mean accuracy over label sets:")
    print(mean.to_string(float_format=lambda v: f"{v:.3f}"))
    first = results["digits_cnn"]
    summary = {"pearson": first["pearson"],
               "flips": {k: first["flips"][k] for k in ("mean", "max", "over_10")},
               "internal_influence_top10_flip_share": first["flips"]["internal_influence_top10_flip_share"],
               "feature_selection": {m: [float(mean.loc[m, k]) for k in sorted(mean.columns)]
                                     for m in SCORES},
               "feature_selection_random": [float(mean.loc["random", k]) for k in sorted(mean.columns)],
               "by_model": results, "paper": {"pearson": PAPER_PEARSON, "flips": PAPER_FLIPS}}
    with open(os.path.join(args.out, "evaluation.json"), "w") as f:
        json.dump(summary, f, indent=1, default=float)
    print(json.dumps({k: summary[k] for k in ("pearson", "flips", "internal_influence_top10_flip_share",
                                              "feature_selection")}, default=float))
    return summary


if __name__ == "__main__":
    main()
