"""Faults, each bounded in time: a rank killed or failing mid-scan ends every rank (and a restart resumes to the
identical result), a damaged checkpoint, an unwritable output folder, a report that fails while being written,
out-of-memory and model errors that are not mistaken for something else.

The distributed tests run ``python -m torch.distributed.run --nproc_per_node=2`` (gloo, CPU, one thread each) on a
tiny MLP that sleeps per forward pass, so a rank can be killed mid-scan deterministically.
"""

import os
import signal
import subprocess
import sys
import textwrap
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, TensorDataset

from unitscope.core.errors import UnitscopeError
from unitscope.core.faults import OOM_HINT
from unitscope.core.files import DamagedFileError, safe_load
from unitscope import PathConfig, StreamConfig
from unitscope.data.scan import ScanResult, scan

ROOT = Path(__file__).resolve().parents[1]

WORKER = textwrap.dedent('''
    import datetime, os, sys, time
    import torch, torch.nn as nn, torch.distributed as dist
    from torch.utils.data import DataLoader, TensorDataset
    from unitscope import StreamConfig
    from unitscope.data.scan import scan

    torch.set_num_threads(1)
    CALLS = [0]

    class Slow(nn.Module):
        """A tiny MLP that sleeps SLEEP s per forward pass, and raises from forward FAIL_AT on on rank FAIL_RANK."""
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.net = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))
        def forward(self, x):
            CALLS[0] += 1
            time.sleep(float(os.environ.get("SLEEP", "0")))
            if os.environ.get("FAIL_RANK") == os.environ["RANK"] and CALLS[0] >= int(os.environ.get("FAIL_AT", "3")):
                raise RuntimeError("boom on purpose")
            return self.net(x)

    def run(ck):
        g = torch.Generator().manual_seed(1)
        data = TensorDataset(torch.randn(400, 4, generator=g), torch.randint(0, 3, (400,), generator=g))
        return scan(Slow(), DataLoader(data, batch_size=4), ["net.1", "net.2"], top_k=3, progress=False,
                    stream=StreamConfig(checkpoint=ck, checkpoint_every=1, group=dist.group.WORLD))

    folder = sys.argv[1]
    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=20))
    rank = dist.get_rank()
    with open(os.path.join(folder, f"pid{rank}.tmp"), "w") as f:
        f.write(str(os.getpid()))
    os.replace(os.path.join(folder, f"pid{rank}.tmp"), os.path.join(folder, f"pid{rank}"))
    resumed = run(os.path.join(folder, "scan.ckpt") if os.environ.get("CHECKPOINT") == "1" else None)
    if os.environ.get("REFERENCE") == "1":  # the same scan, uninterrupted, in the same processes
        reference = run(None)
        if rank == 0:
            reference.save(os.path.join(folder, "reference.pt"))
    if rank == 0:
        resumed.save(os.path.join(folder, "result.pt"))
    dist.destroy_process_group()
''')


def _torchrun(folder: Path, **env) -> subprocess.Popen:
    script = folder / "worker.py"
    script.write_text(WORKER)
    full = dict(os.environ, PYTHONPATH=str(ROOT / "src"), OMP_NUM_THREADS="1", **env)
    # a long monitor interval: the surviving rank must stop by itself, not because torchrun's agent killed it
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            "--monitor-interval=15",
            str(script),
            str(folder),
        ],
        env=full,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _wait_for(predicate, seconds: float, proc=None):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if predicate():
            return True
        if proc is not None and proc.poll() is not None:
            return False
        time.sleep(0.05)
    return False


def _done(path: Path) -> int:
    try:
        return int(safe_load(path)["batches_done"]) if path.exists() else 0
    except (DamagedFileError, FileNotFoundError):
        return 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is not alive
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def test_killed_rank_ends_the_other_within_60s_and_a_restart_resumes_identically(tmp_path):
    proc = _torchrun(tmp_path, SLEEP="0.05", CHECKPOINT="1")  # 50 batches per rank, 2.5 s at least
    try:
        ck1 = tmp_path / "scan.rank1-of-2.ckpt"
        assert _wait_for(lambda: _done(ck1) >= 2, 240, proc), "rank 1 never checkpointed two batches"
        pid0, pid1 = (int((tmp_path / f"pid{r}").read_text()) for r in (0, 1))
        os.kill(pid1, signal.SIGKILL)
        killed = time.time()
        assert _wait_for(lambda: not _alive(pid0), 60), "rank 0 still runs 60 s after rank 1 was killed"
        print(f"rank 0 stopped {time.time() - killed:.1f} s after rank 1 was killed")
        out, _ = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0
    assert "another rank of the scan died or stopped answering" in out
    assert not (tmp_path / "result.pt").exists()
    done0 = _done(tmp_path / "scan.rank0-of-2.ckpt")
    assert 2 <= done0 < 50

    proc = _torchrun(tmp_path, SLEEP="0", CHECKPOINT="1", REFERENCE="1")
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    resumed, reference = ScanResult.load(tmp_path / "result.pt"), ScanResult.load(tmp_path / "reference.pt")
    assert resumed.settings["resumed_from_batch"] == done0 and reference.settings["resumed_from_batch"] == 0
    assert resumed.count == reference.count == 400
    assert torch.equal(resumed.class_counts, reference.class_counts)
    for m in reference.scores:
        for name in reference.layers:
            a, b = resumed.stats[m][name].state(), reference.stats[m][name].state()
            for key in a:
                assert torch.equal(a[key], b[key]), (m, name, key)  # identical, not merely close


def test_a_failing_rank_ends_every_rank_with_its_message(tmp_path):
    proc = _torchrun(tmp_path, FAIL_RANK="1", FAIL_AT="3")
    try:
        out, _ = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0
    assert "rank 1 of 2 failed, so rank 0 stops too" in out and "boom on purpose" in out
    assert not (tmp_path / "result.pt").exists()


# ------------------------------------------------------------------------------------------------ in-process --
@contextmanager
def bounded(seconds: int):
    """Fail the test instead of hanging (SIGALRM, main thread)."""

    def expire(*_):
        raise TimeoutError(f"took more than {seconds} s")

    old = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _tiny():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))
    g = torch.Generator().manual_seed(1)
    data = TensorDataset(torch.randn(40, 4, generator=g), torch.randint(0, 3, (40,), generator=g))
    return net, data


def test_scan_without_a_group_runs_no_collective(tmp_path):
    # a process group exists (as inside a DDP job) but only this rank scans: it must not wait for the others
    # a real 2-rank group whose second rank never calls scan: with group=None the scan finishes on its own
    script = tmp_path / "lonely.py"
    script.write_text(
        textwrap.dedent("""
        import datetime, sys, torch, torch.distributed as dist, torch.nn as nn
        from unitscope.data.scan import scan
        rank = int(sys.argv[1])
        dist.init_process_group("gloo", init_method="file://" + sys.argv[2], rank=rank, world_size=2,
                                timeout=datetime.timedelta(seconds=30))
        if rank == 0:
            torch.manual_seed(0)
            r = scan(nn.Sequential(nn.Linear(3, 4), nn.ReLU()),
                     [(torch.randn(5, 3), torch.tensor([0, 1, 0, 1, 1]))] * 3, ["1"], top_k=2, progress=False)
            print("count", r.count, "world", r.settings["world_size"])
        dist.barrier()  # both meet here, after rank 0's scan: no collective happened inside it
        dist.destroy_process_group()
    """)
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), OMP_NUM_THREADS="1")
    init = tmp_path / "init"
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(r), str(init)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for r in (0, 1)
    ]
    outs = [p.communicate(timeout=240)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert "count 15 world 1" in outs[0]


def test_a_truncated_checkpoint_is_a_clear_error_and_nothing_is_merged(tmp_path):
    net, data = _tiny()
    ck = tmp_path / "scan.ckpt"
    with bounded(120):
        scan(
            net,
            DataLoader(data, batch_size=8),
            ["1"],
            top_k=3,
            stream=StreamConfig(checkpoint=ck, checkpoint_every=1),
            progress=False,
        )
        whole = ck.read_bytes()
        ck.write_bytes(whole[: len(whole) * 2 // 3])
        calls = []
        hook = net[0].register_forward_hook(lambda *a: calls.append(1))
        try:
            with pytest.raises(DamagedFileError, match="scan checkpoint .* truncated"):
                scan(
                    net,
                    DataLoader(data, batch_size=8),
                    ["1"],
                    top_k=3,
                    stream=StreamConfig(checkpoint=ck),
                    progress=False,
                )
        finally:
            hook.remove()
    assert not calls  # refused before any batch
    assert ck.read_bytes() == whole[: len(whole) * 2 // 3]  # left as it was, for the user to look at


def test_resume_refuses_another_model_or_other_data_and_says_what_differs(tmp_path):
    net, data = _tiny()
    ck = tmp_path / "scan.ckpt"
    with bounded(120):
        scan(net, DataLoader(data, batch_size=8), ["1"], top_k=3, stream=StreamConfig(checkpoint=ck), progress=False)
        retrained = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))
        with pytest.raises(UnitscopeError, match="another scan: model_weights"):
            scan(
                retrained,
                DataLoader(data, batch_size=8),
                ["1"],
                top_k=3,
                stream=StreamConfig(checkpoint=ck),
                progress=False,
            )
        other = TensorDataset(data.tensors[0] + 1, data.tensors[1])  # same length, other examples
        with pytest.raises(UnitscopeError, match="data_first_batch") as info:
            scan(
                net, DataLoader(other, batch_size=8), ["1"], top_k=3, stream=StreamConfig(checkpoint=ck), progress=False
            )
        assert "model_weights" not in str(info.value)
        with pytest.raises(UnitscopeError, match="baselines"):
            scan(
                net,
                DataLoader(data, batch_size=8),
                ["1"],
                top_k=3,
                stream=StreamConfig(checkpoint=ck),
                path=PathConfig(baselines=0.5),
                progress=False,
            )
        with pytest.raises(UnitscopeError, match="n_steps"):
            scan(
                net,
                DataLoader(data, batch_size=8),
                ["1"],
                top_k=3,
                stream=StreamConfig(checkpoint=ck),
                path=PathConfig(n_steps=7),
                progress=False,
            )
        # the same scan resumes (a finished one has nothing left to do)
        again = scan(
            net, DataLoader(data, batch_size=8), ["1"], top_k=3, stream=StreamConfig(checkpoint=ck), progress=False
        )
    assert again.settings["resumed_from_batch"] == 5 and again.count == 40


def test_unwritable_output_folder_is_an_error_before_any_work(tmp_path, monkeypatch):
    import unitscope.cli.scan as cli_scan

    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setattr(cli_scan, "_load", lambda args: pytest.fail("work started before the check"))
    with bounded(60), pytest.raises(UnitscopeError, match="cannot write to the output folder"):
        cli_scan.scan_main(["digits-cnn", "digits", "--quick", "--out", str(blocker / "out")])
    net, data = _tiny()
    calls = []
    hook = net[0].register_forward_hook(lambda *a: calls.append(1))
    try:
        with bounded(60), pytest.raises(UnitscopeError, match="cannot write to the checkpoint folder"):
            scan(
                net,
                DataLoader(data, batch_size=8),
                ["1"],
                stream=StreamConfig(checkpoint=blocker / "ck" / "scan.ckpt"),
                progress=False,
            )
    finally:
        hook.remove()
    assert not calls


def test_a_report_that_fails_while_written_leaves_the_previous_one(tmp_path, monkeypatch):
    from unitscope.report import html

    folder = tmp_path / "results"
    (folder / "scan").mkdir(parents=True)
    (folder / "scan" / "scan.json").write_text('{"study": "scan", "examples": 3}')
    with bounded(120):
        first = html.build_report(folder)
    before = first.read_bytes()
    assert before

    class Broken:
        def stream(self, **context):
            class Stream:
                def dump(self, f):
                    f.write("<html><body>half a rep")
                    raise OSError("disk full")

            return Stream()

    monkeypatch.setattr(html, "_template", lambda: Broken())
    with bounded(120), pytest.raises(OSError, match="disk full"):
        html.build_report(folder)
    assert first.read_bytes() == before
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]


# ------------------------------------------------------------------------------------ errors not mistaken --
class Raises(nn.Module):
    def __init__(self, error):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(4, 6), nn.ReLU())
        self.head = Head(error)

    def forward(self, x):
        return self.head(self.body(x))


class Head(nn.Module):
    def __init__(self, error):
        super().__init__()
        self.error = error
        self.fc = nn.Linear(6, 3)

    def forward(self, h):
        if self.error is not None and h.shape[0] > 2:  # only on path rows, not on the 2 inputs themselves
            raise self.error
        return self.fc(h)


def test_model_error_on_path_rows_names_the_layer_call_and_the_shapes():
    import unitscope as us

    model = Raises(RuntimeError("the head does not like these rows"))
    with bounded(60), pytest.raises(UnitscopeError) as info:
        us.conductance(model, torch.randn(2, 4), layers=["body.1"], target=0, n_steps=4)
    text = str(info.value)
    assert "layer 'head' (Head) called with [" in text and "the head does not like these rows" in text
    assert "points of the path from the baselines to the inputs" in text and "(your inputs: [2, 4])" in text
    assert "rows=" not in text  # the path's internal batch is not the user's word
    assert isinstance(info.value.__cause__, RuntimeError)


@pytest.mark.parametrize("where", ["conductance", "ablation", "neuron", "maximize"])
def test_out_of_memory_propagates_with_a_hint_and_is_not_retried(where, monkeypatch):
    import unitscope as us
    from unitscope.attribution.neuron import neuron_conductance
    from unitscope.data.ablation import ablation_scores
    from unitscope.synthesis.maximize import activation_maximization

    oom = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
    calls = []
    if where == "neuron":
        real = torch.autograd.grad

        def grad(*args, **kwargs):
            if kwargs.get("is_grads_batched"):
                calls.append(1)
                raise oom
            return real(*args, **kwargs)

        monkeypatch.setattr(torch.autograd, "grad", grad)
        model = Raises(None)
    else:
        model = Raises(oom)
        model.head.register_forward_pre_hook(lambda m, a: calls.append(1) if a[0].shape[0] > 2 else None)
    with bounded(120), pytest.raises(torch.OutOfMemoryError) as info:
        if where == "conductance":
            us.conductance(model, torch.randn(2, 4), layers=["body.1"], target=0, n_steps=4)
        elif where == "ablation":
            ablation_scores(model, torch.randn(2, 4), "body.1", target=0)
        elif where == "neuron":
            neuron_conductance(model, torch.randn(2, 4), layer="body.1", units=[0, 1], target=0, n_steps=4)
        else:
            model = nn.Sequential(Raises_any(oom), nn.Conv2d(1, 2, 3))
            activation_maximization(model, "1", [0], shape=(1, 8, 8), steps=2, progress=False)
    assert OOM_HINT in getattr(info.value, "__notes__", [])
    if where in ("ablation", "neuron"):
        assert len(calls) == 1  # the fallback did not run with more rows after out-of-memory


class Raises_any(nn.Module):
    def __init__(self, error):
        super().__init__()
        self.error = error

    def forward(self, x):
        raise self.error


def test_maximize_does_not_call_every_error_a_wrong_shape():
    from unitscope.synthesis.maximize import activation_maximization

    model = nn.Sequential(Raises_any(RuntimeError("a bug in the user's layer")), nn.Conv2d(1, 2, 3))
    with bounded(60), pytest.raises(UnitscopeError) as info:
        activation_maximization(model, "1", [0], shape=(1, 8, 8), steps=2, progress=False)
    text = str(info.value)
    assert "raised RuntimeError in layer '0' (Raises_any)" in text and "a bug in the user's layer" in text
    assert "does not accept inputs" not in text


@pytest.mark.parametrize("command", ["importance", "visualize", "inverse-set"])
def test_cli_commands_refuse_an_unwritable_output_folder_before_any_work(command, tmp_path, monkeypatch, capsys):
    import unitscope.loading as loading
    from unitscope.cli import main

    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setattr(loading, "load_model", lambda *a, **k: pytest.fail("the model was loaded before the check"))
    argv = {
        "importance": ["importance", "digits-cnn", "digits", "--layers", "features.relu3"],
        "visualize": ["visualize", "digits-cnn", "--layer", "features.relu2", "--units", "0"],
        "inverse-set": [
            "inverse-set",
            "digits-cnn",
            "--layer",
            "features.relu3",
            "--unit",
            "5",
            "--range",
            "0.5",
            "1.0",
        ],
    }[command]
    with bounded(60):
        rc = main([*argv, "--out", str(blocker / "out")])
    err = capsys.readouterr().err
    assert rc == 2 and "cannot write to the output folder" in err, err
