"""The papers' evaluations, as functions that return pandas DataFrames.

>>> from unitscope import studies
>>> sorted(n for n in studies.__all__)[:2]
['ablation_agreement', 'feature_selection']
"""

from .agreement import ablation_agreement, flip_counts, summarize_agreement, summarize_flips
from .selection import feature_selection

__all__ = ["ablation_agreement", "feature_selection", "flip_counts", "summarize_agreement", "summarize_flips"]
