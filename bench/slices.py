"""Channel slices (``unitscope.core.slices``) against the full layer, side by side in one run, on the digits CNN's
``features.relu2`` (a ReLU after the 64-channel ``conv2``): the same library calls with slices (the default) and
inside ``full_layers()``, and whether they give the same numbers.

    .venv/bin/python bench/slices.py [--device cpu] [--threads 1] [--repeat 3]

* ``neuron_conductance`` of one unit on 18 inputs, 20 path points (the atlas loop's call), for 16 units;
* ``neuron_conductance(paired=True, examples=)``: 256 (unit, input) pairs on 100 inputs;
* ``sample_inverse_sets``: 48 problems (16 units × 3 bands of their activations on the digits), 4 codes each,
  100 steps, blocks of 64 codes, through the digits VAE;
* ``sample_inverse_set``: one problem per unit (8 units), 4 seeds, 100 seed steps.

Each is timed ``--repeat`` times alternating the two sides (wall ``time.perf_counter``; the best of the repeats per
side, so that a slow spell of a shared machine shows less); ``speedup`` = full / sliced. ``identical``: the outputs
are equal bit for bit. The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings

import torch
from _timing import Stopwatch, add_device, device_of


def main(argv=None) -> dict:
    p = argparse.ArgumentParser()
    add_device(p)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    import unitscope as us
    from unitscope.core.slices import full_layers
    from unitscope.synthesis.inverse import InverseSetWarning
    from unitscope.synthesis.inverse_many import sample_inverse_sets
    from unitscope.zoo import digits_cnn, digits_data
    from unitscope.zoo.digits_vae import digits_generator

    device = device_of(args.device)
    model = digits_cnn(progress=False).model.to(device)
    gen = digits_generator()
    gen.decoder.to(device)
    tr, te = digits_data()
    x = torch.cat([tr.x, te.x]).to(device)
    layer = "features.relu2"
    g = torch.Generator().manual_seed(0)
    pair_inputs = torch.randint(0, 100, (256,), generator=g)
    pair_units = torch.randint(0, 64, (256,), generator=g).tolist()
    with torch.no_grad():
        acts = model.features[:4](x).mean((2, 3)).cpu()
    alive = [u for u in range(64) if acts[:, u].max() > 0][:16]
    q = acts.quantile(torch.tensor([0.5, 0.75, 0.9, 0.99]), dim=0)
    problems = [(u, float(lo[u]), float(hi[u])) for u in alive for lo, hi in ((q[0], q[1]), (q[2], q[3]))] + [
        (u, float(acts[:, u].max()), float("inf")) for u in alive
    ]

    def exemplar_loop():
        return torch.stack(
            [
                us.neuron_conductance(model, x[18 * u : 18 * u + 18], layer, [u], n_steps=20, method="gausslegendre")
                for u in range(16)
            ]
        )

    def paired():
        return us.neuron_conductance(
            model,
            x[:100],
            layer,
            pair_units,
            examples=pair_inputs,
            paired=True,
            n_steps=20,
            internal_batch_size=80,
            method="gausslegendre",
        )

    def many():
        sets = sample_inverse_sets(
            model,
            layer,
            problems,
            gen,
            n_samples=4,
            seeds=range(len(problems)),
            max_steps=100,
            block=64,
            progress=False,
        )
        return torch.cat([s.codes for s in sets])

    def single():
        out = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", InverseSetWarning)
            for u, lo, hi in problems[:8]:
                out.append(
                    us.sample_inverse_set(
                        model,
                        (layer, u, lo, hi),
                        gen,
                        n_samples=4,
                        n_seeds=4,
                        sampler=us.SamplerConfig(max_seed_steps=100),
                        seed=u,
                        progress=False,
                        on_empty="ignore",
                    ).codes
                )
        return torch.cat(out)

    us.independent_am(model, layer, [0], shape=(1, 8, 8), steps=1, progress=False)  # first-time imports
    cases = {
        "neuron_conductance_one_unit": exemplar_loop,
        "neuron_conductance_paired": paired,
        "sample_inverse_sets": many,
        "sample_inverse_set": single,
    }
    out = {
        "bench": "slices",
        "model": "digits-cnn",
        "layer": layer,
        "device": str(device),
        "threads": args.threads,
        "repeat": args.repeat,
        "cases": {},
    }
    for name, fn in cases.items():
        best = {"sliced": float("inf"), "full": float("inf")}
        got = {}
        for _ in range(args.repeat):
            for side in ("sliced", "full"):
                with Stopwatch(device, time.perf_counter) as t:
                    if side == "full":
                        with full_layers():
                            got[side] = fn()
                    else:
                        got[side] = fn()
                best[side] = min(best[side], t.seconds)
        out["cases"][name] = {
            "sliced_seconds": best["sliced"],
            "full_seconds": best["full"],
            "speedup": best["full"] / best["sliced"],
            "identical": bool(torch.equal(got["sliced"], got["full"])),
        }
        print(
            f"{name}: full {best['full']:.2f} s, sliced {best['sliced']:.2f} s, "
            f"×{best['full'] / best['sliced']:.2f}, identical {out['cases'][name]['identical']}",
            flush=True,
        )
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
