"""``Atlas.plot(layer, unit)``: one unit's card as a matplotlib figure (histogram, exemplars, IAM), made without
pyplot, so the process's matplotlib backend and rcParams stay as they were."""

import matplotlib
import torch
import torch.nn as nn

import unitscope as us


def test_a_units_card_as_a_figure_leaves_matplotlib_alone():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 2, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 2)).eval()
    x = torch.rand(8, 3, 6, 6, generator=torch.Generator().manual_seed(1))
    a = us.atlas(
        net,
        x,
        layers=["1"],
        top_k=3,
        path=us.PathConfig(n_steps=4),
        synthesis=us.SynthesisConfig(iam_steps=2, inverse_steps=2, inverse_samples=1),
        progress=False,
    )
    backend, rc = matplotlib.get_backend(), dict(matplotlib.rcParams)
    fig = a.plot("1", 1)
    assert matplotlib.get_backend() == backend and dict(matplotlib.rcParams) == rc
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[0] == "layer '1', unit 1: activation over the data" and titles[-1] == "IAM"
    shown = [e for e in a.unit("1", 1)["exemplars"] if e["by"] == "activation"]
    assert len(fig.axes) == 1 + len(shown) + 1
    assert all(f"#{e['index']}:" in t for e, t in zip(shown, titles[1:]))
