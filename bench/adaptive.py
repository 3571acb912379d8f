"""Adaptive vs uniform path points on EfficientNet-Lite0 (ImageNet weights) and the bundled photos.

Per photo: the worst block's relative completeness gap (blocks.0 … blocks.6 in one call, target = top logit,
baseline = 0, i.e. mid-grey in the model's [-1, 1] input space) for uniform trapezoid nodes at
64 … 1024 evaluations and for ``method="adaptive"`` at budgets 32 … 256; the evaluations each needs for a
gap ≤ 1 %; and whether adaptive at 128 evaluations is no worse than uniform at 512.

    .venv/bin/python bench/adaptive.py [--photos cat coffee] [--quick | --spread] [--threads 2] [--device cpu]

The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from _timing import add_device, clock, device_of

import unitscope as us
from unitscope.zoo import efficientnet_lite0, photos

BLOCKS = [f"blocks.{i}" for i in range(7)]
#: ``--spread``: counts around 512 and 128, to show how much a single count's gap is the luck of where the nodes fall
SPREAD_UNIFORM = [448, 480, 512, 544, 576]
SPREAD_ADAPTIVE = [112, 120, 128, 136, 144]


def worst_gap(model, x, n, method):
    """Worst block's relative gap, evaluations used, wall seconds (on CUDA between two synchronizes)."""
    sec, s = clock(
        lambda: us.conductance(
            model,
            x,
            BLOCKS,
            n_steps=n,
            method=method,
            path=us.PathConfig(rtol=1e-6, gap_warning=None),
            internal_batch_size=32,
            progress=False,
        ),
        x.device,
        time.perf_counter,
    )
    return max(float(s.relative_delta(b)[0]) for b in BLOCKS), int(s.n_evals[0]), sec


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--photos", nargs="*", default=["cat", "coffee"])
    p.add_argument("--quick", action="store_true", help="adaptive 128 vs uniform 512 only")
    p.add_argument(
        "--spread",
        action="store_true",
        help="how much either number moves with the count: uniform at 448 … 576, adaptive at 112 … 144",
    )
    p.add_argument("--threads", type=int, default=2)
    add_device(p)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = device_of(args.device)
    net = efficientnet_lite0(device)
    out = {}
    for name, im in photos(args.photos).items():
        x = net.preprocess(im)[None].to(device)
        rows = {}
        uniform_ns = [512] if args.quick else [64, 128, 256, 512, 1024]
        adaptive_ns = [128] if args.quick else [32, 64, 128, 256]
        if args.spread:
            uniform_ns, adaptive_ns = SPREAD_UNIFORM, SPREAD_ADAPTIVE
        for n in uniform_ns:
            gap, used, sec = worst_gap(net.model, x, n, "riemann_trapezoid")
            rows[f"uniform_{n}"] = gap
            print(f"{name:<8} uniform  {n:5d} evals  worst-block gap {100 * gap:6.2f}%  ({sec:5.1f} s)", flush=True)
        for n in adaptive_ns:
            gap, used, sec = worst_gap(net.model, x, n, "adaptive")
            rows[f"adaptive_{n}"] = gap
            print(f"{name:<8} adaptive {used:5d} evals  worst-block gap {100 * gap:6.2f}%  ({sec:5.1f} s)", flush=True)
        need = lambda kind, ns, rows=rows: next((n for n in ns if rows[f"{kind}_{n}"] <= 0.01), None)  # noqa: E731
        rows["uniform_evals_for_1pct"] = need("uniform", uniform_ns)
        rows["adaptive_evals_for_1pct"] = need("adaptive", adaptive_ns)
        rows["adaptive128_beats_uniform512"] = rows["adaptive_128"] <= rows["uniform_512"]
        if args.spread:
            u = [rows[f"uniform_{n}"] for n in uniform_ns]
            a = [rows[f"adaptive_{n}"] for n in adaptive_ns]
            rows["pairs_adaptive_no_worse"] = sum(ai <= ui for ai in a for ui in u) / (len(a) * len(u))
            print(
                f"{name:<8} uniform {uniform_ns[0]}-{uniform_ns[-1]}: {100 * min(u):.2f}-{100 * max(u):.2f}% "
                f"(median {100 * statistics.median(u):.2f}%); adaptive {adaptive_ns[0]}-{adaptive_ns[-1]}: "
                f"{100 * min(a):.2f}-{100 * max(a):.2f}% (median {100 * statistics.median(a):.2f}%); "
                f"adaptive no worse in {100 * rows['pairs_adaptive_no_worse']:.0f}% of the pairs",
                flush=True,
            )
        print(
            f"{name:<8} evaluations for gap ≤ 1%: uniform "
            f"{rows['uniform_evals_for_1pct'] or '>' + str(uniform_ns[-1])}, adaptive "
            f"{rows['adaptive_evals_for_1pct'] or '>' + str(adaptive_ns[-1])}; adaptive@128 ≤ uniform@512: "
            f"{'PASS' if rows['adaptive128_beats_uniform512'] else 'FAIL'}",
            flush=True,
        )
        out[name] = rows
    print(
        json.dumps(
            {
                "photos": out,
                "adaptive128_beats_uniform512_all": all(r["adaptive128_beats_uniform512"] for r in out.values()),
                "device": str(device),
            }
        )
    )


if __name__ == "__main__":
    main()
