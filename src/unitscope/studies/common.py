"""What every study shares: ``run(config) -> Result`` does the work, a thin ``main(argv)`` parses the command line,
prints the summary as the last line and returns ``result.value``.

>>> r = Result(value={"a": 1}, summary={"a": 1}, out="unitscope-out/x")
>>> finish(r)
{"a": 1}
{'a': 1}
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, fields

__all__ = ["Config", "Result", "finish", "study_parser"]


def study_parser(
    name: str, doc: str | None, *, quick: str, seed: str | None = None, package: str = "unitscope.studies"
) -> argparse.ArgumentParser:
    """The command line every study shares: ``--quick`` (``quick`` says what it shrinks), ``--out`` (default
    ``unitscope-out/NAME``) and ``--seed``; a study adds its own options to the parser it gets back.

    >>> p = study_parser("demo", "A study.", quick="one example")
    >>> a = p.parse_args(["--quick"]); (a.quick, a.out, a.seed)
    (True, 'unitscope-out/demo', 0)
    """
    p = argparse.ArgumentParser(
        prog=f"python -m {package}.{name}", description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help=quick)
    p.add_argument("--out", default=f"unitscope-out/{name}", help="the results folder (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help=seed or "the seed of every random draw (default: 0)")
    return p


@dataclass
class Config:
    """A study's settings: ``quick`` (a small, fast run), ``out`` (its results folder), ``seed``. Studies with more
    options subclass it (e.g. :class:`unitscope.studies.substitution.SubstitutionConfig`)."""

    quick: bool = False
    out: str = "unitscope-out"
    seed: int = 0

    @classmethod
    def from_args(cls, args) -> "Config":
        """The settings parsed by a study's command line (an ``argparse.Namespace``)."""
        return cls(**{f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name)})


@dataclass
class Result:
    """What ``run(config)`` returns: ``value`` (the study's full summary, what ``main`` returns), ``summary`` (the
    short JSON object ``main`` prints as its last line) and ``out`` (the folder it wrote)."""

    value: dict
    summary: dict
    out: str


def finish(result: Result) -> dict:
    """Print ``result.summary`` as one JSON object on the last line; return ``result.value``."""
    print(json.dumps(result.summary, default=float))
    return result.value
