"""Activation maximization (AM), independent AM (IAM) and Representative Substitution (RS).

>>> import torch, torch.nn as nn
>>> torch.manual_seed(0) and None
>>> net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(144, 2))
>>> r = independent_am(net, "1", units=range(4), shape=(1, 8, 8), steps=16)
>>> r.images.shape, r.trace.shape, representative_substitution(r).shape
(torch.Size([4, 1, 8, 8]), torch.Size([16, 4]), torch.Size([4]))

* AM(i) = ``argmax_x a_i(x)``; IAM(i) = ``argmax_x a_i(x) − mean_{j≠i} a_j(x)`` over the same layer's units
  (a unit is a channel, averaged over space; use a post-ReLU layer for the papers' quantities).
* Every unit is one batch row of a single optimization: the ``units`` of one layer are rendered together.
* Images come from a parameterization (``"pixel"`` or ``"fft"``, see :mod:`unitscope.synthesis.params`) that keeps
  them in ``value_range``; each step sees a randomly transformed copy (:class:`~unitscope.synthesis.params.Augment`,
  seeded); the final objective and activations are re-measured on the un-transformed images.
* RS(i) = (number of units of the layer whose activation on unit i's image exceeds ``a_i``) / (units in the layer).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
from ..core.progress import bar as progress_bar

from ..core.capture import Recorder, site_hooks
from ..core.errors import UnitscopeError
from ..core.faults import model_errors
from ..core.inputs import in_model_dtype, model_device, result_dtype
from .objectives import Acts, Objective, channel, independent, unit_values
from .params import Augment, make_param
from ..core.sites import resolve
from ..core.state import analysis_mode, autograd_on
from ..core.types import Layer

__all__ = ["Maximized", "maximize", "activation_maximization", "independent_am", "representative_substitution"]


@dataclass
class Maximized:
    images: torch.Tensor  # [B, C, H, W], un-augmented, in the valid range
    trace: torch.Tensor  # [steps, B] objective on the augmented images during optimization
    objective: torch.Tensor  # [B] objective re-measured on the un-augmented images
    layer: str | None = None
    units: torch.Tensor | None = None  # [B] the unit of each row
    activations: torch.Tensor | None = None  # [B, U] every unit of the layer on each row's final image
    activation_trace: torch.Tensor | None = None  # [steps, B] each row's own unit a_i during optimization

    @property
    def own(self) -> torch.Tensor:
        """``[B]``: each row's unit activation on its final (un-augmented) image."""
        acts, units = _per_unit(self)
        return acts.gather(1, units.view(-1, 1)).squeeze(1)


def _per_unit(result: Maximized) -> tuple[torch.Tensor, torch.Tensor]:
    """``(activations [B, U], units [B])`` of AM/IAM images; a :func:`maximize` of a free objective has none."""
    if result.activations is None or result.units is None:
        raise UnitscopeError(
            "these images have no unit per row (maximize() of a free objective); the layer's "
            "activations and units come with activation_maximization and independent_am"
        )
    return result.activations, result.units


class _RedirectedReLU(torch.autograd.Function):
    """``relu(z)`` whose gradient also reaches a unit that is off everywhere (lucid's "redirected ReLU").

    The value is exactly ``relu(z)``. Backward: for each (row, channel) with some ``z > 0`` the true ReLU gradient;
    for a (row, channel) that is off at every position, the gradient passes where it pushes ``z`` up (it is
    dropped where it would push a negative ``z`` further down), so AM can switch on a unit that starts dead
    instead of stalling at zero gradient.
    """

    @staticmethod
    def forward(ctx, z):
        on = z > 0
        dead = ~on.flatten(2).any(2) if z.dim() > 2 else ~on  # [B, C]: off at every position
        ctx.save_for_backward(on, dead.view(*dead.shape, *([1] * (z.dim() - dead.dim()))))
        return z.clamp_min(0)

    @staticmethod
    def backward(ctx, grad):
        on, dead = ctx.saved_tensors
        # alive (row, channel): the ReLU gradient (where on); dead: the gradient wherever it pushes z up (≤ 0)
        return grad * (on | (dead & (grad <= 0)))


def _redirect_hooks(sites) -> dict:
    """Forward hooks (by site: a ``NAME@K`` site's call only) that give the (non in-place) ``nn.ReLU`` sites a
    redirected gradient."""
    return {
        s: (lambda m, args, out: _RedirectedReLU.apply(args[0]))
        for s in sites
        if type(s.module) is nn.ReLU and not s.module.inplace and not s.use_input
    }


def _forward_acts(model, sites, x, redirect: bool = False) -> dict:
    """``{layer: output}`` of the sites; the forward pass stops once the deepest one has run (the recorder runs it
    to the end while a plain name of a module is not known to run once per pass: a shared one is the error that
    lists its ``NAME@K`` calls)."""
    rec = Recorder(sites, stop_when_done=True)
    with site_hooks(model, _redirect_hooks(sites) if redirect else {}), rec.active():
        model(in_model_dtype(model, x))
    return Acts.recorded(model, sites, {s.name: rec.parts[s.name][0] for s in sites})


def _first_forward(model, sites, x, shape, redirect):
    """The first step's forward pass, with an error that names the images' shape if the model rejects them."""
    with model_errors(
        model,
        inputs=x,
        hint=f"the images had shape {tuple(x.shape)}; if that is wrong, pass "
        "shape=(channels, height, width) of one input example",
    ):
        return _forward_acts(model, sites, x, redirect)


def maximize(
    model: nn.Module,
    objective: Objective,
    *,
    batch: int,
    shape: tuple,
    param="pixel",
    value_range=(0.0, 1.0),
    steps: int = 128,
    lr: float = 0.05,
    augment: Augment | None | bool = True,
    seed: int = 0,
    progress: bool | None = None,
    watch: Objective | None = None,
    redirect_relu: bool = True,
) -> Maximized:
    """Maximize ``objective`` (one value per batch row) over ``batch`` images of ``shape`` ``(C, H, W)``.

    ``param``: ``"pixel"``, ``"fft"``, or a ready parameterization (callable → images, ``parameters()``).
    ``augment``: ``True`` (default seeded :class:`Augment`), ``False``/``None`` (none), or an ``Augment``.
    ``watch``: another objective recorded at every step (``activation_trace``), e.g. the unit's own activation.
    ``redirect_relu``: on ``nn.ReLU`` layers the objective reads, a unit that is off at every position still gets
    the gradient that would switch it on (values are unchanged; see :class:`_RedirectedReLU`).
    The model is only read: eval mode, frozen parameters, hooks removed, everything restored afterwards — also on
    error. The forward pass stops at the deepest layer the objectives read.

    Parameters
    ----------
    model : nn.Module
        The network; only read (eval mode, frozen parameters, hooks removed, all restored afterwards).
    objective : Objective
        What to maximize, one value per batch row: an objective of :mod:`unitscope.objectives` (``channel``,
        ``independent``, ... composed with ``+``, ``-``, ``*``).
    batch : int
        How many images (rows) are optimized together.
    shape : tuple of int
        One input example's shape without the batch dim, e.g. ``(C, H, W)`` (augmentations only for images).
    param : str or parameterization, default "pixel"
        ``"pixel"``, ``"fft"`` (:mod:`unitscope.synthesis.params`), or a ready parameterization (a callable that
        gives the images, with ``parameters()``).
    value_range : tuple of float, default (0.0, 1.0)
        The range the parameterization keeps the images in.
    steps : int, default 128
        Optimization steps (Adam).
    lr : float, default 0.05
        Adam's learning rate.
    augment : Augment, bool or None, default True
        ``True``: a seeded default :class:`unitscope.synthesis.params.Augment` (random transforms each step, images
        ``(C, H, W)`` only); ``False`` / ``None``: none; or an ``Augment`` of your own.
    seed : int, default 0
        Seeds the parameterization's start and the augmentations: the same seed, the same images.
    progress : bool or None, default None
        ``None``: a bar over the steps on a terminal; ``False``: none.
    watch : Objective or None, default None
        Another objective recorded at every step (``activation_trace``), e.g. the unit's own activation.
    redirect_relu : bool, default True
        On ``nn.ReLU`` layers the objective reads, a unit that is off at every position still gets the gradient that
        would switch it on (values unchanged).

    Returns
    -------
    Maximized
        ``images [batch, *shape]`` (un-augmented, in ``value_range``), ``trace [steps, batch]`` (the objective at
        each step), ``objective [batch]`` (re-measured on the final images) and, with ``watch``,
        ``activation_trace [steps, batch]``; in the model's dtype. (``layer``, ``units`` and ``activations`` are
        filled by :func:`activation_maximization` / :func:`independent_am`.)

    Raises
    ------
    UnitscopeError
        ``steps`` or ``batch`` < 1, an objective that reads an unknown layer or units out of range, that gives other
        than one value per row or does not depend on the input, or images of ``shape`` the model rejects.

    Examples
    --------
    >>> import torch.nn as nn
    >>> net = nn.Sequential(nn.Linear(3, 2), nn.ReLU())
    >>> r = maximize(net, channel("1", 0) - channel("1", 1), batch=2, shape=(3,), steps=8, augment=False)
    >>> r.images.shape, r.trace.shape
    (torch.Size([2, 3]), torch.Size([8, 2]))
    """
    if steps < 1 or batch < 1:
        raise UnitscopeError("steps and batch must be positive", steps=steps, batch=batch)
    sites = resolve(model, list(dict.fromkeys(objective.layers + (watch.layers if watch else ()))))
    device = model_device(model, torch.device("cpu"))
    trace = torch.empty(steps, batch)
    watched = torch.empty(steps, batch) if watch is not None else None
    with analysis_mode(model), autograd_on():  # the parameterization too: no inference tensors
        aug = Augment(seed=seed) if augment is True else (augment or None)
        if aug is not None and len(shape) != 3:
            aug = None  # transforms are for images: vectors are optimized as they are
        if isinstance(param, str):
            p = make_param(param, batch, tuple(shape), value_range=value_range, seed=seed, device=device)
        else:
            p = param
        opt = torch.optim.Adam(p.parameters(), lr=lr)
        for step in progress_bar(
            range(steps), desc=f"maximize {objective.name}", unit="step", progress=False if progress is False else None
        ):
            img = p()
            x = aug(img) if aug is not None else img
            acts = (
                _first_forward(model, sites, x, shape, redirect_relu)
                if step == 0
                else _forward_acts(model, sites, x, redirect_relu)
            )
            value = objective(acts)
            if value.shape != (batch,):
                raise UnitscopeError(
                    "an objective must give one value per batch row",
                    objective=objective.name,
                    shape=tuple(value.shape),
                    batch=batch,
                )
            if not value.requires_grad:
                raise UnitscopeError("the objective does not depend on the input", objective=objective.name)
            opt.zero_grad()
            (-value.sum()).backward()
            opt.step()
            trace[step] = value.detach().cpu()
            if watch is not None and watched is not None:
                watched[step] = watch(acts).detach().cpu()
        with torch.no_grad():
            images = p().detach()
            final = objective(_forward_acts(model, sites, images)).cpu()
    rd = result_dtype(model)  # results in the model's dtype, float32 at least
    return Maximized(
        images.cpu().to(rd), trace, final.to(rd), activation_trace=None if watched is None else watched.to(rd)
    )


def _run(model, layer, units, kind, *, shape, spec=None, **kw) -> Maximized:
    with autograd_on():  # the unit indices too: under torch.inference_mode() they would be inference tensors
        (site,) = resolve(model, [layer])
        units = torch.as_tensor([units] if isinstance(units, int) else list(units)).long()
        if units.dim() != 1 or units.numel() == 0:
            raise UnitscopeError(
                "units: a unit index (a channel, a neuron) or a non-empty list of them", layer=site.name
            )
        obj = channel(site.name, units, spec=spec) if kind == "am" else independent(site.name, units, spec=spec)
        r = maximize(model, obj, batch=len(units), shape=shape, watch=channel(site.name, units, spec=spec), **kw)
        with analysis_mode(model), torch.no_grad():
            images = r.images.to(model_device(model, torch.device("cpu")))
            acts = unit_values(_forward_acts(model, [site], images), site.name, spec).cpu()
        r.layer, r.units, r.activations = site.name, units, acts.to(result_dtype(model))
        return r


def activation_maximization(
    model: nn.Module,
    layer: Layer,
    units,
    *,
    shape: tuple,
    param="pixel",
    value_range=(0.0, 1.0),
    steps: int = 128,
    lr: float = 0.05,
    augment: Augment | None | bool = True,
    seed=0,
    progress: bool | None = None,
    redirect_relu: bool = True,
    spec=None,
) -> Maximized:
    """AM images for ``units`` (channels) of ``layer``, rendered together (one batch row per unit).

    ``param``, ``value_range``, ``steps``, ``lr``, ``augment``, ``seed``, ``progress``, ``redirect_relu`` as for
    :func:`maximize`; ``spec``: the unit specification (default by the layer's layout, :mod:`unitscope.core.units`).
    AM(i) = ``argmax_x a_i(x)``: each row maximizes its own unit's activation.

    Parameters
    ----------
    model : nn.Module
        The network; only read (eval mode, frozen parameters, hooks removed, all restored afterwards, also on error).
    layer : str or nn.Module
        One layer: a dotted name (``"NAME@K"`` for the K-th call) or the module; a post-ReLU layer for the papers'
        quantities.
    units : int or sequence of int
        The units to render (one batch row each): indices of the layer's unit specification.
    shape : tuple of int
        One input example's shape without the batch dim, e.g. ``(C, H, W)``.
    param : str or parameterization, default "pixel"
        ``"pixel"``, ``"fft"`` (:mod:`unitscope.synthesis.params`), or a ready parameterization (a callable that
        gives the images, with ``parameters()``).
    value_range : tuple of float, default (0.0, 1.0)
        The range the parameterization keeps the images in.
    steps : int, default 128
        Optimization steps (Adam).
    lr : float, default 0.05
        Adam's learning rate.
    augment : Augment, bool or None, default True
        ``True``: a seeded default :class:`unitscope.synthesis.params.Augment` (random transforms each step, images
        ``(C, H, W)`` only); ``False`` / ``None``: none; or an ``Augment`` of your own.
    seed : int, default 0
        Seeds the parameterization's start and the augmentations: the same seed, the same images.
    progress : bool or None, default None
        ``None``: a bar over the steps on a terminal; ``False``: none.
    redirect_relu : bool, default True
        On ``nn.ReLU`` layers the objective reads, a unit that is off at every position still gets the gradient that
        would switch it on (values unchanged).
    spec : str, UnitSpec or None, default None
        The unit specification (``None``: by the layer's layout — a conv's channels averaged over space, a
        ``[N, D]`` layer's neurons; :mod:`unitscope.core.units`).

    Returns
    -------
    Maximized
        ``images [B, C, H, W]`` (un-augmented, in ``value_range``; ``B = len(units)``, one row per unit),
        ``trace [steps, B]`` (the objective on the augmented images at each step), ``objective [B]`` (re-measured on
        the final images), ``units [B]``, ``activations [B, U]`` (every unit of the layer on each row's image),
        ``activation_trace [steps, B]`` (each row's own unit) and ``own [B]``; in the model's dtype.

    Raises
    ------
    UnitscopeError
        An unknown layer, ``units`` empty or out of range for the layer, ``steps`` < 1, or images of ``shape`` that
        the model rejects (the message names the shape).

    Examples
    --------
    >>> import torch, torch.nn as nn
    >>> torch.manual_seed(0) and None
    >>> net = nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU())
    >>> r = activation_maximization(net, "1", [0, 2], shape=(1, 6, 6), steps=8, progress=False)
    >>> r.images.shape, r.units.tolist(), r.activations.shape, r.own.shape
    (torch.Size([2, 1, 6, 6]), [0, 2], torch.Size([2, 3]), torch.Size([2]))
    """
    return _run(
        model,
        layer,
        units,
        "am",
        shape=shape,
        spec=spec,
        param=param,
        value_range=value_range,
        steps=steps,
        lr=lr,
        augment=augment,
        seed=seed,
        progress=progress,
        redirect_relu=redirect_relu,
    )


def independent_am(
    model: nn.Module,
    layer: Layer,
    units,
    *,
    shape: tuple,
    param="pixel",
    value_range=(0.0, 1.0),
    steps: int = 128,
    lr: float = 0.05,
    augment: Augment | None | bool = True,
    seed=0,
    progress: bool | None = None,
    redirect_relu: bool = True,
    spec=None,
) -> Maximized:
    """IAM images: maximize ``a_i − mean_{j≠i} a_j`` for each unit ``i`` of ``layer`` (one batch row per unit).

    Parameters as for :func:`activation_maximization`. Where AM finds what drives a unit, IAM finds what drives it
    more than the other units of its layer; :func:`representative_substitution` scores how well it succeeded.

    Parameters
    ----------
    model : nn.Module
        The network; only read (eval mode, frozen parameters, hooks removed, all restored afterwards, also on error).
    layer : str or nn.Module
        One layer: a dotted name (``"NAME@K"`` for the K-th call) or the module; a post-ReLU layer for the papers'
        quantities.
    units : int or sequence of int
        The units to render (one batch row each): indices of the layer's unit specification.
    shape : tuple of int
        One input example's shape without the batch dim, e.g. ``(C, H, W)``.
    param : str or parameterization, default "pixel"
        ``"pixel"``, ``"fft"`` (:mod:`unitscope.synthesis.params`), or a ready parameterization (a callable that
        gives the images, with ``parameters()``).
    value_range : tuple of float, default (0.0, 1.0)
        The range the parameterization keeps the images in.
    steps : int, default 128
        Optimization steps (Adam).
    lr : float, default 0.05
        Adam's learning rate.
    augment : Augment, bool or None, default True
        ``True``: a seeded default :class:`unitscope.synthesis.params.Augment` (random transforms each step, images
        ``(C, H, W)`` only); ``False`` / ``None``: none; or an ``Augment`` of your own.
    seed : int, default 0
        Seeds the parameterization's start and the augmentations: the same seed, the same images.
    progress : bool or None, default None
        ``None``: a bar over the steps on a terminal; ``False``: none.
    redirect_relu : bool, default True
        On ``nn.ReLU`` layers the objective reads, a unit that is off at every position still gets the gradient that
        would switch it on (values unchanged).
    spec : str, UnitSpec or None, default None
        The unit specification (``None``: by the layer's layout — a conv's channels averaged over space, a
        ``[N, D]`` layer's neurons; :mod:`unitscope.core.units`).

    Returns
    -------
    Maximized
        ``images [B, C, H, W]`` (un-augmented, in ``value_range``; ``B = len(units)``, one row per unit),
        ``trace [steps, B]`` (the objective on the augmented images at each step), ``objective [B]`` (re-measured on
        the final images), ``units [B]``, ``activations [B, U]`` (every unit of the layer on each row's image),
        ``activation_trace [steps, B]`` (each row's own unit) and ``own [B]``; in the model's dtype.

    Raises
    ------
    UnitscopeError
        An unknown layer, ``units`` empty or out of range for the layer, ``steps`` < 1, or images of ``shape`` that
        the model rejects (the message names the shape).

    Examples
    --------
    >>> import torch, torch.nn as nn
    >>> torch.manual_seed(0) and None
    >>> net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(144, 2))
    >>> r = independent_am(net, "1", units=range(4), shape=(1, 8, 8), steps=16, progress=False)
    >>> r.images.shape, r.trace.shape, r.activations.shape
    (torch.Size([4, 1, 8, 8]), torch.Size([16, 4]), torch.Size([4, 4]))
    """
    return _run(
        model,
        layer,
        units,
        "iam",
        shape=shape,
        spec=spec,
        param=param,
        value_range=value_range,
        steps=steps,
        lr=lr,
        augment=augment,
        seed=seed,
        progress=progress,
        redirect_relu=redirect_relu,
    )


def representative_substitution(result, *, units=None) -> torch.Tensor:
    """``[B]``: for each row's unit i, the share of the layer's units whose activation on i's image exceeds a_i.

    ``result``: a :class:`Maximized` from :func:`independent_am` / :func:`activation_maximization`, or an
    activation table ``[B, U]`` (row b: every unit on unit ``units[b]``'s image) with ``units``.
    RS(i) = (number of units of the layer whose activation on unit i's image exceeds ``a_i``) / (units in the layer):
    0 when the image drives its own unit most.

    Parameters
    ----------
    result : Maximized or Tensor
        A :class:`Maximized` (its ``activations`` and ``units``), or an activation table ``[B, U]``.
    units : sequence of int, Tensor or None, default None
        With a table: the unit of each row (``[B]``); ignored for a ``Maximized``.

    Returns
    -------
    Tensor
        ``[B]``, float: RS per row, in ``[0, 1)``.

    Raises
    ------
    UnitscopeError
        A table without ``units``, or shapes other than activations ``[B, U]`` and one unit per row.

    Examples
    --------
    >>> import torch
    >>> acts = torch.tensor([[3.0, 1.0, 5.0, 4.0], [0.0, 2.0, 1.0, 2.0]])
    >>> representative_substitution(acts, units=[0, 1]).tolist()   # 2 of 4 exceed 3; none exceeds 2
    [0.5, 0.0]
    """
    if isinstance(result, Maximized):
        acts, units = _per_unit(result)
    else:
        acts = torch.as_tensor(result)
        if units is None:
            raise UnitscopeError("an activation table needs units= (the unit of each row)")
        units = torch.as_tensor(units).long()
    if acts.dim() != 2 or units.shape != (acts.shape[0],):
        raise UnitscopeError(
            "RS needs activations [B, U] and one unit per row", activations=tuple(acts.shape), units=tuple(units.shape)
        )
    own = acts.gather(1, units.view(-1, 1))
    return (acts > own).float().sum(1) / acts.shape[1]
