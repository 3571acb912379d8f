"""How the atlas's per-unit work is cut into model calls changes no number: exemplar conductance with any number of
inputs per call and pairs per forward pass gives the same tensor, bit for bit, and each pair is neuron_conductance
of its unit on its input alone."""

import pytest
import torch
import torch.nn as nn

import unitscope as us
import unitscope.atlas.work as au


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 6, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(6, 6, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(6 * 36, 4),
    ).eval()


def _pairs():
    """Input 0 has 9 pairs (more than the smallest groups below), input 1 five, inputs 2–6 one each."""
    examples = [0] * 9 + [1] * 5 + [2, 3, 4, 5, 6]
    units = list(range(6)) + [0, 2, 5] + [1, 2, 3, 4, 5] + [0, 1, 2, 3, 4]
    return torch.tensor(examples), units


@pytest.mark.parametrize("rows, pairs_per_forward", [(6, 1), (12, 2), (30, 4), (10**6, 16)])
def test_exemplar_blocks_change_no_number(monkeypatch, rows, pairs_per_forward):
    torch.set_num_threads(1)
    net = _net()
    x = torch.rand(7, 1, 6, 6, generator=torch.Generator().manual_seed(3))
    examples, units = _pairs()
    kw = dict(target=None, n_steps=6, method="gausslegendre", baselines=None, rows=4096)
    monkeypatch.setattr(au, "EXEMPLAR_ROWS", 10**6)
    monkeypatch.setattr(au, "PAIRS_PER_FORWARD", 4)
    ref = au.exemplar_conductance(net, x, "3", examples, units, None, **kw)
    monkeypatch.setattr(au, "EXEMPLAR_ROWS", rows)
    monkeypatch.setattr(au, "PAIRS_PER_FORWARD", pairs_per_forward)
    got = au.exemplar_conductance(net, x, "3", examples, units, None, **kw)
    assert got.shape == (len(units), 1, 6, 6) and got.abs().sum() > 0
    assert torch.equal(got, ref)
    for p in (0, 8, 9, 13, 18):  # and each pair is its unit's per-input conductance on its input alone
        e, u = int(examples[p]), units[p]
        want = us.neuron_conductance(net, x[e : e + 1], "3", [u], n_steps=6, method="gausslegendre")[0, 0]
        torch.testing.assert_close(got[p], want, rtol=1e-5, atol=1e-7)
