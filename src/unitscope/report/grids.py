"""One image-grid helper: pictures in rows and columns, a title over each, labels beside the rows, notes in place
of pictures.

>>> import torch
>>> fig = image_grid(torch.rand(5, 1, 4, 4), [str(i) for i in range(5)], cols=3, title="five")
>>> len([ax for ax in fig.axes if ax.images])
5

Used by ``unitscope visualize`` / ``inverse-set`` (synthetic images), the scan's top-example grids
(:func:`unitscope.report.scan_figures.top_grid`) and the studies' sample and AM/IAM grids. Draws on a figure of its
own (no pyplot, no ``matplotlib.use``); :func:`unitscope.report.figures.save_figure` writes it.
"""

from __future__ import annotations

import numpy as np
import torch

from .figures import new_figure

__all__ = ["image_grid", "to_picture"]


def to_picture(image, value_range=None) -> np.ndarray:
    """``[C, H, W]`` / ``[H, W]`` tensor or array in ``value_range`` → ``[H, W]`` or ``[H, W, 3]`` floats in [0, 1];
    ``value_range=None``: ``(-1, 1)`` if the picture has negative values, else ``(0, 1)``."""
    t = (
        image.detach().cpu().float()
        if torch.is_tensor(image)
        else torch.as_tensor(np.asarray(image), dtype=torch.float32)
    )
    if value_range is None:
        value_range = (-1.0, 1.0) if float(t.min()) < 0 else (0.0, 1.0)
    lo, hi = value_range
    t = ((t - lo) / (hi - lo)).clamp(0, 1)
    if t.dim() == 3 and t.shape[0] in (1, 3):
        t = t.permute(1, 2, 0)
    arr = t.numpy()
    return arr[..., 0] if arr.ndim == 3 and arr.shape[2] == 1 else arr


def image_grid(
    images,
    titles=None,
    *,
    cols: int = 8,
    title: str | None = None,
    value_range=(0.0, 1.0),
    row_labels=None,
    row_notes=None,
    cell_notes=None,
    cmap: str = "gray",
    cell=(1.6, 1.75),
    fontsize: float = 7,
    label_rotation: float = 90,
):
    """A figure: ``images`` (a sequence of ``[C, H, W]`` pictures; ``None`` leaves a cell empty) left to right in
    rows of ``cols``; ``titles[i]`` over picture ``i``; ``row_labels[r]`` beside row ``r``; ``row_notes[r]``: a text
    across row ``r`` instead of its pictures; ``cell_notes[i]``: a text in cell ``i`` instead of a picture. Grey
    pictures use ``cmap`` (``gray_r`` shows light strokes on a dark ground dark on white)."""
    images = list(images)
    row_notes, cell_notes = dict(row_notes or {}), dict(cell_notes or {})
    n = len(images)
    cols = max(1, min(cols, n)) if n else 1
    rows = max(1, (n + cols - 1) // cols)
    fig = new_figure(figsize=(cell[0] * cols + (1.0 if row_labels else 0), cell[1] * rows + 0.6), layout="constrained")
    axes = np.atleast_2d(fig.subplots(rows, cols, squeeze=False))
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        for side in ax.spines.values():
            side.set_visible(False)
    for r in range(rows):
        if row_labels is not None and r < len(row_labels):
            axes[r, 0].set_ylabel(
                row_labels[r],
                fontsize=fontsize + 1,
                rotation=label_rotation,
                ha="right" if label_rotation == 0 else "center",
                va="center",
            )
        if r in row_notes:
            for ax in axes[r]:
                ax.patch.set_visible(False)  # the note runs across the row's axes
            note = axes[r, 0].text(
                0.05,
                0.5,
                row_notes[r],
                fontsize=fontsize + 1,
                transform=axes[r, 0].transAxes,
                va="center",
                color="0.35",
            )
            note.set_in_layout(False)  # it spans the row; the columns keep their width
    for i, im in enumerate(images):
        ax = axes[i // cols, i % cols]
        if (i // cols) in row_notes:
            continue
        if i in cell_notes:
            ax.text(
                0.5,
                0.5,
                cell_notes[i],
                transform=ax.transAxes,
                ha="center",
                va="center",
                fontsize=fontsize,
                color="0.5",
            )
            continue
        if im is None:
            continue
        pic = to_picture(im, value_range)
        ax.imshow(pic, cmap=cmap if pic.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
        if titles is not None and i < len(titles) and titles[i]:
            ax.set_title(titles[i], fontsize=fontsize)
    if title:
        fig.suptitle(title, fontsize=fontsize + 2)
    return fig
