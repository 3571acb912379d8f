"""Old tree against new: every number the path rules return, on many models and settings, compared bit for bit.

    PYTHONPATH=OLD/src .venv/bin/python bench/adaptive_identity.py --save old.pt
    PYTHONPATH=NEW/src .venv/bin/python bench/adaptive_identity.py --save new.pt
    .venv/bin/python bench/adaptive_identity.py --compare old.pt new.pt [--rtol 0]
    .venv/bin/python bench/adaptive_identity.py --quick --device cuda --save cuda.pt   # the same cases on the GPU;
    .venv/bin/python bench/adaptive_identity.py --compare cpu.pt cuda.pt --rtol 1e-4  # then CPU against GPU
    .venv/bin/python bench/adaptive_identity.py --quick --device cuda --save cuda.pt --against-cpu --rtol 1e-4  # both

Cases: the digits CNN's 13 layers (4 and 32 steps; adaptive, Gauss–Legendre, trapezoid, Captum-compatible; target
None and the labels; ``internal_batch_size`` None and small, so blocks and chunks split examples and nodes), a timm
ViT's token-major layers, a tuple layer, tuple inputs with an extra forward argument, a float64 CNN refined for many
rounds, and convnext_atto's near-singular path (the diagnosis). Saved per case: every ``Scores`` field (values,
delta, output_diff, error, unit_error, ok, messages, n_evals) and the adaptive rule's raw ``PathSums`` (diagnosis,
|∂F/∂y| profile). ``--compare`` prints per key whether it is identical (or its largest relative difference) and, as
last line, JSON with the counts; exit status 1 when something differs beyond ``--rtol``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch
from _timing import add_device, clock, device_of


def _flat(prefix, obj, out):
    if torch.is_tensor(obj):
        out[prefix] = obj.detach().cpu().clone()
    elif isinstance(obj, (tuple, list)):
        for i, o in enumerate(obj):
            _flat(f"{prefix}[{i}]", o, out)
    elif isinstance(obj, dict):
        for k in sorted(obj, key=str):
            _flat(f"{prefix}.{k}", obj[k], out)
    elif obj is None or isinstance(obj, (bool, int, float, str)):
        out[prefix] = obj
    else:
        out[prefix] = repr(obj)


def _scores(prefix, results, out):
    for m, s in results.items():
        p = f"{prefix}/{m}"
        _flat(p + "/values", {k: s[k] for k in s.layers}, out)
        for field in ("delta", "error", "unit_error", "ok", "messages"):
            _flat(f"{p}/{field}", dict(getattr(s, field)), out)
        _flat(p + "/output_diff", s.output_diff, out)
        _flat(p + "/n_evals", s.n_evals, out)


def _raw(prefix, model, x, layers, target, budget, out, **kw):  # x on the model's device
    from unitscope.attribution import adaptive
    from unitscope.core.inputs import make_target, prepare
    from unitscope.core.sites import resolve
    from unitscope.core.state import analysis_mode

    sites, batch = resolve(model, layers), prepare(x, None, None, device=x.device)
    if target is None:
        with torch.no_grad():
            target = model(x).argmax(1)
    with analysis_mode(model), torch.enable_grad():
        sums = adaptive.integrate_adaptive(
            model, batch, make_target(target, batch.n), sites, budget=budget, progress=False, **kw
        )
    for f in (
        "conductance",
        "influence",
        "value_at_x",
        "grad_at_x",
        "conductance_error",
        "influence_error",
        "conductance_unit_error",
        "influence_unit_error",
        "diagnosis",
        "grad_profile",
        "F_x",
        "F_baseline",
        "n_evals",
    ):
        _flat(f"{prefix}/raw/{f}", getattr(sums, f), out)


def cases(quick: bool = False, device="cpu"):
    import timm
    import torch.nn as nn

    import unitscope as us
    from unitscope.cli.scan import default_layers
    from unitscope.zoo import digits_cnn, digits_data

    sys.path.insert(0, "tests")
    from nets import TupleNet, TwoInputs, cnn
    from test_hf_models import _vit

    out = {}
    all_scores = ["conductance", "internal_influence", "grad_x_activation", "activation"]
    model = digits_cnn(progress=False).model.to(device)
    test = digits_data()[0]
    x, y = test.x[: 24 if quick else 48].to(device), test.y[: 24 if quick else 48].to(device)
    layers = default_layers(model)
    for n in (4, 32):
        for method in ("adaptive", "gausslegendre"):
            for tname, tgt in (("top", None), ("labels", y)):
                for ibs in (None, 100):
                    r = us.attribute(
                        model,
                        x,
                        layers,
                        scores=all_scores,
                        n_steps=n,
                        method=method,
                        target=tgt,
                        internal_batch_size=ibs,
                        path=us.PathConfig(gap_warning=None),
                        progress=False,
                    )
                    _scores(f"digits/{n}/{method}/{tname}/{ibs}", r, out)
        _raw(f"digits/{n}/raw", model, x, layers, None, n, out, rtol=1e-3)
    for method, ibs in (("riemann_trapezoid", 5), ("riemann_middle", None)):
        r = us.attribute(
            model,
            x[:8],
            layers,
            scores=all_scores,
            n_steps=8,
            method=method,
            internal_batch_size=ibs,
            path=us.PathConfig(gap_warning=None),
            progress=False,
        )
        _scores(f"digits/8/{method}/{ibs}", r, out)
    r = us.attribute(
        model,
        x[:8],
        layers,
        scores=["conductance", "internal_influence"],
        n_steps=8,
        path=us.PathConfig(captum_compatible=True, gap_warning=None),
        progress=False,
    )
    _scores("digits/8/captum", r, out)

    vit = _vit().to(device)
    xv = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(1)).to(device)
    vl = ["blocks.0", "blocks.1.mlp.act", "blocks.0.attn", "norm"]
    for n, method in ((16, "adaptive"), (64, "adaptive"), (16, "gausslegendre")):
        for tname, tgt in (("top", None), ("one", 1)):
            r = us.attribute(
                vit,
                xv,
                vl,
                scores=["conductance", "internal_influence"],
                n_steps=n,
                method=method,
                target=tgt,
                path=us.PathConfig(gap_warning=None),
                progress=False,
            )
            _scores(f"vit/{n}/{method}/{tname}", r, out)
    _raw("vit/64/raw", vit, xv, vl, 1, 64, out, rtol=1e-3, internal_batch_size=130)

    torch.manual_seed(0)
    tnet, xt = TupleNet().eval().to(device), torch.randn(5, 6).to(device)
    for method in ("adaptive", "gausslegendre"):
        r = us.attribute(
            tnet,
            xt,
            ["split", "fc1"],
            scores=all_scores,
            n_steps=20,
            method=method,
            path=us.PathConfig(gap_warning=None),
            progress=False,
        )
        _scores(f"tuple/{method}", r, out)
    two = TwoInputs().eval().to(device)
    x1, x2, sc = (t.to(device) for t in (torch.randn(4, 4), torch.randn(4, 3), torch.rand(4) + 0.5))
    r = us.attribute(
        two,
        (x1, x2),
        ["mix"],
        scores=all_scores,
        additional_forward_args=(sc,),
        n_steps=24,
        target=[0, 1, 2, 0],
        path=us.PathConfig(gap_warning=None),
        progress=False,
    )
    _scores("two_inputs/adaptive", r, out)

    torch.manual_seed(0)
    net64, x64 = cnn(5).double().eval().to(device), torch.randn(3, 3, 8, 8, dtype=torch.float64).to(device)
    _raw("cnn64/raw", net64, x64, ["3", "6", "10"], 1, 23, out, rtol=1e-12)
    _raw("cnn64/raw_ibs", net64, x64, ["3", "6"], 1, 40, out, rtol=1e-9, internal_batch_size=45)
    r = us.attribute(
        net64,
        x64,
        ["3", "6"],
        scores=["conductance", "internal_influence"],
        n_steps=64,
        path=us.PathConfig(rtol=1e-6, gap_warning=None),
        progress=False,
    )
    _scores("cnn64/adaptive", r, out)

    if not quick:
        torch.manual_seed(0)
        cx = timm.create_model("convnext_atto", pretrained=False).eval().to(device)
        xc = torch.randn(2, 3, 64, 64).to(device)
        r = us.attribute(
            cx,
            xc,
            ["stages.1"],
            scores=["conductance"],
            n_steps=64,
            path=us.PathConfig(gap_warning=None),
            progress=False,
        )
        _scores("convnext/adaptive", r, out)
        _raw("convnext/raw", cx, xc, ["stages.1"], None, 64, out, rtol=1e-3)
    del nn
    return out


def compare(a: dict, b: dict, rtol: float, show: int | None = None) -> dict:
    """Counts of identical, within-``rtol`` and differing keys; every non-identical key printed, or with ``show``
    only the first ``show`` that differ beyond ``rtol``."""
    import builtins

    same = close = differ = 0

    def print(line):  # noqa: A001 — the per-key lines, filtered by ``show``
        if show is None or (line.startswith(("DIFFER", "MISSING")) and differ < show):
            builtins.print(line)

    for k in sorted(set(a) | set(b)):
        if k not in a or k not in b:
            print(f"MISSING {k} ({'old' if k not in a else 'new'} lacks it)")
            differ += 1
            continue
        u, v = a[k], b[k]
        if torch.is_tensor(u) and torch.is_tensor(v):
            if u.shape == v.shape and u.dtype == v.dtype and torch.equal(u, v):
                same += 1
                continue
            if u.shape != v.shape or u.dtype != v.dtype:
                print(f"DIFFER {k}: {u.shape} {u.dtype} vs {v.shape} {v.dtype}")
                differ += 1
                continue
            if u.is_floating_point():
                d = (u.double() - v.double()).abs()
                rel = float((d / u.double().abs().clamp_min(1e-300)).nan_to_num(0).max())
                nan_same = torch.equal(u.isnan(), v.isnan())
                if nan_same and float(d.nan_to_num(0).max()) <= rtol * float(u.double().abs().nan_to_num(0).max()):
                    close += 1
                    print(f"close  {k}: max rel {rel:.3g}, max abs {float(d.nan_to_num(0).max()):.3g}")
                    continue
                print(f"DIFFER {k}: max rel {rel:.3g}, max abs {float(d.nan_to_num(0).max()):.3g}")
            else:
                print(f"DIFFER {k}: {int((u != v).sum())} of {u.numel()} entries")
            differ += 1
        elif u == v:
            same += 1
        else:
            print(f"DIFFER {k}: {u!r:.200} vs {v!r:.200}")
            differ += 1
    return {"identical": same, "within_rtol": close, "differ": differ, "rtol": rtol}


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--save")
    p.add_argument("--compare", nargs=2)
    p.add_argument("--rtol", type=float, default=0.0)
    p.add_argument("--quick", action="store_true")
    p.add_argument(
        "--against-cpu",
        action="store_true",
        help="with --save on a GPU: the same cases on the CPU too, compared with --rtol (counts in the JSON)",
    )
    add_device(p)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    device = device_of(args.device)
    if args.save:
        sec, out = clock(lambda: cases(args.quick, device), device, time.perf_counter)
        torch.save(out, args.save)
        res = {"saved": args.save, "keys": len(out), "device": str(device), "seconds": round(sec, 2)}
        if args.against_cpu:  # the CPU as the reference: "differ" counts what moves beyond rtol on this device
            cpu_sec, ref = clock(lambda: cases(args.quick, torch.device("cpu")), "cpu", time.perf_counter)
            res["vs_cpu"] = {**compare(ref, out, args.rtol, show=20), "cpu_seconds": round(cpu_sec, 2)}
        print(json.dumps(res))
    if args.compare:
        a, b = (torch.load(f, weights_only=True) for f in args.compare)
        res = compare(a, b, args.rtol)
        res["device"] = str(device)  # --compare itself reads two files: the devices they came from are theirs
        print(json.dumps(res))
        return 1 if res["differ"] else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
