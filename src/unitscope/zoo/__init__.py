"""Ready-made models and inputs: a pretrained EfficientNet-Lite0 and bundled real photos.

>>> from unitscope.zoo import photos
>>> list(photos())
['cat', 'coffee', 'astronaut', 'rocket', 'china', 'flower']
"""

from .efficientnet import efficientnet_lite0
from .photos import photos

__all__ = ["efficientnet_lite0", "photos"]
