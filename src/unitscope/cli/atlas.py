"""``unitscope atlas MODEL DATA --layers … --out DIR``: the unit atlas from the command line — ``DIR/atlas.json``,
``DIR/atlas_tensors.pt``, ``DIR/index.html`` (+ ``img/``) and a results-folder ``manifest.json``. Under ``torchrun``
every process takes its share of the scan and of the units; rank 0 writes.

MODEL/DATA: ``digits-cnn``/``digits-vgg``/``digits-mlp`` with ``digits`` (the 1,797 digits; inverse sets through
the digits VAE), ``sentiment-cnn`` with ``reviews`` (the sentences; exemplars with their n-grams
highlighted), ``minilm`` with ``reviews`` (all-MiniLM-L6-v2 with its sentiment head, from token ids: paths start at
the word embeddings from an all-[PAD] sentence; an MLP layer's 1,536 neurons over the tokens the attention mask
keeps; exemplar sentences with every token shaded by its conductance through the neuron; ``--top-units K`` keeps the
K most important neurons), ``efficientnet-lite0`` with ``photos`` (the bundled photos).
"""

from __future__ import annotations

import json
import sys
import time

import torch

from ..core.errors import UnitscopeError
from ..core.state import restores_process_state

from .options import Parser, add, add_common, resolve_target, run_command

__all__ = ["atlas_main", "load_atlas_inputs", "add_arguments", "run"]

NAME = "atlas"
HELP = "the unit atlas: for every unit, whether it matters and what it responds to (JSON + a browsable page)"

MODELS = ("digits-cnn", "digits-vgg", "digits-mlp", "sentiment-cnn", "minilm", "efficientnet-lite0")
MINILM_LAYER = "bert.encoder.layer.3.intermediate.intermediate_act_fn"   # the 4th of 6 MLP layers


class TokenItems(torch.utils.data.Dataset):
    """Tokenized sentences as a tokenizer's items: ``{"input_ids", "attention_mask", "labels"}`` per sentence."""

    def __init__(self, ids: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor):
        self.ids, self.mask, self.labels = ids, mask, labels

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "attention_mask": self.mask[i], "labels": self.labels[i]}


def _minilm_on_ids():
    """MiniLM + its sentiment head and :class:`unitscope.zoo.minilm.OnIds` (the same network from token ids:
    ``forward(input_ids, attention_mask)`` → logits ``[N, 2]``, sub-modules named ``bert.encoder.layer.3…``)."""
    from ..zoo.minilm import minilm_sentiment

    lm = minilm_sentiment(progress=False)
    return lm, lm.on_ids


def load_atlas_inputs(model_name: str, data_name: str, *, split: str = "all", limit: int | None = None) -> dict:
    """``{"model", "data", "generator", "tokens", "value_range", "default_layers"}`` for a zoo model and data set."""
    from torch.utils.data import TensorDataset

    pairs = {"digits": ("digits-cnn", "digits-vgg", "digits-mlp"), "reviews": ("sentiment-cnn", "minilm"),
             "photos": ("efficientnet-lite0",)}
    if data_name not in pairs:
        raise UnitscopeError(f"unknown data set {data_name!r}", data=data_name, hint="choose one of " + ", ".join(pairs))
    if model_name not in pairs[data_name]:
        raise UnitscopeError(f"{model_name!r} does not go with {data_name!r}", model=model_name, data=data_name,
                             hint=f"{data_name} goes with {', '.join(pairs[data_name])}")
    if data_name == "photos":
        from ..zoo import efficientnet_lite0, photos

        net = efficientnet_lite0()
        x = torch.stack([net.preprocess(p) for p in photos().values()])[:limit]
        return {"model": net.model, "data": TensorDataset(x), "generator": None, "tokens": None,
                "value_range": (-1.0, 1.0), "default_layers": ["blocks.1"]}
    if model_name == "minilm":
        from ..zoo.minilm import EMBEDDING
        from ..zoo.sentiment import movie_reviews

        lm, model = _minilm_on_ids()
        reviews = movie_reviews()
        part = {"all": reviews.all(), "train": reviews.train, "test": reviews.test}[split]
        sentences, labels = part.sentences[:limit], part.labels[:limit]
        tok = lm.tokenizer(list(sentences), padding=True, truncation=True, max_length=128, return_tensors="pt")
        ids, mask = tok["input_ids"], tok["attention_mask"]
        pad = lm.tokenizer.pad_token_id
        tokens = [["" if int(i) == pad else t for i, t in zip(row, lm.tokenizer.convert_ids_to_tokens(row.tolist()))]
                  for row in ids]
        return {"model": model, "data": TokenItems(ids, mask, labels.long()), "generator": None, "tokens": tokens,
                "value_range": (0.0, 1.0), "default_layers": [MINILM_LAYER],
                "embedding": EMBEDDING, "baselines": pad, "internal_batch_size": 64}
    if data_name == "reviews":
        from ..zoo.sentiment import MIN_PAD, movie_reviews, sentiment_cnn

        trained = sentiment_cnn()
        reviews = movie_reviews()
        part = {"all": reviews.all(), "train": reviews.train, "test": reviews.test}[split]
        sentences, labels = part.sentences[:limit], part.labels[:limit]
        _, emb = trained.encode(sentences)
        tokens = [[""] * MIN_PAD + trained.tokens(s) for s in sentences]
        tokens = [t + [""] * (emb.shape[1] - len(t)) for t in tokens]
        return {"model": trained.model, "data": TensorDataset(emb, labels), "generator": None, "tokens": tokens,
                "value_range": (0.0, 1.0), "default_layers": ["filters"]}
    from ..cli.scan import _load_model
    from ..zoo import digits_data
    from ..zoo.digits_vae import digits_generator

    model = _load_model(model_name)
    tr, te = digits_data()
    parts = {"all": [tr, te], "train": [tr], "test": [te]}[split]
    x, y = torch.cat([p.x for p in parts])[:limit], torch.cat([p.y for p in parts])[:limit]
    layers = [n for n, m in model.named_modules() if isinstance(m, torch.nn.ReLU)]
    return {"model": model, "data": TensorDataset(x, y), "generator": digits_generator(), "tokens": None,
            "value_range": (0.0, 1.0), "default_layers": layers}


def add_arguments(p) -> None:
    add(p, "model")
    p.add_argument("data", metavar="DATA", help="the zoo data that goes with MODEL: digits (digits-*), reviews "
                                                "(sentiment-cnn, minilm) or photos (efficientnet-lite0)")
    add(p, "layers", "target", "n_steps", "limit", n_steps=20)
    p.add_argument("--split", default="all", choices=["all", "train", "test"],
                   help="which part of the digits / reviews (default %(default)s)")
    p.add_argument("--top-k", type=int, default=9, help="exemplars per unit, by activation and by conductance")
    p.add_argument("--share-k", type=int, default=5, help="the top-k of the importance share")
    p.add_argument("--iam-steps", type=int, default=128)
    p.add_argument("--inverse-samples", type=int, default=4, help="inverse-set samples per band")
    p.add_argument("--inverse-steps", type=int, default=100)
    p.add_argument("--unit-batch", type=int, default=64, help="units per batched call")
    p.add_argument("--top-units", type=int, default=None, metavar="K",
                   help="cards for the K most important units of each layer only (by mean |conductance|)")
    p.add_argument("--no-synthetic", action="store_true", help="no IAM and no inverse sets")
    p.add_argument("--checkpoint", default=None, help="scan checkpoint file (resumed when it exists)")
    p.add_argument("--backend", default=None, help="torch.distributed backend under torchrun (gloo / nccl)")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds a rank waits for the others")
    p.add_argument("--threads", type=int, default=None, help="torch threads per process")
    add(p, "quick")
    p.add_argument("--order", type=float, default=None, help="the manifest entry's place in the report")
    add_common(p, out="unitscope-out/atlas")


def build_parser() -> Parser:
    p = Parser(prog="unitscope atlas", description=HELP)
    add_arguments(p)
    return p


def quick_settings(args) -> dict:
    """The settings of a run (``--quick`` shrinks them)."""
    kw = dict(top_k=args.top_k, share_k=args.share_k, n_steps=args.n_steps, iam_steps=args.iam_steps,
              inverse_samples=args.inverse_samples, inverse_steps=args.inverse_steps, unit_batch=args.unit_batch,
              seed=args.seed, units=args.top_units)
    if args.quick:
        kw.update(top_k=min(args.top_k, 4), n_steps=min(args.n_steps, 8), iam_steps=min(args.iam_steps, 32),
                  inverse_samples=min(args.inverse_samples, 2), inverse_steps=min(args.inverse_steps, 40))
    return kw


@restores_process_state
def atlas_main(argv=None) -> dict:
    """Build, save and render an atlas; prints its summary as one JSON object on the last line."""
    return run(build_parser().parse_args(argv))


def run(args) -> dict:
    """The atlas of ``args`` (parsed by a parser that :func:`add_arguments` built)."""
    from ..atlas import atlas
    from ..cli.scan import distributed_run
    from ..data.distributed import Ranks
    from ..report.atlas_html import render_atlas, write_atlas_manifest

    with distributed_run(args) as group:
        rank = Ranks.of(group).rank
        got = load_atlas_inputs(args.model, args.data, split=args.split, limit=args.limit)
        from ..loading import check_device

        got["model"] = got["model"].to(check_device(args.device))
        layers = args.layers or got["default_layers"]
        if args.quick and not args.layers:
            layers = layers[1:2] or layers[:1]
        target = resolve_target(args.target, "label")
        t0 = time.perf_counter()
        a = atlas(got["model"], got["data"], layers=layers, target=target, generator=got["generator"],
                  value_range=got["value_range"], tokens=got["tokens"], checkpoint=args.checkpoint,
                  synthesize=False if args.no_synthetic else None, model_name=args.model,
                  data_name=args.data, group=group, embedding=got.get("embedding"),
                  baselines=got.get("baselines"), internal_batch_size=got.get("internal_batch_size"),
                  **quick_settings(args))
        seconds = time.perf_counter() - t0
        summary = {"model": args.model, "data": args.data, "layers": layers, "units": len(a.units),
                   "dead": sum(u["dead"] for u in a.units), "seconds": seconds,
                   "units_per_minute": 60 * len(a.units) / seconds, "stages": a.meta.get("seconds"),
                   "out": args.out}
        if rank == 0:
            a.save(args.out)
            summary["page"] = str(render_atlas(a, args.out, value_range=got["value_range"]))
            write_atlas_manifest(a, args.out, quick=args.quick, order=args.order)
    if rank == 0:
        print(json.dumps(summary, default=float))
    return summary


if __name__ == "__main__":
    sys.exit(run_command(run, build_parser().parse_args(sys.argv[1:]), "unitscope atlas"))
