"""``Scores``: what an importance method returns — per layer, tensors shaped like the layer's output.

>>> import torch
>>> s = Scores("activation", {"fc": torch.tensor([[1.0, -3.0, 2.0]])})
>>> s["fc"].tolist(), s.top("fc", k=2).indices.tolist(), s.top("fc", k=1, by="abs").indices.tolist()
([[1.0, -3.0, 2.0]], [[2, 0]], [[1]])

**Shapes — the rule for the whole package, stated here once: examples first.**

* ``scores[layer]``: ``[N, *unit_shape]``, shaped like the layer's output (a tuple of such for tuple outputs);
  ``per_channel(layer)``: ``[N, C]``; ``delta[layer]``, ``relative_delta(layer)``, ``output_diff``, ``n_evals``:
  ``[N]``; ``top(layer, k=…)``: ``Top(values [N, k], indices [N, k])``.
* :func:`unitscope.ablation_scores`: ``[N, U]``; :func:`unitscope.neuron_conductance`: ``[N, U, *input_shape]``
  (a tuple for tuple inputs); AM / IAM (:mod:`unitscope.synthesis.maximize`): one batch row per unit,
  ``images [U, C, H, W]``, ``activations [U, units of the layer]``; inverse sets: ``samples [S, …]``.
* **The one exception**: a dataset scan keeps no per-example dim, so :class:`unitscope.data.scan.ScanResult`
  is units first — ``mean``/``std``/``selectivity``: ``[U]``, ``class_means``: ``[K, U]``,
  ``top(layer, score=…)``: ``Top(values [U, k], indices [U, k])`` (dataset indices per unit).
* Results are detached, on the CPU, in the model's dtype (float32 at least).
"""

from __future__ import annotations

import difflib
from collections import namedtuple
from collections.abc import Mapping

import torch

from ..core.errors import UnitscopeError
from ..core.units import UnitSpec, pick_part, resolve_units

__all__ = ["Scores", "Top"]

Top = namedtuple("Top", ["values", "indices"])


def _key(names, layer) -> str:
    if isinstance(layer, str) and layer in names:
        return layer
    module_names = getattr(names, "modules", {})
    if not isinstance(layer, str) and id(layer) in module_names:
        return module_names[id(layer)]
    wanted = layer if isinstance(layer, str) else type(layer).__name__
    close = difflib.get_close_matches(str(wanted), list(names), n=3, cutoff=0.0) or list(names)
    raise UnitscopeError(f"no scores for layer {wanted!r}", layer=wanted,
                         hint="scored layers: " + ", ".join(map(repr, close)))


class _ByLayer(dict):
    """A dict keyed by layer name that also accepts the module object."""

    modules: dict

    def __getitem__(self, layer):
        return dict.__getitem__(self, _key(self, layer))


class Scores(Mapping):
    """Per-layer values of one score (``scores.score``: ``conductance``, ``activation``, …) for a batch of examples.

    ``scores[layer]`` is a tensor ``[N, *unit_shape]`` (a tuple of them for a layer with tuple output);
    ``scores.delta[layer]`` the completeness gap ``Σ_units − (F(x) − F(x'))`` per example (path methods
    whose scores should sum to the output difference); ``scores.output_diff`` is ``F(x) − F(x')``;
    ``scores.n_evals`` the path points evaluated per example. Layers may be given by name or module.
    Path methods also carry ``scores.error[layer]`` (per-unit error estimate, shaped like the scores),
    ``scores.unit_error[layer]`` (``[N, units]``: channels of conv layers, neurons of token-major ones),
    ``scores.ok[layer]`` (whether the top units met the tolerance) and ``scores.messages[layer]`` (why not,
    where on the path, what to try).
    ``scores.specs[layer]`` is the layer's :class:`unitscope.core.units.UnitSpec` (what :meth:`per_unit` and
    :meth:`top` reduce to), ``scores.mask`` the attention mask ``[N, T]`` that leaves padding tokens out.
    """

    def __init__(self, score: str, values: dict, *, delta: dict | None = None, output_diff=None, n_evals=None,
                 target=None, modules: dict | None = None, settings: dict | None = None, error: dict | None = None,
                 unit_error: dict | None = None, ok: dict | None = None, messages: dict | None = None,
                 specs: dict | None = None, mask: torch.Tensor | None = None):
        self.score = score
        self._values = _ByLayer(values)
        self._values.modules = modules or {}
        self.delta = _ByLayer(delta or {})
        self.delta.modules = modules or {}
        self.output_diff = output_diff
        self.n_evals = n_evals
        self.target = target
        self.settings = dict(settings or {})
        self.error, self.unit_error, self.ok, self.messages = (_ByLayer(d or {}) for d in (error, unit_error, ok,
                                                                                             messages))
        for d in (self.error, self.unit_error, self.ok, self.messages):
            d.modules = modules or {}
        self.specs = _ByLayer(specs or {})
        self.specs.modules = modules or {}
        self.mask = mask

    # Mapping protocol -------------------------------------------------------------------------------
    def __getitem__(self, layer):
        return self._values[layer]

    def __iter__(self):
        return iter(dict.keys(self._values))

    def __len__(self):
        return len(dict.keys(self._values))

    @property
    def layers(self) -> list[str]:
        return list(self)

    @property
    def method(self) -> str:
        """Deprecated name of :attr:`score` (``method`` is the integration rule: ``settings["method"]``)."""
        import warnings
        warnings.warn("Scores.method is now Scores.score", DeprecationWarning, stacklevel=2)
        return self.score

    def __repr__(self) -> str:
        shapes = ", ".join(f"{k}: {_shape(v)}" for k, v in dict.items(self._values))
        return f"Scores(score={self.score!r}, {shapes})"

    def _repr_html_(self) -> str:
        """A notebook's view: per layer, its shape, the completeness gap (largest over the examples) and the top
        units of example 0."""
        from ..core.display import html_table

        rows = []
        for name in self:
            v = self[name]
            gap = (f"{100 * float(self.relative_delta(name).max()):.2f}%"
                   if name in dict.keys(self.delta) and self.output_diff is not None else "—")
            if isinstance(v, tuple) or v.shape[0] == 0:
                top = "—"
            else:
                t = self.top(name, k=5)
                top = ", ".join(f"{i} ({val:+.3g})" for i, val in zip(t.indices[0].tolist(), t.values[0].tolist()))
            rows.append([name, _shape(v), gap, top])
        return html_table(f"Scores(score={self.score!r}): {len(self)} layers", ["layer", "shape [N, …]",
                          "completeness gap", "top units of example 0"], rows)

    # views ------------------------------------------------------------------------------------------
    def per_channel(self, layer):
        """``[N, C]``: the score of each channel (dim 1), summed over the remaining dims (a filter's score)."""
        v = self[layer]
        if isinstance(v, tuple):
            return tuple(_per_channel(t) for t in v)
        return _per_channel(v)

    def unit_spec(self, layer, *, spec=None) -> UnitSpec:
        """The unit specification of ``layer``: ``spec`` if given (a layout name or a ``UnitSpec``), else the
        one chosen when the scores were computed (by the layer's layout)."""
        if spec is not None:
            name = _key(self._values, layer)
            return resolve_units(spec, name=name, shape=tuple(_first(self[name]).shape))
        name = _key(self._values, layer)
        if name in dict.keys(self.specs):
            return dict.__getitem__(self.specs, name)
        return UnitSpec.channels()

    def per_unit(self, layer, *, spec=None, reduce: str | None = None, part: int | None = None) -> torch.Tensor:
        """``[N, U]``: one score per unit of the layer's unit specification — a conv's channels, a transformer
        layer's neurons over the tokens the attention mask keeps, heads, … The other dims are summed for
        attributions and averaged for activations (``reduce="sum"``, ``"mean"`` or ``"max"`` to choose).

        >>> s = Scores("conductance", {"mlp": torch.ones(1, 3, 4)}, specs={"mlp": UnitSpec.tokens()},
        ...            mask=torch.tensor([[1, 1, 0]]))
        >>> s.per_unit("mlp").tolist()       # 4 neurons, summed over the 2 real tokens
        [[2.0, 2.0, 2.0, 2.0]]
        """
        spec = self.unit_spec(layer, spec=spec)
        v = self[layer]
        if isinstance(v, tuple):
            v = pick_part(v, spec.part if part is None else part, str(layer))
        return spec.per_unit(v, spec.how(self.score) if reduce is None else reduce, mask=self.mask,
                             layer=str(layer))

    def relative_delta(self, layer) -> torch.Tensor:
        """``|delta| / |F(x) − F(x')|`` per example."""
        d = self.delta[layer]
        return d.abs() / self.output_diff.abs().clamp_min(1e-12)

    def top(self, layer, *, k: int = 10, by: str = "value", spec=None, channels: bool | None = None,
            part: int | None = None) -> Top:
        """The ``k`` most important units per example: ``Top(values [N, k], indices [N, k])``.

        ``by="value"`` ranks by signed score, ``by="abs"`` by magnitude (values keep their sign).
        Units are those of :meth:`per_unit` (``spec`` to choose another specification); ``channels=True``
        ranks channels (dim 1, summed); ``channels=False`` (or ``spec="elements"``) ranks single elements, by
        flat index into the per-example shape (``numpy.unravel_index`` turns them into tuples).
        """
        v = self[layer]
        if isinstance(v, tuple) and part is None and self.unit_spec(layer, spec=spec).part is None:
            raise UnitscopeError("layer has a tuple output; pick a part first (part=0, 1, …)", layer=str(layer))
        if channels is True:
            flat = _per_channel(pick_part(v, part, str(layer)))
        elif channels is False:
            t = pick_part(v, part, str(layer))
            flat = t.reshape(t.shape[0], -1)
        else:
            flat = self.per_unit(layer, spec=spec, part=part)
        if by not in ("value", "abs"):
            raise UnitscopeError("by must be 'value' or 'abs'", by=by)
        k = min(int(k), flat.shape[1])
        if not dict.get(self.ok, _key(self._values, layer), True):
            import warnings

            from ..core.errors import CompletenessWarning
            warnings.warn(f"ranking layer {_key(self._values, layer)!r}, whose numbers are not ok: "
                          + self.messages[layer][0], CompletenessWarning, stacklevel=2)
        key = flat if by == "value" else flat.abs()
        idx = key.topk(k, dim=1).indices
        return Top(flat.gather(1, idx), idx)

    def to_frame(self, *, per_unit: bool = False, per_channel: bool = False, spec=None):
        """A tidy ``pandas.DataFrame``: one row per example × element — or, with ``per_unit``, per example × unit
        of the unit specification (``per_channel``: per channel) — with the completeness gap. Columns: ``score``,
        ``layer``, ``example``, ``unit`` (the flat index over the layer's per-example shape, row-major: for a conv layer
        ``c·H·W + h·W + w``), ``channel`` (its first coordinate), ``value``, ``delta``."""
        import numpy as np
        import pandas as pd

        frames = []
        for name in self:
            value = self[name]
            parts = value if isinstance(value, tuple) else (value,)
            for pi, t in enumerate(parts):
                if per_unit:
                    sp = self.unit_spec(name, spec=spec)
                    t = sp.per_unit(t, sp.how(self.score), mask=self.mask, layer=name)
                elif per_channel:
                    t = _per_channel(t)
                n = t.shape[0]
                flat = t.reshape(n, -1).numpy()
                u = flat.shape[1]
                unit_shape = tuple(t.shape[1:])
                cols = {
                    "score": self.score,
                    "layer": name,
                    "example": np.repeat(np.arange(n), u),
                    "unit": np.tile(np.arange(u), n),
                    "channel": np.tile(np.unravel_index(np.arange(u), unit_shape)[0] if unit_shape else 0, n),
                    "value": flat.reshape(-1),
                }
                if isinstance(value, tuple):
                    cols["part"] = pi
                if name in dict.keys(self.delta):
                    cols["delta"] = np.repeat(self.delta[name].numpy(), u)
                frames.append(pd.DataFrame(cols))
        return pd.concat(frames, ignore_index=True)

    def summary(self, *, k: int = 5) -> str:
        """A short text table: per layer, the largest completeness gap over the examples and the ``k`` units with
        the highest score averaged over the examples (with one example, its own top units).

        >>> s = Scores("conductance", {"fc": torch.tensor([[1.0, 3.0, 2.0], [1.0, 0.0, 5.0]])})
        >>> print(s.summary(k=2))
        conductance of 1 layer, 2 inputs
          fc                       [2, 3]             top units (mean over the 2 inputs): 2(+3.5), 1(+1.5)
        """
        v0 = _first(next(iter(self._values.values()))) if len(self) else None
        n = 0 if v0 is None else v0.shape[0]
        lines = [f"{self.score} of {len(self)} layer{'s' * (len(self) != 1)}, {n} input{'s' * (n != 1)}"]
        for name in self:
            v = self[name]
            line = f"  {name:<24} {_shape(v):<18}"
            if name in dict.keys(self.delta):
                line += f" {'max ' * (n > 1)}gap {100 * float(self.relative_delta(name).max()):6.2f}%"
            if not dict.get(self.ok, name, True):
                line += "  NOT OK (see .messages)"
            if not isinstance(v, tuple):
                mean = self.per_unit(name).mean(0)
                top = mean.topk(min(k, mean.numel()))
                label = f"top units (mean over the {n} inputs)" if n > 1 else "top units"
                line += f" {label}: " + ", ".join(f"{i}({val:+.3g})" for i, val in
                                                  zip(top.indices.tolist(), top.values.tolist()))
            lines.append(line)
        bad = [m for name in self for m in dict.get(self.messages, name, [])[:1]]
        return "\n".join(lines + [f"  ! {m}" for m in bad])


def _first(v):
    return v[0] if isinstance(v, tuple) else v


def _per_channel(t: torch.Tensor) -> torch.Tensor:
    return t if t.dim() <= 2 else t.flatten(2).sum(2)


def _shape(v) -> str:
    if isinstance(v, tuple):
        return "(" + ", ".join(str(list(t.shape)) for t in v) + ")"
    return str(list(v.shape))
