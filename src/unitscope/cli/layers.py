"""``unitscope layers MODEL``: a model's addressable layers with their output shapes (MODEL: a zoo name,
``hf:FOLDER`` — with or without a tokenizer —, a ``torch.export`` / TorchScript file or ``package.module:factory``).
"""

from __future__ import annotations

import os
import sys

import torch

from ..core.errors import UnitscopeError
from .options import add, add_common

NAME = "layers"
HELP = "a model's addressable layers with their output shapes"


def add_arguments(p) -> None:
    add(p, "model")
    add(p, "shape")
    add_common(p, out=None)


def _output_shapes(loaded, names, device) -> dict:
    """Each layer's output shape (per example) from one forward pass on the model's example input; layers the
    forward pass does not call, or whose output is not a float tensor, say so."""
    from ..core.capture import Recorder
    from ..core.sites import resolve
    from ..core.state import analysis_mode

    sites = resolve(loaded.model, names)
    shapes = {}
    while sites:
        rec = Recorder(sites)
        try:
            with analysis_mode(loaded.model), torch.no_grad(), rec.active():
                loaded.model(loaded.example[:1].to(device))
        except UnitscopeError as e:  # a layer not called, or with a non-float output: note it, read the others again
            bad = e.context.get("layer")
            if bad is None or bad not in [s.name for s in sites]:
                raise
            shapes[bad] = "(not called by forward)" if "did not run" in str(e) else "(output is not a float tensor)"
            sites = [s for s in sites if s.name != bad]
            continue
        for s in sites:
            parts = rec.parts.get(s.name)
            if parts is None:
                shapes[s.name] = "(not called by forward)"
            elif rec.is_tuple.get(s.name):
                shapes[s.name] = [list(t.shape[1:]) for t in parts]
            else:
                shapes[s.name] = list(parts[0].shape[1:])
        break
    return shapes


def run(args) -> dict:
    from ..core.capture import layer_names
    from ..loading import load_model
    from .checks import preflight

    preflight(args, data=False)  # the MODEL argument and --device, before anything loads
    loaded = load_model(args.model, args.device)
    if args.shape and loaded.embedding is not None:
        raise UnitscopeError(
            f"--shape: {args.model} reads token ids; its example input is known", hint="leave --shape out"
        )
    if args.shape and loaded.hookable:  # the user says the input shape: one example of zeros serves the forward pass
        loaded.example = torch.zeros(1, *args.shape)
    known = loaded.hookable and loaded.example is not None
    # with an example input, a module called several times is listed once per call (NAME@0, NAME@1, …)
    names = layer_names(loaded.model, inputs=loaded.example[:1].to(args.device) if known else None)
    shapes = _output_shapes(loaded, names, args.device) if known else {}
    modules = dict(loaded.model.named_modules())
    width = max((len(n) for n in names), default=10) + 2
    rows = []
    for n in names:
        kind = type(modules[n.split("@")[0]]).__name__
        rows.append({"layer": n, "type": kind, "output_shape": str(shapes.get(n, "?"))})
        print(f"{n:<{width}} {kind:<22} {shapes.get(n, '?')}")
    if not shapes:
        why = (
            "TorchScript modules cannot be hooked"
            if not loaded.hookable
            else "no example input is known for this model"
        )
        what_to_try = "pass --shape with the input shape of one example" if loaded.hookable else "use torch.export"
        print(f"(output shapes unknown: {why}; {what_to_try})", file=sys.stderr)
    if args.out:
        import pandas as pd

        os.makedirs(args.out, exist_ok=True)
        pd.DataFrame(rows, columns=["layer", "type", "output_shape"]).to_csv(
            os.path.join(args.out, "layers.csv"), index=False
        )
    return {"model": args.model, "layers": len(names)}
