"""A path integral's settings as one frozen object: the baselines it starts from, the rule, the budget, the tolerance,
the completeness check and the memory bounds.

>>> import torch, torch.nn as nn, unitscope as us
>>> net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
>>> path = us.PathConfig(n_steps=16, method="gausslegendre", gap_warning=None)
>>> s = us.conductance(net, torch.ones(2, 3), ["1"], target=0, path=path)
>>> s.settings["n_steps"], s.settings["method"]
(16, 'gausslegendre')
>>> us.conductance(net, torch.ones(2, 3), ["1"], target=0, path=path, n_steps=32)  # doctest: +ELLIPSIS
Traceback (most recent call last):
    ...
unitscope.core.errors.UnitscopeError: n_steps=32 disagrees with path=PathConfig(n_steps=16); give it in one place...

Every function that integrates along the path takes ``path=``: :func:`unitscope.attribute`,
:func:`unitscope.conductance`, :func:`unitscope.internal_influence`, :func:`unitscope.neuron_conductance`,
:func:`unitscope.scan` and :func:`unitscope.atlas`. The functions that mirror Captum's methods (``attribute``,
``conductance``, ``internal_influence``, ``neuron_conductance``) also take Captum's names for four of its fields as
keywords — ``baselines``, ``n_steps``, ``method``, ``internal_batch_size`` —, so that a call written for Captum
works as it is (:data:`CAPTUM_NAMES`). Such a keyword fills a field that ``path`` leaves at its default; one that
disagrees with a field that ``path`` sets is an error.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

from ..core.errors import UnitscopeError
from . import paths

__all__ = ["PathConfig", "CAPTUM_NAMES", "path_config"]

#: The fields of :class:`PathConfig` that the Captum-like functions also take as keywords, under Captum's names.
CAPTUM_NAMES = ("baselines", "n_steps", "method", "internal_batch_size")


@dataclass(frozen=True)
class PathConfig:
    """How a path integral is computed: from ``baselines`` to the inputs, by ``method`` with ``n_steps`` path points,
    to ``rtol``, checked against ``gap_warning``, in chunks of ``internal_batch_size`` rows.

    A frozen dataclass, passed as ``path=`` to :func:`unitscope.attribute`, :func:`unitscope.conductance`,
    :func:`unitscope.internal_influence`, :func:`unitscope.neuron_conductance`, :func:`unitscope.scan` and
    :func:`unitscope.atlas`; change a field with ``dataclasses.replace(path, n_steps=100)``.

    Parameters
    ----------
    baselines : None, float, Tensor or tuple, default None
        The path's start ``x'``: ``None`` (zeros), a scalar, a tensor broadcastable to the inputs, a tuple for tuple
        inputs; with an ``embedding``: zeros, a token id such as the pad id, or embeddings. Not part of ``==`` or the
        repr.
    n_steps : int, default 50
        Path points per example: the budget of evaluations for ``"adaptive"``, the nodes of a fixed rule (≥ 2).
    method : str, default "adaptive"
        ``"adaptive"`` (panels refined where the error estimates of the units looked at are largest), or a fixed
        rule: ``"gausslegendre"``, ``"riemann_left"``, ``"riemann_right"``, ``"riemann_middle"``,
        ``"riemann_trapezoid"``.
    rtol : float, default 1e-3
        The adaptive rule's tolerance, relative to the layer's largest |unit|.
    gap_warning : float or None, default 0.05
        A :class:`unitscope.CompletenessWarning` for a layer that is not ok or whose completeness gap exceeds this
        share of ``|F(x) − F(x')|`` (``None``: no warning); a layer is ok within ``max(rtol, gap_warning)``.
    captum_compatible : bool, default False
        Captum's estimates exactly (``"adaptive"`` then means Captum's ``"gausslegendre"``), for migration and
        parity tests.
    internal_batch_size : int or None, default None
        Path rows (examples × path points) per forward and backward pass: the memory bound (``None``: all at once).
    unit_batch_size : int or None, default 64
        Units whose backward passes run batched together (:func:`unitscope.neuron_conductance`), and the units of one
        chunk of the atlas's per-unit work: memory and speed, never the numbers.

    Raises
    ------
    UnitscopeError
        An unknown ``method`` (the message lists the rules), or ``n_steps`` that is not an integer ≥ 2. Passing
        ``path=`` something else than a ``PathConfig``, or a Captum-named keyword that disagrees with a field the
        ``path`` sets, is an error of the function it is passed to.

    Examples
    --------
    >>> PathConfig(n_steps=8).method, PathConfig().n_steps
    ('adaptive', 50)
    >>> PathConfig(method="simpson")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
        ...
    unitscope.core.errors.UnitscopeError: unknown integration method 'simpson'; choose one of adaptive, ...
    """

    baselines: object = field(default=None, compare=False, repr=False)
    n_steps: int = 50
    method: str = "adaptive"
    rtol: float = 1e-3
    gap_warning: float | None = 0.05
    captum_compatible: bool = False
    internal_batch_size: int | None = None
    unit_batch_size: int | None = 64

    def __post_init__(self):
        if self.method != "adaptive" and self.method not in paths.RULES:
            raise UnitscopeError(
                f"unknown integration method {self.method!r}",
                hint=f"choose one of {', '.join(('adaptive',) + paths.RULES)}",
            )
        if isinstance(self.n_steps, bool) or not isinstance(self.n_steps, int) or self.n_steps < 2:
            raise UnitscopeError("n_steps must be an integer ≥ 2", n_steps=self.n_steps)


def path_config(path: PathConfig | None, default: PathConfig | None = None, **given) -> PathConfig:
    """``path`` (or ``default``, or ``PathConfig()``) with the Captum-named keywords ``given`` that are not ``None``.
    A keyword fills a field that ``path`` leaves at its default; one that disagrees with a field ``path`` sets is an
    error (``baselines``: unless it is the same object)."""
    if path is not None and not isinstance(path, PathConfig):
        raise UnitscopeError(
            "path must be a unitscope.PathConfig",
            got=type(path).__name__,
            hint="e.g. path=us.PathConfig(n_steps=20, method='gausslegendre')",
        )
    given = {k: v for k, v in given.items() if v is not None}
    unknown = sorted(set(given) - {f.name for f in fields(PathConfig)})
    if unknown:
        raise TypeError(f"unknown path settings {unknown}")
    if path is None:
        return replace(default or PathConfig(), **given)
    for k, v in given.items():
        have, unset = getattr(path, k), _DEFAULTS[k]
        if k == "baselines":
            if have is not None and v is not have:
                raise UnitscopeError(
                    "baselines= and path=PathConfig(baselines=...) are different objects", hint=_ONE_PLACE
                )
        elif not (have == unset and type(have) is type(unset)) and not (v == have and type(v) is type(have)):
            raise UnitscopeError(f"{k}={v!r} disagrees with path=PathConfig({k}={have!r})", hint=_ONE_PLACE)
    return replace(path, **given)


_DEFAULTS = {f.name: f.default for f in fields(PathConfig)}
_ONE_PLACE = "give it in one place: in path=PathConfig(...), or as the keyword without path="
