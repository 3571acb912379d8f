"""The adaptive rule's own bookkeeping: CPU time of ``method="adaptive"`` against the fixed Gauss–Legendre rule and
against the bare floor (one forward + backward to the inputs over the same rows: examples × path points), on the
digits CNN's 13 layers (what ``unitscope scan`` computes per batch), 256 digits.

    .venv/bin/python bench/adaptive_overhead.py [--device cpu] [--steps 4 32] [--repeats 3]

One torch thread; each time is the minimum over ``--repeats`` runs of this process's CPU time
(``time.process_time``), so other jobs on a shared machine matter less. The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import time

import torch


def main(argv=None) -> dict:
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="cpu")
    p.add_argument("--steps", type=int, nargs="+", default=[4, 32])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--examples", type=int, default=256)
    args = p.parse_args(argv)
    torch.set_num_threads(1)

    from unitscope.attribution.scores import attribute
    from unitscope.cli.scan import default_layers
    from unitscope.zoo import digits_cnn, digits_data

    device = torch.device(args.device)
    model = digits_cnn(progress=False).model.to(device)
    x = digits_data()[0].x[:args.examples].to(device)
    layers = default_layers(model)

    def cpu(fn) -> float:
        best = float("inf")
        for _ in range(args.repeats):
            c = time.process_time()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
            best = min(best, time.process_time() - c)
        return best

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

    attribute(model, x[:8], layers, scores=["activation", "conductance"], n_steps=4, gap_warning=None,
              progress=False)   # warm-up
    rows = {}
    for n in args.steps:
        t = {m: cpu(lambda m=m: attribute(model, x, layers, scores=["activation", "conductance"], n_steps=n,
                                          method=m, gap_warning=None, progress=False))
             for m in ("adaptive", "gausslegendre")}
        t["floor"] = cpu(lambda: floor(n))
        rows[n] = {"adaptive_cpu_seconds": t["adaptive"], "gausslegendre_cpu_seconds": t["gausslegendre"],
                   "floor_cpu_seconds": t["floor"], "adaptive_over_fixed": t["adaptive"] / t["gausslegendre"],
                   "adaptive_over_floor": t["adaptive"] / t["floor"]}
        print(f"n_steps {n}: adaptive {t['adaptive']:.2f} s, gausslegendre {t['gausslegendre']:.2f} s, floor "
              f"{t['floor']:.2f} s CPU → adaptive / fixed ×{rows[n]['adaptive_over_fixed']:.2f}, adaptive / floor "
              f"×{rows[n]['adaptive_over_floor']:.2f}", flush=True)
    out = {"bench": "adaptive_overhead", "model": "digits-cnn", "layers": len(layers), "examples": len(x),
           "device": str(device), "steps": rows}
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
