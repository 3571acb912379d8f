"""unitscope — which hidden units of a PyTorch model matter, and what they respond to.

>>> import torch, unitscope as us
>>> s = us.conductance(torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.ReLU()), torch.ones(1, 2), ["1"], target=0)
>>> s.layers, bool(s.relative_delta("1").max() < 1e-3)
(['1'], True)

Importance (conductance and its comparators, all layers from one path pass), per-input conductance through units,
ablation, streaming dataset scans, class selectivity, activation maximization (AM / IAM) with Representative
Substitution, and inverse-set sampling. The papers' studies live in :mod:`unitscope.studies`, bundled models and
data in :mod:`unitscope.zoo`.
"""

from .data.ablation import ablate, ablation_scores
from . import atlas  # the package, and callable: us.atlas(model, data, layers) is unitscope.atlas.atlas
from .atlas import Atlas, SynthesisConfig
from .attribution.config import PathConfig
from .core.errors import CompletenessWarning, UnitscopeError
from .synthesis.inverse import SamplerConfig, sample_inverse_set
from .synthesis.maximize import activation_maximization, independent_am, maximize, representative_substitution
from .attribution.neuron import neuron_conductance
from .attribution.estimates import relative_unit_error
from .attribution.results import Scores
from .data.scan import ScanResult, scan
from .data.stream import StreamConfig
from .attribution.scores import activation, attribute, conductance, grad_x_activation, internal_influence
from .data.scan import class_selectivity
from .core.capture import layer_names
from .core.dictionary import Dictionary
from .synthesis import objectives
from .report import atlas_html as _atlas_page  # noqa: F401  (adds the writer of Atlas.save's page)

__version__ = "0.1.0"

__all__ = [
    "Atlas",
    "CompletenessWarning",
    "Dictionary",
    "PathConfig",
    "SamplerConfig",
    "ScanResult",
    "Scores",
    "StreamConfig",
    "SynthesisConfig",
    "relative_unit_error",
    "UnitscopeError",
    "ablate",
    "ablation_scores",
    "activation",
    "activation_maximization",
    "atlas",
    "attribute",
    "class_selectivity",
    "conductance",
    "grad_x_activation",
    "independent_am",
    "internal_influence",
    "layer_names",
    "maximize",
    "neuron_conductance",
    "objectives",
    "representative_substitution",
    "sample_inverse_set",
    "scan",
]
