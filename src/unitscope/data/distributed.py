"""The ranks of a distributed scan: an explicit process group, a lockstep that cannot hang, the final merge.

``scan(..., group=None)`` runs no collective at all — inside someone else's DDP job every rank may scan alone.
With ``group=`` (``torch.distributed.group.WORLD`` or any group; ``python -m unitscope.cli.scan`` under ``torchrun``
passes one) each rank takes its shard of the batches, and after every batch the ranks exchange two flags
(``failed``, ``has more``) in one small all-reduce:

- an exception on any rank reaches every rank at that rank's next batch: the failing rank re-raises its own error,
  every other rank raises :class:`RankFailed` with the failing rank's number and message — no rank is left waiting;
- a rank that dies (``kill -9``) or hangs makes the others' all-reduce fail — at once for a closed connection, else
  after the group's timeout (``init_process_group(timeout=...)``; gloo and NCCL both honour it) — with a
  :class:`RankFailed` that says so;
- ranks whose shards differ in length keep answering until the longest is done.

Then sums are all-reduced and top-k lists merged by ``all_gather`` (every rank returns the same result).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..core.errors import UnitscopeError

__all__ = ["Ranks", "RankFailed"]


class RankFailed(UnitscopeError):
    """Another rank of the scan failed, died or stopped answering: this one stops too."""


def _lost_contact(e: BaseException) -> bool:
    """A collective failed because a peer closed its connection, or timed out (gloo raises a plain RuntimeError,
    NCCL a DistError); out-of-memory is not that."""
    from ..core.faults import is_oom

    return isinstance(e, RuntimeError) and not is_oom(e)


@dataclass
class Ranks:
    """``rank`` of ``world`` in ``group`` (``None``: a single process, no collectives)."""

    group: object = None
    rank: int = 0
    world: int = 1

    @classmethod
    def of(cls, group) -> "Ranks":
        if group is None:
            return cls()
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            raise UnitscopeError("group= was given but torch.distributed is not initialized",
                                 hint="call torch.distributed.init_process_group first, or pass group=None "
                                      "to scan in this process alone")
        return cls(group, dist.get_rank(group), dist.get_world_size(group))

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
        import torch.distributed as dist

        flags = torch.tensor([1.0 if failed is not None else 0.0, 1.0 if more else 0.0], dtype=torch.float64)
        try:
            flags = self._all_reduce(flags)
        except RuntimeError as e:
            if not _lost_contact(e):
                raise
            if failed is not None:
                raise failed
            raise RankFailed(f"rank {self.rank} of {self.world}: another rank of the scan died or stopped "
                             "answering", detail=(str(e).strip().splitlines() or [type(e).__name__])[0],
                             hint="its own log says why; a scan with checkpoint= resumes where it stopped") from e
        if flags[0] > 0:
            mine = None if failed is None else f"{type(failed).__name__}: {failed}"
            messages = [None] * self.world
            try:
                dist.all_gather_object(messages, mine, group=self.group)
            except RuntimeError as e:  # the failing rank may be gone already: its message is then lost
                if not _lost_contact(e):
                    raise
                messages = [None] * self.world
            if failed is not None:
                raise failed
            who = [(r, m) for r, m in enumerate(messages) if m is not None]
            r, message = who[0] if who else ("?", "(its message did not arrive)")
            raise RankFailed(f"rank {r} of {self.world} failed, so rank {self.rank} stops too: {message}",
                             hint="fix what rank " + str(r) + " reports; with checkpoint= the scan resumes")
        return bool(flags[1] > 0)

    # ----------------------------------------------------------------------------------------- collectives --
    def _device(self):
        import torch.distributed as dist

        if dist.get_backend(self.group) == "nccl":
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")

    def _all_reduce(self, t: torch.Tensor, op=None) -> torch.Tensor:
        import torch.distributed as dist

        u = t.to(self._device()).clone()
        dist.all_reduce(u, op=op or dist.ReduceOp.SUM, group=self.group)
        return u.cpu()

    def _all_gather(self, t: torch.Tensor) -> list[torch.Tensor]:
        import torch.distributed as dist

        t = t.to(self._device()).contiguous()
        out = [torch.empty_like(t) for _ in range(self.world)]
        dist.all_gather(out, t, group=self.group)
        return [o.cpu() for o in out]

    def reduce(self, stats: dict, count: int, class_counts, top_k: int, empty, merge_top):
        """Sum every accumulator over the ranks and merge their top-k lists; every rank gets the result.
        ``empty(units)`` makes an empty accumulator (for a rank whose shard had no batch)."""
        import torch.distributed as dist

        stats = self._fill_missing(stats, empty)
        count = int(self._all_reduce(torch.tensor([count], dtype=torch.float64))[0])
        if class_counts is not None:
            k = int(self._all_reduce(torch.tensor([class_counts.numel()], dtype=torch.float64),
                                     dist.ReduceOp.MAX)[0])
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
        dist.broadcast_object_list(shapes, src=dist.get_global_rank(self.group, owners[0]), group=self.group)
        if not stats:
            stats = {m: {n: empty(u) for n, u in d.items()} for m, d in shapes[0].items()}
        return stats
