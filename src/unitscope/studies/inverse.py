"""``python -m unitscope.studies.inverse [--quick] [--out DIR] [--seed N]``: sampling inverse sets on the digits CNN
(trained on the real digits) through the digits VAE's decoder, with the CNN's early layers as the encoder.

* sample grids per activation band (as in the paper's bands [1, 11], [10, 20], …) for a digit-class logit unit
  (``classifier.fc2`` unit 3, pre-softmax) and a hidden unit (``classifier.relu`` unit 68);
* an intersection grid: both units in a band at once;
* a table of feasibility, diversity (E-space and pixel space, predicted classes) and speed per method — the
  augmented-Lagrangian sampler, multi-start penalized AM and a PPGN-style Langevin sampler — in the same run.

Writes PNG figures, CSV + Markdown tables and ``inverse.json`` into ``--out``; the last printed line is the summary
as JSON.
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings

import numpy as np
import pandas as pd
import torch

from ..synthesis.inverse import InverseSetWarning, diversity, langevin_sampler, penalized_am, sample_inverse_set
from ..core.progress import note
from ..core.state import torch_threads, restores_process_state
from .common import Config, Result, finish, study_parser
from .tables import write_table

LOGIT = ("classifier.fc2", 3)
HIDDEN = ("classifier.relu", 68)
BANDS = [(1.0, 11.0), (10.0, 20.0), (20.0, 30.0)]


def _write(df: pd.DataFrame, out: str, name: str) -> None:
    write_table(df, out, name, index=False)


def _classes(model, x) -> tuple[int, float]:
    if not len(x):
        return 0, 0.0
    with torch.no_grad():
        counts = np.bincount(model(x).argmax(1).numpy(), minlength=10)
    p = counts[counts > 0] / counts.sum()
    return int((counts > 0).sum()), float(-(p * np.log2(p)).sum()) + 0.0


def _row(model, enc, r, **extra) -> dict:
    div = diversity(r.samples, encoder=enc) if len(r) else {"pixel": 0.0, "encoder": 0.0}
    k, ent = _classes(model, r.samples)
    return dict(
        **extra,
        n=len(r),
        feasible_rate=r.feasible_rate,
        verified_rate=r.verified_rate,
        seconds=r.seconds,
        samples_per_second=r.samples_per_second,
        diversity_encoder=div["encoder"],
        diversity_pixel=div["pixel"],
        classes=k,
        class_entropy_bits=ent,
    )


def method_runs(model, con, gen, enc, *, n_samples: int, seed: int, step: float = 0.01) -> dict:
    """The method comparison's calls, each asked for ``n_samples`` in ``con`` through ``gen`` (``{name: () ->
    InverseSet}``): the augmented-Lagrangian sampler, multi-start penalized AM, and a Langevin sampler thinned to
    about one sample per ``1 / (2 · step)`` steps (also run by ``bench/inverse.py``)."""
    return {
        "augmented_lagrangian": lambda: sample_inverse_set(
            model, con, gen, encoder=enc, n_samples=n_samples, n_seeds=32, seed=seed, progress=False
        ),
        "penalized_am": lambda: penalized_am(
            model, con, gen, encoder=enc, n_samples=n_samples, steps=100, batch=256, seed=seed, progress=False
        ),
        "langevin": lambda: langevin_sampler(
            model,
            con,
            gen,
            encoder=enc,
            n_samples=n_samples,
            chains=32,
            step=step,
            burn_in=100,
            thin=math.ceil(1 / (2 * step)),
            seed=seed,
            progress=False,
        ),
    }


def grid(rows: list[tuple[str, torch.Tensor]], path: str, title: str, cols: int = 12) -> str:
    """One row of sample images per (label, samples [N, 1, H, W])."""
    from ..report.figures import save_figure
    from ..report.grids import image_grid

    images = [x[j] if j < len(x) else None for _, x in rows for j in range(cols)]
    fig = image_grid(
        images,
        cols=cols,
        row_labels=[label for label, _ in rows],
        cmap="gray_r",
        cell=(0.75, 0.85),
        title=title,
        label_rotation=0,
    )
    return save_figure(fig, path)


def _spread_pick(r, cols: int):
    """``cols`` samples spread over the run (not only the first seeds)."""
    if len(r) <= cols:
        return r.samples
    return r.samples[torch.linspace(0, len(r) - 1, cols).long()]


@restores_process_state
def main(argv=None) -> dict:
    p = study_parser("inverse", __doc__, quick="fewer samples per band and per method")
    args = p.parse_args(argv)
    return finish(run(Config.from_args(args)))


@restores_process_state
def run(config: Config) -> Result:
    """The study with ``config`` (see :class:`unitscope.studies.common.Config`): writes into ``config.out``."""
    from ..zoo import digits_cnn
    from ..zoo.digits_vae import digits_encoder, digits_generator

    os.makedirs(config.out, exist_ok=True)
    with torch_threads(1):  # small batches: one thread is fastest on a shared machine
        return _run(config, digits_cnn().model, digits_generator(), digits_encoder)


def _run(args, model, gen, digits_encoder) -> Result:
    enc = digits_encoder(model)
    n = 48 if args.quick else 256
    t0 = time.perf_counter()
    band_rows, figures, kept = [], [], {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InverseSetWarning)  # unreachable bands are reported in the table
        for name, (layer, unit) in [("logit", LOGIT), ("hidden", HIDDEN)]:
            rows = []
            for a, b in BANDS:
                note(f"sampling {layer}[{unit}] ∈ [{a:g}, {b:g}] ({n} samples through the digits VAE)")
                r = sample_inverse_set(
                    model,
                    (layer, unit, a, b),
                    gen,
                    encoder=enc,
                    n_samples=n,
                    n_seeds=16 if args.quick else 32,
                    seed=args.seed,
                    progress=False,
                )
                kept[(name, a)] = r
                band_rows.append(_row(model, enc, r, unit=f"{layer}[{unit}]", band=f"[{a:g}, {b:g}]", ok=r.ok))
                rows.append((f"[{a:g}, {b:g}]\n{len(r)} ok" if r.ok else f"[{a:g}, {b:g}]\nnone", _spread_pick(r, 12)))
            figures.append(
                grid(
                    rows,
                    os.path.join(args.out, f"inverse_{name}_bands.png"),
                    f"inverse sets of {layer}[{unit}] per activation band (digits VAE as G)",
                )
            )
        cons = [(*LOGIT, 10.0, 20.0), (*HIDDEN, 10.0, 20.0)]
        note("sampling the intersection of both units in [10, 20]")
        inter = sample_inverse_set(
            model, cons, gen, encoder=enc, n_samples=n, n_seeds=16 if args.quick else 32, seed=args.seed, progress=False
        )
        band_rows.append(
            _row(
                model,
                enc,
                inter,
                unit=f"{LOGIT[0]}[{LOGIT[1]}] ∩ {HIDDEN[0]}[{HIDDEN[1]}]",
                band="[10, 20] ∩ [10, 20]",
                ok=inter.ok,
            )
        )
        figures.append(
            grid(
                [
                    (f"logit {LOGIT[1]}\n∈ [10, 20]", _spread_pick(kept[("logit", 10.0)], 12)),
                    (f"hidden {HIDDEN[1]}\n∈ [10, 20]", _spread_pick(kept[("hidden", 10.0)], 12)),
                    ("both", _spread_pick(inter, 12)),
                ],
                os.path.join(args.out, "inverse_intersection.png"),
                f"intersection: {LOGIT[0]}[{LOGIT[1]}] ∈ [10, 20] and {HIDDEN[0]}[{HIDDEN[1]}] ∈ [10, 20]",
            )
        )

        # methods, same target, same generator, same number of samples asked
        m = 96 if args.quick else 512
        con = (*LOGIT, 10.0, 20.0)
        runs = method_runs(model, con, gen, enc, n_samples=m, seed=args.seed)
        method_rows = []
        for name, fn in runs.items():
            note(f"method comparison: {name.replace('_', ' ')} ({m} samples asked)")
            method_rows.append(_row(model, enc, fn(), method=name))
    bands = pd.DataFrame(band_rows)
    methods = pd.DataFrame(method_rows)
    _write(bands, args.out, "inverse_bands")
    _write(methods, args.out, "inverse_methods")
    print(bands.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(methods.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    by = {r["method"]: r for r in method_rows}
    ours, lang = by["augmented_lagrangian"], by["langevin"]
    summary = {
        "bands": {
            f"{r['unit']} {r['band']}": {k: r[k] for k in ("n", "ok", "feasible_rate", "diversity_encoder", "classes")}
            for r in band_rows
        },
        "methods": {r["method"]: {k: v for k, v in r.items() if k != "method"} for r in method_rows},
        "samples_per_second_ratio_vs_langevin": ours["samples_per_second"] / max(lang["samples_per_second"], 1e-12),
        "diversity_ratio_vs_langevin": ours["diversity_encoder"] / max(lang["diversity_encoder"], 1e-12),
        "feasible_rate": ours["feasible_rate"],
        "intersection_n": len(inter),
        "figures": [os.path.basename(f) for f in figures],
        "seconds": time.perf_counter() - t0,
    }
    with open(os.path.join(args.out, "inverse.json"), "w") as f:
        json.dump(summary, f, indent=1, default=float)
    _manifest(args, band_rows, by, summary, n=n, m=m)
    return Result(value=summary, summary=summary, out=args.out)


def _manifest(args, band_rows, by, summary, *, n: int, m: int) -> None:
    from ..report.manifest import write_entry

    def bands_sentence(label: str, unit: str) -> str:
        rows = [r for r in band_rows if r["unit"] == unit]
        reached = sum(1 for r in rows if r["n"])
        if all(r["n"] == n for r in rows):
            found = f"all {n} samples asked found in each of {', '.join(r['band'] for r in rows)}"
        else:
            found = "samples found of the " + str(n) + " asked: " + ", ".join(f"{r['n']} in {r['band']}" for r in rows)
        return (
            f"{label} ({unit}) of the digits CNN: {reached} of {len(rows)} activation bands reached through "
            f"the digits VAE; {found}."
        )

    ours, lang = by["augmented_lagrangian"], by["langevin"]
    inter = band_rows[-1]
    figures = [
        (
            "inverse_logit_bands.png",
            f"Samples x = G(z) of the digits VAE with the digit-3 logit "
            f"({LOGIT[0]}[{LOGIT[1]}]) of the digits CNN in each band (one row per "
            "band, spread over the run); 'none': the band was not reached.",
        ),
        ("inverse_hidden_bands.png", f"The same for the hidden unit {HIDDEN[0]}[{HIDDEN[1]}]."),
        (
            "inverse_intersection.png",
            "Samples with the logit in [10, 20] (top row), the hidden unit in "
            "[10, 20] (middle) and both at once (bottom).",
        ),
    ]
    write_entry(
        args.out,
        order=60,
        quick=args.quick,
        summary="inverse.json",
        title="Inverse sets: diverse inputs with a unit's activation in a range",
        scale=f"{n} samples per band, {m} per method" if args.quick else None,
        description=(
            "The inverse set of a unit is every input x with a ≤ f(x) ≤ b. Samples are drawn as "
            "x = G(z) through the digits VAE's decoder with an augmented-Lagrangian sampler (many seeds, "
            "each driven into the band), and every kept sample is checked: the unit's value on it lies in "
            "the band. Diversity is the mean pairwise distance of the samples in an encoder's space (the "
            "digits CNN's first layers) — larger is more varied. The method table compares the sampler "
            "with multi-start penalized activation maximization and a PPGN-style Langevin sampler on the "
            "same target, generator and number of samples."
        ),
        headlines=[
            bands_sentence("The digit-3 logit", f"{LOGIT[0]}[{LOGIT[1]}]"),
            bands_sentence("Hidden unit", f"{HIDDEN[0]}[{HIDDEN[1]}]"),
            f"{inter['n']} samples have both units in [10, 20] at once.",
            f"Against Langevin sampling on the logit band [10, 20]: "
            f"{summary['samples_per_second_ratio_vs_langevin']:.1f}× the verified samples per second "
            f"({ours['samples_per_second']:.0f} vs {lang['samples_per_second']:.0f}) and "
            f"{summary['diversity_ratio_vs_langevin']:.2f}× the diversity.",
        ],
        figures=figures,
        tables=[
            (
                "inverse_bands.csv",
                "Per unit and band: samples found, feasible and verified rates, seconds, diversity, predicted classes",
            ),
            ("inverse_methods.csv", "Per method, same target: samples, rates, speed, diversity"),
        ],
    )


if __name__ == "__main__":
    main()
