"""dy/dα on the path where forward-mode autodiff cannot carry it alongside the backward graph.

The fixed rules integrate ``∂F/∂y · dy/dα`` with dy/dα, a Jacobian-vector product along ``x − x'``, taken by
forward-mode autodiff in the same pass that records ∂F/∂y (:func:`unitscope.attribution.engine.evaluate`). Some
operations have no forward-mode derivative (``mkldnn_rnn_layer`` of ``nn.LSTM`` on the CPU, CPU flash attention,
a custom ``autograd.Function`` without ``jvp``), and torch raises ``NotImplementedError``.
:func:`missing_forward_derivative` recognises exactly that report; the engine then gets the same dy/dα, exactly,
from :func:`path_tangents`, by the double-backward identity ``J v = ∂/∂u ⟨Jᵀu, v⟩`` (the vector-Jacobian product
``Jᵀu`` taken with ``create_graph`` at ``u = 0``; it is linear in ``u``): one forward to the deepest layer and two
backward passes over that part, besides the engine's own pass without tangents. Where that is impossible too (an op
that cannot be differentiated twice), a :class:`UnitscopeError` names the layers, the module and op that stop forward
mode, the op that stops the double backward and what to use instead.

>>> import torch, torch.nn as nn
>>> from unitscope.core.inputs import Batch
>>> from unitscope.core.sites import resolve
>>> net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1))
>>> x, b = torch.ones(2, 3), torch.zeros(2, 3)
>>> batch = Batch((x,), (b,), False, (), 2)
>>> t = path_tangents(net, batch, resolve(net, ["1"]), torch.tensor([0, 1]), torch.tensor([0.5, 1.0]))["1"][0]
>>> y = lambda a: net[1](net[0](a * x[:1]))
>>> bool(torch.allclose(t[0], torch.autograd.functional.jvp(y, torch.tensor(0.5), torch.tensor(1.0))[1][0]))
True
"""

from __future__ import annotations

import re
from typing import Sequence, cast

import torch
import torch.autograd.forward_ad as fwAD
import torch.nn as nn

from ..core.capture import Recorder, hooked
from ..core.errors import UnitscopeError
from ..core.sites import Site

__all__ = ["missing_forward_derivative", "path_tangents", "evaluate_without_joint_forward_mode"]

_NO_FORMULA = re.compile(r"^Trying to use forward AD with (\S+) that does not support it")
_NO_JVP = "You must implement the jvp function for custom autograd.Function to use it with forward mode AD"
_NOT_TWICE = re.compile(
    r"derivative for (\S+) is not implemented|trying to differentiate twice a function that "
    r"was marked with @once_differentiable"
)


def missing_forward_derivative(error: BaseException) -> str | None:
    """The op (``'aten::silu_backward'``) when ``error`` is torch's report that forward-mode autodiff met an
    operation without a forward derivative (a custom ``autograd.Function`` without ``jvp``: its class name when the
    message has it); ``None`` for every other error."""
    if not isinstance(error, NotImplementedError):
        return None
    message = str(error)
    found = _NO_FORMULA.match(message)
    if found:
        return found.group(1)
    if _NO_JVP in message:
        return "a custom autograd.Function without jvp()"
    return None


def _directions(batch, example, rows):
    """``x_e − x'_e`` per input row tensor (``None`` for integer inputs, which stay at ``x``)."""
    return [
        (x[example.to(x.device)] - b[example.to(b.device)]).to(r.dtype) if r.is_floating_point() else None
        for r, x, b in zip(rows, batch.inputs, batch.baselines)
    ]


def _double_backward(model, batch, sites, example, rows, dirs, op: str) -> dict:
    recorder = Recorder(sites, stop_when_done=True)
    with torch.inference_mode(False), torch.enable_grad():
        leaves = tuple(r if d is None else r.detach().requires_grad_(True) for r, d in zip(rows, dirs))
        with recorder.active():
            batch.call(model, leaves, example)
        parts = [p for s in sites for p in recorder.parts[s.name]]
        u = [torch.zeros_like(p, requires_grad=True) for p in parts]
        inner = cast(torch.Tensor, sum((p * w).sum() for p, w in zip(parts, u)))
        xs = [(leaf, d) for leaf, d in zip(leaves, dirs) if d is not None]
        try:
            vjp = torch.autograd.grad(inner, [leaf for leaf, _ in xs], create_graph=True, allow_unused=True)
            pairs = [(g * d).sum() for g, (_, d) in zip(vjp, xs) if g is not None]
            jvp: Sequence[torch.Tensor | None]
            if not pairs:  # no recorded part depends on the path's inputs: dy/dα is 0 there
                jvp = [None] * len(u)
            else:
                s = sum(pairs)
                if not s.requires_grad:
                    raise _NotTwice("its backward")
                jvp = torch.autograd.grad(s, u, allow_unused=True)
                # ⟨Jᵀu, v⟩ is linear in u: a part that depends on the inputs but not on u lost its graph in a
                # backward that ran without one (a custom Function's once-differentiable backward, a detach)
                if any(t is None and p.requires_grad for t, p in zip(jvp, parts)):
                    raise _NotTwice("its backward")
        except (RuntimeError, NotImplementedError) as e:
            second = _NOT_TWICE.search(str(e))
            if second is None and not isinstance(e, _NotTwice):
                raise
            raise _impossible(
                model,
                batch,
                sites,
                example,
                rows,
                dirs,
                op,
                second.group(1) if second and second.group(1) else str(e).splitlines()[0],
            ) from None
    out, i = {}, 0
    for s in sites:
        k = len(recorder.parts[s.name])
        out[s.name] = [
            torch.zeros_like(p) if t is None else t.detach() for p, t in zip(recorder.parts[s.name], jvp[i : i + k])
        ]
        i += k
    return out


class _NotTwice(RuntimeError):
    pass


def _failing_module(model, batch, example, rows, dirs) -> str | None:
    """The innermost module running when forward mode fails (one more forward-mode pass, hooks on every module)."""
    stack: list[str] = []
    names = {m: n for n, m in model.named_modules()}

    def enter(module, args):
        stack.append(names[module])

    def leave(module, args, out):
        stack.pop()

    pre, post = dict.fromkeys(names, enter), dict.fromkeys(names, leave)
    try:
        with torch.inference_mode(False), torch.no_grad(), fwAD.dual_level(), hooked(post, pre):
            batch.call(model, tuple(r if d is None else fwAD.make_dual(r, d) for r, d in zip(rows, dirs)), example)
    except NotImplementedError as e:
        if missing_forward_derivative(e) is not None and stack:
            return stack[-1]
        return None
    return None


def _impossible(model, batch, sites, example, rows, dirs, op, second) -> UnitscopeError:
    where = _failing_module(model, batch, example, rows, dirs)
    module = dict(model.named_modules()).get(where) if where is not None else None
    inside = (
        f" in module {where!r} ({type(module).__name__})"
        if where
        else " in the model's own forward()"
        if where == ""
        else ""
    )
    layers = [s.name for s in sites]
    return UnitscopeError(
        f"dy/dα for layer{'s' if len(layers) > 1 else ''} {', '.join(map(repr, layers))} cannot be had: {op}{inside} "
        f"has no forward-mode derivative, and {second} cannot be differentiated twice (the other exact way)",
        layer=layers[0] if len(layers) == 1 else layers,
        op=op,
        module=where,
        hint="use method='adaptive' (layer values and ∂F/∂y only: no dy/dα), or captum_compatible=True with "
        "method='riemann_trapezoid' (Captum's estimate); a model option that picks a plain implementation "
        "(e.g. attn_implementation='eager') also works",
    )


def path_tangents(
    model: nn.Module, batch, sites: list[Site], example: torch.Tensor, alpha: torch.Tensor, *, op: str = "an operation"
) -> dict[str, list[torch.Tensor]]:
    """dy/dα of every site's parts at the rows ``(example[r], alpha[r])`` by the double backward, shaped like the
    parts, detached. ``op``: what stopped forward mode (named in the error when the double backward fails too)."""
    rows = batch.path_rows(example, alpha)
    return _double_backward(model, batch, sites, example, rows, _directions(batch, example, rows), op)


def evaluate_without_joint_forward_mode(
    evaluate, model, batch, target, sites, example, alpha, *, need_grad: bool, keep_output: bool, op: str
):
    """What ``evaluate(..., tangents=True)`` returns, for a model whose forward mode failed inside the joint pass
    (``op``: the op it reported): the pass without tangents, and dy/dα from :func:`path_tangents`."""
    ev = evaluate(model, batch, target, sites, example, alpha, need_grad=need_grad, keep_output=keep_output)
    tangents = path_tangents(model, batch, sites, example, alpha, op=op)
    # in the dtype the values are summed in (float32 for half precision), as the joint pass gives them
    ev.tangents = {name: [t.to(v.dtype) for t, v in zip(parts, ev.values[name])] for name, parts in tangents.items()}
    return ev
