"""Streaming per-unit histograms that merge exactly: the same counts whatever the batching, the order of the
batches or the number of processes.

>>> h = Histograms(2, bins=8)
>>> h.update(torch.tensor([[0.0, 1.0], [1.0, 3.0]], dtype=torch.float64))
>>> h.update(torch.tensor([[2.0, -1.0]], dtype=torch.float64))
>>> h.counts.sum(1).tolist(), h.min.tolist(), h.max.tolist()
([3.0, 3.0], [0.0, -1.0], [2.0, 3.0])
>>> a, b = Histograms(2, bins=8), Histograms(2, bins=8)
>>> a.update(torch.tensor([[2.0, -1.0]], dtype=torch.float64))
>>> b.update(torch.tensor([[0.0, 1.0], [1.0, 3.0]], dtype=torch.float64))
>>> torch.equal(Histograms.merged([a.state(), b.state()], bins=8).counts, h.counts)
True

Bins have width ``2**e`` and edges on multiples of it; ``e`` is the smallest exponent (≥ ``E_MIN``) at which the
unit's range ``[min, max]`` fits in ``bins`` bins. That exponent depends only on the range seen, and a bin of width
``2**e`` is exactly the union of two bins of width ``2**(e−1)``, so re-binning when the range grows loses nothing
and the result does not depend on how the data arrived.
"""

from __future__ import annotations

import torch

__all__ = ["Histograms", "E_MIN"]

E_MIN = -40


def _floor_div_pow2(v: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
    """``floor(v / 2**e)`` exactly (scaling by a power of two is exact in floating point)."""
    return torch.floor(torch.ldexp(v, -e)).long()


def _fit(vmin: torch.Tensor, vmax: torch.Tensor, bins: int) -> torch.Tensor:
    """The smallest exponent ``e ≥ E_MIN`` at which ``[vmin, vmax]`` spans at most ``bins`` bins."""
    empty = ~(vmax >= vmin)
    lo, hi = torch.where(empty, 0.0, vmin), torch.where(empty, 0.0, vmax)
    width = (hi - lo).clamp(min=0)
    guess = torch.where(width > 0, torch.ceil(torch.log2(width / bins)) - 1, torch.full_like(width, E_MIN))
    e = guess.clamp(min=E_MIN).long()
    while True:
        span = _floor_div_pow2(hi, e) - _floor_div_pow2(lo, e) + 1
        wide = span > bins
        if not bool(wide.any()):
            return e
        e = e + wide.long()


def _rebin(counts, lo, e, new_lo, new_e):
    """Counts of bins ``lo + j`` at width ``2**e`` moved to bins ``new_lo + j`` at width ``2**new_e ≥ 2**e``."""
    u, b = counts.shape
    j = torch.arange(b).view(1, -1)
    idx = torch.div(lo.view(-1, 1) + j, (2 ** (new_e - e)).view(-1, 1), rounding_mode="floor") - new_lo.view(-1, 1)
    keep = counts > 0
    out = torch.zeros_like(counts)
    out.scatter_add_(1, torch.where(keep, idx, 0).clamp(0, b - 1), torch.where(keep, counts, 0))
    return out


class Histograms:
    """``U`` histograms of ``bins`` bins: ``counts [U, bins]``, first bin index ``lo [U]``, exponent ``e [U]``,
    ``min``/``max`` ``[U]`` (float64)."""

    def __init__(self, units: int, *, bins: int = 128):
        self.bins = int(bins)
        self.counts = torch.zeros(units, self.bins, dtype=torch.float64)
        self.lo = torch.zeros(units, dtype=torch.long)
        self.e = torch.full((units,), E_MIN, dtype=torch.long)
        self.min = torch.full((units,), torch.inf, dtype=torch.float64)
        self.max = torch.full((units,), -torch.inf, dtype=torch.float64)

    def _grow(self, vmin, vmax):
        e = torch.maximum(self.e, _fit(vmin, vmax, self.bins))
        lo = _floor_div_pow2(torch.where(vmax >= vmin, vmin, 0.0), e)
        self.counts = _rebin(self.counts, self.lo, self.e, lo, e)
        self.lo, self.e, self.min, self.max = lo, e, vmin, vmax

    def update(self, values: torch.Tensor) -> None:
        """Add ``values [B, U]``."""
        if values.numel() == 0:
            return
        v = values.double()
        self._grow(torch.minimum(self.min, v.min(0).values), torch.maximum(self.max, v.max(0).values))
        idx = (_floor_div_pow2(v, self.e.view(1, -1)) - self.lo.view(1, -1)).clamp(0, self.bins - 1)
        self.counts.scatter_add_(1, idx.T, torch.ones_like(v.T))

    def state(self) -> dict:
        return {"counts": self.counts, "lo": self.lo, "e": self.e, "min": self.min, "max": self.max}

    @classmethod
    def from_state(cls, state: dict) -> "Histograms":
        h = cls(state["counts"].shape[0], bins=state["counts"].shape[1])
        h.counts, h.lo, h.e, h.min, h.max = (state[k].clone() for k in ("counts", "lo", "e", "min", "max"))
        return h

    @classmethod
    def merged(cls, states: list[dict], *, bins: int) -> "Histograms":
        """One histogram from several (e.g. one per process); exact."""
        states = [s for s in states if s]
        out = cls(states[0]["counts"].shape[0], bins=bins)
        vmin = torch.stack([s["min"] for s in states]).min(0).values
        vmax = torch.stack([s["max"] for s in states]).max(0).values
        out._grow(vmin, vmax)
        for s in states:
            out.counts += _rebin(s["counts"], s["lo"], s["e"], out.lo, out.e)
        return out

    def edges(self) -> torch.Tensor:
        """``[U, bins + 1]`` bin edges."""
        j = torch.arange(self.bins + 1, dtype=torch.float64).view(1, -1)
        return torch.ldexp(self.lo.view(-1, 1).double() + j, self.e.view(-1, 1))

    def quantile(self, q: float) -> torch.Tensor:
        """``[U]``: the ``q``-quantile (``0 ≤ q ≤ 1``), linear within a bin, clipped to ``[min, max]``.

        >>> h = Histograms(1, bins=64)
        >>> h.update(torch.arange(101, dtype=torch.float64).view(-1, 1))
        >>> round(float(h.quantile(0.5)), 1), float(h.quantile(1.0))
        (50.5, 100.0)
        """
        total = self.counts.sum(1, keepdim=True)
        cum = self.counts.cumsum(1)
        target = q * total
        j = torch.searchsorted(cum, target).clamp(max=self.bins - 1)
        before = torch.where(j > 0, cum.gather(1, (j - 1).clamp(min=0)), torch.zeros_like(target))
        inbin = self.counts.gather(1, j).clamp(min=1e-300)
        frac = ((target - before) / inbin).clamp(0, 1)
        e = self.edges()
        left, right = e.gather(1, j), e.gather(1, j + 1)
        return (left + frac * (right - left)).squeeze(1).clamp(min=self.min, max=self.max)
