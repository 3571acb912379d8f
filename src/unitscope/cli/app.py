"""The ``unitscope`` command: a thin layer over the library.

>>> main(["layers", "no-such-model"])
2

Subcommands: ``demo``, ``layers``, ``importance``, ``visualize``, ``inverse-set``, ``scan``, ``atlas``, ``report``
(``unitscope SUBCOMMAND --help`` for each). MODEL is a zoo name (digits-cnn, digits-vgg, digits-mlp,
sentiment-cnn, efficientnet-lite0), a torch.export / TorchScript file or package.module:factory; INPUTS a zoo
data name (digits, photos, reviews), a .pt/.npy tensor, image files/folders or a .txt of sentences.
A user mistake ends as one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys

import numpy as np
import torch

from ..core.errors import UnitscopeError

__all__ = ["main", "build_parser"]


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line (and exit code 2), like every other user mistake."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _seed(args) -> None:
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)


def _lazy(module: str, what: str):
    """Import a part of unitscope that may not be there yet, with a clear error if it is not."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name and (e.name == module or module.startswith(e.name + ".")):
            raise UnitscopeError(f"{what} is not available in this version of unitscope ({module} is missing)") from None
        raise UnitscopeError(f"{what} needs the package {e.name!r}", hint=f"pip install {e.name}") from None


def _write_json(path: str, obj) -> None:
    with open(path, "w") as f:
        json.dump(obj, f, indent=1, default=float)


def _finish(summary: dict) -> dict:
    print(json.dumps(summary, default=float))
    return summary


# ----------------------------------------------------------------------------------------------- layers --
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


def _layers(args) -> dict:
    from ..loading import load_model
    from ..core.sites import layer_names

    loaded = load_model(args.model, args.device)
    names = layer_names(loaded.model)
    shapes = _output_shapes(loaded, names, args.device) if loaded.hookable and loaded.example is not None else {}
    width = max((len(n) for n in names), default=10) + 2
    for n in names:
        module = dict(loaded.model.named_modules())[n]
        print(f"{n:<{width}} {type(module).__name__:<22} {shapes.get(n, '?')}")
    if not shapes:
        why = ("TorchScript modules cannot be hooked" if not loaded.hookable
               else "no example input is known for this model")
        print(f"(output shapes unknown: {why})", file=sys.stderr)
    return {"model": args.model, "layers": len(names)}


# ------------------------------------------------------------------------------------------- importance --
def _target(spec: str | None, inputs):
    if spec is None or spec == "top":
        return None
    if spec == "label":
        if inputs.labels is None:
            raise UnitscopeError("--target label needs inputs with labels", hint="use a zoo data name, or an int")
        return inputs.labels
    try:
        return int(spec)
    except ValueError:
        raise UnitscopeError(f"--target must be 'top', 'label' or a class index, not {spec!r}") from None


def _check_forward(model, x) -> None:
    """One forward pass on the inputs: an error inside the model names the layer call and the shapes (out-of-memory
    propagates with a hint)."""
    from ..core.faults import model_errors

    with model_errors(model, inputs=x), torch.no_grad():
        model(x)


def importance_figure(frame, layer: str, path: str, top: int = 20) -> str:
    """Mean per-channel score of the ``top`` channels (by mean |score|) of one layer, one panel per method."""
    from ..report.figures import plt, save_figure

    sub = frame[frame["layer"] == layer]
    methods = list(dict.fromkeys(sub["method"]))
    fig, axes = plt.subplots(1, len(methods), figsize=(3.4 * len(methods), 3.2), squeeze=False)
    for ax, m in zip(axes[0], methods):
        mean = sub[sub["method"] == m].groupby("channel")["value"].mean()
        best = mean.abs().sort_values(ascending=False).index[:top]
        vals = mean.loc[best]
        ax.bar(range(len(vals)), vals.values, color=["tab:blue" if v >= 0 else "tab:red" for v in vals.values])
        ax.set_xticks(range(len(vals)))
        ax.set_xticklabels([str(c) for c in best], rotation=90, fontsize=6)
        ax.set_title(f"{m}", fontsize=8)
        ax.set_xlabel("channel", fontsize=7)
        ax.tick_params(labelsize=6)
    axes[0][0].set_ylabel("mean score over inputs", fontsize=7)
    fig.suptitle(f"{layer}: top {top} channels", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


def _importance(args) -> dict:
    from ..loading import load_inputs, load_model
    from ..attribution.scores import SCORES, attribute

    _seed(args)
    unknown = [m for m in args.scores if m not in SCORES]
    if unknown:
        raise UnitscopeError(f"unknown score {unknown[0]!r}", hint=f"choose from {', '.join(SCORES)}")
    if args.format == "parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise UnitscopeError("--format parquet needs pyarrow", hint="pip install pyarrow, or use --format csv") from None
    loaded = load_model(args.model, args.device)
    loaded.require_hooks()
    inputs = load_inputs(args.inputs, loaded, limit=args.limit)
    x = inputs.x.to(args.device)
    if not x.is_floating_point():
        raise UnitscopeError("inputs must be floating point", dtype=str(x.dtype))
    _check_forward(loaded.model, x[:1])
    layers = args.layers
    if not layers:
        from ..core.sites import layer_names

        raise UnitscopeError("--layers is required", hint=f"e.g. {', '.join(layer_names(loaded.model)[:4])} "
                                                          f"(unitscope layers {args.model})")
    target = _target(args.target, inputs)
    results = attribute(loaded.model, x, layers, scores=args.scores, target=target, n_steps=args.n_steps,
                        method=args.method, internal_batch_size=args.internal_batch_size, gap_warning=None, progress=True)
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
    figures = [importance_figure(frame if not args.per_unit else
                                 frame.groupby(["method", "layer", "example", "channel"], as_index=False)["value"].sum(),
                                 layer, os.path.join(args.out, f"importance_{layer.replace('.', '_')}.png"))
               for layer in any_scores.layers]
    summary = {"model": args.model, "inputs": len(x), "layers": any_scores.layers, "scores": list(results),
               "table": table, "figures": figures, "target": None if any_scores.target is None
               else [int(t) for t in any_scores.target[:20]]}
    if "conductance" in results:
        s = results["conductance"]
        summary["max_completeness_gap"] = {layer: float(s.relative_delta(layer).max()) for layer in s.layers}
        print(s.summary(), file=sys.stderr)
    _write_json(os.path.join(args.out, "importance.json"), summary)
    print(f"wrote {table} ({len(frame)} rows) and {len(figures)} figure(s) to {args.out}", file=sys.stderr)
    return _finish(summary)


# -------------------------------------------------------------------------------------------- visualize --
def _units(spec: list[str]) -> list[int]:
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


def _image_shape(loaded, args) -> tuple:
    if args.shape:
        return tuple(args.shape)
    if loaded.image_shape is None:
        raise UnitscopeError(f"the input image shape of {args.model!r} is not known", hint="pass --shape C H W")
    return loaded.image_shape


def _show_images(images: torch.Tensor, titles, path: str, title: str, value_range) -> str:
    from ..report.figures import plt, save_figure

    n = len(images)
    cols = min(n, 8)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 1.75 * rows), squeeze=False)
    lo, hi = value_range
    for ax in axes.flat:
        ax.axis("off")
    for ax, im, t in zip(axes.flat, images, titles):
        arr = ((im.detach().cpu().float() - lo) / (hi - lo)).clamp(0, 1).permute(1, 2, 0).numpy()
        ax.imshow(arr[..., 0] if arr.shape[2] == 1 else arr, cmap="gray" if arr.shape[2] == 1 else None,
                  interpolation="nearest")
        ax.set_title(t, fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


def _visualize(args) -> dict:
    from ..loading import load_model

    maximize = _lazy("unitscope.synthesis.maximize", "activation maximization (visualize)")
    _seed(args)
    loaded = load_model(args.model, args.device)
    loaded.require_hooks()
    shape = _image_shape(loaded, args)
    units = _units(args.units)
    fn = maximize.independent_am if args.iam else maximize.activation_maximization
    r = fn(loaded.model, args.layer, units, shape=shape, param=args.param, steps=args.steps, seed=args.seed,
           value_range=loaded.value_range, progress=True)
    kind = "IAM" if args.iam else "AM"
    os.makedirs(args.out, exist_ok=True)
    own = r.activations.gather(1, r.units.view(-1, 1))[:, 0]
    summary = {"model": args.model, "layer": r.layer, "kind": kind, "units": units,
               "activation": [round(float(v), 4) for v in own]}
    titles = [f"#{u}  a={float(a):.2f}" for u, a in zip(units, own)]
    if args.iam:
        rs = maximize.representative_substitution(r)
        summary["rs"] = [round(float(v), 4) for v in rs]
        titles = [f"{t}\nRS={float(v):.2f}" for t, v in zip(titles, rs)]
    stem = f"{kind.lower()}_{r.layer.replace('.', '_')}"
    summary["figure"] = _show_images(r.images, titles, os.path.join(args.out, f"{stem}.png"),
                                     f"{kind} of {args.model} {r.layer} ({args.param}, {args.steps} steps)",
                                     loaded.value_range)
    torch.save(r.images, os.path.join(args.out, f"{stem}.pt"))
    _write_json(os.path.join(args.out, f"{stem}.json"), summary)
    return _finish(summary)


# ------------------------------------------------------------------------------------------ inverse-set --
def _inverse_set(args) -> dict:
    from ..loading import load_model

    inverse = _lazy("unitscope.synthesis.inverse", "inverse-set sampling")
    generators = _lazy("unitscope.synthesis.generators", "inverse-set sampling")
    a, b = args.range
    if not a <= b:
        raise UnitscopeError("--range A B needs A ≤ B", range=(a, b))
    _seed(args)
    loaded = load_model(args.model, args.device)
    loaded.require_hooks()
    shape = _image_shape(loaded, args)
    generator = generators.FFTImageGenerator(shape, value_range=loaded.value_range)
    encoder = generators.early_block(loaded.model) if args.encoder == "early" else None
    result = inverse.sample_inverse_set(loaded.model, (args.layer, args.unit, a, b), generator, encoder=encoder,
                                        n_samples=args.n, n_seeds=min(args.n, 16), seed=args.seed, progress=True)
    os.makedirs(args.out, exist_ok=True)
    summary = {"model": args.model, "layer": args.layer, "unit": args.unit, "range": [a, b], **result.summary()}
    if result.report:
        summary["report"] = result.report
    if len(result):
        acts = result.activations[:, 0]
        summary["activation_min"], summary["activation_max"] = float(acts.min()), float(acts.max())
        summary["diversity"] = inverse.diversity(result.samples, encoder=encoder)
        torch.save({"samples": result.samples, "codes": result.codes, "activations": result.activations},
                   os.path.join(args.out, "inverse_set.pt"))
        k = min(len(result), 32)
        summary["figure"] = _show_images(result.samples[:k], [f"{float(v):.2f}" for v in acts[:k]],
                                         os.path.join(args.out, "inverse_set.png"),
                                         f"{args.model} {args.layer} #{args.unit}: {len(result)} samples with "
                                         f"activation in [{a}, {b}]", loaded.value_range)
    _write_json(os.path.join(args.out, "inverse_set.json"), summary)
    return _finish(summary)


# --------------------------------------------------------------------------------------- scan, report, demo --
def _scan(args) -> dict:
    scan = _lazy("unitscope.cli.scan", "dataset scans")
    if not hasattr(scan, "scan_main"):
        raise UnitscopeError("unitscope.cli.scan has no scan_main() in this version")
    return scan.scan_main([args.model, args.data, *args.rest])


def _atlas(args) -> dict:
    from .atlas import atlas_main

    return atlas_main([args.model, args.data, *args.rest])


def _report(args) -> dict:
    from ..report.html import build_report

    path = build_report(args.results_dir, out=args.output)
    print(f"report: {path}", file=sys.stderr)
    return _finish({"report": str(path)})


def _demo(args) -> dict:
    from ..demo import run_all

    return run_all(quick=args.quick, out=args.out, seed=args.seed, only=args.only, timeout=args.timeout)


# ------------------------------------------------------------------------------------------------ parser --
def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="unitscope", description=__doc__.split("\n\n")[0] + " Which hidden units matter, and "
                     "what they respond to.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def common(p, out):
        p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
        p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
        p.add_argument("--out", default=out, help=f"output folder (default {out})")

    p = sub.add_parser("demo", help="run every study on the bundled models and data, then write one HTML report")
    p.add_argument("--quick", action="store_true", help="fewer inputs and path points (≤ 3 minutes once set up)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="unitscope-out", help="results folder (default unitscope-out)")
    p.add_argument("--only", nargs="+", metavar="STUDY", help="run only these studies")
    p.add_argument("--timeout", type=float, default=None, help="seconds allowed per study (default 300 with --quick, else 1200)")
    p.set_defaults(func=_demo)

    p = sub.add_parser("layers", help="a model's addressable layers with their output shapes")
    p.add_argument("model", help="zoo name, torch.export/TorchScript file or package.module:factory")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=_layers)

    p = sub.add_parser("importance", help="importance scores of every unit of the named layers (CSV/Parquet + figures)")
    p.add_argument("model")
    p.add_argument("inputs", nargs="+", help="zoo data name, .pt/.npy tensor, image files/folders or a .txt")
    p.add_argument("--layers", nargs="+", required=True, help="dotted layer names (see `unitscope layers MODEL`)")
    p.add_argument("--scores", nargs="+", default=["conductance"],
                   help="conductance, internal_influence, grad_x_activation, activation (several allowed)")
    p.add_argument("--target", default=None, help="'top' (default: top predicted class), 'label' or a class index")
    p.add_argument("--n-steps", type=int, default=50, help="path points (default 50)")
    p.add_argument("--method", default="gausslegendre", help="integration rule or 'adaptive' (default gausslegendre)")
    p.add_argument("--internal-batch-size", type=int, default=None,
                   help="examples × path points per pass (memory bound)")
    p.add_argument("--limit", type=int, default=None, help="use only the first N inputs")
    p.add_argument("--per-unit", action="store_true", help="one row per unit instead of per channel")
    p.add_argument("--format", choices=["csv", "parquet"], default="csv")
    common(p, "unitscope-out/importance")
    p.set_defaults(func=_importance)

    p = sub.add_parser("visualize", help="activation maximization (AM) or independent AM (IAM) images of units")
    p.add_argument("model")
    p.add_argument("--layer", required=True)
    p.add_argument("--units", nargs="+", required=True, help="channel indices, e.g. 0 1 2 or 0-7")
    p.add_argument("--iam", action="store_true", help="independent AM (and Representative Substitution)")
    p.add_argument("--param", choices=["pixel", "fft"], default="pixel")
    p.add_argument("--steps", type=int, default=128)
    p.add_argument("--shape", type=int, nargs=3, metavar=("C", "H", "W"), help="input image shape if not known")
    common(p, "unitscope-out/visualize")
    p.set_defaults(func=_visualize)

    p = sub.add_parser("inverse-set", help="diverse inputs whose unit activation lies in [A, B]")
    p.add_argument("model")
    p.add_argument("--layer", required=True)
    p.add_argument("--unit", type=int, required=True)
    p.add_argument("--range", type=float, nargs=2, required=True, metavar=("A", "B"))
    p.add_argument("--n", type=int, default=32, help="samples wanted (default 32)")
    p.add_argument("--encoder", choices=["pixels", "early"], default="pixels",
                   help="distances between samples in pixel space or on the model's early block")
    p.add_argument("--shape", type=int, nargs=3, metavar=("C", "H", "W"), help="input image shape if not known")
    common(p, "unitscope-out/inverse-set")
    p.set_defaults(func=_inverse_set)

    p = sub.add_parser("scan", help="scan a dataset (options: unitscope scan MODEL DATA --help)")
    p.add_argument("model")
    p.add_argument("data")
    p.add_argument("rest", nargs=argparse.REMAINDER, help="passed on to the scan")
    p.set_defaults(func=_scan)

    p = sub.add_parser("atlas", help="the unit atlas (options: unitscope atlas MODEL DATA --help)")
    p.add_argument("model")
    p.add_argument("data")
    p.add_argument("rest", nargs=argparse.REMAINDER, help="passed on to the atlas")
    p.set_defaults(func=_atlas)

    p = sub.add_parser("report", help="one self-contained HTML file from a results folder")
    p.add_argument("results_dir")
    p.add_argument("--output", default=None, help="HTML file (default RESULTS_DIR/report.html)")
    p.set_defaults(func=_report)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        return int(e.code or 0)
    try:
        args.func(args)
    except UnitscopeError as e:
        print(f"unitscope {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"unitscope {args.command}: interrupted", file=sys.stderr)
        return 130
    except (FileNotFoundError, PermissionError, IsADirectoryError) as e:
        print(f"unitscope {args.command}: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
