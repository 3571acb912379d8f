"""Bounded distributed scans whatever the backend: the CLI's torchrun entry point joins its group with an explicit
timeout; a group that cannot take CPU tensors (NCCL) gets a gloo twin with that timeout, on which every collective of
the scan runs. Tested with two gloo processes, the twin forced by treating the gloo group as one that needs it (no GPU
here: NCCL itself is not run by any test).
"""

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from ports import free_port

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent("""
    import datetime, json, os, sys, time
    import torch, torch.nn as nn, torch.distributed as dist
    import unitscope.data.distributed as ud
    from unitscope.cli.scan import _init_distributed
    from unitscope import PathConfig, StreamConfig
    from unitscope.data.scan import scan

    torch.set_num_threads(1)
    mode, out = sys.argv[1], sys.argv[2]
    rank = int(os.environ["RANK"])
    group, started = _init_distributed("gloo", 6.0)  # the CLI's entry point under torchrun (env://), 6 s
    assert started and group is dist.group.WORLD
    ud._takes_cpu_tensors = lambda g: False  # as for an NCCL group: the scan must use a gloo twin
    ranks = ud.Ranks.of(group)
    info = {"world_timeout": ud.timeout_of(group).total_seconds(),
            "twin_timeout": ud.timeout_of(ranks.comm).total_seconds(),
            "twin_is_new": ranks.comm is not group, "twin_backend": str(dist.get_backend(ranks.comm)),
            "twin_reused": ud.Ranks.of(group).comm is ranks.comm}

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.net = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))
            self.calls = 0
        def forward(self, x):
            self.calls += 1
            if rank == 1 and self.calls >= 3 and mode == "fail":
                raise ValueError("boom on purpose")
            if rank == 1 and self.calls >= 3 and mode == "hang":
                time.sleep(600)  # stops answering; the other rank must give up after the 6 s timeout
            return self.net(x)

    g = torch.Generator().manual_seed(1)
    batches = [(torch.randn(5, 4, generator=g), torch.randint(0, 3, (5,), generator=g)) for _ in range(8)]
    t0 = time.time()
    try:
        r = scan(Net(), batches, ["net.1"], scores=["activation", "conductance"],
                 path=PathConfig(method="gausslegendre", n_steps=4), top_k=3, progress=False,
                 stream=StreamConfig(group=group))
        info.update(count=r.count, sum=r.stats["conductance"]["net.1"].sum.tolist())
    except Exception as e:
        info.update(error=f"{type(e).__name__}: {e}")
    info["seconds"] = time.time() - t0
    with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
        json.dump(info, f)
    if mode == "ok":
        dist.destroy_process_group()
    os._exit(0)
""")


def _run(tmp_path, mode):
    import json

    script = tmp_path / "worker.py"
    script.write_text(SCRIPT)
    port = free_port()
    procs = []
    for rank in (0, 1):
        env = dict(
            os.environ,
            PYTHONPATH=str(ROOT / "src"),
            OMP_NUM_THREADS="1",
            RANK=str(rank),
            WORLD_SIZE="2",
            LOCAL_RANK=str(rank),
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=str(port),
        )
        procs.append(
            subprocess.Popen(
                [sys.executable, str(script), mode, str(tmp_path)],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    try:
        out0 = procs[0].communicate(timeout=180)[0]  # rank 0 must end by itself, also when rank 1 hangs
        if mode != "hang":
            procs[1].communicate(timeout=60)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert procs[0].returncode == 0, out0
    return [
        json.loads((tmp_path / f"rank{r}.json").read_text()) if (tmp_path / f"rank{r}.json").exists() else None
        for r in (0, 1)
    ]


def _one_process_sum():
    import torch
    import torch.nn as nn

    from unitscope import PathConfig
    from unitscope.data.scan import scan

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))
    g = torch.Generator().manual_seed(1)
    batches = [(torch.randn(5, 4, generator=g), torch.randint(0, 3, (5,), generator=g)) for _ in range(8)]
    wrapped = nn.Sequential()
    wrapped.add_module("net", net)
    r = scan(
        wrapped,
        batches,
        ["net.1"],
        scores=["activation", "conductance"],
        path=PathConfig(method="gausslegendre", n_steps=4),
        top_k=3,
        progress=False,
    )
    return r.count, r.stats["conductance"]["net.1"].sum


@pytest.mark.slow  # two processes that each import torch: ~20 s on the shared machine
def test_the_cli_group_has_its_timeout_and_the_scan_runs_on_a_gloo_twin(tmp_path):
    import torch

    infos = _run(tmp_path, "ok")
    count, total = _one_process_sum()
    for info in infos:
        assert info["world_timeout"] == 6.0 and info["twin_timeout"] == 6.0  # --timeout reaches both groups
        assert info["twin_is_new"] and info["twin_backend"] == "gloo" and info["twin_reused"]
        assert "error" not in info, info
        assert info["count"] == count == 40
        torch.testing.assert_close(torch.tensor(info["sum"], dtype=total.dtype), total, rtol=1e-6, atol=1e-9)


@pytest.mark.slow
def test_a_failing_rank_ends_the_other_with_its_message_over_the_twin(tmp_path):
    infos = _run(tmp_path, "fail")
    assert "rank 1 of 2 failed, so rank 0 stops too" in infos[0]["error"] and "raised ValueError" in infos[0]["error"]
    assert "raised ValueError" in infos[1]["error"]


@pytest.mark.slow
def test_a_rank_that_stops_answering_ends_the_other_after_the_timeout(tmp_path):
    start = time.time()
    infos = _run(tmp_path, "hang")
    assert "another rank of the scan died or stopped answering" in infos[0]["error"], infos[0]
    assert 5.0 <= infos[0]["seconds"] < 60, infos[0]  # the 6 s timeout, not rank 1's 600 s sleep
    assert time.time() - start < 120
    assert infos[1] is None  # still asleep when it was killed


def test_a_twin_has_the_groups_timeout_and_is_made_once_per_group(tmp_path):
    import datetime

    import torch
    import torch.distributed as dist

    from unitscope.data.distributed import control_group, timeout_of

    assert not dist.is_initialized()
    dist.init_process_group(
        "gloo", init_method=f"file://{tmp_path / 'init'}", rank=0, world_size=1, timeout=datetime.timedelta(seconds=17)
    )
    try:
        world = dist.group.WORLD
        assert control_group(world) is world  # gloo takes CPU tensors: no twin
        twin = control_group(world, needs_twin=True)
        assert twin is not world and dist.get_backend(twin) == "gloo"
        assert timeout_of(world) == timeout_of(twin) == datetime.timedelta(seconds=17)
        assert control_group(world, needs_twin=True) is twin
        t = torch.ones(3)
        dist.all_reduce(t, group=twin)
        assert t.tolist() == [1.0, 1.0, 1.0]
    finally:
        dist.destroy_process_group()


def test_a_twin_of_a_destroyed_group_is_forgotten(tmp_path):
    import datetime

    import torch.distributed as dist

    from unitscope.data import distributed as ud

    for i in range(2):
        dist.init_process_group(
            "gloo",
            init_method=f"file://{tmp_path / f'init{i}'}",
            rank=0,
            world_size=1,
            timeout=datetime.timedelta(seconds=5 + i),
        )
        try:
            twin = ud.control_group(dist.group.WORLD, needs_twin=True)
            assert ud.timeout_of(twin) == datetime.timedelta(seconds=5 + i)
            assert list(ud._TWINS) == [dist.group.WORLD]  # the first job's entry is gone
        finally:
            dist.destroy_process_group()
