"""``NAME@K`` sites of a module called several times per forward pass in ablation and in AM/IAM: torchvision's
ResNet-18 (random weights) calls each block's ``relu`` twice — ``relu@0 = relu(bn1(conv1(x)))`` feeds ``conv2``,
``relu@1`` is the block's output. Ablating a call is checked against a hand-made hook at the place it feeds."""

import pytest
import torch

import unitscope as us
from unitscope.core.errors import UnitscopeError
from unitscope.data.ablation import ablate, ablation_scores, cumulative_ablation
from unitscope.synthesis.maximize import activation_maximization, independent_am

from resnet_fixtures import resnet, x  # noqa: F401  (pytest fixtures)


def _zero_block_output(model, channel):
    """relu@1 is the block's output: zero one of its channels there."""

    def hook(module, args, out):
        out = out.clone()
        out[:, channel] = 0
        return out

    return model.layer1[0].register_forward_hook(hook)


def _zero_conv2_input(model, channel):
    """relu@0 is what conv2 reads: zero one of its channels there."""

    def hook(module, args):
        z = args[0].clone()
        z[:, channel] = 0
        return (z,)

    return model.layer1[0].conv2.register_forward_pre_hook(hook)


def _reference(model, x, make, channel, target=0):
    handle = make(model, channel)
    try:
        with torch.no_grad():
            return model(x)[:, target]
    finally:
        handle.remove()


def _state(model):
    return (
        {k: v.clone() for k, v in model.state_dict().items()},
        model.training,
        sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules()),
    )


def test_ablation_scores_of_each_call_match_a_hook_where_that_call_feeds(resnet, x):
    before = _state(resnet)
    with torch.no_grad():
        full = resnet(x)[:, 0]
    s1 = ablation_scores(resnet, x, "layer1.0.relu@1", units=[3, 7], target=0)
    s0 = ablation_scores(resnet, x, "layer1.0.relu@0", units=[3, 7], target=0)
    assert s0.shape == s1.shape == (3, 2)
    for j, c in enumerate([3, 7]):
        torch.testing.assert_close(s1[:, j], full - _reference(resnet, x, _zero_block_output, c), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(s0[:, j], full - _reference(resnet, x, _zero_conv2_input, c), rtol=1e-4, atol=1e-5)
    assert not torch.allclose(s0, s1)  # two different places
    # every unit: [N, 64] (the channels of the call)
    assert ablation_scores(resnet, x[:1], "layer1.0.relu@1", target=0).shape == (1, 64)
    after = _state(resnet)
    assert all(torch.equal(before[0][k], after[0][k]) for k in before[0]) and before[1:] == after[1:]


def test_cumulative_ablation_and_the_ablate_block_honour_the_call(resnet, x):
    order = torch.tensor([[3, 7]] * 3)
    curve = cumulative_ablation(resnet, x, "layer1.0.relu@0", order, target=0)
    torch.testing.assert_close(curve[:, 0].float(), _reference(resnet, x, _zero_conv2_input, 3), rtol=1e-4, atol=1e-5)
    with torch.no_grad(), ablate(resnet, {"layer1.0.relu@1": [3]}):
        inside = resnet(x)[:, 0]
    torch.testing.assert_close(inside, _reference(resnet, x, _zero_block_output, 3))
    # both calls at once: each where it belongs
    with torch.no_grad(), ablate(resnet, {"layer1.0.relu@0": [3], "layer1.0.relu@1": [7]}):
        both = resnet(x)[:, 0]
    h0, h1 = _zero_conv2_input(resnet, 3), _zero_block_output(resnet, 7)
    try:
        with torch.no_grad():
            expected = resnet(x)[:, 0]
    finally:
        h0.remove()
        h1.remove()
    torch.testing.assert_close(both, expected)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in resnet.modules())


def test_a_plain_name_of_a_shared_module_or_a_call_that_never_runs_is_an_error(resnet, x):
    with pytest.raises(UnitscopeError, match=r"ran more than once.*layer1\.0\.relu@0"):
        ablation_scores(resnet, x, "layer1.0.relu", units=[0], target=0)
    with pytest.raises(UnitscopeError, match=r"ran more than once.*layer1\.0\.relu@0"):
        with torch.no_grad(), ablate(resnet, {"layer1.0.relu": [0]}):
            resnet(x)
    with pytest.raises(UnitscopeError, match=r"did not run.*ran 2 times: calls are @0 … @1"):
        ablation_scores(resnet, x, "layer1.0.relu@2", units=[0], target=0)
    with pytest.raises(UnitscopeError, match=r"ran 2 times.*layer1\.0\.relu@0"):
        independent_am(resnet, "layer1.0.relu", [0, 1], shape=(3, 32, 32), steps=1)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in resnet.modules())


@pytest.mark.parametrize("kind", [activation_maximization, independent_am])
def test_am_and_iam_read_the_call_they_name(resnet, kind):
    before = _state(resnet)
    r = kind(resnet, "layer1.0.relu@1", [3, 7], shape=(3, 32, 32), steps=3, augment=False)
    # the activations reported are those of call 1 (= the block's output), averaged over positions
    block = us.activation(resnet, r.images, layers=["layer1.0"])["layer1.0"].mean((2, 3))
    torch.testing.assert_close(r.activations, block, rtol=1e-5, atol=1e-6)
    call0 = us.activation(resnet, r.images, layers=["layer1.0.relu@0"])["layer1.0.relu@0"].mean((2, 3))
    assert not torch.allclose(r.activations, call0)
    # the objective re-measured on the final images is the one of call 1
    own = block[torch.arange(2), torch.tensor([3, 7])]
    if kind is activation_maximization:
        torch.testing.assert_close(r.objective, own, rtol=1e-5, atol=1e-6)
    else:
        others = (block.sum(1, keepdim=True) - block)[torch.arange(2), torch.tensor([3, 7])] / 63
        torch.testing.assert_close(r.objective, own - others, rtol=1e-4, atol=1e-5)
    after = _state(resnet)
    assert all(torch.equal(before[0][k], after[0][k]) for k in before[0]) and before[1:] == after[1:]
