"""What went wrong inside the user's model, said in the user's terms; out-of-memory kept apart from the rest.

>>> import torch, torch.nn as nn
>>> net = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(5, 2))
>>> try:
...     with model_errors(net, inputs=(torch.ones(2, 4),)):
...         net(torch.ones(2, 4))
... except UnitscopeError as e:
...     print(e)
the model does not accept inputs of shape [2, 4]: layer '2' (Linear) called with [2, 3] raised RuntimeError: mat1 and mat2 shapes cannot be multiplied (2x3 and 5x2); the model expects [N, 4] (read from its first layer, '0': Linear(in_features=4, out_features=3, bias=True)); the inputs are examples first

- :func:`is_oom` tells out-of-memory (CUDA, MPS, CPU allocator) from every other error; fallbacks never catch it,
  and :func:`with_oom_hint` adds what to lower (``internal_batch_size``, ``batch_size``) to the same exception.
- :func:`model_errors` wraps a call boundary: an error raised inside the user's model becomes a
  :class:`UnitscopeError` that names the layer call that raised (read from the traceback), the shapes that layer
  was called with, the user's input shape and — for a shape error — the shape the model expects, read from its
  first conv / linear / embedding layer (:func:`expected_input`); the model's own error is chained. When the model
  failed on points of the path from the baselines to the inputs rather than on the inputs, it says so (how many
  points). Errors that did not come from inside the model pass through unchanged.
"""  # noqa: E501 — a doctest output line, verbatim

from __future__ import annotations

import sys
from contextlib import contextmanager

import torch
import torch.nn as nn

from .errors import UnitscopeError

__all__ = ["is_oom", "with_oom_hint", "model_errors", "expected_input", "OOM_HINT"]

OOM_HINT = (
    "unitscope: out of memory — lower internal_batch_size (path rows per forward/backward pass) or "
    "batch_size (examples per batch)"
)

_SHAPE_WORDS = ("shape", "size", "dimension", "mat1", "mat2", "expected input", "must match", "channels")


def is_oom(e: BaseException) -> bool:
    """Whether ``e`` is an out-of-memory error (``torch.OutOfMemoryError``, a CPU allocation failure, MemoryError)."""
    oom_type = getattr(torch, "OutOfMemoryError", None) or getattr(torch.cuda, "OutOfMemoryError", ())
    if isinstance(e, (MemoryError,) + ((oom_type,) if isinstance(oom_type, type) else ())):
        return True
    text = str(e)
    return isinstance(e, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def with_oom_hint(e: BaseException) -> BaseException:
    """``e`` with a note on what to lower (once); the same exception object, to re-raise."""
    notes = getattr(e, "__notes__", None) or []
    if OOM_HINT not in notes:
        if sys.version_info >= (3, 11):
            e.add_note(OOM_HINT)
        else:  # Python 3.10 has no add_note: the same list, which tracebacks print from 3.11 on
            setattr(e, "__notes__", [*notes, OOM_HINT])  # noqa: B010 — BaseException declares it from 3.11 on
    return e


def _shapes(obj):
    if torch.is_tensor(obj):
        return list(obj.shape)
    if isinstance(obj, (list, tuple)):
        got = [_shapes(v) for v in obj]
        got = [g for g in got if g is not None]
        return (got[0] if len(got) == 1 else got) if got else None
    if isinstance(obj, dict):
        got = {k: _shapes(v) for k, v in obj.items()}
        return {k: v for k, v in got.items() if v is not None} or None
    return None


def _calls_in(model: nn.Module, tb) -> list[tuple[str, nn.Module, object]]:
    """``(name, module, args)`` of the model's module calls on the traceback, outermost first."""
    names = {id(m): n for n, m in model.named_modules()}
    calls: list[tuple[str, nn.Module, object]] = []
    while tb is not None:
        frame = tb.tb_frame
        me = frame.f_locals.get("self")
        if (
            isinstance(me, nn.Module)
            and id(me) in names
            and frame.f_code.co_name in ("_call_impl", "_wrapped_call_impl")
        ):
            if not calls or calls[-1][1] is not me:
                calls.append((names[id(me)], me, frame.f_locals.get("args")))
        elif isinstance(me, nn.Module) and id(me) in names and frame.f_code.co_name == "forward":
            if not calls or calls[-1][1] is not me:
                calls.append((names[id(me)], me, None))
        tb = tb.tb_next
    return calls


_CONV_DIMS = {1: "L", 2: "H, W", 3: "D, H, W"}


def expected_input(model: nn.Module) -> tuple[str, str] | None:
    """``(shape, source)``: the input shape ``model`` expects, read from its first conv, linear or embedding layer
    (in ``named_modules()`` order, which is the order of calls for ``nn.Sequential`` and most models), and which
    layer it was read from; ``None`` when the model has none with known sizes.

    >>> expected_input(nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU()))
    ('[N, 3, H, W]', "its first layer, '0': Conv2d(3, 8, kernel_size=(3, 3), stride=(1, 1))")
    """
    flatten = None
    for name, m in model.named_modules():
        src = f"its first layer, {name!r}: {m!r}" if name else f"the model: {type(m).__name__}"
        if isinstance(m, nn.Flatten) and flatten is None:
            flatten = name
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)) and m.in_channels:
            dims = _CONV_DIMS[len(m.kernel_size)]
            return f"[N, {m.in_channels}, {dims}]", src
        if isinstance(m, nn.Linear) and m.in_features:
            if flatten is not None:
                return f"[N, …] with {m.in_features} values per example (flattened by {flatten!r})", src
            return f"[N, {m.in_features}]", src
        if isinstance(m, nn.Embedding):
            return f"[N, T] token ids (integers 0…{m.num_embeddings - 1})", src
    return None


@contextmanager
def model_errors(model: nn.Module, *, inputs=None, what: str = "the model", hint: str | None = None):
    """Re-raise an error from inside ``model`` as a :class:`UnitscopeError` naming the layer call and the shapes
    (``inputs``: the user's inputs, for their shape; ``hint``: what to try, instead of the generic advice).
    Out-of-memory propagates as itself, with a hint."""
    try:
        yield
    except UnitscopeError:
        raise
    except Exception as e:  # noqa: BLE001 — only errors raised inside the model are rewritten; the rest re-raised
        if is_oom(e):
            with_oom_hint(e)
            raise
        calls = _calls_in(model, e.__traceback__)
        if not calls:
            raise
        name, module, args = calls[-1]
        rows = next((a for n, m, a in calls if m is model and a is not None), None)
        where = "its forward()" if name == "" else f"layer {name!r} ({type(module).__name__})"
        called = _shapes(args) if args is not None else None
        first = (str(e).strip().splitlines() or [""])[0]
        user = _shapes(inputs) if inputs is not None else None
        fed = _shapes(rows) if rows is not None else None
        on_path = ""
        if fed is not None and user is not None and fed != user:
            # the model failed on points of the path (baseline → input), not on the user's own batch
            count = fed[0] if isinstance(fed, list) and fed and isinstance(fed[0], int) else None
            on_path = (
                f" on {count} points of the path from the baselines to the inputs"
                if count is not None
                else " on points of the path from the baselines to the inputs"
            )
        shape_like = any(w in first.lower() for w in _SHAPE_WORDS)
        call = where + (f" called with {called}" if called is not None else "")
        if shape_like and user is not None:
            message = (
                f"{what} does not accept inputs of shape {user}: {call}{on_path} raised {type(e).__name__}: {first}"
            )
        else:
            message = f"{what} raised {type(e).__name__} in {call}{on_path}: {first}"
            if user is not None:
                message += f" (your inputs: {user})"
        if hint is None and shape_like:
            want = expected_input(model)
            hint = (
                f"the model expects {want[0]} (read from {want[1]}); the inputs are examples first"
                if want is not None
                else "check that the inputs have the shape the model expects (examples first)"
            )
        raise UnitscopeError(message, hint=hint or "the model's own traceback is chained above") from e
