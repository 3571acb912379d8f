"""What every conformance case checks, written without unitscope: the model handed back unchanged, results in
the model's dtype, failures as ``UnitscopeError``, and layer values / gradients / ablations recomputed with plain
forward hooks (:mod:`conformance.reference`'s ``recorded``).

>>> import torch.nn as nn
>>> net = nn.Linear(2, 2)
>>> before = snapshot(net)
>>> assert_untouched(before, net)
>>> result_dtype(torch.bfloat16), result_dtype(torch.float64)
(torch.float32, torch.float64)
"""

from __future__ import annotations

import hashlib

import torch
import torch.nn as nn

import unitscope as us

from conformance.reference import recorded

__all__ = [
    "snapshot",
    "assert_untouched",
    "result_dtype",
    "run",
    "first",
    "close",
    "layer_values",
    "grads_at",
    "forward_at",
    "top_class",
    "unit_values",
    "ablated_output",
]


def _digest(t: torch.Tensor) -> str:
    t = t.detach().cpu().contiguous().reshape(-1)
    return hashlib.sha256(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"").hexdigest() + str(t.dtype)


def _hooks(model: nn.Module) -> int:
    n = 0
    for m in model.modules():
        n += len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
        n += len(getattr(m, "_backward_pre_hooks", {})) + len(getattr(m, "_state_dict_hooks", {}))
    g = torch.nn.modules.module
    n += len(g._global_forward_hooks) + len(g._global_forward_pre_hooks) + len(g._global_backward_hooks)
    return n


def snapshot(model: nn.Module) -> dict:
    """Everything a call must leave as it found it."""
    return {
        "state": {k: _digest(v) for k, v in model.state_dict().items()},
        "training": [(n, m.training) for n, m in model.named_modules()],
        "requires_grad": [(n, p.requires_grad) for n, p in model.named_parameters()],
        "grad": [(n, None if p.grad is None else _digest(p.grad)) for n, p in model.named_parameters()],
        "tensor_hooks": [(n, bool(getattr(p, "_backward_hooks", None))) for n, p in model.named_parameters()],
        "hooks": _hooks(model),
        "grad_mode": (torch.is_grad_enabled(), torch.is_inference_mode_enabled()),
    }


def assert_untouched(before: dict, model: nn.Module) -> None:
    after = snapshot(model)
    for key in before:
        if key == "state":
            changed = [k for k in before["state"] if before["state"][k] != after["state"].get(k)]
            assert not changed and set(after["state"]) == set(before["state"]), f"state dict changed: {changed[:5]}"
        else:
            assert after[key] == before[key], f"{key} changed"


def result_dtype(model_dtype: torch.dtype) -> torch.dtype:
    """DESIGN: results are in the model's dtype, float32 at least."""
    return model_dtype if model_dtype in (torch.float32, torch.float64) else torch.float32


def run(fn, *args, **kw):
    """``fn(*args, **kw)``; anything but a ``UnitscopeError`` escaping from it is a conformance failure."""
    try:
        return fn(*args, **kw)
    except us.UnitscopeError:
        raise
    except Exception as e:  # noqa: BLE001 - the point: nothing raw may escape
        raise AssertionError(
            f"{getattr(fn, '__name__', fn)} raised a raw {type(e).__name__} instead of a UnitscopeError: {str(e)[:300]}"
        ) from e


def first(v):
    """Part 0 of a tuple result (layers whose output is a tuple)."""
    return v[0] if isinstance(v, tuple) else v


def close(got: torch.Tensor, want: torch.Tensor, rtol: float, what: str = "", scale: float | None = None) -> None:
    """``max |got − want| ≤ rtol · scale`` (float64); ``scale``: default ``max |want|`` (give the size of the
    quantities a result is a difference of, e.g. |F|, where it cancels)."""
    got, want = first(got).double(), first(want).double()
    assert got.shape == want.shape, f"{what}: shape {tuple(got.shape)} != {tuple(want.shape)}"
    scale = float(want.abs().max().clamp_min(1e-30)) if scale is None else scale
    err = float((got - want).abs().max())
    assert err <= rtol * scale, f"{what}: max error {err:.3g} > {rtol:g} × {scale:.3g}"


def _args(arch, inputs=None, forward_args=None):
    inputs = arch.inputs if inputs is None else inputs
    fa = arch.additional_forward_args if forward_args is None else forward_args
    return (*(inputs if isinstance(inputs, tuple) else (inputs,)), *(fa or ()))


def layer_values(arch, layers, inputs=None, forward_args=None) -> dict:
    """``{layer: output}`` at the inputs (no grad), by plain forward hooks, one pass per layer."""
    out = {}
    with torch.no_grad():
        for layer in layers:
            rec = recorded(arch.model, layer)
            with rec:
                arch.model(*_args(arch, inputs, forward_args))
            out[layer] = rec.value.detach()
    return out


def forward_at(arch, alpha: float, inputs=None, forward_args=None) -> torch.Tensor:
    """The model's output at ``α · x`` (the zero baseline), in the embedding's space for token models."""
    with torch.no_grad():
        if arch.embedding is None:
            x = arch.inputs if inputs is None else inputs
            return arch.model(*_args(arch, x * alpha, forward_args))
        rec = recorded(arch.model, None, replace=(arch.embedding, lambda e: e * alpha))
        with rec:
            return arch.model(*_args(arch, inputs, forward_args))


def top_class(arch, inputs=None, forward_args=None) -> list[int]:
    return forward_at(arch, 1.0, inputs, forward_args).float().argmax(1).tolist()


def grads_at(arch, layer, target) -> tuple[torch.Tensor, torch.Tensor]:
    """(y, ∂F/∂y) at the inputs: ``F = Σ_e output[e, target[e]]``."""
    with torch.enable_grad():
        rec = recorded(arch.model, layer)
        with rec:
            out = arch.model(*_args(arch))
        F = out[torch.arange(out.shape[0]), torch.tensor(target)].sum()
        (g,) = torch.autograd.grad(F, rec.value)
    return rec.value.detach(), g.detach()


def unit_values(y: torch.Tensor, spec, *, reduce: str, mask=None) -> torch.Tensor:
    """``[N, U]`` from a layer output, by the layout's rule (DESIGN "Units"): channels ``[N, C, ...]`` → over
    positions; channels-last ``[N, H, W, C]`` → C over positions; tokens ``[N, T, D]`` → the D neurons over the real
    tokens; ``[N, D]`` → D."""
    y = first(y).double()
    if y.dim() == 2:
        return y
    if spec.layout == "channels":
        flat = y.flatten(2)
        return flat.sum(2) if reduce == "sum" else flat.mean(2)
    if spec.layout == "channels_last":  # [N, H, W, C] → the C channels over positions
        flat = y.flatten(1, -2)
        return flat.sum(1) if reduce == "sum" else flat.mean(1)
    if spec.layout == "tokens" and y.dim() == 3:
        keep = torch.ones(y.shape[:2], dtype=torch.float64) if mask is None else mask.double()
        s = (y * keep[..., None]).sum(1)
        return s if reduce == "sum" else s / keep.sum(1, keepdim=True)
    raise NotImplementedError(f"layout {spec.layout} of shape {tuple(y.shape)}")


def ablated_output(arch, layer, unit: int, spec) -> torch.Tensor:
    """The model's output with one unit of ``layer`` set to 0 (a channel at every position, a neuron at every
    token), by a plain forward hook."""

    def zero(y):
        y = y.clone()
        if spec.layout == "channels" or y.dim() == 2:
            y[:, unit] = 0
        else:
            y[..., unit] = 0
        return y

    def hook(mod, args, out):
        return (zero(out[0]), *out[1:]) if isinstance(out, tuple) else zero(out)

    rec = recorded(arch.model, None, replace=(layer, lambda out: hook(None, None, out)))
    with torch.no_grad(), rec:
        return arch.model(*_args(arch))
