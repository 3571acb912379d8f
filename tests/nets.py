"""Small networks for the tests: hand-set weights with closed-form answers, and random ones of several kinds."""

import torch
import torch.nn as nn


def linear(weight, bias=0.0):
    layer = nn.Linear(len(weight[0]), len(weight))
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(weight, dtype=torch.float32))
        layer.bias.fill_(bias)
    return layer


class Min1(nn.Module):
    def forward(self, y):
        return torch.clamp(y, max=1.0)


class Identity(nn.Module):
    def forward(self, y):
        return y


def saturation_net():
    """The paper's saturation example: y = 2x, z = min(y, 1); F = z."""
    return nn.Sequential(linear([[2.0]]), Min1())


def sign_net():
    """The paper's sign example: y = f(x) = −x, F = g(y) = y."""
    return nn.Sequential(linear([[-1.0]]), Identity())


class TwoFeatures(nn.Module):
    """Units y1 = f1(x) = relu(x1 + 2 x2), y2 = f2(x) = tanh(3 x1 − x2); output [y1, y2]."""

    def __init__(self):
        super().__init__()
        self.pre = linear([[1.0, 2.0], [3.0, -1.0]])
        self.units = nn.Identity()

    def forward(self, x):
        z = self.pre(x)
        return self.units(torch.stack([torch.relu(z[:, 0]), torch.tanh(z[:, 1])], 1))


class Residual(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1)
        self.bn = nn.BatchNorm2d(c)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x):
        return torch.relu(x + self.conv2(self.relu(self.bn(self.conv1(x)))))


class SplitPair(nn.Module):
    """A layer whose output is a tuple of two tensors."""

    def forward(self, x):
        c = x.shape[1] // 2
        return x[:, :c] * 1.5, torch.tanh(x[:, c:])


class TupleNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(6, 8)
        self.split = SplitPair()
        self.fc2 = nn.Linear(8, 3)

    def forward(self, x):
        a, b = self.split(torch.relu(self.fc1(x)))
        return self.fc2(torch.cat([a, b], 1))


class TwoInputs(nn.Module):
    """Tuple inputs and an extra forward argument (a per-example scale)."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(4, 6)
        self.b = nn.Linear(3, 6)
        self.mix = nn.ReLU()
        self.head = nn.Linear(6, 3)

    def forward(self, x1, x2, scale):
        return self.head(self.mix(self.a(x1) + self.b(x2))) * scale.view(-1, 1)


def mlp(seed=0, act=nn.ReLU):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 16), act(), nn.Linear(16, 12), act(), nn.Linear(12, 4)).eval()


def cnn(seed=0):
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 12, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(12, 12, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(12, 5),
    )
    with torch.no_grad():  # non-trivial BatchNorm statistics
        net[1].running_mean.uniform_(-0.2, 0.2)
        net[1].running_var.uniform_(0.5, 2.0)
    return net.eval()


def resnet(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), Residual(8), Residual(8), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4)
    ).eval()
