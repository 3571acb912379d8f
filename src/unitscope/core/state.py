"""Leave the user's model — and the user's process — exactly as they were handed to us.

>>> import torch.nn as nn
>>> net = nn.Sequential(nn.Linear(2, 2), nn.Dropout()).train()
>>> with analysis_mode(net):
...     net.training, net[0].weight.requires_grad
(False, False)
>>> net.training, net[0].weight.requires_grad
(True, True)
>>> import torch
>>> n = torch.get_num_threads()
>>> with torch_threads(1):
...     torch.get_num_threads()
1
>>> torch.get_num_threads() == n
True
>>> before = torch.get_rng_state()
>>> with process_state_restored():
...     torch.manual_seed(123) and torch.set_num_threads(1)
>>> torch.equal(torch.get_rng_state(), before), torch.get_num_threads() == n
(True, True)

What "the process" means here (:func:`process_snapshot` reads it, :func:`process_state_restored` puts it back):
torch's thread count, grad mode, default dtype, the warning filters, the global random generators (torch on the CPU
and on every CUDA device already initialised, numpy's, Python's ``random``) and matplotlib's backend. Library
functions change none of them; a study's entry point may set what it needs (threads, a seed, grad mode, warning
filters) inside ``@restores_process_state``, and the caller gets everything back — also when it raises.
"""

from __future__ import annotations

import functools
import random
import sys
import warnings
from contextlib import contextmanager

import torch
import torch.nn as nn

__all__ = [
    "autograd_on",
    "analysis_mode",
    "torch_threads",
    "process_snapshot",
    "process_state_restored",
    "restores_process_state",
]


@contextmanager
def autograd_on():
    """Gradients on for the block, whatever the caller's mode: inside ``torch.no_grad()`` and
    ``torch.inference_mode()`` the numbers are the same as outside (Captum does the same). The caller's
    mode is back on exit."""
    with torch.inference_mode(False), torch.enable_grad():
        yield


@contextmanager
def analysis_mode(model: nn.Module, *, freeze: bool = True):
    """Eval mode (BatchNorm statistics and Dropout fixed) and, with ``freeze``, parameters that need no
    gradient, so no autograd graph is built below the first scored layer. On exit — normal, exception or
    KeyboardInterrupt — every module's ``training`` flag, every parameter's ``requires_grad`` and ``.grad``
    are put back."""
    training = [(m, m.training) for m in model.modules()]
    params = list(model.parameters())
    requires = [p.requires_grad for p in params]
    grads = [p.grad for p in params]
    try:
        model.eval()
        if freeze:
            for p in params:
                p.requires_grad_(False)
        yield model
    finally:
        for m, flag in training:
            m.training = flag
        for p, flag, g in zip(params, requires, grads):
            p.requires_grad_(flag)
            p.grad = g


@contextmanager
def torch_threads(n: int | None):
    """Run the block with ``n`` torch threads (``None`` or 0: leave the setting alone); the previous number is
    restored on exit, also on error. Small models on a shared machine are often fastest on one thread."""
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _matplotlib_backend():
    """The backend matplotlib has chosen, without resolving one (None if matplotlib is not imported)."""
    mpl = sys.modules.get("matplotlib")
    if mpl is None:
        return None
    get = getattr(mpl.rcParams, "_get_backend_or_none", None)
    return get() if get is not None else mpl.rcParams.get("backend")


def process_snapshot() -> dict:
    """What the process-wide settings are now (see the module's docstring); equal snapshots = nothing changed."""
    import numpy as np

    cuda = (
        [torch.cuda.get_rng_state(i) for i in range(torch.cuda.device_count())]
        if torch.cuda.is_available() and torch.cuda.is_initialized()
        else []
    )
    return {
        "threads": torch.get_num_threads(),
        "grad_enabled": torch.is_grad_enabled(),
        "inference_mode": torch.is_inference_mode_enabled(),
        "default_dtype": torch.get_default_dtype(),
        "warning_filters": list(warnings.filters),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": cuda,
        "numpy_rng": np.random.get_state(),
        "python_rng": random.getstate(),
        "matplotlib_backend": _matplotlib_backend(),
    }


@contextmanager
def process_state_restored():
    """Run the block, then put back torch's threads, grad mode and default dtype, the warning filters, the global
    RNGs and matplotlib's backend as they were — also on error or KeyboardInterrupt."""
    import numpy as np

    threads, grad, dtype = torch.get_num_threads(), torch.is_grad_enabled(), torch.get_default_dtype()
    backend = _matplotlib_backend()
    np_state, py_state = np.random.get_state(), random.getstate()
    with (
        torch.random.fork_rng(
            devices=list(range(torch.cuda.device_count()))
            if torch.cuda.is_available() and torch.cuda.is_initialized()
            else []
        ),
        warnings.catch_warnings(),
    ):
        try:
            yield
        finally:
            torch.set_num_threads(threads)
            torch.set_grad_enabled(grad)
            torch.set_default_dtype(dtype)
            np.random.set_state(np_state)
            random.setstate(py_state)
            if backend is not None and _matplotlib_backend() != backend:
                sys.modules["matplotlib"].use(backend)


def restores_process_state(fn):
    """Decorate an entry point (a study's ``main``) so that whatever it sets process-wide is undone on return."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with process_state_restored():
            return fn(*args, **kwargs)

    return wrapper
