"""``unitscope importance MODEL DATA --layers …``: importance scores of every unit of the named layers
(CSV/Parquet table + one figure per layer + ``importance.json``)."""

from __future__ import annotations

import os
import sys

import numpy as np

from ..core.errors import UnitscopeError
from .options import add, add_common, finish, resolve_target, seed_everything, write_json

NAME = "importance"
HELP = "importance scores of every unit of the named layers (CSV/Parquet + figures)"


def add_arguments(p) -> None:
    add(
        p,
        "model",
        "data",
        "layers",
        "scores",
        "target",
        "method",
        "n_steps",
        "internal_batch_size",
        "limit",
        "labels",
        "image_size",
        "mean",
        "std",
        required=("layers",),
        scores=["conductance"],
        n_steps=50,
    )
    p.add_argument("--per-unit", action="store_true", help="one row per unit instead of per channel")
    p.add_argument("--format", choices=["csv", "parquet"], default="csv", help="table format (default %(default)s)")
    add_common(p, out="unitscope-out/importance")


def importance_figure(frame, layer: str, path: str, *, top: int = 20) -> str:
    """Mean per-channel score of the ``top`` channels (by mean |score|) of one layer, one panel per score, with error
    bars (:func:`unitscope.report.figures.importance_bars`)."""
    from ..report.figures import importance_bars, save_figure

    return save_figure(importance_bars(frame, layer, top=top), path)


def run(args) -> dict:
    from ..attribution.scores import attribute
    from ..attribution.config import PathConfig
    from ..loading import load_inputs, load_model
    from .checks import after_load, image_settings, preflight, require_layers

    spec, plan = preflight(args)  # names, paths, formats, ranges: before anything loads
    require_layers(args, spec)
    if args.format == "parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise UnitscopeError(
                "--format parquet needs pyarrow", hint="pip install pyarrow, or use --format csv"
            ) from None
    seed_everything(args.seed)
    loaded = load_model(args.model, args.device)
    loaded.require_hooks()
    inputs = load_inputs(plan, loaded, limit=args.limit, image=image_settings(args))
    x = inputs.x.to(args.device)
    embedding = loaded.embedding  # token ids (hf:FOLDER): paths start at the embedding's output
    if not x.is_floating_point() and embedding is None:
        raise UnitscopeError(
            f"DATA: {args.model} takes floating-point inputs",
            dtype=str(x.dtype),
            hint="token ids need a model with a token embedding (hf:FOLDER)",
        )
    layers = after_load(loaded, args.layers, args.target, x[:1])  # layer names, target, one forward pass
    target = resolve_target(args.target, inputs.labels)
    extra = None if inputs.mask is None else (inputs.mask.to(args.device),)  # a tokenizer's attention mask
    results = attribute(
        loaded.model,
        x,
        layers,
        scores=args.scores,
        target=target,
        n_steps=args.n_steps,
        method=args.method,
        internal_batch_size=args.internal_batch_size,
        path=PathConfig(gap_warning=None),
        progress=True,
        embedding=embedding,
        additional_forward_args=extra,
        mask=None if extra is None else extra[0],
    )
    import pandas as pd

    frame = pd.concat([s.to_frame(per_channel=not args.per_unit) for s in results.values()], ignore_index=True)
    if inputs.names is not None:
        frame.insert(3, "input", np.asarray(inputs.names, dtype=object)[frame["example"].to_numpy()])
    os.makedirs(args.out, exist_ok=True)
    table = os.path.join(args.out, f"scores.{args.format}")
    if args.format == "csv":
        frame.to_csv(table, index=False)
    else:
        frame.to_parquet(table, index=False)
    any_scores = next(iter(results.values()))
    figures = [
        importance_figure(
            frame
            if not args.per_unit
            else frame.groupby(["score", "layer", "example", "channel"], as_index=False)[
                [c for c in ("value", "error") if c in frame]
            ].sum(),
            layer,
            os.path.join(args.out, f"importance_{layer.replace('.', '_')}.png"),
        )
        for layer in any_scores.layers
    ]
    summary = {
        "model": args.model,
        "inputs": len(x),
        "layers": any_scores.layers,
        "scores": list(results),
        "table": table,
        "figures": figures,
        "target": None if any_scores.target is None else [int(t) for t in any_scores.target[:20]],
    }
    if "conductance" in results:
        s = results["conductance"]
        summary["max_completeness_gap"] = {layer: float(s.relative_delta(layer).max()) for layer in s.layers}
        print(s.summary(), file=sys.stderr)
    write_json(os.path.join(args.out, "importance.json"), summary)
    print(f"wrote {table} ({len(frame)} rows) and {len(figures)} figure(s) to {args.out}", file=sys.stderr)
    return finish(summary)
