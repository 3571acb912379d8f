"""``unitscope demo``: every study on the bundled models and data, then one HTML report."""

from __future__ import annotations

from .options import add

NAME = "demo"
HELP = "run every study on the bundled models and data, then write one HTML report"


def add_arguments(p) -> None:
    add(p, "quick", "seed", "out", out="unitscope-out")
    p.add_argument("--only", nargs="+", metavar="STUDY", help="run only these studies")
    p.add_argument(
        "--timeout", type=float, default=None, help="seconds allowed per study (default 300 with --quick, else 1200)"
    )


def run(args) -> dict:
    from ..demo import run_all

    return run_all(quick=args.quick, out=args.out, seed=args.seed, only=args.only, timeout=args.timeout)
