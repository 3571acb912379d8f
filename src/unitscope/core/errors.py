"""The one error type of unitscope: a ``ValueError`` that carries its context.

>>> raise UnitscopeError("unknown layer 'feature.3'", layer="feature.3",
...                      hint="did you mean 'features.3'?")
Traceback (most recent call last):
...
unitscope.core.errors.UnitscopeError: unknown layer 'feature.3' (layer='feature.3'); did you mean 'features.3'?
"""

from __future__ import annotations

__all__ = ["UnitscopeError", "CompletenessWarning"]


class UnitscopeError(ValueError):
    """A user mistake, explained: the message names the layer, the shapes, what would work.

    Every public function raises it for a mistake it can name (an unknown layer, score or method, inputs whose
    shapes do not fit, ...). It is a ``ValueError``, so ``except ValueError`` catches it too.

    Parameters
    ----------
    message : str
        What is wrong.
    hint : str or None, default None
        What would work instead (``"did you mean 'features.3'?"``); appended after ``"; "``.
    **context
        The values the mistake is about (``layer=``, ``shape=``, ...): kept in ``error.context`` and shown in the
        message as ``(layer='feature.3', ...)``.

    Examples
    --------
    >>> import torch, torch.nn as nn, unitscope as us
    >>> net = nn.Sequential(nn.Linear(2, 3), nn.ReLU())
    >>> try:
    ...     us.activation(net, torch.ones(1, 2), ["2"])
    ... except us.UnitscopeError as e:
    ...     print(type(e).__name__, isinstance(e, ValueError))
    UnitscopeError True
    >>> e = UnitscopeError("unknown layer 'feature.3'", layer="feature.3", hint="did you mean 'features.3'?")
    >>> str(e)
    "unknown layer 'feature.3' (layer='feature.3'); did you mean 'features.3'?"
    >>> e.context, e.hint
    ({'layer': 'feature.3'}, "did you mean 'features.3'?")
    """

    def __init__(self, message: str, *, hint: str | None = None, **context):
        self.context = context
        self.hint = hint
        text = message
        if context:
            text += " (" + ", ".join(f"{k}={v!r}" for k, v in context.items()) + ")"
        if hint:
            text += "; " + hint
        super().__init__(text)


class CompletenessWarning(UserWarning):
    """Scores whose completeness gap is larger than the threshold the caller set.

    Issued (not raised) by :func:`unitscope.conductance`, :func:`unitscope.attribute` and
    :func:`unitscope.neuron_conductance` for a layer that is not ok (its per-unit error estimates above the tolerance,
    or a cut of the network whose units do not add up to ``F(x) − F(x')``), or whose completeness gap exceeds
    ``PathConfig.gap_warning`` of ``|F(x) − F(x')|``; the message names the layer and the example, and says what to
    try. ``PathConfig(gap_warning=None)`` turns it off; ``warnings.simplefilter("error", CompletenessWarning)`` makes
    it an exception.

    Examples
    --------
    >>> import warnings, torch, torch.nn as nn, unitscope as us
    >>> torch.manual_seed(0) and None
    >>> net = nn.Sequential(nn.Linear(3, 16), nn.Tanh(), nn.Linear(16, 1))
    >>> with warnings.catch_warnings(record=True) as caught:          # two path points: too few for this layer
    ...     warnings.simplefilter("always", us.CompletenessWarning)
    ...     s = us.conductance(net, 10 * torch.randn(2, 3), ["0"], target=0, n_steps=2, method="riemann_left")
    >>> [w.category.__name__ for w in caught if w.category is us.CompletenessWarning], s.ok
    (['CompletenessWarning'], {'0': False})
    """
