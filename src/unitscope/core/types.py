"""The types of the public API's common arguments, named once: what ``inputs``, ``layers``, ``baselines`` and
``target`` may be (see each function's docs for what it does with them).

>>> import torch
>>> x: Inputs = (torch.ones(2, 3), torch.zeros(2, 1))
>>> layers: Layers = ["features.3", "classifier.1"]
>>> baselines: Baselines = (0.0, torch.zeros(1))
>>> target: Target = ("logits", -1, 5)
>>> over_data: DataTarget = "label"
"""

from __future__ import annotations

from typing import Any, Callable, Literal, Protocol, Sequence, Union

import torch
import torch.nn as nn

__all__ = ["Inputs", "Layer", "Layers", "LayerNames", "Baselines", "Target", "DataTarget", "LayerDictionary"]

Inputs = Union[torch.Tensor, tuple[torch.Tensor, ...]]
"""A batch (examples first), or a tuple of batches for a model with several inputs; token ids where the function
takes ``embedding=``."""

Layer = Union[str, nn.Module]
"""A layer's name as ``model.named_modules()`` prints it (``NAME@K``: the K-th call of a module called several
times), or the module object."""

Layers = Union[Layer, Sequence[Layer]]
"""One :data:`Layer` or a sequence of them."""

LayerNames = Union[str, Sequence[str]]
"""Layers by name only (where results are kept by layer name, as in the atlas)."""

Baselines = Union[None, float, torch.Tensor, Sequence[Union[float, torch.Tensor]]]
"""``None`` (zeros), a number or a tensor that broadcasts to the inputs, or one of those per input; with
``embedding=``, a token id (``int``), a tensor of ids or the baseline embeddings."""

Target = Union[None, int, Sequence[int], torch.Tensor, Callable[[Any], torch.Tensor], tuple[Any, ...]]
"""``None`` (the top class of each example), a class, one class per example, a callable ``output -> Tensor[N]``,
or a spec into a structured output such as ``("logits", -1, token)``."""

DataTarget = Union[None, int, Literal["label"], Callable[[Any], torch.Tensor]]
"""A target over a data set (scans, the atlas): ``None`` (each example's top class), a class, ``"label"`` (each
example's own label) or a callable ``output -> Tensor[N]``."""


class LayerDictionary(Protocol):
    """What reading a layer through a dictionary needs of it (:class:`unitscope.core.dictionary.Dictionary`):
    ``split(y) -> (f, ε)`` and ``join(f, ε) -> y``."""

    def split(self, y: torch.Tensor, *, layer: str = "") -> tuple[torch.Tensor, torch.Tensor]: ...

    def join(self, f: torch.Tensor, err: torch.Tensor) -> torch.Tensor: ...
