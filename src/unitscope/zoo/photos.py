"""Real photos bundled with scikit-image and scikit-learn, as HxWx3 uint8 arrays.

>>> {k: v.shape for k, v in photos(["cat", "china"]).items()}
{'cat': (300, 451, 3), 'china': (427, 640, 3)}
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from ..core.errors import UnitscopeError

__all__ = ["PHOTO_NAMES", "photos"]

PHOTO_NAMES = ("cat", "coffee", "astronaut", "rocket", "china", "flower")
_SKIMAGE = {"cat": "chelsea", "coffee": "coffee", "astronaut": "astronaut", "rocket": "rocket"}


def _sklearn_photo(name: str) -> np.ndarray:
    from sklearn.datasets import load_sample_image

    return load_sample_image(f"{name}.jpg")  # china.jpg / flower.jpg


def photos(names=None) -> "OrderedDict[str, np.ndarray]":
    """``photos()["cat"]`` is Chelsea the tabby; ``names`` picks a subset, in the order given."""
    names = list(PHOTO_NAMES if names is None else ([names] if isinstance(names, str) else names))
    unknown = [n for n in names if n not in PHOTO_NAMES]
    if unknown:
        raise UnitscopeError(f"unknown photo name(s) {unknown}", hint=f"valid names: {list(PHOTO_NAMES)}")
    out = OrderedDict()
    for name in names:
        if name in _SKIMAGE:
            import skimage.data

            image = getattr(skimage.data, _SKIMAGE[name])()
        else:
            image = _sklearn_photo(name)
        out[name] = np.ascontiguousarray(image[..., :3], dtype=np.uint8)
    return out
