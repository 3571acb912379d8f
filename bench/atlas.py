"""The atlas's per-unit work, batched (``us.atlas``: chunks of units per call) vs the straightforward loop over units
with the same library calls, on the digits CNN; and units per minute of the whole atlas.

    .venv/bin/python bench/atlas.py [--device cpu] [--quick] [--layer features.relu2] [--threads 1]

Both sides start from the same scan (one streaming pass over the 1,797 digits: activation and conductance, the
histograms and top-k shares) and do, per unit, the same things with the same settings:

* the per-input conductance of its top exemplars — loop: ``neuron_conductance(model, its exemplars, layer, [u])``;
  batched: one ``neuron_conductance(..., paired=True)`` per chunk of units;
* its IAM image and RS — loop: ``independent_am(model, layer, [u])``; batched: ``independent_am(model, layer, chunk)``;
* inverse-set samples in each activation band through the digits VAE — loop: ``sample_inverse_set(model,
  (layer, u, a, b), G, n_samples=K, n_seeds=K, max_seed_steps=S)`` (its seed phase: the same augmented Lagrangian);
  batched: ``sample_inverse_sets`` over every unit × band of the chunk.

``--quick``: one layer, every unit of it batched, 4 exemplars, 8 path points, 32 IAM steps, 2 samples per band, 40
inverse steps; the loop runs on ``--loop-units`` units (default 16) and its per-unit time is scaled to the layer (the
loop's cost is the same for every unit up to the inverse sets' steps). Times: ``time.perf_counter``, one run each.
The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings

import torch


def main(argv=None) -> dict:
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="cpu")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--layer", default="features.relu2")
    p.add_argument("--loop-units", type=int, default=None, help="units the loop runs on (default: 16 quick, all)")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    import unitscope as us
    from unitscope.atlas import BANDS, _seed
    from unitscope.atlas_data import Source, UnitAccumulator
    from unitscope.atlas_units import layer_bands, work_chunk
    from unitscope.data.scan import scan
    from unitscope.synthesis.inverse import InverseSetWarning
    from unitscope.zoo import digits_cnn, digits_data
    from unitscope.zoo.digits_vae import digits_generator

    device = torch.device(args.device)
    model = digits_cnn(progress=False).model.to(device)
    gen = digits_generator()
    gen.decoder.to(device)
    tr, te = digits_data()
    x, y = torch.cat([tr.x, te.x]), torch.cat([tr.y, te.y])
    s = dict(top_k=4, n_steps=8, iam_steps=32, inverse_samples=2, inverse_steps=40) if args.quick else \
        dict(top_k=9, n_steps=20, iam_steps=128, inverse_samples=4, inverse_steps=100)
    layer = args.layer

    # the whole atlas of one layer (units per minute)
    t0 = time.perf_counter()
    a = us.atlas(model, (x, y), layers=[layer], generator=gen, progress=False, **s)
    atlas_seconds = time.perf_counter() - t0
    n_units = len(a.units)

    # the shared scan, then the per-unit work batched vs looped on the same scan
    src = Source((x, y))
    extra = UnitAccumulator()
    t0 = time.perf_counter()
    result = scan(model, src.loader, [layer], scores=["activation", "conductance"], top_k=s["top_k"],
                  n_steps=s["n_steps"], progress=False, extra=extra)
    scan_seconds = time.perf_counter() - t0
    kw = dict(target=None, n_steps=s["n_steps"], method="gausslegendre", baselines=None, synthesize=True,
              generator=gen, value_range=(0.0, 1.0), param="fft", iam_steps=s["iam_steps"],
              inverse_samples=s["inverse_samples"], inverse_steps=s["inverse_steps"], bands=BANDS)
    t0 = time.perf_counter()
    for u0 in range(0, n_units, 64):
        work_chunk(model, src, result, extra, layer, list(range(u0, min(u0 + 64, n_units))), unit_seed=lambda *q: _seed(0, *q), **kw)
    batched_seconds = time.perf_counter() - t0

    hist = extra.hist[layer]
    dead = ((hist.min == 0) & (hist.max == 0)).tolist()
    ta, tc = result.top(layer, score="activation"), result.top(layer, score="conductance")
    n_loop = args.loop_units or (16 if args.quick else n_units)
    loop_units = list(range(n_units))[:n_loop]
    t0 = time.perf_counter()
    for u in loop_units:
        ex = torch.cat([ta.indices[u], tc.indices[u]])
        xe, _ = src.get(ex.tolist())
        us.neuron_conductance(model, xe, layer, [u], n_steps=s["n_steps"])
        if dead[u]:
            continue
        us.independent_am(model, layer, [u], shape=(1, 8, 8), param="fft", steps=s["iam_steps"], seed=u,
                          progress=False)
        for name, lo, hi, ok in layer_bands(hist, BANDS)[u]:
            if ok:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", InverseSetWarning)
                    us.sample_inverse_set(model, (layer, u, lo, hi), gen, n_samples=s["inverse_samples"],
                                          n_seeds=s["inverse_samples"], max_seed_steps=s["inverse_steps"], seed=u,
                                          progress=False, on_empty="ignore")
    loop_seconds_measured = time.perf_counter() - t0
    loop_seconds = loop_seconds_measured * n_units / len(loop_units)
    out = {"bench": "atlas", "model": "digits-cnn", "layer": layer, "units": n_units,
           "dead": int(sum(dead)), "device": str(device), "quick": args.quick, "settings": s,
           "atlas_seconds": atlas_seconds, "atlas_stages": a.meta["seconds"],
           "units_per_minute": 60 * n_units / atlas_seconds, "scan_seconds": scan_seconds,
           "per_unit_batched_seconds": batched_seconds, "per_unit_loop_seconds": loop_seconds,
           "loop_units_measured": len(loop_units), "loop_seconds_measured": loop_seconds_measured,
           "per_unit_speedup": loop_seconds / batched_seconds,
           "total_speedup": (scan_seconds + loop_seconds) / (scan_seconds + batched_seconds)}
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
