"""Figures are written atomically and decode as images."""

import numpy as np
import torch
from PIL import Image

from unitscope.report.figures import attribution_overlay, pixel_pictures, save_figure, scaled_pixels


def test_scaled_pixels_follow_positive_attribution():
    image = np.full((4, 4, 3), 200, np.uint8)
    attr = torch.zeros(3, 4, 4)
    attr[:, 0, 0] = 1.0
    attr[:, 3, 3] = -1.0
    out = scaled_pixels(image, attr, quantile=1.0)
    assert out[0, 0].min() > 0.7 and out[3, 3].max() == 0 and out[1, 1].max() == 0


def test_figures_save_as_decodable_png(tmp_path):
    image = (np.random.default_rng(0).random((16, 16, 3)) * 255).astype(np.uint8)
    a = save_figure(attribution_overlay(image, torch.randn(3, 16, 16), title="t"), tmp_path / "a.png")
    b = save_figure(pixel_pictures(image, torch.randn(3, 3, 16, 16), ["x", "y", "z"]), tmp_path / "sub" / "b.png")
    for path in (a, b):
        with Image.open(path) as im:
            im.verify()
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a.png", "b.png", "sub"]
