"""Pixel-level pictures of an attribution, as in the conductance paper: the photo's pixels scaled by the
attribution aggregated over colour channels, and a signed heat-map."""

from __future__ import annotations

import os
import tempfile

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

__all__ = ["aggregate", "scaled_pixels", "attribution_overlay", "pixel_pictures", "save_figure"]


def aggregate(attribution) -> np.ndarray:
    """``[C, H, W]`` (or ``[H, W]``) attribution → ``[H, W]``: summed over colour channels."""
    a = attribution.detach().cpu().numpy() if torch.is_tensor(attribution) else np.asarray(attribution)
    return a.sum(0) if a.ndim == 3 else a


def _as_image(image) -> np.ndarray:
    """HxWx3 uint8, or a [C, H, W] tensor in [-1, 1] / [0, 1] → HxWx3 float in [0, 1]."""
    if torch.is_tensor(image):
        im = image.detach().cpu().float().numpy()
        if im.ndim == 3 and im.shape[0] in (1, 3):
            im = im.transpose(1, 2, 0)
        if im.min() < 0:
            im = (im + 1) / 2
    else:
        im = np.asarray(image, dtype=np.float32)
        if im.max() > 1.5:
            im = im / 255.0
    if im.ndim == 2:
        im = im[..., None]
    if im.shape[-1] == 1:
        im = np.repeat(im, 3, -1)
    return np.clip(im, 0, 1)


def scaled_pixels(image, attribution, *, positive_only: bool = True, quantile: float = 0.99) -> np.ndarray:
    """The photo with each pixel scaled by its (positive) attribution, normalised at a high quantile."""
    im = _as_image(image)
    a = aggregate(attribution)
    if positive_only:
        a = np.clip(a, 0, None)
    else:
        a = np.abs(a)
    scale = np.quantile(a, quantile) if a.max() > 0 else 1.0
    w = np.clip(a / max(scale, 1e-12), 0, 1)
    if w.shape != im.shape[:2]:  # attribution on the model's input, photo at another size
        w = torch.nn.functional.interpolate(torch.tensor(w)[None, None], size=im.shape[:2], mode="bilinear")[0, 0].numpy()
    return im * w[..., None]


def attribution_overlay(image, attribution, *, title: str | None = None):
    """A figure with two panels: pixels scaled by attribution, and the signed heat-map (red −, blue +)."""
    a = aggregate(attribution)
    lim = float(np.quantile(np.abs(a), 0.99)) or 1.0
    fig, axes = plt.subplots(1, 2, figsize=(6, 3.2))
    axes[0].imshow(scaled_pixels(image, attribution))
    axes[0].set_title("pixels × attribution", fontsize=9)
    axes[1].imshow(a, cmap="RdBu", vmin=-lim, vmax=lim)
    axes[1].set_title("signed attribution", fontsize=9)
    for ax in axes:
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def pixel_pictures(image, attributions, labels, *, cols: int = 5, title: str | None = None):
    """A grid: one scaled-pixels picture per unit (``attributions``: ``[U, C, H, W]``), labelled."""
    u = len(attributions)
    rows = (u + cols - 1) // cols + 1
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 2.3 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    axes[0, 0].imshow(_as_image(image))
    axes[0, 0].set_title("input", fontsize=8)
    for k in range(u):
        ax = axes[1 + k // cols, k % cols]
        ax.imshow(scaled_pixels(image, attributions[k]))
        ax.set_title(labels[k], fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def save_figure(fig, path, *, dpi: int = 110) -> str:
    """Save atomically as PNG (write beside, then rename) and close the figure."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or ".", suffix=".png")
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight")
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; a figure is meant to be shared
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.remove(tmp)
    return path
