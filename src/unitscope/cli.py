"""The ``unitscope`` command: a thin layer over the library. User mistakes end as one line and exit code 2."""

from __future__ import annotations

import argparse
import sys

from .errors import UnitscopeError


def _layers(args) -> None:
    from .scores import activation
    from .zoo import digits_cnn, digits_data

    if args.model != "digits-cnn":
        raise UnitscopeError(f"unknown model {args.model!r}", hint="available: digits-cnn")
    model = digits_cnn().model
    _, test = digits_data()
    names = [n for n, _ in model.named_modules() if n]
    acts = activation(model, test.x[:1], names)
    for name in names:
        print(f"{name:<20} {list(acts[name].shape[1:])}")


def _demo(args) -> None:
    from .demo import run

    run(n_examples=3 if args.quick else 5, n_steps=32 if args.quick else 64, seed=args.seed)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="unitscope", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="run the main job on the bundled model and data")
    p.add_argument("--quick", action="store_true", help="fewer examples and path points")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_demo)
    p = sub.add_parser("layers", help="list a model's addressable layers with their output shapes")
    p.add_argument("model", help="zoo name: digits-cnn")
    p.set_defaults(func=_layers)
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except UnitscopeError as e:
        print(f"unitscope: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
