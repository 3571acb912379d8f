"""Per-unit accuracy of conductance against evaluations per example: ours (adaptive default, Gauss–Legendre) vs
Captum's LayerConductance, side by side in one run; the error bars' coverage; the cost of one evaluation.

    python bench/accuracy.py --quick            # small: 1 photo, 2 blocks, 4 sentences, 2 MLP layers,
                                                # 1,024-point reference
    python bench/accuracy.py                    # full: 4,096-point reference, blocks.0–6 on the 6 photos, 16 test
                                                # sentences and MiniLM's 6 MLP layers, convnext_atto (--device cuda)

Models: EfficientNet-Lite0 ``blocks.0``–``blocks.6`` on the bundled photos (the predicted class); MiniLM (the zoo's
sentiment head, log-odds) on the first 16 sentences of the movie-review test split, its MLP activations
(neurons summed over tokens); timm ``convnext_atto`` (random weights, zero baseline: a near-singular path).

Error of a unit = |estimate − reference| / (the layer's largest |unit| in the reference), for the reference's
top-10 units (channels of conv layers, neurons summed over tokens for MiniLM) of every example and layer.
The reference is our adaptive rule at 4,096 (quick: 1,024) evaluations with ``rtol=1e-9`` — a different,
far more refined estimate of the same integral; its own error bar is printed (``reference error``).

``error_bound_coverage`` (issue 13): the share of top-10 units of the adaptive default, pooled over every model,
layer, example and budget whose reference is ok, for which the error estimate bounds the true error within a
factor of 3: ``true ≤ 3 · s.unit_error``. Printed beside it: the share with ``true ≤ s.unit_error`` (a strict
bound) and with ``s.unit_error ≤ 3 · true`` (not too loose), and the median estimate/true.
``evals_for_1pct``: evaluations per example for ≤ 1 % on all top-10 units (the largest tried + 1 when never).
``cost_per_eval_ratio``: seconds per evaluation of the adaptive default / the values-only trapezoid of
consecutive nodes (what the engine did before). The last line is a JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import time
import warnings

import numpy as np
import torch
import torch.nn as nn
from _timing import add_device, clock, device_of

import unitscope as us
from unitscope.attribution import paths
from unitscope.attribution.engine import integrate
from unitscope.attribution.estimates import reduce_units
from unitscope.core.inputs import make_target, prepare
from unitscope.core.sites import resolve
from unitscope.core.state import analysis_mode


def _units(t: torch.Tensor) -> torch.Tensor:
    return reduce_units(t.detach().double()).cpu()


def _errors(est: torch.Tensor, ref: torch.Tensor, k: int = 10) -> np.ndarray:
    """[N, k] relative errors of the reference's top-k units."""
    e, r = _units(est), _units(ref)
    idx = r.abs().topk(min(k, r.shape[1]), dim=1).indices
    scale = r.abs().amax(1, keepdim=True).clamp_min(1e-30)
    return ((e - r).abs().gather(1, idx) / scale).numpy()


def _case(name, model, x, layers, *, baselines, extra, steps, ref_steps, ibs, captum_steps):
    from captum.attr import LayerConductance

    kw = dict(baselines=baselines, target=0, additional_forward_args=extra, progress=False, internal_batch_size=ibs)
    quiet = us.PathConfig(gap_warning=None)
    ref_s, ref = clock(
        lambda: us.conductance(
            model, x, layers, n_steps=ref_steps, path=us.PathConfig(rtol=1e-9, gap_warning=None), **kw
        ),
        x.device,
        time.perf_counter,
    )
    out = {
        "reference_evals": int(ref.n_evals.max()),
        "reference_s": ref_s,
        "curves": {},
        "ok": {layer: bool(ref.ok[layer]) for layer in layers},
    }
    curves = {"ours (adaptive)": {}, "ours (gausslegendre)": {}, "captum": {}}
    units = []  # per top-10 unit of the adaptive default: (true error, estimate, reference's error), / scale
    for n in steps:
        s = us.conductance(model, x, layers, n_steps=n, path=quiet, **kw)
        errs = [_errors(s[layer], ref[layer]) for layer in layers]
        curves["ours (adaptive)"][n] = (float(np.mean(s.n_evals.cpu().numpy())), float(max(e.max() for e in errs)))
        for layer in layers:
            r = _units(ref[layer])
            idx = r.abs().topk(min(10, r.shape[1]), dim=1).indices
            scale = r.abs().amax(1, keepdim=True).clamp_min(1e-30)
            true = (_units(s[layer]) - r).abs().gather(1, idx) / scale
            est = s.unit_error[layer].double().cpu().gather(1, idx) / scale
            rerr = ref.unit_error[layer].double().cpu().gather(1, idx) / scale
            if out["ok"][layer]:  # a reference that is not ok is no reference
                units.append(torch.stack([true, est, rerr], -1).reshape(-1, 3).numpy())
        if n <= 64 and "gausslegendre" not in out.get("unsupported", ""):
            try:
                g = us.conductance(model, x, layers, n_steps=n, method="gausslegendre", path=quiet, **kw)
            except us.UnitscopeError as e:  # e.g. SDPA attention has no forward-mode derivative
                out["unsupported"] = f"gausslegendre: {e}"
                print(f"  (gausslegendre not available: {str(e).splitlines()[0][:160]})")
                continue
            curves["ours (gausslegendre)"][n] = (
                float(g.n_evals.max()),
                float(max(_errors(g[layer], ref[layer]).max() for layer in layers)),
            )
    for n in captum_steps:
        worst = 0.0
        for layer in layers:
            lc = LayerConductance(model, model.get_submodule(layer))
            c = lc.attribute(
                x, baselines=baselines, target=0, additional_forward_args=extra, n_steps=n, internal_batch_size=ibs
            ).detach()
            worst = max(worst, float(_errors(c, ref[layer]).max()))
        curves["captum"][n] = (n + 1, worst)  # LayerConductance evaluates n + 1 nodes
    out["curves"] = curves
    out["units"] = np.concatenate(units) if units else np.zeros((0, 3))
    out.update(_coverage(out["units"]))
    print(
        f"\n{name}: layers {layers}; reference {out['reference_evals']} evaluations "
        f"({out['reference_s']:.0f} s); reference ok: {out['ok']}"
    )
    for label, c in curves.items():
        print(f"  {label:<22}" + "  ".join(f"{ev:6.0f} ev: {100 * err:7.3f}%" for ev, err in c.values()))
    if out["units"].shape[0]:
        print(
            f"  error bars (adaptive): true ≤ 3·estimate for {100 * out['coverage']:.0f}% of top-10 units, "
            f"true ≤ estimate {100 * out['strict']:.0f}%, estimate ≤ 3·true {100 * out['tight']:.0f}%, median "
            f"estimate/true {out['est_over_true_median']:.2f}; reference error ≤ "
            f"{100 * out['reference_error_max']:.3f}% of the largest |unit|",
            flush=True,
        )
    else:
        print("  error bars: no layer with an ok reference (excluded from the coverage)", flush=True)
    return out


def _coverage(u: np.ndarray) -> dict:
    """``u``: rows (true, estimate, reference error), relative to the layer's largest |unit|."""
    if not u.shape[0]:
        return {
            "coverage": None,
            "strict": None,
            "tight": None,
            "est_over_true_median": None,
            "reference_error_max": None,
            "n_units": 0,
        }
    true, est, rerr = u[:, 0], u[:, 1], u[:, 2]
    return {
        "coverage": float(np.mean(true <= 3 * est)),
        "strict": float(np.mean(true <= est)),
        "tight": float(np.mean(est <= 3 * true)),
        "est_over_true_median": float(np.median(est / np.maximum(true, 1e-30))),
        "reference_error_max": float(rerr.max()),
        "n_units": int(u.shape[0]),
    }


def _evals_for(curve: dict, target: float = 0.01):
    hit = [ev for ev, err in curve.values() if err <= target]
    return min(hit) if hit else max(ev for ev, _ in curve.values()) + 1


def _cost_per_eval(model, x, layer, device, n=32, repeats=2):
    """Seconds per evaluation: the values-only trapezoid of consecutive nodes (what the engine did before), the
    adaptive default, and Gauss–Legendre with dy/dα by forward-mode autodiff."""
    sites = resolve(model, [layer])
    batch = prepare(x, None, None, device=device)
    times = {}
    with analysis_mode(model):
        out = model(x)
        tgt = make_target(None, x.shape[0], out)
        alphas, weights = paths.path_nodes("gausslegendre", n)
        for label, fn in (
            ("trapezoid", lambda: integrate(model, batch, tgt, sites, alphas, weights, conductance="trapezoid")),
            ("gausslegendre_jvp", lambda: integrate(model, batch, tgt, sites, alphas, weights, conductance="jvp")),
        ):
            best = min(clock(fn, device, time.perf_counter)[0] for _ in range(repeats))
            times[label] = best / alphas.numel()
    best, evals = None, None
    for _ in range(repeats):
        dt, s = clock(
            lambda: us.conductance(
                model, x, [layer], n_steps=n + 2, path=us.PathConfig(gap_warning=None), progress=False
            ),
            device,
            time.perf_counter,
        )
        if best is None or dt < best:
            best, evals = dt, float(s.n_evals.float().mean())
    times["adaptive"] = best / evals
    return times


class _LogOdds(nn.Module):
    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, emb, mask):
        from unitscope.zoo.minilm import log_odds

        return log_odds(self.m(emb, mask)).unsqueeze(1)  # [N, 1]: target 0 is the log-odds


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_device(p)
    p.add_argument("--quick", action="store_true")
    p.add_argument(
        "--out",
        default=os.path.join(os.path.dirname(__file__), "results", "accuracy"),
        help="folder for the figure, the JSON summary and the report's manifest entry",
    )
    p.add_argument(
        "--manifest-from",
        metavar="JSON",
        help="only (re)write the report's manifest entry in --out from "
        "the JSON summary of an earlier run (its figure beside it)",
    )
    args = p.parse_args(argv)
    if args.manifest_from:
        with open(args.manifest_from) as f:
            summary = json.load(f)
        _manifest(args.out, summary, os.path.basename(summary["figure"]), summary["quick"])
        return
    torch.manual_seed(0)
    warnings.simplefilter("ignore", us.CompletenessWarning)
    args.device = device_of(args.device)
    q = args.quick
    ref_steps = 1024 if q else 4096
    steps = (16, 32, 64, 128) if q else (16, 32, 64, 128, 256, 512)
    captum_steps = (16, 64, 256, 512) if q else (16, 32, 64, 128, 256, 512)
    print(
        f"accuracy bench ({'quick' if q else 'full'}): reference = adaptive at {ref_steps} evaluations per example"
        f"{' (quick mode: 1,024, not 4,096)' if q else ''}; device {args.device}; torch threads "
        f"{torch.get_num_threads()}"
    )
    t_all = time.perf_counter()
    results = {}

    from unitscope.zoo import efficientnet_lite0, photos

    eff = efficientnet_lite0(args.device)
    names = ["cat"] if q else list(photos())
    imgs = torch.stack([eff.preprocess(im) for im in photos(names).values()]).to(args.device)
    with torch.no_grad():
        cls = eff.model(imgs).argmax(1)

    # a fixed class per row: Captum expands examples × steps example-major; ours too
    class _Fixed(nn.Module):
        def __init__(self, m, c):
            super().__init__()
            self.m, self.c = m, c

        def forward(self, x):
            return self.m(x)[:, int(self.c) : int(self.c) + 1]

    blocks = ["m.blocks.1", "m.blocks.3"] if q else [f"m.blocks.{i}" for i in range(7)]
    eff_runs = []
    for i in range(imgs.shape[0]):
        net = _Fixed(eff.model, cls[i]).eval()
        eff_runs.append(
            _case(
                f"EfficientNet-Lite0 {names[i]}",
                net,
                imgs[i : i + 1],
                blocks,
                baselines=None,
                extra=None,
                steps=steps,
                ref_steps=ref_steps,
                ibs=32,
                captum_steps=captum_steps,
            )
        )
    results["effnet"] = _merge(eff_runs)
    cost = _cost_per_eval(eff.model, imgs[:1], "blocks.3", args.device)
    print(f"seconds per evaluation (EfficientNet-Lite0 blocks.3): {cost}", flush=True)

    from unitscope.zoo.minilm import minilm_sentiment, mlp_layers
    from unitscope.zoo.sentiment import movie_reviews

    trained = minilm_sentiment(progress=False)  # cached in the user cache after its first training
    sents = movie_reviews().test.sentences[: 4 if q else 16]
    enc = trained.encode(sents)  # on the CPU: encode embeds the ids with trained.model, not yet moved
    lm = _LogOdds(trained.model).eval().to(args.device)
    layers = ["m." + n for n in (mlp_layers()[:2] if q else mlp_layers())]
    results["minilm"] = _case(
        f"MiniLM MLP ({len(sents)} test sentences)",
        lm,
        enc.embeddings.to(args.device),
        layers,
        baselines=enc.baselines.to(args.device),
        extra=(enc.attention_mask.to(args.device),),
        steps=steps,
        ref_steps=ref_steps,
        ibs=64,
        captum_steps=captum_steps,
    )

    import timm

    torch.manual_seed(0)
    cnx = _Fixed(timm.create_model("convnext_atto", pretrained=False).eval(), 0).to(args.device).eval()
    xc = torch.randn(2, 3, 64, 64, device=args.device)
    results["convnext"] = _case(
        "convnext_atto (random weights, zero baseline)",
        cnx,
        xc,
        ["m.stages.1"],
        baselines=None,
        extra=None,
        steps=steps,
        ref_steps=ref_steps,
        ibs=128,
        captum_steps=captum_steps,
    )

    pooled = _coverage(np.concatenate([v["units"] for v in results.values()]))
    summary = {
        # a model whose reference is not ok (convnext_atto's near-singular path) has no errors to count: null
        "evals_for_1pct": {
            k: {
                "ours": _evals_for(v["curves"]["ours (adaptive)"]) if all(v["ok"].values()) else None,
                "captum": _evals_for(v["curves"]["captum"]) if all(v["ok"].values()) else None,
            }
            for k, v in results.items()
        },
        "error_bound_coverage": pooled["coverage"],
        "error_bound_detail": pooled,
        "error_bound_coverage_per_model": {k: v["coverage"] for k, v in results.items()},
        "cost_per_eval_ratio": cost["adaptive"] / cost["trapezoid"],
        "cost_per_eval_ratio_gausslegendre_jvp": cost["gausslegendre_jvp"] / cost["trapezoid"],
        "seconds_per_eval": cost,
        "reference_ok": {k: v["ok"] for k, v in results.items()},
        "curves": {k: v["curves"] for k, v in results.items()},
        "quick": q,
        "reference_evals": ref_steps,
        "total_s": time.perf_counter() - t_all,
        "torch": torch.__version__,
        "device": str(args.device),
    }
    os.makedirs(args.out, exist_ok=True)
    fig = _figure(results, os.path.join(args.out, f"accuracy{'_quick' if q else ''}.png"))
    summary["figure"] = fig
    with open(os.path.join(args.out, f"accuracy{'_quick' if q else ''}.json"), "w") as f:
        json.dump(summary, f, indent=1)
    _manifest(args.out, summary, os.path.basename(fig), q)
    print(f"\nevaluations per example for 1 % on all top-10 units: {summary['evals_for_1pct']}")
    print(
        f"error bars, pooled over {pooled['n_units']} top-10 units with an ok reference: true ≤ 3·estimate "
        f"{pooled['coverage']:.3f}, true ≤ estimate {pooled['strict']:.3f}, estimate ≤ 3·true {pooled['tight']:.3f}"
    )
    print(
        f"cost per evaluation vs the values-only trapezoid: adaptive ×{summary['cost_per_eval_ratio']:.2f}, "
        f"Gauss–Legendre with forward-mode dy/dα ×{summary['cost_per_eval_ratio_gausslegendre_jvp']:.2f}"
    )
    print(json.dumps(summary))


def _manifest(out, summary, figure, quick):
    """The report's accuracy notes: a manifest entry in ``out`` (rendered by ``unitscope report``), from this run."""
    from unitscope.report.manifest import write_entry

    pooled, e1 = summary["error_bound_detail"], summary["evals_for_1pct"]
    heads = [
        "Evaluations per example for 1 % of the layer's largest |unit| on all top-10 units, ours (adaptive) vs "
        "Captum's LayerConductance: "
        + "; ".join(f"{k} {v['ours']} vs {v['captum']}" for k, v in e1.items() if v["ours"] is not None)
        + " (the largest tried + 1 where never reached)."
    ]
    if pooled["n_units"]:
        heads.append(
            f"Error bars: the per-unit error estimate bounds the true error within a factor of 3 for "
            f"{100 * pooled['coverage']:.0f} % of {pooled['n_units']} top-10 units (strict bound "
            f"{100 * pooled['strict']:.0f} %, estimate within 3× above the true error "
            f"{100 * pooled['tight']:.0f} %); "
            "per model: "
            + ", ".join(
                f"{k} {100 * v:.0f} %" for k, v in summary["error_bound_coverage_per_model"].items() if v is not None
            )
            + " (target ≥ 90 %)."
        )
    nodes = _nodes_summary()
    if nodes:
        heads.append(nodes)
    heads.append(
        f"One adaptive evaluation costs {summary['cost_per_eval_ratio']:.2f}× one evaluation of the "
        f"values-only trapezoid (Gauss–Legendre with forward-mode dy/dα: "
        f"{summary['cost_per_eval_ratio_gausslegendre_jvp']:.2f}×), EfficientNet-Lite0 blocks.3."
    )
    write_entry(
        out,
        title="Accuracy of conductance: error bars and evaluations",
        description="bench/accuracy.py: the per-unit error of the top-10 units against a "
        f"{summary['reference_evals']}-evaluation reference, for our adaptive default, our "
        "Gauss–Legendre rule and Captum's LayerConductance, and how well the error estimates "
        "s.error / s.unit_error bound the true error.",
        headlines=heads,
        figures=[
            (
                figure,
                "Worst top-10-unit error relative to the layer's largest |unit| (y, log) against "
                "evaluations per example (x, log), one panel per model; the dashed line is 1 %.",
            )
        ],
        quick=quick,
        scale="1 photo, 2 blocks, 4 sentences, 2 MLP layers, 1,024-evaluation reference" if quick else None,
        name="accuracy",
        order=90,
    )


NODES_RESULTS = os.path.join(os.path.dirname(__file__), "results", "accuracy_nodes.txt")


def _nodes_summary(path=NODES_RESULTS):
    """A headline from bench/accuracy_nodes.py's last run (its JSON last line), if there is one: why EfficientNet-Lite0
    needs more than 32 evaluations for 1 %."""
    if not os.path.exists(path):
        return None
    with open(path) as f:
        lines = [line for line in f if line.startswith("{")]
    if not lines:
        return None
    res = json.loads(lines[-1])
    oracle = [o["32"]["error"] for r in res.values() for o in (v["oracle"] for v in r.values())]
    ada = [v["adaptive"]["32"]["error"] for r in res.values() for v in r.values()]
    cover = [c for r in res.values() for v in r.values() for c in (a["coverage"] for a in v["adaptive"].values())]
    return (
        f"Why EfficientNet-Lite0 needs more than 32 evaluations for 1 % (bench/accuracy_nodes.py, "
        f"{', '.join(res)}, blocks.1/3, against a 1,409-node graded grid): ReLU6 makes ∂F/∂y piecewise constant "
        "with a jump wherever a later ReLU6 switches, so the trapezoid's panel errors are random and first order "
        "(their root sum of squares halves with the panel width); 32 nodes placed by the measured error density "
        f"give {100 * min(oracle):.1f}–{100 * max(oracle):.1f} %, the adaptive default {100 * min(ada):.1f}–"
        f"{100 * max(ada):.1f} %; its error bars cover {100 * np.mean(cover):.0f} % of those top-10 channels "
        "within 3×."
    )


def _merge(runs):
    curves = {}
    for label in runs[0]["curves"]:
        curves[label] = {
            n: (
                float(np.mean([r["curves"][label][n][0] for r in runs])),
                float(max(r["curves"][label][n][1] for r in runs)),
            )
            for n in runs[0]["curves"][label]
        }
    units = np.concatenate([r["units"] for r in runs])
    return {
        "curves": curves,
        "units": units,
        **_coverage(units),
        "ok": {k: all(r["ok"][k] for r in runs) for k in runs[0]["ok"]},
    }


def _figure(results, path):
    from unitscope.report.figures import plt, save_figure

    fig, axes = plt.subplots(1, len(results), figsize=(4 * len(results), 3.2), squeeze=False)
    for ax, (name, r) in zip(axes[0], results.items()):
        for label, c in r["curves"].items():
            if c:
                ev, err = zip(*c.values())
                ax.loglog(ev, np.maximum(err, 1e-7), "o-", label=label)
        ax.axhline(0.01, color="gray", lw=0.8, ls="--")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("evaluations per example", fontsize=8)
        ax.set_ylabel("worst top-10 unit error / largest |unit|", fontsize=7)
        ax.legend(fontsize=6)
    fig.tight_layout()
    return save_figure(fig, path)


if __name__ == "__main__":
    main()
