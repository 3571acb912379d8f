"""``python -m unitscope.runs.atlas [--quick] [--out DIR] [--seed N]``: the bundled unit atlases for the report.

Each atlas (:func:`unitscope.atlas`, through ``unitscope atlas MODEL DATA``) goes into its own sub-folder with its
``atlas.json``, ``index.html`` and a manifest entry that links the page:

* ``digits``: the digits CNN, its five ReLU layers over the 1,797 digits (inverse sets through the digits VAE);
* ``sentiment``: the sentiment CNN's 256 max-pooled filters over the movie-review sentences (exemplar sentences
  with every token shaded by its conductance through the filter: the n-gram it picked stands out);
* ``minilm``: all-MiniLM-L6-v2 (with its sentiment head) from token ids, one MLP layer
  (``bert.encoder.layer.3.intermediate.intermediate_act_fn``, 1,536 neurons over the real tokens) over the first 128
  review sentences; cards for its 24 most important neurons (the scan covers all), exemplar sentences with every
  token shaded by its conductance through the neuron; no synthetic inputs (text has none — the cards say why);
* ``efficientnet``: EfficientNet-Lite0's ``blocks.1`` over the bundled photos (inverse sets through the FFT
  parameterization).

``--quick``: the digits atlas of one layer (every unit of it, fewer exemplars, steps and samples) and the MiniLM atlas
of 6 neurons over 24 sentences.
``atlas.json`` here sums them up and is printed as the last line.
"""

from __future__ import annotations

import argparse
import json
import os

from ..cli.atlas import atlas_main
from ..core.progress import note

__all__ = ["main", "ATLASES"]

ORDER = 80  # the atlases' place in the report, after the studies

ATLASES = {
    "digits": [
        "digits-cnn",
        "digits",
        "--top-k",
        "6",
        "--n-steps",
        "16",
        "--iam-steps",
        "64",
        "--inverse-samples",
        "3",
        "--inverse-steps",
        "60",
    ],
    "sentiment": ["sentiment-cnn", "reviews", "--top-k", "6", "--n-steps", "8", "--no-synthetic"],
    "minilm": ["minilm", "reviews", "--top-k", "3", "--n-steps", "6", "--limit", "128", "--top-units", "24"],
    "efficientnet": [
        "efficientnet-lite0",
        "photos",
        "--top-k",
        "2",
        "--n-steps",
        "6",
        "--iam-steps",
        "24",
        "--inverse-samples",
        "2",
        "--inverse-steps",
        "20",
        "--unit-batch-size",
        "12",
    ],
}


QUICK = {"digits": [], "minilm": ["--limit", "24", "--top-units", "6", "--top-k", "2", "--n-steps", "4"]}
"""The atlases of ``--quick`` and what they add to the command's own ``--quick`` (later flags win)."""


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(
        prog="python -m unitscope.runs.atlas", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="the digits atlas of one layer and a small MiniLM atlas")
    p.add_argument("--out", default="unitscope-out/atlas")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only", nargs="+", choices=list(ATLASES), default=None)
    args = p.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    names = args.only or (list(QUICK) if args.quick else list(ATLASES))
    summary = {}
    for k, name in enumerate(names):
        spec = ATLASES[name]
        note(f"atlas {k + 1}/{len(names)}: {spec[0]} over {spec[1]}{' (quick)' if args.quick else ''}")
        summary[name] = atlas_main(
            [
                *spec,
                *(QUICK.get(name, []) if args.quick else []),
                "--out",
                os.path.join(args.out, name),
                "--seed",
                str(args.seed),
                "--order",
                str(ORDER + k),
                *(["--quick"] if args.quick else []),
            ]
        )
    with open(os.path.join(args.out, "atlas.json"), "w") as f:
        json.dump(summary, f, indent=1, default=float)
    print(json.dumps(summary, default=float))
    return summary


if __name__ == "__main__":
    main()
