"""The inverse-set problem: constraints ``a ≤ f(G(z)) ≤ b`` on units, what a sampler returns, the model and
generator frozen while codes move, and the verification helpers (a fresh forward pass, diversity).

Used by :mod:`unitscope.synthesis.inverse` (the sampler) and :mod:`unitscope.synthesis.inverse_baselines`.
"""

from __future__ import annotations

import math
from contextlib import ExitStack
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from ..core.capture import Recorder
from ..core.errors import UnitscopeError
from ..core.inputs import in_model_dtype
from ..core.sites import resolve
from ..core.slices import channel_slice
from ..core.state import analysis_mode, autograd_on
from .generators import LayerEncoder, PixelEncoder
from .objectives import Acts, channel, element, unit_values

__all__ = ["Constraint", "InverseSet", "InverseSetWarning", "evaluate", "diversity"]


class InverseSetWarning(UserWarning):
    """The range could not be reached (no feasible sample), or fewer samples than asked for were found."""


@dataclass(frozen=True)
class Constraint:
    """``a ≤ unit of layer ≤ b``; ``unit``: an int channel (mean over the other dims) or a tuple element."""

    layer: str
    unit: int | tuple
    a: float
    b: float

    def __str__(self):
        return f"{self.a:g} ≤ {self.layer}[{self.unit}] ≤ {self.b:g}"


@dataclass
class InverseSet:
    """Samples of an inverse set and how they were obtained. Every sample passed a fresh forward check."""

    samples: torch.Tensor  # [N, *x_shape]  G(codes)
    codes: torch.Tensor  # [N, latent_dim]
    activations: torch.Tensor  # [N, n_constraints]  from the fresh verification pass
    constraints: list
    method: str = "augmented_lagrangian"
    proposed: int = 0  # candidate samples the method produced (seeds + sampling steps)
    feasible: int = 0  # ... of which were inside every range when produced
    verified_rate: float = 1.0  # share of kept samples that passed the fresh verification pass
    seeds_feasible: int = 0
    n_seeds: int = 0
    seed_steps: int = 0  # gradient steps of the seed phase
    sample_steps: int = 0  # gradient steps of the sampling phase
    seed_seconds: float = 0.0
    sample_seconds: float = 0.0
    verify_seconds: float = 0.0
    ok: bool = True
    report: str = ""
    closest: list = field(default_factory=list)  # per constraint: (min, max) activation seen on any candidate

    def __len__(self):
        return len(self.codes)

    @property
    def feasible_rate(self) -> float:
        """Share of the candidates the method produced that were inside every range."""
        return self.feasible / self.proposed if self.proposed else 0.0

    @property
    def seconds(self) -> float:
        return self.seed_seconds + self.sample_seconds + self.verify_seconds

    @property
    def samples_per_second(self) -> float:
        return len(self) / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> dict:
        return {
            "method": self.method,
            "n": len(self),
            "ok": self.ok,
            "feasible_rate": self.feasible_rate,
            "verified_rate": self.verified_rate,
            "proposed": self.proposed,
            "seeds_feasible": self.seeds_feasible,
            "n_seeds": self.n_seeds,
            "seed_steps": self.seed_steps,
            "sample_steps": self.sample_steps,
            "seconds": self.seconds,
            "samples_per_second": self.samples_per_second,
        }


# --------------------------------------------------------------------------------------------------- problem set-up


def _as_constraints(constraints) -> list[Constraint]:
    if isinstance(constraints, Constraint) or (
        isinstance(constraints, tuple) and len(constraints) == 4 and isinstance(constraints[0], (str, nn.Module))
    ):
        constraints = [constraints]
    out = []
    for c in constraints:
        if not isinstance(c, Constraint):
            if len(c) != 4:
                raise UnitscopeError("a constraint is (layer, unit, a, b)", got=c)
            c = Constraint(*c)
        a, b = float(c.a), float(c.b)
        if math.isnan(a) or math.isnan(b) or not a < b:
            raise UnitscopeError(
                f"empty range [{a:g}, {b:g}]: need a < b",
                layer=str(c.layer),
                unit=c.unit,
                hint="use a = -inf or b = inf for a one-sided range",
            )
        if not isinstance(c.unit, (int, tuple)) or isinstance(c.unit, bool):
            raise UnitscopeError(
                "a unit is an int (channel) or a tuple (one element)", layer=str(c.layer), got=type(c.unit).__name__
            )
        out.append(Constraint(c.layer, c.unit, a, b))
    if not out:
        raise UnitscopeError("no constraints given", hint="pass (layer, unit, a, b) or a list of them")
    return out


class _Problem:
    """One forward pass of ``G`` and the model for a batch of codes: constraint values ``[B, m]`` and, when the
    encoder reads a layer of the same model, the encoding from the same pass."""

    scale: torch.Tensor  # [m] each range's scale (set by the sampler before the first violation())

    def __init__(self, model, constraints, generator, encoder):
        self.model, self.generator, self.encoder = model, generator, encoder
        sites = resolve(model, [c.layer for c in constraints])
        by_name = {s.name: s for s in sites}
        self.constraints = [
            Constraint(s.name, c.unit, c.a, c.b)
            for c, s in zip(constraints, [resolve(model, [c.layer])[0] for c in constraints])
        ]
        self.shared = isinstance(encoder, LayerEncoder) and encoder.model is model
        if self.shared and encoder.layer not in by_name:
            sites.append(encoder.site)
        self.sites = sites
        self.objectives = [
            channel(c.layer, c.unit) if isinstance(c.unit, int) else element(c.layer, c.unit) for c in self.constraints
        ]
        self.lo = torch.tensor([c.a for c in self.constraints])
        self.hi = torch.tensor([c.b for c in self.constraints])
        self.checked = False
        # channels of one conv layer: computed alone from its input (kept after the first pass agrees)
        one = len(sites) == 1 and not self.shared and all(isinstance(c.unit, int) for c in self.constraints)
        self.slice = channel_slice(model, sites[0]) if one else None
        self.full = True  # the first pass runs the whole layer, and the slice is checked against it

    def _check_units(self, acts):
        for c in self.constraints:
            t = acts[c.layer]
            if isinstance(c.unit, int):
                spec = acts.specs.get(c.layer)
                n = (spec.n_units(tuple(t.shape), c.layer) if spec is not None else t.shape[1]) if t.dim() > 1 else 0
                word = {"tokens": "neuron", "heads": "head"}.get(getattr(spec, "layout", ""), "channel")
                if not 0 <= c.unit < n:
                    raise UnitscopeError(
                        f"{word} {c.unit} out of range for layer {c.layer!r}",
                        layer=c.layer,
                        shape=tuple(t.shape[1:]),
                        hint=f"{word}s are 0 … {n - 1}",
                    )
            else:
                shape = tuple(t.shape[1:])
                if len(c.unit) != len(shape) or any(not -s <= i < s for i, s in zip(c.unit, shape)):
                    raise UnitscopeError(
                        f"element {c.unit} does not exist in layer {c.layer!r}",
                        layer=c.layer,
                        shape=shape,
                        hint="a tuple unit indexes one element of the per-example output; an int is a channel",
                    )
        self.checked = True

    def __call__(self, z, full: bool = False):
        """``(x, f [B, m], h [B, D])``; ``full``: through the whole layer, not its channels alone."""
        x = in_model_dtype(self.model, self.generator(z))
        if self.slice is not None and not (full or self.full):
            return x, self._sliced(x), self.encoder(x).flatten(1)
        rec = Recorder(self.sites, stop_when_done=True)
        with rec.active():
            self.model(x)
        acts = Acts.recorded(
            self.model, self.sites, {s.name: rec.parts[s.name][0] for s in self.sites}, getattr(self, "specs", None)
        )
        self.specs = acts.specs
        if not self.checked:
            self._check_units(acts)
        f = torch.stack([o(acts) for o in self.objectives], 1)
        h = self.encoder.features(acts) if self.shared else self.encoder(x)
        if self.slice is not None and self.full and not full:  # a pass asked to be full checks nothing
            self._try_slice(x, f)
        return x, f, h.flatten(1)

    def _sliced(self, x):
        """``f [B, m]`` through the slice: the constraints' channels alone, from the convolution's input."""
        name = self.slice.site.name
        y = self.slice.values(self.slice.input_of(self.model, x), self.slice_units)
        return unit_values(Acts({name: y}, self.specs), name)[:, self.slice_cols]

    def _try_slice(self, x, f):
        """After the first full pass: keep the slice if the layer's unit spec is channels and it gives ``f``."""
        self.full = False
        if getattr(self.specs.get(self.slice.site.name), "layout", None) != "channels":
            self.slice = None
            return
        units = sorted({c.unit for c in self.constraints})
        self.slice_units = torch.tensor(units)
        self.slice_cols = [units.index(c.unit) for c in self.constraints]
        with torch.no_grad():
            m = self._sliced(x.detach())
        if not self.slice.agrees(m, f):
            self.slice = None

    def inside(self, f):
        return ((f >= self.lo.to(f)) & (f <= self.hi.to(f))).all(1)

    def violation(self, f):
        """Per row: the largest distance outside a range, in units of that range's scale."""
        return ((self.lo.to(f) - f).clamp(min=0) + (f - self.hi.to(f)).clamp(min=0)).div(self.scale.to(f)).amax(1)


def _frozen(model, generator, encoder):
    """Analysis mode for the model, the generator's modules and the encoder's model (each once), with gradients on
    (also when the caller is inside ``torch.no_grad()`` or ``torch.inference_mode()``)."""
    stack = ExitStack()
    stack.enter_context(autograd_on())
    seen = set()
    mods = [model] + list(getattr(generator, "modules", lambda: [])()) + [getattr(encoder, "model", None)]
    for m in mods:
        if isinstance(m, nn.Module) and id(m) not in seen:
            seen.add(id(m))
            stack.enter_context(analysis_mode(m))
    return stack


def _project(generator, z):
    proj = getattr(generator, "project", None)
    return proj(z) if proj is not None else z


def _spread(h, pool_sum=None, pool_sqsum=None, pool_n=0):
    """Per row: mean squared distance to the other rows (+ mean squared distance to the pool of earlier
    samples), from sums so that it costs O(B·D) per step."""
    b = h.shape[0]
    sq = (h * h).sum(1)
    within = (b * sq + sq.sum() - 2 * h @ h.sum(0)) / max(b - 1, 1) if b > 1 else torch.zeros_like(sq)
    if pool_n:
        within = within + sq + pool_sqsum / pool_n - 2 * h @ (pool_sum / pool_n)
    return within


def _closest_report(constraints, fmin, fmax, best_violation):
    lines = []
    for c, lo, hi in zip(constraints, fmin.tolist(), fmax.tolist()):
        lines.append(f"  {c}: activations seen on the way ranged over [{lo:.4g}, {hi:.4g}]")
    return "\n".join(lines) + f"\n  smallest violation reached: {best_violation:.3g} (in units of the range width)"


# ------------------------------------------------------------------------------------------- verification helpers


def evaluate(
    model: nn.Module, constraints, x: torch.Tensor, *, batch_size: int = 256
) -> tuple[torch.Tensor, torch.Tensor]:
    """A fresh forward pass: ``(activations [N, m], inside [N])`` of ``x`` for the constraints.

    >>> net = nn.Sequential(nn.Linear(2, 1))
    >>> with torch.no_grad():
    ...     _ = net[0].weight.fill_(1.0), net[0].bias.zero_()
    >>> evaluate(net, ("0", 0, 0.0, 1.0), torch.tensor([[0.2, 0.3], [1.0, 1.0]]))[1].tolist()
    [True, False]
    """
    cons = _as_constraints(constraints)
    prob = _Problem(model, cons, lambda z: z, PixelEncoder())
    fs = []
    with analysis_mode(model), torch.no_grad():
        for i in range(0, len(x), batch_size):
            fs.append(prob(x[i : i + batch_size], full=True)[1])
    f = torch.cat(fs) if fs else torch.empty(0, len(cons))
    return f.cpu(), prob.inside(f).cpu()


def diversity(samples: torch.Tensor, *, encoder=None, batch_size: int = 512) -> dict:
    """Mean pairwise Euclidean distance of the samples in pixel space and (with ``encoder``) in ``E``-space.

    >>> diversity(torch.tensor([[0.0, 0.0], [3.0, 4.0]]))["pixel"]
    5.0
    """
    out = {"pixel": float(torch.pdist(samples.flatten(1).double()).mean()) if len(samples) > 1 else 0.0}
    if encoder is not None:
        with torch.no_grad():
            h = torch.cat([encoder(samples[i : i + batch_size]) for i in range(0, len(samples), batch_size)])
        out["encoder"] = float(torch.pdist(h.flatten(1).double()).mean()) if len(h) > 1 else 0.0
    return out
