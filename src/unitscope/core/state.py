"""Leave the user's model exactly as it was handed to us.

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
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn as nn

__all__ = ["analysis_mode", "torch_threads"]


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
