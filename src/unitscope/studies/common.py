"""What every study shares: ``run(config) -> Result`` does the work, a thin ``main(argv)`` parses the command line,
prints the summary as the last line and returns ``result.value``.

>>> r = Result(value={"a": 1}, summary={"a": 1}, out="unitscope-out/x")
>>> finish(r)
{"a": 1}
{'a': 1}
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields

__all__ = ["Config", "Result", "finish"]


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
