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
activations it reads. Objectives combine with ``+``, ``-``, ``*`` and ``/`` (with each other or with numbers).
Units follow the unit specification (:mod:`unitscope.core.units`): an ``int`` (or a per-row tensor of ints) is
a unit of the layer's layout — a conv channel averaged over space, a transformer neuron averaged over tokens, a
head —, by the ``spec`` given to the objective or else the one recorded with the activations (:class:`Acts`,
from the module that produced them), else channels (dim 1); a tuple is one element of the per-example output.
"""

from __future__ import annotations

from numbers import Number
from typing import Callable

import torch

from ..core.errors import UnitscopeError
from ..core.units import UnitSpec, layer_specs, resolve_units

__all__ = ["Objective", "Acts", "channel", "element", "independent", "unit_values"]


class Acts(dict):
    """``{layer: activations [B, ...]}`` with each layer's :class:`UnitSpec` in ``specs``."""

    def __init__(self, values: dict, specs: dict | None = None):
        super().__init__(values)
        self.specs = dict(specs or {})

    @classmethod
    def recorded(cls, model, sites, values: dict, specs: dict | None = None) -> "Acts":
        """The activations of ``sites`` with the specs their modules call for (``specs`` reused when given)."""
        return cls(values, specs if specs is not None else layer_specs(model, sites, values))


class Objective:
    """``fn(acts) -> Tensor[B]`` plus the layers it reads and a readable name."""

    def __init__(self, fn: Callable[[dict], torch.Tensor], layers: tuple[str, ...], name: str):
        self.fn, self.layers, self.name = fn, tuple(dict.fromkeys(layers)), name

    def __call__(self, acts: dict) -> torch.Tensor:
        missing = [name for name in self.layers if name not in acts]
        if missing:
            raise UnitscopeError(
                "the objective reads layers that were not recorded",
                objective=self.name,
                missing=missing,
                recorded=sorted(acts),
            )
        return self.fn(acts)

    def __add__(self, other):
        if isinstance(other, Number):
            return Objective(lambda a: self(a) + other, self.layers, f"({self.name} + {other})")
        if not isinstance(other, Objective):
            return NotImplemented
        return Objective(lambda a: self(a) + other(a), self.layers + other.layers, f"({self.name} + {other.name})")

    __radd__ = __add__

    def __neg__(self):
        return Objective(lambda a: -self(a), self.layers, f"-{self.name}")

    def __sub__(self, other):
        if not isinstance(other, (Number, Objective)):
            return NotImplemented
        return self + (-other)

    def __rsub__(self, other):
        return (-self) + other

    def __mul__(self, k):
        if isinstance(k, Objective):
            return Objective(lambda a: self(a) * k(a), self.layers + k.layers, f"({self.name} * {k.name})")
        if not isinstance(k, Number):
            return NotImplemented
        return Objective(lambda a: k * self(a), self.layers, f"{k} * {self.name}")

    __rmul__ = __mul__

    def __truediv__(self, k):
        if not isinstance(k, Number):
            return NotImplemented
        return self * (1.0 / k)

    def __repr__(self):
        return f"Objective({self.name})"


def _means(t: torch.Tensor) -> torch.Tensor:
    return t if t.dim() == 2 else t.flatten(2).mean(2)


def unit_values(acts: dict, layer: str, spec=None) -> torch.Tensor:
    """``[B, U]``: each unit's activation (the spec's reduction, else the mean over the other dims)."""
    t = acts[layer]
    sp = spec if spec is not None else getattr(acts, "specs", {}).get(layer)
    if sp is None:
        return _means(t) if torch.is_tensor(t) and t.dim() >= 2 else t
    if not isinstance(sp, UnitSpec):
        sp = resolve_units(sp, name=layer, shape=tuple(t.shape))
    return sp.per_unit(t, sp.reduce or "mean", layer=layer)


def _rows(idx, b: int, n: int, layer: str) -> torch.Tensor:
    """Unit index per batch row, checked against the ``n`` units of ``layer``."""
    idx = torch.as_tensor(idx).long()
    if idx.dim() > 1 or (idx.dim() == 1 and idx.numel() != b):
        raise UnitscopeError("give one unit, or one unit per batch row", layer=layer, units=tuple(idx.shape), batch=b)
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= n):
        bad = sorted(u for u in set(idx.flatten().tolist()) if not 0 <= u < n)
        shown = ", ".join(map(str, bad[:10])) + (f", … ({len(bad)} in all)" if len(bad) > 10 else "")
        raise UnitscopeError(
            f"units {shown} are out of range for layer {layer!r}",
            layer=layer,
            units=n,
            hint=f"its units are 0 … {n - 1}",
        )
    return idx.expand(b) if idx.dim() == 0 else idx


def _label(unit) -> str:
    return str(unit) if isinstance(unit, int) else "rows"


def channel(layer: str, unit, *, spec=None) -> Objective:
    """Mean activation of unit ``unit`` (an int, or one per batch row): a channel averaged over space, a
    transformer neuron averaged over tokens (``spec`` chooses; see the module docstring).

    >>> channel("c", 1)({"c": torch.arange(8.0).view(1, 2, 2, 2)}).tolist()   # channel 1 averaged over space
    [5.5]
    >>> channel("mlp", 2, spec="tokens")({"mlp": torch.arange(8.0).view(1, 2, 4)}).tolist()   # neuron 2 over 2 tokens
    [4.0]
    """

    def fn(acts):
        m = unit_values(acts, layer, spec)
        return m.gather(1, _rows(unit, m.shape[0], m.shape[1], layer).to(m.device).view(-1, 1)).squeeze(1)

    return Objective(fn, (layer,), f"{layer}:{_label(unit)}")


def element(layer: str, index: tuple) -> Objective:
    """One element of the per-example layer output (negative indices count from the end).

    >>> element("c", (1, 0, 1))({"c": torch.arange(8.0).view(1, 2, 2, 2)}).tolist()
    [5.0]
    """
    index = tuple(int(i) for i in index)

    def fn(acts):
        t = acts[layer]
        shape = tuple(t.shape[1:])
        if len(index) != len(shape) or any(not -s <= i < s for i, s in zip(index, shape)):
            raise UnitscopeError(f"element {index} is outside layer {layer!r}", layer=layer, unit_shape=shape)
        every_example = (slice(None), *index)
        return t[every_example]

    return Objective(fn, (layer,), f"{layer}{list(index)}")


def independent(layer: str, unit, *, spec=None) -> Objective:
    """Independent activation: ``a_i − mean_{j≠i} a_j`` over the channels of the same layer (channel means).

    >>> independent("fc", 0)({"fc": torch.tensor([[4.0, 1.0, 3.0]])}).tolist()   # 4 − (1 + 3) / 2
    [2.0]
    """

    def fn(acts):
        m = unit_values(acts, layer, spec)
        a = m.gather(1, _rows(unit, m.shape[0], m.shape[1], layer).to(m.device).view(-1, 1)).squeeze(1)
        return a - (m.sum(1) - a) / max(m.shape[1] - 1, 1)

    return Objective(fn, (layer,), f"independent {layer}:{_label(unit)}")
