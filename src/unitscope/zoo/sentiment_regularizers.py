"""Training aids of the sentiment CNN's recipes (:data:`unitscope.zoo.sentiment.RECIPES`) that leave the paper's
architecture as it is: dropout on the input embeddings while training, and averaged weights.

* **word dropout** (Iyyer et al. 2015; Gal & Ghahramani 2016's dropout of whole words): each token's embedding is
  replaced, with probability ``p``, by the zero vector — the padding's embedding and the attribution baseline — so
  the word is gone for that step (no rescaling: the filters take a max over time);
* **embedding dropout**: ordinary (inverted) dropout on the entries of the embeddings;
* **weight averaging**: an exponential moving average of the weights after every optimiser step (Polyak &
  Juditsky 1992; :class:`torch.optim.swa_utils.AveragedModel` with
  :func:`~torch.optim.swa_utils.get_ema_multi_avg_fn`), or the mean of the checkpoints at the ends of the last
  ``k`` epochs (as in SWA, Izmailov et al. 2018). The averaged weights are what the dev accuracy (early stopping)
  sees and what is kept.

>>> emb = torch.ones(2, 5, 3)
>>> out = input_dropout(emb, word=0.5, g=torch.Generator().manual_seed(0))
>>> sorted({float(v) for v in out.sum(-1).flatten()})  # whole tokens dropped, the others untouched
[0.0, 3.0]
>>> input_dropout(emb, g=torch.Generator()) is emb  # nothing asked: the embeddings themselves
True
>>> avg = LastEpochs(2)
>>> for w in (1.0, 2.0, 4.0):
...     avg.add({"w": torch.tensor([w])})
>>> avg.state()["w"].tolist()  # the mean of the last two epochs' weights
[3.0]
"""

from __future__ import annotations

import copy
from collections import deque

import torch
import torch.nn as nn

from ..core.errors import UnitscopeError

__all__ = ["input_dropout", "LastEpochs", "WeightAverage"]


def input_dropout(emb: torch.Tensor, *, word: float = 0.0, embed: float = 0.0, g: torch.Generator) -> torch.Tensor:
    """Embeddings ``[N, T, dim]`` with each token's vector zeroed with probability ``word`` (drawn from ``g``), then
    inverted dropout ``embed`` on the entries (drawn from ``g`` too). Padding stays zero either way."""
    for name, p in (("word", word), ("embed", embed)):
        if not 0.0 <= p < 1.0:
            raise UnitscopeError(f"{name} dropout is a probability in [0, 1)", value=p)
    if word:
        keep = torch.rand(emb.shape[:2], generator=g) >= word
        emb = emb * keep.unsqueeze(-1).to(emb.dtype)
    if embed:
        keep = torch.rand(emb.shape, generator=g) >= embed
        emb = emb * keep.to(emb.dtype) / (1.0 - embed)
    return emb


class LastEpochs:
    """The mean of the last ``k`` epochs' checkpoints (``add`` one per epoch, ``state`` the mean of those held)."""

    def __init__(self, k: int):
        if k < 1:
            raise UnitscopeError("the number of epochs averaged is at least 1", value=k)
        self.states = deque(maxlen=k)

    def add(self, state: dict) -> None:
        self.states.append({n: v.detach().clone() for n, v in state.items()})

    def state(self) -> dict:
        return {
            n: torch.stack([s[n] for s in self.states]).mean(0) if s0.is_floating_point() else s0
            for n, s0 in self.states[-1].items()
        }


class WeightAverage:
    """What a recipe evaluates and keeps: the trained model itself, its EMA (``ema``: the decay per step) or the
    mean of its last ``last_epochs`` epoch-end checkpoints. ``step`` after each optimiser step, ``epoch`` at each
    epoch's end; ``model()`` is the network to evaluate (a copy when averaging; the training model untouched)."""

    def __init__(self, model: nn.Module, *, ema: float | None = None, last_epochs: int | None = None):
        if ema is not None and last_epochs is not None:
            raise UnitscopeError("a recipe averages its weights one way: ema or last_epochs, not both")
        if ema is not None and not 0.0 < ema < 1.0:
            raise UnitscopeError("the EMA decay is in (0, 1)", value=ema)
        self.trained, self.ema, self.last = model, None, None
        if ema is not None:
            from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

            self.ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(ema), use_buffers=True)
        elif last_epochs is not None:
            self.last, self.copy = LastEpochs(last_epochs), copy.deepcopy(model)

    @property
    def averaging(self) -> bool:
        return self.ema is not None or self.last is not None

    def step(self) -> None:
        if self.ema is not None:
            self.ema.update_parameters(self.trained)

    def epoch(self) -> None:
        if self.last is not None:
            self.last.add(self.trained.state_dict())
            self.copy.load_state_dict(self.last.state())

    def model(self) -> nn.Module:
        if self.ema is not None:
            return self.ema.module
        return self.copy if self.last is not None else self.trained
