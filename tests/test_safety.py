"""Files people share load without running code: a hostile pickle is refused and its payload never runs."""

import pickle
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from unitscope.core.errors import UnitscopeError
from unitscope.core.files import DamagedFileError, UnsafeFileError, atomic_save, atomic_write_text, safe_load
from unitscope import StreamConfig
from unitscope.data.scan import ScanResult, scan
from unitscope.zoo.cache import cached_state, entry_path


class Payload:
    """Unpickling this creates a file: proof that loading ran code."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def _hostile_torch_file(path: Path, marker: Path, extra=None):
    torch.save({**(extra or {}), "stats": {}, "count": 1, "payload": Payload(marker)}, path)


def _tiny_scan():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU())
    return net, [(torch.randn(6, 3), torch.tensor([0, 1, 0, 1, 1, 0]))]


def test_the_payload_really_runs_when_unpickled_unsafely(tmp_path):
    # the control: the same file does run code through a plain pickle load, so the refusals below mean something
    marker, path = tmp_path / "ran", tmp_path / "evil.pt"
    _hostile_torch_file(path, marker)
    torch.load(path, weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("kind", ["torch-zip", "bare-pickle"])
def test_hostile_scan_result_is_refused_and_nothing_runs(tmp_path, kind):
    marker, path = tmp_path / "ran", tmp_path / "scan.pt"
    if kind == "torch-zip":
        _hostile_torch_file(path, marker)
        err = UnsafeFileError
    else:
        path.write_bytes(pickle.dumps({"stats": {}, "count": 1, "payload": Payload(marker)}))
        err = DamagedFileError  # not a torch archive: refused without unpickling a byte
    with pytest.raises(err, match="could run code|not a torch.save archive"):
        ScanResult.load(path)
    assert not marker.exists()


def test_hostile_checkpoint_is_refused_before_resuming(tmp_path):
    net, loader = _tiny_scan()
    ck, marker = tmp_path / "scan.ckpt", tmp_path / "ran"
    _hostile_torch_file(ck, marker, {"batches_done": 1, "format": 1})
    with pytest.raises(UnsafeFileError, match="scan checkpoint"):
        scan(net, loader, ["1"], stream=StreamConfig(checkpoint=ck), progress=False)
    assert not marker.exists()


def test_hostile_cache_entry_is_refused_and_not_retrained_over(tmp_path, monkeypatch):
    monkeypatch.setenv("UNITSCOPE_CACHE", str(tmp_path))
    recipe, marker = {"a": 1}, tmp_path / "ran"
    entry = entry_path("toy", recipe)  # the recipe + the thread count (1) is the key
    torch.save({"recipe": recipe, "state": {}, "info": Payload(marker)}, entry)
    calls = []
    with pytest.raises(UnsafeFileError, match="cache entry"):
        cached_state("toy", recipe, lambda: calls.append(1) or ({}, {}))
    assert not marker.exists() and not calls


def test_damaged_cache_entry_is_retrained_with_a_warning(tmp_path, monkeypatch):
    monkeypatch.setenv("UNITSCOPE_CACHE", str(tmp_path))
    calls = []

    def train():
        calls.append(1)
        return {"w": torch.arange(100.0)}, {"acc": 0.5}

    cached_state("toy", {"a": 1}, train)
    entry = next(tmp_path.glob("toy-*.pt"))
    data = bytearray(entry.read_bytes())
    data[len(data) // 2] ^= 0xFF  # torch.load alone would not notice a flipped byte in a tensor
    entry.write_bytes(bytes(data))
    with pytest.warns(RuntimeWarning, match="damaged"):
        state, _, cached = cached_state("toy", {"a": 1}, train)
    assert not cached and len(calls) == 2 and torch.equal(state["w"], torch.arange(100.0))


def test_scan_result_round_trips_through_the_safe_loader(tmp_path):
    net, loader = _tiny_scan()
    r = scan(net, loader, ["1"], top_k=3, progress=False)
    back = ScanResult.load(r.save(tmp_path / "r.pt"))
    assert back.count == r.count and back.settings == r.settings
    for m in r.scores:
        assert torch.equal(back.stats[m]["1"].sum, r.stats[m]["1"].sum)
        assert torch.equal(back.stats[m]["1"].top_indices, r.stats[m]["1"].top_indices)


def test_truncated_files_are_reported_as_damaged(tmp_path):
    path = tmp_path / "blob.pt"
    atomic_save({"x": torch.ones(1000)}, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DamagedFileError, match="truncated"):
        safe_load(path)
    with pytest.raises(DamagedFileError):
        ScanResult.load(path)


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "report.html"
    atomic_write_text(path, "old")

    class Boom:
        def __reduce__(self):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_save({"x": Boom()}, path)
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]  # no temporary file left behind


def test_hostile_model_and_tensor_files_are_refused_by_the_loaders(tmp_path):
    # a whole pickled "model" and a tensor file with a payload: neither is unpickled by the CLI's loaders
    from unitscope.loading import _tensor_file, load_model

    marker = tmp_path / "ran"
    model_file, tensor_file = tmp_path / "model.pt", tmp_path / "x.pt"
    torch.save({"model": Payload(marker)}, model_file)
    torch.save({"x": torch.ones(2, 3), "extra": Payload(marker)}, tensor_file)
    with pytest.raises(UnitscopeError, match="neither a torch.export nor a TorchScript file"):
        load_model(str(model_file))
    with pytest.raises(UnsafeFileError, match="could run code"):
        _tensor_file(tensor_file)
    assert not marker.exists()


def test_concurrent_cache_misses_train_once(tmp_path, monkeypatch):
    # two workers miss the cache at the same moment (as the ranks of a torchrun job do): the file lock lets one
    # train while the other waits and then reads what it wrote
    import threading
    import time

    monkeypatch.setenv("UNITSCOPE_CACHE", str(tmp_path))
    calls, got = [], []

    def train():
        calls.append(threading.get_ident())
        time.sleep(0.5)
        return {"w": torch.full((3,), 7.0)}, {"acc": 1.0}

    def worker():
        state, _, cached = cached_state("toy", {"a": 1}, train)
        got.append((cached, float(state["w"][0])))

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(calls) == 1 and sorted(got) == [(False, 7.0), (True, 7.0)]
