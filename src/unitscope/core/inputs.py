"""Inputs, baselines, extra forward arguments and targets: checked once, then turned into path rows.

>>> import torch
>>> b = prepare(torch.ones(2, 3), baselines=0.5)
>>> rows = b.path_rows(torch.tensor([0, 1]), torch.tensor([0.0, 1.0]))
>>> rows[0].tolist()
[[0.5, 0.5, 0.5], [1.0, 1.0, 1.0]]

Token ids: methods that evaluate the model at the input only (activation, gradient × activation, ablation) take
integer inputs as they are; path methods take ``embedding="NAME"`` — the path then runs in the output space of
that module (the model is called on the ids and the module's output is replaced by the path point), from a
baseline of zeros, of a token id (``baselines=pad_id``) or of given embeddings.
``additional_forward_args`` may be a tuple (positional arguments after the inputs) or a dict (keyword
arguments, e.g. ``{"attention_mask": mask}``); tensors with the batch's first dim follow the rows.
Targets read ``ModelOutput``/dict outputs: ``target=("logits", -1, token)`` is ``output["logits"][:, -1, token]``
(an entry may be a per-example list); an int or ``None`` uses the ``logits`` entry of a classifier.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from .errors import UnitscopeError

__all__ = [
    "Batch",
    "prepare",
    "Target",
    "make_target",
    "model_device",
    "in_model_dtype",
    "result_dtype",
    "token_embedding",
]


def model_device(model, default=None):
    """Where the model runs: the device of its first parameter, else of its first buffer, else ``default`` (a model
    with neither runs wherever its inputs are: ``None`` leaves them where they are; synthesis, which makes its own
    inputs, passes the CPU).

    >>> import torch.nn as nn
    >>> model_device(nn.Linear(2, 1)), model_device(nn.ReLU()), model_device(nn.ReLU(), torch.device("cpu"))
    (device(type='cpu'), None, device(type='cpu'))
    """
    for p in model.parameters():
        return p.device
    for b in model.buffers():
        return b.device
    return default


def in_model_dtype(model, x: torch.Tensor) -> torch.Tensor:
    """``x`` (a synthesized image, optimized in float32) in the dtype of the model's floating-point parameters, so a
    float64 or bfloat16 model can be run on it; gradients flow back through the cast.

    >>> import torch.nn as nn
    >>> in_model_dtype(nn.Linear(2, 1).double(), torch.ones(1, 2)).dtype
    torch.float64
    """
    for p in model.parameters():
        if p.is_floating_point():
            return x if x.dtype == p.dtype or not x.is_floating_point() else x.to(p.dtype)
    return x


def result_dtype(model) -> torch.dtype:
    """What results come back in: the dtype of the model's floating-point parameters, float32 at least.

    >>> import torch.nn as nn
    >>> result_dtype(nn.Linear(2, 1).double()), result_dtype(nn.Linear(2, 1).bfloat16())
    (torch.float64, torch.float32)
    """
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype if p.element_size() >= 4 else torch.float32
    return torch.float32


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
    kwargs: dict = field(default_factory=dict)
    ids: tuple[torch.Tensor, ...] | None = None  # token ids fed to the model when paths start at an embedding
    embedding: torch.nn.Module | None = None  # that embedding module

    def path_rows(self, example: torch.Tensor, alpha: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Rows ``x'_e + α (x_e − x'_e)`` for paired example indices and alphas (integer inputs: ``x_e``)."""
        rows = []
        for x, b in zip(self.inputs, self.baselines):
            xe = x[example.to(x.device)]
            if not x.is_floating_point():
                rows.append(xe)  # token ids are only ever evaluated at the input (α = 1)
                continue
            a = alpha.to(device=x.device, dtype=x.dtype).view(-1, *([1] * (x.dim() - 1)))
            be = b[example.to(b.device)]
            rows.append(be + a * (xe - be))
        return tuple(rows)

    def _index(self, arg, example):
        if torch.is_tensor(arg) and arg.dim() > 0 and arg.shape[0] == self.n:
            return arg[example.to(arg.device)]
        return arg

    def extra_args(self, example: torch.Tensor) -> tuple:
        """The additional forward arguments for these rows: batched tensors are indexed, the rest passed as is."""
        return tuple(self._index(arg, example) for arg in self.additional_forward_args)

    def extra_kwargs(self, example: torch.Tensor) -> dict:
        return {k: self._index(v, example) for k, v in self.kwargs.items()}

    def call(self, model, rows: tuple, example: torch.Tensor):
        """``model`` on these rows (with their forward arguments). With an embedding, the model gets the rows'
        token ids and the embedding module's output is replaced by the rows."""
        if self.embedding is None:
            return model(*rows, *self.extra_args(example), **self.extra_kwargs(example))
        from .capture import hooked

        assert self.ids is not None  # set with the embedding
        ids = tuple(i[example.to(i.device)] for i in self.ids)

        def substitute(module, args, out):
            if out.shape != rows[0].shape:
                raise UnitscopeError(
                    "the embedding module's output does not match the path rows",
                    embedding_output=tuple(out.shape),
                    rows=tuple(rows[0].shape),
                    hint="embedding= must name the module that maps the token ids to vectors",
                )
            return rows[0]

        with hooked(forward={self.embedding: substitute}, prepend=True):
            return model(*ids, *self.extra_args(example), **self.extra_kwargs(example))


def token_embedding(model) -> str:
    """The name of the module that embeds a model's token ids (what ``embedding="auto"`` means): the module
    ``get_input_embeddings()`` returns (every ``transformers`` model, also inside a wrapper), else the model's only
    ``nn.Embedding``.

    >>> import torch.nn as nn
    >>> token_embedding(nn.Sequential(nn.Embedding(10, 4), nn.Flatten(), nn.Linear(12, 2)))
    '0'
    """
    names = {id(m): n for n, m in model.named_modules()}
    for owner in (model, getattr(model, "hf", None), *model.modules()):  # the outermost model that says
        get = getattr(owner, "get_input_embeddings", None)
        module = get() if callable(get) else None
        if isinstance(module, torch.nn.Module) and id(module) in names:
            return names[id(module)]
    found = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Embedding)]
    if len(found) == 1:
        return found[0]
    raise UnitscopeError(
        "embedding='auto' finds no single token embedding in this model"
        if not found
        else f"embedding='auto': the model has {len(found)} nn.Embedding modules",
        embeddings=found[:8],
        hint="name the one that maps the token ids: embedding='NAME'",
    )


def _embed(model, embedding, inputs, baselines, device):
    """(ids, embeddings at the ids, baseline embeddings, module) for paths that start at an embedding module
    (``embedding``: its name, the module, or ``"auto"``: :func:`token_embedding`)."""
    from .sites import resolve

    if embedding == "auto":
        embedding = token_embedding(model)
    (site,) = resolve(model, [embedding])
    ids = _as_tuple(inputs, "inputs")
    if len(ids) != 1 or ids[0].is_floating_point():
        raise UnitscopeError(
            "embedding= needs one tensor of integer token ids as inputs",
            embedding=site.name,
            dtypes=[str(t.dtype) for t in ids],
        )
    x = ids[0].detach().to(device) if device is not None else ids[0].detach()
    vocab = getattr(site.module, "num_embeddings", None)
    if isinstance(vocab, int) and x.numel() and (int(x.min()) < 0 or int(x.max()) >= vocab):
        bad = ((x < 0) | (x >= vocab)).nonzero()[0].tolist()
        raise UnitscopeError(
            f"token id {int(x[tuple(bad)])} at example {bad[0]}, position {bad[1:]} is outside the "
            f"vocabulary of {site.name!r} (ids 0 … {vocab - 1})",
            embedding=site.name,
            hint="tokenize with the model's own tokenizer, or check that the ids belong to this model",
        )
    from .faults import model_errors

    with torch.no_grad(), model_errors(site.module, inputs=x, what=f"the embedding {site.name!r}"):
        emb = site.module(x)
        if not torch.is_tensor(emb) or not emb.is_floating_point():
            raise UnitscopeError(
                f"module {site.name!r} does not map token ids to float vectors",
                embedding=site.name,
                hint="name the token embedding, e.g. 'transformer.wte'",
            )
        if baselines is None:
            base = torch.zeros_like(emb)
        elif isinstance(baselines, int) or (torch.is_tensor(baselines) and not baselines.is_floating_point()):
            b = torch.as_tensor(baselines, device=x.device)
            base = site.module(torch.broadcast_to(b, x.shape).contiguous())
        else:
            base = torch.broadcast_to(torch.as_tensor(baselines, dtype=emb.dtype, device=emb.device), emb.shape).clone()
    return (x,), emb.detach(), base.detach(), site.module


def prepare(
    inputs,
    baselines=None,
    additional_forward_args=None,
    device=None,
    *,
    allow_ids: bool = False,
    embedding=None,
    model=None,
) -> Batch:
    """Check inputs and baselines and put them on ``device``; baselines broadcast to the inputs' shape.

    ``allow_ids``: integer inputs are accepted (methods evaluated at the input only); ``embedding`` (with
    ``model``): the inputs are token ids and paths start at that module's output."""
    extra, kwargs = _extra(additional_forward_args)
    if embedding is not None:
        ids, emb, base, module = _embed(model, embedding, inputs, baselines, device)
        if not torch.isfinite(emb).all() or not torch.isfinite(base).all():
            raise UnitscopeError("the embeddings contain non-finite values", embedding=str(embedding))
        return Batch((emb,), (base,), False, extra, emb.shape[0], kwargs, ids, module)
    is_tuple = not torch.is_tensor(inputs)
    xs = _as_tuple(inputs, "inputs")
    n = xs[0].shape[0] if xs[0].dim() else 0
    for i, x in enumerate(xs):
        if x.dim() == 0 or x.shape[0] == 0:
            raise UnitscopeError(
                "the batch is empty: inputs need a batch dimension with at least one example",
                input=i,
                shape=tuple(x.shape),
            )
        if x.shape[0] != n:
            raise UnitscopeError("all inputs must have the same batch size", shapes=[tuple(t.shape) for t in xs])
        if not x.is_floating_point():
            if allow_ids:
                continue
            raise UnitscopeError(
                "path methods need floating-point inputs; for token ids pass embedding='NAME' "
                "(the module that embeds them: the path starts at its output)",
                input=i,
                dtype=str(x.dtype),
            )
        if not torch.isfinite(x).all():
            bad = int((~torch.isfinite(x)).sum())
            raise UnitscopeError(f"inputs contain {bad} non-finite values (NaN or inf)", input=i, shape=tuple(x.shape))
    xs = tuple(x.detach().to(device) if device is not None else x.detach() for x in xs)
    if baselines is None or all(not x.is_floating_point() for x in xs):
        bs = tuple(torch.zeros_like(x) for x in xs)
    else:
        raw = baselines if isinstance(baselines, (tuple, list)) else (baselines,)
        if len(raw) != len(xs):
            raise UnitscopeError("give one baseline per input", inputs=len(xs), baselines=len(raw))
        per_input: list[torch.Tensor] = []
        for i, (x, b) in enumerate(zip(xs, raw)):
            b = torch.as_tensor(b, dtype=x.dtype, device=x.device).detach()
            try:
                b = torch.broadcast_to(b, x.shape).clone()
            except RuntimeError:
                raise UnitscopeError(
                    "baseline shape does not broadcast to the input shape",
                    input=i,
                    baseline_shape=tuple(b.shape),
                    input_shape=tuple(x.shape),
                    hint="use a scalar, one example's shape, or the batch's shape",
                ) from None
            if not torch.isfinite(b).all():
                raise UnitscopeError("baselines contain non-finite values", input=i)
            per_input.append(b)
        bs = tuple(per_input)
    return Batch(xs, bs, is_tuple, extra, n, kwargs)


def _extra(additional_forward_args) -> tuple[tuple, dict]:
    extra = additional_forward_args
    if extra is None:
        return (), {}
    if isinstance(extra, dict):
        return (), dict(extra)
    return (extra if isinstance(extra, tuple) else (extra,)), {}


def main_output(output):
    """The tensor that targets read: the output itself, the ``logits`` of a dict/``ModelOutput``, else its first
    tensor entry; ``None`` when there is none."""
    if torch.is_tensor(output):
        return output
    if isinstance(output, dict):
        if torch.is_tensor(output.get("logits")):
            return output["logits"]
        for v in output.values():
            if torch.is_tensor(v):
                return v
        return None
    if isinstance(output, (tuple, list)) and output and torch.is_tensor(output[0]):
        return output[0]
    return None


def _spec_target(spec: tuple) -> Callable:
    """``(key, *index)``: ``output[key][:, *index]``; an index entry may be a per-example list/tensor."""
    key, index = spec[0], spec[1:]

    def fn(output, example):
        if isinstance(key, str):
            if not isinstance(output, dict) or key not in output:
                raise UnitscopeError(
                    f"the model's output has no entry {key!r}",
                    target=str(spec),
                    entries=list(output) if isinstance(output, dict) else type(output).__name__,
                )
            t = output[key]
        else:
            t = output[key] if isinstance(output, (tuple, list)) else output
        idx = [slice(None)]
        for i in index:
            if isinstance(i, int):
                idx.append(i)
            else:
                per = torch.as_tensor(i, dtype=torch.long)
                idx.append(per.to(t.device)[example.to(t.device)])
        if any(torch.is_tensor(i) for i in idx[1:]):
            idx[0] = torch.arange(t.shape[0], device=t.device)
        value = t[tuple(idx)]
        if value.dim() != 1:
            raise UnitscopeError(
                "the target spec must pick one value per example",
                target=str(spec),
                picked=tuple(value.shape),
                hint="give an index for every dim after the batch",
            )
        return value

    return fn


class Target:
    """Reads the scalar F of each row from the model's output."""

    def __init__(self, index: torch.Tensor | None = None, fn: Callable | None = None, rows_fn: Callable | None = None):
        self.index, self.fn, self.rows_fn = index, fn, rows_fn
        self.checked = False

    def check(self, classes: int) -> None:
        """Every integer target is a class of an output with ``classes`` columns; else an error naming the
        examples (their indices in the user's batch), their targets and the valid range."""
        if self.index is None or self.checked:
            return
        bad = torch.nonzero((self.index < 0) | (self.index >= classes)).flatten()
        if bad.numel():
            n, got = self.index.numel(), self.index[bad].tolist()
            if bad.numel() == n and len(set(got)) == 1:
                shown = f"got target {got[0]} for {'all ' * (n > 1)}{n} example{'s' * (n != 1)}"
            else:
                shown = ", ".join(f"example {e} has target {t}" for e, t in zip(bad[:3].tolist(), got[:3]))
                shown += f"{', …' if bad.numel() > 3 else ''} ({bad.numel()} of the {n} examples)"
            hint = (
                f"targets count from 0, negative ones are not taken from the end: the last class is {classes - 1}"
                if min(got) < 0
                else f"a target is a column of the model's output, [{n}, {classes}] for these inputs"
            )
            raise UnitscopeError(
                f"target out of range: the model has {classes} outputs, so a target must be in "
                f"0…{classes - 1}; {shown}",
                targets=sorted(set(got)),
                hint=hint,
            )
        self.checked = True

    def __call__(self, output, example: torch.Tensor) -> torch.Tensor:
        if self.rows_fn is not None:
            return self.rows_fn(output, example)
        if self.fn is not None:
            value = self.fn(output)
            if not torch.is_tensor(value) or value.shape != (example.shape[0],):
                raise UnitscopeError(
                    "a target callable must return one value per example",
                    expected=(example.shape[0],),
                    got=tuple(getattr(value, "shape", ())),
                )
            return value
        if not torch.is_tensor(output) and main_output(output) is not None:
            output = main_output(output)
        if not torch.is_tensor(output):
            raise UnitscopeError(
                "the model returns a " + type(output).__name__ + "; pass target=callable that "
                "maps the output to one scalar per example, or a spec like ('logits', -1, token)"
            )
        if self.index is None:
            if output.dim() == 1:
                return output
            if output.dim() == 2 and output.shape[1] == 1:
                return output[:, 0]
            raise UnitscopeError("target is needed for a model with several outputs", output_shape=tuple(output.shape))
        if output.dim() != 2:
            raise UnitscopeError(
                "an integer target needs a [batch, classes] output; pass a callable otherwise",
                output_shape=tuple(output.shape),
            )
        self.check(output.shape[1])
        idx = self.index.to(output.device)[example.to(output.device)]
        return output.gather(1, idx.view(-1, 1)).squeeze(1)


def make_target(target, n: int, output_at_x=None) -> Target:
    """``None`` → top class of each example at x (``output_at_x`` needed); int; per-example list/tensor; callable.

    Integer targets are checked against the output's width on first use."""
    if callable(target) and not torch.is_tensor(target):
        return Target(fn=target)
    if isinstance(target, tuple) and target and isinstance(target[0], str):
        return Target(rows_fn=_spec_target(target))
    if output_at_x is not None and not torch.is_tensor(output_at_x):
        output_at_x = main_output(output_at_x)
    if target is None:
        if output_at_x is None or not torch.is_tensor(output_at_x):
            raise UnitscopeError("target=None needs a tensor output; pass target=callable")
        if output_at_x.dim() == 1 or (output_at_x.dim() == 2 and output_at_x.shape[1] == 1):
            return Target()
        if output_at_x.dim() != 2:
            raise UnitscopeError(
                "target=None picks the top class of a [batch, classes] output",
                output_shape=tuple(output_at_x.shape),
                hint="pass target=callable",
            )
        return Target(index=output_at_x.argmax(1).detach().cpu())
    if isinstance(target, int) or (torch.is_tensor(target) and target.dim() == 0):
        index = torch.full((n,), int(target), dtype=torch.long)
    else:
        try:
            index = torch.as_tensor(target, dtype=torch.long).flatten().cpu()
        except (TypeError, ValueError, RuntimeError):
            raise UnitscopeError(
                "target must be None, an int, a per-example list/tensor or a callable", got=type(target).__name__
            ) from None
        if index.numel() != n:
            raise UnitscopeError("a per-example target needs one class per example", examples=n, targets=index.numel())
    return Target(index=index)
