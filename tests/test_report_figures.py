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


def test_describe_counts_heatmaps_and_their_colour_bars(tmp_path):
    from unitscope.report.figures import describe, read_figure_info, subplots

    fig, axes = subplots(1, 3)
    axes[0].imshow(np.zeros((4, 4)), cmap="gray")  # a picture, not a heat-map
    a = axes[1].imshow(np.random.rand(4, 4), cmap="RdBu")  # keyed
    fig.colorbar(a, ax=axes[1])
    axes[2].imshow(np.random.rand(4, 4), cmap="viridis")  # not keyed
    axes[0].imshow(np.random.rand(4, 4, 3))  # RGB: a picture
    assert describe(fig)["heatmaps"] == 2 and describe(fig)["keyed"] == 1
    path = save_figure(fig, tmp_path / "f.png")
    assert read_figure_info(path) == {"title": "", "heatmaps": 2, "keyed": 1}


def test_no_heatmap_without_key_reaches_the_report_unflagged(tmp_path):
    from unitscope.report.figures import subplots
    from unitscope.report.html import build_report
    from unitscope.report.manifest import write_entry

    fig, ax = subplots()
    ax.imshow(np.random.rand(4, 4), cmap="RdBu")
    save_figure(fig, tmp_path / "s" / "h.png")
    write_entry(tmp_path / "s", title="S", description="d", figures=[("h.png", "a heat-map without its key")])
    text = build_report(tmp_path).read_text()
    assert 'data-heatmaps="1" data-colorbars="0"' in text and "1 heat-map(s) without a colour key" in text
