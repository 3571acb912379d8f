"""The adaptive rule's bookkeeping is batched over examples: an example's numbers do not depend on the others in
its block (nor on how ``internal_batch_size`` cuts the batch into blocks) — the same nodes, evaluations and
diagnosis, and values equal to rounding (a different batch can change the model's own arithmetic)."""

import torch

from nets import TupleNet, cnn
from unitscope.attribution import adaptive
from unitscope.core.inputs import make_target, prepare
from unitscope.core.sites import resolve
from unitscope.core.state import analysis_mode

FIELDS = (
    "conductance",
    "influence",
    "conductance_error",
    "influence_error",
    "conductance_unit_error",
    "influence_unit_error",
    "value_at_x",
    "grad_at_x",
)


def _run(net, x, layers, target, **kw):
    sites, batch = resolve(net, layers), prepare(x, None, None, device="cpu")
    with analysis_mode(net), torch.enable_grad():
        return adaptive.integrate_adaptive(net, batch, make_target(target, batch.n), sites, progress=False, **kw)


def _same(together, alone, rows):
    """``alone`` computed on examples ``rows`` of ``together``'s batch."""
    assert torch.equal(together.n_evals[rows], alone.n_evals)
    for i, e in enumerate(rows):
        d, a = together.diagnosis[e], alone.diagnosis[i]
        assert d["converged"] == a["converged"]
        for key in ("alpha", "a", "b"):
            assert torch.equal(d[key], a[key]), (e, key)
        torch.testing.assert_close(d["score"], a["score"], rtol=1e-9, atol=1e-300)
    for field in FIELDS:
        for name, parts in getattr(together, field).items():
            for p, q in zip(parts, getattr(alone, field)[name]):
                torch.testing.assert_close(p[rows], q, rtol=1e-10, atol=1e-14)


def test_an_example_gets_the_same_nodes_and_numbers_alone_as_in_a_block():
    torch.manual_seed(0)
    net, x = cnn(3).double().eval(), torch.randn(5, 3, 8, 8, dtype=torch.float64)
    x[3] = 0.0  # the baseline itself: zero path, zero errors
    layers, kw = ["2", "6", "10"], dict(budget=40, rtol=1e-9, watch=4)
    together = _run(net, x, layers, 2, **kw)
    assert len(set(together.n_evals.tolist())) > 1 or not all(d["converged"] for d in together.diagnosis.values())
    assert len({d["a"].numel() for d in together.diagnosis.values()}) > 1  # examples end with different panels
    for e in range(5):
        _same(together, _run(net, x[e : e + 1], layers, 2, **kw), [e])
    blocks = _run(net, x, layers, 2, internal_batch_size=2 * 40, **kw)  # blocks of 2, 2 and 1 examples
    _same(together, blocks, list(range(5)))


def test_tuple_layers_and_per_example_targets_batch_alike():
    torch.manual_seed(1)
    net, x = TupleNet().double().eval(), torch.randn(6, 6, dtype=torch.float64)
    target = torch.tensor([0, 1, 2, 0, 1, 2])
    together = _run(net, x, ["split", "fc1"], target, budget=33, rtol=1e-8)
    for rows in ([0, 2, 4], [1, 3, 5]):
        _same(together, _run(net, x[rows], ["split", "fc1"], target[rows], budget=33, rtol=1e-8), rows)
