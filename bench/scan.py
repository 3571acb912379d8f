"""Dataset-scale scan of the digits CNN: 1 process vs 2 processes (torchrun, gloo, localhost), and the scan's
overhead over a plain loop that calls the engine on the same batches and keeps nothing (the floor, measured before
and after the 1-process scan; the faster of the two counts).

The digits set (all 1,797 examples) is repeated to ≥ 20,000 examples; activation + conductance statistics
(count, sum, sum of squares, per-class sums, top-k examples by each) for every leaf layer of the CNN. Every
process uses one thread, so 1 vs 2 processes compares one core with two.

    .venv/bin/python bench/scan.py [--repeat 12] [--n-steps 4] [--quick]

``max_rel_diff_1_vs_2`` is the largest over all accumulators (sums, sums of squares, class sums, top-k values)
of ``max|a − b| / max|b|`` between the 1-process and the 2-process results; ``top_index_agreement`` is the
fraction of top-k example indices that are the same. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from unitscope.cli.scan import _load_data, default_layers
from unitscope.data.scan import ScanResult, scan
from unitscope.attribution.scores import attribute
from unitscope.zoo import digits_cnn

METHODS = ["activation", "conductance"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _setup(args):
    torch.set_num_threads(1)
    model = digits_cnn().model
    data = _load_data("digits", "all", args.repeat)
    return model, data, default_layers(model)


def floor(model, data, layers, args) -> float:
    """Examples per second of the bare engine on the same batches: nothing kept."""
    t = time.perf_counter()
    n = 0
    for x, _ in DataLoader(data, batch_size=args.batch_size):
        attribute(model, x, layers, scores=METHODS, n_steps=args.n_steps, gap_warning=None, progress=False)
        n += len(x)
    return n / (time.perf_counter() - t)


def one_scan(model, data, layers, args, group=None) -> tuple[ScanResult, float]:
    t = time.perf_counter()
    r = scan(model, DataLoader(data, batch_size=args.batch_size), layers, scores=METHODS, top_k=args.top_k,
             n_steps=args.n_steps, progress=False, group=group)
    return r, r.count / (time.perf_counter() - t)


def worker(args):
    """Run by torchrun: every rank scans its shard; rank 0 saves the result and the time."""
    import torch.distributed as dist

    dist.init_process_group("gloo")
    try:
        model, data, layers = _setup(args)
        dist.barrier()
        r, eps = one_scan(model, data, layers, args, group=dist.group.WORLD)  # ends with the all-reduce
        if dist.get_rank() == 0:
            r.save(Path(args.out) / "scan2.pt")
            (Path(args.out) / "scan2.json").write_text(json.dumps({"examples_per_second": eps}))
    finally:
        dist.destroy_process_group()


def compare(a: ScanResult, b: ScanResult) -> tuple[float, float]:
    worst, same, total = 0.0, 0, 0
    for m in a.scores:
        for name in a.layers:
            sa, sb = a.stats[m][name], b.stats[m][name]
            for key in ("sum", "sumsq", "class_sums", "top_values"):
                x, y = getattr(sa, key), getattr(sb, key)
                worst = max(worst, float((x - y).abs().max() / y.abs().max().clamp_min(1e-300)))
            same += int((sa.top_indices == sb.top_indices).sum())
            total += sa.top_indices.numel()
    return worst, same / total


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--repeat", type=int, default=12, help="copies of the 1,797 digits (12 → 21,564 examples)")
    p.add_argument("--n-steps", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--top-k", type=int, default=9)
    p.add_argument("--quick", action="store_true", help="2 copies of the digits")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.quick:
        args.repeat = 2
    if args.worker:
        return worker(args)
    model, data, layers = _setup(args)
    print(f"{len(data)} examples, {len(layers)} layers, methods {METHODS}, n_steps {args.n_steps}", flush=True)
    x0 = data[:args.batch_size][0]  # warm-up: first-call allocations are in neither measurement
    attribute(model, x0, layers, scores=METHODS, n_steps=args.n_steps, gap_warning=None, progress=False)
    # floor, scan, floor: the faster floor is taken, so load that comes and goes can only lower ratio_to_floor
    floor_a = floor(model, data, layers, args)
    print(f"floor (engine only):  {floor_a:8.1f} examples/s", flush=True)
    r1, eps1 = one_scan(model, data, layers, args)
    print(f"scan, 1 process:      {eps1:8.1f} examples/s", flush=True)
    floor_b = floor(model, data, layers, args)
    eps_floor = max(floor_a, floor_b)
    print(f"floor again:          {floor_b:8.1f} examples/s (the faster of the two is the floor)", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [str(Path(sys.executable).parent / "torchrun"), "--nnodes=1", "--nproc_per_node=2",
               "--master_addr=127.0.0.1", f"--master_port={_free_port()}", __file__, "--worker", "--out", tmp,
               "--repeat", str(args.repeat), "--n-steps", str(args.n_steps), "--batch-size", str(args.batch_size),
               "--top-k", str(args.top_k)]
        env = dict(os.environ, OMP_NUM_THREADS="1")
        subprocess.run(cmd, check=True, env=env)
        eps2 = json.loads((Path(tmp) / "scan2.json").read_text())["examples_per_second"]
        r2 = ScanResult.load(Path(tmp) / "scan2.pt")
    print(f"scan, 2 processes:    {eps2:8.1f} examples/s (torchrun, gloo)", flush=True)
    diff, agree = compare(r2, r1)
    print(json.dumps({"bench": "scan", "examples": r1.count, "layers": len(layers), "scores": METHODS,
                      "n_steps": args.n_steps, "batch_size": args.batch_size, "top_k": args.top_k,
                      "examples_per_second_floor": eps_floor, "floor_runs": [floor_a, floor_b],
                      "examples_per_second_1": eps1,
                      "examples_per_second_2": eps2, "speedup_2_vs_1": eps2 / eps1,
                      "ratio_to_floor": eps1 / eps_floor, "max_rel_diff_1_vs_2": diff,
                      "top_index_agreement": agree, "same_count": r1.count == r2.count}))


if __name__ == "__main__":
    main()
