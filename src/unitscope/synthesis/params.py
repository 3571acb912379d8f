"""Image parameterizations and random transforms for activation maximization.

>>> p = Pixel(4, (1, 8, 8), value_range=(0.0, 1.0), seed=0)
>>> img = p()
>>> img.shape, bool(img.min() >= 0) and bool(img.max() <= 1)
(torch.Size([4, 1, 8, 8]), True)
>>> f = FFT(2, (3, 16, 12), value_range=(-1.0, 1.0), seed=0)   # non-square, colour-decorrelated
>>> f().shape
torch.Size([2, 3, 16, 12])

Images are kept in the model's valid input range by a sigmoid. ``FFT`` optimizes a spectrum scaled by 1/frequency
(a smoother, more natural image prior); for RGB it decorrelates colours with the square root of ImageNet's colour
covariance, so that each parameter moves one decorrelated colour component.

``seed``: an int seeds the whole batch; a list seeds each row (its values then do not depend on the batch it is
in — the atlas seeds every unit's image by its unit):

>>> bool((Pixel(3, (1, 4, 4), seed=[7, 8, 9]).raw[1] == Pixel(1, (1, 4, 4), seed=[8]).raw[0]).all())
True
"""

from __future__ import annotations

import math
import numbers
from typing import Sequence

import torch
import torch.nn.functional as F

__all__ = ["Pixel", "FFT", "Augment", "make_param"]

# square root of ImageNet's colour covariance (from its SVD), as used in the feature-visualization literature
_COLOR_SQRT = torch.tensor([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]])
_COLOR = _COLOR_SQRT / _COLOR_SQRT.norm(dim=0).max()


def _row_seeds(seed, batch: int) -> list[int] | None:
    """``None`` for one seed (an int), else one seed per row (checked against ``batch``)."""
    if isinstance(seed, numbers.Integral) or torch.is_tensor(seed) and seed.dim() == 0:
        return None
    seeds = [int(s) for s in seed]
    if len(seeds) != batch:
        raise ValueError(f"{len(seeds)} seeds for {batch} rows: give one seed per row, or one int")
    return seeds


def _randn(batch: int, shape: tuple, seed) -> torch.Tensor:
    """``[batch, *shape]`` standard normal: from one generator, or row by row from its own seed."""
    seeds = _row_seeds(seed, batch)
    if seeds is None:
        return torch.randn((batch, *shape), generator=torch.Generator().manual_seed(int(seed)))
    return (
        torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(s)) for s in seeds])
        if seeds
        else torch.empty((0, *shape))
    )


class _Param:
    def __init__(self, value_range):
        lo, hi = value_range
        if not hi > lo:
            raise ValueError(f"value_range must be (low, high) with high > low, got {value_range}")
        self.lo, self.hi = float(lo), float(hi)

    def _to_range(self, t):
        return self.lo + (self.hi - self.lo) * torch.sigmoid(t)

    def parameters(self):
        return [self.raw]


class Pixel(_Param):
    """One free value per pixel and channel."""

    def __init__(
        self, batch: int, shape: tuple, *, value_range=(0.0, 1.0), init_std: float = 0.1, seed: int = 0, device=None
    ):
        super().__init__(value_range)
        self.raw = (_randn(batch, tuple(shape), seed) * init_std).to(device).requires_grad_(True)

    def __call__(self):
        return self._to_range(self.raw)


class FFT(_Param):
    """A Fourier spectrum per channel, scaled by 1/frequency; colour-decorrelated when there are 3 channels."""

    def __init__(
        self,
        batch: int,
        shape: tuple,
        *,
        value_range=(0.0, 1.0),
        init_std: float = 0.01,
        seed: int = 0,
        decay: float = 1.0,
        device=None,
    ):
        super().__init__(value_range)
        c, h, w = shape
        fy = torch.fft.fftfreq(h).view(-1, 1)
        fx = torch.fft.rfftfreq(w).view(1, -1)
        freq = torch.sqrt(fx**2 + fy**2)
        self.scale = (1.0 / torch.clamp(freq, min=1.0 / max(h, w)) ** decay).to(device)
        self.hw, self.c = (h, w), c
        self.raw = (_randn(batch, (c, h, w // 2 + 1, 2), seed) * init_std).to(device).requires_grad_(True)

    def __call__(self):
        spectrum = torch.view_as_complex(self.raw) * self.scale
        img = torch.fft.irfft2(spectrum, s=self.hw, norm="ortho") / 4.0
        if self.c == 3:
            img = torch.einsum("bchw,dc->bdhw", img, _COLOR.to(img))
        return self._to_range(img)


def make_param(kind: str, batch: int, shape: tuple, **kw):
    if kind == "pixel":
        return Pixel(batch, shape, **kw)
    if kind == "fft":
        return FFT(batch, shape, **kw)
    raise ValueError(f"unknown parameterization {kind!r}: use 'pixel' or 'fft'")


class Augment:
    """Random pad, jitter, scale and rotation, one draw per image, from a seeded generator (reproducible).

    Sizes are fractions of the image side, so the same settings serve 8×8 digits and 224×224 photos. ``seed``: an
    int (one generator for the batch) or one seed per row (row ``i`` always gets the same draws, whatever the batch).
    """

    def __init__(
        self,
        *,
        pad: float = 0.05,
        jitter: float = 0.05,
        scale=(0.95, 1.05),
        degrees: float = 5.0,
        seed: int | Sequence[int] = 0,
        fill: float | None = None,
    ):
        self.pad, self.jitter, self.scale, self.degrees = pad, jitter, scale, degrees
        self.g: torch.Generator | None = None
        self.rows: list[torch.Generator] | None = None
        if isinstance(seed, (int, numbers.Integral)):  # numpy's integers too
            self.g = torch.Generator().manual_seed(int(seed))
        else:
            self.rows = [torch.Generator().manual_seed(s) for s in [int(s) for s in seed]]
        self.fill = fill

    def _rand(self, b: int) -> torch.Tensor:
        if self.rows is None:
            return torch.rand(b, generator=self.g)
        if len(self.rows) != b:
            raise ValueError(f"Augment was seeded for {len(self.rows)} rows, got a batch of {b}")
        return torch.cat([torch.rand(1, generator=g) for g in self.rows])

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        b, c, h, w = img.shape
        p = int(round(self.pad * max(h, w)))
        if p:  # each image padded with its own mean (or ``fill``): rows never depend on each other
            fill = (
                img.detach().mean((1, 2, 3), keepdim=True)
                if self.fill is None
                else torch.full((b, 1, 1, 1), float(self.fill)).to(img)
            )
            img = F.pad(img - fill, (p, p, p, p), value=0.0) + fill
        u = lambda lo, hi: lo + (hi - lo) * self._rand(b)  # noqa: E731
        angle = u(-self.degrees, self.degrees) * math.pi / 180
        s = u(*self.scale)
        tx, ty = u(-2 * self.jitter, 2 * self.jitter), u(-2 * self.jitter, 2 * self.jitter)
        cos, sin = torch.cos(angle) / s, torch.sin(angle) / s
        theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1).to(img)
        grid = F.affine_grid(theta, list(img.shape), align_corners=False)
        out = F.grid_sample(img, grid, mode="bilinear", padding_mode="border", align_corners=False)
        return out[..., p : p + h, p : p + w] if p else out
