"""unitscope vs Captum's LayerConductance, measured side by side in one run.

    .venv/bin/python bench/conductance.py            # full run (about 5 minutes on 2 idle CPU cores)
    .venv/bin/python bench/conductance.py --quick    # smoke run (small inputs, few steps; seconds)
    .venv/bin/python bench/conductance.py --profile  # torch.profiler tables: our digits call vs Captum's
    .venv/bin/python bench/conductance.py --quick --device cuda   # models, inputs and Captum's side on the GPU

Two models: the digits CNN of the zoo (real test digits) and torchvision's ResNet-18 (random weights, seed 0,
random 224×224 inputs). For each, five layers, one rule (riemann_trapezoid), the same n_steps and a fixed
target class per example (the model's prediction, passed explicitly to both sides):

* speed — our five layers in ONE call (``captum_compatible=True``) against Captum's ``LayerConductance``
  called once per layer; both with ``internal_batch_size=None``; warm-up once, then the median of repeats,
  taken in interleaved rounds so that load from other processes hits both sides alike;
* agreement — max over layers of ``max|ours − captum| / max|captum|``;
* accuracy — worst-layer relative completeness gap (max over examples) per rule and n_steps, for our
  default estimate, Captum's estimate (``captum_compatible=True``) and ``adaptive``. Note: ResNet-18 at
  initialisation has no biases before ``fc`` and identity BatchNorm, so it is positively homogeneous and,
  from the zero baseline, every ∂F/∂y below ``avgpool`` is 0 at α = 0 (ReLU'(0) = 0); rules with a node
  at α = 0 lose (part of) the first interval, hence gaps like exactly 1/n;
* memory — peak resident set (VmHWM) of a ResNet-18 call, 1 input, 5 layers, ``internal_batch_size=16``,
  at 100 and 400 steps, each in a fresh subprocess (``--peak N``); on CUDA the peak GPU memory torch allocated.

Times are wall seconds (``time.perf_counter``); on CUDA (``--device cuda``) between two ``torch.cuda.synchronize()``.

The last line printed is one JSON object with every number.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
import warnings

import torch
from _timing import add_device, clock, device_of, sync

THREADS = 2
RULES = ("riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid", "gausslegendre")
RESNET_LAYERS = ["layer1", "layer2", "layer3", "layer4", "avgpool"]  # input → output order
DIGITS_LAYERS = ["features.relu1", "features.relu2", "features.relu3", "features.relu4", "classifier.relu"]
TARGETS = {
    "speedup_vs_captum_5_layers": (">=", 4.0),
    "one_call_ratio": ("<=", 1.3),
    "max_rel_diff_vs_captum": ("<=", 1e-4),
}


# ------------------------------------------------------------------------------------------------------
# models and inputs


def resnet(size: int, n: int, device="cpu"):
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval().to(device)
    x = torch.randn(n, 3, size, size).to(device)  # drawn on the CPU: the same inputs on every device
    with torch.no_grad():
        target = model(x).argmax(1).tolist()  # a fixed class per example, handed to both sides
    return model, x, target


def digits(n: int, device="cpu"):
    from unitscope.zoo import digits_cnn, digits_data

    model = digits_cnn(progress=False).model.to(device)
    _, test = digits_data()
    return model, test.x[:n].to(device), test.y[:n].tolist()


# ------------------------------------------------------------------------------------------------------
# timing


def timed(fns: dict, repeats: int, device) -> tuple[dict, dict]:
    """Warm each callable up once, then run ``repeats`` interleaved rounds: seconds per round and last result
    (wall seconds; on CUDA between two synchronizes)."""
    results = {k: f() for k, f in fns.items()}
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, f in fns.items():
            sec, results[k] = clock(f, device, time.perf_counter)
            times[k].append(sec)
    return times, results


def compare_with_captum(model, x, layers, target, n_steps: int, repeats: int) -> dict:
    """Our 5-layer call vs one Captum call per layer: times, ratios and agreement."""
    import unitscope as us
    from captum.attr import LayerConductance

    def ours():
        return us.conductance(
            model,
            x,
            layers,
            target=target,
            n_steps=n_steps,
            method="riemann_trapezoid",
            internal_batch_size=None,
            path=us.PathConfig(captum_compatible=True, gap_warning=None),
        )

    def captum(layer):
        lc = LayerConductance(model, model.get_submodule(layer))
        return lambda: lc.attribute(
            x, target=target, n_steps=n_steps, method="riemann_trapezoid", internal_batch_size=None
        )

    times, res = timed({"ours": ours, **{layer: captum(layer) for layer in layers}}, repeats, x.device)
    rel = {
        layer: float((res["ours"][layer] - res[layer]).abs().max() / res[layer].abs().max().clamp_min(1e-12))
        for layer in layers
    }
    out = {
        "n_examples": x.shape[0],
        "n_steps": n_steps,
        "repeats": repeats,
        "times_s": times,
        "rel_diff_vs_captum": rel,
        "max_rel_diff_vs_captum": max(rel.values()),
    }
    # the headline numbers use medians; the same ratios from each side's fastest round are kept for reference
    for stat, fn in (("", statistics.median), ("best_", min)):
        t = {k: fn(v) for k, v in times.items()}
        out[stat + "ours_s"] = t["ours"]
        out[stat + "captum_total_s"] = sum(t[layer] for layer in layers)
        out[stat + "speedup_vs_captum_5_layers"] = out[stat + "captum_total_s"] / t["ours"]
        out[stat + "one_call_ratio"] = t["ours"] / t[layers[0]]  # vs Captum on the lowest (costliest) layer
    out["captum_s"] = {layer: statistics.median(times[layer]) for layer in layers}
    return out


# ------------------------------------------------------------------------------------------------------
# accuracy


def accuracy_table(model, x, layers, target, steps) -> dict:
    """Worst-layer relative completeness gap (max over examples) and evals per example, per estimate."""
    import unitscope as us

    def worst(captum_compatible=False, **kw):
        s = us.conductance(
            model,
            x,
            layers,
            target=target,
            path=us.PathConfig(gap_warning=None, captum_compatible=captum_compatible),
            **kw,
        )
        return max(float(s.relative_delta(layer).max()) for layer in layers), int(s.n_evals.max())

    table = {}
    for rule in RULES:
        table[f"{rule} ours"] = {n: worst(n_steps=n, method=rule) for n in steps}
        table[f"{rule} captum"] = {n: worst(n_steps=n, method=rule, captum_compatible=True) for n in steps}
    table["adaptive ours"] = {n: worst(n_steps=n, method="adaptive") for n in steps}
    return table


def print_table(title: str, table: dict, steps) -> None:
    print(f"\n{title}: worst-layer relative completeness gap, max over examples (evals per example)")
    print(f"{'estimate':<26}" + "".join(f"{f'n_steps={n}':>20}" for n in steps))
    for row, cells in table.items():
        print(f"{row:<26}" + "".join(f"{f'{g:.2e} ({e})':>20}" for g, e in (cells[n] for n in steps)))


# ------------------------------------------------------------------------------------------------------
# memory


def vm_hwm_mib() -> float:
    """This process's peak resident set (VmHWM, MiB). Unlike ``ru_maxrss`` it starts afresh at exec: Linux
    carries ``ru_maxrss`` over from the forked copy of the parent, so a child of a big parent reports the
    parent's size."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024


def peak(n_steps: int, size: int, device) -> None:
    """(subprocess) Peak RSS of one ResNet-18 call, 1 input, 5 layers, internal_batch_size=16; on CUDA the peak
    of the GPU memory torch allocated (``torch.cuda.max_memory_allocated``) instead, under the same keys."""
    import unitscope as us

    torch.set_num_threads(THREADS)
    model, x, target = resnet(size, 1, device)
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device) / 2**20 if cuda else vm_hwm_mib()
    us.conductance(
        model,
        x,
        RESNET_LAYERS,
        target=target,
        n_steps=n_steps,
        method="riemann_trapezoid",
        internal_batch_size=16,
        path=us.PathConfig(gap_warning=None),
        progress=False,
    )
    sync(device)
    print(
        json.dumps(
            {
                "n_steps": n_steps,
                "peak_mib": torch.cuda.max_memory_allocated(device) / 2**20 if cuda else vm_hwm_mib(),
                "peak_before_call_mib": before,
                "memory": "cuda" if cuda else "rss",
                "ru_maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            }
        )
    )


def measure_peak(n_steps: int, size: int, device) -> dict:
    cmd = [sys.executable, __file__, "--peak", str(n_steps), "--size", str(size), "--device", str(device)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def profile_digits(device) -> None:
    """(--profile) Where the time of our 5-layer digits call goes, next to Captum's call on the lowest layer."""
    import unitscope as us
    from captum.attr import LayerConductance
    from torch.profiler import profile

    torch.set_num_threads(THREADS)
    model, x, target = digits(32, device)
    kw = dict(target=target, n_steps=50, method="riemann_trapezoid")
    lc = LayerConductance(model, model.get_submodule(DIGITS_LAYERS[0]))
    calls = {
        "ours, 5 layers": lambda: us.conductance(
            model, x, DIGITS_LAYERS, path=us.PathConfig(captum_compatible=True, gap_warning=None), **kw
        ),
        f"captum, {DIGITS_LAYERS[0]}": lambda: lc.attribute(x, **kw),
    }
    for name, fn in calls.items():
        fn()  # warm-up
        with profile() as prof:
            fn()
            sync(device)
        print(f"\n{name}")
        print(
            prof.key_averages().table(
                sort_by="self_device_time_total" if device.type == "cuda" else "self_cpu_time_total", row_limit=15
            )
        )


# ------------------------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: small inputs, few steps")
    ap.add_argument("--profile", action="store_true", help="only profile our digits call next to Captum's")
    ap.add_argument("--peak", type=int, metavar="N", help="(internal) print the peak RSS of an N-step call")
    ap.add_argument("--size", type=int, default=224, help="(internal) ResNet input size for --peak")
    add_device(ap)
    args = ap.parse_args()
    device = device_of(args.device)
    if args.peak:
        return peak(args.peak, args.size, device)
    if args.profile:
        return profile_digits(device)

    torch.set_num_threads(THREADS)
    warnings.filterwarnings("ignore", category=UserWarning)  # Captum's and torch's chatter
    q = args.quick
    # repeats: more rounds where they are cheap (the digits), as other processes may share the 2 CPUs
    cfg = dict(
        digits_n=8 if q else 32,
        digits_steps=20 if q else 50,
        digits_repeats=3 if q else 7,
        resnet_n=1 if q else 2,
        resnet_size=64 if q else 224,
        resnet_steps=8 if q else 24,
        resnet_repeats=3,
        digits_acc_n=8 if q else 16,
        acc_steps=(10, 20) if q else (10, 20, 50, 100),
        resnet_acc_steps=(10,) if q else (10, 20),
    )
    t_start, sections = time.perf_counter(), {}
    load = {"start": os.getloadavg()[0]}
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}, "
        f"mode {'quick' if q else 'full'}, "
        f"load average {load['start']:.2f} on {os.cpu_count()} CPUs"
    )

    # peak memory first, each in a fresh process
    t0 = time.perf_counter()
    peaks = {n: measure_peak(n, cfg["resnet_size"], device) for n in (100, 400)}
    sections["peak"] = time.perf_counter() - t0
    print(
        f"\npeak {'CUDA memory allocated' if device.type == 'cuda' else 'RSS (VmHWM)'}, resnet18, 1 input of "
        f"{cfg['resnet_size']}², 5 layers, internal_batch_size=16:"
    )
    for n, p in peaks.items():
        print(
            f"  n_steps={n:<4} peak {p['peak_mib']:8.1f} MiB   (before the call {p['peak_before_call_mib']:.1f} MiB; "
            f"ru_maxrss {p['ru_maxrss_mib']:.1f} MiB)"
        )
    peak_ratio = peaks[400]["peak_mib"] / peaks[100]["peak_mib"]
    print(f"  peak_ratio_400_vs_100 {peak_ratio:.3f}")

    # (a) digits CNN, (b) ResNet-18: speed and agreement
    models = {
        "digits_cnn": (*digits(cfg["digits_n"], device), DIGITS_LAYERS, cfg["digits_steps"], cfg["digits_repeats"]),
        "resnet18": (
            *resnet(cfg["resnet_size"], cfg["resnet_n"], device),
            RESNET_LAYERS,
            cfg["resnet_steps"],
            cfg["resnet_repeats"],
        ),
    }
    runs = {}
    for name, (model, x, target, layers, n_steps, repeats) in models.items():
        t0 = time.perf_counter()
        runs[name] = r = compare_with_captum(model, x, layers, target, n_steps, repeats)
        sections[f"timing_{name}"] = time.perf_counter() - t0
        print(
            f"\n{name}: {r['n_examples']} examples, n_steps={n_steps}, riemann_trapezoid, "
            f"median of {r['repeats']} (interleaved)"
        )
        print(f"  ours, 5 layers in one call (captum_compatible)  {r['ours_s']:8.3f} s")
        for layer in layers:
            print(
                f"  captum LayerConductance {layer:<22}  {r['captum_s'][layer]:8.3f} s   "
                f"rel diff {r['rel_diff_vs_captum'][layer]:.1e}"
            )
        print(f"  captum, sum of 5 calls                          {r['captum_total_s']:8.3f} s")
        print(
            f"  speedup_vs_captum_5_layers {r['speedup_vs_captum_5_layers']:.2f}   "
            f"one_call_ratio {r['one_call_ratio']:.2f}   max_rel_diff {r['max_rel_diff_vs_captum']:.1e}"
        )
        print(
            f"  (fastest rounds: speedup {r['best_speedup_vs_captum_5_layers']:.2f}, "
            f"one_call_ratio {r['best_one_call_ratio']:.2f})"
        )

    # accuracy tables (fewer inputs and, for ResNet-18, fewer step counts, to stay within the time budget)
    acc = {}
    for name, n_ex, steps in (
        ("digits_cnn", cfg["digits_acc_n"], cfg["acc_steps"]),
        ("resnet18", 1, cfg["resnet_acc_steps"]),
    ):
        model, x, target, layers, *_ = models[name]
        t0 = time.perf_counter()
        acc[name] = accuracy_table(model, x[:n_ex], layers, target[:n_ex], steps)
        sections[f"accuracy_{name}"] = time.perf_counter() - t0
        print_table(f"{name} ({n_ex} inputs)", acc[name], steps)

    summary = {
        "speedup_vs_captum_5_layers": min(r["speedup_vs_captum_5_layers"] for r in runs.values()),
        "one_call_ratio": max(r["one_call_ratio"] for r in runs.values()),
        "max_rel_diff_vs_captum": max(r["max_rel_diff_vs_captum"] for r in runs.values()),
        "peak_mib_100_steps": peaks[100]["peak_mib"],
        "peak_mib_400_steps": peaks[400]["peak_mib"],
        "peak_ratio_400_vs_100": peak_ratio,
    }
    load["end"] = os.getloadavg()[0]
    total = time.perf_counter() - t_start
    print("\nsections (s): " + ", ".join(f"{k} {v:.0f}" for k, v in sections.items()) + f"; total {total:.0f}")
    if max(load.values()) > 0.5 * (os.cpu_count() or 1):
        print(
            f"note: load average {load['start']:.2f} → {load['end']:.2f}: other processes shared the CPUs, "
            "timings are noisy"
        )
    for key, (op, bound) in TARGETS.items():
        ok = summary[key] >= bound if op == ">=" else summary[key] <= bound
        print(f"{'PASS' if ok else 'FAIL'}  {key} = {summary[key]:.3g} (target {op} {bound:g})")
    accuracy = {
        m: {row: {str(n): g for n, (g, _) in cells.items()} for row, cells in t.items()} for m, t in acc.items()
    }
    print(
        json.dumps(
            {
                **summary,
                "per_model": runs,
                "accuracy_worst_rel_gap": accuracy,
                "peaks": peaks,
                "sections_s": sections,
                "total_s": total,
                "load_average": load,
                "config": cfg,
                "torch": torch.__version__,
                "device": str(device),
            }
        )
    )


if __name__ == "__main__":
    main()
