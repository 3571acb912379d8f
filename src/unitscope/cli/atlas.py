"""``unitscope atlas MODEL DATA --layers … --out DIR``: the unit atlas from the command line — ``DIR/atlas.json``,
``DIR/atlas_tensors.pt``, ``DIR/index.html`` (+ ``img/``) and a results-folder ``manifest.json``. Under ``torchrun``
every process takes its share of the scan and of the units; rank 0 writes.

MODEL/DATA: any that :mod:`unitscope.loading` knows — your own first: ``package.module:factory``, a ``torch.export``
file or ``hf:FOLDER`` (with its tokenizer: sentences; without: token-id tensors), over image files or folders (class
sub-folders give labels), a ``.pt``/``.npy`` tensor (with optional labels) or a ``.txt`` of sentences. Images are
prepared the model's way (its own transform, else ``--image-size``/``--mean``/``--std``); a text model's exemplars
have every token shaded by its conductance through the unit; an image model's synthetic inputs (IAM, inverse sets)
go through ``--generator`` or, without one, the FFT parameterization. Name the layers (``--layers``; ``unitscope
layers MODEL`` lists them).

The bundled pairs: ``digits-cnn``/``digits-vgg``/``digits-mlp`` with ``digits`` (the 1,797 digits; inverse sets
through the digits VAE), ``sentiment-cnn`` with ``reviews`` (the sentences; exemplars with their n-grams
highlighted), ``minilm`` with ``reviews`` (all-MiniLM-L6-v2 with its sentiment head, from token ids: paths start at
the word embeddings from an all-[PAD] sentence; an MLP layer's 1,536 neurons over the tokens the attention mask
keeps; exemplar sentences with every token shaded by its conductance through the neuron; ``--top-units K`` keeps the
K most important neurons), ``efficientnet-lite0`` with ``photos`` (the bundled photos).
"""

from __future__ import annotations

import json
import sys
import time

from ..core.errors import UnitscopeError
from ..core.state import restores_process_state
from ..loading import MINILM_LAYER

from .options import Parser, add, add_common, positive_int, resolve_target, run_command

__all__ = ["atlas_main", "add_arguments", "run", "MINILM_LAYER"]

NAME = "atlas"
HELP = "the unit atlas: for every unit, whether it matters and what it responds to (JSON + a browsable page)"


def add_arguments(p) -> None:
    add(
        p,
        "model",
        "data",
        "layers",
        "target",
        "n_steps",
        "limit",
        "labels",
        "image_size",
        "mean",
        "std",
        "generator",
        "internal_batch_size",
        "split",
        n_steps=20,
    )
    p.add_argument("--top-k", type=positive_int, default=9, help="exemplars per unit, by activation and by conductance")
    p.add_argument("--share-k", type=positive_int, default=5, help="the top-k of the importance share")
    p.add_argument("--iam-steps", type=positive_int, default=128)
    p.add_argument("--inverse-samples", type=positive_int, default=4, help="inverse-set samples per band")
    p.add_argument("--inverse-steps", type=positive_int, default=100)
    p.add_argument(
        "--unit-batch-size",
        type=positive_int,
        default=64,
        help="units per chunk of the per-unit work (memory and speed, never the numbers)",
    )
    p.add_argument(
        "--top-units",
        type=positive_int,
        default=None,
        metavar="K",
        help="cards for the K most important units of each layer only (by mean |conductance|)",
    )
    p.add_argument("--no-synthetic", action="store_true", help="no IAM and no inverse sets")
    p.add_argument("--checkpoint", default=None, help="scan checkpoint file (resumed when it exists)")
    p.add_argument("--backend", default=None, help="torch.distributed backend under torchrun (gloo / nccl)")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds a rank waits for the others")
    p.add_argument("--threads", type=positive_int, default=None, help="torch threads per process")
    add(p, "quick")
    p.add_argument("--order", type=float, default=None, help="the manifest entry's place in the report")
    add_common(p, out="unitscope-out/atlas")


def build_parser() -> Parser:
    p = Parser(prog="unitscope atlas", description=HELP)
    add_arguments(p)
    return p


def quick_settings(args) -> dict:
    """The settings of a run (``--quick`` shrinks them)."""
    kw = dict(
        top_k=args.top_k,
        share_k=args.share_k,
        n_steps=args.n_steps,
        iam_steps=args.iam_steps,
        inverse_samples=args.inverse_samples,
        inverse_steps=args.inverse_steps,
        unit_batch_size=args.unit_batch_size,
        seed=args.seed,
        units=args.top_units,
    )
    if args.quick:
        kw.update(
            top_k=min(args.top_k, 4),
            n_steps=min(args.n_steps, 8),
            iam_steps=min(args.iam_steps, 32),
            inverse_samples=min(args.inverse_samples, 2),
            inverse_steps=min(args.inverse_steps, 40),
        )
    return kw


@restores_process_state
def atlas_main(argv=None) -> dict:
    """Build, save and render an atlas; prints its summary as one JSON object on the last line."""
    return run(build_parser().parse_args(argv))


def run(args) -> dict:
    """The atlas of ``args`` (parsed by a parser that :func:`add_arguments` built)."""
    from ..atlas import SynthesisConfig, atlas
    from ..attribution.config import PathConfig
    from ..data.stream import StreamConfig
    from ..cli.scan import distributed_run
    from ..data.distributed import Ranks
    from ..loading import ATLAS_MODELS, check_atlas_pair, check_model, load_atlas_inputs
    from ..report.atlas_html import render_atlas, write_atlas_manifest
    from .checks import after_load, image_settings, preflight, require_layers

    spec, plan = preflight(args, zoo=ATLAS_MODELS)  # names, paths, formats, ranges: before anything loads
    check_atlas_pair(spec, plan)
    if spec.kind != "zoo":
        require_layers(args, spec)
    if args.generator not in ("auto", "fft"):
        check_model(args.generator)  # the generator's module can be found
    with distributed_run(args) as group:
        rank = Ranks.of(group).rank
        got = load_atlas_inputs(
            args.model,
            plan,
            split=args.split,
            limit=args.limit,
            device=args.device,
            image=image_settings(args),
            generator=args.generator,
            synthesize=not args.no_synthetic,
        )
        layers = args.layers or got["default_layers"]
        if not layers:
            from ..core.sites import layer_names

            raise UnitscopeError(
                "name the layers with --layers",
                model=args.model,
                hint=f"e.g. {', '.join(layer_names(got['model'])[:4])} (unitscope layers {args.model})",
            )
        if args.quick and not args.layers:
            layers = layers[1:2] or layers[:1]
        first = got["data"][0]
        first = first if isinstance(first, dict) else first[0]
        x = {k: v[None] for k, v in first.items() if k != "labels"} if isinstance(first, dict) else first[None]
        from ..loading import Loaded

        layers = after_load(
            Loaded(got["model"], args.model, spec.kind, extra={"embedding": got["embedding"]}), layers, args.target, x
        )  # layer names, target, token ids: before the first pass
        target = resolve_target(args.target, "label")
        t0 = time.perf_counter()
        kw = quick_settings(args)
        a = atlas(
            got["model"],
            got["data"],
            layers,
            target=target,
            units=kw["units"],
            top_k=kw["top_k"],
            share_k=kw["share_k"],
            embedding=got.get("embedding"),
            tokens=got["tokens"],
            path=PathConfig(
                n_steps=kw["n_steps"],
                baselines=got.get("baselines"),
                internal_batch_size=args.internal_batch_size or got.get("internal_batch_size"),
                unit_batch_size=kw["unit_batch_size"],
            ),
            stream=StreamConfig(checkpoint=args.checkpoint, group=group),
            synthesis=SynthesisConfig(
                synthesize=False if args.no_synthetic else None,
                generator=got["generator"],
                value_range=got["value_range"],
                iam_steps=kw["iam_steps"],
                inverse_samples=kw["inverse_samples"],
                inverse_steps=kw["inverse_steps"],
                seed=kw["seed"],
            ),
        )
        a.meta.update(model=args.model, data=got["data_name"])
        seconds = time.perf_counter() - t0
        summary = {
            "model": args.model,
            "data": got["data_name"],
            "layers": layers,
            "units": len(a.units),
            "dead": sum(u["dead"] for u in a.units),
            "seconds": seconds,
            "units_per_minute": 60 * len(a.units) / seconds,
            "stages": a.meta.get("seconds"),
            "out": args.out,
        }
        if rank == 0:
            a.save(args.out, html=False)  # the page and the manifest next, with this command's settings
            summary["page"] = str(render_atlas(a, args.out, value_range=got.get("display_range") or got["value_range"]))
            write_atlas_manifest(a, args.out, quick=args.quick, order=args.order)
    if rank == 0:
        print(json.dumps(summary, default=float))
    return summary


if __name__ == "__main__":
    sys.exit(run_command(run, build_parser().parse_args(sys.argv[1:]), "unitscope atlas"))
