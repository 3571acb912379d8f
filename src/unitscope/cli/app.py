"""The ``unitscope`` command: a thin layer over the library.

>>> main(["layers", "no-such-model"])
2

Subcommands: ``demo``, ``layers``, ``importance``, ``visualize``, ``inverse-set``, ``scan``, ``atlas``, ``report``
(``unitscope SUBCOMMAND --help`` for each). MODEL is a zoo name (digits-cnn, digits-vgg, digits-mlp,
sentiment-cnn, efficientnet-lite0), hf:FOLDER (a transformers model saved with save_pretrained, with or without
its tokenizer), a torch.export / TorchScript file or package.module:factory; DATA a zoo data name (digits, photos,
reviews), a .pt/.npy tensor, image files/folders (class sub-folders give labels) or a .txt of sentences.
Every flag means the same in every subcommand (:mod:`unitscope.cli.options` defines them once).
A user mistake ends as one line on stderr and exit code 2, never a traceback; every argument that can be checked
without the model is checked before anything loads or trains (:mod:`unitscope.cli.checks`).

A subcommand is a module of this package with ``NAME``, ``HELP``, ``add_arguments(parser)`` and ``run(args)``;
:data:`COMMANDS` lists them in the order ``unitscope --help`` shows. A module with only ``<name>_main(argv)``
(its own parser) is registered as ``unitscope <name> MODEL DATA …``, the rest passed on.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .options import Parser, run_command
from ..core.state import restores_process_state

__all__ = ["main", "build_parser", "COMMANDS"]

#: the subcommand modules (``unitscope.cli.<module>``), in the order of ``unitscope --help``
COMMANDS = ["demo", "layers", "importance", "visualize", "inverse_set", "scan", "atlas", "report"]


def build_parser() -> Parser:
    parser = Parser(
        prog="unitscope", description=__doc__.split("\n\n")[0] + " Which hidden units matter, and what they respond to."
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for module in COMMANDS:
        cmd = importlib.import_module(f"{__package__}.{module}")
        if not hasattr(cmd, "add_arguments"):
            _add_passthrough(sub, module, cmd)
            continue
        p = sub.add_parser(cmd.NAME, help=cmd.HELP, description=(cmd.__doc__ or cmd.HELP).strip())
        cmd.add_arguments(p)
        p.set_defaults(func=cmd.run)
    return parser


def _add_passthrough(sub, module: str, cmd) -> None:
    """``unitscope NAME MODEL DATA …`` for a module that parses its own options (``NAME_main(argv)``)."""
    entry = getattr(cmd, f"{module}_main")
    name = module.replace("_", "-")
    p = sub.add_parser(
        name, help=(cmd.__doc__ or name).strip().splitlines()[0] + f" (options: unitscope {name} MODEL DATA --help)"
    )
    p.add_argument("model")
    p.add_argument("data")
    p.add_argument("rest", nargs=argparse.REMAINDER, help=f"passed on to unitscope {name}")
    p.set_defaults(func=lambda args: entry([args.model, args.data, *args.rest]))


@restores_process_state
def main(argv=None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        return int(e.code or 0)
    return run_command(args.func, args, f"unitscope {args.command}")


if __name__ == "__main__":
    sys.exit(main())
