"""A dictionary spliced into a model as explicit modules, for Captum to attribute to: ``Split`` gives the features
and the error node as two separate outputs (the error computed on its own, so neither output depends on the other),
``Join`` adds them back into the layer. Shared by tests/test_dictionary.py and bench/features.py
(``from splice import Join, Split, spliced``)."""

import copy

import torch.nn as nn


class Split(nn.Module):
    """``y → (encode(y), y − decode(encode(y)))``."""

    def __init__(self, d):
        super().__init__()
        self.d = d

    def forward(self, y):
        return self.d.encode(y), y - self.d.decode(self.d.encode(y))


class Join(nn.Module):
    """``(f, ε) → decode(f) + ε``."""

    def __init__(self, d):
        super().__init__()
        self.d = d

    def forward(self, parts):
        return self.d.decode(parts[0]) + parts[1]


class Spliced(nn.Module):
    """A layer followed by Split → Join of its dictionary (``layer`` may take several arguments)."""

    def __init__(self, layer, d):
        super().__init__()
        self.layer, self.split, self.join = layer, Split(d), Join(d)

    def forward(self, *args, **kwargs):
        return self.join(self.split(self.layer(*args, **kwargs)))


def spliced(model, dictionaries):
    """A copy of ``model`` in which each layer of ``dictionaries`` is followed by Split → Join of its dictionary."""
    out = copy.deepcopy(model)
    for name, d in dictionaries.items():
        parent_name, _, child = name.rpartition(".")
        parent = out.get_submodule(parent_name)
        setattr(parent, child, Spliced(getattr(parent, child), d))
    return out
