"""The Representative Substitution study's figures: RS against selectivity per layer, Spearman ρ by depth,
accuracy as units are ablated by selectivity, and the AM / IAM pictures (through the one image grid)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

__all__ = ["scatter_figure", "depth_figure", "ablation_figure", "picture_figure", "spearman", "ORDERS"]

ORDERS = ("high_first", "low_first", "random")  # the orders in which units are ablated


def spearman(a, b) -> float:
    """Spearman ρ; NaN when either side is constant (no ranking to compare)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(spearmanr(a, b).statistic)


def scatter_figure(df: pd.DataFrame, layers, model: str, path: str) -> str:
    from ..report.figures import plt, save_figure

    fig, axes = plt.subplots(2, len(layers), figsize=(2.3 * len(layers), 4.6), squeeze=False)
    for j, layer in enumerate(layers):
        d = df[(df.layer == layer) & df.live]
        for i, kind in enumerate(("am", "iam")):
            ax = axes[i, j]
            ax.scatter(
                d.selectivity,
                d[f"rs_{kind}"],
                s=4 if len(d) > 500 else 8,
                alpha=0.5,
                color="tab:blue" if kind == "iam" else "tab:orange",
            )
            rho = spearman(d[f"rs_{kind}"], d.selectivity)
            ax.set_title(f"{layer.split('.')[-1]} {kind.upper()}  ρ={rho:+.2f}", fontsize=7)
            ax.set_xlim(-0.02, 1.02)
            ax.set_ylim(-0.02, 1.02)
            ax.tick_params(labelsize=6)
            if j == 0:
                ax.set_ylabel(f"RS ({kind.upper()})", fontsize=7)
            if i == 1:
                ax.set_xlabel("class selectivity", fontsize=7)
    fig.suptitle(f"{model}: representative substitution vs class selectivity", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


def depth_figure(rho: dict, path: str) -> str:
    from ..report.figures import plt, save_figure

    fig, ax = plt.subplots(figsize=(5.0, 3.4))
    for (model, layers), color in zip(rho.items(), ("tab:blue", "tab:green", "tab:red")):
        depth = np.arange(1, len(layers) + 1)
        for kind, ls, marker in (("iam", "-", "o"), ("am", "--", "x")):
            ax.plot(
                depth,
                [layers[name][kind] for name in layers],
                ls=ls,
                marker=marker,
                color=color,
                label=f"{model} {kind.upper()}",
                lw=1.2,
                ms=4,
            )
    ax.axhline(0, color="k", lw=0.6)
    ax.set_xlabel("layer (post-ReLU, input → output; last = FC before the classifier for CNNs)", fontsize=7)
    ax.set_ylabel("Spearman ρ(RS, selectivity)", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=6, ncol=3)
    ax.set_title("correlation of RS with class selectivity against depth", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


def ablation_figure(curves: dict, fractions, model: str, path: str) -> str:
    from ..report.figures import plt, save_figure

    layers = list(curves["high_first"])
    cols = min(5, len(layers))
    rows = (len(layers) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(2.3 * cols, 2.5 * rows), squeeze=False, sharey=True)
    for ax in axes.flat[len(layers) :]:
        ax.axis("off")
    for ax, layer in zip(axes.flat, layers):
        for order, color in zip(ORDERS, ("tab:red", "tab:blue", "0.5")):
            ax.plot(fractions, curves[order][layer], color=color, marker=".", lw=1.1, label=order.replace("_", " "))
        ax.set_title(layer.split(".")[-1], fontsize=7)
        ax.set_xlabel("share of live units ablated", fontsize=7)
        ax.tick_params(labelsize=6)
        ax.set_ylim(0, 1.02)
    for row in axes:
        row[0].set_ylabel("test accuracy", fontsize=7)
    axes[0, 0].legend(fontsize=6)
    fig.suptitle(f"{model}: ablation by class selectivity", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


def picture_figure(runs: dict, units, labels, title: str, path: str) -> str:
    from ..report.figures import save_figure
    from ..report.grids import image_grid

    images, titles = [], []
    for kind in ("am", "iam"):
        r = runs[kind]
        row_of = {int(u): k for k, u in enumerate(r.units)}
        for j, u in enumerate(units):
            images.append(r.images[row_of[int(u)]])
            titles.append(f"{kind.upper()} {labels[j]}")
    fig = image_grid(images, titles, cols=len(units), value_range=None, cell=(1.3, 1.75), fontsize=5, title=title)
    return save_figure(fig, path, dpi=130)
