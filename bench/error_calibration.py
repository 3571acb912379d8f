"""How the error bars' constant was chosen: the adaptive rule's per-unit error estimate against a reference, on
models that bench/accuracy.py does NOT score (held out): the zoo's digits CNN and digits VGG, 6 real test digits
each, several ReLU layers, 16–128 evaluations, reference = adaptive at 2,048 evaluations (rtol 1e-9).

    python bench/error_calibration.py            # a few minutes on 2 CPU cores
    python bench/error_calibration.py --quick    # reference at 512 evaluations, budgets 16-64 (a smoke run)
    python bench/error_calibration.py --device cuda   # models and digits on the GPU

For every top-10 unit (channels, relative to the layer's largest |unit|) it records the true error and the raw
estimate (``ERROR_FACTOR = 1``, i.e. ``|T₂ − T₁|`` per panel, combined, plus the rounding term) and prints the
quantiles of true/raw and the coverage ``true ≤ 3·c·raw`` for a few factors ``c``. ``ERROR_FACTOR = ½`` (between
the smooth-path ⅓ of Richardson's rule and the first-order 1 across a kink) is kept if ``3 · ½`` is at least the
95th percentile of true/raw here. The last line is a JSON object.
"""

from __future__ import annotations

import argparse
import json
import warnings

import numpy as np
import torch
from _timing import add_device, device_of

import unitscope as us
import unitscope.attribution.adaptive as adaptive
from unitscope.attribution.estimates import ERROR_FACTOR, reduce_units


def _model(name, device="cpu"):
    from unitscope.zoo import digits_cnn, digits_data, digits_vgg

    _, test = digits_data()
    if name == "digits_cnn":
        model, rows = digits_cnn(progress=False).model, slice(0, 6)
        layers = ["features.relu1", "features.relu2", "features.relu3", "features.relu4", "classifier.relu"]
    else:
        model, rows = digits_vgg(progress=False).model, slice(6, 12)
        layers = ["features.relu1", "features.relu3", "features.relu5", "features.relu7"]
    return model.to(device), test.x[rows].to(device), test.y[rows].tolist(), layers


def measure(name, budgets, ref_steps, device="cpu"):
    model, x, target, layers = _model(name, device)
    kw = dict(target=target, progress=False)
    ref = us.conductance(model, x, layers, n_steps=ref_steps, path=us.PathConfig(rtol=1e-9, gap_warning=None), **kw)
    rows = {}
    before = adaptive.ERROR_FACTOR
    adaptive.ERROR_FACTOR = 1.0  # the raw estimate; restored below
    try:
        for b in budgets:
            s = us.conductance(model, x, layers, n_steps=b, path=us.PathConfig(gap_warning=None), **kw)
            out = []
            for layer in layers:
                r, e = reduce_units(ref[layer].double()), reduce_units(s[layer].double())
                idx = r.abs().topk(min(10, r.shape[1]), dim=1).indices
                scale = r.abs().amax(1, keepdim=True).clamp_min(1e-30)
                true = (e - r).abs().gather(1, idx) / scale
                raw = s.unit_error[layer].double().gather(1, idx) / scale
                out.append(torch.stack([true, raw], -1).reshape(-1, 2))
            rows[b] = torch.cat(out).cpu().numpy()
    finally:
        adaptive.ERROR_FACTOR = before
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ref-steps", type=int, default=None, help="the reference's evaluations (default 2048; quick 512)")
    p.add_argument("--quick", action="store_true", help="a 512-evaluation reference and budgets 16-64: a smoke run")
    add_device(p)
    args = p.parse_args(argv)
    device = device_of(args.device)
    ref_steps = args.ref_steps or (512 if args.quick else 2048)
    warnings.simplefilter("ignore", us.CompletenessWarning)
    budgets = (16, 32, 64) if args.quick else (16, 32, 64, 128)
    per, pooled = {}, []
    for name in ("digits_cnn", "digits_vgg"):
        for b, u in measure(name, budgets, ref_steps, device).items():
            ratio = u[:, 0] / np.maximum(u[:, 1], 1e-300)
            per[f"{name}@{b}"] = {f"coverage_c{c}": float(np.mean(u[:, 0] <= 3 * c * u[:, 1])) for c in (0.5, 1.0)}
            per[f"{name}@{b}"]["q90_true_over_raw"] = float(np.quantile(ratio, 0.9))
            print(
                f"{name:<11} {b:>4} evaluations: q90 true/raw {per[f'{name}@{b}']['q90_true_over_raw']:.2f}, "
                f"coverage at ERROR_FACTOR ½ {per[f'{name}@{b}']['coverage_c0.5']:.3f}",
                flush=True,
            )
            pooled.append(u)
    u = np.concatenate(pooled)
    ratio = u[:, 0] / np.maximum(u[:, 1], 1e-300)
    q = {f"q{k}": float(np.quantile(ratio, k / 100)) for k in (50, 90, 95)}
    cover = {str(c): float(np.mean(u[:, 0] <= 3 * c * u[:, 1])) for c in (1 / 3, 0.5, 2 / 3, 1.0)}
    keep = 3 * 0.5 >= q["q95"]
    print(
        f"pooled {len(u)} units: true/raw quantiles {q}; coverage by factor {cover}; "
        f"ERROR_FACTOR ½ {'kept' if keep else 'too small'} (3·½ vs q95 {q['q95']:.2f}); in use: {ERROR_FACTOR}"
    )
    print(
        json.dumps(
            {
                "true_over_raw": q,
                "coverage_by_factor": cover,
                "per_case": per,
                "n_units": int(len(u)),
                "error_factor": ERROR_FACTOR,
                "half_is_enough": bool(keep),
                "device": str(device),
                "reference_evals": ref_steps,
                "quick": args.quick,
            }
        )
    )


if __name__ == "__main__":
    main()
