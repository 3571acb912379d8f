"""Inverse-set sampling vs its baselines, side by side in one run, on the digits CNN with the digits VAE as G.

Target: a digit-class logit (``classifier.fc2`` unit 3, pre-softmax) in ``[10, 20]``; E = the CNN's early layers
(``features.pool1``). Methods, each asked for the same number of samples from the same generator:

* ``augmented_lagrangian`` — ``unitscope.synthesis.inverse.sample_inverse_set`` (32 seeds, then batched sampling steps);
* ``penalized_am`` — multi-start activation maximization with a penalty for leaving the range, from random codes;
* ``langevin`` — PPGN-style Langevin dynamics in code space conditioned on the range (32 chains, burn-in 100,
  a sample kept every ``thin`` steps; the default ``thin = 1/(2·step) = 50`` lets the noise alone diffuse one
  prior standard deviation between kept samples); ``langevin_thin1`` keeps every step (shown for transparency).

Per method: feasibility rate (share of the candidates it produced that were in range), verified rate (fresh forward
pass), feasible samples per second, diversity (mean pairwise distance in E-space and pixel space on the first
``n_common`` samples of every method, and the spread of the CNN's predicted classes).

    .venv/bin/python bench/inverse.py [--n 512] [--quick] [--device cpu]

Times are each method's own (``InverseSet.seconds``: wall seconds; on CUDA they end with the copy of the samples to
the CPU, which waits for the GPU, and each method starts after a ``torch.cuda.synchronize()``).

The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch
from _timing import add_device, device_of, sync

from unitscope.studies.inverse import method_runs
from unitscope.synthesis.inverse import diversity, langevin_sampler
from unitscope.zoo import digits_cnn
from unitscope.zoo.digits_vae import digits_encoder, digits_generator


def class_spread(model, x):
    with torch.no_grad():
        pred = model(x).argmax(1).cpu()
    counts = np.bincount(pred.numpy(), minlength=10)
    p = counts[counts > 0] / counts.sum()
    return int((counts > 0).sum()), float(-(p * np.log2(p)).sum()), counts.tolist()


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=512, help="samples asked of every method")
    ap.add_argument("--unit", type=int, default=3)
    ap.add_argument("--band", type=float, nargs=2, default=[10.0, 20.0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="256 samples")
    add_device(ap)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    device = device_of(args.device)
    n = 256 if args.quick else args.n
    model = digits_cnn().model.to(device)
    gen, enc = digits_generator(), digits_encoder(model)
    gen.decoder.to(device)
    con = ("classifier.fc2", args.unit, *args.band)
    step = 0.01
    runs = method_runs(model, con, gen, enc, n_samples=n, seed=args.seed, step=step)
    runs["langevin_thin1"] = lambda: langevin_sampler(
        model,
        con,
        gen,
        encoder=enc,
        n_samples=n,
        chains=32,
        step=step,
        burn_in=100,
        thin=1,
        seed=args.seed,
        progress=False,
    )
    results = {}
    for name, fn in runs.items():
        sync(device)  # each method's own clock (InverseSet.seconds) starts on an idle GPU
        results[name] = fn()
    n_common = min(len(r) for r in results.values())
    rows = {}
    for name, r in results.items():
        common = r.samples[:n_common].to(device)  # the samples come back on the CPU; E and the CNN are on device
        div = diversity(common, encoder=enc)
        k, ent, counts = class_spread(model, common) if n_common else (0, 0.0, [])
        rows[name] = dict(
            n=len(r),
            feasible_rate=r.feasible_rate,
            verified_rate=r.verified_rate,
            seconds=r.seconds,
            samples_per_second=r.samples_per_second,
            diversity_encoder=div.get("encoder", 0.0),
            diversity_pixel=div["pixel"],
            classes=k,
            class_entropy_bits=ent,
            class_counts=counts,
        )
        print(
            f"{name:<22} n={len(r):4d}  feasible {r.feasible_rate:6.3f}  verified {r.verified_rate:5.3f}  "
            f"{r.seconds:6.2f} s  {r.samples_per_second:8.1f} samples/s  diversity E {div.get('encoder', 0):6.2f} "
            f"pixel {div['pixel']:5.2f}  classes {k} ({ent:.2f} bits)",
            flush=True,
        )
    ours, lang = rows["augmented_lagrangian"], rows["langevin"]
    out = {
        "target": f"{args.band[0]:g} <= classifier.fc2[{args.unit}] <= {args.band[1]:g}",
        "n_asked": n,
        "device": str(device),
        "n_common": n_common,
        "samples_per_second_ratio_vs_langevin": ours["samples_per_second"] / max(lang["samples_per_second"], 1e-12),
        "diversity_ratio_vs_langevin": ours["diversity_encoder"] / max(lang["diversity_encoder"], 1e-12),
        "feasible_rate": ours["feasible_rate"],
        "verified_rate": ours["verified_rate"],
        "samples_per_second_ratio_vs_penalized_am": ours["samples_per_second"]
        / max(rows["penalized_am"]["samples_per_second"], 1e-12),
        "diversity_ratio_vs_penalized_am": ours["diversity_encoder"]
        / max(rows["penalized_am"]["diversity_encoder"], 1e-12),
        "samples_per_second_ratio_vs_langevin_thin1": ours["samples_per_second"]
        / max(rows["langevin_thin1"]["samples_per_second"], 1e-12),
        "diversity_ratio_vs_langevin_thin1": ours["diversity_encoder"]
        / max(rows["langevin_thin1"]["diversity_encoder"], 1e-12),
        "methods": {k: {m: v for m, v in row.items() if m != "class_counts"} for k, row in rows.items()},
    }
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
