"""``unitscope visualize MODEL --layer … --units …``: activation maximization (AM) or independent AM (IAM) images
of units, with Representative Substitution for IAM."""

from __future__ import annotations

import os

import torch

from ..core.errors import UnitscopeError
from .options import add, add_common, finish, lazy, positive_int, seed_everything, write_json

NAME = "visualize"
HELP = "activation maximization (AM) or independent AM (IAM) images of units"


def add_arguments(p) -> None:
    add(p, "model", "layer", "units")
    p.add_argument("--iam", action="store_true", help="independent AM (and Representative Substitution)")
    p.add_argument("--param", choices=["pixel", "fft"], default="pixel", help="image parameterization")
    p.add_argument("--steps", type=positive_int, default=128, help="optimization steps (default %(default)s)")
    add(p, "shape")
    add_common(p, out="unitscope-out/visualize")


def parse_units(spec: list[str]) -> list[int]:
    """``["0-3", "7,9"]`` → ``[0, 1, 2, 3, 7, 9]``."""
    units = []
    for s in spec:
        for part in s.split(","):
            part = part.strip()
            if not part:
                continue
            try:
                if "-" in part:
                    a, b = part.split("-")
                    units += list(range(int(a), int(b) + 1))
                else:
                    units.append(int(part))
            except ValueError:
                raise UnitscopeError(f"units must be integers or ranges like 0-7, not {part!r}") from None
    if not units:
        raise UnitscopeError("no units given", hint="e.g. --units 0 1 2 or --units 0-7")
    return units


def check_image_command(args, what: str):
    """Before loading: the model reads images (not text) and ``--shape``, when given, is ``C H W``."""
    from .checks import preflight

    spec, _ = preflight(args, data=False)
    if spec.text:
        raise UnitscopeError(
            f"{what} makes images, and {args.model} is a text model",
            hint="give an image model (a zoo image model, a factory or a torch.export file)",
        )
    if args.shape and len(args.shape) != 3:
        raise UnitscopeError(
            f"--shape {' '.join(map(str, args.shape))}: synthetic images need C H W",
            shape=list(args.shape),
            hint="pass three numbers, e.g. --shape 3 224 224",
        )
    return spec


def image_shape(loaded, args) -> tuple:
    if args.shape:
        return tuple(args.shape)
    if loaded.image_shape is None:
        from ..loading import _first_conv_channels

        c = _first_conv_channels(loaded.model)
        reads = f" (C = {c}: its first convolution reads {c} channel(s))" if c else ""
        raise UnitscopeError(f"the input image shape of {args.model!r} is not known", hint=f"pass --shape C H W{reads}")
    return loaded.image_shape


def show_images(images: torch.Tensor, titles, path: str, title: str, value_range) -> str:
    """A grid of images (``[B, C, H, W]`` in ``value_range``) with a title each, saved as a PNG."""
    from ..report.figures import save_figure
    from ..report.grids import image_grid

    return save_figure(image_grid(images, titles, title=title, value_range=value_range), path)


def run(args) -> dict:
    from ..loading import load_model

    from ..loading import check_layers

    check_image_command(args, "visualize")
    units = parse_units(args.units)  # before anything loads
    maximize = lazy("unitscope.synthesis.maximize", "activation maximization (visualize)")
    seed_everything(args.seed)
    loaded = load_model(args.model, args.device)
    loaded.require_hooks()
    shape = image_shape(loaded, args)
    check_layers(loaded.model, [args.layer], argument="--layer")
    fn = maximize.independent_am if args.iam else maximize.activation_maximization
    r = fn(
        loaded.model,
        args.layer,
        units,
        shape=shape,
        param=args.param,
        steps=args.steps,
        seed=args.seed,
        value_range=loaded.value_range,
        progress=True,
    )
    kind = "IAM" if args.iam else "AM"
    os.makedirs(args.out, exist_ok=True)
    own = r.activations.gather(1, r.units.view(-1, 1))[:, 0]
    summary = {
        "model": args.model,
        "layer": r.layer,
        "kind": kind,
        "units": units,
        "activation": [round(float(v), 4) for v in own],
    }
    titles = [f"#{u}  a={float(a):.2f}" for u, a in zip(units, own)]
    if args.iam:
        rs = maximize.representative_substitution(r)
        summary["rs"] = [round(float(v), 4) for v in rs]
        titles = [f"{t}\nRS={float(v):.2f}" for t, v in zip(titles, rs)]
    stem = f"{kind.lower()}_{r.layer.replace('.', '_')}"
    summary["figure"] = show_images(
        r.images,
        titles,
        os.path.join(args.out, f"{stem}.png"),
        f"{kind} of {args.model} {r.layer} ({args.param}, {args.steps} steps)",
        loaded.value_range,
    )
    torch.save(r.images, os.path.join(args.out, f"{stem}.pt"))
    write_json(os.path.join(args.out, f"{stem}.json"), summary)
    return finish(summary)
