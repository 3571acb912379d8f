"""``python -m unitscope.studies.substitution [--quick] [--out DIR] [--seed N]``: the Representative Substitution
analyses (Chen et al., AAAI 2019 student abstract) on models trained on the real digits.

Models (trained once, then loaded from the user cache): the shallow CNN of the issue (conv 64, 64, 128, 128, 3×3,
stride 1, no pooling, FC 128, FC 10 — :func:`~unitscope.zoo.digits.digits_shallow_cnn`), the VGG-style CNN with
8 conv layers (``digits_vgg``) and the MLP 128-512-2048-2048 (``digits_mlp``). Layers: every post-ReLU layer,
including the fully connected layer before the classifier (``classifier.relu``).

1. **Class selectivity** of every unit (channels averaged over space, post-ReLU) from the training split,
   streamed batch by batch (:func:`~unitscope.data.scan.class_selectivity`).
2. **AM and IAM** images of every unit of each layer (at most 512 live units, evenly spread over the selectivity
   ranking, for the MLP's 2048-unit layers), one batched optimization per layer and kind (pixel parameterization
   in [0, 1], seeded transforms), and **RS** of each unit from AM and from IAM images (RS counts every unit).
3. **Spearman ρ(RS, selectivity)** per layer, against depth (Fig. 3b of the paper), scatter plots (Fig. 1).
   The issue's reading of the paper — other units stand in for highly selective ones — predicts ρ > 0 for IAM.
   Dead ReLUs (0 for every training digit, so SI = 0 by convention) are left out of ρ and of the scatter plots,
   and counted in the tables.
4. **Ablation curves** (Morcos et al. 2018): test accuracy as a layer's units are set to 0 (post-ReLU: removed)
   in order of selectivity — high first, low first, random (mean of several permutations); shares of the live
   units (removing a dead ReLU changes nothing).
5. **Pictures**: AM/IAM grids for the most and least selective units of each digits model, and AM/IAM for a few
   EfficientNet-Lite0 units (FFT parameterization with colour decorrelation, inputs in [−1, 1]).

Writes CSV + Markdown tables, PNG figures and ``substitution.json`` to ``--out``; the last printed line is the
summary as JSON, with ``spearman_by_layer`` (model → layer → {"iam": ρ, "am": ρ}) and ``ablation_accuracy``
(model → order → layer → accuracies at ``ablation_fractions`` of the layer's units removed).
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from ..data.ablation import ablate
from ..synthesis.maximize import activation_maximization, independent_am, representative_substitution
from ..data.scan import class_selectivity
from ..core.progress import note
from ..core.state import analysis_mode, restores_process_state
from .common import Config, Result, finish, study_parser
from .substitution_figures import ORDERS, ablation_figure, depth_figure, picture_figure, scatter_figure, spearman
from .tables import write_table

__all__ = ["main", "MODELS", "layer_analysis", "ablation_curves", "spearman", "batches"]

# model name → (zoo function name, post-ReLU layers from input to output)
MODELS = {
    "shallow_cnn": ("digits_shallow_cnn", [f"features.relu{i}" for i in range(1, 5)] + ["classifier.relu"]),
    "vgg": ("digits_vgg", [f"features.relu{i}" for i in range(1, 9)] + ["classifier.relu"]),
    "mlp": ("digits_mlp", [f"layers.relu{i}" for i in range(1, 5)]),
}
EFFICIENTNET_LAYER = "blocks.3"


def batches(x: torch.Tensor, y: torch.Tensor, size: int = 256):
    """A generator loader: ``(inputs, labels)`` slices, one batch at a time."""
    for i in range(0, len(y), size):
        yield x[i : i + size], y[i : i + size]


def live_units(selectivity) -> torch.Tensor:
    """``[U]`` bool: units active (> 0) on some training class; the others are dead ReLUs (SI 0 by convention)."""
    return selectivity.class_means.max(0).values > 0


def pick_units(selectivity, limit: int | None) -> torch.Tensor:
    """All units, or ``limit`` live units evenly spread over the selectivity ranking (quick runs)."""
    n = selectivity.index.numel()
    if limit is None or limit >= n:
        return torch.arange(n)
    live = torch.nonzero(live_units(selectivity)).flatten()
    ranked = live[torch.argsort(selectivity.index[live], stable=True)]
    pos = torch.linspace(0, len(ranked) - 1, min(limit, len(ranked))).round().long()
    return ranked[pos].sort().values


def layer_analysis(
    model, layer: str, selectivity, *, steps: int, seed: int, lr: float = 0.05, limit: int | None = None
) -> tuple:
    """``(per-unit DataFrame, {"am": Maximized, "iam": Maximized})`` for the units of ``layer`` (all of them, or
    ``limit`` live ones). RS always counts every unit of the layer."""
    units = pick_units(selectivity, limit)
    runs = {}
    for kind, fn in (("am", activation_maximization), ("iam", independent_am)):
        runs[kind] = fn(
            model,
            layer,
            units,
            shape=(1, 8, 8),
            param="pixel",
            value_range=(0.0, 1.0),
            steps=steps,
            lr=lr,
            seed=seed,
            progress=False,
        )
    df = pd.DataFrame(
        {
            "layer": layer,
            "unit": units.numpy(),
            "selectivity": selectivity.index[units].numpy(),
            "preferred": selectivity.preferred[units].numpy(),
            "live": live_units(selectivity)[units].numpy(),
            "rs_am": representative_substitution(runs["am"]).numpy(),
            "rs_iam": representative_substitution(runs["iam"]).numpy(),
            "a_am": runs["am"].own.numpy(),
            "a_iam": runs["iam"].own.numpy(),
            "a_start": runs["am"].activation_trace[0].numpy(),
        }
    )
    return df, runs


def _accuracy(model, x, y) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def ablation_curves(
    model,
    layer: str,
    selectivity: torch.Tensor,
    x,
    y,
    *,
    fractions,
    seed: int,
    random_repeats: int = 3,
    live: torch.Tensor | None = None,
) -> dict:
    """``{order: [accuracy at each fraction]}``: a share of the layer's units set to 0, in order of selectivity
    (``high_first``, ``low_first``) or at random (mean over ``random_repeats`` permutations).

    With ``live`` (bool ``[U]``) only live units are ordered and counted: a dead ReLU already outputs 0, so
    "removing" it is a no-op that would flatter whichever order reaches the dead (SI 0) units first.
    """
    pool = torch.arange(selectivity.numel()) if live is None else torch.nonzero(live).flatten()
    n = pool.numel()
    order_high = pool[torch.argsort(selectivity[pool], descending=True, stable=True)].tolist()
    g = torch.Generator().manual_seed(seed)
    orders = {
        "high_first": [order_high],
        "low_first": [order_high[::-1]],
        "random": [pool[torch.randperm(n, generator=g)].tolist() for _ in range(random_repeats)],
    }
    out, memo = {}, {}

    def acc(units) -> float:
        key = frozenset(units)  # the same set (k = 0, k = n) is evaluated once
        if key not in memo:
            if not units:
                memo[key] = _accuracy(model, x, y)
            else:
                with ablate(model, {layer: list(units)}):
                    memo[key] = _accuracy(model, x, y)
        return memo[key]

    with analysis_mode(model):
        for name, perms in orders.items():
            out[name] = [float(np.mean([acc(perm[: int(round(f * n))]) for perm in perms])) for f in fractions]
    return out


def _efficientnet(out: str, *, quick: bool, seed: int) -> dict:
    """AM/IAM pictures of a few EfficientNet-Lite0 units (no selectivity: no labelled ImageNet data offline)."""
    from ..zoo import efficientnet_lite0

    net = efficientnet_lite0()
    units, steps, size = ([0, 1, 2], 12, 64) if quick else ([0, 5, 10, 20, 40, 60], 96, 128)
    runs = {
        kind: fn(
            net.model,
            EFFICIENTNET_LAYER,
            units,
            shape=(3, size, size),
            param="fft",
            value_range=(-1.0, 1.0),
            steps=steps,
            lr=0.05,
            seed=seed,
            progress=False,
        )
        for kind, fn in (("am", activation_maximization), ("iam", independent_am))
    }
    labels = [f"ch {u}" for u in units]
    path = picture_figure(
        runs,
        units,
        labels,
        f"EfficientNet-Lite0 {EFFICIENTNET_LAYER}: AM (top) and IAM (bottom), FFT, {steps} steps, {size}×{size}",
        os.path.join(out, "substitution_efficientnet.png"),
    )
    rs = {k: representative_substitution(r).tolist() for k, r in runs.items()}
    return {
        "layer": EFFICIENTNET_LAYER,
        "units": units,
        "steps": steps,
        "size": size,
        "figure": os.path.basename(path),
        "rs": rs,
        "own_activation": {k: r.own.tolist() for k, r in runs.items()},
        "start_activation": {k: r.activation_trace[0].tolist() for k, r in runs.items()},
    }


def _write(df: pd.DataFrame, out: str, name: str, *, index: bool = False) -> list[str]:
    return write_table(df, out, name, index=index)


def _nan_to_none(v):
    if isinstance(v, dict):
        return {k: _nan_to_none(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_nan_to_none(x) for x in v]
    if isinstance(v, float) and math.isnan(v):
        return None
    return v


MODEL_NAMES = {"shallow_cnn": "shallow CNN", "vgg": "VGG-style CNN", "mlp": "MLP"}


def _manifest(args, summary: dict, *, steps: int, limit: int, n_test: int) -> None:
    from ..report.manifest import write_entry

    heads = []
    for m, info in summary["models"].items():
        rho = [v["iam"] for v in summary["spearman_by_layer"][m].values() if v["iam"] is not None]
        dead = sum(v["dead_units"] for v in summary["rs_by_layer"][m].values())
        total = sum(v["units"] for v in summary["rs_by_layer"][m].values())
        span = f"from {min(rho):+.2f} to {max(rho):+.2f}" if rho else "undefined (no live units)"
        heads.append(
            f"{MODEL_NAMES.get(m, m)} ({100 * info['test_accuracy']:.1f} % test accuracy on the digits): "
            f"Spearman ρ(RS from IAM, class selectivity) {span} over its {len(info['layers'])} layers; "
            f"ρ > 0 in {sum(r > 0 for r in rho)} of {len(rho)}; {dead} of {total} units dead."
        )
    fr = summary["ablation_fractions"]
    half = min(range(len(fr)), key=lambda i: abs(fr[i] - 0.5))
    m0 = next(iter(summary["ablation_accuracy"]))
    acc = summary["ablation_accuracy"][m0]
    layer = list(acc["high_first"])[-1]
    heads.append(
        f"Removing {100 * fr[half]:.0f} % of the live units of the {MODEL_NAMES.get(m0, m0)}'s {layer}: "
        f"test accuracy {100 * acc['high_first'][layer][half]:.0f} % (most selective first), "
        f"{100 * acc['low_first'][layer][half]:.0f} % (least selective first), "
        f"{100 * acc['random'][layer][half]:.0f} % (random), on {n_test} test digits."
    )
    fig_caption = {
        "substitution_spearman_depth": "Spearman ρ between RS and class selectivity per layer, input to output "
        "(solid: IAM, dashed: AM; one colour per model). Above 0: the more selective "
        "a unit, the more of it the other units can stand in for.",
        "substitution_efficientnet": "AM (top) and IAM (bottom) images of a few EfficientNet-Lite0 blocks.3 "
        "channels (FFT parameterization with decorrelated colour).",
    }

    def caption(path: str) -> str:
        stem = os.path.splitext(os.path.basename(path))[0]
        if stem in fig_caption:
            return fig_caption[stem]
        for m in MODEL_NAMES:
            if stem == f"substitution_scatter_{m}":
                return (
                    f"{MODEL_NAMES[m]}: RS (y) against class selectivity (x) of every live unit, per layer "
                    "(top: from AM images, bottom: from IAM images); ρ in each title."
                )
            if stem == f"substitution_ablation_{m}":
                return (
                    f"{MODEL_NAMES[m]}: test accuracy (y) as a share of a layer's live units is set to 0 (x), "
                    "most selective first (red), least selective first (blue), random (grey)."
                )
            if stem.startswith(f"substitution_pictures_{m}_"):
                return (
                    f"{MODEL_NAMES[m]}: AM (top row) and IAM (bottom row) images of the 4 most and 4 least "
                    "selective live units of one layer, with their selectivity (SI) and RS from AM/IAM."
                )
        return stem.replace("_", " ")

    figures = [(f, caption(f)) for f in summary["figures"]]
    write_entry(
        args.out,
        order=50,
        quick=args.quick,
        summary="substitution.json",
        title="Class selectivity, AM / IAM and Representative Substitution (Chen et al. 2019)",
        scale=(
            f"{limit} live units per layer, {steps} optimization steps, ablation on {n_test} test digits at "
            f"{len(summary['ablation_fractions'])} points"
            if args.quick
            else None
        ),
        description=(
            "Three models trained on the real digits (a shallow CNN, a VGG-style CNN and an MLP). Class "
            "selectivity of a unit: (μ_max − μ_rest) / (μ_max + μ_rest) of its mean activation per class, "
            "from 0 (no preference) to 1 (one class only). AM: an image that maximizes the unit; IAM: one "
            "that maximizes it while keeping the other units of the layer low. RS: how much of a unit's "
            "maximal activation the other units' AM/IAM images reach (0: none can stand in for it, 1: "
            "others reach it fully). Dead units (0 on every training digit) have neither selectivity nor "
            "RS: they are marked dead and left out of ρ."
        ),
        headlines=heads,
        figures=figures,
        tables=[
            (
                "substitution_spearman.csv",
                "Per model and layer: units, dead units, ρ(RS, selectivity) for IAM and AM, mean selectivity and RS",
            ),
            (
                "substitution_ablation.csv",
                "Test accuracy per share of live units removed (columns), per model, layer and order",
            ),
            {
                "path": "substitution_units.csv",
                "caption": "Every unit rendered: selectivity, preferred class, RS from AM and IAM, activations",
                "dead": "live",
            },
        ],
    )


@dataclass
class SubstitutionConfig(Config):
    """The study's settings: those of every study, the torch threads, and whether to skip EfficientNet-Lite0."""

    threads: int = 1
    no_efficientnet: bool = False


@restores_process_state
def main(argv=None) -> dict:
    p = study_parser(
        "substitution",
        __doc__,
        quick="16 live units per layer (full: all, at most 512), 24 optimization steps (full 128), "
        "5 ablation points on 100 test digits (full 11 on all 360), 1 random order (full 5), "
        "one picture grid per model, a small EfficientNet picture",
    )
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--no-efficientnet", action="store_true", help="skip the EfficientNet-Lite0 pictures")
    args = p.parse_args(argv)
    return finish(run(SubstitutionConfig.from_args(args)))


@restores_process_state
def run(config: SubstitutionConfig) -> Result:
    """The study with ``config`` (see :class:`unitscope.studies.common.Config`): writes into ``config.out``."""
    from ..zoo import digits as zoo

    os.makedirs(config.out, exist_ok=True)
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.set_grad_enabled(True)
    steps = 24 if config.quick else 128
    limit = 16 if config.quick else 512  # RS always counts every unit; this bounds the images rendered per layer
    fractions = [0.0, 0.25, 0.5, 0.75, 1.0] if config.quick else [round(0.1 * i, 1) for i in range(11)]
    repeats = 1 if config.quick else 5
    train, test = zoo.digits_data()
    if config.quick:  # ablation accuracy on 10 test digits per class
        keep = torch.cat([torch.nonzero(test.y == c).flatten()[:10] for c in range(10)])
        test = zoo.DigitsSplit(test.x[keep], test.y[keep])
    seconds, figures, tables = {}, [], []
    models, rho, abl, rs_summary, frames = {}, {}, {}, {}, []
    for m_i, (name, (fn_name, layers)) in enumerate(MODELS.items()):
        t0 = time.perf_counter()
        note(f"model {m_i + 1}/{len(MODELS)}: {name} ({fn_name}; trained on first use, then cached)")
        trained = getattr(zoo, fn_name)()
        model = trained.model
        models[name] = {
            "zoo": fn_name,
            "test_accuracy": trained.info["test_accuracy"],
            "cached": trained.cached,
            "layers": layers,
        }
        sel = class_selectivity(model, batches(train.x, train.y), layers, num_classes=10, progress=False)
        rho[name], rs_summary[name] = {}, {}
        curves = {order: {} for order in ORDERS}
        for k, layer in enumerate(layers):
            note(
                f"{name}: layer {k + 1}/{len(layers)} ({layer}): AM and IAM images ({steps} steps), RS, ablation curves"
            )
            live = live_units(sel[layer])
            df, runs = layer_analysis(model, layer, sel[layer], steps=steps, seed=config.seed, limit=limit)
            df.insert(0, "model", name)
            frames.append(df)
            d = df[df.live]  # dead ReLUs (never on for any training digit) have no selectivity to speak of
            rho[name][layer] = {"iam": spearman(d.rs_iam, d.selectivity), "am": spearman(d.rs_am, d.selectivity)}
            rs_summary[name][layer] = {
                "units": int(live.numel()),
                "dead_units": int((~live).sum()),
                "rendered": len(df),
                "mean_selectivity": float(d.selectivity.mean()),
                "mean_rs_iam": float(d.rs_iam.mean()),
                "mean_rs_am": float(d.rs_am.mean()),
                "share_rs_iam_zero": float((d.rs_iam == 0).mean()),
                "share_rs_am_zero": float((d.rs_am == 0).mean()),
                "share_am_increased": float((d.a_am > d.a_start).mean()),
                "share_am_still_off": float((d.a_am <= 0).mean()),
                # is RS high because the unit's own maximum is low? (ρ of RS with a_i, and of SI with a_i)
                "rho_rs_iam_vs_own_activation": spearman(d.rs_iam, d.a_iam),
                "rho_selectivity_vs_am_activation": spearman(d.selectivity, d.a_am),
            }
            for order, accs in ablation_curves(
                model,
                layer,
                sel[layer].index,
                test.x,
                test.y,
                fractions=fractions,
                seed=config.seed + k,
                random_repeats=repeats,
                live=live,
            ).items():
                curves[order][layer] = accs
            if k == len(layers) - 1 or (name != "mlp" and layer == layers[-2] and not config.quick):
                ranked = d.sort_values("selectivity", ascending=False, kind="stable")
                pick = ranked.unit.tolist()[:4] + ranked.unit.tolist()[-4:]
                row = {u: r for u, r in zip(df.unit, df.itertuples())}
                labels = [f"u{u} SI {row[u].selectivity:.2f}\nRS {row[u].rs_am:.2f}/{row[u].rs_iam:.2f}" for u in pick]
                figures.append(
                    picture_figure(
                        runs,
                        pick,
                        labels,
                        f"{name} {layer}: 4 most / 4 least selective live units (RS AM/IAM)",
                        os.path.join(config.out, f"substitution_pictures_{name}_{layer.replace('.', '_')}.png"),
                    )
                )
        abl[name] = curves
        d = pd.concat([f for f in frames if f.model.iloc[0] == name])
        figures.append(scatter_figure(d, layers, name, os.path.join(config.out, f"substitution_scatter_{name}.png")))
        figures.append(
            ablation_figure(curves, fractions, name, os.path.join(config.out, f"substitution_ablation_{name}.png"))
        )
        seconds[name] = time.perf_counter() - t0
        print(
            f"{name} ({fn_name}, {'cached' if trained.cached else 'trained'}, test accuracy "
            f"{trained.info['test_accuracy']:.3f}): "
            + ", ".join(
                f"{layer.split('.')[-1]} ρ_IAM {v['iam']:+.2f} ρ_AM {v['am']:+.2f}" for layer, v in rho[name].items()
            )
            + f"  [{seconds[name]:.1f} s]",
            flush=True,
        )
    figures.append(depth_figure(rho, os.path.join(config.out, "substitution_spearman_depth.png")))
    units = pd.concat(frames, ignore_index=True)
    # a dead unit (0 on every training digit) has no selectivity and no RS to speak of: written as missing
    units.loc[~units.live.astype(bool), ["selectivity", "rs_am", "rs_iam"]] = float("nan")
    tables += _write(units, config.out, "substitution_units")
    rows = [
        {
            "model": m,
            "layer": layer,
            "depth": i + 1,
            "units": rs_summary[m][layer]["units"],
            "dead": rs_summary[m][layer]["dead_units"],
            "rho_iam": v["iam"],
            "rho_am": v["am"],
            "mean_selectivity": rs_summary[m][layer]["mean_selectivity"],
            "mean_rs_iam": rs_summary[m][layer]["mean_rs_iam"],
            "mean_rs_am": rs_summary[m][layer]["mean_rs_am"],
            "rho_rs_iam_vs_a_iam": rs_summary[m][layer]["rho_rs_iam_vs_own_activation"],
            "rho_si_vs_a_am": rs_summary[m][layer]["rho_selectivity_vs_am_activation"],
        }
        for m in rho
        for i, (layer, v) in enumerate(rho[m].items())
    ]
    tables += _write(pd.DataFrame(rows), config.out, "substitution_spearman")
    abl_rows = [
        {"model": m, "layer": layer, "order": order, **{f"{f:.2f}": a for f, a in zip(fractions, accs)}}
        for m in abl
        for order in ORDERS
        for layer, accs in abl[m][order].items()
    ]
    tables += _write(pd.DataFrame(abl_rows), config.out, "substitution_ablation")
    eff = None
    if not config.no_efficientnet:
        t0 = time.perf_counter()
        try:
            eff = _efficientnet(config.out, quick=config.quick, seed=config.seed)
            figures.append(eff["figure"])
        except ImportError as e:  # the vision extra is optional
            eff = {"skipped": str(e)}
        seconds["efficientnet"] = time.perf_counter() - t0
    summary = _nan_to_none(
        {
            "study": "substitution",
            "quick": config.quick,
            "seed": config.seed,
            "steps": steps,
            "models": models,
            "spearman_by_layer": rho,
            "ablation_fractions": fractions,
            "ablation_accuracy": abl,
            "rs_by_layer": rs_summary,
            "efficientnet": eff,
            "figures": [os.path.basename(f) for f in figures],
            "tables": tables,
            "seconds": {k: round(v, 2) for k, v in seconds.items()},
        }
    )
    with open(os.path.join(config.out, "substitution.json"), "w") as f:
        json.dump(summary, f, indent=1)
    _manifest(config, summary, steps=steps, limit=limit, n_test=len(test.y))
    return Result(value=summary, summary=summary, out=config.out)


if __name__ == "__main__":
    main()
