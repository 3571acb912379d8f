"""Adaptive path points for conductance: refine where the error of the units a user looks at is.

The path of each example is cut into panels ``[α_a, α_m, α_b]`` (three nodes, ends shared with the
neighbours). On a panel, for every unit of every layer, the Stieltjes trapezoid on the two halves
``T₂ = ½(g_a+g_m)(y_m−y_a) + ½(g_m+g_b)(y_b−y_m)`` is the estimate and ``T₁ = ½(g_a+g_b)(y_b−y_a)`` on the
whole panel its embedded coarse rule: ``T₂ − T₁`` is, up to a constant, the panel's error (Richardson on
nested nodes; ``ERROR_FACTOR`` below). A unit's error over the path is ``max(|Σ_p e_p|, √Σ_p e_p², √Σ_p Σ_i e_{p,i}²)``
(``estimates.combine_units``): signed panel errors that add up on smooth paths; the root sum of squares where
kinks make them random — of the unit's own panel errors (a channel's summed over its positions before squaring,
so positions that cancel within a panel do not hide it) and of its elements' — plus the rounding floor.

At the end, a layer whose path is smooth (the example's sibling panels show the error falling faster than h:
``_extrapolate``) gets one Romberg step — each panel's Simpson value ``T₂ + (T₂ − T₁)/3`` — and its error
estimate scaled by the measured ratio; at kinks (ReLU nets) the trapezoid stays. The refinement itself is
driven by the trapezoid's errors.

Each round splits, per example, the panels with the largest error on the watched units (the ``watch``
largest |units| per example and layer, channels for conv layers, relative to the layer's largest |unit|)
and, on layers that are cuts (their gap is explained by their error estimate), with the largest completeness
gap. Splitting a panel costs two evaluations (its quarter points). An example stops once every layer's
watched units are within ``rtol`` (and the gap of cut layers within ``rtol · |F(x) − F(x')|``) or its
``budget`` is spent; what did not converge is diagnosed (``estimates.diagnose``).

Memory: the values and gradients of every site at every node of the examples in one block are kept,
``budget × units × 2`` floats per example, plus per panel and reduced unit (a channel) four numbers
(``budget / 2`` panels); a round costs in proportion to the panels it splits; ``internal_batch_size`` bounds the
rows per pass and the examples per block (``max(1, internal_batch_size // budget)``). The elementwise totals are
taken once, at the end, on each example's nodes in path order (temporaries of ``budget`` nodes × units per example
of the block).

Bookkeeping is over the block's examples at once: the nodes and panels of all of them are tensors, and each step
(scores, the choice of panels, the splits, the totals) is one batched operation per group of examples with as many
panels (or splits), never a loop over examples. Grouping keeps every sum over panels the length and order it has
for one example, so an example's numbers do not depend on the others in its block.
"""

from __future__ import annotations

from typing import cast

import torch

from .engine import PathSums, evaluate
from .tiles import joined as _joined
from .tiles import tiles as _tiles
from .estimates import ERROR_FACTOR, SINGULAR_RATIO, combine, combine_units, reduce_units, rounding
from ..core.inputs import Batch, Target
from ..core.progress import bar as progress_bar
from ..core.sites import Site

__all__ = ["integrate_adaptive"]

MIN_PAIRS = 4  # fewer sibling pairs measure no order: the trapezoid stays
SMOOTH = 0.7  # an example's layer is extrapolated where Σ|R₁ − R₀| ≤ SMOOTH · Σ|T₄ − T₂| over its sibling pairs
CUT_GAP = 0.1  # a layer whose gap is below this share of |F(x) − F(x')| (or explained by its errors) is a cut
F64 = torch.float64


def _groups(sizes: torch.Tensor, rows: torch.Tensor | None = None) -> list[tuple[int, torch.Tensor]]:
    """``rows`` (default: all) grouped by their value in ``sizes``: ``[(value, rows)]``, rows ascending.

    Examples with as many panels (or as many splits in a round) are reduced together, so every sum over panels has
    the length and the order it has for one example alone: the results are those of the rule applied example by
    example, to the bit (torch's sums group their terms by the length of the summed dimension)."""
    if rows is None:
        rows = torch.arange(sizes.numel())
    s = sizes[rows]
    return [(int(v), rows[s == v]) for v in torch.unique(s)]


def _rectangle(ex: torch.Tensor, k: torch.Tensor, count: torch.Tensor) -> tuple[int, int, int, int] | None:
    """``(e0, e1, c0, kk)`` when rows ``ex`` (grouped by example, ascending; ``k`` per example) are ``kk`` new nodes
    for each of the examples ``e0 … e1 − 1``, which all hold ``c0`` nodes: their slots are the buffers' rectangle
    ``[e0:e1, c0:c0 + kk]``, in row order. ``None`` otherwise."""
    e0, e1 = int(ex[0]), int(ex[-1]) + 1
    kk = int(k[e0])
    if ex.numel() != (e1 - e0) * kk or not bool((k[e0:e1] == kk).all()):
        return None
    c0 = int(count[e0])
    return (e0, e1, c0, kk) if bool((count[e0:e1] == c0).all()) else None


def _nodes(buf: torch.Tensor, rows: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``buf[rows, idx]`` (``rows`` ``[G, 1]``, ``idx`` ``[G, L]``: ``[G, L, ...]``, a copy) by ``index_select`` on the
    buffer's flat rows, which takes less than half the time of indexing by two tensors."""
    flat = (rows * buf.shape[1] + idx).flatten()
    return buf.flatten(0, 1).index_select(0, flat).view(*idx.shape, *buf.shape[2:])


def _put(buf: torch.Tensor, p: torch.Tensor, block, e_d, s_d) -> None:
    """Rows ``p`` into the node buffer ``buf`` at examples ``e_d``, slots ``s_d``; as a plain copy into the rectangle
    ``block`` (:func:`_rectangle`) where there is one (indexed writes cost several times a copy)."""
    if block is None:
        buf[e_d, s_d] = p
        return
    e0, e1, c0, kk = block
    buf[e0:e1, c0 : c0 + kk].copy_(p.view(e1 - e0, kk, *p.shape[1:]))


def _sum64(t: torch.Tensor) -> torch.Tensor:
    """Rows of ``t`` ``[R, K]`` summed in float64: converted first, then reduced (``sum(dtype=float64)`` on a float32
    tensor takes several times as long on the CPU)."""
    return t.double().sum(1)


def _terms(ga, gm, gb, ya, ym, yb):
    """A panel's Stieltjes trapezoid on its two halves ``T₂`` and its error ``ERROR_FACTOR · (T₂ − T₁)``.

    ``ga``, ``gm`` and ``gb`` are fresh copies (gathered from the node buffers) that this overwrites: on layer-sized
    tensors the cost is the memory the temporaries take, so the arithmetic runs in place, in the order of
    ``T₂ = ½(g_a + g_m)(y_m − y_a) + ½(g_m + g_b)(y_b − y_m)``, ``T₁ = ½(g_a + g_b)(y_b − y_a)`` (the same bits)."""
    t1 = (ga + gb).mul_(0.5)
    d = yb - ya
    t1.mul_(d)
    t2 = ga.add_(gm).mul_(0.5).mul_(torch.sub(ym, ya, out=d))
    t2.add_(gm.add_(gb).mul_(0.5).mul_(torch.sub(yb, ym, out=d)))
    return t2, torch.sub(t2, t1, out=d).mul_(ERROR_FACTOR)


class _Block:
    """The nodes of a block of examples (``[E, budget, ...]`` buffers, each example's filled in order of evaluation)
    and their panels (``[E, cap]`` node indices; example ``e`` has ``P[e]`` of them, in its own order).

    While the panels are refined only what the choice of panels reads is kept, per panel and reduced unit
    (``reduce_units``: a channel, a token-major neuron): ``T₂``, ``e``, ``e²`` (summed over the unit's elements) and
    ``|T₂|``, each ``[E, cap, units]``, and the panel's completeness gap per site. A split computes its two halves
    only. The elementwise totals are taken once at the end (:meth:`final`), on the nodes in path order, where the
    panels tile ``[0, 1]`` as consecutive node triples."""

    def __init__(self, E: int, budget: int, names: list[str]):
        self.E, self.budget, self.names = E, budget, names
        self.cap = max(1, (budget - 1) // 2)
        self.alpha = torch.zeros(E, budget, dtype=F64)
        self.F = torch.zeros(E, budget, dtype=F64)
        self.norm2 = torch.zeros(E, budget, dtype=F64)  # |∂F/∂y|² of every site at each node
        self.count = torch.zeros(E, dtype=torch.long)
        self.y: dict[str, list[torch.Tensor]] = {}
        self.g: dict[str, list[torch.Tensor]] = {}
        self.g2: dict[str, list[torch.Tensor]] = {}  # per part |∂F/∂y|² at each node [E, budget]
        self.a, self.m, self.b = (torch.zeros(E, self.cap, dtype=torch.long) for _ in range(3))
        self.P = torch.zeros(E, dtype=torch.long)
        self.per_panel: dict[str, list[list[torch.Tensor]]] = {}  # per part [T₂, e, e², |T₂|] each [E, cap, units]
        self.gap = torch.zeros(E, self.cap, len(names), dtype=F64)
        self.F_start = self.F_end = torch.zeros(E, dtype=F64)  # F at α = 0 and α = 1

    def on(self, t: torch.Tensor, name: str) -> torch.Tensor:
        dev = self.y[name][0].device
        return t if t.device == dev else t.to(dev)

    def add(self, ex, alpha, F, ys: dict, gs: dict) -> torch.Tensor:
        """Rows ``(ex[r], alpha[r])`` (grouped by example, ascending) appended to their examples' nodes; their slots."""
        k = torch.bincount(ex, minlength=self.E)
        start = torch.cumsum(k, 0) - k
        slot = self.count[ex] + torch.arange(ex.numel()) - start[ex]
        self.alpha[ex, slot], self.F[ex, slot] = alpha, F
        block = _rectangle(ex, k, self.count)
        for name in self.names:
            if name not in self.y:  # slots past an example's count are never read
                self.y[name] = [p.new_empty((self.E, self.budget, *p.shape[1:])) for p in ys[name]]
                self.g[name] = [p.new_empty((self.E, self.budget, *p.shape[1:])) for p in gs[name]]
                self.g2[name] = [torch.zeros(self.E, self.budget, dtype=F64) for _ in gs[name]]
            e_d, s_d = (None, None) if block is not None else (self.on(ex, name), self.on(slot, name))
            for buf, p in zip(self.y[name], ys[name]):
                _put(buf, p, block, e_d, s_d)
            for buf, sq, p in zip(self.g[name], self.g2[name], gs[name]):
                _put(buf, p, block, e_d, s_d)
                v = torch.linalg.vector_norm(p.flatten(1), dim=1).double().square().cpu()  # one pass, no temporary
                sq[ex, slot] = v
                self.norm2[ex, slot] += v
        self.count += k
        return slot

    def _panels(self, ex, nodes):
        """For panels given by their nodes ``(a, m, b)`` ``[G, L]`` each (one list per group of panels, joined in
        order) of examples ``ex`` ``[G]``: per site and part ``[T₂, e, e², |T₂|]`` per reduced unit
        ``[G, L, units]``, and the panels' gaps ``[G, L, sites]``."""
        G = ex.numel()
        out, gaps = {}, []
        for name in self.names:
            rows = self.on(ex, name)[:, None]
            out[name], layer = [], 0.0
            for y, g in zip(self.y[name], self.g[name]):
                pieces, layers = [], []
                for a, m, b in nodes:
                    ia, im, ib = (self.on(t, name) for t in (a, m, b))
                    L = a.shape[1]
                    t2, e = _terms(*(_nodes(t, rows, i) for t in (g, y) for i in (ia, im, ib)))
                    t2, e = t2.flatten(0, 1), e.flatten(0, 1)
                    pieces.append([reduce_units(t).view(G, L, -1) for t in (t2, e, e.pow(2), t2.abs())])
                    layers.append(_sum64(t2.flatten(1)).cpu().view(G, L))
                out[name].append([torch.cat(parts, 1) for parts in zip(*pieces)])
                layer = layer + torch.cat(layers, 1)
            gaps.append(layer)
        dF = torch.cat([self.F[ex[:, None], b] - self.F[ex[:, None], a] for a, _, b in nodes], 1)
        L = dF.shape[1]
        return out, torch.stack([dF - lay for lay in gaps], 2) if gaps else torch.empty(G, L, 0, dtype=F64)

    def set_panels(self, ex, a, m, b) -> None:
        """Examples ``ex`` get the panels ``(a, m, b)`` ``[G, L]``, their terms and gaps."""
        L = a.shape[1]
        self.a[ex, :L], self.m[ex, :L], self.b[ex, :L], self.P[ex] = a, m, b, L
        out, gap = self._panels(ex, [(a, m, b)])
        for name in self.names:
            if name not in self.per_panel:
                self.per_panel[name] = [
                    [t.new_zeros((self.E, self.cap, t.shape[2])) for t in terms] for terms in out[name]
                ]
            exd = self.on(ex, name)
            for store, terms in zip(self.per_panel[name], out[name]):
                for buf, t in zip(store, terms):
                    buf[exd, :L] = t
        self.gap[ex, :L] = gap

    def split(self, ex, c, q1, q2) -> None:
        """Panels ``c`` ``[G, k]`` of examples ``ex``: ``(a, m, b)`` → ``(a, q1, m)`` in place and ``(m, q2, b)``
        appended; only the halves are computed."""
        G, k = c.shape
        e2 = ex[:, None]
        a, m, b = self.a[e2, c], self.m[e2, c], self.b[e2, c]
        out, gap = self._panels(ex, [(a, q1, m), (m, q2, b)])
        pos = self.P[ex][:, None] + torch.arange(k)
        for name in self.names:
            exd, cd, posd = self.on(ex, name)[:, None], self.on(c, name), self.on(pos, name)
            for store, terms in zip(self.per_panel[name], out[name]):
                for buf, t in zip(store, terms):
                    buf[exd, cd], buf[exd, posd] = t[:, :k], t[:, k:]
        self.gap[e2, c], self.gap[e2, pos] = gap[:, :k], gap[:, k:]
        self.m[e2, c], self.b[e2, c] = q1, m
        self.a[e2, pos], self.m[e2, pos], self.b[e2, pos] = m, q2, b
        self.P[ex] += k

    def unit_totals(self, name, ex, L):
        """Per part for examples ``ex`` (``L`` panels each): the units' values and errors ``[G, units]`` (what
        :meth:`scores` watches) and the panels' unit errors ``[G, L, units]``."""
        exd = self.on(ex, name)
        out = []
        for t2, e, e2, mags in self.per_panel[name]:
            pe = e[exd, :L]
            value = t2[exd, :L].sum(1)
            unit = combine_units(pe.sum(1), pe.pow(2).sum(1), e2[exd, :L].sum(1)) + rounding(
                mags[exd, :L].sum(1), value.dtype
            )
            out.append((value, unit, pe))
        return out

    def final(self, name, ex, L, influence: bool = True):
        """Per part for examples ``ex`` (``L`` panels, ``2L + 1`` nodes each), elementwise on the nodes in path
        order: conductance ``Σ_p T₂`` (one Romberg step on it where the example's layer is smooth:
        :func:`_extrapolate`) with its error, and its per-unit error; the same for internal influence (the trapezoid
        in α; ``None`` unless ``influence``); each value ``[G, *unit_shape]``, each unit error ``[G, units]``."""
        G, count, e2 = ex.numel(), 2 * L + 1, ex[:, None]
        a, m, b = self.a[ex, :L], self.m[ex, :L], self.b[ex, :L]
        by = torch.argsort(self.alpha[e2, a], dim=1)  # the panels in path order: nodes a₀ m₀ a₁ m₁ … m_{L−1} b_{L−1}
        order = torch.stack([a.gather(1, by), m.gather(1, by)], 2).flatten(1)
        order = torch.cat([order, b.gather(1, by[:, -1:])], 1)
        alpha = self.alpha[e2, order]
        left = _left_siblings(alpha)
        rows, od = self.on(ex, name)[:, None], self.on(order, name)
        out = []
        for y, g in zip(self.y[name], self.g[name]):
            tail = (1,) * (g.dim() - 2)
            pair = self.on(left, name).view(G, max(L - 1, 0), *tail)
            kinds = ["conductance"] + (["influence"] if influence else [])
            if influence:
                da = self.on(alpha[:, 1:] - alpha[:, :-1], name).to(g.dtype).view(G, count - 1, *tail)
                wide_a = da[:, 0::2] + da[:, 1::2]
                steps_a = (da, wide_a, wide_a[:, :-1] + wide_a[:, 1:])
            # the layer in tiles of its units (TILE_BYTES per example: the temporaries stay in cache and in the
            # allocator's free lists, where layer-sized ones cost fresh pages); all below is elementwise or per unit
            dim, spans = _tiles(g, count)
            held: dict[str, list] = {k: [] for k in kinds}
            ratio: dict[str, list] = {k: [] for k in kinds}
            for start, size in spans:
                gs, ys = _nodes(g.narrow(dim, start, size), rows, od), _nodes(y.narrow(dim, start, size), rows, od)
                for kind in kinds:
                    if kind == "conductance":
                        dy, wide, wide2 = (
                            ys[:, 1:] - ys[:, :-1],
                            ys[:, 2::2] - ys[:, 0:-1:2],
                            ys[:, 4::2] - ys[:, 0:-4:2],
                        )
                    else:
                        dy, wide, wide2 = steps_a
                    # in place where a temporary is tile-sized, in the order of ½(g_k + g_{k+1})·Δy_k (the same bits)
                    t = (gs[:, 1:] + gs[:, :-1]).mul_(0.5).mul_(dy)
                    t2 = t[:, 0::2] + t[:, 1::2]
                    del t
                    t1 = (gs[:, 0:-1:2] + gs[:, 2::2]).mul_(0.5).mul_(wide)
                    ratio[kind].append(_romberg_sums(gs, t2, t1, wide2, pair))
                    held[kind].append((t2, t1, (t2 - t1).mul_(ERROR_FACTOR)))
                del gs, ys
            parts = []
            for kind in kinds:
                sums = ratio[kind]
                num = den = None
                if sums[0] is not None:
                    num, den = (cast(torch.Tensor, sum(v[i] for v in sums)) for i in (0, 1))
                pieces = []
                for t2, t1, e in held[kind]:
                    if num is None:
                        correction = torch.zeros_like(t2[:, 0])
                    else:
                        correction, e = _romberg_apply(t2, t1, e, num, den, pair)
                    value, signed, squares = t2.sum(1) + correction, e.sum(1), e.pow(2).sum(1)
                    rnd = rounding(t2.abs_().sum(1), t2.dtype)
                    unit = combine_units(
                        reduce_units(signed),
                        reduce_units(e.flatten(0, 1)).view(G, L, -1).pow(2).sum(1),
                        reduce_units(squares),
                    ) + reduce_units(rnd)
                    pieces.append((value, combine(signed, squares) + rnd, unit))
                held[kind] = []
                parts.append(tuple(_joined([p[i] for p in pieces], d) for i, d in enumerate((dim - 1, dim - 1, 1))))
            out.append((parts[0], parts[1] if influence else None))
        return out

    def scores(self, ex, L: int, watch: int, rtol: float):
        """For examples ``ex`` with ``L`` panels each: per panel the worst relative error over watched units and cut
        gaps ``[G, L]``; and whether all are within rtol ``[G]``."""
        G = ex.numel()
        delta_F = (self.F_end[ex] - self.F_start[ex]).abs().clamp_min(1e-12)
        score = torch.zeros(G, L, dtype=F64)
        converged = torch.ones(G, dtype=torch.bool)
        gap = self.gap[ex][:, :L]
        for j, name in enumerate(self.names):
            for uv, ue, pe in self.unit_totals(name, ex, L):
                scale = uv.abs().amax(1).clamp_min(1e-30).double().cpu()
                k = min(watch, uv.shape[1])
                watched = uv.abs().topk(k, dim=1).indices
                worst = ue.gather(1, watched).amax(1).double().cpu() / scale
                converged &= ~(worst > rtol)
                pw = pe.gather(2, watched[:, None, :].expand(G, L, k)).abs().amax(2).double().cpu() / scale[:, None]
                score = torch.maximum(score, pw)
                total_gap = gap[:, :, j].sum(1).abs()
                three = ue.sum(1).double().cpu() * 3
                explained = torch.where(CUT_GAP * delta_F > three, CUT_GAP * delta_F, three)
                cut = total_gap <= explained  # a cut: the gap is what is still wrong (a branch's stays large)
                converged &= ~(cut & (total_gap > rtol * delta_F))
                score = torch.where(cut[:, None], torch.maximum(score, gap[:, :, j].abs() / delta_F[:, None]), score)
        spike = self.spike(ex)
        if spike is not None:  # a near-singular integrand: refine next to it; never call it converged
            node, hit = spike
            converged &= ~hit
            near = ((self.a[ex, :L] == node[:, None]) | (self.b[ex, :L] == node[:, None])) & hit[:, None]
            score = torch.where(near, score.amax(1, keepdim=True) + 1.0, score)
        return score, converged

    def spike(self, ex):
        """``(node [G], hit [G])``: the node where |∂F/∂y| (all sites) is largest on each path, and whether it
        exceeds ``SINGULAR_RATIO`` × its median there (examples ``ex`` have as many nodes)."""
        count = int(self.count[ex[0]])
        if count < 3:
            return None
        norm = self.norm2[ex, :count].sqrt()
        med = norm.median(1).values
        node = norm.argmax(1)
        return node, norm.gather(1, node[:, None])[:, 0] > SINGULAR_RATIO * med.clamp_min(1e-300)


def _left_siblings(alpha: torch.Tensor) -> torch.Tensor:
    """``[G, L − 1]`` bool for panels in path order (nodes ``alpha`` ``[G, 2L + 1]``): panel ``p`` and ``p + 1``
    are the two halves of one panel of the dyadic refinement (equal widths, ``p`` starting at an even multiple of
    its width), so their five equally spaced nodes carry three nested trapezoids."""
    width = alpha[:, 2::2] - alpha[:, 0:-1:2]
    start = alpha[:, 0:-1:2] / (2 * width.clamp_min(1e-300))
    aligned = (start - start.round()).abs() < 1e-6
    return (aligned[:, :-1] & torch.isclose(width[:, :-1], width[:, 1:], rtol=1e-9, atol=0.0)).cpu()


def _extrapolate(gs, t2, t1, e, wide2, pair):
    """One Romberg step on a smooth path: the panels' trapezoids ``t₂`` (halves) and ``t₁`` (whole) with their
    errors ``e`` ``[G, L, …]``, the double-panel differences ``wide2`` and the sibling pairs ``pair``.

    On a pair of sibling panels the trapezoids on 4, 2 and 1 intervals, ``T₄``, ``T₂`` and ``T₁ = ½(g₀ + g₄)·wide2``,
    give two extrapolations, ``R₁ = T₄ + (T₄ − T₂)/3`` (Simpson on the halves) and ``R₀ = T₂ + (T₂ − T₁)/3``.
    Their ratio over the example's pairs, ``ρ = Σ|R₁ − R₀| / Σ|T₄ − T₂|``, measures the order the error falls at: it
    goes to 0 like h² on a smooth integrand, is ⅔ where the error falls only like h and above 1 at kinks, where
    the trapezoid's error is not a smooth function of h. Where ``ρ ≤ SMOOTH`` (on at least ``MIN_PAIRS`` pairs:
    coarser paths measure no order) every panel's value is its Simpson
    extrapolation ``t₂ + (t₂ − t₁)/3`` and its error ``ρ · e`` (about ``½|R₁ − R₀|`` per pair: the error of
    ``R₀``, above that of the value); elsewhere the trapezoid and its error stay.
    Returns ``(Σ corrections [G, …], panel errors [G, L, …])``."""
    sums = _romberg_sums(gs, t2, t1, wide2, pair)
    if sums is None:
        return torch.zeros_like(t2[:, 0]), e
    return _romberg_apply(t2, t1, e, *sums, pair)


def _romberg_sums(gs, t2, t1, wide2, pair):
    """``(Σ|R₁ − R₀|, Σ|T₄ − T₂|)`` over the sibling pairs of each example ``[G]`` (float64; :func:`_extrapolate`),
    or ``None`` with fewer than two panels. Sums of the tiles of a layer (:func:`_tiles`) add up to the layer's."""
    if t2.shape[1] < 2:
        return None
    T4, T2 = t2[:, :-1] + t2[:, 1:], t1[:, :-1] + t1[:, 1:]
    T1 = (gs[:, 0:-4:2] + gs[:, 4::2]).mul_(0.5).mul_(wide2)
    step = T4.sub_(T2)  # T₄ − T₂ (T₄ is not read again)
    d = (step * (4 / 3)).sub_(torch.sub(T2, T1, out=T1).div_(3))  # R₁ − R₀
    keep = pair.to(d.dtype)
    return _sum64(d.abs_().mul_(keep).flatten(1)), _sum64(step.abs_().mul_(keep).flatten(1))


def _romberg_apply(t2, t1, e, num, den, pair):
    """The Romberg step where the example's ratio ``ρ = num / den`` says its layer is smooth (:func:`_extrapolate`):
    ``(Σ corrections [G, …], panel errors [G, L, …])``."""
    zero = torch.zeros_like(t2[:, 0])
    rho = num / den.clamp_min(1e-300)
    pairs = pair.flatten(1).sum(1)
    smooth = (den > 0) & (rho <= SMOOTH) & (pairs.to(den.device) >= MIN_PAIRS)
    if not bool(smooth.any()):
        return zero, e
    view = (-1,) + (1,) * (t2.dim() - 1)
    on = smooth.view(view)
    factor = torch.where(smooth, rho, torch.ones_like(rho)).to(e.dtype).view(view)
    correction = torch.where(on[:, 0], ((t2 - t1) / 3).sum(1), zero)
    return correction, e * factor


def _evaluate_rows(model, batch, target, sites, example, alpha, internal_batch_size, sums: PathSums):
    """The rows ``(example[r], alpha[r])`` in chunks of ``internal_batch_size``: ``F [R]``, values and gradients
    ``{site: parts [R, ...]}``."""
    step = example.numel() if internal_batch_size is None else max(1, internal_batch_size)
    Fs: list[torch.Tensor] = []
    ys: list[dict[str, list[torch.Tensor]]] = []
    gs: list[dict[str, list[torch.Tensor]]] = []
    for r0 in range(0, example.numel(), step):
        ev = evaluate(model, batch, target, sites, example[r0 : r0 + step], alpha[r0 : r0 + step], need_grad=True)
        assert ev.grads is not None  # need_grad=True
        sums.is_tuple = ev.is_tuple
        Fs.append(ev.F.double().cpu())
        ys.append(ev.values)
        gs.append(ev.grads)
    if len(Fs) == 1:
        return Fs[0], ys[0], gs[0]
    names = [s.name for s in sites]
    return (
        torch.cat(Fs),
        {n: [torch.cat(parts) for parts in zip(*(chunk[n] for chunk in ys))] for n in names},
        {n: [torch.cat(parts) for parts in zip(*(chunk[n] for chunk in gs))] for n in names},
    )


def _choose(st: _Block, ex, L, score, *, budget, focus, min_new):
    """For examples ``ex`` (``L`` panels each, scores ``[G, L]``): the fewest worst panels that carry a share
    ``focus`` of the summed score (at least ``min_new``, at most half of the panels), best first; ``[G, L]`` padded
    with −1, and how many ``[G]``."""
    width = st.alpha[ex[:, None], st.b[ex, :L]] - st.alpha[ex[:, None], st.a[ex, :L]]
    score = score.masked_fill(width < 1e-12, -1.0)
    ranked = torch.argsort(score, dim=1, descending=True)
    srt = score.gather(1, ranked)
    positive = srt.clamp_min(0)
    share = torch.cumsum(positive, 1) / positive.sum(1, keepdim=True).clamp_min(1e-300)
    r = ((share < focus).sum(1) + 1).clamp_min(min_new)
    r = torch.minimum(r, torch.clamp_max((budget - st.count[ex]) // 2, max(1, (L + 1) // 2)))
    take = (torch.arange(L) < r[:, None]) & (srt > 0)
    k = take.sum(1)
    first = torch.argsort((~take).to(torch.int8), dim=1, stable=True)  # the taken ones, in rank order
    chosen = ranked.gather(1, first)
    return chosen.masked_fill(torch.arange(L) >= k[:, None], -1), k


def integrate_adaptive(
    model,
    batch: Batch,
    target: Target,
    sites: list[Site],
    *,
    budget: int,
    rtol: float,
    internal_batch_size: int | None = None,
    progress: bool | None = None,
    initial_panels: int | None = None,
    focus: float = 0.5,
    min_new: int = 2,
    watch: int = 10,
    influence: bool = True,
) -> PathSums:
    """Trapezoid conductance (and, with ``influence``, internal influence) on adaptively refined panels, with
    per-unit errors.

    Each round splits, per example, the fewest worst panels that carry a share ``focus`` of the summed score
    (at least ``min_new``, at most half of the panels).
    """
    n = batch.n
    if initial_panels is None:
        initial_panels = max(1, min(8, budget // 16))
    initial_panels = max(1, min(initial_panels, (budget - 1) // 2))
    first = torch.linspace(0, 1, 2 * initial_panels + 1, dtype=F64)
    if budget < 3:
        first = torch.linspace(0, 1, budget, dtype=F64)
    k0 = first.numel()
    if k0 >= 3:
        panels0 = torch.arange(0, k0 - 2, 2), torch.arange(1, k0 - 1, 2), torch.arange(2, k0, 2)
    else:  # two nodes: one panel whose midpoint is the right end (no error estimate possible)
        panels0 = torch.tensor([0]), torch.tensor([k0 - 1]), torch.tensor([k0 - 1])
    block = n if internal_batch_size is None else max(1, internal_batch_size // budget)
    names = [s.name for s in sites]
    sums = PathSums(
        conductance={},
        influence={},
        value_at_x={},
        grad_at_x={},
        conductance_error={},
        influence_error={},
        conductance_unit_error={},
        influence_unit_error={},
        diagnosis={},
        grad_profile={},
    )
    F_x, F_b = torch.zeros(n, dtype=F64), torch.zeros(n, dtype=F64)
    n_evals = torch.zeros(n, dtype=torch.long)
    profiles = {name: ([None] * n, [None] * n) for name in names}
    bar = progress_bar(
        total=budget * n, desc="adaptive path", unit="eval", progress=False if progress is False else None
    )
    for b0 in range(0, n, block):
        E = min(n, b0 + block) - b0
        st = _Block(E, budget, names)
        rows = torch.arange(E).repeat_interleave(k0)
        al = first.repeat(E)
        st.add(rows, al, *_evaluate_rows(model, batch, target, sites, rows + b0, al, internal_batch_size, sums))
        st.F_start, st.F_end = st.F[:, 0].clone(), st.F[:, k0 - 1].clone()
        st.set_panels(torch.arange(E), *(p.expand(E, -1) for p in panels0))
        bar.update(k0 * E)
        spent = k0 * E
        active = torch.ones(E, dtype=torch.bool)
        converged = torch.zeros(E, dtype=torch.bool)
        while bool(active.any()):
            chosen = torch.full((E, st.cap), -1, dtype=torch.long)
            k = torch.zeros(E, dtype=torch.long)
            for L, ex in _groups(st.P, active.nonzero().flatten()):
                score, ok = st.scores(ex, L, watch, rtol)
                converged[ex[ok]] = True
                go = ~ok & (st.count[ex] + 2 <= budget)
                active[ex[~go]] = False
                ex, score = ex[go], score[go]
                if ex.numel():
                    chosen[ex, :L], k[ex] = _choose(st, ex, L, score, budget=budget, focus=focus, min_new=min_new)
            active &= k > 0
            if not bool(active.any()):
                break
            ex = active.nonzero().flatten()
            ke = k[ex]
            ce = ex.repeat_interleave(ke)
            cp = chosen[ex][torch.arange(st.cap) < ke[:, None]]
            start = torch.cumsum(ke, 0) - ke
            j = torch.arange(ce.numel()) - start.repeat_interleave(ke)
            lo = (2 * start).repeat_interleave(ke) + j
            hi = lo + ke.repeat_interleave(ke)
            al, am, ab = (st.alpha[ce, t[ce, cp]] for t in (st.a, st.m, st.b))
            rows = torch.empty(2 * ce.numel(), dtype=torch.long)
            rows[lo], rows[hi] = ce, ce
            alpha = torch.empty(2 * ce.numel(), dtype=F64)
            alpha[lo], alpha[hi] = (al + am) / 2, (am + ab) / 2
            before = st.count.clone()
            st.add(
                rows, alpha, *_evaluate_rows(model, batch, target, sites, rows + b0, alpha, internal_batch_size, sums)
            )
            for kk, exk in _groups(k, ex):
                q1 = before[exk][:, None] + torch.arange(kk)
                st.split(exk, chosen[exk, :kk], q1, q1 + kk)
            bar.update(alpha.numel())
            spent += alpha.numel()
        bar.update(budget * E - spent)  # a block that converged early leaves its unspent budget done
        _finish(st, b0, k0, converged, watch, rtol, sums, profiles, F_x, F_b, n_evals, n, influence)
    bar.close()
    sums.F_x, sums.F_baseline, sums.n_evals = F_x, F_b, n_evals
    if not influence:
        sums.influence = sums.influence_error = sums.influence_unit_error = None
    sums.grad_profile = {name: profiles[name] for name in names}
    return sums


def _finish(st: _Block, b0, k0, converged, watch, rtol, sums, profiles, F_x, F_b, n_evals, n, influence) -> None:
    """A block's results into ``sums`` (global examples ``b0 + e``), examples with as many panels together."""
    last = k0 - 1  # the node at α = 1
    for L, ex in _groups(st.P):
        glob = ex + b0
        count = int(st.count[ex[0]])
        F_x[glob], F_b[glob], n_evals[glob] = st.F[ex, last], st.F[ex, 0], st.count[ex]
        nodes = st.alpha[ex, :count]
        order = torch.argsort(nodes, dim=1)
        sorted_nodes = nodes.gather(1, order)
        score = st.scores(ex, L, watch, rtol)[0]
        alpha_a, alpha_b = (st.alpha[ex[:, None], p[ex, :L]] for p in (st.a, st.b))
        for i, e in enumerate(glob.tolist()):
            sums.diagnosis[e] = {
                "converged": bool(converged[ex[i]]),
                "alpha": nodes[i].clone(),
                "a": alpha_a[i],
                "b": alpha_b[i],
                "score": score[i],
            }
        for name in st.names:
            parts = st.final(name, ex, L, influence)
            exd = st.on(ex, name)
            norms = cast(torch.Tensor, sum(sq[ex, :count] for sq in st.g2[name])).sqrt()
            sorted_norms = norms.gather(1, order)
            for i, e in enumerate(glob.tolist()):
                profiles[name][0][e] = sorted_nodes[i]
                profiles[name][1][e] = sorted_norms[i]
            gl = st.on(glob, name)
            fields = [
                (sums.conductance, [c[0] for c, _ in parts]),
                (sums.conductance_error, [c[1] for c, _ in parts]),
                (sums.conductance_unit_error, [c[2] for c, _ in parts]),
                (sums.value_at_x, [y[exd, last] for y in st.y[name]]),
                (sums.grad_at_x, [g[exd, last] for g in st.g[name]]),
            ]
            if influence:
                fields += [
                    (sums.influence, [i[0] for _, i in parts]),
                    (sums.influence_error, [i[1] for _, i in parts]),
                    (sums.influence_unit_error, [i[2] for _, i in parts]),
                ]
            for acc, got in fields:
                if name not in acc:
                    acc[name] = [p.new_zeros((n, *p.shape[1:])) for p in got]
                for dst, p in zip(acc[name], got):
                    dst[gl] = p
