"""What a scan adds up, per unit: streaming statistics (count, sum, sum of squares, per-class sums) and the top-k
examples, mergeable across batches and processes.

>>> import torch
>>> merge_top(torch.tensor([[1.0, 3.0, 3.0, 2.0]]), torch.tensor([[7, 5, 4, 9]]), 2)
(tensor([[3., 3.]]), tensor([[4, 5]]))
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..attribution.scores import attribute
from ..core.errors import UnitscopeError

__all__ = ["UnitStats", "merge_top", "reduce_units", "Accumulators"]


@dataclass
class UnitStats:
    """Streaming statistics of one score on one layer: tensors over its ``U`` units (float64)."""

    sum: torch.Tensor  # [U]
    sumsq: torch.Tensor  # [U]
    class_sums: torch.Tensor | None  # [K, U]
    top_values: torch.Tensor  # [U, k] descending; -inf where fewer than k examples were seen
    top_indices: torch.Tensor  # [U, k] example indices; -1 where empty
    minimum: torch.Tensor | None = None  # [U] smallest value seen (+inf before any); None in files of old scans

    @classmethod
    def empty(cls, units: int, top_k: int, by_class: bool) -> "UnitStats":
        z = torch.zeros(units, dtype=torch.float64)
        return cls(
            z,
            z.clone(),
            torch.zeros(0, units, dtype=torch.float64) if by_class else None,
            torch.full((units, top_k), -torch.inf, dtype=torch.float64),
            torch.full((units, top_k), -1, dtype=torch.long),
            torch.full((units,), torch.inf, dtype=torch.float64),
        )

    def update(self, values: torch.Tensor, labels: torch.Tensor | None, index: torch.Tensor) -> None:
        """Add a batch: ``values [B, U]`` (float64), ``labels [B]``, ``index [B]`` (example indices)."""
        self.sum += values.sum(0)
        self.sumsq += (values * values).sum(0)
        if self.minimum is not None and values.shape[0]:
            self.minimum = torch.minimum(self.minimum, values.min(0).values)
        if self.class_sums is not None:
            assert labels is not None  # per-class sums are kept for a scan by class
            k = int(labels.max()) + 1 if labels.numel() else 0
            self.grow(k)
            self.class_sums.index_add_(0, labels, values)
        b = values.shape[0]
        self.top_values, self.top_indices = merge_top(
            torch.cat([self.top_values, values.T], 1),
            torch.cat([self.top_indices, index.unsqueeze(0).expand(values.shape[1], b)], 1),
            self.top_values.shape[1],
        )

    def grow(self, k: int) -> None:
        if self.class_sums is not None and self.class_sums.shape[0] < k:
            pad = self.class_sums.new_zeros(k - self.class_sums.shape[0], self.class_sums.shape[1])
            self.class_sums = torch.cat([self.class_sums, pad])

    def state(self) -> dict:
        return {k: getattr(self, k) for k in ("sum", "sumsq", "class_sums", "top_values", "top_indices", "minimum")}


def merge_top(values: torch.Tensor, indices: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` largest ``values`` per row with their ``indices``; ties go to the lower index.

    >>> v, i = merge_top(torch.tensor([[1., 3., 3., 2.]]), torch.tensor([[7, 9, 4, 1]]), 2)
    >>> v.tolist(), i.tolist()
    ([[3.0, 3.0]], [[4, 9]])
    """
    by_index = torch.sort(indices, dim=1, stable=True).indices
    values, indices = values.gather(1, by_index), indices.gather(1, by_index)
    order = torch.sort(values, dim=1, descending=True, stable=True).indices[:, :k]
    return values.gather(1, order), indices.gather(1, order)


def reduce_units(scores, name: str, how: str) -> torch.Tensor:
    """``[N, U]``: the layer's units by its unit specification (:mod:`unitscope.core.units`: conv channels,
    transformer neurons over the tokens the attention mask keeps — any T —, heads, …; a tuple output: the part
    the spec names, default 0), the other dims reduced by ``how``."""
    return scores.per_unit(name, reduce=how)


class Accumulators:
    """Everything a scan adds up, per rank: ``stats[score][layer]``, the example count, the class counts."""

    def __init__(self, methods, how, top_k, by, num_classes, target, extra=None) -> None:
        self.methods, self.how, self.top_k, self.by, self.num_classes, self.target = (
            methods,
            how,
            top_k,
            by,
            num_classes,
            target,
        )
        self.extra = extra
        self.stats: dict[str, dict[str, UnitStats]] = {}
        self.count = 0
        self.class_counts = torch.zeros(num_classes or 0, dtype=torch.float64) if by else None

    def add(self, model, x, y, index, layers, **attribute_kwargs) -> None:
        by, num_classes = self.by, self.num_classes
        if y is not None:
            y = torch.as_tensor(y).long().cpu()
        if (by == "class" or self.target == "label") and y is None:
            raise UnitscopeError("the batches carry no labels", hint="scan with by=None, or give (inputs, labels)")
        if by == "class":
            if y.numel() and (y.min() < 0 or (num_classes is not None and y.max() >= num_classes)):
                raise UnitscopeError(
                    "labels out of range", num_classes=num_classes, labels=sorted(set(y.tolist()))[:10]
                )
        tgt = y.tolist() if self.target == "label" else self.target
        if isinstance(x, dict):  # a tokenizer's batch: input_ids, and the rest as keyword arguments
            x = dict(x)
            x, fwd = x.pop("input_ids"), {**(attribute_kwargs.get("additional_forward_args") or {}), **x}
            attribute_kwargs = dict(attribute_kwargs, additional_forward_args=fwd)
        scores = attribute(model, x, layers, scores=self.methods, target=tgt, progress=False, **attribute_kwargs)
        if by == "class":
            counts = self.class_counts
            assert counts is not None  # kept for by="class"
            k = int(y.max()) + 1 if y.numel() else 0
            if counts.numel() < k:
                counts = torch.cat([counts, counts.new_zeros(k - counts.numel())])
            counts += torch.bincount(y, minlength=counts.numel()).double()
            self.class_counts = counts
        reduced: dict[str, dict[str, torch.Tensor]] = {}
        for m in self.methods:
            s = scores[m]
            by_layer = self.stats.setdefault(m, {})
            for name in s.layers:
                v = reduce_units(s, name, self.how[m]).double()
                reduced.setdefault(m, {})[name] = v
                if name not in by_layer:
                    by_layer[name] = UnitStats.empty(v.shape[1], self.top_k, by == "class")
                by_layer[name].update(v, y if by == "class" else None, index)
        if self.extra is not None:
            self.extra.update(reduced, y, index)
        self.count += int(index.numel())
