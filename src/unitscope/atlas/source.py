"""What the atlas reads and keeps while streaming: the data (by index), the unit rule, and the accumulator that
rides along the scan (histograms of activations, top-k shares of conductance).

>>> import torch
>>> acc = UnitAccumulator(share_k=1, bins=8)
>>> v = torch.tensor([[3.0, 1.0], [0.0, 2.0], [5.0, 4.0]], dtype=torch.float64)
>>> acc.update({"activation": {"l": v}, "conductance": {"l": v}}, None, torch.arange(3))
>>> acc.shares["l"].tolist()         # unit 0 leads its layer on 2 of 3 examples
[2.0, 1.0]
"""

from __future__ import annotations

from typing import Sized, cast

import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, TensorDataset

from ..core.errors import UnitscopeError
from ..data.histograms import Histograms

__all__ = ["Source", "UnitAccumulator", "unit_values", "units_of_layer", "take", "pad_rows", "model_args"]


def unit_values(t: torch.Tensor, how: str = "mean", *, spec=None) -> torch.Tensor:
    """``[N, *layer]`` → ``[N, U]``: the atlas's unit rule — ``spec`` (a :class:`unitscope.core.units.UnitSpec`,
    e.g. the layer's default) or, without one, a channel: dim 1, the mean (or sum) over the rest.

    The one place where the atlas decides what a unit is.

    >>> unit_values(torch.arange(8.0).view(1, 2, 4)).tolist()
    [[1.5, 5.5]]
    """
    if spec is not None:
        return spec.per_unit(t, how)
    if t.dim() == 2:
        return t
    if t.dim() == 1:
        return t.unsqueeze(1)
    return t.flatten(2).mean(2) if how == "mean" else t.flatten(2).sum(2)


def take(x, idx):
    """Rows ``idx`` of an inputs tensor or of a tokenizer's dict (``input_ids``, ``attention_mask`` …)."""
    if isinstance(x, dict):
        return {k: v[idx] for k, v in x.items()}
    return x[idx]


def n_rows(x) -> int:
    return len(x["input_ids"]) if isinstance(x, dict) else len(x)


def pad_rows(x, size: int):
    """``x`` with its last row repeated up to ``size`` rows (a tensor or a tokenizer's dict)."""
    if isinstance(x, dict):
        return {k: pad_rows(v, size) for k, v in x.items()}
    return x if len(x) >= size else torch.cat([x, x[-1:].expand(size - len(x), *x.shape[1:])])


def model_args(x):
    """``(inputs, keyword arguments or None)``: a tokenizer's dict gives its ``input_ids`` and the rest."""
    if isinstance(x, dict):
        return x["input_ids"], {k: v for k, v in x.items() if k != "input_ids"}
    return x, None


def units_of_layer(result, layer: str) -> int:
    return int(result.stats["activation"][layer].sum.numel())


class UnitAccumulator:
    """Per layer: :class:`Histograms` of the activation and, per unit, the number of examples where its
    conductance is among the ``share_k`` largest of its layer. Fed by ``scan(..., extra=)``."""

    def __init__(self, *, share_k: int = 5, bins: int = 128):
        self.share_k, self.bins = int(share_k), int(bins)
        self.hist: dict[str, Histograms] = {}
        self.shares: dict[str, torch.Tensor] = {}

    def settings(self) -> dict:
        return {"kind": "atlas", "share_k": self.share_k, "bins": self.bins}

    def update(self, values: dict, labels, index) -> None:
        for name, v in values["activation"].items():
            self.hist.setdefault(name, Histograms(v.shape[1], bins=self.bins)).update(v)
        for name, c in values["conductance"].items():
            k = min(self.share_k, c.shape[1])
            top = c.topk(k, dim=1).indices
            counts = torch.zeros(c.shape[1], dtype=torch.float64).index_add_(
                0, top.flatten(), torch.ones(top.numel(), dtype=torch.float64)
            )
            self.shares[name] = self.shares.get(name, torch.zeros_like(counts)) + counts

    def state(self) -> dict:
        return {"hist": {n: h.state() for n, h in self.hist.items()}, "shares": dict(self.shares)}

    def load_state(self, state: dict) -> None:
        self.hist = {n: Histograms.from_state(s) for n, s in (state.get("hist") or {}).items()}
        self.shares = {n: s.clone() for n, s in (state.get("shares") or {}).items()}

    def merge(self, states: list[dict]) -> None:
        states = [s for s in states if s and s.get("hist")]
        names = list(states[0]["hist"]) if states else []
        self.hist = {
            n: Histograms.merged([s["hist"][n] for s in states if n in s["hist"]], bins=self.bins) for n in names
        }
        self.shares = {n: sum(s["shares"][n] for s in states if n in s["shares"]) for n in names}


class Source:
    """The atlas's data: a loader for the scan and ``get(indices) -> (inputs, labels)`` for the exemplars.
    Items: ``(input, label)``, an input, or a tokenizer's dict (``input_ids``, ``attention_mask``, ``labels``)."""

    def __init__(self, data, *, batch_size: int = 256):
        if torch.is_tensor(data):
            data = TensorDataset(data)
        elif isinstance(data, (tuple, list)) and len(data) in (1, 2) and all(torch.is_tensor(t) for t in data):
            data = TensorDataset(*data)
        elif (
            not isinstance(data, (Dataset, DataLoader))
            and torch.is_tensor(getattr(data, "x", None))
            and torch.is_tensor(getattr(data, "y", None))
        ):  # e.g. zoo.digits_data() splits
            data = TensorDataset(data.x, data.y)
        if isinstance(data, DataLoader) and not isinstance(data.dataset, IterableDataset):
            self.dataset, self.collate, self.loader = data.dataset, data.collate_fn, data
        elif isinstance(data, Dataset) and not isinstance(data, IterableDataset) and hasattr(data, "__len__"):
            self.dataset, self.loader = data, DataLoader(data, batch_size=batch_size)
            self.collate = self.loader.collate_fn
        else:
            raise UnitscopeError(
                f"the atlas reads exemplars back by index; got {type(data).__name__}",
                hint="give (inputs, labels) tensors, a map-style Dataset or a DataLoader over one",
            )
        if len(cast(Sized, self.dataset)) == 0:  # map-style: it has a length
            raise UnitscopeError("the data set is empty")
        x, y = self.get([0])
        self.has_labels = y is not None
        self.tokens = isinstance(x, dict) or not x.is_floating_point()  # token ids (paths from an embedding)
        self.example_shape = tuple(model_args(x)[0].shape[1:])

    def get(self, indices) -> tuple[torch.Tensor, torch.Tensor | None]:
        from ..data.batches import split_batch

        batch = self.collate([self.dataset[int(i)] for i in indices])
        x, y = split_batch(batch)
        if isinstance(x, (tuple, list)):
            raise UnitscopeError("the atlas takes models with one input tensor (or a tokenizer's dict)", got=len(x))
        return x, (None if y is None else torch.as_tensor(y).long())
