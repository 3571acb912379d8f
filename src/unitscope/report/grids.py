"""One image-grid helper: pictures in rows and columns, a title under each, optional row labels.

>>> import torch
>>> fig = image_grid(torch.rand(5, 1, 4, 4), [str(i) for i in range(5)], cols=3, title="five")
>>> len([ax for ax in fig.axes if ax.images])
5

Used by ``unitscope visualize`` / ``inverse-set`` (synthetic images), the scan's top-example grids
(:func:`unitscope.report.scan_figures.top_grid`) and the studies. Draws on a figure of its own (no pyplot, no
``matplotlib.use``); :func:`unitscope.report.figures.save_figure` writes it.
"""

from __future__ import annotations

import numpy as np
import torch

from .figures import new_figure

__all__ = ["image_grid", "to_picture"]


def to_picture(image, value_range=(0.0, 1.0)) -> np.ndarray:
    """``[C, H, W]`` / ``[H, W]`` tensor or array in ``value_range`` → ``[H, W]`` or ``[H, W, 3]`` floats in [0, 1]."""
    t = image.detach().cpu().float() if torch.is_tensor(image) else torch.as_tensor(np.asarray(image), dtype=torch.float32)
    lo, hi = value_range
    t = ((t - lo) / (hi - lo)).clamp(0, 1)
    if t.dim() == 3 and t.shape[0] in (1, 3):
        t = t.permute(1, 2, 0)
    arr = t.numpy()
    return arr[..., 0] if arr.ndim == 3 and arr.shape[2] == 1 else arr


def image_grid(images, titles=None, *, cols: int = 8, title: str | None = None, value_range=(0.0, 1.0),
               row_labels=None, cmap: str = "gray", cell=(1.6, 1.75), fontsize: float = 7, footer: str | None = None):
    """A figure: ``images`` (a sequence of ``[C, H, W]`` pictures; ``None`` leaves a cell empty) left to right in
    rows of ``cols``, ``titles[i]`` over picture ``i``, ``row_labels[r]`` beside row ``r``; grey pictures use
    ``cmap`` (e.g. ``gray_r`` for light strokes on a dark ground shown dark on white)."""
    images = list(images)
    n = len(images)
    cols = max(1, min(cols, n)) if n else 1
    rows = max(1, (n + cols - 1) // cols)
    fig = new_figure(figsize=(cell[0] * cols + (0.8 if row_labels else 0), cell[1] * rows + 0.4))
    axes = np.atleast_2d(fig.subplots(rows, cols, squeeze=False))
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_frame_on(False)
    for i, im in enumerate(images):
        ax = axes[i // cols, i % cols]
        if row_labels is not None and i % cols == 0 and i // cols < len(row_labels):
            ax.set_ylabel(row_labels[i // cols], fontsize=fontsize + 1)
        if im is None:
            continue
        pic = to_picture(im, value_range)
        ax.imshow(pic, cmap=cmap if pic.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
        if titles is not None and i < len(titles) and titles[i]:
            ax.set_title(titles[i], fontsize=fontsize)
    if title:
        fig.suptitle(title, fontsize=fontsize + 2)
    if footer:
        fig.text(0.5, 0.005, footer, ha="center", fontsize=fontsize, color="0.3")
    fig.tight_layout(rect=(0, 0.03 if footer else 0, 1, 1))
    return fig
