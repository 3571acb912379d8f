"""Sites: the layers of a model that scores are read from, addressed by their ``named_modules()`` name.

>>> import torch.nn as nn
>>> net = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
>>> [s.name for s in resolve(net, ["0", net[2]])]
['0', '2']
>>> resolve(net, ["O"])
Traceback (most recent call last):
...
unitscope.core.errors.UnitscopeError: unknown layer 'O' (layer='O'); closest valid names: '0', '1', '2'

An unknown name is answered with the closest valid ones, ranked by the edit distance of the last dotted component
(a part of a longer name counts as close: ``act_fn`` is in ``intermediate_act_fn``) plus that of the rest:

>>> rank_names("bert.encoder.layer.0.intermediate.act_fn",
...            ["bert.encoder.layer.0.intermediate.dense", "bert.encoder.layer.0.intermediate.intermediate_act_fn",
...             "bert.encoder.layer.1.intermediate.intermediate_act_fn", "bert.encoder.layer.0.output.dense"], n=2)
['bert.encoder.layer.0.intermediate.intermediate_act_fn', 'bert.encoder.layer.1.intermediate.intermediate_act_fn']
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import torch.nn as nn

from .errors import UnitscopeError
from .types import LayerDictionary

__all__ = ["Site", "resolve", "layer_names", "rank_names", "closest_names"]


@dataclass(frozen=True)
class Site:
    """One layer to read: its dotted name, the module, whether its input (not output) is meant, and — for a module
    called several times in one forward pass — which call (``NAME@K``: ``call=K``, counting from 0). ``dictionary``
    (a :class:`unitscope.core.dictionary.Dictionary`): the layer is read as its features and error node, ``y =
    decode(f) + ε`` (the recorder's parts are ``f`` and ``ε``)."""

    name: str
    module: nn.Module
    use_input: bool = False
    call: int | None = None
    dictionary: LayerDictionary | None = None


def layer_names(model: nn.Module) -> list[str]:
    """Every addressable layer name (the root module, named ``""``, is left out); with example inputs,
    :func:`unitscope.core.capture.layer_names` lists a module called several times once per call."""
    return [name for name, _ in model.named_modules() if name]


def _edit_distance(a: str, b: str, *, infix: bool = False) -> int:
    """Levenshtein distance; ``infix=True``: from ``a`` to the closest substring of ``b`` (skipping the start and
    the end of ``b`` is free)."""
    prev = [0] * (len(b) + 1) if infix else list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return min(prev) if infix else prev[-1]


def rank_names(name: str, names, *, n: int = 5) -> list[str]:
    """The ``n`` names closest to ``name``: by the edit distance of the last dotted component (a whole one, or
    ``name``'s last component found inside a longer one, counted as 1 more than a perfect match) plus that of
    the rest of the path; ties keep the order of ``names``. Letter case is ignored."""
    names = list(names)
    parent, _, last = str(name).lower().rpartition(".")
    cache: dict[str, int] = {}

    def key(candidate: str):
        c_parent, _, c_last = candidate.lower().rpartition(".")
        d_last = (
            min(_edit_distance(last, c_last), _edit_distance(last, c_last, infix=True) + 1) if last else len(c_last)
        )
        if c_parent not in cache:
            cache[c_parent] = _edit_distance(parent, c_parent)
        return d_last + cache[c_parent], d_last

    return sorted(names, key=key)[:n]


def closest_names(model: nn.Module, name: str, *, n: int = 5) -> list[str]:
    """The ``n`` layer names of ``model`` closest to ``name`` (:func:`rank_names`)."""
    return rank_names(name, layer_names(model), n=n)


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
