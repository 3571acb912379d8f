"""The checks every command runs before any work, and the ones right after the model has loaded.

>>> import argparse
>>> args = argparse.Namespace(model="digits-cnn", data=["movie-reviews"], device="cpu")
>>> preflight(args)
Traceback (most recent call last):
...
unitscope.core.errors.UnitscopeError: input 'movie-reviews' not found; did you mean 'reviews'?

:func:`preflight` checks what can be checked without the model — the MODEL and DATA arguments (names, paths,
formats, labels), the two together, ``--device``, ``--split``, ``--target label``, the layer syntax and the image
options — and loads, imports or trains nothing. :func:`after_load` checks what needs the model (layer names, the
target class, token ids) with at most one forward pass on one example, before the first pass of the command.
"""

from __future__ import annotations

import re

import torch

from ..core.errors import UnitscopeError
from ..loading import (
    ZOO_MODELS,
    DataPlan,
    ImageSettings,
    ModelSpec,
    check_device,
    check_layers,
    check_model,
    check_pair,
    plan_inputs,
)

__all__ = ["preflight", "after_load", "check_layer_syntax", "check_target", "require_layers", "check_forward"]

_LAYER = re.compile(r"[^\s@]+(@\d+)?")
_SPLIT_DATA = ("digits", "reviews")


def check_layer_syntax(names, argument: str = "--layers") -> None:
    """``NAME`` or ``NAME@K`` (the K-th call of a module), dotted, without spaces."""
    for name in names or ():
        if not _LAYER.fullmatch(name):
            raise UnitscopeError(
                f"{argument} {name!r} is not a layer name",
                hint="a dotted name as `unitscope layers MODEL` prints it, e.g. features.3 or "
                "blocks.1@0 (the first call of a module called twice)",
            )


def image_settings(args) -> ImageSettings:
    return ImageSettings(
        tuple(args.image_size) if getattr(args, "image_size", None) else None,
        tuple(args.mean) if getattr(args, "mean", None) else None,
        tuple(args.std) if getattr(args, "std", None) else None,
    )


def preflight(args, *, data: bool = True, zoo=ZOO_MODELS) -> tuple[ModelSpec, DataPlan | None]:
    """Check ``args`` before anything loads: one-line :class:`UnitscopeError` on the first mistake.
    ``(model spec, data plan or None)``; the plan holds what it read (tensor files, sentences, image file names)."""
    if getattr(args, "device", None) is not None:
        check_device(args.device)
    model = check_model(args.model, zoo=zoo)
    plan = None
    if data:
        plan = plan_inputs(args.data, labels=getattr(args, "labels", None), limit=getattr(args, "limit", None))
    image = image_settings(args)
    check_pair(model, plan, image)
    split = getattr(args, "split", "all")
    if plan is not None and split != "all" and not (plan.kind == "zoo" and plan.name in _SPLIT_DATA):
        raise UnitscopeError(
            f"--split {split}: only the digits and the reviews have splits",
            data=plan.name,
            hint="leave --split out for your own data",
        )
    if plan is not None and getattr(args, "target", None) == "label" and not plan.has_labels:
        raise UnitscopeError(
            "--target label needs inputs with labels",
            data=plan.name,
            hint="a folder of class folders, a .pt dict with 'labels', "
            "LABEL<TAB>sentence lines or --labels FILE; or use --target top",
        )
    check_layer_syntax(getattr(args, "layers", None))
    if getattr(args, "layer", None) is not None:
        check_layer_syntax([args.layer], "--layer")
    return model, plan


def require_layers(args, model: ModelSpec, what: str = "--layers") -> None:
    """Commands whose layers have no default for this model: ``--layers`` must be given (before loading)."""
    if not args.layers:
        raise UnitscopeError(
            f"name the layers with {what}", model=model.spec, hint=f"unitscope layers {model.spec} lists them"
        )


def check_target(spec, output: torch.Tensor, name: str) -> None:
    """``--target K`` within the model's outputs (``output``: the model's output on one example)."""
    if not isinstance(spec, int) or isinstance(spec, bool) or not torch.is_tensor(output) or output.dim() < 2:
        return
    k = int(output.shape[-1])
    if not 0 <= spec < k:
        raise UnitscopeError(
            f"--target {spec}: {name} has {k} outputs", hint=f"a class index in 0–{k - 1}, 'top' or 'label'"
        )


def check_forward(model, x):
    """One forward pass on the inputs (a tensor, or a tokenizer's dict: ``input_ids`` and keyword arguments); an
    error inside the model names the layer call and the shapes (out-of-memory propagates with a hint). Returns the
    output."""
    from ..core.faults import model_errors
    from ..core.state import analysis_mode

    args, kwargs = (
        (x["input_ids"], {k: v for k, v in x.items() if k != "input_ids"}) if isinstance(x, dict) else (x, {})
    )
    with model_errors(model, inputs=args), analysis_mode(model), torch.no_grad():
        return model(args, **kwargs)


def after_load(loaded, layers, target, x, *, layer_argument: str = "--layers"):
    """The checks that need the model, before the first pass: the layer names exist, one forward pass on ``x``
    (one example, or a tokenizer's dict of one) runs, ``--target`` is one of the outputs, token ids are in the
    vocabulary. Returns the layer names."""
    from ..loading import check_token_ids

    names = check_layers(loaded.model, layers, argument=layer_argument) if layers else []
    device = next(iter(loaded.model.parameters()), torch.empty(0)).device
    x = {k: v.to(device) for k, v in x.items()} if isinstance(x, dict) else x.to(device)
    ids = x["input_ids"] if isinstance(x, dict) else x
    if loaded.embedding is not None and torch.is_tensor(ids):
        check_token_ids(ids, loaded)
    out = check_forward(loaded.model, x)
    check_target(target, out, loaded.name)
    return names
