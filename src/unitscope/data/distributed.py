"""The ranks of a distributed scan: an explicit process group, a lockstep that cannot hang, the final merge.

``scan(..., group=None)`` runs no collective at all — inside someone else's DDP job every rank may scan alone.
With ``group=`` (``torch.distributed.group.WORLD`` or any group; ``python -m unitscope.cli.scan`` under ``torchrun``
passes one) each rank takes its shard of the batches, and after every batch the ranks exchange two flags
(``failed``, ``has more``) in one small all-reduce:

- an exception on any rank reaches every rank at that rank's next batch: the failing rank re-raises its own error,
  every other rank raises :class:`RankFailed` with the failing rank's number and message — no rank is left waiting;
- a rank that dies (``kill -9``) or hangs makes the others' all-reduce fail — at once for a closed connection, else
  after the group's timeout (``init_process_group(timeout=...)``) — with a :class:`RankFailed` that says so;
- ranks whose shards differ in length keep answering until the longest is done.

Then sums are all-reduced and top-k lists merged by ``all_gather`` (every rank returns the same result).

**Every collective of a scan runs on gloo, on the CPU**, whatever the group's backend: the statistics are small CPU
tensors, and a gloo collective whose peer is gone raises after the timeout in the calling thread, so the rank stops
with a message. An NCCL group (or any group that cannot take CPU tensors) gets a gloo twin over the same ranks with
the same timeout (:func:`control_group`, made once per group, by every rank of it at its first scan); the model
itself may live on the GPU. An NCCL collective, by contrast, is asynchronous: a dead peer leaves it spinning on the
GPU until NCCL's watchdog aborts the whole process after the timeout — bounded too, but without the message.

What is tested where: the lockstep, the merge and the twin group are tested on CPU with gloo groups (the twin by
treating a gloo group as one that needs it); no test here runs NCCL (no GPU on the test machine), so the NCCL
group's timeout being read (``ProcessGroupNCCL.Options._timeout``, falling back to torch's NCCL default of 10
minutes) is untested.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from ..core.errors import UnitscopeError

if TYPE_CHECKING:
    from torch.distributed import ProcessGroup

__all__ = ["Ranks", "RankFailed", "control_group", "timeout_of"]


class RankFailed(UnitscopeError):
    """Another rank of the scan failed, died or stopped answering: this one stops too."""


def _lost_contact(e: BaseException) -> bool:
    """A collective failed because a peer closed its connection, or timed out (gloo raises a plain RuntimeError,
    NCCL a DistError); out-of-memory is not that."""
    from ..core.faults import is_oom

    return isinstance(e, RuntimeError) and not is_oom(e)


def _takes_cpu_tensors(group) -> bool:
    import torch.distributed as dist

    backend = str(dist.get_backend(group))  # "gloo", "nccl", or "cpu:gloo,cuda:nccl" for a group of both
    return backend == "gloo" or "cpu:gloo" in backend


def timeout_of(group) -> datetime.timedelta:
    """The collective timeout ``group`` was made with (``init_process_group(timeout=...)``/``new_group``); torch's
    default for its backend where this torch version does not expose it."""
    import torch.distributed as dist
    from torch.distributed import constants

    nccl = "nccl" in str(dist.get_backend(group))
    try:
        return group._get_backend(torch.device("cuda" if nccl else "cpu")).options._timeout
    except (AttributeError, RuntimeError):  # a private attribute that may move between torch versions
        return (constants.default_pg_nccl_timeout if nccl else None) or constants.default_pg_timeout


_TWINS: dict = {}  # a group that cannot take CPU tensors -> its gloo twin


def _alive(group) -> bool:
    import torch.distributed as dist

    try:
        dist.get_backend(group)
    except ValueError:  # "not initialized in the world group map": destroyed
        return False
    return True


def control_group(group, *, needs_twin=None):
    """The group a scan's collectives run on: ``group`` itself where it takes CPU tensors (gloo), else a gloo group
    over the same ranks with ``group``'s timeout, made at the first call (every rank of ``group`` must make it: the
    ranks of a scan all call it) and reused while it lives. ``needs_twin`` (tests) overrides the backend check."""
    import torch.distributed as dist

    if not (needs_twin if needs_twin is not None else not _takes_cpu_tensors(group)):
        return group
    for old in [g for g, t in _TWINS.items() if not (_alive(g) and _alive(t))]:
        del _TWINS[old]  # destroyed since (destroy_process_group): forget them
    if group in _TWINS:
        return _TWINS[group]
    twin = dist.new_group(
        ranks=dist.get_process_group_ranks(group),
        backend="gloo",
        timeout=timeout_of(group),
        use_local_synchronization=True,
        sort_ranks=False,
    )  # its rank i is group's rank i
    _TWINS[group] = twin
    return twin


@dataclass
class Ranks:
    """``rank`` of ``world`` in ``group`` (``None``: a single process, no collectives); ``comm``: the gloo group the
    collectives run on (:func:`control_group`)."""

    group: ProcessGroup | None = None
    rank: int = 0
    world: int = 1
    comm: ProcessGroup | None = field(default=None, repr=False)

    @classmethod
    def of(cls, group, *, needs_twin=None) -> "Ranks":
        if group is None:
            return cls()
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            raise UnitscopeError(
                "group= was given but torch.distributed is not initialized",
                hint="call torch.distributed.init_process_group first, or pass group=None "
                "to scan in this process alone",
            )
        rank, world = dist.get_rank(group), dist.get_world_size(group)
        comm = control_group(group, needs_twin=needs_twin) if world > 1 else group
        return cls(group, rank, world, comm)

    @property
    def distributed(self) -> bool:
        return self.group is not None and self.world > 1

    # ------------------------------------------------------------------------------------------- lockstep --
    def step(self, failed: BaseException | None, more: bool) -> bool:
        """One lockstep exchange after a batch (or the setup): raise if any rank failed, else return whether any
        rank has batches left. Single process: re-raise ``failed``, return ``more``."""
        if not self.distributed:
            if failed is not None:
                raise failed
            return more
        flags = torch.tensor([1.0 if failed is not None else 0.0, 1.0 if more else 0.0], dtype=torch.float64)
        try:
            flags = self._all_reduce(flags)
        except RuntimeError as e:
            if not _lost_contact(e):
                raise
            if failed is not None:
                raise failed  # noqa: B904 — this rank's own earlier error, not one the lost contact caused
            raise RankFailed(
                f"rank {self.rank} of {self.world}: another rank of the scan died or stopped answering",
                detail=(str(e).strip().splitlines() or [type(e).__name__])[0],
                hint="its own log says why; a scan with checkpoint= resumes where it stopped",
            ) from e
        if flags[0] > 0:
            mine = None if failed is None else f"{type(failed).__name__}: {failed}"
            try:
                messages = self.all_gather_object(mine)
            except RuntimeError as e:  # the failing rank may be gone already: its message is then lost
                if not _lost_contact(e):
                    raise
                messages = [None] * self.world
            if failed is not None:
                raise failed
            who = [(r, m) for r, m in enumerate(messages) if m is not None]
            r, message = who[0] if who else ("?", "(its message did not arrive)")
            raise RankFailed(
                f"rank {r} of {self.world} failed, so rank {self.rank} stops too: {message}",
                hint="fix what rank " + str(r) + " reports; with checkpoint= the scan resumes",
            )
        return bool(flags[1] > 0)

    # ----------------------------------------------------------------------------------------- collectives --
    def _all_reduce(self, t: torch.Tensor, op=None) -> torch.Tensor:
        import torch.distributed as dist

        u = t.detach().cpu().clone()
        dist.all_reduce(u, op=op or dist.ReduceOp.SUM, group=self.comm)
        return u

    def _all_gather(self, t: torch.Tensor) -> list[torch.Tensor]:
        import torch.distributed as dist

        t = t.detach().cpu().contiguous()
        out = [torch.empty_like(t) for _ in range(self.world)]
        dist.all_gather(out, t, group=self.comm)
        return out

    def all_gather_object(self, obj) -> list:
        """Every rank's ``obj`` (picklable), in rank order."""
        import torch.distributed as dist

        out = [None] * self.world
        dist.all_gather_object(out, obj, group=self.comm)
        return out

    def reduce(self, stats: dict, count: int, class_counts, top_k: int, empty, merge_top):
        """Sum every accumulator over the ranks and merge their top-k lists; every rank gets the result.
        ``empty(units)`` makes an empty accumulator (for a rank whose shard had no batch)."""
        import torch.distributed as dist

        stats = self._fill_missing(stats, empty)
        count = int(self._all_reduce(torch.tensor([count], dtype=torch.float64))[0])
        if class_counts is not None:
            k = int(self._all_reduce(torch.tensor([class_counts.numel()], dtype=torch.float64), dist.ReduceOp.MAX)[0])
            class_counts = torch.cat([class_counts, class_counts.new_zeros(k - class_counts.numel())])
            class_counts = self._all_reduce(class_counts)
        for by_layer in stats.values():
            for st in by_layer.values():
                st.sum, st.sumsq = self._all_reduce(st.sum), self._all_reduce(st.sumsq)
                if st.minimum is not None:
                    st.minimum = self._all_reduce(st.minimum, dist.ReduceOp.MIN)
                if st.class_sums is not None:
                    st.grow(class_counts.numel())
                    st.class_sums = self._all_reduce(st.class_sums)
                v = torch.cat(self._all_gather(st.top_values), 1)
                i = torch.cat(self._all_gather(st.top_indices), 1)
                st.top_values, st.top_indices = merge_top(v, i, top_k)
        return stats, count, class_counts

    def _fill_missing(self, stats: dict, empty):
        """A rank whose shard was empty has no accumulators yet: give it empty ones shaped like the others'."""
        import torch.distributed as dist

        flags = self._all_gather(torch.tensor([1.0 if stats else 0.0], dtype=torch.float64))
        if all(float(f) for f in flags):
            return stats
        owners = [i for i, f in enumerate(flags) if float(f)]
        if not owners:
            return stats
        shapes = [{m: {n: st.sum.numel() for n, st in d.items()} for m, d in stats.items()}]
        assert self.comm is not None  # several ranks
        dist.broadcast_object_list(shapes, src=dist.get_global_rank(self.comm, owners[0]), group=self.comm)
        if not stats:
            stats = {m: {n: empty(u) for n, u in d.items()} for m, d in shapes[0].items()}
        return stats
