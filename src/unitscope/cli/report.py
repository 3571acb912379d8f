"""``unitscope report RESULTS_DIR``: one self-contained HTML file from a results folder."""

from __future__ import annotations

import sys

from .options import finish

NAME = "report"
HELP = "one self-contained HTML file from a results folder"


def add_arguments(p) -> None:
    p.add_argument("results_dir", metavar="RESULTS_DIR", help="a folder written by unitscope demo / a study / a command")
    p.add_argument("--output", default=None,
                   help="the HTML file (default RESULTS_DIR/report.html)")


def run(args) -> dict:
    from ..report.html import build_report

    path = build_report(args.results_dir, out=args.output)
    print(f"report: {path}", file=sys.stderr)
    return finish({"report": str(path)})
