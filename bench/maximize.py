"""IAM for 64 units of one layer: one batched call (one batch row per unit) vs a loop of single-unit calls.

    .venv/bin/python bench/maximize.py [--units 64] [--steps 64] [--param pixel] [--threads 1] [--device cpu]
    .venv/bin/python bench/maximize.py --quick     # 16 units, 32 steps, one repeat

Same model (the cached shallow digits CNN, ``features.relu2``: 64 channels), same steps, same parameterization,
same learning rate, same transforms; both sides run in this process, one after the other, and are timed with
``time.perf_counter`` (on CUDA between two ``torch.cuda.synchronize()``). Each side is run ``--repeats`` times and
the best time counts. The last line is JSON with ``units_per_second_ratio`` (batched units/s ÷ looped units/s).
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from _timing import add_device, clock, device_of

from unitscope.synthesis.maximize import independent_am
from unitscope.zoo.digits import digits_shallow_cnn


def main(argv=None) -> dict:
    p = argparse.ArgumentParser()
    p.add_argument("--units", type=int, default=64)
    p.add_argument("--steps", type=int, default=64)
    p.add_argument("--param", default="pixel", choices=["pixel", "fft"])
    p.add_argument("--layer", default="features.relu2")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="16 units, 32 steps, one repeat")
    add_device(p)
    args = p.parse_args(argv)
    if args.quick:
        args.units, args.steps, args.repeats = min(args.units, 16), min(args.steps, 32), 1
    torch.set_num_threads(args.threads)
    device = device_of(args.device)
    model = digits_shallow_cnn(progress=False).model.to(device)
    kw = dict(shape=(1, 8, 8), param=args.param, steps=args.steps, seed=0, progress=False)
    units = list(range(args.units))

    def batched():
        return independent_am(model, args.layer, units, **kw)

    def looped():
        return [independent_am(model, args.layer, [u], **kw) for u in units]

    batched()  # warm-up (allocator, first-call overheads) for both sides
    independent_am(model, args.layer, [0], **kw)
    times = {"batched": float("inf"), "looped": float("inf")}
    for _ in range(args.repeats):
        for name, fn in (("batched", batched), ("looped", looped)):
            sec, out = clock(fn, device, time.perf_counter)
            times[name] = min(times[name], sec)
            if name == "batched":
                r_batched = out
            else:
                r_looped = out
    # the two sides solve the same problems: each row's objective must rise from its start in both
    rise_b = float((r_batched.trace[-1] > r_batched.trace[0]).float().mean())
    rise_l = float(sum(float(r.trace[-1, 0] > r.trace[0, 0]) for r in r_looped) / len(r_looped))
    result = {
        "bench": "maximize",
        "method": "independent_am",
        "layer": args.layer,
        "units": args.units,
        "steps": args.steps,
        "param": args.param,
        "threads": args.threads,
        "device": str(device),
        "batched_seconds": round(times["batched"], 4),
        "looped_seconds": round(times["looped"], 4),
        "batched_units_per_second": round(args.units / times["batched"], 2),
        "looped_units_per_second": round(args.units / times["looped"], 2),
        "units_per_second_ratio": round(times["looped"] / times["batched"], 2),
        "share_objective_rose_batched": rise_b,
        "share_objective_rose_looped": rise_l,
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
