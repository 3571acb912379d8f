"""``hf:FOLDER`` of a Hugging Face image classifier (a tiny random-weight ViT saved with ``save_pretrained``, its image
processor beside it): every command prepares images with that processor, and the neurons of a ViT layer are the
units (not its tokens). Without a processor, ``--image-size`` and the config's size prepare them."""

import json

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")

LAYER = "vit.layers.1"


@pytest.fixture(scope="module")
def vit(tmp_path_factory):
    from PIL import Image

    d = tmp_path_factory.mktemp("hfimg")
    torch.manual_seed(0)
    cfg = transformers.ViTConfig(
        image_size=32,
        patch_size=8,
        num_channels=3,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        num_labels=3,
    )
    model = transformers.ViTForImageClassification(cfg)
    model.save_pretrained(d / "vit")
    transformers.ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(d / "vit")
    model.save_pretrained(d / "bare")  # no image processor
    rng = np.random.default_rng(0)
    for c in ("cats", "dogs"):
        (d / "imgs" / c).mkdir(parents=True)
        for i in range(2):
            Image.fromarray((rng.random((40, 48, 3)) * 255).astype("uint8")).save(d / "imgs" / c / f"{i}.png")
    return d


def test_the_folder_is_an_image_model_with_its_processor(vit):
    from unitscope.loading import check_model, load_model

    assert check_model(f"hf:{vit / 'vit'}").modality == "images"
    loaded = load_model(f"hf:{vit / 'vit'}")
    assert loaded.image_shape == (3, 32, 32) and loaded.extra.get("own_transform")
    from PIL import Image

    x = loaded.prepare_image(Image.new("RGB", (40, 48), (255, 0, 0)))
    assert x.shape == (3, 32, 32) and float(x[0].mean()) == pytest.approx(1.0)  # the processor's [−1, 1] scale


def test_importance_and_atlas_of_a_vit_over_class_folders(vit, tmp_path, capsys):
    from unitscope.cli import main

    assert (
        main(
            [
                "importance",
                f"hf:{vit / 'vit'}",
                str(vit / "imgs"),
                "--layers",
                LAYER,
                "--n-steps",
                "8",
                "--out",
                str(tmp_path / "imp"),
            ]
        )
        == 0
    )
    summary = json.loads((tmp_path / "imp" / "importance.json").read_text())
    assert summary["inputs"] == 4 and summary["max_completeness_gap"][LAYER] < 0.05
    assert (
        main(
            [
                "atlas",
                f"hf:{vit / 'vit'}",
                str(vit / "imgs"),
                "--layers",
                LAYER,
                "--quick",
                "--no-synthetic",
                "--out",
                str(tmp_path / "atlas"),
            ]
        )
        == 0
    )
    atlas = json.loads((tmp_path / "atlas" / "atlas.json").read_text())
    assert atlas["layers"] == [LAYER]
    assert sorted(c["unit"] for c in atlas["units"]) == list(range(16))  # the layer's 16 neurons, not its 17 tokens
    assert (tmp_path / "atlas" / "index.html").is_file()


def test_without_a_processor_the_config_size_prepares_the_images(vit, tmp_path):
    from unitscope.cli import main

    assert (
        main(
            [
                "importance",
                f"hf:{vit / 'bare'}",
                str(vit / "imgs"),
                "--layers",
                LAYER,
                "--n-steps",
                "8",
                "--out",
                str(tmp_path / "imp"),
            ]
        )
        == 0
    )
    assert json.loads((tmp_path / "imp" / "importance.json").read_text())["inputs"] == 4


TV_FACTORY = """
import types, torch, torchvision

def make():
    torch.manual_seed(0)
    weights = torchvision.models.ResNet18_Weights.DEFAULT      # its transforms() only: nothing is downloaded
    model = torchvision.models.resnet18(weights=None, num_classes=3).eval()
    return types.SimpleNamespace(model=model, transform=weights.transforms())
"""


def test_a_factory_with_torchvision_weights_transforms_prepares_the_images(vit, tmp_path, monkeypatch):
    pytest.importorskip("torchvision")
    from unitscope.cli import main

    (tmp_path / "tv_nets.py").write_text(TV_FACTORY)
    monkeypatch.syspath_prepend(str(tmp_path))
    from unitscope.loading import load_model

    loaded = load_model("tv_nets:make")
    from PIL import Image

    x = loaded.prepare_image(Image.new("RGB", (300, 260), (255, 255, 255)))
    assert x.shape == (3, 224, 224) and loaded.extra.get("own_transform")  # resized, cropped and normalized
    assert float(x[0].mean()) == pytest.approx((1 - 0.485) / 0.229, rel=1e-3)
    assert (
        main(
            [
                "importance",
                "tv_nets:make",
                str(vit / "imgs"),
                "--layers",
                "layer4",
                "--n-steps",
                "4",
                "--out",
                str(tmp_path / "imp"),
            ]
        )
        == 0
    )
