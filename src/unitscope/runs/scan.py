"""``python -m unitscope.runs.scan [--quick] [--out DIR] [--seed N]``: dataset-scale scans for the report.

Two scans with :func:`unitscope.data.scan.scan` (one pass over the data, streaming statistics, top examples per unit by
activation and by conductance): the digits CNN over the real digits (image grids of each unit's top digits) and the
sentiment CNN over the movie-review sentences (each filter's top sentences, the n-gram it picked in bold).
``--quick`` scans the test splits only. Each scan writes into its own sub-folder; ``scan.json`` here sums them up and
is printed as the last line. Several processes: run ``torchrun … -m unitscope.cli.scan`` directly (see the README).
"""

from __future__ import annotations

import json
import os

from ..cli.scan import scan_main
from ..core.progress import note
from ..core.state import restores_process_state
from ..studies.common import Config, Result, finish, study_parser

__all__ = ["main"]

SCANS = {"digits": ["digits-cnn", "digits"], "sentiment": ["sentiment-cnn", "reviews"]}


@restores_process_state
def main(argv=None) -> dict:
    p = study_parser("scan", __doc__, quick="test splits only, two layers, 8 path points", package="unitscope.runs")
    args = p.parse_args(argv)
    return finish(run(Config.from_args(args)))


@restores_process_state
def run(config: Config) -> Result:
    """The study with ``config`` (see :class:`unitscope.studies.common.Config`): writes into ``config.out``."""
    os.makedirs(config.out, exist_ok=True)
    summary = {}
    for k, (name, (model, data)) in enumerate(SCANS.items()):
        if config.quick and model == "sentiment-cnn":
            model = "sentiment-cnn-quick"  # the default recipe's first training needs a MiniLM pass (tens of minutes)
        note(f"scan {k + 1}/{len(SCANS)}: {model} over {data}{' (test split)' if config.quick else ''}")
        r = scan_main(
            [
                model,
                data,
                "--out",
                os.path.join(config.out, name),
                "--seed",
                str(config.seed),
                *(["--quick"] if config.quick else []),
            ]
        )
        summary[name] = {
            k: r[k] for k in ("model", "data", "examples", "layers", "scores", "seconds", "examples_per_second")
        }
        summary[name]["dead_units"], summary[name]["units"] = _mark_dead(os.path.join(config.out, name))
    with open(os.path.join(config.out, "scan.json"), "w") as f:
        json.dump(summary, f, indent=1, default=float)
    _manifest(config, summary)
    return Result(value=summary, summary=summary, out=config.out)


NAMES = {
    "digits-cnn": "the digits CNN",
    "sentiment-cnn": "the sentiment CNN",
    "sentiment-cnn-quick": "the sentiment CNN of the quick recipe (2 epochs)",
    "digits": "the real digits",
    "reviews": "the movie-review sentences",
}


def _mark_dead(folder: str) -> tuple[int, int]:
    """Write ``units_marked.csv`` beside the scan's ``units.csv``: a ``dead`` column (activation 0 on every example:
    mean and spread 0) and, for dead units, no selectivity and no top examples. Returns (dead, units)."""
    import pandas as pd

    df = pd.read_csv(os.path.join(folder, "units.csv"))
    act = df[df.score == "activation"]
    dead_keys = set(
        zip(act.layer[(act["mean"] == 0) & (act["std"] == 0)], act.unit[(act["mean"] == 0) & (act["std"] == 0)])
    )
    df.insert(3, "dead", [(lay, u) in dead_keys for lay, u in zip(df.layer, df.unit)])
    blank = [c for c in ("top_examples", "top_values", "selectivity", "preferred_class") if c in df.columns]
    df[blank] = df[blank].astype(object)
    df.loc[df.dead, blank] = None
    df.to_csv(os.path.join(folder, "units_marked.csv"), index=False)
    return len(dead_keys), int(act[["layer", "unit"]].drop_duplicates().shape[0])


def _manifest(args, summary: dict) -> None:
    from ..report.manifest import write_entry

    heads, figures, tables, docs = [], [], [], []
    for name, r in summary.items():
        model, data = NAMES.get(r["model"], r["model"]), NAMES.get(r["data"], r["data"])
        heads.append(
            f"Scanned {model} over {r['examples']} examples of {data} ({len(r['layers'])} layers: "
            f"{', '.join(r['layers'])}; {' and '.join(r['scores'])}) in {r['seconds']:.0f} s, "
            f"{r['examples_per_second']:.0f} examples/s; {r['dead_units']} of {r['units']} units dead."
        )
        folder = os.path.join(args.out, name)
        for f in sorted(os.listdir(folder)):
            path = os.path.join(name, f)
            if f.endswith(".png"):
                method, layer = f[len("top_") : -len(".png")].split("_", 1)
                figures.append(
                    (
                        path,
                        f"{model[0].upper() + model[1:]}, layer {layer}: the 12 units with the highest "
                        f"class selectivity, one per row, and their top examples of {data} by "
                        f"{method} (left: largest); each titled true label · value. Dead units "
                        "say so instead of showing examples.",
                    )
                )
            elif f.startswith("top_sentences_") and f.endswith(".md"):
                docs.append(
                    (
                        path,
                        f"{model[0].upper() + model[1:]}: top sentences per filter, the n-gram the "
                        "filter picked in bold",
                    )
                )
        tables += [
            (
                os.path.join(name, "layers.csv"),
                f"{model[0].upper() + model[1:]}: per layer and method, mean, "
                "mean selectivity, the most selective unit",
            ),
            {
                "path": os.path.join(name, "units_marked.csv"),
                "dead": "dead",
                "caption": f"{model[0].upper() + model[1:]}: every unit (dead ones marked)",
            },
        ]
    write_entry(
        args.out,
        order=80,
        quick=args.quick,
        summary="scan.json",
        title="Dataset scans: statistics and top examples per unit",
        scale="the test splits only, two layers of the digits CNN, 8 path points" if args.quick else None,
        description=(
            "One streaming pass over a whole data set per model: for every unit, the count, mean, "
            "spread and per-class means of its activation and its conductance, the class selectivity, and "
            "the examples with the largest values — never storing the activations themselves. A dead unit "
            "is 0 on every example: it has no top examples and no selectivity."
        ),
        headlines=heads,
        figures=figures,
        tables=tables,
        documents=docs,
    )


if __name__ == "__main__":
    main()
