"""The hidden-pattern-on-the-path measure behind the sentiment study's agreement numbers (studies/sentiment_paths)."""

import pytest
import torch

from unitscope.studies.sentiment_paths import pattern_on_path
from unitscope.zoo.sentiment_model import SentimentCNN


def _net():
    torch.manual_seed(0)
    net = SentimentCNN(vocab_size=5, maps=4).eval()
    with torch.no_grad():
        for conv in net.filters.convs.values():
            conv.bias.zero_()
        net.fc.bias.zero_()
    return net


def test_without_biases_the_pattern_is_the_same_along_the_whole_path():
    # no biases: filters(α·emb) = α·filters(emb) and fc(α·f) = α·fc(f), so no hidden unit switches for α > 0
    net, emb = _net(), torch.randn(6, 14, 50)
    share, on = pattern_on_path(net, emb, n_points=10)
    assert torch.equal(share, torch.ones(6))
    with torch.no_grad():
        assert torch.equal(on, (net.fc(net.filters(emb)) > 0).sum(-1))


def test_a_bias_that_switches_a_unit_off_along_the_path_is_seen():
    net, emb = _net(), torch.randn(1, 14, 50)
    with torch.no_grad():
        h = net.fc(net.filters(emb))[0]
        off = int(torch.argmin(h))  # a unit that is off at x (h < 0) ...
        assert h[off] < 0
        net.fc.bias[off] = -0.45 * h[off]  # ... is on for α < 0.45 (α·h + b > 0): 4 of the 10 points (0.1 … 0.4)
    share, _ = pattern_on_path(net, emb, n_points=10)
    assert float(share[0]) == pytest.approx(0.6)
