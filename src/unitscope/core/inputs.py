"""Inputs, baselines, extra forward arguments and targets: checked once, then turned into path rows.

>>> import torch
>>> b = prepare(torch.ones(2, 3), baselines=0.5)
>>> rows = b.path_rows(torch.tensor([0, 1]), torch.tensor([0.0, 1.0]))
>>> rows[0].tolist()
[[0.5, 0.5, 0.5], [1.0, 1.0, 1.0]]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from .errors import UnitscopeError

__all__ = ["Batch", "prepare", "Target", "make_target"]


def _as_tuple(x, what: str) -> tuple[torch.Tensor, ...]:
    if torch.is_tensor(x):
        return (x,)
    if isinstance(x, (tuple, list)) and x and all(torch.is_tensor(t) for t in x):
        return tuple(x)
    raise UnitscopeError(f"{what} must be a tensor or a tuple of tensors", got=type(x).__name__)


@dataclass
class Batch:
    inputs: tuple[torch.Tensor, ...]
    baselines: tuple[torch.Tensor, ...]
    is_tuple: bool
    additional_forward_args: tuple
    n: int

    def path_rows(self, example: torch.Tensor, alpha: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Rows ``x'_e + α (x_e − x'_e)`` for paired example indices and alphas."""
        rows = []
        for x, b in zip(self.inputs, self.baselines):
            a = alpha.to(device=x.device, dtype=x.dtype).view(-1, *([1] * (x.dim() - 1)))
            xe, be = x[example], b[example]
            rows.append(be + a * (xe - be))
        return tuple(rows)

    def extra_args(self, example: torch.Tensor) -> tuple:
        """The additional forward arguments for these rows: batched tensors are indexed, the rest passed as is."""
        out = []
        for arg in self.additional_forward_args:
            if torch.is_tensor(arg) and arg.dim() > 0 and arg.shape[0] == self.n:
                out.append(arg[example.to(arg.device)])
            else:
                out.append(arg)
        return tuple(out)


def prepare(inputs, baselines=None, additional_forward_args=None, device=None) -> Batch:
    """Check inputs and baselines and put them on ``device``; baselines broadcast to the inputs' shape."""
    is_tuple = not torch.is_tensor(inputs)
    xs = _as_tuple(inputs, "inputs")
    n = xs[0].shape[0] if xs[0].dim() else 0
    for i, x in enumerate(xs):
        if x.dim() == 0 or x.shape[0] == 0:
            raise UnitscopeError("the batch is empty: inputs need a batch dimension with at least one example",
                                 input=i, shape=tuple(x.shape))
        if x.shape[0] != n:
            raise UnitscopeError("all inputs must have the same batch size", shapes=[tuple(t.shape) for t in xs])
        if not x.is_floating_point():
            raise UnitscopeError("path methods need floating-point inputs (pass embeddings, not token ids)",
                                 input=i, dtype=str(x.dtype))
        if not torch.isfinite(x).all():
            bad = int((~torch.isfinite(x)).sum())
            raise UnitscopeError(f"inputs contain {bad} non-finite values (NaN or inf)", input=i,
                                 shape=tuple(x.shape))
    xs = tuple(x.detach().to(device) if device is not None else x.detach() for x in xs)
    if baselines is None:
        bs = tuple(torch.zeros_like(x) for x in xs)
    else:
        raw = baselines if isinstance(baselines, (tuple, list)) else (baselines,)
        if len(raw) != len(xs):
            raise UnitscopeError("give one baseline per input", inputs=len(xs), baselines=len(raw))
        bs = []
        for i, (x, b) in enumerate(zip(xs, raw)):
            b = torch.as_tensor(b, dtype=x.dtype, device=x.device).detach()
            try:
                b = torch.broadcast_to(b, x.shape).clone()
            except RuntimeError:
                raise UnitscopeError("baseline shape does not broadcast to the input shape", input=i,
                                     baseline_shape=tuple(b.shape), input_shape=tuple(x.shape),
                                     hint="use a scalar, one example's shape, or the batch's shape") from None
            if not torch.isfinite(b).all():
                raise UnitscopeError("baselines contain non-finite values", input=i)
            bs.append(b)
        bs = tuple(bs)
    extra = additional_forward_args
    if extra is None:
        extra = ()
    elif not isinstance(extra, tuple):
        extra = (extra,)
    return Batch(xs, bs, is_tuple, extra, n)


class Target:
    """Reads the scalar F of each row from the model's output."""

    def __init__(self, index: torch.Tensor | None = None, fn: Callable | None = None):
        self.index, self.fn = index, fn
        self.checked = False

    def __call__(self, output, example: torch.Tensor) -> torch.Tensor:
        if self.fn is not None:
            value = self.fn(output)
            if not torch.is_tensor(value) or value.shape != (example.shape[0],):
                raise UnitscopeError("a target callable must return one value per example",
                                     expected=(example.shape[0],), got=tuple(getattr(value, "shape", ())))
            return value
        if not torch.is_tensor(output):
            raise UnitscopeError("the model returns a " + type(output).__name__ + "; pass target=callable that "
                                 "maps the output to one scalar per example")
        if self.index is None:
            if output.dim() == 1:
                return output
            if output.dim() == 2 and output.shape[1] == 1:
                return output[:, 0]
            raise UnitscopeError("target is needed for a model with several outputs", output_shape=tuple(output.shape))
        if output.dim() != 2:
            raise UnitscopeError("an integer target needs a [batch, classes] output; pass a callable otherwise",
                                 output_shape=tuple(output.shape))
        c = output.shape[1]
        if not self.checked:
            bad = sorted(set(self.index[(self.index < 0) | (self.index >= c)].tolist()))
            if bad:
                raise UnitscopeError(f"target out of range: the model has {c} outputs", targets=bad,
                                     output_shape=tuple(output.shape))
            self.checked = True
        idx = self.index.to(output.device)[example.to(output.device)]
        return output.gather(1, idx.view(-1, 1)).squeeze(1)


def make_target(target, n: int, output_at_x=None) -> Target:
    """``None`` → top class of each example at x (``output_at_x`` needed); int; per-example list/tensor; callable.

    Integer targets are checked against the output's width on first use."""
    if callable(target) and not torch.is_tensor(target):
        return Target(fn=target)
    if target is None:
        if output_at_x is None or not torch.is_tensor(output_at_x):
            raise UnitscopeError("target=None needs a tensor output; pass target=callable")
        if output_at_x.dim() == 1 or (output_at_x.dim() == 2 and output_at_x.shape[1] == 1):
            return Target()
        if output_at_x.dim() != 2:
            raise UnitscopeError("target=None picks the top class of a [batch, classes] output",
                                 output_shape=tuple(output_at_x.shape), hint="pass target=callable")
        return Target(index=output_at_x.argmax(1).detach().cpu())
    if isinstance(target, int) or (torch.is_tensor(target) and target.dim() == 0):
        index = torch.full((n,), int(target), dtype=torch.long)
    else:
        try:
            index = torch.as_tensor(target, dtype=torch.long).flatten().cpu()
        except (TypeError, ValueError, RuntimeError):
            raise UnitscopeError("target must be None, an int, a per-example list/tensor or a callable",
                                 got=type(target).__name__) from None
        if index.numel() != n:
            raise UnitscopeError("a per-example target needs one class per example", examples=n,
                                 targets=index.numel())
    return Target(index=index)
