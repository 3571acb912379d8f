"""Figures, the results-folder manifest and the HTML report, for people who would rather look than read.

>>> import numpy as np, torch
>>> from unitscope.report import attribution_overlay
>>> fig = attribution_overlay(np.zeros((8, 8, 3), np.uint8), torch.randn(3, 8, 8), title="demo")
>>> len(fig.axes)   # input, overlay, colour bar
3

Importing this package leaves matplotlib's backend alone (figures are drawn on their own Agg canvas).
"""

from .figures import attribution_overlay, pixel_pictures, save_figure
from .manifest import write_entry

__all__ = ["attribution_overlay", "pixel_pictures", "save_figure", "write_entry"]
