"""Dataset-scale scan of the digits CNN: 1 process vs 2 processes (torchrun, gloo, localhost), and the scan's
overhead over a plain loop that calls the engine on the same batches and keeps nothing (the floor, measured before
and after the 1-process scan; the faster of the two counts).

The digits set (all 1,797 examples) is repeated to ≥ 20,000 examples; activation + conductance statistics
(count, sum, sum of squares, per-class sums, top-k examples by each) for every leaf layer of the CNN. Every
process uses one thread, so 1 vs 2 processes compares one core with two.

    .venv/bin/python bench/scan.py [--repeat 12] [--n-steps 4] [--quick] [--device cpu]

On CUDA (``--device cuda``) the model lives on the GPU (the batches are moved there by the engine), times are wall
seconds between two ``torch.cuda.synchronize()``, and the two ranks join their group with the library's backend
choice (``unitscope.cli.scan``: NCCL where CUDA is available) when there is a GPU per rank; on a single GPU both ranks
share it over gloo (NCCL takes one GPU per rank). The scan's own collectives are gloo on the CPU either way
(``unitscope.data.distributed``).

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
from _timing import Stopwatch, add_device, device_of
from torch.utils.data import DataLoader

from unitscope.cli.scan import _load_data, default_layers
from unitscope.data.scan import ScanResult, scan
from unitscope import PathConfig, StreamConfig
from unitscope.attribution.scores import attribute
from unitscope.zoo import digits_cnn

METHODS = ["activation", "conductance"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _setup(args, device):
    torch.set_num_threads(1)
    model = digits_cnn().model.to(device)
    data = _load_data("digits", "all", args.repeat)  # on the CPU: batches go to the model's device in the engine
    return model, data, default_layers(model)


def floor(model, data, layers, args, device) -> float:
    """Examples per second of the bare engine on the same batches: nothing kept."""
    n = 0
    with Stopwatch(device, time.perf_counter) as t:
        for x, _ in DataLoader(data, batch_size=args.batch_size):
            attribute(
                model,
                x,
                layers,
                scores=METHODS,
                n_steps=args.n_steps,
                path=PathConfig(gap_warning=None),
                progress=False,
            )
            n += len(x)
    return n / t.seconds


def one_scan(model, data, layers, args, device, group=None) -> tuple[ScanResult, float]:
    with Stopwatch(device, time.perf_counter) as t:
        r = scan(
            model,
            DataLoader(data, batch_size=args.batch_size),
            layers,
            scores=METHODS,
            top_k=args.top_k,
            path=PathConfig(n_steps=args.n_steps),
            stream=StreamConfig(group=group),
            progress=False,
        )
    return r, r.count / t.seconds


def backend_for(device, nproc: int):
    """The process group's backend for ``nproc`` ranks: on the CPU gloo; on CUDA the library's own choice
    (``unitscope.cli.scan._init_distributed``: NCCL where CUDA is available, each rank on GPU ``LOCAL_RANK``) when
    there is a GPU per rank, else gloo with every rank on ``device`` (NCCL refuses two ranks on one GPU; the scan's
    collectives run on gloo either way, ``unitscope.data.distributed``). ``(backend or None, why)``."""
    if device.type != "cuda":
        return "gloo", "cpu"
    if torch.cuda.device_count() >= nproc:
        return None, "the library's choice (nccl where CUDA is available), one GPU per rank"
    return "gloo", f"gloo: {torch.cuda.device_count()} GPU(s) for {nproc} ranks, all on {device}"


def worker(args):
    """Run by torchrun: every rank scans its shard; rank 0 saves the result and the time."""
    import torch.distributed as dist

    from unitscope.cli.scan import _init_distributed

    device = device_of(args.device)
    backend, _ = backend_for(device, int(os.environ.get("WORLD_SIZE", "1")))
    group, started = _init_distributed(backend, 300.0)
    try:
        if dist.get_backend(group) == "nccl":  # the library set this rank's GPU (LOCAL_RANK)
            device = torch.device("cuda", torch.cuda.current_device())
        model, data, layers = _setup(args, device)
        dist.barrier()
        r, eps = one_scan(model, data, layers, args, device, group=group)  # ends with the all-reduce
        if dist.get_rank() == 0:
            r.save(Path(args.out) / "scan2.pt")
            (Path(args.out) / "scan2.json").write_text(
                json.dumps({"examples_per_second": eps, "backend": dist.get_backend(group)})
            )
    finally:
        if started:
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
    add_device(p)
    args = p.parse_args()
    if args.quick:
        args.repeat = 2
    if args.worker:
        return worker(args)
    device = device_of(args.device)
    model, data, layers = _setup(args, device)
    print(
        f"{len(data)} examples, {len(layers)} layers, methods {METHODS}, n_steps {args.n_steps}, device {device}",
        flush=True,
    )
    x0 = data[: args.batch_size][0]  # warm-up: first-call allocations are in neither measurement
    attribute(
        model, x0, layers, scores=METHODS, n_steps=args.n_steps, path=PathConfig(gap_warning=None), progress=False
    )
    # floor, scan, floor: the faster floor is taken, so load that comes and goes can only lower ratio_to_floor
    floor_a = floor(model, data, layers, args, device)
    print(f"floor (engine only):  {floor_a:8.1f} examples/s", flush=True)
    r1, eps1 = one_scan(model, data, layers, args, device)
    print(f"scan, 1 process:      {eps1:8.1f} examples/s", flush=True)
    floor_b = floor(model, data, layers, args, device)
    eps_floor = max(floor_a, floor_b)
    print(f"floor again:          {floor_b:8.1f} examples/s (the faster of the two is the floor)", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [
            str(Path(sys.executable).parent / "torchrun"),
            "--nnodes=1",
            "--nproc_per_node=2",
            "--master_addr=127.0.0.1",
            f"--master_port={_free_port()}",
            __file__,
            "--worker",
            "--out",
            tmp,
            "--repeat",
            str(args.repeat),
            "--n-steps",
            str(args.n_steps),
            "--batch-size",
            str(args.batch_size),
            "--top-k",
            str(args.top_k),
            "--device",
            str(device),
        ]
        env = dict(os.environ, OMP_NUM_THREADS="1")
        subprocess.run(cmd, check=True, env=env)
        two = json.loads((Path(tmp) / "scan2.json").read_text())
        eps2 = two["examples_per_second"]
        r2 = ScanResult.load(Path(tmp) / "scan2.pt")
    print(
        f"scan, 2 processes:    {eps2:8.1f} examples/s (torchrun, {two['backend']}; {backend_for(device, 2)[1]})",
        flush=True,
    )
    diff, agree = compare(r2, r1)
    print(
        json.dumps(
            {
                "bench": "scan",
                "device": str(device),
                "backend_2": two["backend"],
                "examples": r1.count,
                "layers": len(layers),
                "scores": METHODS,
                "n_steps": args.n_steps,
                "batch_size": args.batch_size,
                "top_k": args.top_k,
                "examples_per_second_floor": eps_floor,
                "floor_runs": [floor_a, floor_b],
                "examples_per_second_1": eps1,
                "examples_per_second_2": eps2,
                "speedup_2_vs_1": eps2 / eps1,
                "ratio_to_floor": eps1 / eps_floor,
                "max_rel_diff_1_vs_2": diff,
                "top_index_agreement": agree,
                "same_count": r1.count == r2.count,
            }
        )
    )


if __name__ == "__main__":
    main()
