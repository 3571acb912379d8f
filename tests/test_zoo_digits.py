"""Digits data and models: real data, fixed split, trained weights cached by recipe."""

import pytest
import torch

from unitscope.zoo import digits_cnn, digits_data
from unitscope.zoo.cache import cached_state, recipe_key


def test_split_is_fixed_and_stratified():
    train, test = digits_data()
    assert len(train) + len(test) == 1797 and len(test) == 360
    assert train.x.min() >= 0 and train.x.max() <= 1
    again, _ = digits_data()
    assert torch.equal(train.y, again.y)
    counts = torch.bincount(test.y, minlength=10)
    assert counts.min() >= 35


def test_digits_cnn_is_accurate_and_cached():
    first = digits_cnn()
    assert first.info["test_accuracy"] > 0.95
    second = digits_cnn()
    assert second.cached
    for a, b in zip(first.model.state_dict().values(), second.model.state_dict().values()):
        assert torch.equal(a, b)
    _, test = digits_data()
    with torch.no_grad():
        acc = (second.model(test.x).argmax(1) == test.y).float().mean()
    assert abs(float(acc) - first.info["test_accuracy"]) < 1e-6


def test_cache_trains_once_per_recipe(tmp_path, monkeypatch):
    monkeypatch.setenv("UNITSCOPE_CACHE", str(tmp_path))
    calls = []

    def train():
        calls.append(1)
        return {"w": torch.ones(2)}, {"acc": 1.0}

    s1, _, c1 = cached_state("toy", {"a": 1}, train)
    s2, _, c2 = cached_state("toy", {"a": 1}, train)
    _, _, c3 = cached_state("toy", {"a": 2}, train)
    assert (c1, c2, c3) == (False, True, False) and len(calls) == 2
    assert torch.equal(s1["w"], s2["w"])
    assert recipe_key({"a": 1}) != recipe_key({"a": 2})
    # a corrupt entry is retrained, not fatal
    path = next(tmp_path.glob("toy-*.pt"))
    path.write_bytes(b"garbage")
    with pytest.warns(RuntimeWarning, match="training it again"):
        cached_state("toy", {"a": 1} if recipe_key({"a": 1}) in path.name else {"a": 2}, train)
    assert len(calls) == 3
