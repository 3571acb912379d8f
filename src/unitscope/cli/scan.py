"""``python -m unitscope.cli.scan MODEL DATA --layers … --out DIR``: the dataset scan from the command line (under
``torchrun`` every process takes its shard and rank 0 writes)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn

from ..attribution.scores import SCORES
from ..core.errors import UnitscopeError
from ..core.state import torch_threads
from ..data.scan import ScanResult, scan
from ..report.scan_figures import top_grid, top_sentences

__all__ = ["scan_main", "default_layers", "SentenceBatches"]

MODELS = ("digits-cnn", "digits-vgg", "digits-mlp", "sentiment-cnn")
DATASETS = ("digits", "movie-reviews")


def _load_model(name: str):
    from ..zoo import digits_cnn, digits_mlp, digits_vgg

    makers = {"digits-cnn": digits_cnn, "digits-vgg": digits_vgg, "digits-mlp": digits_mlp}
    if name == "sentiment-cnn":
        from ..zoo.sentiment import sentiment_cnn

        return sentiment_cnn()
    if name not in makers:
        import difflib
        raise UnitscopeError(f"unknown model {name!r}", model=name,
                             hint="choose one of " + ", ".join(difflib.get_close_matches(name, MODELS, 3, 0.0)))
    return makers[name]().model


class SentenceBatches:
    """Movie-review sentences as batches of ``(embeddings [B, T, dim], labels)``, encoded lazily (each batch
    padded to its own longest sentence); example indices are positions in ``sentences``."""

    def __init__(self, trained, sentences, labels, batch_size: int = 256):
        self.trained, self.sentences, self.labels, self.batch_size = trained, list(sentences), labels, batch_size

    def __len__(self):
        return (len(self.sentences) + self.batch_size - 1) // self.batch_size

    def __getitem__(self, b: int):
        """Batch ``b`` only, encoded now: under several ranks each encodes only its own batches."""
        if not 0 <= b < len(self):
            raise IndexError(b)
        i = b * self.batch_size
        _, emb = self.trained.encode(self.sentences[i:i + self.batch_size])
        return emb, self.labels[i:i + self.batch_size]

    def __iter__(self):
        for b in range(len(self)):
            yield self[b]


def _load_data(name: str, split: str, repeat: int):
    from torch.utils.data import TensorDataset

    from ..zoo import digits_data

    if name not in DATASETS:
        raise UnitscopeError(f"unknown data set {name!r}", data=name, hint="choose one of " + ", ".join(DATASETS))
    if split not in ("all", "train", "test"):
        raise UnitscopeError("split must be all, train or test", split=split)
    if name == "movie-reviews":
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


def scan_main(argv=None) -> dict:
    """``python -m unitscope.cli.scan MODEL DATA --layers … --out DIR``; under ``torchrun`` every process takes its
    shard and rank 0 writes. Prints the summary as one JSON object on its last line."""
    p = argparse.ArgumentParser(prog="python -m unitscope.cli.scan", description="One streaming pass over a data set: statistics and top examples per unit.")
    p.add_argument("model", help=f"zoo model: {', '.join(MODELS)}")
    p.add_argument("data", help=f"data set: {', '.join(DATASETS)}")
    p.add_argument("--layers", nargs="+", default=None, help="layer names (default: every leaf layer)")
    p.add_argument("--scores", nargs="+", default=["activation", "conductance"], choices=list(SCORES))
    p.add_argument("--target", default="predicted", help="predicted (top class), label, or a class number")
    p.add_argument("--split", default="all", choices=["all", "train", "test"])
    p.add_argument("--repeat", type=int, default=1, help="repeat the data set (for timing at scale)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--top-k", type=int, default=9)
    p.add_argument("--n-steps", type=int, default=20)
    p.add_argument("--units", type=int, default=12, help="units per image grid (the most selective)")
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--checkpoint-every", type=int, default=20)
    p.add_argument("--backend", default=None, help="torch.distributed backend under torchrun (gloo / nccl)")
    p.add_argument("--timeout", type=float, default=300.0,
                   help="seconds a rank waits for the others under torchrun before it gives up")
    p.add_argument("--threads", type=int, default=None, help="torch threads per process")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="test split, two layers, 8 path steps")
    p.add_argument("--out", default="scan-out")
    args = p.parse_args(argv)
    from ..core.files import check_writable
    from ..data.distributed import Ranks

    with torch_threads(args.threads), torch.random.fork_rng(devices=[]):
        torch.manual_seed(args.seed)
        group, started_group = _init_distributed(args.backend, args.timeout)
        try:
            ranks = Ranks.of(group)
            rank, world = ranks.rank, ranks.world
            if rank == 0:
                check_writable(args.out)  # before any work
            summary = _run(args, group, ranks)
        finally:
            if started_group:
                import torch.distributed as tdist
                tdist.destroy_process_group()
    if rank == 0:
        print(json.dumps(summary, default=float))
    return summary


def _run(args, group, ranks) -> dict:
    model = trained = _load_model(args.model)
    text = args.data == "movie-reviews"
    if text != (args.model == "sentiment-cnn"):
        raise UnitscopeError("sentiment-cnn goes with movie-reviews, the digits models with digits",
                             model=args.model, data=args.data)
    if text:
        model = trained.model
    if group is not None and torch.distributed.get_backend(group) == "nccl":
        model = model.to(torch.device("cuda", torch.cuda.current_device()))
    data = _load_data(args.data, "test" if args.quick else args.split, args.repeat)
    layers = args.layers or (["filters", "relu_fc"] if text else default_layers(model))
    if args.quick and not args.layers and not text:
        layers = [n for n in layers if n.endswith(("relu2", "classifier.relu"))] or layers[:2]
    n_steps = 8 if args.quick else args.n_steps
    target = {"predicted": None, "label": "label"}.get(args.target)
    if target is None and args.target != "predicted":
        target = int(args.target)
    from torch.utils.data import DataLoader

    t0 = time.perf_counter()
    loader = (SentenceBatches(trained, data[0], data[1], args.batch_size) if text
              else DataLoader(data, batch_size=args.batch_size))
    result = scan(model, loader, layers, scores=args.scores, target=target,
                  by="class", top_k=args.top_k, n_steps=n_steps, checkpoint=args.checkpoint,
                  checkpoint_every=args.checkpoint_every, group=group)
    wall = time.perf_counter() - t0
    summary, failed = {}, None
    if ranks.rank == 0:
        try:
            summary = _write_outputs(result, data, args, layers, ranks.world, wall, trained if text else None)
        except Exception as e:  # noqa: BLE001 — re-raised here, reported to the other ranks
            failed = e
    ranks.step(failed, False)  # the others wait for rank 0's files, or stop with its error
    return summary


def _write_outputs(result: ScanResult, data, args, layers, world: int, wall: float, trained=None) -> dict:
    from ..report.figures import save_figure

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    files = [result.save(out / "scan.pt")]
    frame = result.to_frame()
    frame.to_csv(out / "units.csv", index=False)
    files.append(str(out / "units.csv"))
    per_layer = []
    for m in result.scores:
        for name in result.layers:
            sel = result.selectivity(name, score=m)
            best = int(sel.index.argmax())
            per_layer.append({"method": m, "layer": name, "units": int(sel.index.numel()),
                              "mean": float(result.mean(name, score=m).mean()),
                              "mean_selectivity": float(sel.index.mean()),
                              "most_selective_unit": best, "its_class": int(sel.preferred[best]),
                              "its_top_examples": [int(i) for i in result.top(name, score=m, unit=best).indices]})
    import pandas as pd

    table = pd.DataFrame(per_layer)
    table.to_csv(out / "layers.csv", index=False)
    (out / "layers.md").write_text(table.drop(columns=["its_top_examples"]).to_markdown(index=False) + "\n")
    files += [str(out / "layers.csv"), str(out / "layers.md")]
    for m in result.scores:
        for name in result.layers:
            sel = result.selectivity(name, score="activation" if "activation" in result.scores else m)
            units = torch.argsort(sel.index, descending=True)[:args.units].tolist()
            if trained is not None:
                if name == "filters":
                    path = out / f"top_sentences_{m}_{name}.md"
                    path.write_text(top_sentences(trained, data[0], data[1], result, m, units, layer=name))
                    files.append(str(path))
                continue
            fig = top_grid(data, result, name, m, units,
                           title=f"top {args.top_k} digits per unit by {m} — {name} (most selective units)")
            files.append(save_figure(fig, out / f"top_{m}_{name}.png"))
    summary = {"study": "scan", "model": args.model, "data": args.data, "examples": result.count,
               "layers": list(result.layers), "scores": result.scores, "world_size": world,
               "seconds": wall, "examples_per_second": result.count / wall if wall > 0 else None,
               "resumed_from_batch": result.settings.get("resumed_from_batch", 0),
               "per_layer": per_layer, "files": [os.path.relpath(f, out) for f in files] + ["scan.json"]}
    (out / "scan.json").write_text(json.dumps(summary, indent=2, default=float))
    return summary


if __name__ == "__main__":  # pragma: no cover
    scan_main(sys.argv[1:])
