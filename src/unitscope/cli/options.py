"""One definition of the command line's options: a flag has one meaning, one spelling and one help text in every
subcommand that takes it.

>>> p = Parser(prog="demo")
>>> add(p, "target", "method", "n_steps", n_steps=20)
>>> a = p.parse_args(["--target", "3"])
>>> a.target, a.method, a.n_steps
(3, 'adaptive', 20)

The shared vocabulary:

* ``MODEL`` — a zoo name, ``hf:FOLDER``, a ``torch.export`` / TorchScript file or ``package.module:factory``
  (:func:`unitscope.loading.load_model`); ``DATA`` — a zoo data name, a tensor file, images or a ``.txt``
  (:func:`unitscope.loading.load_inputs`), with ``--labels FILE`` and, for images of a model without its own
  transform, ``--image-size``/``--mean``/``--std``. Every subcommand knows every zoo name, from one registry, and
  checks its arguments before anything loads (:mod:`unitscope.cli.checks`).
* ``--target``: ``top`` (each example's top predicted class, the default), ``label`` (each example's label) or a
  class index.
* ``--scores``: what to compute (``conductance``, ``internal_influence``, ``grad_x_activation``, ``activation``);
  ``--method``: the integration rule; ``--n-steps``: path points.
* ``--batch-size``: examples per data-loader batch; ``--internal-batch-size``: rows (examples × path points) per
  forward/backward pass, the memory bound.
* ``--device``, ``--seed``, ``--out`` (each command its own default folder, ``unitscope-out/<command>``).

A user mistake, at parse time or later, is one line on stderr and exit code 2 (:func:`run_command`).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys

from ..attribution.paths import RULES
from ..attribution.scores import SCORES
from ..core.errors import UnitscopeError
from ..loading import DATA_HELP, MODEL_HELP

__all__ = [
    "Parser",
    "OPTIONS",
    "add",
    "add_common",
    "target_value",
    "positive_int",
    "nonnegative_int",
    "generator_value",
    "resolve_target",
    "run_command",
    "lazy",
    "write_json",
    "finish",
    "seed_everything",
]


class Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line (and exit code 2), like every other user mistake."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def target_value(spec: str):
    """``--target``: ``"top"``, ``"label"`` or a class index (an int)."""
    if spec in ("top", "label"):
        return spec
    try:
        v = int(spec)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--target must be 'top', 'label' or a class index, not {spec!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"--target must be 'top', 'label' or a class index ≥ 0, not {v}")
    return v


def positive_int(spec: str) -> int:
    """An int ≥ 1 (``--n-steps``, ``--batch-size``, ``--limit`` …)."""
    try:
        v = int(spec)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {spec!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be ≥ 1, not {v}")
    return v


def nonnegative_int(spec: str) -> int:
    """An int ≥ 0 (a unit index)."""
    try:
        v = int(spec)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {spec!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be ≥ 0, not {v}")
    return v


def generator_value(spec: str) -> str:
    """``--generator``: ``auto``, ``fft`` or ``package.module:factory``."""
    if spec in ("auto", "fft") or (":" in spec and all(p.isidentifier() for p in spec.replace(":", ".").split("."))):
        return spec
    raise argparse.ArgumentTypeError(f"--generator must be auto, fft or package.module:factory, not {spec!r}")


def score_name(spec: str) -> str:
    """``--scores``: one of :data:`unitscope.attribution.scores.SCORES`."""
    if spec not in SCORES:
        raise argparse.ArgumentTypeError(f"unknown score {spec!r} (choose from {', '.join(SCORES)})")
    return spec


def method_name(spec: str) -> str:
    """``--method``: an integration rule or ``adaptive``."""
    if spec != "adaptive" and spec not in RULES:
        raise argparse.ArgumentTypeError(
            f"unknown integration method {spec!r} (choose from {', '.join(RULES + ('adaptive',))})"
        )
    return spec


#: name → (option strings, argparse keywords). Defaults that differ between commands are passed to :func:`add`;
#: the help texts say ``%(default)s``, so the text is the same everywhere.
OPTIONS: dict[str, tuple[tuple[str, ...], dict]] = {
    "model": (("model",), dict(metavar="MODEL", help=MODEL_HELP)),
    "data": (("data",), dict(nargs="+", metavar="DATA", help=DATA_HELP)),
    "labels": (
        ("--labels",),
        dict(
            default=None,
            metavar="FILE",
            help="labels of DATA: a .txt of class indices (one a line) or a .pt/.npy tensor",
        ),
    ),
    "image_size": (
        ("--image-size",),
        dict(
            type=positive_int,
            nargs="+",
            metavar="N",
            default=None,
            help="H or H W: images resized to it (for a model without its own "
            "transform; default: its example input's size, else the first "
            "image's)",
        ),
    ),
    "mean": (
        ("--mean",),
        dict(type=float, nargs="+", default=None, help="per-channel mean subtracted from [0, 1] images (with --std)"),
    ),
    "std": (
        ("--std",),
        dict(type=float, nargs="+", default=None, help="per-channel std the images are divided by (with --mean)"),
    ),
    "generator": (
        ("--generator",),
        dict(
            type=generator_value,
            default="auto",
            metavar="GENERATOR",
            help="inverse sets through: auto (the zoo model's own generator where it "
            "has one — the digits VAE —, else the FFT image parameterization), "
            "fft, or package.module:factory (a generator or a decoder module "
            "with .latent_dim)",
        ),
    ),
    "layers": (
        ("--layers",),
        dict(nargs="+", metavar="LAYER", default=None, help="dotted layer names (see `unitscope layers MODEL`)"),
    ),
    "layer": (("--layer",), dict(required=True, help="one dotted layer name (see `unitscope layers MODEL`)")),
    "scores": (
        ("--scores",),
        dict(
            nargs="+",
            type=score_name,
            metavar="SCORE",
            help=f"what to compute: {', '.join(SCORES)} (several allowed; default %(default)s)",
        ),
    ),
    "target": (
        ("--target",),
        dict(
            type=target_value,
            default="top",
            help="'top' (each example's top predicted class), 'label' (each example's "
            "label) or a class index (default %(default)s)",
        ),
    ),
    "method": (
        ("--method",),
        dict(
            type=method_name,
            default="adaptive",
            help=f"integration rule: {', '.join(RULES)} or adaptive (default %(default)s)",
        ),
    ),
    "n_steps": (("--n-steps",), dict(type=positive_int, help="path points per example (default %(default)s)")),
    "batch_size": (
        ("--batch-size",),
        dict(type=positive_int, default=256, help="examples per data-loader batch (default %(default)s)"),
    ),
    "internal_batch_size": (
        ("--internal-batch-size",),
        dict(
            type=positive_int,
            default=None,
            help="rows (examples × path points) per forward/backward pass: the memory bound "
            "(default %(default)s: all at once)",
        ),
    ),
    "limit": (("--limit",), dict(type=positive_int, default=None, help="use only the first N inputs")),
    "units": (("--units",), dict(nargs="+", required=True, help="channel indices, e.g. 0 1 2 or 0-7")),
    "shape": (
        ("--shape",),
        dict(
            type=positive_int,
            nargs="+",
            metavar="DIM",
            help="the input shape of one example (C H W for images, D for vectors), if the model does not say",
        ),
    ),
    "quick": (("--quick",), dict(action="store_true", help="a small, fast run (fewer inputs and path points)")),
    "split": (
        ("--split",),
        dict(
            default="all",
            choices=["all", "train", "test"],
            help="which part of the digits / reviews (default %(default)s)",
        ),
    ),
    "device": (("--device",), dict(default="cpu", help="cpu, cuda or cuda:N (default %(default)s)")),
    "seed": (("--seed",), dict(type=int, default=0, help="random seed (default %(default)s)")),
    "out": (("--out",), dict(help="output folder (default %(default)s)")),
}


def add(parser: argparse.ArgumentParser, *names: str, required=(), **defaults) -> None:
    """Add the named shared options to ``parser``; ``defaults`` (by option name) set this command's defaults,
    ``required`` names the options this command cannot do without."""
    for name in names:
        flags, kw = OPTIONS[name]
        kw = dict(kw)
        if name in defaults:
            kw["default"] = defaults[name]
        if name in required:
            kw["required"] = True
        parser.add_argument(*flags, **kw)


def add_common(parser: argparse.ArgumentParser, out: str) -> None:
    """``--device``, ``--seed`` and ``--out`` (default ``out``): every command that runs a model takes them."""
    add(parser, "device", "seed", "out", out=out)


def resolve_target(spec, labels=None, *, name: str = "--target"):
    """``--target`` for the library: ``top`` → ``None``; ``label`` → ``labels`` (an error when there are none);
    an int stays."""
    if spec == "top":
        return None
    if spec == "label":
        if labels is None:
            raise UnitscopeError(f"{name} label needs inputs with labels", hint="use a zoo data name, or an int")
        return labels
    return spec


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    torch.manual_seed(seed)
    np.random.seed(seed)


def lazy(module: str, what: str):
    """Import a part of unitscope that may not be there yet, with a clear error if it is not."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name and (e.name == module or module.startswith(e.name + ".")):
            raise UnitscopeError(
                f"{what} is not available in this version of unitscope ({module} is missing)"
            ) from None
        raise UnitscopeError(f"{what} needs the package {e.name!r}", hint=f"pip install {e.name}") from None


def write_json(path, obj) -> None:
    with open(path, "w") as f:
        json.dump(obj, f, indent=1, default=float)


def finish(summary: dict) -> dict:
    """Print the summary as one JSON object on the last line of stdout."""
    print(json.dumps(summary, default=float))
    return summary


def run_command(func, args, name: str) -> int:
    """Run ``func(args)``: 0 on success; a user mistake is one line on stderr and 2; Ctrl-C is 130. An output folder
    (``--out``) that cannot be written is reported before any work starts; a folder made for that check is removed
    again when the command fails before writing anything into it."""
    made = []
    try:
        if getattr(args, "out", None):
            from ..core.files import check_writable

            made = _missing_folders(args.out)
            check_writable(args.out)
        func(args)
    except UnitscopeError as e:
        print(f"{name}: error: {e}", file=sys.stderr)
        return _remove_empty(made, 2)
    except KeyboardInterrupt:
        print(f"{name}: interrupted", file=sys.stderr)
        return _remove_empty(made, 130)
    except (FileNotFoundError, PermissionError, IsADirectoryError) as e:
        print(f"{name}: error: {e}", file=sys.stderr)
        return _remove_empty(made, 2)
    return 0


def _missing_folders(folder) -> list:
    """The folders that creating ``folder`` would make, deepest first."""
    from pathlib import Path

    missing, f = [], Path(folder).absolute()
    while not f.exists() and f != f.parent:
        missing.append(f)
        f = f.parent
    return missing


def _remove_empty(folders, code: int) -> int:
    """Remove the folders this command made when they are still empty (deepest first); return ``code``."""
    for f in folders:
        if f.is_dir() and not any(f.iterdir()):
            f.rmdir()
    return code
