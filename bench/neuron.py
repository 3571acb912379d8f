"""Per-input conductance through whole channels (Eq. 2 summed over a filter's units): unitscope vs Captum.

    .venv/bin/python bench/neuron.py            # full run (a few minutes on 2 CPU cores)
    .venv/bin/python bench/neuron.py --quick    # smoke run (fewer channels and steps)
    .venv/bin/python bench/neuron.py --quick --device cuda   # both sides on the GPU (wall time after a synchronize)

The paper's filter conductance of input feature i is the SUM over the channel's units j of each unit's conductance,
Σ_j (x_i − x'_i) ∫ ∂F/∂y_j · ∂y_j/∂x_i dα. Captum's reference for that quantity is one ``NeuronConductance`` call per
unit of the channel, summed (its summed-channel selector computes a different quantity; see tests/test_neuron.py).
Side by side, in one run, same Gauss–Legendre rule and steps, same targets (the top class, passed explicitly):

(a) the digits CNN of the zoo (real test digits), second conv layer ``features.conv2``, all 64 channels;
(b) EfficientNet-Lite0 (ImageNet weights) on the cat photo, two channels of ``blocks.5`` (7×7 units each).

The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import time
import warnings

import torch
from _timing import add_device, clock, device_of
from captum.attr import NeuronConductance

import unitscope as us
from unitscope.core.sites import resolve


def timed(fn, device, repeats=1):
    """``(result, best wall seconds)`` over ``repeats`` runs; on CUDA between two synchronizes."""
    best, out = float("inf"), None
    for _ in range(repeats):
        sec, out = clock(fn, device, time.perf_counter)
        best = min(best, sec)
    return out, best


def compare(model, x, layer, channels, target, n_steps, repeats):
    module = resolve(model, [layer])[0].module
    _, hh, ww = us.activation(model, x[:1], [layer])[layer].shape[1:]  # the layer's unit shape, hooks via unitscope
    ours, t_ours = timed(
        lambda: us.neuron_conductance(
            model,
            x,
            layer,
            units=list(channels),
            target=target,
            n_steps=n_steps,
            method="gausslegendre",
            path=us.PathConfig(unit_batch_size=16),
        ),
        x.device,
        repeats,
    )
    nc = NeuronConductance(model, module)

    def captum():
        refs = []
        for c in channels:
            ref = None
            for i in range(hh):
                for j in range(ww):
                    a = nc.attribute(
                        x, neuron_selector=(c, i, j), target=target, n_steps=n_steps, method="gausslegendre"
                    ).detach()
                    ref = a if ref is None else ref + a
            refs.append(ref)
        return torch.stack(refs, 1)  # [N, U, *input_shape], as unitscope returns

    ref, t_captum = timed(captum, x.device, 1)
    rel = float((ours - ref).abs().max() / ref.abs().max())
    return {
        "layer": layer,
        "channels": len(channels),
        "units_per_channel": hh * ww,
        "n_examples": int(x.shape[0]),
        "n_steps": n_steps,
        "captum_calls": len(channels) * hh * ww,
        "seconds_ours": round(t_ours, 3),
        "seconds_captum": round(t_captum, 3),
        "speedup": round(t_captum / t_ours, 1),
        "max_rel_diff": rel,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    add_device(p)
    args = p.parse_args()
    device = device_of(args.device)
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    from unitscope.zoo import digits_cnn, digits_data, efficientnet_lite0, photos

    results = {}
    digits = digits_cnn().model.to(device)
    _, test = digits_data()
    x = test.x[:4].to(device)
    with torch.no_grad():
        target = digits(x).argmax(1).tolist()
    channels = range(8) if args.quick else range(64)  # the issue: all channels
    results["digits"] = r = compare(digits, x, "features.conv2", channels, target, 16 if args.quick else 32, repeats=3)
    print(
        f"digits CNN features.conv2: {r['channels']} channels × {r['units_per_channel']} units, "
        f"{r['n_examples']} digits, {r['n_steps']} steps: ours {r['seconds_ours']:.2f} s, Captum "
        f"({r['captum_calls']} NeuronConductance calls) {r['seconds_captum']:.2f} s → ×{r['speedup']}, "
        f"max rel diff {r['max_rel_diff']:.1e}",
        flush=True,
    )

    net = efficientnet_lite0(device)
    model = net.model
    cat = net.preprocess(photos()["cat"]).unsqueeze(0).to(device)
    with torch.no_grad():
        target = int(model(cat).argmax(1))
    results["effnet"] = r = compare(model, cat, "blocks.5", [0, 1], target, 4 if args.quick else 8, repeats=1)
    print(
        f"EfficientNet-Lite0 blocks.5 on the cat (class {target}): {r['channels']} channels × "
        f"{r['units_per_channel']} units, {r['n_steps']} steps: ours {r['seconds_ours']:.2f} s, Captum "
        f"({r['captum_calls']} calls) {r['seconds_captum']:.2f} s → ×{r['speedup']}, "
        f"max rel diff {r['max_rel_diff']:.1e}",
        flush=True,
    )
    print(
        json.dumps(
            {
                "speedup_vs_captum_digits": results["digits"]["speedup"],
                "speedup_vs_captum_effnet": results["effnet"]["speedup"],
                "max_rel_diff_vs_captum": max(results["digits"]["max_rel_diff"], results["effnet"]["max_rel_diff"]),
                "mode": "quick" if args.quick else "full",
                "device": str(device),
                "details": results,
            }
        )
    )


if __name__ == "__main__":
    main()
