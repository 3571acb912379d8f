"""Which batches a scan reads, which shard is this rank's, and how examples are numbered.

>>> plan = plan_batches([torch.zeros(3, 2), torch.zeros(3, 2), torch.zeros(1, 2)], rank=1, world=2,
...                     unpack=split_batch, batch_size=8)
>>> [index.tolist() for _, _, index in plan.batches(0)]
[[3, 4, 5]]

- a ``DataLoader`` over a map-style dataset (or the dataset itself, batched by ``batch_size``): example indices are
  the dataset's; rank ``r`` of ``w`` builds only batches ``r, r + w, …`` (its workers load nothing else);
- a sequence of batches (``len`` and indexing, e.g. a list, or a lazy object that encodes a batch when indexed):
  rank ``r`` indexes only its own batches; example indices are positions in the stream (in a list they are counted
  from the batches' sizes, in other sequences every batch but the last must hold the same number of examples);
- a ``DataLoader`` over an ``IterableDataset`` (automatic batching, ``num_workers=0``, no ``drop_last``): under
  several ranks, rank ``r`` of ``w`` keeps the stream's **examples** ``r, r + w, r + 2w, …`` *before* anything is done
  with them — the loader's ``collate_fn`` (where tokenizers and transforms usually run), ``pin_memory`` and the model
  see only this rank's examples; it batches them ``batch_size`` at a time. Example indices stay positions in the
  stream (example ``j`` of rank ``r`` is ``j·w + r``), so the result equals one process's. What the dataset must
  allow: every rank's ``iter(dataset)`` yields the same examples in the same order (a fixed file list, no unseeded
  shuffling). Work that the dataset's own ``__iter__`` does per example (reading, decoding) is still done on every
  rank for every example, unless the dataset skips at the source: give it a method ``iter_shard(index,
  num_shards)`` returning an iterator over its examples ``index, index + num_shards, …`` only (what
  ``itertools.islice(iter(self), index, None, num_shards)`` yields, without producing the others); the scan then
  calls that instead of ``iter``. Under one rank the loader is read as it is;
- any other iterable (a generator, a ``DataLoader`` over an ``IterableDataset`` that yields whole batches
  — ``batch_size=None`` —, has ``num_workers > 0`` or ``drop_last``): it can only be read in order, so under several
  ranks every rank reads every batch and keeps its own (a warning says so; give a sequence instead).
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Callable

import torch
import torch.utils.data

from ..core.errors import UnitscopeError

__all__ = ["split_batch", "plan_batches", "shard_examples", "Plan"]


def split_batch(batch):
    """``(inputs, labels)`` of a batch ``(inputs, labels, ...)``, ``inputs`` or ``{"x": …, "y": …}``."""
    if torch.is_tensor(batch):
        return batch, None
    if isinstance(batch, (list, tuple)) and len(batch) >= 1:
        return batch[0], (batch[1] if len(batch) > 1 else None)
    if isinstance(batch, dict) and "x" in batch:
        return batch["x"], batch.get("y")
    if isinstance(batch, dict) and "input_ids" in batch:  # a tokenizer's batch: the rest are forward arguments
        rest = {k: v for k, v in batch.items() if k not in ("labels", "label")}
        return rest, batch.get("labels", batch.get("label"))
    raise UnitscopeError(
        f"cannot read inputs from a batch of type {type(batch).__name__}",
        hint="give batches as (inputs, labels) or pass unpack=lambda batch: (inputs, labels)",
    )


def batch_len(x) -> int:
    if isinstance(x, dict):
        return int(x["input_ids"].shape[0])
    return int((x[0] if isinstance(x, (tuple, list)) else x).shape[0])


@dataclass
class Plan:
    batches: Callable  # done -> iterable of (inputs, labels, index tensor), skipping ``done`` batches
    total_batches: int | None  # in this shard
    n_examples: int | None  # in the whole data set (all shards), where known
    first: Callable | None  # () -> the data's first (inputs, labels), without consuming anything; or None
    batch_size: int | None  # the batches' size, where known

    def n_batches(self, done: int) -> int | None:
        return None if self.total_batches is None else max(self.total_batches - done, 0)


def _map_style(loader, rank, world, unpack, batch_size) -> Plan:
    from torch.utils.data import DataLoader, RandomSampler, SequentialSampler
    from torch.utils.data.distributed import DistributedSampler

    ds = loader.dataset
    sampler = loader.sampler
    if isinstance(sampler, (SequentialSampler, RandomSampler, DistributedSampler)):
        order = list(range(len(ds)))
    else:
        order = sorted({int(i) for i in sampler})
    bs = loader.batch_size or getattr(loader.batch_sampler, "batch_size", None) or batch_size
    everything = [order[i : i + bs] for i in range(0, len(order), bs)]
    mine = everything[rank::world]
    # a generator of its own: iterating a DataLoader otherwise draws its workers' base seed from the global RNG
    kwargs = dict(
        num_workers=loader.num_workers,
        collate_fn=loader.collate_fn,
        pin_memory=loader.pin_memory,
        worker_init_fn=loader.worker_init_fn,
        timeout=loader.timeout,
        generator=loader.generator if loader.generator is not None else torch.Generator(),
    )
    if loader.num_workers > 0:
        kwargs.update(prefetch_factor=loader.prefetch_factor, multiprocessing_context=loader.multiprocessing_context)

    def batches(done):
        todo = mine[done:]
        if not todo:
            return
        for idx, batch in zip(todo, DataLoader(ds, batch_sampler=todo, **kwargs)):
            x, y = unpack(batch)
            yield x, y, torch.tensor(idx, dtype=torch.long)

    first = (lambda: unpack(loader.collate_fn([ds[i] for i in everything[0]]))) if everything else None
    return Plan(batches, len(mine), len(order), first, bs)


def _sequence(loader, rank, world, unpack) -> Plan:
    total = len(loader)
    mine = range(rank, total, world)
    sizes = None
    if isinstance(loader, (list, tuple)):  # in memory: reading a size costs nothing
        sizes = [batch_len(unpack(b)[0]) for b in loader]
        starts = [0]
        for n in sizes:
            starts.append(starts[-1] + n)
    size = getattr(loader, "batch_size", None)

    def batches(done):
        nonlocal size
        for b in mine[done:]:
            x, y = unpack(loader[b])
            n = batch_len(x)
            if sizes is not None:
                start = starts[b]
            else:
                if size is None:
                    size = n if b == 0 else batch_len(unpack(loader[0])[0])
                if n != size and b != total - 1:
                    raise UnitscopeError(
                        f"batch {b} of the sequence holds {n} examples, the others {size}",
                        hint="every batch but the last must have the same size (to number the "
                        "examples without reading the other ranks' batches), or give a "
                        "DataLoader",
                    )
                start = b * size
            yield x, y, torch.arange(start, start + n)

    first = (lambda: unpack(loader[0])) if total else None
    return Plan(batches, len(mine), None if sizes is None else sum(sizes), first, size)


def _length(obj) -> int | None:
    """``len(obj)`` where it has one (a ``DataLoader`` over an ``IterableDataset`` has ``__len__`` but may raise)."""
    try:
        return len(obj)
    except TypeError:
        return None


class _RankShard(torch.utils.data.IterableDataset):
    """The examples ``index, index + num_shards, …`` of an iterable data set, minus the first ``skip`` of them
    (already scanned before a restart); the others are never collated (see :func:`shard_examples`)."""

    def __init__(self, dataset, index: int, num_shards: int, skip: int = 0):
        self.dataset, self.index, self.num_shards, self.skip = dataset, index, num_shards, skip

    def __iter__(self):
        return itertools.islice(shard_examples(self.dataset, self.index, self.num_shards), self.skip, None)


def shard_examples(dataset, index: int, num_shards: int):
    """An iterator over the examples ``index, index + num_shards, …`` of an iterable data set: the data set's own
    ``iter_shard(index, num_shards)`` where it has one (it skips the others at the source), else
    ``itertools.islice(iter(dataset), index, None, num_shards)`` (the others are read, and dropped at once)."""
    own = getattr(dataset, "iter_shard", None)
    if own is not None:
        return iter(own(index, num_shards))
    return itertools.islice(iter(dataset), index, None, num_shards)


def _iterable_shard(loader, rank, world, unpack) -> Plan:
    """Rank ``rank`` of ``world`` keeps the examples ``rank, rank + world, …`` of a ``DataLoader`` over an
    ``IterableDataset`` before they are collated, and batches them as the loader would."""
    from torch.utils.data import DataLoader

    ds, bs = loader.dataset, loader.batch_size
    n = _length(ds)
    share = None if n is None else len(range(rank, n, world))

    def batches(done):
        # done batches of this rank were full ones (only a rank's last batch is short): skip done·bs own examples
        shard = DataLoader(
            _RankShard(ds, rank, world, skip=done * bs),
            batch_size=bs,
            collate_fn=loader.collate_fn,
            pin_memory=loader.pin_memory,
            timeout=loader.timeout,
            generator=torch.Generator(),
        )
        j = done * bs
        for batch in shard:
            x, y = unpack(batch)
            m = batch_len(x)
            yield x, y, torch.arange(j, j + m) * world + rank
            j += m

    def first():  # the stream's first batch (every rank the same), for the checkpoint's fingerprint
        return unpack(loader.collate_fn(list(itertools.islice(iter(ds), bs))))

    return Plan(batches, None if share is None else -(-share // bs), n, first, bs)


def _stream(loader, rank, world, unpack) -> Plan:
    total = _length(loader)
    if world > 1:
        warnings.warn(
            f"rank {rank} of {world}: the loader ({type(loader).__name__}) can only be read in order, so "
            "every rank reads every batch and keeps its own; give a sequence of batches (len + indexing), "
            "a map-style Dataset, or a DataLoader over an IterableDataset with batch_size set, "
            "num_workers=0 and no drop_last, to read only this rank's shard",
            UserWarning,
            stacklevel=4,
        )

    def batches(done):
        position, seen = 0, 0
        for b, batch in enumerate(loader):
            x, y = unpack(batch)
            n = batch_len(x)
            if b % world == rank:
                if seen >= done:
                    yield x, y, torch.arange(position, position + n)
                seen += 1
            position += n

    one_shot = isinstance(loader, Iterator)
    first = None if one_shot else (lambda: unpack(next(iter(loader))))
    return Plan(batches, None if total is None else len(range(rank, total, world)), None, first, None)


def plan_batches(loader, *, rank: int, world: int, unpack: Callable, batch_size: int) -> Plan:
    """This rank's batches of ``loader`` (see the module's docstring for the kinds of loader)."""
    from torch.utils.data import DataLoader, Dataset, IterableDataset

    if isinstance(loader, Dataset) and not isinstance(loader, IterableDataset) and hasattr(loader, "__len__"):
        loader = DataLoader(loader, batch_size=batch_size)
    if isinstance(loader, DataLoader) and not isinstance(loader.dataset, IterableDataset):
        return _map_style(loader, rank, world, unpack, batch_size)
    if (
        world > 1
        and isinstance(loader, DataLoader)
        and loader.batch_size is not None
        and not loader.drop_last
        and loader.num_workers == 0
    ):
        return _iterable_shard(loader, rank, world, unpack)
    if (
        not isinstance(loader, (DataLoader, IterableDataset, dict))
        and not torch.is_tensor(loader)
        and (isinstance(loader, Sequence) or (hasattr(loader, "__len__") and hasattr(loader, "__getitem__")))
    ):
        return _sequence(loader, rank, world, unpack)
    return _stream(loader, rank, world, unpack)
