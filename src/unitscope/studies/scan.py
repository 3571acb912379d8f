"""``python -m unitscope.studies.scan [--quick] [--out DIR] [--seed N]``: dataset-scale scans for the report.

Two scans with :func:`unitscope.data.scan.scan` (one pass over the data, streaming statistics, top examples per unit by
activation and by conductance): the digits CNN over the real digits (image grids of each unit's top digits) and the
sentiment CNN over the movie-review sentences (each filter's top sentences, the n-gram it picked in bold).
``--quick`` scans the test splits only. Each scan writes into its own sub-folder; ``scan.json`` here sums them up and
is printed as the last line. Several processes: run ``torchrun … -m unitscope.cli.scan`` directly (see the README).
"""

from __future__ import annotations

import argparse
import json
import os

from ..cli.scan import scan_main

__all__ = ["main"]

SCANS = {"digits": ["digits-cnn", "digits"], "sentiment": ["sentiment-cnn", "movie-reviews"]}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(prog="python -m unitscope.studies.scan", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="test splits only, two layers, 8 path points")
    p.add_argument("--out", default="unitscope-out/scan")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    summary = {}
    for name, (model, data) in SCANS.items():
        r = scan_main([model, data, "--out", os.path.join(args.out, name), "--seed", str(args.seed),
                       *(["--quick"] if args.quick else [])])
        summary[name] = {k: r[k] for k in ("model", "data", "examples", "layers", "scores", "seconds",
                                           "examples_per_second")}
    with open(os.path.join(args.out, "scan.json"), "w") as f:
        json.dump(summary, f, indent=1, default=float)
    print(json.dumps(summary, default=float))
    return summary


if __name__ == "__main__":
    main()
