"""unitscope vs Captum's LayerConductance on a real pretrained transformer (all-MiniLM-L6-v2 + the sentiment head),
measured side by side in one run.

    .venv/bin/python bench/transformer.py           # 8 test sentences, 20 steps, 3 timed rounds (a few minutes)
    .venv/bin/python bench/transformer.py --quick   # smoke run (2 sentences, 4 steps, 1 round)
    .venv/bin/python bench/transformer.py --quick --device cuda   # model, tensors and Captum's side on the GPU

Attributions start at the word-embedding output (baseline: the [PAD] embedding at every non-special token), the
attention mask goes through ``additional_forward_args``, the target is each sentence's predicted class (handed
to both sides explicitly), the rule is ``riemann_trapezoid`` with the same ``n_steps`` on both sides and
``internal_batch_size=None``.

* speed — our conductance of the six MLP activation layers (``[tokens × 1536]`` each) in ONE call
  (``captum_compatible=True``) against Captum's ``LayerConductance`` called once per layer; a warm-up, then
  interleaved rounds (so load from other processes hits both sides alike), medians of wall-clock seconds (the
  headline) and of process CPU seconds (one torch thread: the work done, insensitive to other processes' load);
  ``one_call_ratio``: our six-layer call over Captum's call for the lowest layer alone;
* agreement — max over layers of ``max|ours − captum| / max|captum|``;
* our default estimate (trapezoid on the layer path) timed too, with its MLP share and its completeness gap at
  the residual stream after each layer (the MLP neurons alone are not a cut of a residual network);
* Captum on a tuple-output layer (``attention.self``): what happens.

The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import warnings

import torch
from _timing import Stopwatch, add_device, device_of

TARGETS = {"speedup_vs_captum_6_layers": (">=", 4.0), "max_rel_diff_vs_captum": ("<=", 1e-4)}


def timed(fns: dict, repeats: int, device) -> tuple[dict, dict, dict]:
    """Warm each callable up once, then ``repeats`` interleaved rounds: wall-clock seconds and process CPU seconds
    per round (on CUDA both between two synchronizes), and the last result."""
    results = {k: f() for k, f in fns.items()}
    times = {k: [] for k in fns}
    cpu = {k: [] for k in fns}
    for _ in range(repeats):
        for k, f in fns.items():
            with Stopwatch(device) as t:
                results[k] = f()
            times[k].append(t.wall)
            cpu[k].append(t.cpu)
    return times, cpu, results


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--sentences", type=int, default=8)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (default 1: the machine is shared; CPU seconds are then a fair work measure)",
    )
    add_device(ap)
    args = ap.parse_args(argv)
    device = device_of(args.device)
    if args.quick:
        args.sentences, args.steps, args.repeats = 2, 4, 1
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore", UserWarning)

    import unitscope as us
    from captum.attr import LayerConductance
    from unitscope.zoo.minilm import attention_layers, minilm_sentiment, mlp_layers
    from unitscope.zoo.sentiment import movie_reviews

    lm = minilm_sentiment(progress=False)
    sentences = movie_reviews().test.sentences[: args.sentences]
    enc = lm.encode(sentences)  # on the CPU: lm.encode embeds the ids with lm.model, not yet moved
    model = lm.model.to(device)
    x, base, mask = (t.to(device) for t in (enc.embeddings, enc.baselines, enc.attention_mask))
    with torch.no_grad():
        target = model(x, mask).argmax(1).tolist()
    layers = mlp_layers()
    kw = dict(target=target, n_steps=args.steps, method="riemann_trapezoid", internal_batch_size=None)

    def ours():
        return us.conductance(
            model,
            x,
            layers,
            baselines=base,
            additional_forward_args=(mask,),
            path=us.PathConfig(captum_compatible=True, gap_warning=None),
            progress=False,
            **kw,
        )

    def captum(layer):
        lc = LayerConductance(model, model.get_submodule(layer))
        return lambda: lc.attribute(x, baselines=base, additional_forward_args=(mask,), **kw)

    times, cpu, res = timed({"ours": ours, **{layer: captum(layer) for layer in layers}}, args.repeats, device)
    rel = {
        layer: float((res["ours"][layer] - res[layer]).abs().max() / res[layer].abs().max().clamp_min(1e-12))
        for layer in layers
    }
    t = {k: statistics.median(v) for k, v in times.items()}
    captum_total = sum(t[layer] for layer in layers)
    c = {k: statistics.median(v) for k, v in cpu.items()}

    # our default estimate, timed alone, with the residual-stream cuts in the same call
    cuts = [f"bert.encoder.layer.{i}" for i in range(6)]
    with Stopwatch(device) as t0:
        s = us.conductance(
            model,
            x,
            layers + cuts,
            baselines=base,
            additional_forward_args=(mask,),
            path=us.PathConfig(gap_warning=None),
            progress=False,
            **kw,
        )
    default_s = t0.wall
    diff = s.output_diff.abs().clamp_min(1e-12)
    mlp_share = [float((s[layer].flatten(1).sum(1) / s.output_diff).median()) for layer in layers]
    cut_gap = [float((s.delta[c].abs() / diff).max()) for c in cuts]

    try:  # Captum on a layer whose output is a tuple (BertSelfAttention returns (context, weights))
        LayerConductance(model, model.get_submodule(attention_layers(1)[0])).attribute(
            x[:1], baselines=base[:1], additional_forward_args=(mask[:1],), target=target[:1], n_steps=2
        )
        captum_tuple = "ran"
    except Exception as e:  # noqa: BLE001 — we report whatever Captum raises
        captum_tuple = f"{type(e).__name__}: {str(e)[:160]}"
    theirs_tuple = us.conductance(
        model,
        x[:1],
        attention_layers(1),
        baselines=base[:1],
        additional_forward_args=(mask[:1],),
        target=target[:1],
        n_steps=4,
        path=us.PathConfig(gap_warning=None),
        progress=False,
    )

    result = {
        "model": "all-MiniLM-L6-v2 + linear sentiment head (from word embeddings)",
        "n_sentences": len(sentences),
        "tokens_per_sentence": enc.lengths.tolist(),
        "n_steps": args.steps,
        "rule": "riemann_trapezoid",
        "repeats": args.repeats,
        "threads": args.threads,
        "device": str(device),
        "ours_s": t["ours"],
        "captum_s": {layer: t[layer] for layer in layers},
        "captum_total_s": captum_total,
        "speedup_vs_captum_6_layers": captum_total / t["ours"],
        "best_speedup_vs_captum_6_layers": sum(min(times[layer]) for layer in layers) / min(times["ours"]),
        "cpu_ours_s": c["ours"],
        "cpu_captum_total_s": sum(c[layer] for layer in layers),
        "cpu_speedup_vs_captum_6_layers": sum(c[layer] for layer in layers) / c["ours"],
        "one_call_ratio": t["ours"] / t[layers[0]],
        "cpu_one_call_ratio": c["ours"] / c[layers[0]],
        "rel_diff_vs_captum": rel,
        "max_rel_diff_vs_captum": max(rel.values()),
        "ours_default_estimate_s": default_s,
        "ours_default_mlp_share_median": mlp_share,
        "ours_default_residual_cut_gap_max": cut_gap,
        "captum_on_tuple_output_layer": captum_tuple,
        "ours_on_tuple_output_layer_shape": [list(p.shape) for p in theirs_tuple[attention_layers(1)[0]]],
        "times_s": times,
        "cpu_s": cpu,
    }
    result["targets_met"] = {k: (result[k] >= v) if op == ">=" else (result[k] <= v) for k, (op, v) in TARGETS.items()}
    print(
        f"{len(sentences)} sentences, {args.steps} steps: ours (6 layers, one call) {t['ours']:.2f}s, Captum "
        f"{captum_total:.2f}s over 6 calls → speed-up {result['speedup_vs_captum_6_layers']:.2f}×; "
        f"max rel diff {result['max_rel_diff_vs_captum']:.2e}"
    )
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
