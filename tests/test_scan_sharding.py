"""Iterable datasets under several ranks are sharded before any work: each rank collates (encodes) only its own
examples — and reads only those when the dataset has ``iter_shard`` —, and the merged result equals one process's."""

import json
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader, IterableDataset
from torch.utils.data._utils.collate import default_collate

from unitscope.data.batches import plan_batches, split_batch
from unitscope import PathConfig, StreamConfig
from unitscope.data.scan import ScanResult, scan

from test_scan import LAYERS, small_cnn, small_data
from ports import free_port

N, BATCH = 61, 7
SCORES = ["activation", "conductance"]
SETTINGS = dict(scores=SCORES, top_k=4, path=PathConfig(n_steps=6, method="gausslegendre"), progress=False)
COUNTS = {"read": 0, "encoded": 0}


class Stream(IterableDataset):
    """61 examples read in order; counts how many it produced."""

    def __init__(self):
        self.data = small_data(N)

    def __iter__(self):
        for i in range(len(self.data)):
            COUNTS["read"] += 1
            yield self.data[i]


class SkippingStream(Stream):
    """The same examples; ``iter_shard`` produces only the shard's (as a file reader that seeks would)."""

    def iter_shard(self, index, num_shards):
        for i in range(index, len(self.data), num_shards):
            COUNTS["read"] += 1
            yield self.data[i]


def encode(examples):
    """A collate_fn that counts the examples it encodes."""
    COUNTS["encoded"] += len(examples)
    return default_collate(examples)


def _assert_same(a: ScanResult, b: ScanResult, atol):
    """Equal statistics; the example indices of the top lists exactly. (A rank batches its own examples, so float32
    sums of different batches can differ in the last bits: ``atol``.)"""
    assert a.count == b.count and a.layers == b.layers and a.scores == b.scores
    assert torch.equal(a.class_counts, b.class_counts)
    for m in a.scores:
        for name in a.layers:
            sa, sb = a.stats[m][name], b.stats[m][name]
            for key in ("sum", "sumsq", "class_sums", "top_values", "minimum"):
                torch.testing.assert_close(getattr(sa, key), getattr(sb, key), rtol=0, atol=atol)
            assert torch.equal(sa.top_indices, sb.top_indices), (m, name)


def _worker(rank, port, out):
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        for kind in (Stream, SkippingStream):
            COUNTS.update(read=0, encoded=0)
            r = scan(
                small_cnn(),
                DataLoader(kind(), batch_size=BATCH, collate_fn=encode),
                LAYERS,
                stream=StreamConfig(group=dist.group.WORLD),
                **SETTINGS,
            )
            r.save(Path(out) / f"{kind.__name__}{rank}.pt")
            (Path(out) / f"{kind.__name__}{rank}.json").write_text(json.dumps(COUNTS))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # two spawned processes: ~25 s of CPU, a minute on the shared machine
def test_each_rank_encodes_only_its_share_and_the_result_equals_one_process(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_worker, args=(free_port(), str(tmp_path)), nprocs=2, join=True)
    COUNTS.update(read=0, encoded=0)
    one = scan(small_cnn(), DataLoader(Stream(), batch_size=BATCH, collate_fn=encode), LAYERS, **SETTINGS)
    assert COUNTS == {"read": N, "encoded": N}
    share = [len(range(r, N, 2)) for r in (0, 1)]  # 31, 30
    for kind in ("Stream", "SkippingStream"):
        counts = [json.loads((tmp_path / f"{kind}{r}.json").read_text()) for r in (0, 1)]
        assert [c["encoded"] for c in counts] == share, kind  # nothing else was collated (encoded) on a rank
        # a plain stream is read through (and its other examples dropped before collate); iter_shard skips them
        assert [c["read"] for c in counts] == ([N, N] if kind == "Stream" else share), kind
        r0, r1 = (ScanResult.load(tmp_path / f"{kind}{r}.pt") for r in (0, 1))
        assert r0.settings["world_size"] == 2 and r0.count == N
        _assert_same(r0, r1, atol=0)
        _assert_same(r0, one, atol=1e-6)  # top-k indices included: positions in the stream as in one process


def test_a_rank_numbers_its_examples_as_positions_in_the_stream_and_resumes_after_done_batches():
    class Sized(SkippingStream):
        def __len__(self):
            return N

    plan = plan_batches(DataLoader(SkippingStream(), batch_size=4), rank=1, world=3, unpack=split_batch, batch_size=99)
    assert plan.total_batches is None and plan.n_examples is None  # a stream without len: not known
    loader = DataLoader(Sized(), batch_size=4, collate_fn=encode)
    plan = plan_batches(loader, rank=1, world=3, unpack=split_batch, batch_size=99)
    assert plan.total_batches == 5 and plan.n_examples == N  # 20 examples of 61: 4 + 4 + 4 + 4 + 4
    COUNTS.update(read=0, encoded=0)
    got = [(idx.tolist(), y.tolist()) for _, y, idx in plan.batches(2)]
    assert [i for i, _ in got] == [[25, 28, 31, 34], [37, 40, 43, 46], [49, 52, 55, 58]]
    labels = small_data(N).tensors[1]
    assert all(y == labels[i].tolist() for i, y in got)
    assert COUNTS == {"read": 20, "encoded": 12}  # the two batches done before were read again but not encoded
