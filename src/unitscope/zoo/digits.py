"""The real handwritten digits of scikit-learn (1,797 8×8 images) and small models trained on them.

>>> from unitscope.zoo import digits_data
>>> train, test = digits_data()
>>> train.x.shape[1:], int(train.y.max()), len(train) + len(test)
(torch.Size([1, 8, 8]), 9, 1797)
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn

from .cache import cached_state

__all__ = ["DigitsSplit", "digits_data", "digits_cnn", "DigitsCNN", "Trained"]


@dataclass
class DigitsSplit:
    x: torch.Tensor  # [N, 1, 8, 8] in [0, 1]
    y: torch.Tensor  # [N] int64

    def __len__(self):
        return len(self.y)


@dataclass
class Trained:
    model: nn.Module
    info: dict          # accuracy and the recipe's numbers
    cached: bool        # loaded from the user cache (no training this time)


def digits_data(test_size: float = 0.2, seed: int = 0) -> tuple[DigitsSplit, DigitsSplit]:
    """A fixed stratified train/test split of ``sklearn.datasets.load_digits``, pixels scaled to [0, 1]."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = torch.tensor(d.images / 16.0, dtype=torch.float32).unsqueeze(1)
    y = torch.tensor(d.target, dtype=torch.long)
    tr, te = train_test_split(np.arange(len(y)), test_size=test_size, random_state=seed, stratify=d.target)
    return DigitsSplit(x[tr], y[tr]), DigitsSplit(x[te], y[te])


class DigitsCNN(nn.Module):
    """Conv 64, 64, 128, 128 (3×3, stride 1, padding 1) with ReLUs and two 2×2 max-pools, then FC 128 and 10."""

    def __init__(self, widths=(64, 64, 128, 128), hidden: int = 128):
        super().__init__()
        c1, c2, c3, c4 = widths
        self.features = nn.Sequential(OrderedDict([
            ("conv1", nn.Conv2d(1, c1, 3, padding=1)), ("relu1", nn.ReLU()),
            ("conv2", nn.Conv2d(c1, c2, 3, padding=1)), ("relu2", nn.ReLU()), ("pool1", nn.MaxPool2d(2)),
            ("conv3", nn.Conv2d(c2, c3, 3, padding=1)), ("relu3", nn.ReLU()),
            ("conv4", nn.Conv2d(c3, c4, 3, padding=1)), ("relu4", nn.ReLU()), ("pool2", nn.MaxPool2d(2)),
        ]))
        self.classifier = nn.Sequential(OrderedDict([
            ("flatten", nn.Flatten()), ("fc1", nn.Linear(c4 * 4, hidden)), ("relu", nn.ReLU()),
            ("fc2", nn.Linear(hidden, 10)),
        ]))

    def forward(self, x):
        return self.classifier(self.features(x))


def train_classifier(model: nn.Module, train: DigitsSplit, test: DigitsSplit, *, epochs: int, lr: float,
                     batch_size: int, seed: int, weight_decay: float = 0.0, progress: bool | None = None) -> dict:
    """Adam with a fixed seed; returns the test accuracy. Shared by every digits model of the zoo."""
    from tqdm.auto import tqdm

    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    model.train()
    for _ in tqdm(range(epochs), desc=f"training {type(model).__name__} on digits", unit="epoch",
                  disable=True if progress is False else None, leave=False):
        order = torch.randperm(len(train), generator=g)
        for i in range(0, len(train), batch_size):
            idx = order[i:i + batch_size]
            loss = nn.functional.cross_entropy(model(train.x[idx]), train.y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    for p in model.parameters():
        p.grad = None
    with torch.no_grad():
        acc = float((model(test.x).argmax(1) == test.y).float().mean())
    return {"test_accuracy": acc}


def digits_cnn(*, epochs: int = 30, seed: int = 0, progress: bool | None = None) -> Trained:
    """The digits CNN, trained on the real digits (≈30 s on 2 CPU cores the first time, then cached).

    Layers: ``features.conv1`` … ``features.relu4``, ``classifier.fc1``, ``classifier.fc2``.
    """
    recipe = dict(model="DigitsCNN", widths=(64, 64, 128, 128), hidden=128, epochs=epochs, lr=2e-3,
                  batch_size=64, seed=seed, split="stratified-0.2-seed0", version=1)

    def train():
        torch.manual_seed(seed)
        model = DigitsCNN()
        tr, te = digits_data()
        info = train_classifier(model, tr, te, epochs=epochs, lr=recipe["lr"], batch_size=recipe["batch_size"],
                                seed=seed, progress=progress)
        return model.state_dict(), info

    state, info, cached = cached_state("digits-cnn", recipe, train)
    model = DigitsCNN()
    model.load_state_dict(state)
    return Trained(model.eval(), info, cached)
