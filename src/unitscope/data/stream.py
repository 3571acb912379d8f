"""How a data set is streamed through a scan: batches, checkpoints, processes, and what else rides along — settings
that change the work's memory, its restarts and its sharing, never its numbers.

>>> import unitscope as us
>>> us.StreamConfig(batch_size=64, checkpoint="scan.pt").checkpoint_every
50
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Protocol

from ..core.errors import UnitscopeError

if TYPE_CHECKING:
    from torch.distributed import ProcessGroup

__all__ = ["StreamConfig", "stream_config", "ScanExtra"]


class ScanExtra(Protocol):
    """An accumulator of your own that rides along a scan (``StreamConfig.extra``)."""

    def update(self, values: dict, labels: Any, index: Any) -> None:
        """Add a batch: ``values`` ``{score: {layer: [B, U]}}``, the batch's labels and example indices."""

    def state(self) -> dict:
        """What a checkpoint keeps (a dict of tensors)."""

    def load_state(self, state: dict) -> None:
        """Back to a checkpointed ``state()``."""

    def merge(self, states: list) -> None:
        """Under a process group: every rank's ``state()``, in rank order."""

    def settings(self) -> dict:
        """What joins the scan's settings (and so its checkpoint's fingerprint)."""


@dataclass(frozen=True)
class StreamConfig:
    """How :func:`unitscope.scan` (and :func:`unitscope.atlas`, which runs one) reads the data and shares the work.

    - ``batch_size``: examples per batch when the data is a map-style ``Dataset`` (a ``DataLoader`` keeps its own).
    - ``unpack``: ``unpack(batch) -> (inputs, labels)`` for batches in a format of your own (scan only).
    - ``checkpoint``: a file; the accumulators are saved there atomically every ``checkpoint_every`` batches and at
      the end, and a checkpoint of the same scan is resumed (:mod:`unitscope.data.checkpoint`).
    - ``group``: ``None`` — this process works alone, with no collective operation (safe inside anyone's DDP job);
      a ``torch.distributed`` process group — every rank of it calls with the same arguments, takes its share and
      gets the merged result (:mod:`unitscope.data.distributed`).
    - ``extra``: an accumulator of your own fed every batch's reduced values (scan only): ``extra.update({score:
      {layer: [B, U]}}, labels, index)``; its ``state()`` (a dict of tensors) is checkpointed and restored with
      ``load_state``; under ``group`` it gets every rank's state through ``merge(states)``; ``settings()`` joins the
      checkpoint's identity.

    A frozen dataclass, passed as ``stream=``; these settings change the work's memory, its restarts and its sharing,
    never its numbers.

    Parameters
    ----------
    batch_size : int, default 256
        Examples per batch when the data is a map-style ``Dataset`` (a ``DataLoader`` keeps its own).
    unpack : callable or None, default None
        ``unpack(batch) -> (inputs, labels)`` for batches in a format of your own (scan only; ``None``: a batch is
        ``(inputs, labels, ...)``, an inputs tensor, or a tokenizer's dict).
    checkpoint : str, Path or None, default None
        A file to save the accumulators to and resume from (``None``: no checkpoint).
    checkpoint_every : int, default 50
        Batches between checkpoints (a positive integer).
    group : ProcessGroup or None, default None
        ``None``: this process alone; a ``torch.distributed`` process group: the work shared among its ranks.
    extra : object or None, default None
        An accumulator of your own (``update``, ``state``, ``load_state``, ``merge``, ``settings``; see above).

    Raises
    ------
    UnitscopeError
        ``checkpoint_every`` that is not a positive integer (with a ``checkpoint``); ``stream=`` something else than a
        ``StreamConfig``, and ``group=`` without ``torch.distributed`` initialized, are errors of the scan.

    Examples
    --------
    >>> import torch, torch.nn as nn, unitscope as us
    >>> us.StreamConfig(batch_size=64, checkpoint="scan.pt").checkpoint_every
    50
    >>> net = nn.Sequential(nn.Linear(2, 3), nn.ReLU())
    >>> data = torch.utils.data.TensorDataset(torch.rand(10, 2), torch.arange(10) % 2)
    >>> us.scan(net, data, ["1"], stream=us.StreamConfig(batch_size=4), progress=False).count
    10
    """

    batch_size: int = 256
    unpack: Callable | None = None
    checkpoint: str | os.PathLike[str] | None = None
    checkpoint_every: int = 50
    group: ProcessGroup | None = None
    extra: ScanExtra | None = None

    def __post_init__(self):
        if self.checkpoint is not None and (
            isinstance(self.checkpoint_every, bool)
            or not isinstance(self.checkpoint_every, int)
            or self.checkpoint_every < 1
        ):
            raise UnitscopeError("checkpoint_every must be a positive integer", checkpoint_every=self.checkpoint_every)


def stream_config(stream: StreamConfig | None) -> StreamConfig:
    """``stream``, or the default ``StreamConfig()``; anything else is an error."""
    if stream is None:
        return StreamConfig()
    if not isinstance(stream, StreamConfig):
        raise UnitscopeError(
            "stream must be a unitscope.StreamConfig",
            got=type(stream).__name__,
            hint="e.g. stream=us.StreamConfig(batch_size=64, checkpoint='scan.pt')",
        )
    return stream
