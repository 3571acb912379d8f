"""Figures (matplotlib) for people who would rather look than read.

>>> import numpy as np, torch
>>> from unitscope.report import attribution_overlay
>>> fig = attribution_overlay(np.zeros((8, 8, 3), np.uint8), torch.randn(3, 8, 8), title="demo")
>>> len(fig.axes)
2
"""

from .figures import attribution_overlay, pixel_pictures, save_figure

__all__ = ["attribution_overlay", "pixel_pictures", "save_figure"]
