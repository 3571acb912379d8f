"""The adaptive rule's own bookkeeping: CPU time of ``method="adaptive"`` against the fixed Gauss–Legendre rule and
against the bare floor (one forward + backward to the inputs over the same rows: examples × path points), on the
digits CNN's 13 layers (what ``unitscope scan`` computes per batch), 256 digits.

    .venv/bin/python bench/adaptive_overhead.py [--device cpu] [--steps 4 32] [--repeats 3]
    .venv/bin/python bench/adaptive_overhead.py --trees OLD/src NEW/src --repeats 2   # two trees side by side

One torch thread; each time is the minimum over ``--repeats`` runs of this process's CPU time
(``time.process_time``), so other jobs on a shared machine matter less; on CUDA (``--device cuda``) wall seconds
between two ``torch.cuda.synchronize()`` (the ``*_cpu_seconds`` keys keep their names). With ``--trees`` each
tree runs in its own process (``PYTHONPATH=TREE``), the trees taking turns ``--repeats`` times, and the minima per
tree are compared (``old_over_new``: the first tree's time over the second's). The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

from _timing import add_device, clock, device_of


def main(argv=None) -> dict:
    p = argparse.ArgumentParser()
    add_device(p)
    p.add_argument("--steps", type=int, nargs="+", default=[4, 32])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--examples", type=int, default=256)
    p.add_argument("--trees", nargs="+", default=None, help="src folders to compare, each in its own process")
    args = p.parse_args(argv)
    if args.trees:
        return compare_trees(args)
    import torch

    torch.set_num_threads(1)

    from unitscope import PathConfig
    from unitscope.attribution.scores import attribute
    from unitscope.cli.scan import default_layers
    from unitscope.zoo import digits_cnn, digits_data

    device = device_of(args.device)
    model = digits_cnn(progress=False).model.to(device)
    x = digits_data()[0].x[: args.examples].to(device)
    layers = default_layers(model)

    def cpu(fn) -> float:  # CPU seconds of this process; on CUDA wall seconds between synchronizes
        return min(clock(fn, device)[0] for _ in range(args.repeats))

    def floor(n):
        flags = [q.requires_grad for q in model.parameters()]
        for q in model.parameters():
            q.requires_grad_(False)
        try:
            xb = x.repeat(n, 1, 1, 1).requires_grad_(True)
            torch.autograd.grad(model(xb).max(1).values.sum(), xb)
        finally:
            for q, f in zip(model.parameters(), flags):
                q.requires_grad_(f)

    attribute(
        model,
        x[:8],
        layers,
        scores=["activation", "conductance"],
        n_steps=4,
        path=PathConfig(gap_warning=None),
        progress=False,
    )  # warm-up
    rows = {}
    for n in args.steps:
        t = {
            m: cpu(
                lambda m=m, n=n: attribute(
                    model,
                    x,
                    layers,
                    scores=["activation", "conductance"],
                    n_steps=n,
                    method=m,
                    path=PathConfig(gap_warning=None),
                    progress=False,
                )
            )
            for m in ("adaptive", "gausslegendre")
        }
        t["floor"] = cpu(lambda n=n: floor(n))
        rows[n] = {
            "adaptive_cpu_seconds": t["adaptive"],
            "gausslegendre_cpu_seconds": t["gausslegendre"],
            "floor_cpu_seconds": t["floor"],
            "adaptive_over_fixed": t["adaptive"] / t["gausslegendre"],
            "adaptive_over_floor": t["adaptive"] / t["floor"],
        }
        print(_line(n, rows[n]), flush=True)
    out = {
        "bench": "adaptive_overhead",
        "model": "digits-cnn",
        "layers": len(layers),
        "examples": len(x),
        "device": str(device),
        "steps": rows,
    }
    print(json.dumps(out))
    return out


def _line(n, t: dict) -> str:
    return (
        f"n_steps {n}: adaptive {t['adaptive_cpu_seconds']:.2f} s, gausslegendre "
        f"{t['gausslegendre_cpu_seconds']:.2f} s, floor {t['floor_cpu_seconds']:.2f} s CPU → adaptive / fixed "
        f"×{t['adaptive_over_fixed']:.2f}, "
        f"adaptive / floor ×{t['adaptive_over_floor']:.2f}, fixed / floor "
        f"×{t['gausslegendre_cpu_seconds'] / t['floor_cpu_seconds']:.2f}"
    )


def compare_trees(args) -> dict:
    """Each tree in its own process, taking turns; per tree and setting the minimum of each time."""
    best: dict = {t: {} for t in args.trees}
    for _ in range(args.repeats):
        for tree in args.trees:
            cmd = [
                sys.executable,
                __file__,
                "--device",
                args.device,
                "--repeats",
                "1",
                "--examples",
                str(args.examples),
                "--steps",
                *map(str, args.steps),
            ]
            env = dict(os.environ, PYTHONPATH=tree, OMP_NUM_THREADS="1")
            out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
            got = json.loads(out.strip().splitlines()[-1])["steps"]
            print(f"# {tree}: {json.dumps(got)}", flush=True)
            for n, row in got.items():
                b = best[tree].setdefault(n, {})
                for key in ("adaptive_cpu_seconds", "gausslegendre_cpu_seconds", "floor_cpu_seconds"):
                    b[key] = min(b.get(key, float("inf")), row[key])
    for tree in args.trees:
        for row in best[tree].values():
            row["adaptive_over_fixed"] = row["adaptive_cpu_seconds"] / row["gausslegendre_cpu_seconds"]
            row["adaptive_over_floor"] = row["adaptive_cpu_seconds"] / row["floor_cpu_seconds"]
            row["gausslegendre_over_floor"] = row["gausslegendre_cpu_seconds"] / row["floor_cpu_seconds"]
        print(f"# {tree}:")
        for n, row in best[tree].items():
            print(_line(n, row), flush=True)
    out = {
        "bench": "adaptive_overhead",
        "model": "digits-cnn",
        "examples": args.examples,
        "device": args.device,
        "repeats": args.repeats,
        "trees": best,
    }
    if len(args.trees) == 2:
        old, new = (best[t] for t in args.trees)
        out["old_over_new"] = {
            n: {k: old[n][k] / new[n][k] for k in ("adaptive_cpu_seconds", "gausslegendre_cpu_seconds")} for n in new
        }
        for n, r in out["old_over_new"].items():
            print(
                f"n_steps {n}: old / new adaptive ×{r['adaptive_cpu_seconds']:.2f}, gausslegendre "
                f"×{r['gausslegendre_cpu_seconds']:.2f}"
            )
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
