"""The one place that registers hooks on a user's model. Every hook is removed in ``finally``.

>>> import torch, torch.nn as nn
>>> net = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
>>> with hooked(forward={net[1]: lambda m, args, out: out * 0}):
...     float(net(torch.ones(1, 4)).detach().abs().sum()) == float(net[2].bias.abs().sum())
True
>>> len(net[1]._forward_hooks)
0
"""

from __future__ import annotations

import weakref
from collections import Counter
from contextlib import contextmanager
from typing import Callable, Iterator, Mapping, Sequence

import torch
import torch.autograd.forward_ad as fwAD
import torch.nn as nn

from .errors import UnitscopeError
from .sites import Site
from .sites import layer_names as site_names
from .state import analysis_mode
from .types import Inputs, LayerDictionary

__all__ = ["hooked", "site_hooks", "Recorder", "layer_names", "call_counts"]


@contextmanager
def hooked(
    forward: Mapping[nn.Module, Callable] | None = None,
    pre: Mapping[nn.Module, Callable] | None = None,
    *,
    prepend: bool = False,
):
    """Register forward hooks (``fn(module, args, output)``) and pre-hooks (``fn(module, args)``) for the
    duration of the block; they are removed on exit, also when the block raises or is interrupted.
    ``prepend``: run them before the module's other hooks (an input substitution that recorders must see)."""
    handles = []
    try:
        for module, fn in (forward or {}).items():
            handles.append(module.register_forward_hook(fn, prepend=prepend))
        for module, fn in (pre or {}).items():
            handles.append(module.register_forward_pre_hook(fn, prepend=prepend))
        yield handles
    finally:
        for handle in handles:
            handle.remove()


def ambiguous_call(name: str, calls: int | None = None) -> UnitscopeError:
    """The error for a plain name of a module that runs ``calls`` times (``None``: more than once, the count not
    known yet) in one forward pass."""
    listed = ", ".join(repr(f"{name}@{i}") for i in range(calls or 2)) + ("" if calls else ", …")
    ran = f"ran {calls} times" if calls else "ran more than once"
    return UnitscopeError(
        f"layer {name!r} {ran} in one forward pass, so its units are ambiguous",
        layer=name,
        hint=f"name one call: {listed} (unitscope.layer_names(model, inputs=x) lists them)",
    )


@contextmanager
def site_hooks(model: nn.Module, forward: Mapping[Site, Callable]):
    """Forward hooks by site for the duration of the block: ``fn(module, args, output)`` (its return value, if not
    ``None``, replaces the output) of a ``NAME@K`` site runs at call ``K`` of its module in each forward pass of
    ``model``, a plain site's at its module's only call — a second call in the same pass raises the error that lists
    the ``@K`` names. A pre-hook on ``model`` starts each pass's count afresh. Yields ``calls(site)``: how many times
    the site's module ran in the last pass (so that an ``@K`` site that did not run can say so)."""
    groups: dict = {}
    for site, fn in forward.items():
        groups.setdefault(id(site.module), (site.module, []))[1].append((site, fn))
    counts: Counter = Counter()

    def reset(module, args):
        counts.clear()

    def make(entries):
        def hook(module, args, out):
            k = counts[id(module)]
            counts[id(module)] += 1
            for site, fn in entries:
                if site.call is None and k > 0:
                    raise ambiguous_call(site.name)
                if site.call is None or site.call == k:
                    new = fn(module, args, out)
                    out = out if new is None else new
            return out

        return hook

    with hooked(pre={model: reset}, prepend=True), hooked(forward={m: make(e) for m, e in groups.values()}):
        yield lambda site: counts[id(site.module)]


class _StopForward(Exception):
    """Raised by a hook once every requested site is recorded (``stop_when_done``); caught by ``active``."""


_RUNS_ONCE: "weakref.WeakKeyDictionary[nn.Module, set]" = weakref.WeakKeyDictionary()
"""Modules seen to run exactly once in a whole forward pass (value: the ``use_input`` flags seen so), so that a
plain name of them may stop the pass early. Filled by a :class:`Recorder` whose ``stop_when_done`` pass ran to the
end because a plain site was not known yet; weak, so it keeps no model alive."""


def _known_single(site: Site) -> bool:
    return site.call is not None or site.use_input in _RUNS_ONCE.get(site.module, ())


def _split(value):
    """(list of float tensors, rebuild) for a layer's output or input args."""
    if torch.is_tensor(value):
        return [value], lambda parts: parts[0], False
    if isinstance(value, tuple):
        idx = [i for i, v in enumerate(value) if torch.is_tensor(v) and v.is_floating_point()]

        def rebuild(parts):
            out = list(value)
            for i, p in zip(idx, parts):
                out[i] = p
            return type(value)(out) if not hasattr(value, "_fields") else type(value)(*out)

        return [value[i] for i in idx], rebuild, True
    return None, None, None


def _through_dictionary(site: Site, dictionary: LayerDictionary, parts, rebuild, is_tuple, where):
    """``(parts, rebuild, True)`` for a site read through its dictionary: the parts are the features ``f`` and the
    error node ``ε = y − decode(f)`` (``Dictionary.split``; a forward-mode tangent of ``y`` is carried into both), and
    ``rebuild`` hands on ``decode(f) + ε`` — the layer's output to rounding, so the rest of the model runs as before."""
    if is_tuple or len(parts) != 1:
        raise UnitscopeError(
            f"layer {site.name!r} has a tuple {where}; a dictionary reads a layer whose {where} is one tensor",
            layer=site.name,
            hint="attach the dictionary at the sub-layer that produces the tensor it was trained on",
        )
    f, err = dictionary.split(parts[0], layer=site.name)
    return [f, err], lambda passed: rebuild([dictionary.join(passed[0], passed[1])]), True


class Recorder:
    """Records what chosen sites produce in one forward pass.

    With ``need_grad`` the recorded tensors are points of the autograd graph (a site that nothing
    upstream makes differentiable becomes a leaf), so one ``torch.autograd.grad`` call returns ∂F/∂y for
    every site at once. The tensor handed on to the rest of the model is a copy, so in-place operations
    downstream (``ReLU(inplace=True)``) can neither corrupt the record nor break the graph.
    ``replace`` maps a site name to ``fn(parts) -> parts`` that substitutes the values (ablation, patching).
    With ``stop_when_done`` the forward pass is cut short once every site is recorded (the model's output is
    then not produced) — unless a plain name (no ``@K``) of a module not yet seen to run once per pass is among the
    sites: then the pass runs to the end, so that a module called several times is the error that lists its
    ``NAME@K`` calls instead of silently meaning call 0, and a module seen once lets later passes stop early. Only
    this class decides it: callers just ask for ``stop_when_done``.
    """

    def __init__(
        self,
        sites: Sequence[Site],
        need_grad: bool = False,
        replace: Mapping[str, Callable] | None = None,
        stop_when_done: bool = False,
        tangents: bool = False,
    ):
        self.sites = list(sites)
        self.probe = stop_when_done and not all(_known_single(s) for s in self.sites)
        self.stop_when_done = stop_when_done and not self.probe
        self.need_grad = need_grad
        self.replace = dict(replace or {})
        self.parts: dict[str, list[torch.Tensor]] = {}
        self.is_tuple: dict[str, bool] = {}
        self.calls: Counter = Counter()
        # with ``tangents`` (inside ``torch.autograd.forward_ad.dual_level``) the forward-mode tangent of every
        # part is kept too (dy/dα on a path); it is handed on until the last site is recorded, then dropped
        self.tangents: dict[str, list[torch.Tensor]] | None = {} if tangents else None

    def _record(self, site: Site, value):
        parts, rebuild, is_tuple = _split(value)
        where = "input" if site.use_input else "output"
        if parts is None or (not parts):
            raise UnitscopeError(
                f"layer {site.name!r} has an {where} of type {type(value).__name__}; only tensors and tuples of "
                "floating-point tensors can be scored",
                layer=site.name,
                hint="pick the sub-layer that produces the tensor you want",
            )
        self.calls[site.name] += 1
        if site.dictionary is not None:  # the layer read through a dictionary: y = decode(f) + ε, parts (f, ε)
            parts, rebuild, is_tuple = _through_dictionary(site, site.dictionary, parts, rebuild, is_tuple, where)
        if site.name in self.replace:
            parts = list(self.replace[site.name](list(parts)))
        kept, passed, tangents = [], [], []
        last = self.tangents is not None and all(self.calls[s.name] for s in self.sites)
        for p in parts:
            tangent = None
            if self.tangents is not None:
                p, tangent = fwAD.unpack_dual(p)
                tangents.append(torch.zeros_like(p) if tangent is None else tangent.detach())
            if self.need_grad and not p.requires_grad:
                p = p.detach().requires_grad_(True)
            kept.append(p)
            passed.append(p.clone() if tangent is None or last else fwAD.make_dual(p.clone(), tangent))
        self.parts[site.name] = kept
        if self.tangents is not None:
            self.tangents[site.name] = tangents
        self.is_tuple[site.name] = is_tuple
        if self.stop_when_done and all(self.calls[s.name] for s in self.sites):
            raise _StopForward  # everything asked for is recorded: the rest of the model need not run
        return rebuild(passed)

    def _record_call(self, group, value):
        """Record ``value`` for the sites of one module: a plain site at every call, ``NAME@K`` at call K."""
        key = (id(group[0].module), group[0].use_input)
        k = self.module_calls[key]
        self.module_calls[key] += 1
        for site in group:
            if site.call is None or site.call == k:
                value = self._record(site, value)
        return value

    def _forward_hook(self, group):
        return lambda module, args, output: self._record_call(group, output)

    def _pre_hook(self, group):
        def hook(module, args):
            if len(args) == 1:
                return (self._record_call(group, args[0]),)
            return self._record_call(group, args)

        return hook

    @contextmanager
    def active(self) -> Iterator[Recorder]:
        groups: dict = {}
        for s in self.sites:
            groups.setdefault((s.module, s.use_input), []).append(s)
        forward = {m: self._forward_hook(g) for (m, use_input), g in groups.items() if not use_input}
        pre = {m: self._pre_hook(g) for (m, use_input), g in groups.items() if use_input}
        self.module_calls: Counter[tuple[int, bool]] = Counter()
        with hooked(forward, pre):
            try:
                yield self
            except _StopForward:
                pass
        self.check()
        if self.probe:  # the pass ran to the end and every plain site ran once: later passes may stop early
            for s in self.sites:
                if s.call is None:
                    _RUNS_ONCE.setdefault(s.module, set()).add(s.use_input)

    def check(self) -> None:
        for s in self.sites:
            n = self.calls[s.name]
            if n == 0:
                ran = self.module_calls[(id(s.module), s.use_input)] if s.call is not None else 0
                raise UnitscopeError(
                    f"layer {s.name!r} did not run in the model's forward pass",
                    layer=s.name,
                    hint=(
                        f"its module ran {ran} times: calls are @0 … @{ran - 1}"
                        if ran
                        else "pick a layer that forward() calls"
                    ),
                )
            if n > 1:
                raise ambiguous_call(s.name, n)


def layer_names(model: nn.Module, *, inputs: Inputs | None = None) -> list[str]:
    """Every addressable layer name (the root module, named ``""``, is left out).

    With example ``inputs`` (a tensor or a tuple; one forward pass is recorded, without gradients), a module that
    runs several times per pass is listed once per call, ``NAME@0``, ``NAME@1``, … (a module that does not run
    is still listed).

    Parameters
    ----------
    model : nn.Module
        The network; its ``named_modules()`` give the names (a module registered under two names counts under its
        first).
    inputs : Tensor, tuple of Tensor or None, default None
        Example inputs for one forward pass that counts the calls of each module (``None``: no pass, every name once).

    Returns
    -------
    list of str
        The dotted names, in ``named_modules()`` order, each one that runs ``K > 1`` times as ``NAME@0`` …
        ``NAME@{K-1}``: what ``layers=`` of every function takes.

    Raises
    ------
    UnitscopeError
        Nothing of its own: a model that fails on ``inputs`` raises its own error.

    Examples
    --------
    >>> import torch, torch.nn as nn
    >>> relu = nn.ReLU()
    >>> net = nn.Sequential(nn.Linear(2, 2), relu, nn.Linear(2, 2), relu)
    >>> layer_names(net, inputs=torch.ones(1, 2))
    ['0', '1@0', '1@1', '2']
    """
    names = site_names(model)
    if inputs is None:
        return names
    counts = call_counts(model, inputs)
    out = []
    for name in names:
        k = counts.get(name, 0)
        out.extend([f"{name}@{i}" for i in range(k)] if k > 1 else [name])
    return out


def call_counts(model: nn.Module, inputs) -> dict:
    """``{name: calls}`` of every sub-module in one forward pass on ``inputs`` (no gradients; the model untouched)."""
    counts: dict = {}
    modules = [(n, m) for n, m in model.named_modules() if n]
    seen: dict = {}
    for n, m in modules:
        seen.setdefault(id(m), n)  # a module registered under two names counts under its first

    def counter(name):
        def hook(module, args, out):
            counts[name] = counts.get(name, 0) + 1

        return hook

    xs = inputs if isinstance(inputs, tuple) else (inputs,)
    unique = {m: counter(seen[id(m)]) for n, m in modules if seen[id(m)] == n}
    with analysis_mode(model), torch.no_grad(), hooked(forward=unique):
        model(*xs)
    return counts
