"""What went wrong inside the user's model, said in the user's terms; out-of-memory kept apart from the rest.

>>> import torch, torch.nn as nn
>>> net = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(5, 2))
>>> try:
...     with model_errors(net, inputs=(torch.ones(2, 4),)):
...         net(torch.ones(2, 4))
... except UnitscopeError as e:
...     print(str(e).split(" (rows")[0])
the model does not accept inputs of shape [2, 4]: layer '2' (Linear) called with [2, 3] raised RuntimeError: mat1 and mat2 shapes cannot be multiplied (2x3 and 5x2)

- :func:`is_oom` tells out-of-memory (CUDA, MPS, CPU allocator) from every other error; fallbacks never catch it,
  and :func:`with_oom_hint` adds what to lower (``internal_batch_size``, ``batch_size``) to the same exception.
- :func:`model_errors` wraps a call boundary: an error raised inside the user's model becomes a
  :class:`UnitscopeError` that names the layer call that raised (read from the traceback), the shapes that layer
  was called with, the rows fed to the model and the user's input shape — with the model's own error chained.
  Errors that did not come from inside the model pass through unchanged.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn as nn

from .errors import UnitscopeError

__all__ = ["is_oom", "with_oom_hint", "model_errors", "OOM_HINT"]

OOM_HINT = ("unitscope: out of memory — lower internal_batch_size (path rows per forward/backward pass) or "
            "batch_size (examples per batch)")

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
    if OOM_HINT not in getattr(e, "__notes__", ()):
        e.add_note(OOM_HINT)
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
    calls = []
    while tb is not None:
        frame = tb.tb_frame
        me = frame.f_locals.get("self")
        if isinstance(me, nn.Module) and id(me) in names and frame.f_code.co_name in ("_call_impl",
                                                                                     "_wrapped_call_impl"):
            if not calls or calls[-1][1] is not me:
                calls.append((names[id(me)], me, frame.f_locals.get("args")))
        elif isinstance(me, nn.Module) and id(me) in names and frame.f_code.co_name == "forward":
            if not calls or calls[-1][1] is not me:
                calls.append((names[id(me)], me, None))
        tb = tb.tb_next
    return calls


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
            raise with_oom_hint(e)
        calls = _calls_in(model, e.__traceback__)
        if not calls:
            raise
        name, module, args = calls[-1]
        rows = next((a for n, m, a in calls if m is model and a is not None), None)
        where = "its forward()" if name == "" else f"layer {name!r} ({type(module).__name__})"
        called = _shapes(args) if args is not None else None
        first = (str(e).strip().splitlines() or [""])[0]
        context = {}
        if rows is not None:
            context["rows"] = _shapes(rows)
        if inputs is not None:
            context["input_shape"] = _shapes(inputs)
        shape_like = any(w in first.lower() for w in _SHAPE_WORDS)
        call = where + (f" called with {called}" if called is not None else "")
        if shape_like and inputs is not None:
            message = (f"{what} does not accept inputs of shape {context['input_shape']}: {call} raised "
                       f"{type(e).__name__}: {first}")
        else:
            message = f"{what} raised {type(e).__name__} in {call}: {first}"
        raise UnitscopeError(
            message, **context,
            hint=hint or ("check that the inputs have the shape the model expects (examples first)" if shape_like
                          else "the model's own traceback is chained above")) from e
