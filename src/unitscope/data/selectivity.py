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
Only per-class sums and counts are kept (by :func:`unitscope.data.scan.scan`): never the dataset's activations.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from .scan import scan

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
    """Selectivity of every channel of ``layers`` from ``loader`` (batches of ``(inputs, labels)``): one
    :func:`unitscope.data.scan.scan` pass keeping per-class sums of the channels' mean activations."""
    result = scan(model, loader, layers, scores=["activation"], by="class", top_k=1, num_classes=num_classes,
                  reduce="mean", progress=progress)
    return {name: result.selectivity(name, score="activation", eps=eps) for name in result.layers}
