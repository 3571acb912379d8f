"""Adaptive path points for conductance: bisect where the completeness gap is.

Each interval ``[α_l, α_r]`` of an example's path has, for every layer, a completeness gap
``ΔF − Σ_units ½(∂F/∂y_l + ∂F/∂y_r)·(y_r − y_l)`` that is known from the data already evaluated. Intervals
with the largest gaps are bisected; only the new midpoints are evaluated (in one batch across examples),
and only the gaps of the two halves are recomputed. An example stops once its worst layer's summed absolute
interval gap is within ``rtol · |F(x) − F(x')|``, or its ``budget`` of evaluations is spent.

Memory: the values and gradients of every site at every node of the examples in one block are kept in
preallocated buffers, ``budget × units × 2`` floats per example; ``internal_batch_size`` bounds the rows per
pass and the examples per block (``max(1, internal_batch_size // budget)``).
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from .engine import PathSums, evaluate
from ..core.inputs import Batch, Target
from ..core.sites import Site

__all__ = ["integrate_adaptive"]


class _Path:
    """The nodes of one example's path, in buffers filled in order of evaluation; intervals index them."""

    def __init__(self, budget: int, names: list[str]):
        self.budget, self.names, self.count = budget, names, 0
        self.alpha = torch.empty(budget, dtype=torch.float64)
        self.F = torch.empty(budget, dtype=torch.float64)
        self.y: dict[str, list[torch.Tensor]] = {}
        self.g: dict[str, list[torch.Tensor]] = {}
        self.left = torch.empty(0, dtype=torch.long)
        self.right = torch.empty(0, dtype=torch.long)
        self.gaps = torch.empty(0, len(names), dtype=torch.float64)

    def add(self, alpha, F, ys: dict, gs: dict) -> torch.Tensor:
        k = alpha.numel()
        idx = torch.arange(self.count, self.count + k)
        self.alpha[idx], self.F[idx] = alpha, F
        for name in self.names:
            if name not in self.y:
                self.y[name] = [p.new_empty((self.budget, *p.shape[1:])) for p in ys[name]]
                self.g[name] = [p.new_empty((self.budget, *p.shape[1:])) for p in gs[name]]
            dev = idx.to(ys[name][0].device)
            for buf, p in zip(self.y[name], ys[name]):
                buf[dev] = p
            for buf, p in zip(self.g[name], gs[name]):
                buf[dev] = p
        self.count += k
        return idx

    def contributions(self, name, left, right):
        """Per part: ``½(g_l + g_r)(y_r − y_l)`` for the intervals (left, right) — ``[k, *unit_shape]``."""
        dev = self.y[name][0].device
        lo, hi = left.to(dev), right.to(dev)
        return [0.5 * (g[lo] + g[hi]) * (y[hi] - y[lo]) for y, g in zip(self.y[name], self.g[name])]

    def interval_gaps(self, left, right, chunk: int = 16) -> torch.Tensor:
        out = []
        for c0 in range(0, left.numel(), chunk):
            lo, hi = left[c0:c0 + chunk], right[c0:c0 + chunk]
            dF = self.F[hi] - self.F[lo]
            cols = []
            for name in self.names:
                c = sum(p.flatten(1).double().sum(1) for p in self.contributions(name, lo, hi))
                cols.append(dF - c.cpu())
            out.append(torch.stack(cols, 1))
        return torch.cat(out) if out else torch.empty(0, len(self.names), dtype=torch.float64)

    def split(self, chosen: torch.Tensor, mids: torch.Tensor) -> None:
        """Interval ``chosen[j]`` is cut at node ``mids[j]``: (l, r) → (l, m) in place, (m, r) appended."""
        r = self.right[chosen].clone()
        self.right[chosen] = mids
        self.left = torch.cat([self.left, mids])
        self.right = torch.cat([self.right, r])
        new_gaps = self.interval_gaps(torch.cat([self.left[chosen], mids]), torch.cat([mids, r]))
        k = chosen.numel()
        self.gaps[chosen] = new_gaps[:k]
        self.gaps = torch.cat([self.gaps, new_gaps[k:]])


def _evaluate_pairs(model, batch, target, sites, pairs: dict, internal_batch_size, sums: PathSums):
    """Evaluate ``{example: alphas}`` in chunks; returns ``{example: (F, ys, gs)}``."""
    examples = list(pairs)
    e_all = torch.cat([torch.full((pairs[e].numel(),), e, dtype=torch.long) for e in examples])
    a_all = torch.cat([pairs[e] for e in examples])
    step = e_all.numel() if internal_batch_size is None else max(1, internal_batch_size)
    Fs, ys, gs = [], [], []
    for r0 in range(0, e_all.numel(), step):
        ev = evaluate(model, batch, target, sites, e_all[r0:r0 + step], a_all[r0:r0 + step], need_grad=True)
        sums.is_tuple = ev.is_tuple
        Fs.append(ev.F.double().cpu())
        ys.append(ev.values)
        gs.append(ev.grads)
    F = torch.cat(Fs)
    names = [s.name for s in sites]
    Y = {n: [torch.cat(parts) for parts in zip(*(chunk[n] for chunk in ys))] for n in names}
    G = {n: [torch.cat(parts) for parts in zip(*(chunk[n] for chunk in gs))] for n in names}
    out, offset = {}, 0
    for e in examples:
        sl = slice(offset, offset + pairs[e].numel())
        offset = sl.stop
        out[e] = (F[sl], {n: [p[sl] for p in Y[n]] for n in names}, {n: [p[sl] for p in G[n]] for n in names})
    return out


def integrate_adaptive(model, batch: Batch, target: Target, sites: list[Site], *, budget: int, rtol: float,
                       internal_batch_size: int | None = None, progress: bool | None = None,
                       initial: int | None = None, focus: float = 0.5, min_new: int = 4) -> PathSums:
    """Trapezoid conductance (and internal influence) on adaptively bisected path points.

    Each round bisects, per example, the fewest worst intervals that carry a share ``focus`` of the summed
    gap (at least ``min_new``, at most half of the intervals).
    """
    n = batch.n
    if initial is None:
        initial = max(3, min(budget, budget // 16 + 1))
    initial = min(initial, budget)
    block = n if internal_batch_size is None else max(1, internal_batch_size // budget)
    names = [s.name for s in sites]
    sums = PathSums(conductance={}, influence={}, value_at_x={}, grad_at_x={})
    F_x, F_b = torch.zeros(n, dtype=torch.float64), torch.zeros(n, dtype=torch.float64)
    n_evals = torch.zeros(n, dtype=torch.long)
    for b0 in range(0, n, block):
        ex = list(range(b0, min(n, b0 + block)))
        bar = tqdm(total=budget * len(ex), desc="adaptive path", unit="eval", leave=False,
                   disable=True if progress is False else None)
        state = {e: _Path(budget, names) for e in ex}
        first = torch.linspace(0, 1, initial, dtype=torch.float64)
        for e, (F, ys, gs) in _evaluate_pairs(model, batch, target, sites, {e: first for e in ex},
                                              internal_batch_size, sums).items():
            st = state[e]
            st.add(first, F, ys, gs)
            st.left, st.right = torch.arange(initial - 1), torch.arange(1, initial)
            st.gaps = st.interval_gaps(st.left, st.right)
        bar.update(initial * len(ex))
        active = set(ex)
        while active:
            new = {}
            for e in sorted(active):
                st = state[e]
                scale = rtol * max(abs(float(st.F[initial - 1] - st.F[0])), 1e-12)
                if float(st.gaps.abs().sum(0).max()) <= scale or st.count >= budget:
                    active.discard(e)
                    continue
                width = st.alpha[st.right] - st.alpha[st.left]
                score = st.gaps.abs().max(1).values
                score[width < 1e-9] = -1.0
                ranked = torch.argsort(score, descending=True)
                positive = score[ranked].clamp_min(0)
                share = torch.cumsum(positive, 0) / positive.sum().clamp_min(1e-300)
                r = max(int((share < focus).sum()) + 1, min_new)
                r = min(r, budget - st.count, max(1, (width.numel() + 1) // 2))
                chosen = ranked[:r]
                chosen = chosen[score[chosen] > 0]
                if chosen.numel() == 0:
                    active.discard(e)
                    continue
                new[e] = chosen
            if not new:
                break
            pairs = {e: (state[e].alpha[state[e].left[c]] + state[e].alpha[state[e].right[c]]) / 2
                     for e, c in new.items()}
            for e, (F, ys, gs) in _evaluate_pairs(model, batch, target, sites, pairs, internal_batch_size,
                                                  sums).items():
                mids = state[e].add(pairs[e], F, ys, gs)
                state[e].split(new[e], mids)
            bar.update(sum(p.numel() for p in pairs.values()))
        bar.close()
        for e in ex:
            st = state.pop(e)
            last = initial - 1  # the node at α = 1
            F_x[e], F_b[e], n_evals[e] = st.F[last], st.F[0], st.count
            dal = st.alpha[st.right] - st.alpha[st.left]
            for name in names:
                conds = [torch.zeros_like(y[0]) for y in st.y[name]]
                infls = [torch.zeros_like(y[0]) for y in st.y[name]]
                for c0 in range(0, st.left.numel(), 16):
                    lo, hi = st.left[c0:c0 + 16], st.right[c0:c0 + 16]
                    for i, part in enumerate(st.contributions(name, lo, hi)):
                        conds[i] += part.sum(0)
                    dev = st.g[name][0].device
                    for i, g in enumerate(st.g[name]):
                        w = dal[c0:c0 + 16].to(device=dev, dtype=g.dtype).view(-1, *([1] * (g.dim() - 1)))
                        infls[i] += (0.5 * (g[lo.to(dev)] + g[hi.to(dev)]) * w).sum(0)
                for acc, parts in ((sums.conductance, conds), (sums.influence, infls),
                                   (sums.value_at_x, [y[last] for y in st.y[name]]),
                                   (sums.grad_at_x, [g[last] for g in st.g[name]])):
                    if name not in acc:
                        acc[name] = [p.new_zeros((n, *p.shape)) for p in parts]
                    for a, p in zip(acc[name], parts):
                        a[e] = p
    sums.F_x, sums.F_baseline, sums.n_evals = F_x, F_b, n_evals
    return sums
