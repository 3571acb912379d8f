"""Layer-sized work in tiles of whole units.

The bookkeeping of a path pass (the Stieltjes sums, the panel errors, the adaptive rule's final sums) runs a dozen
elementwise operations over tensors ``[examples, nodes, *unit_shape]``. On a small network with a large batch those
tensors are tens of MB each, and every temporary of that size costs fresh pages from the system (the allocator hands
large blocks back) and a trip through memory; cut into tiles of whole units, the temporaries stay in cache and in the
allocator's free lists. Everything cut this way is elementwise or per unit, so the tiles' results, joined along the
unit dimension, are the layer's (to rounding: a sum over the nodes may add in another order).

>>> import torch
>>> dim, spans = tiles(torch.zeros(32, 50, 64, 8, 8), 50)  # 50 nodes of a conv layer: 12.8 KB per channel
>>> dim, spans[:2], len(spans)
(2, [(0, 10), (10, 10)], 7)
"""

from __future__ import annotations

import torch

__all__ = ["TILE_BYTES", "tiles", "joined"]

#: a tile holds about this many bytes per example
TILE_BYTES = 128 << 10


def tiles(t: torch.Tensor, count: int) -> tuple[int, list[tuple[int, int]]]:
    """How to cut ``t`` ``[examples, nodes, *unit_shape]`` into tiles of whole units: the dimension (channels of
    ``[C, H, W]``, neurons of token-major ``[T, D]``, else the first unit dimension, whose blocks keep
    ``estimates.reduce_units``' order) and ``(start, size)`` spans along it, each about ``TILE_BYTES`` over an
    example's ``count`` nodes. The spans depend on neither the examples nor how many are cut together."""
    dim = 3 if t.dim() == 4 else 2  # [E, nodes, T, D]: tile D; otherwise the first unit dim
    n = t.shape[dim]
    per = max(1, t[0, 0].numel() // max(1, n)) * t.element_size() * count
    size = max(1, min(n, TILE_BYTES // per))
    return dim, [(i, min(size, n - i)) for i in range(0, n, size)]


def joined(pieces: list[torch.Tensor], dim: int) -> torch.Tensor:
    """Tiles' results back along ``dim`` (the piece itself when there was one tile)."""
    return pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim)
