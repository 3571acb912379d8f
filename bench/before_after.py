"""The path engine of an earlier commit against this tree's, side by side in one process, on the floor bench's models.

The modules that hold the path arithmetic (``attribution/engine.py``, ``attribution/adaptive.py``) are read from
``--rev`` with ``git show`` and loaded beside this tree's; each round times every rule once with the earlier
modules and once with these (the rest of the package is this tree's), then the bare floor of ``bench/floor.py``.
The ratios of each to the floor are medians over ``--rounds``; the values of both are compared too (largest
difference relative to the largest |value| of each layer), so a speed-up that changed the numbers shows.

    .venv/bin/python bench/before_after.py --rev 93dc42f [--models digits minilm] [--rules adaptive riemann_trapezoid]

One torch thread (``--threads``), CPU time of this process (on CUDA, wall time after a synchronize). The last line
is JSON: ``{"<model>": {"<rule>": {"before": ratio, "after": ratio, "max_rel_diff": d}}}`` under ``"ratios"``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import pathlib
import statistics
import subprocess
import sys
import warnings

import torch
from _timing import add_device, clock, device_of
from floor import MODELS, floor_pass, lowest_layer

ROOT = pathlib.Path(__file__).resolve().parent.parent


def earlier(rev: str, name: str):
    """``unitscope.attribution.<name>`` as it was at ``rev``, loaded as ``unitscope.attribution._<name>_at_rev``."""
    import unitscope.attribution as pkg

    source = subprocess.run(
        ["git", "show", f"{rev}:src/unitscope/attribution/{name}.py"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    full = f"{pkg.__name__}._{name}_at_rev"
    spec = importlib.util.spec_from_loader(full, loader=None)
    module = importlib.util.module_from_spec(spec)
    module.__package__ = pkg.__name__
    sys.modules[full] = module
    exec(compile(source, f"{rev}:{name}.py", "exec"), module.__dict__)
    return module


def compare(us, scores, trees, setup, method, rounds, device, name) -> dict:
    """One rule on one model: the earlier and this tree's ratios to the floor, and their values' largest difference."""
    model, x, layers, kw = setup["model"], setup["inputs"], setup["layers"], setup["kw"]
    lowest, extra = lowest_layer(model, layers), kw.get("additional_forward_args") or ()

    def call(tree):
        scores.integrate, scores.integrate_adaptive = trees[tree]
        try:
            return us.conductance(
                model,
                x,
                layers,
                n_steps=setup["n_steps"],
                method=method,
                path=us.PathConfig(gap_warning=None, rtol=0.0 if method == "adaptive" else 1e-3),
                progress=False,
                **kw,
            )
        finally:
            scores.integrate, scores.integrate_adaptive = trees["after"]

    got = {tree: call(tree) for tree in trees}  # warm-up, and the values compared
    diff = max(
        float((got["before"][layer] - got["after"][layer]).abs().max())
        / max(float(got["before"][layer].abs().max()), 1e-30)
        for layer in got["after"]
    )
    times: dict = {tree: [] for tree in trees}
    floors = []
    for _ in range(rounds):
        for tree in trees:
            sec, s = clock(lambda tree=tree: call(tree), device)
            times[tree].append(sec)
        rows = int(s.n_evals.sum())
        sec, _ = clock(lambda rows=rows: floor_pass(model, x, lowest, rows, extra), device)
        floors.append(sec)
    floor = statistics.median(floors)
    r = {tree: statistics.median(t) / floor for tree, t in times.items()}
    print(
        f"{name:<13} {method:<18} before ×{r['before']:.2f}  after ×{r['after']:.2f} the floor"
        f"  (max rel. diff of the values {diff:.1e})",
        flush=True,
    )
    return {**r, "max_rel_diff": diff}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_device(p)
    p.add_argument("--rev", required=True, help="the earlier commit (anything git show takes)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--models", nargs="+", default=["digits"], choices=list(MODELS))
    p.add_argument("--rules", nargs="+", default=["adaptive", "riemann_trapezoid"])
    p.add_argument("--quick", action="store_true")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    device = device_of(args.device)

    import unitscope as us
    from unitscope.attribution import adaptive, engine, scores

    old_engine = earlier(args.rev, "engine")
    old_adaptive = earlier(args.rev, "adaptive")
    trees = {
        "before": (old_engine.integrate, old_adaptive.integrate_adaptive),
        "after": (engine.integrate, adaptive.integrate_adaptive),
    }
    ratios: dict = {}
    for name in args.models:
        setup = MODELS[name](device, args.quick)
        ratios[name] = {m: compare(us, scores, trees, setup, m, args.rounds, device, name) for m in args.rules}
    out = {"bench": "before_after", "rev": args.rev, "device": str(device), "rounds": args.rounds, "ratios": ratios}
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
