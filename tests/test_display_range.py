"""Pictures of normalized images show the pixels the user gave: the atlas page undoes ``--mean``/``--std`` per
channel (``Inputs.display_range``)."""

import numpy as np
import torch

from unitscope.report.atlas_html import _to_rgb


def test_a_per_channel_range_undoes_the_normalization_exactly():
    g = torch.Generator().manual_seed(0)
    pixels = torch.rand(3, 5, 6, generator=g)
    mean, std = torch.tensor([0.5, 0.4, 0.3]), torch.tensor([0.2, 0.25, 0.3])
    x = (pixels - mean.view(3, 1, 1)) / std.view(3, 1, 1)
    lo, hi = (-mean / std).tolist(), ((1 - mean) / std).tolist()
    shown = _to_rgb(x, (lo, hi)).astype(int)
    want = (pixels.permute(1, 2, 0).numpy() * 255).astype(int)
    assert np.abs(shown - want).max() <= 1  # uint8 rounding only
    # one range for all channels (the old way) distorts the colours of the same picture
    one = _to_rgb(x, (min(lo), max(hi))).astype(int)
    assert np.abs(one - want).max() > 20


def test_a_scalar_range_and_a_picture_outside_it_as_before():
    t = torch.tensor([[[0.0, 0.5], [1.0, 0.25]]])
    assert _to_rgb(t, (0.0, 1.0))[..., 0].tolist() == [[0, 127], [255, 63]]
    assert _to_rgb(t * 4 - 1, (0.0, 1.0))[..., 0].tolist() == [[0, 127], [255, 63]]  # outside: its own min–max
