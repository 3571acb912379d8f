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
    """A user mistake, explained: the message names the layer, the shapes, what would work."""

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
    """Scores whose completeness gap is larger than the threshold the caller set."""
