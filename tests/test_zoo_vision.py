"""The vision zoo: EfficientNet-Lite0 with its shipped weights, and the bundled photos."""

import numpy as np
import pytest
import torch
from PIL import Image

from unitscope.zoo import efficientnet_lite0, photos
from unitscope.zoo.efficientnet import rename_lukemelas_keys, weights_path


@pytest.fixture(scope="module")
def net():
    return efficientnet_lite0()


@pytest.fixture(scope="module")
def probs(net):
    ph = photos(["cat", "coffee"])
    x = torch.stack([net.preprocess(img) for img in ph.values()])
    with torch.no_grad():
        return dict(zip(ph, net.model(x).softmax(-1)))


def test_renaming_covers_every_key(net):
    source = torch.load(weights_path(), map_location="cpu", weights_only=True)
    renamed = rename_lukemelas_keys(source)
    target = net.model.state_dict()
    assert len(renamed) == len(source) == len(target) == 296
    assert set(renamed) == set(target)
    assert all(renamed[k].shape == target[k].shape for k in target)
    assert torch.equal(target["blocks.6.0.conv_pwl.weight"], source["_blocks.15._project_conv.weight"])
    assert torch.equal(target["blocks.0.0.conv_pw.weight"], source["_blocks.0._project_conv.weight"])
    assert torch.equal(target["bn2.running_var"], source["_bn1.running_var"])


def test_model_is_eval_with_imagenet_names(net):
    assert not net.model.training
    assert len(net.class_names) == 1000
    assert net.class_names[0] == "tench, Tinca tinca"


def test_cat_is_tiger_cat(net, probs):
    p = probs["cat"]
    assert int(p.argmax()) == 282
    assert "tiger cat" in net.class_names[282]
    assert float(p[281:286].sum()) > 0.8  # tabby / tiger / Persian / Siamese / Egyptian cat


def test_coffee_is_espresso(net, probs):
    p = probs["coffee"]
    assert int(p.argmax()) == 967
    assert "espresso" in net.class_names[967]
    assert float(p[967]) > 0.5


def test_photos_are_uint8_rgb():
    ph = photos()
    assert list(ph) == ["cat", "coffee", "astronaut", "rocket", "china", "flower"]
    for img in ph.values():
        assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
    assert ph["cat"].shape == (300, 451, 3)
    assert not np.array_equal(ph["china"], ph["flower"])
    assert list(photos(["flower", "cat"])) == ["flower", "cat"]


def test_preprocess_shape_and_range(net):
    img = photos(["astronaut"])["astronaut"]
    for inp in (img, Image.fromarray(img)):
        x = net.preprocess(inp)
        assert x.shape == (3, 224, 224) and x.dtype == torch.float32
        assert float(x.min()) >= -1.0 and float(x.max()) <= 1.0
        assert float(x.min()) < -0.9 and float(x.max()) > 0.9
    assert torch.equal(net.preprocess(img), net.preprocess(Image.fromarray(img)))


def test_unknown_photo_name_errors():
    with pytest.raises(ValueError, match="valid names.*'cat'"):
        photos(["cat", "dog"])
