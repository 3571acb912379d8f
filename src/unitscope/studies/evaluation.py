"""``python -m unitscope.studies.evaluation [--quick] [--out DIR]``: the conductance paper's three
evaluations — agreement with ablation, prediction flips, feature selection — on the digits CNNs trained on
real digits (and EfficientNet-Lite0 on the bundled photos unless ``--quick``).

Writes CSV and Markdown tables and scatter plots to ``--out``; the last line printed is one JSON object.
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
from ..core.progress import note
from .agreement import ablation_agreement, flip_counts, summarize_agreement, summarize_flips
from .selection import feature_selection
from .tables import write_table
from ..core.state import restores_process_state
from .common import Config, Result, finish, study_parser

PAPER_PEARSON = {
    "inception": {"conductance": 0.79, "internal_influence": 0.49, "activation": 0.07, "grad_x_activation": 0.92},
    "sentiment_cnn": {"conductance": 0.88, "internal_influence": -0.43, "activation": 0.19, "grad_x_activation": 0.99},
}
PAPER_FLIPS = {"mean": 3.7, "max": 16, "over_10": 0.03, "internal_influence_top10_flip_share": 0.05}
PAPER_SETTING = {
    "inception": "Inception (GoogLeNet) on ImageNet images (Dhamdhere et al. 2018)",
    "sentiment_cnn": "Kim's sentiment CNN on movie-review sentences (Dhamdhere et al. 2018)",
    "flips": "Inception on 100 ImageNet images (Dhamdhere et al. 2018)",
}
MODEL_NAMES = {"digits_cnn": "digits CNN", "digits_vgg": "digits VGG", "efficientnet_lite0": "EfficientNet-Lite0"}


def _write(df: pd.DataFrame, out: str, name: str) -> None:
    write_table(df, out, name, index=True)


def scatter(df: pd.DataFrame, path: str, title: str) -> str:
    """Method score vs ablation score of every (input, top unit) pair, one panel per method."""
    from ..report.figures import plt, save_figure

    methods = list(dict.fromkeys(df["score"]))
    fig, axes = plt.subplots(1, len(methods), figsize=(3.2 * len(methods), 3.0), squeeze=False)
    for ax, m in zip(axes[0], methods):
        sub = df[df["score"] == m]
        xs = np.concatenate(sub["scores"].to_list())
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
    scores = attribute(model, x, [layer], scores=SCORES, n_steps=n_steps, path=PathConfig(gap_warning=None))
    agree = ablation_agreement(model, x, layer, k=k, scores=scores)
    summary = summarize_agreement(agree)
    _write(summary, out, f"{name}_agreement")
    scatter(agree, os.path.join(out, f"{name}_agreement.png"), f"{name} {layer}: importance vs ablation")
    flips = flip_counts(
        model, x, layer, scores["conductance"].per_channel(layer).argsort(1, descending=True), max_units=max_units
    )
    infl_top = flip_counts(
        model, x, layer, scores["internal_influence"].per_channel(layer).argsort(1, descending=True), max_units=10
    )
    fsum = summarize_flips(flips)
    fsum["internal_influence_top10_flip_share"] = float(infl_top["flip_top10"].mean())
    fsum["conductance_top10_flip_share"] = float(flips["flip_top10"].mean())
    pd.DataFrame([fsum]).to_csv(os.path.join(out, f"{name}_flips.csv"), index=False)
    echo(f"[{name}] {len(x)} inputs, layer {layer} ({time.perf_counter() - t0:.0f} s)")
    echo(summary.to_string(float_format=lambda v: f"{v:.3f}"))
    echo(
        f"  flips: mean {fsum['mean']:.2f}, max {fsum['max']:.0f}, share > 10: {fsum['over_10']:.2f}, never: "
        f"{fsum['never']} of {fsum['n']}; "
        f"internal influence top-10 flips {fsum['internal_influence_top10_flip_share']:.2f}"
    )
    return {"pearson": summary["mean"].to_dict(), "flips": fsum}


@restores_process_state
def main(argv=None) -> dict:
    p = study_parser(
        "evaluation",
        __doc__,
        quick="40 test digits, 12 path points, 480 training digits for feature selection; digits CNN only",
    )
    args = p.parse_args(argv)
    return finish(run(Config.from_args(args)))


@restores_process_state
def run(config: Config) -> Result:
    """The study with ``config`` (see :class:`unitscope.studies.common.Config`): writes into ``config.out``."""
    from ..zoo import digits_cnn, digits_data, digits_vgg

    os.makedirs(config.out, exist_ok=True)
    torch.manual_seed(config.seed)
    train, test = digits_data()
    n_inputs = 40 if config.quick else 300
    steps = 12 if config.quick else 50
    results, settings = {}, {}
    n_steps_total = 2 if config.quick else 4
    note(
        f"step 1/{n_steps_total}: conductance and ablation of the digits CNN's features.relu3 on {n_inputs} test "
        f"digits ({steps} path points)"
    )
    cnn = digits_cnn().model
    settings["digits_cnn"] = f"digits CNN (features.relu3, {n_inputs} test digits)"
    results["digits_cnn"] = run_model("digits_cnn", cnn, test.x[:n_inputs], "features.relu3", config.out, n_steps=steps)
    if not config.quick:
        note(f"step 2/{n_steps_total}: the same on the digits VGG (features.relu6)")
        settings["digits_vgg"] = f"digits VGG (features.relu6, {n_inputs} test digits)"
        vgg = digits_vgg().model
        results["digits_vgg"] = run_model(
            "digits_vgg", vgg, test.x[:n_inputs], "features.relu6", config.out, n_steps=steps
        )
        from ..zoo import efficientnet_lite0, photos

        note(f"step 3/{n_steps_total}: the same on EfficientNet-Lite0 (blocks.5) and the bundled photos")
        net = efficientnet_lite0()
        xs = torch.stack([net.preprocess(im) for im in photos().values()])
        settings["efficientnet_lite0"] = f"EfficientNet-Lite0 (blocks.5, {len(xs)} bundled photos)"
        results["efficientnet_lite0"] = run_model(
            "efficientnet_lite0", net.model, xs, "blocks.5", config.out, n_steps=32
        )
    rng = np.random.default_rng(config.seed)
    label_sets = [list(range(5)), list(range(5, 10))] + [
        sorted(rng.choice(10, 5, replace=False).tolist()) for _ in range(1 if config.quick else 3)
    ]
    n_train = 480 if config.quick else len(train.x)  # quick: a stratified-enough prefix of the shuffled split
    note(
        f"step {n_steps_total}/{n_steps_total}: feature selection on the digits CNN's features.relu4 "
        f"({len(label_sets)} label sets, {n_train} training digits)"
    )
    fs = feature_selection(
        cnn,
        train.x[:n_train],
        train.y[:n_train],
        test.x,
        test.y,
        "features.relu4",
        label_sets,
        n_steps=8 if config.quick else 20,
    )
    table = fs.pivot_table(index=["labels", "score"], columns="k", values="accuracy")
    mean = fs.groupby(["score", "k"])["accuracy"].mean().unstack("k")
    _write(table, config.out, "feature_selection_by_set")
    _write(mean, config.out, "feature_selection_mean")
    print("feature selection (digits CNN, features.relu4), mean accuracy over label sets:")
    print(mean.to_string(float_format=lambda v: f"{v:.3f}"))
    first = results["digits_cnn"]
    summary = {
        "pearson": first["pearson"],
        "flips": {k: first["flips"][k] for k in ("mean", "max", "over_10")},
        "internal_influence_top10_flip_share": first["flips"]["internal_influence_top10_flip_share"],
        "feature_selection": {m: [float(mean.loc[m, k]) for k in sorted(mean.columns)] for m in SCORES},
        "feature_selection_random": [float(mean.loc["random", k]) for k in sorted(mean.columns)],
        "by_model": results,
        "paper": {"pearson": PAPER_PEARSON, "flips": PAPER_FLIPS},
    }
    with open(os.path.join(config.out, "evaluation.json"), "w") as f:
        json.dump(summary, f, indent=1, default=float)
    _manifest(config, summary, settings, mean, n_inputs=n_inputs, steps=steps, n_train=n_train, n_sets=len(label_sets))
    short = {k: summary[k] for k in ("pearson", "flips", "internal_influence_top10_flip_share", "feature_selection")}
    return Result(value=summary, summary=short, out=config.out)


def _manifest(args, summary, settings, mean, *, n_inputs, steps, n_train, n_sets) -> None:
    from ..report.manifest import write_entry

    models = list(summary["by_model"])
    ks = sorted(mean.columns)
    first, setting = summary["by_model"]["digits_cnn"], settings["digits_cnn"]
    r, fl = first["pearson"], first["flips"]
    comparisons = []
    for m in SCORES:
        for name in models:
            comparisons.append(
                {
                    "quantity": f"mean Pearson r of {m.replace('_', ' ')} with ablation (top 10 units)",
                    "ours": summary["by_model"][name]["pearson"].get(m),
                    "ours_setting": settings[name],
                    "paper": PAPER_PEARSON["inception"][m],
                    "paper_setting": PAPER_SETTING["inception"],
                }
            )
    for key, label in (
        ("mean", "filters ablated (by conductance) before the prediction flips, mean"),
        ("max", "filters ablated before the prediction flips, max"),
        ("over_10", "share of inputs needing more than 10 ablated filters to flip"),
    ):
        for name in models:
            comparisons.append(
                {
                    "quantity": label,
                    "ours": summary["by_model"][name]["flips"][key],
                    "ours_setting": settings[name],
                    "paper": PAPER_FLIPS[key],
                    "paper_setting": PAPER_SETTING["flips"],
                }
            )
    k = 10 if 10 in ks else ks[len(ks) // 2]
    acc_c, acc_r = float(mean.loc["conductance", k]), float(mean.loc["random", k])
    figures = [
        (
            f"{n}_agreement.png",
            f"{settings[n]}: each dot is one of the top-10 "
            "units of one input, its score by the method (x) against its ablation score, "
            "F(x) − F(x with the unit set to 0) (y); one panel per method, mean r in the "
            "title. Dots on a rising line: the method ranks units as ablation does.",
        )
        for n in models
    ]
    tables = []
    for n in models:
        tables += [
            (
                f"{n}_agreement.csv",
                f"{MODEL_NAMES.get(n, n)}: Pearson r with ablation per method (mean, quartiles over inputs, n inputs)",
            ),
            (f"{n}_flips.csv", f"{MODEL_NAMES.get(n, n)}: filters ablated before the prediction flips"),
        ]
    tables += [
        (
            "feature_selection_mean.csv",
            "Feature selection: held-out accuracy of a linear classifier on the "
            "top-k filters per method (columns: k), mean over label sets",
        ),
        ("feature_selection_by_set.csv", "Feature selection per label set"),
    ]
    write_entry(
        args.out,
        order=20,
        quick=args.quick,
        summary="evaluation.json",
        title="Conductance vs ablation, prediction flips and feature selection (Dhamdhere et al. 2018, §5)",
        scale=(
            f"digits CNN only, {n_inputs} test digits, {steps} path points; feature selection on {n_train} "
            f"training digits and {n_sets} label sets"
            if args.quick
            else None
        ),
        description=(
            "The paper's three checks of an importance score. Agreement: per input, the Pearson "
            "correlation between a method's scores of its top-10 units and those units' ablation scores "
            "(the output's drop when the unit is set to 0). Flips: ablate the top units by conductance one "
            "at a time, and count how many it takes to change the predicted label. Feature selection: "
            "keep each label's k most important filters and train a linear classifier on them alone. "
            "'Ours' is always the model and data named beside it; the paper's numbers are for its own "
            "models, which the table names (its sentiment-CNN numbers are in the sentiment section, beside "
            "that study's)."
        ),
        headlines=[
            f"On the {setting}, conductance agrees with ablation with mean Pearson r {r['conductance']:.2f} "
            f"(activation {r['activation']:.2f}); the paper reports {PAPER_PEARSON['inception']['conductance']} "
            "for Inception on ImageNet.",
            f"Ablating the digits CNN's top filters by conductance flips the prediction after {fl['mean']:.1f} "
            f"filters on average (at most {fl['max']:.0f}; "
            + (f"all {fl['n']} digits flip" if not fl["never"] else f"{fl['never']} of {fl['n']} digits never flip")
            + f"); the paper: {PAPER_FLIPS['mean']} for Inception.",
            f"A linear classifier on the top-{k} features.relu4 filters by conductance labels {100 * acc_c:.0f} % "
            f"of held-out digits correctly, against {100 * acc_r:.0f} % for {k} random filters (mean over {n_sets} "
            "label sets).",
        ],
        figures=figures,
        tables=tables,
        comparisons=comparisons,
    )


if __name__ == "__main__":
    main()
