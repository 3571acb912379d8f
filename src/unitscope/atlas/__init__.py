"""The unit atlas: for every unit of the layers you name, whether it matters and what it responds to (data only).

>>> import torch, torch.nn as nn, unitscope as us
>>> torch.manual_seed(0) and None
>>> net = nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 36, 2))
>>> x, y = torch.rand(12, 1, 8, 8), torch.arange(12) % 2
>>> a = us.atlas(net, (x, y), ["1"], top_k=2, path=us.PathConfig(n_steps=4),
...              synthesis=us.SynthesisConfig(iam_steps=4, inverse_samples=2, inverse_steps=4), progress=False)
>>> len(a.units), sorted(a.units[0])[:4], len(a.units[0]["exemplars"])
(3, ['class_means', 'dead', 'exemplars', 'faithfulness'], 4)

One streaming pass over the data (:func:`unitscope.data.scan.scan`, so it resumes from a ``StreamConfig``'s
``checkpoint`` and runs under ``torchrun``) keeps per unit: mean conductance (target: each example's top class, or
``target="label"``), per-class means of activation and conductance, the top ``top_k`` examples by activation and by
conductance, the share of examples where the unit is among the ``share_k`` most conductant of its layer, and an exact
streaming histogram of its activation (:class:`unitscope.data.histograms.Histograms`). Then, in chunks of
``path.unit_batch_size`` units (split over the processes; every generated input seeded by its layer, unit and kind, so
results do not depend on the chunk size or on the number of processes): the per-input conductance of every exemplar
through its unit (``neuron_conductance``, ``paired``), the IAM image and its RS (``independent_am``), inverse-set
samples in activation bands from the histogram (:func:`unitscope.synthesis.inverse_many.sample_inverse_sets`, through
the synthesis's ``generator`` or the FFT parameterization) — every model call with the same number of rows
(:data:`unitscope.atlas.work.BLOCK`, ``SYNTH_BLOCK``), so that the CPU kernels round alike —, and a faithfulness check
of every synthetic input against the exemplars: its activation, the unit's rank in its layer on it, and the cosine of
its layer activation vector to the exemplars' mean one. An input farther from that vector (``1 − cos``) than any of the
unit's held-out natural exemplars (those chosen by conductance and not among the activation exemplars the mean is made
of; without any, twice the farthest activation exemplar) is flagged ``atypical``: it drives the unit through a pattern
the data does not.

A unit follows the layer's default unit specification (:mod:`unitscope.core.units`), as the scan does: a conv
``[N, C, H, W]`` channel, a ``[N, D]`` neuron, a token-major ``[N, T, D]`` layer's ``D`` neurons over the tokens the
attention mask keeps. Units whose activation is 0 on every example are marked ``dead`` and get no synthetic inputs.
"""

import inspect
import sys
import types

from .build import BANDS, PAGE_WRITERS, Atlas, SynthesisConfig, atlas

__all__ = ["Atlas", "atlas", "SynthesisConfig", "BANDS", "PAGE_WRITERS"]


class _AtlasModule(types.ModuleType):
    """``unitscope.atlas`` is this package, and calling it calls :func:`atlas` (``us.atlas(model, data, layers)``):
    ``import unitscope.atlas`` gives the package, while ``us.atlas`` stays the function people call."""

    def __call__(self, *args, **kwargs):
        return atlas(*args, **kwargs)


sys.modules[__name__].__class__ = _AtlasModule
__signature__ = inspect.signature(atlas)
