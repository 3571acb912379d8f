"""Ready-made models and inputs: digits models trained on real data (cached), a pretrained
EfficientNet-Lite0 and bundled real photos.

>>> from unitscope.zoo import photos
>>> list(photos())
['cat', 'coffee', 'astronaut', 'rocket', 'china', 'flower']
"""

from .digits import DigitsCNN, DigitsMLP, digits_cnn, digits_data, digits_mlp, digits_vgg
from .efficientnet import efficientnet_lite0
from .photos import photos

__all__ = [
    "DigitsCNN",
    "DigitsMLP",
    "digits_cnn",
    "digits_data",
    "digits_mlp",
    "digits_vgg",
    "efficientnet_lite0",
    "photos",
]
