"""The atlas's per-unit work, batched (``us.atlas``: chunks of units per call) vs the straightforward loop over units
with the same library calls, on the digits CNN; and units per minute of the whole atlas.

    .venv/bin/python bench/atlas.py [--device cpu] [--quick] [--layer features.relu2] [--threads 1]

Both sides start from the same scan (one streaming pass over the 1,797 digits: activation and conductance, the
histograms and top-k shares) and do, per unit, the same things with the same settings:

* the per-input conductance of its top exemplars — loop: ``neuron_conductance(model, its exemplars, layer, [u])``;
  batched: ``neuron_conductance(..., paired=True, examples=)`` over the chunk's distinct exemplars, the units that
  share an exemplar sharing its forward pass (only the backward from the layer is per unit);
* its IAM image and RS — loop: ``independent_am(model, layer, [u])``; batched: ``independent_am(model, layer, chunk)``;
* inverse-set samples in each activation band through the digits VAE — loop: ``sample_inverse_set(model,
  (layer, u, a, b), G, n_samples=K, n_seeds=K, max_seed_steps=S)`` (its seed phase: the same augmented Lagrangian);
  batched: ``sample_inverse_sets`` over every unit × band of the chunk;
* the faithfulness check's layer vectors of its exemplars, IAM image and samples (``layer_vectors``) on both sides.

Both sides go through the same channel slices (``unitscope.core.slices``: the inverse-set objective and each unit's
conductance backward use only the unit's weights of ``conv2``); ``bench/slices.py`` measures the slices alone.

``--quick``: one layer, every unit of it, 4 exemplars, 8 path points, 32 IAM steps, 2 samples per band, 40 inverse
steps. The loop runs on ``--loop-units`` units (default: every unit); fewer are scaled to the layer, live and dead
units apart (a dead unit gets no synthetic inputs). Times: wall (``time.perf_counter``) and this process's CPU time
(``time.process_time``, one torch thread: the work done, much less sensitive than wall time to other jobs on a shared
machine), one run each; on CUDA both clocks start and stop at a ``torch.cuda.synchronize()``.
``total_speedup``: (scan + loop) / (scan + batched) — the scan is the same on both sides, so it bounds the
end-to-end ratio by (scan + loop) / scan (``total_speedup_bound_cpu``); ``scan_over_floor_cpu``: the scan against
one bare forward + backward to the inputs over the same rows (examples × path points, parameters frozen);
``scan_over_floor_to_layer_cpu``: against the same forward with the backward only down to the layer's output (all
that a layer's conductance needs), so the rest of the scan's time is the integrator's own work
(``method="adaptive"``: its per-example panels) and the accumulators'. ``stages_seconds``: per stage (exemplars,
IAM, inverse sets; each with its layer vectors) the loop's and the batched chunks' wall seconds and their ratio, so the
stage that holds the per-unit ratio back is named. The last line is JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import warnings

import torch
from _timing import Stopwatch, add_device, device_of


def main(argv=None) -> dict:
    p = argparse.ArgumentParser()
    add_device(p)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--layer", default="features.relu2")
    p.add_argument("--loop-units", type=int, default=None, help="units the loop runs on (default: every unit)")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    import unitscope as us
    from unitscope import PathConfig, StreamConfig
    from unitscope.atlas.build import BANDS, _seed
    from unitscope.atlas.source import Source, UnitAccumulator
    from unitscope.atlas.work import layer_bands, layer_vectors, work_chunk
    from unitscope.data.scan import scan
    from unitscope.synthesis.inverse import InverseSetWarning
    from unitscope.zoo import digits_cnn, digits_data
    from unitscope.zoo.digits_vae import digits_generator

    device = device_of(args.device)
    model = digits_cnn(progress=False).model.to(device)
    gen = digits_generator()
    gen.decoder.to(device)
    tr, te = digits_data()
    x, y = torch.cat([tr.x, te.x]), torch.cat([tr.y, te.y])
    s = (
        dict(top_k=4, n_steps=8, iam_steps=32, inverse_samples=2, inverse_steps=40)
        if args.quick
        else dict(top_k=9, n_steps=20, iam_steps=128, inverse_samples=4, inverse_steps=100)
    )
    layer = args.layer

    def Clock():  # noqa: N802 — wall and CPU seconds of a block; synchronized at both ends on CUDA
        return Stopwatch(device)

    # warm-up: first-time imports (torch.optim pulls in torch._dynamo: seconds) are nobody's cost
    us.independent_am(model, layer, [0], shape=(1, 8, 8), steps=1, progress=False)

    # the whole atlas of one layer (units per minute)
    with Clock() as whole:
        a = us.atlas(
            model,
            (x, y),
            [layer],
            top_k=s["top_k"],
            path=us.PathConfig(n_steps=s["n_steps"]),
            synthesis=us.SynthesisConfig(
                generator=gen,
                iam_steps=s["iam_steps"],
                inverse_samples=s["inverse_samples"],
                inverse_steps=s["inverse_steps"],
            ),
            progress=False,
        )
    n_units = len(a.units)

    # the shared scan, then the per-unit work batched vs looped on the same scan
    src = Source((x, y))
    extra = UnitAccumulator()
    with Clock() as sc:
        result = scan(
            model,
            src.loader,
            [layer],
            scores=["activation", "conductance"],
            top_k=s["top_k"],
            path=PathConfig(n_steps=s["n_steps"]),
            stream=StreamConfig(extra=extra),
            progress=False,
        )
    # the scan's floor: one bare forward + backward to the inputs over the same rows (every example × n_steps),
    # parameters frozen, keeping nothing
    flags = [q.requires_grad for q in model.parameters()]
    for q in model.parameters():
        q.requires_grad_(False)
    with Clock() as floor:
        for i in range(0, len(x), 256):
            xb = x[i : i + 256].to(device).repeat(s["n_steps"], 1, 1, 1).requires_grad_(True)
            torch.autograd.grad(model(xb).max(1).values.sum(), xb)
    # the floor of what a layer's conductance needs: the same forward, backward only down to the layer's output
    from unitscope.core.capture import Recorder
    from unitscope.core.sites import resolve

    (site,) = resolve(model, [layer])
    with Clock() as floor_layer:
        for i in range(0, len(x), 256):
            xb = x[i : i + 256].to(device).repeat(s["n_steps"], 1, 1, 1)
            rec = Recorder([site], need_grad=True)
            with torch.enable_grad(), rec.active():
                out_b = model(xb)
            torch.autograd.grad(out_b.max(1).values.sum(), rec.parts[site.name][0])
    for q, f in zip(model.parameters(), flags):
        q.requires_grad_(f)
    kw = dict(
        target=None,
        n_steps=s["n_steps"],
        method="gausslegendre",
        baselines=None,
        synthesize=True,
        generator=gen,
        value_range=(0.0, 1.0),
        param="fft",
        iam_steps=s["iam_steps"],
        inverse_samples=s["inverse_samples"],
        inverse_steps=s["inverse_steps"],
        bands=BANDS,
    )
    batched_stages = {}
    with Clock() as batched:
        for u0 in range(0, n_units, 64):
            got = work_chunk(
                model,
                src,
                result,
                extra,
                layer,
                list(range(u0, min(u0 + 64, n_units))),
                unit_seed=lambda *q: _seed(0, *q),
                **kw,
            )
            for k, v in got["seconds"].items():
                batched_stages[k] = batched_stages.get(k, 0.0) + v

    hist = extra.hist[layer]
    dead = ((hist.min == 0) & (hist.max == 0)).tolist()
    ta, tc = result.top(layer, score="activation"), result.top(layer, score="conductance")
    n_loop = min(args.loop_units or n_units, n_units)
    loop_units = list(range(n_units))[:n_loop]
    per = {True: [0.0, 0.0, 0], False: [0.0, 0.0, 0]}  # dead?: [wall, cpu, units]
    loop_stages = {k: [0.0, 0.0] for k in ("exemplars", "iam", "inverse")}  # [wall, cpu] over the measured units

    @contextlib.contextmanager
    def stage(name):
        with Clock() as st:
            yield
        loop_stages[name][0] += st.wall
        loop_stages[name][1] += st.cpu

    for u in loop_units:
        with Clock() as one:
            with stage("exemplars"):
                ex = torch.cat([ta.indices[u], tc.indices[u]])
                xe, _ = src.get(ex.tolist())
                us.neuron_conductance(model, xe, layer, [u], n_steps=s["n_steps"], method="gausslegendre")
                layer_vectors(model, layer, xe)
            if not dead[u]:
                with stage("iam"):
                    r = us.independent_am(
                        model, layer, [u], shape=(1, 8, 8), param="fft", steps=s["iam_steps"], seed=u, progress=False
                    )
                    layer_vectors(model, layer, r.images)
                with stage("inverse"):
                    for _name, lo, hi, ok in layer_bands(hist, BANDS)[u]:
                        if ok:
                            with warnings.catch_warnings():
                                warnings.simplefilter("ignore", InverseSetWarning)
                                got = us.sample_inverse_set(
                                    model,
                                    (layer, u, lo, hi),
                                    gen,
                                    n_samples=s["inverse_samples"],
                                    n_seeds=s["inverse_samples"],
                                    seed=u,
                                    progress=False,
                                    on_empty="ignore",
                                    sampler=us.SamplerConfig(max_seed_steps=s["inverse_steps"]),
                                )
                            if len(got.samples):
                                layer_vectors(model, layer, got.samples)
        per[dead[u]][0] += one.wall
        per[dead[u]][1] += one.cpu
        per[dead[u]][2] += 1
    n_dead = int(sum(dead))

    def scaled(k):  # loop time for the whole layer: per live and per dead unit, times their counts
        return sum(per[d][k] / per[d][2] * (n_dead if d else n_units - n_dead) for d in per if per[d][2])

    loop_wall, loop_cpu = scaled(0), scaled(1)
    out = {
        "bench": "atlas",
        "model": "digits-cnn",
        "layer": layer,
        "units": n_units,
        "dead": n_dead,
        "device": str(device),
        "quick": args.quick,
        "settings": s,
        "atlas_seconds": whole.wall,
        "atlas_cpu_seconds": whole.cpu,
        "atlas_stages": a.meta["seconds"],
        "units_per_minute": 60 * n_units / whole.wall,
        "units_per_cpu_minute": 60 * n_units / whole.cpu,
        "scan_seconds": sc.wall,
        "scan_cpu_seconds": sc.cpu,
        "scan_floor_cpu_seconds": floor.cpu,
        "scan_over_floor_cpu": sc.cpu / floor.cpu,
        "scan_floor_to_layer_cpu_seconds": floor_layer.cpu,
        "scan_over_floor_to_layer_cpu": sc.cpu / floor_layer.cpu,
        "per_unit_batched_seconds": batched.wall,
        "per_unit_batched_cpu_seconds": batched.cpu,
        "per_unit_loop_seconds": loop_wall,
        "per_unit_loop_cpu_seconds": loop_cpu,
        "loop_units_measured": len(loop_units),
        # per stage, wall seconds (the loop over the measured units, unscaled; batched: the chunks' own clocks)
        "stages_seconds": {
            k: {
                "loop": loop_stages[k][0],
                "loop_cpu": loop_stages[k][1],
                "batched": batched_stages.get(k, 0.0),
                "speedup": loop_stages[k][0] / max(batched_stages.get(k, 0.0), 1e-9),
            }
            for k in loop_stages
        },
        "per_unit_speedup": loop_wall / batched.wall,
        "per_unit_speedup_cpu": loop_cpu / batched.cpu,
        "total_speedup": (sc.wall + loop_wall) / (sc.wall + batched.wall),
        "total_speedup_cpu": (sc.cpu + loop_cpu) / (sc.cpu + batched.cpu),
        "total_speedup_bound_cpu": (sc.cpu + loop_cpu) / sc.cpu,
    }
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
