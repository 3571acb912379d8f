"""Activation maximization (AM), independent AM (IAM) and Representative Substitution (RS).

>>> import torch, torch.nn as nn
>>> net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(144, 2))
>>> r = independent_am(net, "1", units=range(4), shape=(1, 8, 8), steps=16)
>>> r.images.shape, r.trace.shape, representative_substitution(r).shape
(torch.Size([4, 1, 8, 8]), torch.Size([16, 4]), torch.Size([4]))

* AM(i) = ``argmax_x a_i(x)``; IAM(i) = ``argmax_x a_i(x) − mean_{j≠i} a_j(x)`` over the same layer's units.
* Every unit is one batch row of a single optimization: ``units`` of one layer are rendered together.
* RS(i) = (number of units of the layer whose activation on unit i's image exceeds ``a_i``) / (units in the layer).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from .capture import Recorder
from .errors import UnitscopeError
from .objectives import Objective, channel, independent
from .params import Augment, make_param
from .selectivity import channel_means
from .sites import resolve
from .state import analysis_mode

__all__ = ["Maximized", "maximize", "activation_maximization", "independent_am", "representative_substitution"]


@dataclass
class Maximized:
    images: torch.Tensor       # [B, C, H, W], un-augmented, in the valid range
    trace: torch.Tensor        # [steps, B] objective on the augmented images during optimization
    objective: torch.Tensor    # [B] objective re-measured on the un-augmented images
    layer: str | None = None
    units: torch.Tensor | None = None       # [B] the unit of each row
    activations: torch.Tensor | None = None  # [B, U] every unit of the layer on each row's image (channel means)


def _forward_acts(model, sites, x) -> dict:
    rec = Recorder(sites, stop_when_done=True)
    with rec.active():
        model(x)
    return {s.name: rec.parts[s.name][0] for s in sites}


def maximize(model: nn.Module, objective: Objective, *, batch: int, shape: tuple, param: str = "pixel",
             value_range=(0.0, 1.0), steps: int = 128, lr: float = 0.05, augment: Augment | None | bool = True,
             seed: int = 0, progress: bool | None = None) -> Maximized:
    """Maximize ``objective`` (one value per batch row) over ``batch`` images of ``shape`` ``(C, H, W)``.

    The model is only read: eval mode, frozen parameters, everything restored afterwards. The forward pass stops
    at the deepest layer the objective reads.
    """
    sites = resolve(model, list(objective.layers))
    device = next((p.device for p in model.parameters()), None)
    p = make_param(param, batch, tuple(shape), value_range=value_range, seed=seed, device=device)
    aug = Augment(seed=seed) if augment is True else (augment or None)
    opt = torch.optim.Adam(p.parameters(), lr=lr)
    trace = torch.empty(steps, batch)
    with analysis_mode(model):
        for step in tqdm(range(steps), desc=f"maximize {objective.name}", unit="step", leave=False,
                         disable=True if progress is False else None):
            img = p()
            x = aug(img) if aug is not None else img
            value = objective(_forward_acts(model, sites, x))
            if not value.requires_grad:
                raise UnitscopeError("the objective does not depend on the input", objective=objective.name)
            opt.zero_grad()
            (-value.sum()).backward()
            opt.step()
            trace[step] = value.detach().cpu()
        with torch.no_grad():
            images = p().detach()
            final = objective(_forward_acts(model, sites, images)).cpu()
    return Maximized(images.cpu(), trace, final)


def _run(model, layer, units, kind, *, shape, **kw) -> Maximized:
    (site,) = resolve(model, [layer])
    units = torch.as_tensor(list(units) if not isinstance(units, int) else [units]).long()
    obj = channel(site.name, units) if kind == "am" else independent(site.name, units)
    r = maximize(model, obj, batch=len(units), shape=shape, **kw)
    with analysis_mode(model), torch.no_grad():
        acts = channel_means(_forward_acts(model, [site], r.images.to(
            next((p.device for p in model.parameters()), None)))[site.name]).cpu()
    n = acts.shape[1]
    if int(units.max()) >= n or int(units.min()) < 0:
        raise UnitscopeError(f"unit out of range for layer {site.name!r}", layer=site.name, units=n)
    r.layer, r.units, r.activations = site.name, units, acts
    return r


def activation_maximization(model: nn.Module, layer, units, *, shape: tuple, **kw) -> Maximized:
    """AM images for ``units`` (channels) of ``layer``, rendered together (one batch row per unit)."""
    return _run(model, layer, units, "am", shape=shape, **kw)


def independent_am(model: nn.Module, layer, units, *, shape: tuple, **kw) -> Maximized:
    """IAM images: maximize ``a_i − mean_{j≠i} a_j`` for each unit ``i`` of ``layer`` (one batch row per unit)."""
    return _run(model, layer, units, "iam", shape=shape, **kw)


def representative_substitution(result: Maximized) -> torch.Tensor:
    """``[B]``: for each row's unit i, the share of the layer's units whose activation on i's image exceeds a_i."""
    acts, units = result.activations, result.units
    own = acts.gather(1, units.view(-1, 1))
    return (acts > own).float().sum(1) / acts.shape[1]
