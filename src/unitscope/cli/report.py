"""``unitscope report RESULTS_DIR``: one self-contained HTML file from a results folder (its tables,
``report.json`` and ``report_summary.csv``, go into RESULTS_DIR); a folder with nothing to show is an error
(one line, exit 2)."""

from __future__ import annotations

import sys

from .options import finish

NAME = "report"
HELP = "one self-contained HTML file from a results folder"


def add_arguments(p) -> None:
    p.add_argument(
        "results_dir",
        metavar="RESULTS_DIR",
        help="a folder written by unitscope demo / a study / a command's --out / Atlas.save",
    )
    p.add_argument(
        "--output",
        default=None,
        help="the HTML file (default RESULTS_DIR/report.html; report.json and report_summary.csv "
        "go into RESULTS_DIR either way)",
    )


def run(args) -> dict:
    from ..report.html import build_report

    path = build_report(args.results_dir, out=args.output, allow_empty=False)
    print(f"report: {path}", file=sys.stderr)
    return finish({"report": str(path)})
