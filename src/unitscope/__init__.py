"""unitscope — which hidden units of a PyTorch model matter, and what they respond to.

>>> import unitscope as us
>>> sorted(us.__all__)[:3]
['CompletenessWarning', 'Scores', 'UnitscopeError']
"""

from .errors import CompletenessWarning, UnitscopeError
from .neuron import neuron_conductance
from .results import Scores
from .scores import activation, attribute, conductance, grad_x_activation, internal_influence
from .sites import layer_names

__version__ = "0.1.0"

__all__ = [
    "CompletenessWarning",
    "Scores",
    "UnitscopeError",
    "activation",
    "attribute",
    "conductance",
    "grad_x_activation",
    "internal_influence",
    "layer_names",
    "neuron_conductance",
]
