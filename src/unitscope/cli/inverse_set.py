"""``unitscope inverse-set MODEL --layer … --unit … --range A B``: diverse inputs whose unit activation lies in
``[A, B]`` (augmented-Lagrangian sampling through the model's generator — the digits VAE for the digits models — or an
FFT image parameterization)."""

from __future__ import annotations

import os

import torch

from ..core.errors import UnitscopeError
from ..loading import DIGITS_MODELS
from .options import add, add_common, finish, lazy, nonnegative_int, positive_int, seed_everything, write_json
from .visualize import check_image_command, image_shape, show_images

NAME = "inverse-set"
HELP = "diverse inputs whose unit activation lies in [A, B]"


def add_arguments(p) -> None:
    add(p, "model", "layer")
    p.add_argument("--unit", type=nonnegative_int, required=True, help="the unit (a channel index)")
    p.add_argument("--range", type=float, nargs=2, required=True, metavar=("A", "B"), help="A ≤ activation ≤ B")
    p.add_argument("--n", type=positive_int, default=32, help="samples wanted (default %(default)s)")
    p.add_argument(
        "--encoder",
        choices=["pixels", "early"],
        default="pixels",
        help="distances between samples in pixel space or on the model's early block",
    )
    add(p, "generator", "shape")
    add_common(p, out="unitscope-out/inverse-set")


def run(args) -> dict:
    from ..loading import load_model

    inverse = lazy("unitscope.synthesis.inverse", "inverse-set sampling")
    generators = lazy("unitscope.synthesis.generators", "inverse-set sampling")
    from ..loading import check_layers, check_model, load_generator

    a, b = args.range
    if not a <= b:
        raise UnitscopeError("--range A B needs A ≤ B", range=(a, b))
    check_image_command(args, "inverse-set")
    if args.generator not in ("auto", "fft"):
        check_model(args.generator)  # the module can be found (not imported yet)
    seed_everything(args.seed)
    loaded = load_model(args.model, args.device)
    loaded.require_hooks()
    check_layers(loaded.model, [args.layer], argument="--layer")
    if args.generator not in ("auto", "fft"):
        generator, generator_name = load_generator(args.generator, loaded), args.generator
    elif args.generator == "auto" and args.model in DIGITS_MODELS:
        from ..zoo.digits_vae import digits_generator

        generator, generator_name = digits_generator(), "the digits VAE's decoder"
    else:
        generator = generators.FFTImageGenerator(image_shape(loaded, args), value_range=loaded.value_range)
        generator_name = "an FFT image parameterization"
    encoder = generators.early_block(loaded.model) if args.encoder == "early" else None
    result = inverse.sample_inverse_set(
        loaded.model,
        (args.layer, args.unit, a, b),
        generator,
        encoder=encoder,
        n_samples=args.n,
        n_seeds=min(args.n, 16),
        seed=args.seed,
        progress=True,
    )
    os.makedirs(args.out, exist_ok=True)
    summary = {
        "model": args.model,
        "layer": args.layer,
        "unit": args.unit,
        "range": [a, b],
        "generator": generator_name,
        **result.summary(),
    }
    if result.report:
        summary["report"] = result.report
    if len(result):
        acts = result.activations[:, 0]
        summary["activation_min"], summary["activation_max"] = float(acts.min()), float(acts.max())
        summary["diversity"] = inverse.diversity(result.samples, encoder=encoder)
        torch.save(
            {"samples": result.samples, "codes": result.codes, "activations": result.activations},
            os.path.join(args.out, "inverse_set.pt"),
        )
        k = min(len(result), 32)
        summary["figure"] = show_images(
            result.samples[:k],
            [f"{float(v):.2f}" for v in acts[:k]],
            os.path.join(args.out, "inverse_set.png"),
            f"{args.model} {args.layer} #{args.unit}: {len(result)} samples with activation in [{a}, {b}]",
            loaded.value_range,
        )
    write_json(os.path.join(args.out, "inverse_set.json"), summary)
    return finish(summary)
