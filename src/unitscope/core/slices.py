"""One unit at a time: a channel of a convolution (or of the elementwise activation right after one) computed from
that convolution's input with that channel's weights only.

A method that needs a few units of a wide layer — an inverse-set sampler driving one channel, the backward pass of
one unit's per-input conductance — otherwise pays for every channel of the convolution that makes them: on the
digits CNN's ``features.relu2`` the 64-channel ``conv2`` is most of the cost of a forward + backward pass to it. With
a slice the model is run up to that layer's input, and only the channels asked for are computed from it.

>>> import torch, torch.nn as nn
>>> from unitscope.core.sites import resolve
>>> net = nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Flatten())
>>> sl = channel_slice(net, resolve(net, ["1"])[0])
>>> sl.producer_name, type(sl.act).__name__
('0', 'ReLU')
>>> x = torch.rand(2, 1, 5, 5)
>>> h = x                                  # the input of ``net[0]``
>>> torch.allclose(sl.values(h, torch.tensor([6, 2])), net[:2](x)[:, [6, 2]])
True

A slice is offered only where it is the same function: the layer is a plain ``Conv1d/2d/3d`` module
(``groups=1``), or an elementwise activation module whose input is the output of one — the module just before it
in a plain ``nn.Sequential``. On the CPU (oneDNN) a channel computed alone equals the full convolution's bit for
bit, so results do not depend on which units are computed together (``tests/test_atlas.py`` checks it through the
atlas's chunks of units). Linear layers get no slice: a matrix product rounds differently (in the last bit) with the
number of output features it computes, which would make a unit's numbers depend on the units beside it. Callers
still compare the slice with the full layer once, on real inputs (:meth:`ChannelSlice.agrees`), and keep the full
layer when the two differ (a hook that changes the convolution's output, a model that calls the modules in another
way).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeGuard

import torch
import torch.nn as nn

from .capture import Recorder
from .sites import Site

__all__ = ["ChannelSlice", "channel_slice", "full_layers", "ELEMENTWISE"]

ELEMENTWISE = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.ELU,
    nn.CELU,
    nn.SELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Sigmoid,
    nn.Tanh,
    nn.Hardtanh,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Softplus,
    nn.Softsign,
    nn.Identity,
)
"""Activation modules that act on every number alone (so that on a channel alone they give that channel)."""

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _sliceable(module: nn.Module | None) -> TypeGuard[nn.Conv1d | nn.Conv2d | nn.Conv3d]:
    # exactly these types (a subclass may have its own forward)
    return isinstance(module, _CONVS) and type(module) in _CONVS and module.groups == 1


@dataclass(frozen=True)
class ChannelSlice:
    """The layer ``site`` as ``act(producer(h))`` channel by channel (``producer``: a convolution; ``act``: an
    elementwise module, or ``None`` where the layer is the convolution); ``input_site``: the producer's input ``h``."""

    site: Site
    producer: nn.Conv1d | nn.Conv2d | nn.Conv3d
    producer_name: str
    act: nn.Module | None
    input_site: Site

    def input_of(self, model: nn.Module, *args, need_grad: bool = False, **kwargs) -> torch.Tensor:
        """The producer's input on one forward pass of ``model(*args, **kwargs)``, which stops there."""
        rec = Recorder([self.input_site], need_grad=need_grad, stop_when_done=True)
        with rec.active():
            model(*args, **kwargs)
        return rec.parts[self.input_site.name][0]

    def pre(self, h: torch.Tensor, channels: torch.Tensor) -> torch.Tensor:
        """``[B, len(channels), ...]``: the producer's output channels ``channels`` on its input ``h``."""
        m = self.producer
        channels = channels.to(m.weight.device)
        return m._conv_forward(h, m.weight[channels], None if m.bias is None else m.bias[channels])

    def values(self, h: torch.Tensor, channels: torch.Tensor) -> torch.Tensor:
        """``[B, len(channels), ...]``: the layer's output channels ``channels`` (the activation applied)."""
        z = self.pre(h, channels)
        return z if self.act is None else self.act(z)

    def rows(self, h: torch.Tensor, units: torch.Tensor) -> torch.Tensor:
        """``[B, 1, ...]``: row ``r``'s channel ``units[r]`` of the layer; each distinct unit is computed once
        for the rows, so a batch of a few units costs those few channels."""
        uniq, inv = torch.unique(units, return_inverse=True)
        z = self.pre(h, uniq)
        idx = inv.to(z.device).view(-1, *([1] * (z.dim() - 1))).expand(-1, 1, *z.shape[2:])
        z = z.gather(1, idx)
        return z if self.act is None else self.act(z)

    def agrees(self, sliced: torch.Tensor, full: torch.Tensor) -> bool:
        """Whether values computed through the slice match the full layer's (to float rounding)."""
        if sliced.shape != full.shape:
            return False
        scale = float(full.detach().abs().max()) if full.numel() else 0.0
        return bool(torch.allclose(sliced.detach(), full.detach(), rtol=1e-4, atol=1e-5 * max(scale, 1e-6)))


_OFF = [0]


@contextmanager
def full_layers():
    """No slices inside the block: every method computes whole layers (what ``bench/slices.py`` compares with)."""
    _OFF[0] += 1
    try:
        yield
    finally:
        _OFF[0] -= 1


def channel_slice(model: nn.Module, site: Site) -> ChannelSlice | None:
    """The slice of ``site``'s channels, or ``None`` where the layer is not (provably) a convolution's output (or
    inside :func:`full_layers`)."""
    if _OFF[0] or site.use_input or site.call is not None:
        return None
    names = {id(m): n for n, m in model.named_modules()}
    module = site.module
    if _sliceable(module):
        return ChannelSlice(site, module, site.name, None, _input_site(site.name, module))
    if type(module) not in ELEMENTWISE:
        return None
    parent_name, _, own = site.name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    if type(parent) is not nn.Sequential:  # only a plain Sequential runs its children in order, each once
        return None
    children = list(parent._modules.items())
    at = [k for k, (n, _) in enumerate(children) if n == own]
    if not at or at[0] == 0:
        return None
    prev_name, prev = children[at[0] - 1]
    if not _sliceable(prev) or sum(m is prev for _, m in children) != 1 or sum(m is module for _, m in children) != 1:
        return None
    name = names.get(id(prev), f"{parent_name}.{prev_name}" if parent_name else prev_name)
    return ChannelSlice(site, prev, name, module, _input_site(name, prev))


def _input_site(name: str, module: nn.Module) -> Site:
    """The producer's input, under a name of its own (recorded beside the layer itself, which may be the same
    module)."""
    return Site(f"{name}:input", module, use_input=True)
