"""``Scores``: what an importance method returns — per layer, tensors shaped like the layer's output.

>>> import torch
>>> s = Scores("activation", {"fc": torch.tensor([[1.0, -3.0, 2.0]])})
>>> s["fc"].tolist(), s.top("fc", k=2).indices.tolist(), s.top("fc", k=1, by="abs").indices.tolist()
([[1.0, -3.0, 2.0]], [[2, 0]], [[1]])
>>> s.top("fc", k=2).errors.tolist()     # an activation is read, not integrated: no error
[[0.0, 0.0]]

**Shapes — the rule for the whole package, stated here once: examples first.**

* ``scores[layer]``: ``[N, *unit_shape]``, shaped like the layer's output (a tuple of such for tuple outputs);
  ``per_channel(layer)``: ``[N, C]``; ``delta[layer]``, ``relative_delta(layer)``, ``output_diff``, ``n_evals``:
  ``[N]``; ``top(layer, k=…)``: ``Top(values [N, k], indices [N, k], errors [N, k])``.
* :func:`unitscope.ablation_scores`: ``[N, U]``; :func:`unitscope.neuron_conductance`: ``[N, U, *input_shape]``
  (a tuple for tuple inputs); AM / IAM (:mod:`unitscope.synthesis.maximize`): one batch row per unit,
  ``images [U, C, H, W]``, ``activations [U, units of the layer]``; inverse sets: ``samples [S, …]``.
* **The one exception**: a dataset scan keeps no per-example dim, so :class:`unitscope.data.scan.ScanResult`
  is units first — ``mean``/``std``/``selectivity``: ``[U]``, ``class_means``: ``[K, U]``,
  ``top(layer, score=…)``: ``Top(values [U, k], indices [U, k])`` (dataset indices per unit).
* Results are detached, on the CPU, in the model's dtype (float32 at least).

**Errors.** Every value of a path score (conductance, internal influence) comes with an error: ``top`` returns
``Top.errors`` beside the values, :meth:`Scores.to_frame` has an ``error`` column and :meth:`Scores.plot` draws
them as error bars. ERROR_MEANING
"""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Mapping
from dataclasses import replace

import torch

from ..core.errors import UnitscopeError
from ..core.units import UnitSpec, pick_part, resolve_units

__all__ = ["Scores", "Top", "ERROR_MEANING", "SIGN_COLOURS", "bar_chart"]

Top = namedtuple("Top", ["values", "indices", "errors"], defaults=(None,))
Top.__doc__ = """The ``k`` best units (or examples): ``values``, ``indices`` and, where known, the ``errors`` of the
values (the estimated integration error of each value; zeros for scores that are read, not integrated; ``None`` where
nothing estimates them, e.g. a dataset scan's top examples)."""

ERROR_MEANING = (
    "The error of a value is an estimate of its integration error, |value − the exact path integral| (the "
    "quadrature's error alone: not a spread over inputs or baselines); checked against a 2,048-point reference "
    "on held-out models (bench/error_calibration.py: the zoo's digits CNN and VGG, 2,160 top-10 units, 16–128 "
    "evaluations), the true error was at most 1 × the estimate for 92 % of units and at most 3 × it for 98 % "
    "(bench/accuracy.py --quick: 82 % and 97.5 % of 400 top-10 units of EfficientNet-Lite0 and MiniLM) — read "
    "``value ± error`` as its typical size and ``± 3 × error`` as a bound."
)
__doc__ = __doc__.replace("ERROR_MEANING", ERROR_MEANING)

SIGN_COLOURS = ("tab:red", "tab:blue")  # (positive, negative): the one sign convention of every figure
_EXACT = ("activation", "grad_x_activation")  # read at the input, not integrated along a path: no error


def _key(names, layer) -> str:
    if isinstance(layer, str) and layer in names:
        return layer
    module_names = getattr(names, "modules", {})
    if not isinstance(layer, str) and id(layer) in module_names:
        return module_names[id(layer)]
    wanted = layer if isinstance(layer, str) else type(layer).__name__
    from ..core.sites import rank_names

    close = rank_names(str(wanted), list(names), n=3)
    raise UnitscopeError(
        f"no scores for layer {wanted!r}", layer=wanted, hint="scored layers: " + ", ".join(map(repr, close))
    )


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
    where on the path, what to try). The error is an estimate of the integration error of each value (checked on
    held-out models: the true error was ≤ 1 × it for 92 % and ≤ 3 × it for 98 % of top-10 units; see
    :data:`ERROR_MEANING`); :meth:`top`, :meth:`to_frame`, :meth:`summary` and :meth:`plot` show it beside the
    values.
    ``scores.specs[layer]`` is the layer's :class:`unitscope.core.units.UnitSpec` (what :meth:`per_unit` and
    :meth:`top` reduce to), ``scores.mask`` the attention mask ``[N, T]`` that leaves padding tokens out.

    The importance functions (:func:`unitscope.conductance`, :func:`unitscope.attribute`, ...) build it; each
    parameter is kept as the attribute of the same name, the dicts keyed by layer name (a module works as a key too).

    Parameters
    ----------
    score : str
        The score's name: ``"conductance"``, ``"internal_influence"``, ``"grad_x_activation"`` or ``"activation"``.
    values : dict
        ``{layer: Tensor [N, ...]}`` (a tuple of tensors for a layer with tuple output): ``scores[layer]``.
    delta : dict or None, default None
        ``{layer: Tensor [N]}``: the completeness gap ``Σ_units − (F(x) − F(x'))`` (complete scores only).
    output_diff : Tensor or None, default None
        ``[N]``: ``F(x) − F(x')``.
    n_evals : Tensor or None, default None
        ``[N]``: the path points evaluated per example.
    target : Tensor or None, default None
        ``[N]``: the class explained per example, where the target was a class.
    modules : dict or None, default None
        ``{id(module): layer name}``: lets the modules themselves be keys.
    settings : dict or None, default None
        The settings of the pass (``n_steps``, ``method``, ``captum_compatible``).
    error : dict or None, default None
        ``{layer: Tensor}`` shaped like the values: the per-value error estimate (path scores).
    unit_error : dict or None, default None
        ``{layer: Tensor [N, units]}``: the error estimate per unit of the layer's unit specification.
    ok : dict or None, default None
        ``{layer: bool}``: whether the layer's top units met the tolerance.
    messages : dict or None, default None
        ``{layer: list of str}``: for a layer that is not ok, why, where on the path and what to try.
    specs : dict or None, default None
        ``{layer: UnitSpec}``: what :meth:`per_unit` and :meth:`top` reduce to.
    mask : Tensor or None, default None
        ``[N, T]``, 1 for a real token: leaves padding tokens out of those reductions.

    Raises
    ------
    UnitscopeError
        From its accessors: a layer that was not scored (``scores["fc2"]``; the message lists the scored layers
        closest to it), ``by`` other than ``"value"`` / ``"abs"``, a tuple layer without ``part=``, an example that
        does not exist (:meth:`plot`).

    Examples
    --------
    >>> import torch, torch.nn as nn, unitscope as us
    >>> net = nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 2))
    >>> s = us.conductance(net, torch.ones(4, 3), ["1"], target=0, n_steps=16)
    >>> s.score, s.layers, s["1"].shape, s.delta["1"].shape, s.error["1"].shape
    ('conductance', ['1'], torch.Size([4, 5]), torch.Size([4]), torch.Size([4, 5]))
    >>> top = s.top("1", k=2)
    >>> top.values.shape, top.indices.shape, top.errors.shape
    (torch.Size([4, 2]), torch.Size([4, 2]), torch.Size([4, 2]))
    """

    cut: dict[str, torch.Tensor]  # complete scores: per layer [N], whether the layer is a cut for the example

    def __init__(
        self,
        score: str,
        values: dict,
        *,
        delta: dict | None = None,
        output_diff=None,
        n_evals=None,
        target=None,
        modules: dict | None = None,
        settings: dict | None = None,
        error: dict | None = None,
        unit_error: dict | None = None,
        ok: dict | None = None,
        messages: dict | None = None,
        specs: dict | None = None,
        mask: torch.Tensor | None = None,
    ):
        self.score = score
        self._values = _ByLayer(values)
        self._values.modules = modules or {}
        self.delta = _ByLayer(delta or {})
        self.delta.modules = modules or {}
        self.output_diff = output_diff
        self.n_evals = n_evals
        self.target = target
        self.settings = dict(settings or {})
        self.error, self.unit_error, self.ok, self.messages = (
            _ByLayer(d or {}) for d in (error, unit_error, ok, messages)
        )
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
            gap = (
                f"{100 * float(self.relative_delta(name).max()):.2f}%"
                if name in dict.keys(self.delta) and self.output_diff is not None
                else "—"
            )
            if (isinstance(v, tuple) and not self._dictionary(name)) or _first(v).shape[0] == 0:
                top = "—"
            else:
                t = self.top(name, k=5)
                top = ", ".join(
                    f"{i} ({_pm(val, err)})"
                    for i, val, err in zip(t.indices[0].tolist(), t.values[0].tolist(), t.errors[0].tolist())
                )
            rows.append([name, _shape(v), gap, top])
        return html_table(
            f"Scores(score={self.score!r}): {len(self)} layers",
            ["layer", "shape [N, …]", "completeness gap", "top units of example 0"],
            rows,
        )

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
            got = resolve_units(spec, name=name, shape=tuple(_first(self[name]).shape))
            if self._dictionary(name) and got.part is None:  # a dictionary's features by ``spec``, then its error node
                got = replace(got, error_node=True)
            return got
        name = _key(self._values, layer)
        if name in dict.keys(self.specs):
            return dict.__getitem__(self.specs, name)
        return UnitSpec.channels()

    def _dictionary(self, name: str) -> bool:
        """Whether ``name`` was read through a dictionary (its values are ``(features, error node)``)."""
        sp = dict.get(self.specs, name)
        return bool(sp is not None and sp.error_node and isinstance(self[name], tuple))

    def per_unit(self, layer, *, spec=None, reduce: str | None = None, part: int | None = None) -> torch.Tensor:
        """``[N, U]``: one score per unit of the layer's unit specification — a conv's channels, a transformer
        layer's neurons over the tokens the attention mask keeps, heads, … The other dims are summed for
        attributions and averaged for activations (``reduce="sum"``, ``"mean"`` or ``"max"`` to choose).

        >>> s = Scores("conductance", {"mlp": torch.ones(1, 3, 4)}, specs={"mlp": UnitSpec.tokens()},
        ...            mask=torch.tensor([[1, 1, 0]]))
        >>> s.per_unit("mlp").tolist()       # 4 neurons, summed over the 2 real tokens
        [[2.0, 2.0, 2.0, 2.0]]

        A layer read through a dictionary (``dictionaries=``) gives ``[N, F + 1]``: its ``F`` features (by the layer's
        layout: over the real tokens of a token-major layer) and, last, the error node — the sum of its scores over
        positions and dims (for an activation, the mean over positions of ``‖ε‖``). ``part=0``: the features alone,
        ``part=1``: the error node by the layer's own units (``[N, D]``).
        """
        spec = self.unit_spec(layer, spec=spec)
        v = self[layer]
        if isinstance(v, tuple) and not (spec.error_node and part is None and spec.part is None):
            v = pick_part(v, spec.part if part is None else part, str(layer))
        return spec.per_unit(v, spec.how(self.score) if reduce is None else reduce, mask=self.mask, layer=str(layer))

    def relative_delta(self, layer) -> torch.Tensor:
        """``|delta| / |F(x) − F(x')|`` per example."""
        d = self.delta[layer]
        return d.abs() / self.output_diff.abs().clamp_min(1e-12)

    def _flat(self, layer, *, spec=None, channels: bool | None = None, part: int | None = None):
        """``(values [N, U], errors [N, U])`` of the units that :meth:`top` ranks (see there)."""
        name = _key(self._values, layer)
        v = self[name]
        if channels is True:
            mode, flat = "channels", _per_channel(pick_part(v, part, name))
        elif channels is False:
            t = pick_part(v, part, name)
            mode, flat = "elements", t.reshape(t.shape[0], -1)
        else:
            mode, flat = "units", self.per_unit(name, spec=spec, part=part)
        return flat, self._errors_like(name, flat, mode, spec=spec, part=part)

    def _errors_like(self, name: str, flat: torch.Tensor, mode: str, *, spec=None, part=None) -> torch.Tensor:
        """The errors of ``flat`` (the values of ``name`` reduced by ``mode``: ``units`` of ``spec``, ``channels`` or
        ``elements``): the layer's own per-unit estimate where its units are these, else the sum of the elements'
        estimates over each unit (a bound, looser: their errors may cancel); zeros for scores read at the input;
        NaN where nothing estimated them (``captum_compatible=True``, or scores made by hand)."""
        if self.score in _EXACT:
            return torch.zeros_like(flat)
        value = self[name]
        sp = self.unit_spec(name, spec=spec)
        if mode == "units" and part is None and sp.error_node and sp.part is None and isinstance(value, tuple):
            feats = self._errors_like(name, flat[:, :-1], "units", spec=sp.features(), part=0)
            return torch.cat([feats, self._error_node_error(name, sp, flat[:, -1:])], 1)
        pi = part if part is not None else (sp.part if mode == "units" else None)
        i = 0 if pi is None else pi

        def one(d):
            return d[i] if isinstance(d, tuple) else d

        t = one(value)
        if name in dict.keys(self.unit_error):
            ue = one(dict.__getitem__(self.unit_error, name))
            if ue.shape == flat.shape and _same_units(t, mode, sp, sp.how(self.score)):
                return ue.to(flat.dtype)
        if name in dict.keys(self.error):
            e = one(dict.__getitem__(self.error, name)).abs()
            if mode == "channels":
                return _per_channel(e).to(flat.dtype)
            if mode == "elements":
                return e.reshape(e.shape[0], -1).to(flat.dtype)
            return sp.per_unit(e, sp.how(self.score), mask=self.mask, layer=name).to(flat.dtype)
        return torch.full_like(flat, float("nan"))

    def _error_node_error(self, name: str, sp: UnitSpec, like: torch.Tensor) -> torch.Tensor:
        """``[N, 1]``: a bound on the error of a dictionary's error node — the sum of its elements' estimated errors
        over the positions kept (or of its per-unit errors); NaN where nothing estimated them."""
        inner = replace(sp, error_node=False, part=None)
        if name in dict.keys(self.error):
            e = dict.__getitem__(self.error, name)[1].abs()
            return inner.per_unit(e, "sum", mask=self.mask, layer=name).sum(1, keepdim=True).to(like.dtype)
        if name in dict.keys(self.unit_error):
            ue = dict.__getitem__(self.unit_error, name)[1]
            return ue.reshape(ue.shape[0], -1).abs().sum(1, keepdim=True).to(like.dtype)
        return torch.full_like(like, float("nan"))

    def per_unit_error(self, layer, *, spec=None, part: int | None = None) -> torch.Tensor:
        """``[N, U]``: the error of each value of :meth:`per_unit` — the estimated integration error (true error
        ≤ 1 × it for 92 %, ≤ 3 × it for 98 % of top-10 units on held-out models; :data:`ERROR_MEANING`); zeros for
        scores read at the input (activation, gradient × activation), NaN where nothing estimated it."""
        return self._flat(layer, spec=spec, part=part)[1]

    def top(
        self, layer, *, k: int = 10, by: str = "value", spec=None, channels: bool | None = None, part: int | None = None
    ) -> Top:
        """The ``k`` most important units per example: ``Top(values [N, k], indices [N, k], errors [N, k])``.

        ``by="value"`` ranks by signed score, ``by="abs"`` by magnitude (values keep their sign). ``errors`` is the
        estimated integration error of each value (:meth:`per_unit_error`: read ``value ± error`` as its typical
        size, ``± 3 × error`` as a bound — it held for 98 % of top-10 units on held-out models).
        Units are those of :meth:`per_unit` (``spec`` to choose another specification); ``channels=True``
        ranks channels (dim 1, summed); ``channels=False`` (or ``spec="elements"``) ranks single elements, by
        flat index into the per-example shape (``numpy.unravel_index`` turns them into tuples).

        >>> s = Scores("conductance", {"fc": torch.tensor([[1.0, -3.0, 2.0]])},
        ...            unit_error={"fc": torch.tensor([[0.1, 0.2, 0.05]])})
        >>> t = s.top("fc", k=2)
        >>> t.values.tolist(), t.indices.tolist(), t.errors.tolist()
        ([[2.0, 1.0]], [[2, 0]], [[0.05000000074505806, 0.10000000149011612]])
        """
        v = self[layer]
        if (
            isinstance(v, tuple)
            and part is None
            and self.unit_spec(layer, spec=spec).part is None
            and not (channels is None and self.unit_spec(layer, spec=spec).error_node)
        ):
            raise UnitscopeError("layer has a tuple output; pick a part first (part=0, 1, …)", layer=str(layer))
        if by not in ("value", "abs"):
            raise UnitscopeError("by must be 'value' or 'abs'", by=by)
        flat, err = self._flat(layer, spec=spec, channels=channels, part=part)
        k = min(int(k), flat.shape[1])
        if not dict.get(self.ok, _key(self._values, layer), True):
            import warnings

            from ..core.errors import CompletenessWarning

            warnings.warn(
                f"ranking layer {_key(self._values, layer)!r}, whose numbers are not ok: " + self.messages[layer][0],
                CompletenessWarning,
                stacklevel=2,
            )
        key = flat if by == "value" else flat.abs()
        idx = key.topk(k, dim=1).indices
        return Top(flat.gather(1, idx), idx, err.gather(1, idx))

    def to_frame(self, *, per_unit: bool = False, per_channel: bool = False, spec=None):
        """A tidy ``pandas.DataFrame``: one row per example × element — or, with ``per_unit``, per example × unit
        of the unit specification (``per_channel``: per channel) — with the completeness gap. Columns: ``score``,
        ``layer``, ``example``, ``unit`` (the flat index over the layer's per-example shape, row-major: for a conv layer
        ``c·H·W + h·W + w``), ``channel`` (its first coordinate), ``value``, ``error`` (the estimated integration
        error of ``value``, as in :meth:`top`: true error ≤ 3 × it for 98 % of top-10 units on held-out models; 0 for
        scores read at the input, NaN where not estimated), ``delta``.

        >>> s = Scores("conductance", {"fc": torch.tensor([[1.0, -3.0]])}, error={"fc": torch.tensor([[0.5, 0.25]])})
        >>> s.to_frame()[["unit", "value", "error"]].values.tolist()
        [[0.0, 1.0, 0.5], [1.0, -3.0, 0.25]]
        """
        import numpy as np
        import pandas as pd

        frames = []
        for name in self:
            value = self[name]
            parts = value if isinstance(value, tuple) else (value,)
            whole = per_unit and self._dictionary(name) and self.unit_spec(name, spec=spec).part is None
            if whole:  # a dictionary's features then its error node, one table: units 0 … F−1 and F
                parts = (value,)
            for pi, t in enumerate(parts):
                mode = "elements"
                if whole:
                    sp = self.unit_spec(name, spec=spec)
                    t, mode = sp.per_unit(value, sp.how(self.score), mask=self.mask, layer=name), "units"
                elif per_unit:
                    sp = self.unit_spec(name, spec=spec)
                    t, mode = sp.per_unit(t, sp.how(self.score), mask=self.mask, layer=name), "units"
                elif per_channel:
                    t, mode = _per_channel(t), "channels"
                n = t.shape[0]
                flat = t.reshape(n, -1).numpy()
                err = self._errors_like(
                    name, t.reshape(n, -1), mode, spec=spec, part=pi if isinstance(value, tuple) and not whole else None
                ).numpy()
                u = flat.shape[1]
                unit_shape = tuple(t.shape[1:])
                cols = {
                    "score": self.score,
                    "layer": name,
                    "example": np.repeat(np.arange(n), u),
                    "unit": np.tile(np.arange(u), n),
                    "channel": np.tile(np.unravel_index(np.arange(u), unit_shape)[0] if unit_shape else 0, n),
                    "value": flat.reshape(-1),
                    "error": err.reshape(-1),
                }
                if isinstance(value, tuple) and not whole:
                    cols["part"] = pi
                if name in dict.keys(self.delta):
                    cols["delta"] = np.repeat(self.delta[name].numpy(), u)
                frames.append(pd.DataFrame(cols))
        return pd.concat(frames, ignore_index=True)

    def plot(
        self,
        layer,
        *,
        k: int = 20,
        example: int | None = None,
        by: str = "abs",
        spec=None,
        part: int | None = None,
        ax=None,
        title: str | None = None,
    ):
        """A bar chart of the ``k`` most important units of ``layer``, each with its error bar (± its estimated
        integration error, :meth:`per_unit_error`; ± 3 × it is the bound that held for 98 % of top-10 units on
        held-out models); returns a :class:`matplotlib.figure.Figure`.

        ``example``: the values of one example (its index); by default the mean over the examples (its error bar:
        the mean of the examples' errors, a bound on the error of the mean). Units are those of :meth:`per_unit`
        (``spec``, ``part`` as there), ranked by ``|value|`` (``by="value"``: by signed value). Positive bars are
        red, negative blue (one sign convention for every figure of the package). ``ax``: draw into this
        matplotlib Axes and return its figure; otherwise a new ``Figure`` is made without pyplot, so matplotlib's
        backend and rcParams stay as they were (a notebook shows it as a cell's last value; ``fig.savefig(path)``
        writes it).

        >>> s = Scores("conductance", {"fc": torch.tensor([[1.0, -3.0, 2.0]])},
        ...            unit_error={"fc": torch.tensor([[0.1, 0.2, 0.05]])})
        >>> fig = s.plot("fc", k=2)
        >>> [t.get_text() for t in fig.axes[0].get_xticklabels()], fig.axes[0].get_title()
        (['1', '2'], 'fc: top 2 units by |conductance|')
        """
        if by not in ("value", "abs"):
            raise UnitscopeError("by must be 'value' or 'abs'", by=by)
        name = _key(self._values, layer)
        v = self[name]
        if (
            isinstance(v, tuple)
            and part is None
            and self.unit_spec(name, spec=spec).part is None
            and not self.unit_spec(name, spec=spec).error_node
        ):
            raise UnitscopeError("layer has a tuple output; pick a part first (part=0, 1, …)", layer=name)
        flat, err = self._flat(name, spec=spec, part=part)
        n = flat.shape[0]
        if n == 0:
            raise UnitscopeError("no examples to plot", layer=name)
        if example is None:
            values, errors = flat.mean(0), err.mean(0)
            how = f"mean over the {n} inputs" if n > 1 else "example 0"
        else:
            if not -n <= int(example) < n:
                raise UnitscopeError(
                    f"example {example} does not exist: the scores have {n} examples",
                    layer=name,
                    hint=f"pick one of 0…{n - 1}, or example=None for the mean",
                )
            values, errors = flat[int(example)], err[int(example)]
            how = f"example {int(example)}"
        key = values.abs() if by == "abs" else values
        idx = key.topk(min(int(k), values.numel())).indices
        rank = f"|{self.score}|" if by == "abs" else self.score
        return bar_chart(
            values[idx].tolist(),
            errors[idx].tolist(),
            [str(i) for i in idx.tolist()],
            ax=ax,
            title=title or f"{name}: top {len(idx)} units by {rank}",
            xlabel="unit",
            ylabel=f"{self.score}, {how}",
        )

    def summary(self, *, k: int = 5) -> str:
        """A short text table: per layer, the largest completeness gap over the examples and the ``k`` units with
        the highest score averaged over the examples (with one example, its own top units), each ``value±error``
        where its error is estimated (the mean of the examples' errors: a bound on the error of the mean).

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
            if not isinstance(v, tuple) or self._dictionary(name):
                flat, err = self._flat(name)
                mean, err = flat.mean(0), err.mean(0)
                top = mean.topk(min(k, mean.numel()))
                label = f"top units (mean over the {n} inputs)" if n > 1 else "top units"
                line += f" {label}: " + ", ".join(
                    f"{i}({_pm(val, float(err[i]))})" for i, val in zip(top.indices.tolist(), top.values.tolist())
                )
            lines.append(line)
        bad = [m for name in self for m in dict.get(self.messages, name, [])[:1]]
        return "\n".join(lines + [f"  ! {m}" for m in bad])


def _same_units(t: torch.Tensor, mode: str, spec: UnitSpec, how: str) -> bool:
    """Whether the units of ``mode`` (``channels``, ``elements``, or ``units`` of ``spec`` reduced by ``how``) are
    those the engine estimates errors for (:func:`unitscope.attribution.estimates.reduce_units`): checked on a
    random probe of one example's shape, so a ``[N, C, L]`` layer whose ``C`` equals ``L`` is not mistaken."""
    from .estimates import reduce_units

    probe = torch.rand((1,) + tuple(t.shape[1:]), dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    if mode == "channels":
        mine = _per_channel(probe)
    elif mode == "elements":
        mine = probe.reshape(1, -1)
    else:
        mine = spec.per_unit(probe, how)
    ref = reduce_units(probe)
    return mine.shape == ref.shape and bool(torch.allclose(mine, ref))


def bar_chart(values, errors, labels, *, ax=None, title: str = "", xlabel: str = "", ylabel: str = "", figsize=None):
    """Bars of signed ``values`` (red +, blue −: :data:`SIGN_COLOURS`) with error bars ``± errors`` (none drawn
    where an error is NaN or 0), labelled ``labels``; drawn into ``ax`` or a new
    :class:`matplotlib.figure.Figure` on its own Agg canvas (no pyplot); returns the figure."""
    import math

    if ax is None:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        fig = Figure(figsize=figsize or (max(3.6, 0.28 * len(values) + 1.6), 3.4), layout="constrained")
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
    errs = [0.0 if e is None or not math.isfinite(e) else abs(e) for e in errors]
    x = list(range(len(values)))
    ax.bar(x, values, color=[SIGN_COLOURS[0] if val >= 0 else SIGN_COLOURS[1] for val in values])
    shown = [i for i in x if errs[i] > 0]
    if shown:
        ax.errorbar(
            shown,
            [values[i] for i in shown],
            yerr=[errs[i] for i in shown],
            fmt="none",
            ecolor="0.15",
            elinewidth=0.8,
            capsize=2,
        )
    ax.axhline(0, color="0.5", lw=0.5)
    ax.set_xticks(x)
    ax.set_xticklabels(labels, rotation=90 if len(labels) > 8 else 0, fontsize=7)
    ax.tick_params(labelsize=7)
    ax.set_title(title, fontsize=9)
    ax.set_xlabel(xlabel + ("; error bars: ± estimated error" if shown else ""), fontsize=8)
    ax.set_ylabel(ylabel, fontsize=8)
    return ax.figure


def _pm(value: float, error: float) -> str:
    """``+3.5±0.02``; the value alone where the error is 0 (read, not integrated) or unknown (NaN)."""
    if error != error or error == 0:
        return f"{value:+.3g}"
    return f"{value:+.3g}±{error:.2g}"


def _first(v):
    return v[0] if isinstance(v, tuple) else v


def _per_channel(t: torch.Tensor) -> torch.Tensor:
    return t if t.dim() <= 2 else t.flatten(2).sum(2)


def _shape(v) -> str:
    if isinstance(v, tuple):
        return "(" + ", ".join(str(list(t.shape)) for t in v) + ")"
    return str(list(v.shape))
