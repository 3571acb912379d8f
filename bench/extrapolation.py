"""The adaptive default's Romberg step on smooth layers, side by side with the plain trapezoid on the same nodes.

Per model and budget: the worst top-10 unit's error relative to the layer's largest |unit| (as in
``bench/accuracy.py``), the largest true/estimated error over those units and the share of them whose true error is
within 3 × the estimate (the error bar's contract). Two variants: the adaptive default (``extrapolated``: one
Romberg step where the example's layer is smooth) and the same run with the step switched off (``trapezoid``:
``adaptive.SMOOTH = -1``, the rule before). The nodes are the same; only the final sums differ. Beside them
Gauss–Legendre at half the budgets (16, 32, 64 nodes) with dy/dα from the values (``GL values``: the polynomial's
derivative, the library's rule) and by forward mode (``GL forward``: one JVP per node, the rule before), with the
seconds of each call (side by side in one run).

Models: MiniLM's sentiment head, its six MLP activations (smooth: GELU), reference Gauss–Legendre with exact dy/dα at
200 nodes; EfficientNet-Lite0 ``blocks.0``, ``blocks.1``, ``blocks.3`` on the bundled cat photo (kinks: ReLU6),
reference the adaptive rule at 1,024 evaluations, ``rtol=1e-9``.

    python bench/extrapolation.py --quick    # 4 sentences; budgets 32, 64, 128
    python bench/extrapolation.py            # 16 sentences, the cat and the coffee photos

The last line is one JSON object
``{"<model>": {"<variant>": {"<budget>": [evals, worst, max true/est, share, seconds]}}}``
(share: of the top-10 units, those with true ≤ 3 · estimate).
"""

from __future__ import annotations

import argparse
import json
import time
import warnings

import torch
import torch.nn as nn
from _timing import add_device, device_of
from accuracy import _errors, _LogOdds, _units

import unitscope as us
from unitscope.attribution import adaptive, paths


class _Fixed(nn.Module):
    """The logit of one class, ``[N, 1]``."""

    def __init__(self, m, c: int):
        super().__init__()
        self.m, self.c = m, c

    def forward(self, x):
        return self.m(x)[:, self.c : self.c + 1]


VARIANTS = {  # name: (method, adaptive.SMOOTH or None, paths.TANGENTS or None)
    "extrapolated": ("adaptive", None, None),
    "trapezoid": ("adaptive", -1.0, None),
    "GL values": ("gausslegendre", None, "values"),
    "GL forward": ("gausslegendre", None, "forward"),
}


def _measure(model, x, layers, ref, budgets, kw):
    out = {}
    smooth0, tangents0 = adaptive.SMOOTH, paths.TANGENTS
    for variant, (method, smooth, tangents) in VARIANTS.items():
        adaptive.SMOOTH = smooth0 if smooth is None else smooth
        paths.TANGENTS = tangents0 if tangents is None else tangents
        try:
            rows = {}
            for n in budgets if method == "adaptive" else [b // 2 for b in budgets]:
                t0 = time.perf_counter()
                s = us.conductance(
                    model, x, layers, n_steps=n, method=method, path=us.PathConfig(gap_warning=None), **kw
                )
                sec = time.perf_counter() - t0
                worst, cover, ratios = 0.0, 0.0, []
                for layer in layers:
                    worst = max(worst, float(_errors(s[layer], ref[layer]).max()))
                    r = _units(ref[layer])
                    idx = r.abs().topk(min(10, r.shape[1]), dim=1).indices
                    true = (_units(s[layer]) - r).abs().gather(1, idx)
                    est = s.unit_error[layer].double().cpu().gather(1, idx).clamp_min(1e-30)
                    cover = max(cover, float((true / est).max()))
                    ratios.append((true / est).flatten())
                share = float((torch.cat(ratios) <= 3).double().mean())
                rows[n] = (int(s.n_evals.max()), worst, cover, share, sec)
            out[variant] = rows
        finally:
            adaptive.SMOOTH, paths.TANGENTS = smooth0, tangents0
    return out


def _print(name, res):
    print(f"\n{name}")
    for variant, rows in res.items():
        cells = "  ".join(
            f"{ev:4d} ev: {100 * w:7.3f}% (true/est max {c:5.2f}, ≤ 3 for {100 * sh:3.0f}%; {sec:5.1f} s)"
            for ev, w, c, sh, sec in rows.values()
        )
        print(f"  {variant:<13}{cells}", flush=True)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true")
    add_device(p)
    args = p.parse_args(argv)
    device = device_of(args.device)
    warnings.simplefilter("ignore", us.CompletenessWarning)
    budgets = (32, 64, 128)
    t0 = time.perf_counter()
    print(
        f"extrapolation bench ({'quick' if args.quick else 'full'}); device {device}; threads {torch.get_num_threads()}"
    )
    results = {}

    from unitscope.zoo.minilm import minilm_sentiment, mlp_layers
    from unitscope.zoo.sentiment import movie_reviews

    trained = minilm_sentiment(progress=False)
    sents = movie_reviews().test.sentences[: 4 if args.quick else 16]
    enc = trained.encode(sents)
    lm = _LogOdds(trained.model).eval().to(device)
    layers = ["m." + n for n in mlp_layers()]
    kw = dict(
        baselines=enc.baselines.to(device),
        target=0,
        additional_forward_args=(enc.attention_mask.to(device),),
        progress=False,
        internal_batch_size=64,
    )
    emb = enc.embeddings.to(device)
    r = us.conductance(lm, emb, layers, n_steps=200, method="gausslegendre", path=us.PathConfig(gap_warning=None), **kw)
    ref = {layer: r[layer].detach() for layer in layers}
    results["minilm"] = _measure(lm, emb, layers, ref, budgets, kw)
    _print(
        f"MiniLM MLP, {len(sents)} test sentences, 6 layers (reference: Gauss–Legendre with dy/dα, 200 nodes)",
        results["minilm"],
    )

    from unitscope.zoo import efficientnet_lite0, photos

    eff = efficientnet_lite0(device)
    for name in ["cat"] if args.quick else ["cat", "coffee"]:
        x = torch.stack([eff.preprocess(im) for im in photos([name]).values()]).to(device)
        with torch.no_grad():
            cls = int(eff.model(x).argmax(1))

        net = _Fixed(eff.model, cls).eval()
        blocks = [f"m.blocks.{i}" for i in (0, 1, 3)]
        kw = dict(target=0, progress=False, internal_batch_size=32)
        r = us.conductance(net, x, blocks, n_steps=1024, path=us.PathConfig(rtol=1e-9, gap_warning=None), **kw)
        ref = {b: r[b].detach() for b in blocks}
        results[f"effnet_{name}"] = _measure(net, x, blocks, ref, budgets, kw)
        _print(
            f"EfficientNet-Lite0 {name}, blocks 0, 1, 3 (reference: adaptive, 1,024 evaluations)",
            results[f"effnet_{name}"],
        )

    print(f"\ntotal {time.perf_counter() - t0:.0f} s")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
