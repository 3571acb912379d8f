"""Figures of attributions that can be read: a signed diverging map over a grey copy of the image, its contrast set
by a high percentile of |attribution|, always with a colour bar.

Nothing here touches matplotlib's global state: figures are :class:`matplotlib.figure.Figure` objects drawn on
their own Agg canvas (no ``matplotlib.use``, no pyplot). :data:`plt` offers the three pyplot calls the studies use
(``subplots``, ``figure``, ``close``) on that basis. :func:`save_figure` writes a PNG atomically and records in it
(PNG text chunk ``unitscope``) its title and how many heat-maps it holds and how many of them have a colour key,
which the report turns into data attributes that its tests check.

>>> import numpy as np
>>> fig = attribution_overlay(np.zeros((8, 8, 3), np.uint8), np.random.default_rng(0).normal(size=(3, 8, 8)))
>>> describe(fig)["heatmaps"], describe(fig)["keyed"]
(1, 1)
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import QuadMesh
from matplotlib.figure import Figure
from matplotlib.image import AxesImage

from ..attribution.results import SIGN_COLOURS
from ..core.files import atomic_write

__all__ = [
    "aggregate",
    "scaled_pixels",
    "attribution_overlay",
    "overlay",
    "pixel_pictures",
    "save_figure",
    "describe",
    "plt",
    "new_figure",
    "subplots",
    "importance_bars",
    "DIVERGING",
    "SIGN_COLOURS",
]

DIVERGING = "RdBu_r"  # red +, white 0, blue − (the package's one sign convention, as SIGN_COLOURS for bars)
PICTURE_MAPS = {"gray", "gray_r", "Greys", "Greys_r", "binary", "binary_r", "bone", "bone_r"}  # not heat-maps
PERCENTILE = 99.0


# ------------------------------------------------------------------------------------------ figures --
def new_figure(figsize=None, **kw) -> Figure:
    """A figure on its own Agg canvas (pyplot and the global backend are not involved)."""
    fig = Figure(figsize=figsize, **kw)
    FigureCanvasAgg(fig)
    return fig


def subplots(nrows: int = 1, ncols: int = 1, *, figsize=None, squeeze: bool = True, sharex=False, sharey=False, **kw):
    """``(figure, axes)`` like ``pyplot.subplots``, without pyplot."""
    fig_kw = {k: kw.pop(k) for k in ("dpi", "layout", "constrained_layout") if k in kw}
    fig = new_figure(figsize=figsize, **fig_kw)
    return fig, fig.subplots(nrows, ncols, squeeze=squeeze, sharex=sharex, sharey=sharey, **kw)


class _Pyplotless:
    """The pyplot calls the studies make, on figures of their own (``from unitscope.report.figures import plt``)."""

    subplots = staticmethod(subplots)
    figure = staticmethod(new_figure)

    @staticmethod
    def close(fig=None) -> None:
        """Nothing to do: these figures are not registered with pyplot; dropping the reference frees them."""


plt = _Pyplotless()


# --------------------------------------------------------------------------------------------- data --
def aggregate(attribution) -> np.ndarray:
    """``[C, H, W]`` (or ``[H, W]``) attribution → ``[H, W]``: summed over colour channels."""
    a = attribution.detach().cpu().float().numpy() if torch.is_tensor(attribution) else np.asarray(attribution)
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


def _resize(a: np.ndarray, shape) -> np.ndarray:
    if a.shape == tuple(shape):
        return a
    t = torch.as_tensor(np.ascontiguousarray(a), dtype=torch.float32)[None, None]
    return torch.nn.functional.interpolate(t, size=tuple(shape), mode="bilinear", align_corners=False)[0, 0].numpy()


def _limit(a: np.ndarray, percentile: float = PERCENTILE) -> float:
    """The contrast: the ``percentile``-th percentile of |a| (the largest |a| if that is 0; 1 for all-zero)."""
    m = np.abs(a[np.isfinite(a)]) if a.size else np.zeros(1)
    lim = float(np.percentile(m, percentile)) if m.size else 0.0
    return lim or float(m.max(initial=0.0)) or 1.0


def scaled_pixels(image, attribution, *, positive_only: bool = True, quantile: float = 0.99) -> np.ndarray:
    """The photo with each pixel scaled by its (positive) attribution, normalised at a high quantile."""
    im = _as_image(image)
    a = aggregate(attribution)
    a = np.clip(a, 0, None) if positive_only else np.abs(a)
    scale = np.quantile(a, quantile) if a.max() > 0 else 1.0
    w = _resize(np.clip(a / max(scale, 1e-12), 0, 1), im.shape[:2])
    return im * w[..., None]


def _grey(image) -> np.ndarray:
    """A light grey copy of the image (luminance compressed into [0.35, 0.95]) for a signed map to sit on."""
    im = _as_image(image)
    lum = im @ np.array([0.299, 0.587, 0.114])
    return 0.35 + 0.6 * lum


# ------------------------------------------------------------------------------------------ drawing --
def overlay(ax, image, attribution, *, lim: float | None = None, percentile: float = PERCENTILE, norm=None):
    """Draw the signed attribution (``DIVERGING``: red +, blue −) over a grey copy of ``image`` on ``ax``; small
    |attribution| is transparent. Returns ``(image artist, limit)``: colours saturate at ±limit (default: the
    ``percentile``-th percentile of |attribution|). Panels meant to share one colour bar pass one ``norm``."""
    from matplotlib.colors import Normalize

    grey = _grey(image)
    a = _resize(aggregate(attribution).astype(np.float64), grey.shape)
    if norm is not None:
        lim = max(abs(norm.vmin), abs(norm.vmax))
    lim = _limit(a, percentile) if lim is None else float(lim) or 1.0
    norm = norm if norm is not None else Normalize(-lim, lim)
    alpha = np.clip(np.abs(a) / lim, 0, 1) ** 0.6
    ax.imshow(grey, cmap="gray", vmin=0, vmax=1)
    art = ax.imshow(a, cmap=DIVERGING, norm=norm, alpha=alpha * 0.9)
    ax.set_xticks([])
    ax.set_yticks([])
    return art, lim


def _colorbar(fig, art, axes, label: str, **kw):
    cb = fig.colorbar(art, ax=axes, shrink=kw.pop("shrink", 0.8), **kw)
    cb.set_label(label, fontsize=8)
    cb.ax.tick_params(labelsize=7)
    return cb


def attribution_overlay(image, attribution, *, title: str | None = None, percentile: float = PERCENTILE):
    """Two panels: the input, and its signed attribution over a grey copy (red +, blue −) with a colour bar.

    ``image``: an ``H×W×3`` (or ``H×W``) array, ``uint8`` in 0…255 or float in [0, 1], or a ``[C, H, W]`` tensor in
    [0, 1] (a tensor with values below 0 is read as [−1, 1]); ``attribution``: ``[C, H, W]`` or ``[H, W]`` (summed
    over ``C``), resized to the image."""
    fig, axes = subplots(1, 2, figsize=(6.4, 3.2), layout="constrained")
    axes[0].imshow(_as_image(image))
    axes[0].set_title("input", fontsize=9)
    axes[0].axis("off")
    art, lim = overlay(axes[1], image, attribution, percentile=percentile)
    axes[1].set_title(f"signed attribution (±{lim:.3g} = {percentile:g}th pct)", fontsize=9)
    _colorbar(fig, art, axes[1], "attribution (red +, blue −)")
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def pixel_pictures(
    image, attributions, labels, *, cols: int = 5, title: str | None = None, percentile: float = PERCENTILE
):
    """A grid: the input, then one panel per unit (``attributions``: ``[U, C, H, W]``, e.g. one example's
    ``unitscope.neuron_conductance(...)[i]``; ``labels``: one title per unit) with its signed attribution (red +,
    blue −) over a grey copy of the input. ``image`` is one input as :func:`attribution_overlay` takes it (an
    ``H×W×3`` array, ``uint8`` or float in [0, 1], or a ``[C, H, W]`` tensor). Each panel's contrast is its own
    ``percentile``-th percentile of |attribution| (printed in its title as ±scale), so weak units stay visible; the
    one colour bar reads in those units."""
    u = len(attributions)
    cols = max(1, min(cols, u))
    rows = (u + cols - 1) // cols + 1
    fig, axes = subplots(rows, cols, figsize=(2.3 * cols + 0.8, 2.45 * rows), squeeze=False, layout="constrained")
    for ax in axes.flat:
        ax.axis("off")
    axes[0, 0].imshow(_as_image(image))
    axes[0, 0].set_title("input", fontsize=9)
    from matplotlib.colors import Normalize

    art, shared = None, Normalize(-1.0, 1.0)
    for k in range(u):
        ax = axes[1 + k // cols, k % cols]
        a = aggregate(attributions[k]).astype(np.float64)
        lim = _limit(a, percentile)
        art, _ = overlay(ax, image, a / lim, norm=shared)
        ax.axis("on")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"{labels[k]}\n(±1 = {lim:.2g})", fontsize=8)
    if art is not None:
        _colorbar(fig, art, axes[1:, :].ravel().tolist(), "attribution ÷ the panel's scale (red +, blue −)", shrink=0.6)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def importance_bars(frame, layer: str, *, top: int = 20):
    """The mean score of the ``top`` channels (by mean |score| over the inputs) of one layer, one panel per score,
    each bar with its error bar (± the mean of the inputs' ``error`` column: a bound on the error of the mean;
    none for scores without one). ``frame``: a :meth:`unitscope.Scores.to_frame` table (``score``, ``layer``,
    ``example``, ``channel``, ``value`` and, where estimated, ``error``) with one row per example × channel (sum a
    per-unit table over each channel first). Positive bars red, negative blue. Returns the figure.

    >>> import pandas as pd
    >>> frame = pd.DataFrame({"score": "conductance", "layer": "fc", "example": [0, 0, 1, 1], "channel": [0, 1, 0, 1],
    ...                       "value": [1.0, -3.0, 3.0, -1.0], "error": [0.1, 0.2, 0.3, 0.0]})
    >>> fig = importance_bars(frame, "fc")
    >>> [t.get_text() for t in fig.axes[0].get_xticklabels()], describe(fig)["title"]
    (['0', '1'], 'fc: top 20 channels')
    """
    from ..attribution.results import bar_chart

    sub = frame[frame["layer"] == layer]
    scores = list(dict.fromkeys(sub["score"]))
    fig, axes = subplots(1, len(scores), figsize=(3.4 * len(scores), 3.2), squeeze=False)
    for ax, m in zip(axes[0], scores):
        rows = sub[sub["score"] == m]
        mean = rows.groupby("channel")["value"].mean()
        err = rows.groupby("channel")["error"].mean() if "error" in rows else mean * float("nan")
        best = mean.abs().sort_values(ascending=False).index[:top]
        bar_chart(
            mean.loc[best].tolist(),
            err.loc[best].tolist(),
            [str(c) for c in best],
            ax=ax,
            title=m,
            xlabel="channel",
            ylabel="mean score over inputs" if ax is axes[0][0] else "",
        )
    fig.suptitle(f"{layer}: top {top} channels", fontsize=9)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------------------- checking --
def describe(fig) -> dict:
    """``{"title", "heatmaps", "keyed"}``: the figure's title and how many heat-maps (images or meshes drawn with a
    colour map other than a grey one) it holds, and how many of them have a colour bar (their own, or one shared
    through the same norm)."""
    maps, keyed_norms = [], set()
    for ax in fig.axes:
        if hasattr(ax, "_colorbar"):
            continue
        for art in list(ax.images) + [c for c in ax.collections if isinstance(c, QuadMesh)]:
            if isinstance(art, AxesImage) and np.ndim(art.get_array()) != 2:
                continue  # an RGB(A) picture
            if art.get_cmap().name in PICTURE_MAPS:
                continue
            maps.append(art)
            if art.colorbar is not None:
                keyed_norms.add(id(art.norm))
    keyed = sum(1 for a in maps if a.colorbar is not None or id(a.norm) in keyed_norms)
    title = fig._suptitle.get_text() if getattr(fig, "_suptitle", None) is not None else ""
    if not title:
        title = next((ax.get_title() for ax in fig.axes if ax.get_title()), "")
    return {"title": title, "heatmaps": len(maps), "keyed": keyed}


def save_figure(fig, path, *, dpi: int = 110) -> str:
    """Save atomically as PNG (written beside, then renamed), with :func:`describe` in its ``unitscope`` text
    chunk; returns the path."""
    path = os.fspath(path)
    folder = os.path.dirname(path) or "."
    os.makedirs(folder, exist_ok=True)
    if fig.canvas is None or not hasattr(fig.canvas, "print_png"):
        FigureCanvasAgg(fig)
    info = describe(fig)
    try:
        atomic_write(
            path,
            lambda f: fig.savefig(
                f,
                dpi=dpi,
                bbox_inches="tight",
                format="png",
                metadata={"Title": info["title"], "unitscope": json.dumps(info)},
            ),
        )
    finally:
        pyplot = sys.modules.get("matplotlib.pyplot")  # a figure made with pyplot elsewhere: release it there
        if pyplot is not None:
            pyplot.close(fig)  # a no-op for the figures made here
    return path


def read_figure_info(path) -> dict | None:
    """What :func:`save_figure` recorded in a PNG (None for other images)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            text = getattr(im, "text", None) or im.info
            raw = text.get("unitscope")
    except (OSError, ValueError):
        return None
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return None
