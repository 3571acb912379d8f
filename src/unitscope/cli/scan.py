"""``unitscope scan MODEL DATA --layers … --out DIR`` (also ``python -m unitscope.cli.scan …`` and ``torchrun … -m
unitscope.cli.scan …``: under ``torchrun`` every process takes its shard and rank 0 writes): one streaming pass over
a data set — per-unit statistics, selectivity and top examples; tables, image grids (digits) or top sentences
(reviews) and ``scan.json``.

MODEL and DATA are any that :mod:`unitscope.loading` knows (every zoo model and data set, ``hf:FOLDER``,
``torch.export`` files, factories; tensors, images, sentences); the digits and the reviews have splits (``--split``),
other data is scanned as given. Sentences are encoded batch by batch (each batch padded to its own length); the
top sentences of every unit go to ``top_sentences.md``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn as nn

from ..core.errors import UnitscopeError
from ..core.state import torch_threads
from ..data.scan import ScanResult
from ..loading import SentenceBatches, TokenBatches
from .options import Parser, add, add_common, positive_int, resolve_target, run_command

__all__ = ["scan_main", "default_layers", "SentenceBatches", "TokenBatches", "add_arguments", "run"]

NAME = "scan"
HELP = "one streaming pass over a data set: statistics, selectivity and top examples per unit"


def add_arguments(p) -> None:
    add(p, "model", "data")
    add(
        p,
        "layers",
        "scores",
        "target",
        "method",
        "n_steps",
        "batch_size",
        "internal_batch_size",
        "labels",
        "image_size",
        "mean",
        "std",
        "split",
        scores=["activation", "conductance"],
        n_steps=20,
    )
    p.add_argument("--repeat", type=positive_int, default=1, help="repeat the data set (for timing at scale)")
    p.add_argument("--top-k", type=positive_int, default=9, help="top examples kept per unit (default %(default)s)")
    p.add_argument("--grid-units", type=positive_int, default=12, help="units per image grid: the most selective")
    p.add_argument("--checkpoint", default=None, help="a file: saved every --checkpoint-every batches, resumed")
    p.add_argument("--checkpoint-every", type=positive_int, default=20)
    p.add_argument("--backend", default=None, help="torch.distributed backend under torchrun (gloo / nccl)")
    p.add_argument(
        "--timeout",
        type=float,
        default=300.0,
        help="seconds a rank waits for the others under torchrun before it gives up",
    )
    p.add_argument("--threads", type=positive_int, default=None, help="torch threads per process")
    add(p, "quick")
    add_common(p, out="unitscope-out/scan")


def _load(args):
    """``(loaded, trained)``: the model to scan and, for the sentiment CNN, the trained object that encodes text."""
    from ..loading import load_model

    loaded = load_model(args.model, args.device)
    loaded.require_hooks()
    return loaded, loaded.extra.get("trained")


def _load_data(name, split: str, repeat: int, loaded=None, image=None):
    """The digits (a ``TensorDataset`` of images and labels) or the reviews (``(sentences, labels)``) by split;
    any other DATA (a name or a :class:`unitscope.loading.DataPlan`) through :func:`unitscope.loading.load_inputs`
    (a ``TensorDataset``, with labels if it has them)."""
    from torch.utils.data import TensorDataset

    from ..loading import DataPlan
    from ..zoo import digits_data

    if split not in ("all", "train", "test"):
        raise UnitscopeError("split must be all, train or test", split=split)
    if isinstance(name, DataPlan) and name.kind == "zoo":
        name = name.name
    if isinstance(name, DataPlan) or name not in ("digits", "reviews"):
        from ..loading import load_inputs

        inputs = load_inputs(name, loaded, image=image)
        x = inputs.x.repeat(repeat, *([1] * (inputs.x.dim() - 1)))
        if inputs.labels is None:
            return TensorDataset(x)
        return TensorDataset(x, inputs.labels.repeat(repeat))
    if name == "reviews":
        from ..zoo.sentiment import movie_reviews

        reviews = movie_reviews()
        part = {"all": reviews.all(), "train": reviews.train, "test": reviews.test}[split]
        return [s for _ in range(repeat) for s in part.sentences], part.labels.repeat(repeat)
    tr, te = digits_data()
    parts = {"all": [tr, te], "train": [tr], "test": [te]}[split]
    x = torch.cat([p.x for p in parts]).repeat(repeat, 1, 1, 1)
    y = torch.cat([p.y for p in parts]).repeat(repeat)
    return TensorDataset(x, y)


def default_layers(model: nn.Module) -> list[str]:
    """Every leaf layer that produces a per-example tensor worth scanning (all but flatten/dropout)."""
    skip = (nn.Flatten, nn.Dropout, nn.Identity)
    return [n for n, m in model.named_modules() if n and not list(m.children()) and not isinstance(m, skip)]


def _init_distributed(backend: str | None, timeout: float):
    """Under ``torchrun`` (``WORLD_SIZE`` > 1): join the process group with a collective timeout of ``timeout``
    seconds (gloo and NCCL), so that a rank that dies or hangs ends every rank instead of blocking them.
    ``(group or None, started_here)``."""
    import datetime

    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None, False
    if dist.is_initialized():
        return dist.group.WORLD, False
    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout))
    return dist.group.WORLD, True


@contextmanager
def distributed_run(args):
    """The setting of a scan-like command: ``args.threads`` torch threads, the global RNG forked and seeded with
    ``args.seed``, and under ``torchrun`` the process group joined (collective timeout ``args.timeout``) and left
    again. Yields the group (``None`` in one process); everything is restored on the way out, also on error."""
    with torch_threads(args.threads), torch.random.fork_rng(devices=[]):
        torch.manual_seed(args.seed)
        group, started = _init_distributed(args.backend, args.timeout)
        try:
            yield group
        finally:
            if started:
                import torch.distributed as dist

                dist.destroy_process_group()


def build_parser(prog: str = "python -m unitscope.cli.scan") -> Parser:
    p = Parser(prog=prog, description=HELP)
    add_arguments(p)
    return p


def scan_main(argv=None) -> dict:
    """``python -m unitscope.cli.scan MODEL DATA --layers … --out DIR``; under ``torchrun`` every process takes its
    shard and rank 0 writes. Prints a short summary for a person; the whole one, as JSON, goes to ``OUT/scan.json``."""
    return run(build_parser().parse_args(argv))


def run(args) -> dict:
    """The scan of ``args`` (parsed by a parser that :func:`add_arguments` built)."""
    from ..core.files import check_writable
    from ..data.distributed import Ranks
    from .checks import preflight, require_layers

    with distributed_run(args) as group:
        ranks = Ranks.of(group)
        rank = ranks.rank
        if rank == 0:
            check_writable(args.out)  # before any work
        spec, plan = preflight(args)  # names, paths, formats, ranges: before anything loads or trains
        if spec.kind == "hf":
            require_layers(args, spec)
        summary = _run(args, spec, plan, group, ranks)
    if rank == 0:
        print(describe(summary, args.out))
    return summary


def describe(summary: dict, out) -> str:
    """What a person reads after a scan: what was scanned, per layer and score the mean and the most selective unit,
    and where the files are (the whole summary is in ``OUT/scan.json``)."""
    world, rate = summary["world_size"], summary["examples_per_second"]
    lines = [
        f"scanned {summary['examples']:,} examples of {summary['data']} with {summary['model']} "
        f"({world} process{'es' if world > 1 else ''}, {summary['seconds']:.1f} s"
        + (f", {rate:,.0f} examples/s" if rate else "")
        + ")"
    ]
    if summary["resumed_from_batch"]:
        lines.append(f"resumed from batch {summary['resumed_from_batch']} of a checkpoint")
    for row in summary["per_layer"]:
        if row.get("its_class") is not None:
            best = (
                f"most selective unit {row['most_selective_unit']} (prefers class {row['its_class']}); mean "
                f"selectivity {row['mean_selectivity']:.2f} over the {row['selectivity_defined_units']} units "
                f"where it is defined"
            )
        else:
            best = f"highest mean: unit {row['highest_mean_unit']} (no labels, so no selectivity)"
        lines.append(f"  {row['layer']} · {row['score']}: {row['units']} units, mean {row['mean']:.3g}; {best}")
    lines.append(f"files in {out}: {', '.join(summary['files'])} (the whole summary: {os.path.join(out, 'scan.json')})")
    return "\n".join(lines)


def _first(batch, device):
    """The first example of a batch (a tensor, ``(inputs, labels)`` or a tokenizer's dict), on ``device``."""
    from ..data.batches import split_batch

    x, _ = split_batch(batch)
    if isinstance(x, dict):
        return {k: v[:1].to(device) for k, v in x.items()}
    return x[:1].to(device)


def _sentences_of(plan, split: str, repeat: int):
    """``(sentences, labels or None)`` of text DATA: the reviews' split or the plan's ``.txt`` sentences,
    repeated ``repeat`` times."""
    if plan.kind == "zoo":
        from ..zoo.sentiment import movie_reviews

        reviews = movie_reviews()
        part = {"all": reviews.all(), "train": reviews.train, "test": reviews.test}[split]
        sentences, labels = list(part.sentences), part.labels
    else:
        sentences, labels = list(plan.sentences), plan.labels
    return [s for _ in range(repeat) for s in sentences], None if labels is None else labels.repeat(repeat)


def _run(args, spec, plan, group, ranks) -> dict:
    """The scan of any MODEL and DATA: images and tensors through a ``DataLoader``, sentences encoded batch by
    batch (the sentiment CNN's embeddings, or a tokenizer's ids and mask with paths from the token embedding, the
    padding left out of every unit's value); target: the top output (a classifier's class, a causal LM's next
    token) unless ``--target`` says otherwise."""
    from torch.utils.data import DataLoader

    from ..attribution.config import PathConfig
    from ..data.scan import scan
    from ..data.stream import StreamConfig
    from .checks import after_load, image_settings

    loaded, trained = _load(args)
    model = loaded.model
    if group is not None and torch.distributed.get_backend(group) == "nccl":
        model = model.to(torch.device("cuda", torch.cuda.current_device()))
    device = next(iter(model.parameters()), torch.empty(0, device=args.device)).device
    split = "test" if args.quick else args.split
    name = plan.name
    tokenizer = loaded.extra.get("tokenizer")
    sentences = data = None
    if plan.modality == "text":
        sentences, labels = _sentences_of(plan, split, args.repeat)
        if tokenizer is not None:
            loader = TokenBatches(tokenizer, sentences, args.batch_size, labels)
        elif trained is not None:
            loader = SentenceBatches(trained, sentences, labels, args.batch_size)
            data = (sentences, labels)
        else:
            raise UnitscopeError(f"{args.model} cannot encode sentences in batches for a scan", model=args.model)
        first, labelled = loader[0], labels is not None
    else:
        data = _load_data(plan, split, args.repeat, loaded, image_settings(args))
        loader = DataLoader(data, batch_size=args.batch_size)
        first, labelled = data[0:1], len(data[0]) > 1
    text = trained is not None and sentences is not None
    layers = args.layers or (["filters", "relu_fc"] if text else default_layers(model))
    if args.quick and not args.layers and not text:
        layers = [n for n in layers if n.endswith(("relu2", "classifier.relu"))] or layers[:2]
    layers = after_load(loaded, layers, args.target, _first(first, device))  # before the first pass
    n_steps = 8 if args.quick else args.n_steps
    target = resolve_target(args.target, "label" if labelled else None)
    t0 = time.perf_counter()
    result = scan(
        model,
        loader,
        layers,
        scores=args.scores,
        target=target,
        by="class" if labelled else None,
        top_k=args.top_k,
        embedding=loaded.embedding,
        path=PathConfig(n_steps=n_steps, method=args.method, internal_batch_size=args.internal_batch_size),
        stream=StreamConfig(checkpoint=args.checkpoint, checkpoint_every=args.checkpoint_every, group=group),
    )
    wall = time.perf_counter() - t0
    summary, failed = {}, None
    if ranks.rank == 0:
        try:
            zoo_reviews = text and plan.kind == "zoo"
            summary = _write_outputs(result, data, args, name, ranks.world, wall, trained if zoo_reviews else None)
            if sentences is not None and not zoo_reviews:
                out = Path(args.out)
                (out / "top_sentences.md").write_text(_top_sentences_md(result, sentences, args.grid_units))
                summary["files"].insert(-1, "top_sentences.md")
                (out / "scan.json").write_text(json.dumps(summary, indent=2, default=float))
        except Exception as e:  # noqa: BLE001 — re-raised here, reported to the other ranks
            failed = e
    ranks.step(failed, False)  # the others wait for rank 0's files, or stop with its error
    return summary


def _top_sentences_md(result: ScanResult, sentences, n_units: int) -> str:
    """Markdown: per layer and score, the ``n_units`` units with the highest mean and each one's top sentences."""
    lines = []
    for m in result.scores:
        for layer in result.layers:
            mean = result.mean(layer, score=m)
            lines += [f"# {layer} · {m}: the {min(n_units, mean.numel())} units with the highest mean", ""]
            top = result.top(layer, score=m)
            for u in torch.argsort(mean, descending=True)[:n_units].tolist():
                lines.append(f"## unit {u} (mean {float(mean[u]):.3g})")
                lines += [
                    f"{k}. ({v:.3g}) {sentences[i]}"
                    for k, (i, v) in enumerate(zip(top.indices[u].tolist(), top.values[u].tolist()), start=1)
                    if i >= 0
                ]
                lines.append("")
    return "\n".join(lines)


def _write_outputs(result: ScanResult, data, args, name, world: int, wall: float, trained=None) -> dict:
    from ..report.figures import save_figure
    from ..report.scan_figures import top_grid, top_sentences

    data_name, classes = name, result.class_counts is not None

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    files = [result.save(out / "scan.pt")]
    frame = result.to_frame()
    frame.to_csv(out / "units.csv", index=False)
    files.append(str(out / "units.csv"))
    per_layer = []
    for m in result.scores:
        for name in result.layers:
            mean = result.mean(name, score=m)
            sel = result.selectivity(name, score=m, warn=False) if classes else None  # NaN where undefined
            best = int(torch.nan_to_num(sel.index, nan=-1.0).argmax()) if classes else int(mean.argmax())
            per_layer.append(
                {
                    "score": m,
                    "layer": name,
                    "units": int(mean.numel()),
                    "mean": float(mean.mean()),
                    "mean_selectivity": float(sel.index.nanmean()) if classes else None,
                    "selectivity_defined_units": int(sel.defined.sum()) if classes else None,
                    "most_selective_unit" if classes else "highest_mean_unit": best,
                    "its_class": int(sel.preferred[best]) if classes else None,
                    "its_top_examples": [int(i) for i in result.top(name, score=m, unit=best).indices],
                }
            )
    import pandas as pd

    table = pd.DataFrame(per_layer)
    table.to_csv(out / "layers.csv", index=False)
    (out / "layers.md").write_text(table.drop(columns=["its_top_examples"]).to_markdown(index=False) + "\n")
    files += [str(out / "layers.csv"), str(out / "layers.md")]
    for m in result.scores:
        for name in result.layers:
            if not classes:
                continue  # grids show each example's label: unlabelled data gets the tables only
            sel = result.selectivity(name, score="activation" if "activation" in result.scores else m, warn=False)
            units = torch.argsort(torch.nan_to_num(sel.index, nan=-1.0), descending=True)[: args.grid_units].tolist()
            if trained is not None:
                if name == "filters":
                    path = out / f"top_sentences_{m}_{name}.md"
                    path.write_text(top_sentences(trained, data[0], data[1], result, m, units, layer=name))
                    files.append(str(path))
                continue
            fig = top_grid(
                data,
                result,
                name,
                m,
                units,
                title=f"top {args.top_k} digits per unit by {m} — {name} (most selective units)",
            )
            files.append(save_figure(fig, out / f"top_{m}_{name}.png"))
    summary = {
        "study": "scan",
        "model": args.model,
        "data": data_name,
        "examples": result.count,
        "layers": list(result.layers),
        "scores": result.scores,
        "world_size": world,
        "seconds": wall,
        "examples_per_second": result.count / wall if wall > 0 else None,
        "resumed_from_batch": result.settings.get("resumed_from_batch", 0),
        "per_layer": per_layer,
        "files": [os.path.relpath(f, out) for f in files] + ["scan.json"],
    }
    (out / "scan.json").write_text(json.dumps(summary, indent=2, default=float))
    return summary


if __name__ == "__main__":  # pragma: no cover
    _args = build_parser().parse_args(sys.argv[1:])
    sys.exit(run_command(run, _args, "python -m unitscope.cli.scan"))
