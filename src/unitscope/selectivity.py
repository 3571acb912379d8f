"""Class selectivity (Morcos et al. 2018), streamed over a data loader.

>>> import torch, torch.nn as nn
>>> net = nn.Sequential(nn.Linear(2, 3), nn.ReLU())
>>> loader = [(torch.randn(8, 2), torch.randint(0, 2, (8,))) for _ in range(3)]
>>> sel = class_selectivity(net, loader, ["1"], num_classes=2)
>>> sel["1"].index.shape, sel["1"].class_means.shape
(torch.Size([3]), torch.Size([2, 3]))

Conventions: a unit is a channel (dim 1 of the layer output); its activation on an example is the channel's
mean over all remaining dims (space, tokens). Class-conditional means use the real number of examples of
each class. With ``μ_max`` the largest class mean and ``μ_−max`` the mean of the other classes' means,
``SI = (μ_max − μ_−max) / (μ_max + μ_−max + ε)``. Intended for non-negative (post-ReLU) activations, where
SI ∈ [0, 1]: 0 — the same mean for every class, 1 — active for one class only.
Only per-class sums and counts are kept: never the dataset's activations.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from .errors import UnitscopeError
from .scores import activation

__all__ = ["Selectivity", "class_selectivity", "channel_means"]


@dataclass
class Selectivity:
    index: torch.Tensor        # [U] selectivity index
    class_means: torch.Tensor  # [K, U]
    counts: torch.Tensor       # [K] examples per class
    preferred: torch.Tensor    # [U] class with the largest mean


def channel_means(t: torch.Tensor) -> torch.Tensor:
    """``[N, C, ...]`` → ``[N, C]``: each channel averaged over the remaining dims."""
    return t if t.dim() == 2 else t.flatten(2).mean(2)


def class_selectivity(model: nn.Module, loader, layers, *, num_classes: int | None = None, eps: float = 1e-7,
                      progress: bool | None = None) -> dict[str, Selectivity]:
    """Selectivity of every channel of ``layers`` from ``loader`` (batches of ``(inputs, labels)``)."""
    sums: dict[str, torch.Tensor] = {}
    counts = None
    for x, y in tqdm(loader, desc="selectivity", unit="batch", leave=False,
                     disable=True if progress is False else None):
        y = torch.as_tensor(y).long().cpu()
        k = int(y.max()) + 1 if num_classes is None else num_classes
        if num_classes is not None and (y.min() < 0 or y.max() >= num_classes):
            raise UnitscopeError("labels out of range", num_classes=num_classes, labels=sorted(set(y.tolist()))[:10])
        acts = activation(model, x, layers)
        if counts is None:
            counts = torch.zeros(k, dtype=torch.float64)
        elif counts.numel() < k:
            counts = torch.cat([counts, counts.new_zeros(k - counts.numel())])
        counts += torch.bincount(y, minlength=counts.numel()).double()
        for name in acts:
            a = channel_means(acts[name]).double()
            s = torch.zeros(counts.numel(), a.shape[1], dtype=torch.float64).index_add_(0, y, a)
            if name in sums and sums[name].shape[0] < s.shape[0]:
                sums[name] = torch.cat([sums[name], sums[name].new_zeros(s.shape[0] - sums[name].shape[0],
                                                                         s.shape[1])])
            sums[name] = s if name not in sums else sums[name] + s[:sums[name].shape[0]]
    if counts is None:
        raise UnitscopeError("the loader gave no batches")
    out = {}
    present = counts > 0
    for name, s in sums.items():
        means = s[present] / counts[present].unsqueeze(1)
        top, arg = means.max(0)
        k = means.shape[0]
        rest = (means.sum(0) - top) / max(k - 1, 1)
        si = (top - rest) / (top + rest + eps)
        classes = torch.arange(counts.numel())[present]
        out[name] = Selectivity(si.float(), means.float(), counts[present].long(), classes[arg])
    return out
