"""``NAME@K`` in everything that reads a layer with a forward pass cut short (``Recorder(stop_when_done=True)``):
the inverse-set samplers, the layer encoder and the atlas. torchvision's ResNet-18 (random weights) calls each
block's ``relu`` twice: ``relu@0`` feeds ``conv2``, ``relu@1`` is the block's output. A plain name of it must be the
error that lists both calls, never a silent ``@0``."""

import pytest
import torch

import unitscope as us
from unitscope.atlas.work import layer_vectors
from unitscope.core.capture import Recorder
from unitscope.core.errors import UnitscopeError
from unitscope.core.sites import resolve
from unitscope.synthesis.generators import FFTImageGenerator, LayerEncoder
from unitscope.synthesis.inverse import SamplerConfig, sample_inverse_set
from unitscope.synthesis.inverse_many import sample_inverse_sets

from resnet_fixtures import resnet, x  # noqa: F401  (pytest fixtures)

pytestmark = pytest.mark.usefixtures("one_thread")
AMBIGUOUS = r"ran 2 times in one forward pass.*'layer1\.0\.relu@0', 'layer1\.0\.relu@1'"


def _state(model):
    return (
        {k: v.clone() for k, v in model.state_dict().items()},
        model.training,
        [p.requires_grad for p in model.parameters()],
        [p.grad for p in model.parameters()],
        sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules()),
    )


def _same(before, after):
    assert all(torch.equal(before[0][k], after[0][k]) for k in before[0])
    assert before[1:4] == after[1:4] and after[3] == [None] * len(after[3]) and before[4] == after[4] == 0


def _block_means(model, images):
    """``[n, 64]``: the block's output (= relu@1) and conv2's input (= relu@0), averaged over positions."""
    a = us.activation(model, images, layers=["layer1.0", "layer1.0.relu@0"])
    return a["layer1.0"].mean((2, 3)), a["layer1.0.relu@0"].mean((2, 3))


def test_a_stopped_recorder_honours_the_call_and_refuses_a_plain_shared_name(resnet, x):
    before = _state(resnet)
    for name, ref in (("layer1.0.relu@1", "layer1.0"), ("layer1.0.relu@0", "layer1.0.relu@0")):
        rec = Recorder(resolve(resnet, [name]), stop_when_done=True)
        with torch.no_grad(), rec.active():
            resnet(x)
        torch.testing.assert_close(rec.parts[name][0], us.activation(resnet, x, layers=[ref])[ref])
    with pytest.raises(UnitscopeError, match=AMBIGUOUS):
        with torch.no_grad(), Recorder(resolve(resnet, ["layer1.0.relu"]), stop_when_done=True).active():
            resnet(x)
    # a plain name of a module that runs once: the first pass runs to the end and finds so; later ones stop early
    fc_calls = []
    handle = resnet.fc.register_forward_hook(lambda *a: fc_calls.append(1))
    try:
        for _ in range(3):
            rec = Recorder(resolve(resnet, ["layer1.1.conv1"]), stop_when_done=True)
            with torch.no_grad(), rec.active():
                resnet(x)
            assert rec.parts["layer1.1.conv1"][0].shape == (3, 64, 8, 8)
    finally:
        handle.remove()
    assert len(fc_calls) <= 1  # 0 when an earlier test already saw it run once
    _same(before, _state(resnet))


def test_layer_encoder_and_atlas_vectors_read_their_call(resnet, x):
    before = _state(resnet)
    for fn in (lambda n: LayerEncoder(resnet, n)(x), lambda n: layer_vectors(resnet, n, x)):
        with pytest.raises(UnitscopeError, match=AMBIGUOUS):
            fn("layer1.0.relu")
    block, call0 = _block_means(resnet, x)
    torch.testing.assert_close(
        LayerEncoder(resnet, "layer1.0.relu@1")(x), us.activation(resnet, x, layers=["layer1.0"])["layer1.0"].flatten(1)
    )
    torch.testing.assert_close(layer_vectors(resnet, "layer1.0.relu@1", x), block, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(layer_vectors(resnet, "layer1.0.relu@0", x), call0, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(block, call0)
    _same(before, _state(resnet))


def test_inverse_set_samplers_read_their_call(resnet, x):
    before = _state(resnet)
    gen = FFTImageGenerator((3, 32, 32))
    with pytest.raises(UnitscopeError, match=AMBIGUOUS):
        sample_inverse_set(
            resnet,
            ("layer1.0.relu", 3, 0.0, float("inf")),
            gen,
            n_samples=2,
            n_seeds=2,
            sampler=SamplerConfig(max_seed_steps=2, max_sample_steps=2),
            progress=False,
        )
    with pytest.raises(UnitscopeError, match=AMBIGUOUS):
        sample_inverse_sets(
            resnet, "layer1.0.relu", [(3, 0.0, float("inf"))], gen, n_samples=2, max_steps=2, progress=False
        )
    # a band of call 1's unit 3 that random images mostly miss: the samplers must push towards it
    start = gen(gen.sample_codes(16, generator=torch.Generator().manual_seed(0)))
    v = _block_means(resnet, start)[0][:, 3]
    a = float(v.quantile(0.75))
    r = sample_inverse_set(
        resnet,
        ("layer1.0.relu@1", 3, a, float("inf")),
        gen,
        n_samples=4,
        n_seeds=2,
        sampler=SamplerConfig(max_seed_steps=6, max_sample_steps=3),
        progress=False,
    )
    (s,) = sample_inverse_sets(
        resnet, "layer1.0.relu@1", [(3, a, float("inf"))], gen, n_samples=2, max_steps=6, progress=False
    )
    for samples, acts in ((r.samples, r.activations[:, 0]), (s.samples, s.activations)):
        assert len(samples) > 0
        block, call0 = _block_means(resnet, samples)
        torch.testing.assert_close(acts, block[:, 3], rtol=1e-4, atol=1e-6)  # what they report is call 1's
        assert bool((block[:, 3] >= a).all())
        assert not torch.allclose(block[:, 3], call0[:, 3])
    _same(before, _state(resnet))


def test_atlas_of_a_call(resnet):
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(6, 3, 32, 32, generator=g), torch.randint(0, 5, (6,), generator=g)
    before = _state(resnet)
    kw = dict(
        top_k=2,
        path=us.PathConfig(method="gausslegendre", n_steps=4, unit_batch_size=2),
        synthesis=us.SynthesisConfig(iam_steps=2, inverse_samples=2, inverse_steps=2),
        units=2,
        progress=False,
    )
    with pytest.raises(UnitscopeError, match=AMBIGUOUS):
        us.atlas(resnet, (x, y), layers=["layer1.0.relu"], **kw)
    at = us.atlas(resnet, (x, y), layers=["layer1.0.relu@1"], **kw)
    block, _ = _block_means(resnet, x)
    iam_block, iam_call0 = _block_means(resnet, at.tensors["layer1.0.relu@1/iam"])
    assert len(at.units) == 2
    for row, card in enumerate(at.units):
        u = card["unit"]
        for e in card["exemplars"]:
            assert e["activation"] == pytest.approx(float(block[e["index"], u]), rel=1e-4, abs=1e-6)
        # the IAM image's activation is re-measured through the atlas's layer vectors: call 1's
        assert card["synthetic"]["iam"]["activation"] == pytest.approx(float(iam_block[row, u]), rel=1e-4, abs=1e-6)
        assert card["synthetic"]["iam"]["activation"] != pytest.approx(float(iam_call0[row, u]), rel=1e-3)
    _same(before, _state(resnet))
