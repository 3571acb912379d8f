"""ResNet-18 fixtures shared by the `NAME@K` call-site tests: its `layer1.0.relu` runs twice per forward pass.

Random weights (5 classes) and three 3×32×32 inputs; module-scoped, so the tests must leave the model untouched
(they check that). Imported by the test modules that use them: `from resnet_fixtures import resnet, x`.
"""

import pytest
import torch
import torchvision


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=5).eval()


@pytest.fixture(scope="module")
def x():
    return torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
