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

__all__ = [
    "DigitsSplit",
    "digits_data",
    "digits_cnn",
    "digits_vgg",
    "digits_mlp",
    "digits_shallow_cnn",
    "DigitsCNN",
    "DigitsMLP",
    "Trained",
]


@dataclass
class DigitsSplit:
    x: torch.Tensor  # [N, 1, 8, 8] in [0, 1]
    y: torch.Tensor  # [N] int64

    def __len__(self):
        return len(self.y)


@dataclass
class Trained:
    model: nn.Module
    info: dict  # accuracy and the recipe's numbers
    cached: bool  # loaded from the user cache (no training this time)


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
    """3×3 convolutions (stride 1, padding 1) with ReLUs, 2×2 max-pools after the layers in ``pool_after``,
    then FC ``hidden`` and FC 10. The default is the shallow CNN (conv 64, 64, 128, 128); layers are named
    ``features.conv1``, ``features.relu1``, …, ``classifier.fc1``, ``classifier.relu``, ``classifier.fc2``."""

    def __init__(self, widths=(64, 64, 128, 128), hidden: int = 128, pool_after=(2, 4)):
        super().__init__()
        layers, c_in, size = [], 1, 8
        for i, c in enumerate(widths, start=1):
            layers += [(f"conv{i}", nn.Conv2d(c_in, c, 3, padding=1)), (f"relu{i}", nn.ReLU())]
            if i in pool_after:
                layers.append((f"pool{pool_after.index(i) + 1}", nn.MaxPool2d(2)))
                size //= 2
            c_in = c
        self.features = nn.Sequential(OrderedDict(layers))
        self.classifier = nn.Sequential(
            OrderedDict(
                [
                    ("flatten", nn.Flatten()),
                    ("fc1", nn.Linear(c_in * size * size, hidden)),
                    ("relu", nn.ReLU()),
                    ("fc2", nn.Linear(hidden, 10)),
                ]
            )
        )

    def forward(self, x):
        return self.classifier(self.features(x))


VGG_WIDTHS = (32, 32, 64, 64, 128, 128, 128, 128)


class DigitsMLP(nn.Module):
    """Fully connected: 64 pixels → hidden widths (ReLU after each, named ``fc1``/``relu1`` …) → 10."""

    def __init__(self, widths=(128, 512, 2048, 2048)):
        super().__init__()
        layers, d = [("flatten", nn.Flatten())], 64
        for i, w in enumerate(widths, start=1):
            layers += [(f"fc{i}", nn.Linear(d, w)), (f"relu{i}", nn.ReLU())]
            d = w
        layers.append((f"fc{len(widths) + 1}", nn.Linear(d, 10)))
        self.layers = nn.Sequential(OrderedDict(layers))

    def forward(self, x):
        return self.layers(x)


def train_classifier(
    model: nn.Module,
    train: DigitsSplit,
    test: DigitsSplit,
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    seed: int,
    weight_decay: float = 0.0,
    progress: bool | None = None,
    name: str | None = None,
) -> dict:
    """Adam with a fixed seed; returns the test accuracy. Shared by every digits model of the zoo; ``name`` (the zoo
    name, e.g. ``"digits-vgg"``) labels the bar."""
    from ..core.progress import bar

    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    model.train()
    for _ in bar(
        range(epochs),
        desc=f"training the {name or type(model).__name__} model on digits",
        unit="epoch",
        progress=progress,
    ):
        order = torch.randperm(len(train), generator=g)
        for i in range(0, len(train), batch_size):
            idx = order[i : i + batch_size]
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


def _trained(name: str, arch: dict, *, epochs: int, seed: int, progress, cls=None, threads: int | None = 1) -> Trained:
    cls = cls or DigitsCNN
    recipe = dict(
        model=name, **arch, epochs=epochs, lr=2e-3, batch_size=64, seed=seed, split="stratified-0.2-seed0", version=1
    )

    def train():
        from ..core.progress import note
        from .cache import cache_dir

        if progress is not False:
            note(f"training the {name} model once ({epochs} epochs), then cached in {cache_dir()}")
        torch.manual_seed(seed)
        model = cls(**arch)
        tr, te = digits_data()
        info = train_classifier(
            model,
            tr,
            te,
            epochs=epochs,
            lr=recipe["lr"],
            batch_size=recipe["batch_size"],
            seed=seed,
            progress=progress,
            name=name,
        )
        return model.state_dict(), info

    state, info, cached = cached_state(name, recipe, train, threads=threads)
    with torch.random.fork_rng(devices=[]):  # the initial weights (replaced below) must not draw on the global RNG
        model = cls(**arch)
    model.load_state_dict(state)
    return Trained(model.eval(), info, cached)


def digits_cnn(*, epochs: int = 30, seed: int = 0, threads: int | None = 1, progress: bool | None = None) -> Trained:
    """The shallow digits CNN (conv 64, 64, 128, 128), trained on the real digits (about 20 s the first time, then
    loaded from the user cache). Every zoo trainer takes ``threads`` (default 1; None: torch's current count): the
    training runs on that many threads with deterministic kernels, so the same ``seed`` and ``threads`` give the
    same weights bit for bit; both are part of the cache key (:mod:`unitscope.zoo.cache`)."""
    return _trained(
        "digits-cnn",
        dict(widths=(64, 64, 128, 128), hidden=128, pool_after=(2, 4)),
        epochs=epochs,
        seed=seed,
        progress=progress,
        threads=threads,
    )


def digits_vgg(*, epochs: int = 40, seed: int = 0, threads: int | None = 1, progress: bool | None = None) -> Trained:
    """A deeper VGG-style digits CNN: 8 conv layers (32, 32, pool, 64, 64, pool, 128 × 4), FC 128, FC 10."""
    return _trained(
        "digits-vgg",
        dict(widths=VGG_WIDTHS, hidden=128, pool_after=(2, 4)),
        epochs=epochs,
        seed=seed,
        progress=progress,
        threads=threads,
    )


def digits_mlp(*, epochs: int = 30, seed: int = 0, threads: int | None = 1, progress: bool | None = None) -> Trained:
    """An MLP on the digits' 64 pixels: hidden 128, 512, 2048, 2048 (``layers.relu1`` … ``layers.relu4``)."""
    return _trained(
        "digits-mlp",
        dict(widths=(128, 512, 2048, 2048)),
        epochs=epochs,
        seed=seed,
        progress=progress,
        cls=DigitsMLP,
        threads=threads,
    )


def digits_shallow_cnn(
    *, epochs: int = 30, seed: int = 0, threads: int | None = 1, progress: bool | None = None
) -> Trained:
    """The Representative Substitution paper's shallow CNN exactly as its issue states it: conv 64, 64, 128, 128
    (3×3, stride 1, padding 1, ReLU, no pooling), then FC 128 and FC 10. ``digits_cnn`` has the same widths but
    max-pools after conv 2 and conv 4. Layers: ``features.relu1`` … ``features.relu4``, ``classifier.relu``."""
    return _trained(
        "digits-shallow-cnn",
        dict(widths=(64, 64, 128, 128), hidden=128, pool_after=()),
        epochs=epochs,
        seed=seed,
        progress=progress,
        threads=threads,
    )
