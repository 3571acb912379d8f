"""Sites: the layers of a model that scores are read from, addressed by their ``named_modules()`` name.

>>> import torch.nn as nn
>>> net = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
>>> [s.name for s in resolve(net, ["0", net[2]])]
['0', '2']
>>> resolve(net, ["O"])
Traceback (most recent call last):
...
unitscope.core.errors.UnitscopeError: unknown layer 'O' (layer='O'); closest valid names: '2', '1', '0'
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Iterable, Sequence

import torch.nn as nn

from .errors import UnitscopeError

__all__ = ["Site", "resolve", "layer_names"]


@dataclass(frozen=True)
class Site:
    """One layer to read: its dotted name, the module, whether its input (not output) is meant, and — for a module
    called several times in one forward pass — which call (``NAME@K``: ``call=K``, counting from 0)."""

    name: str
    module: nn.Module
    use_input: bool = False
    call: int | None = None


def layer_names(model: nn.Module) -> list[str]:
    """Every addressable layer name (the root module, named ``""``, is left out); with example inputs,
    :func:`unitscope.core.capture.layer_names` lists a module called several times once per call."""
    return [name for name, _ in model.named_modules() if name]


def closest_names(model: nn.Module, name: str, *, n: int = 5) -> list[str]:
    names = layer_names(model)
    close = difflib.get_close_matches(name, names, n=n, cutoff=0.0)
    return close or names[:n]


def resolve(model: nn.Module, layers, *, use_input: bool = False) -> list[Site]:
    """Turn names and/or module objects into Sites, in the order given, without duplicates."""
    if isinstance(layers, (str, nn.Module)):
        layers = [layers]
    if not isinstance(layers, Iterable):
        raise UnitscopeError("layers must be a name, a module, or a list of them", got=type(layers).__name__)
    layers = list(layers)
    if not layers:
        raise UnitscopeError("no layers given", hint=f"pick from {', '.join(layer_names(model)[:8])}, …")
    by_name = dict(model.named_modules())
    by_id = {id(m): name for name, m in model.named_modules()}
    sites: list[Site] = []
    for layer in layers:
        if isinstance(layer, str) and layer not in by_name and "@" in layer:
            base, _, k = layer.rpartition("@")
            if base in by_name and base and k.isdigit():
                site = Site(layer, by_name[base], use_input, int(k))
                if site not in sites:
                    sites.append(site)
                continue
        if isinstance(layer, str):
            if layer not in by_name or layer == "":
                close = ", ".join(repr(c) for c in closest_names(model, layer))
                raise UnitscopeError(f"unknown layer {layer!r}", layer=layer, hint=f"closest valid names: {close}")
            site = Site(layer, by_name[layer], use_input)
        elif isinstance(layer, nn.Module):
            if id(layer) not in by_id or by_id[id(layer)] == "":
                raise UnitscopeError(
                    f"the module {type(layer).__name__} is not a sub-module of the model",
                    hint="pass one of model.named_modules(), or its dotted name",
                )
            site = Site(by_id[id(layer)], layer, use_input)
        else:
            raise UnitscopeError("a layer must be a dotted name or a module", got=type(layer).__name__)
        if site not in sites:
            sites.append(site)
    return sites
