"""Composable objectives over units, shared by activation maximization and the inverse-set sampler.

>>> import torch
>>> acts = {"fc": torch.tensor([[1.0, 2.0, 3.0], [0.0, 4.0, 1.0]])}
>>> obj = channel("fc", torch.tensor([2, 1]))          # one unit per batch row
>>> obj(acts).tolist()
[3.0, 4.0]
>>> (obj - 0.5 * channel("fc", 0))(acts).tolist()
[2.5, 4.0]
>>> independent("fc", torch.tensor([2, 1]))(acts).tolist()   # a_i − mean_{j≠i} a_j
[1.5, 3.5]

An objective maps ``{layer: activations [B, ...]}`` to one value per batch row ``[B]``; ``layers`` says which
activations it reads. Units: an ``int`` (or a per-row tensor of ints) is a channel, averaged over the remaining
dims; a tuple is one element.
"""

from __future__ import annotations

from typing import Callable

import torch

__all__ = ["Objective", "channel", "element", "independent"]


class Objective:
    def __init__(self, fn: Callable[[dict], torch.Tensor], layers: tuple[str, ...], name: str):
        self.fn, self.layers, self.name = fn, tuple(dict.fromkeys(layers)), name

    def __call__(self, acts: dict) -> torch.Tensor:
        return self.fn(acts)

    def __add__(self, other):
        if isinstance(other, (int, float)):
            return Objective(lambda a: self(a) + other, self.layers, f"({self.name} + {other})")
        return Objective(lambda a: self(a) + other(a), self.layers + other.layers, f"({self.name} + {other.name})")

    __radd__ = __add__

    def __neg__(self):
        return Objective(lambda a: -self(a), self.layers, f"-{self.name}")

    def __sub__(self, other):
        return self + (-other)

    def __mul__(self, k: float):
        return Objective(lambda a: k * self(a), self.layers, f"{k} * {self.name}")

    __rmul__ = __mul__

    def __repr__(self):
        return f"Objective({self.name})"


def _means(t: torch.Tensor) -> torch.Tensor:
    return t if t.dim() == 2 else t.flatten(2).mean(2)


def _rows(idx, b: int, device) -> torch.Tensor:
    idx = torch.as_tensor(idx, device=device).long()
    return idx.expand(b) if idx.dim() == 0 else idx


def channel(layer: str, unit) -> Objective:
    """Mean activation of channel ``unit`` (an int, or one per batch row)."""
    def fn(acts):
        m = _means(acts[layer])
        return m.gather(1, _rows(unit, m.shape[0], m.device).view(-1, 1)).squeeze(1)
    return Objective(fn, (layer,), f"{layer}:{unit if isinstance(unit, int) else 'rows'}")


def element(layer: str, index: tuple) -> Objective:
    """One element of the per-example layer output."""
    def fn(acts):
        return acts[layer][(slice(None), *index)]
    return Objective(fn, (layer,), f"{layer}{list(index)}")


def independent(layer: str, unit) -> Objective:
    """Independent activation: ``a_i − mean_{j≠i} a_j`` over the channels of the same layer."""
    def fn(acts):
        m = _means(acts[layer])
        a = m.gather(1, _rows(unit, m.shape[0], m.device).view(-1, 1)).squeeze(1)
        return a - (m.sum(1) - a) / max(m.shape[1] - 1, 1)
    return Objective(fn, (layer,), f"independent {layer}:{unit if isinstance(unit, int) else 'rows'}")
