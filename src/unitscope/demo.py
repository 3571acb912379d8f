"""``unitscope demo``: the main job on bundled defaults — a CNN trained on real digits, and which of its
filters carry each prediction (conductance of every layer in one call, with its completeness gap)."""

from __future__ import annotations

import time

import torch

from .scores import conductance
from .zoo import digits_cnn, digits_data

LAYERS = ["features.relu1", "features.relu2", "features.relu3", "features.relu4", "classifier.relu"]


def run(n_examples: int = 5, n_steps: int = 64, method: str = "adaptive", top: int = 5, seed: int = 0,
        echo=print) -> dict:
    t0 = time.perf_counter()
    trained = digits_cnn(seed=seed)
    _, test = digits_data()
    model = trained.model
    source = "loaded from cache" if trained.cached else "trained now"
    echo(f"digits CNN ({source}): test accuracy {100 * trained.info['test_accuracy']:.1f}% "
         f"on {len(test)} held-out real digits")
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(test), generator=g)[:n_examples]
    x, y = test.x[idx], test.y[idx]
    scores = conductance(model, x, LAYERS, n_steps=n_steps, method=method, gap_warning=None)
    pred = scores.target
    echo(f"conductance of {len(LAYERS)} layers in one call ({method}, ≤{n_steps} path points per digit, "
         f"baseline = black image, target = top logit)")
    for i in range(len(idx)):
        echo(f"\ndigit #{int(idx[i])}: label {int(y[i])}, predicted {int(pred[i])}, "
             f"F(x) − F(x') = {float(scores.output_diff[i]):.3f}, {int(scores.n_evals[i])} path points")
        for layer in LAYERS:
            t = scores.top(layer, top)
            units = ", ".join(f"#{u}:{v:+.3f}" for u, v in zip(t.indices[i].tolist(), t.values[i].tolist()))
            gap = 100 * float(scores.relative_delta(layer)[i])
            share = float(t.values[i].sum() / scores.output_diff[i])
            echo(f"  {layer:<16} gap {gap:5.2f}%  top-{top} carry {100 * share:5.1f}%  {units}")
    elapsed = time.perf_counter() - t0
    echo(f"\ndone in {elapsed:.1f} s")
    return {"test_accuracy": trained.info["test_accuracy"], "seconds": elapsed,
            "max_gap": max(float(scores.relative_delta(layer).max()) for layer in LAYERS)}
