"""Class selectivity (Morcos et al. 2018), streamed over a data loader — and only where it is defined.

>>> import torch
>>> means = torch.tensor([[4.0, 1.0], [0.0, 1.0]])     # [K=2 classes, U=2 units]
>>> selectivity_index(means, torch.tensor([5, 5]), torch.tensor([0, 1])).index.tolist()
[1.0, 0.0]

:func:`unitscope.data.scan.class_selectivity` streams it over a data loader (one :func:`~unitscope.data.scan.scan`
pass); :meth:`unitscope.data.scan.ScanResult.selectivity` reads it off any scan.

**The conventions, in one place** (every selectivity in unitscope is computed by :func:`selectivity_index`):

- a unit is a channel (dim 1 of the layer output); its activation on an example is the channel's mean over all
  remaining dims (space, tokens);
- class-conditional means ``μ_c`` use the real number of examples of each class; classes never seen are left out;
- with ``μ_max`` the largest class mean and ``μ_−max`` the mean of the other classes' means,
  ``SI = (μ_max − μ_−max) / (μ_max + μ_−max + ε)``, ``ε = EPS = 1e-7`` (it only keeps a dead unit — zero for every
  class — at ``SI = 0`` instead of 0/0);
- the index is defined for **non-negative** values (post-ReLU activations), where ``SI ∈ [0, 1]``: 0 — the same
  mean for every class, 1 — active for one class only. A unit that took a negative value on any example (a
  pre-ReLU layer, a signed attribution such as conductance) gets ``NaN`` — its ratio could leave [0, 1] or explode
  — and a warning says how many units and why (``Selectivity.reason``);
- it needs **at least two classes** present: with one class ``μ_−max`` does not exist, and every unit gets ``NaN``.
Only per-class sums and counts are kept (by :func:`unitscope.data.scan.scan`): never the dataset's activations.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch

__all__ = ["Selectivity", "channel_means", "selectivity_index", "EPS"]

EPS = 1e-7


@dataclass
class Selectivity:
    index: torch.Tensor  # [U] selectivity index; NaN where undefined (see ``reason``)
    class_means: torch.Tensor  # [K, U]
    counts: torch.Tensor  # [K] examples per class
    preferred: torch.Tensor  # [U] class with the largest mean
    reason: str | None = None  # why some (or all) units have no index; None when every unit has one

    @property
    def defined(self) -> torch.Tensor:
        """``[U]`` bool: the units that have an index."""
        return ~torch.isnan(self.index)


def channel_means(t: torch.Tensor) -> torch.Tensor:
    """``[N, C, ...]`` → ``[N, C]``: each channel averaged over the remaining dims."""
    return t if t.dim() == 2 else t.flatten(2).mean(2)


def selectivity_index(
    class_means: torch.Tensor,
    counts: torch.Tensor,
    classes: torch.Tensor,
    minimum: torch.Tensor | None = None,
    *,
    eps: float = EPS,
    what: str = "",
    warn: bool = True,
) -> Selectivity:
    """The selectivity of each unit from its class means ``[K, U]`` (the classes present, with their ``counts
    [K]`` and labels ``classes [K]``) and, where known, its smallest value over the data ``minimum [U]``."""
    means = class_means.double()
    top, arg = means.max(0)
    k = means.shape[0]
    rest = (means.sum(0) - top) / max(k - 1, 1)
    index = (top - rest) / (top + rest + eps)
    negative = (minimum < 0) if minimum is not None else (means < 0).any(0)
    reason = None
    if k < 2:
        index = torch.full_like(index, torch.nan)
        reason = f"{k} class present: selectivity compares a class with the others and needs at least two"
    elif bool(negative.any()):
        index = torch.where(negative, torch.full_like(index, torch.nan), index)
        reason = (
            f"{int(negative.sum())} of {negative.numel()} units take negative values: selectivity is defined "
            "for non-negative (post-ReLU) activations, where it lies in [0, 1]"
        )
    if reason is not None and warn:
        warnings.warn(
            f"class selectivity{' of ' + what if what else ''}: {reason}; those units get NaN "
            "(scan a ReLU's output with score='activation')",
            RuntimeWarning,
            stacklevel=3,
        )
    return Selectivity(index.float(), class_means.float(), counts.long(), classes[arg], reason)
