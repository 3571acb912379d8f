"""Adaptive path points for conductance: refine where the error of the units a user looks at is.

The path of each example is cut into panels ``[α_a, α_m, α_b]`` (three nodes, ends shared with the
neighbours). On a panel, for every unit of every layer, the Stieltjes trapezoid on the two halves
``T₂ = ½(g_a+g_m)(y_m−y_a) + ½(g_m+g_b)(y_b−y_m)`` is the estimate and ``T₁ = ½(g_a+g_b)(y_b−y_a)`` on the
whole panel its embedded coarse rule: ``T₂ − T₁`` is, up to a constant, the panel's error (Richardson on
nested nodes; ``ERROR_FACTOR`` below). A unit's error over the path is ``max(|Σ_p e_p|, √Σ_p e_p², √Σ_p Σ_i e_{p,i}²)``
(``estimates.combine_units``): signed panel errors that add up on smooth paths; the root sum of squares where
kinks make them random — of the unit's own panel errors (a channel's summed over its positions before squaring,
so positions that cancel within a panel do not hide it) and of its elements' — plus the rounding floor.

Each round splits, per example, the panels with the largest error on the watched units (the ``watch``
largest |units| per example and layer, channels for conv layers, relative to the layer's largest |unit|)
and, on layers that are cuts (their gap is explained by their error estimate), with the largest completeness
gap. Splitting a panel costs two evaluations (its quarter points). An example stops once every layer's
watched units are within ``rtol`` (and the gap of cut layers within ``rtol · |F(x) − F(x')|``) or its
``budget`` is spent; what did not converge is diagnosed (``estimates.diagnose``).

Memory: the values and gradients of every site at every node of the examples in one block are kept,
``budget × units × 2`` floats per example, plus running totals (four per unit element) and one error per panel
and reduced unit (a channel, ``budget / 2`` panels); a round costs in proportion to the panels it splits;
``internal_batch_size`` bounds the rows per pass and the examples per block
(``max(1, internal_batch_size // budget)``).
"""

from __future__ import annotations

import torch

from .engine import PathSums, evaluate
from .estimates import ERROR_FACTOR, SINGULAR_RATIO, combine, combine_units, reduce_units, rounding
from ..core.inputs import Batch, Target
from ..core.progress import bar as progress_bar
from ..core.sites import Site

__all__ = ["integrate_adaptive"]

CUT_GAP = 0.1  # a layer whose gap is below this share of |F(x) − F(x')| (or explained by its errors) is a cut


class _Path:
    """The nodes of one example's path (buffers filled in order of evaluation) and its panels.

    Per site and part it keeps running totals over the panels (``Σ_p T₂``, ``Σ_p e_p``, ``Σ_p e_p²``, ``Σ_p |T₂|``,
    each ``[*unit_shape]``) and, per panel, the units' errors (``[P, units]``, ``reduce_units``): a split
    subtracts the old panel's terms and adds its halves', so a round costs in proportion to the panels it splits,
    not to all of them."""

    def __init__(self, budget: int, names: list[str]):
        self.budget, self.names, self.count = budget, names, 0
        self.alpha = torch.empty(budget, dtype=torch.float64)
        self.F = torch.empty(budget, dtype=torch.float64)
        self.norm2 = torch.zeros(budget, dtype=torch.float64)   # |∂F/∂y|² of every site at each node
        self.y: dict[str, list[torch.Tensor]] = {}
        self.g: dict[str, list[torch.Tensor]] = {}
        self.a = self.m = self.b = torch.empty(0, dtype=torch.long)
        self.tot: dict[str, list[list[torch.Tensor]]] = {}    # per part [Σ T₂, Σ e, Σ e², Σ |T₂|]
        self.unit_err: dict[str, list[torch.Tensor]] = {}     # per panel, signed: [P, units]
        self.gap = torch.empty(0, len(names), dtype=torch.float64)
        self.splits = 0            # rounds of splits since the panels' totals were last computed afresh
        self._scored = None        # (nodes, splits, watch, rtol) → scores' result, reused while nothing changed

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
                self.norm2[idx] += p.flatten(1).double().pow(2).sum(1).cpu()
        self.count += k
        return idx

    def panel_terms(self, name, a, m, b):
        """Per part: ``(T₂, T₁)`` for panels (a, m, b) — ``[k, *unit_shape]`` each."""
        dev = self.y[name][0].device
        a, m, b = a.to(dev), m.to(dev), b.to(dev)
        out = []
        for y, g in zip(self.y[name], self.g[name]):
            t2 = 0.5 * (g[a] + g[m]) * (y[m] - y[a]) + 0.5 * (g[m] + g[b]) * (y[b] - y[m])
            t1 = 0.5 * (g[a] + g[b]) * (y[b] - y[a])
            out.append((t2, t1))
        return out

    def compute(self, a, m, b, *, old: int = 0):
        """Per site and part, the panels' summed terms ``[Σ T₂, Σ e, Σ e², Σ |T₂|]`` and units' errors
        ``[k, units]``; the panels' gaps ``[k, sites]``. With ``old``, the first ``old`` panels are being replaced
        by the rest: their terms count negatively in the sums, and the errors and gaps are those of the rest."""
        terms, unit_err, gaps = {}, {}, []
        dF = self.F[b[old:]] - self.F[a[old:]]
        for name in self.names:
            terms[name], unit_err[name] = [], []
            layer = 0.0
            for t2, t1 in self.panel_terms(name, a, m, b):
                e = ERROR_FACTOR * (t2 - t1)
                if old:
                    sums = [t2[old:].sum(0) - t2[:old].sum(0), e[old:].sum(0) - e[:old].sum(0),
                            e[old:].pow(2).sum(0) - e[:old].pow(2).sum(0),
                            t2[old:].abs().sum(0) - t2[:old].abs().sum(0)]
                    t2, e = t2[old:], e[old:]
                else:
                    sums = [t2.sum(0), e.sum(0), e.pow(2).sum(0), t2.abs().sum(0)]
                terms[name].append(sums)
                unit_err[name].append(reduce_units(e))
                layer = layer + t2.flatten(1).double().sum(1).cpu()
            gaps.append(dF - layer)
        n = a.numel() - old
        return terms, unit_err, torch.stack(gaps, 1) if gaps else torch.empty(n, 0, dtype=torch.float64)

    def set_panels(self, a, m, b):
        self.a, self.m, self.b = a, m, b
        self.tot, self.unit_err, self.gap = self.compute(a, m, b)
        self.splits = 0

    def split(self, chosen: torch.Tensor, q1: torch.Tensor, q2: torch.Tensor) -> None:
        """Panel ``(a, m, b)`` → ``(a, q1, m)`` in place and ``(m, q2, b)`` appended."""
        a, m, b = self.a[chosen], self.m[chosen], self.b[chosen]
        na, nm, nb = torch.cat([a, m]), torch.cat([q1, q2]), torch.cat([m, b])
        k = chosen.numel()
        # one pass over the old panels and their halves: the totals change by Σ new − Σ old
        delta, unit_err, gap = self.compute(torch.cat([a, na]), torch.cat([m, nm]), torch.cat([b, nb]), old=k)
        self.a, self.m, self.b = self.a.clone(), self.m.clone(), self.b.clone()
        self.a[chosen], self.m[chosen], self.b[chosen] = na[:k], nm[:k], nb[:k]
        self.a, self.m, self.b = torch.cat([self.a, na[k:]]), torch.cat([self.m, nm[k:]]), torch.cat([self.b, nb[k:]])
        for name in self.names:
            for tot, d in zip(self.tot[name], delta[name]):
                for t, dt in zip(tot, d):
                    t += dt
            for i, ue in enumerate(self.unit_err[name]):
                c = chosen.to(ue.device)
                ue[c] = unit_err[name][i][:k]
                self.unit_err[name][i] = torch.cat([ue, unit_err[name][i][k:]])
        self.gap[chosen] = gap[:k]
        self.gap = torch.cat([self.gap, gap[k:]])
        self.splits += 1

    def totals(self, name):
        """Per part: the value ``Σ_p T₂`` and its errors, elementwise ``[*unit_shape]`` and per unit ``[units]``,
        each with the rounding floor (``estimates.rounding``)."""
        out = []
        for (value, signed, squares, mags), (_, unit) in zip(self.tot[name], self.unit_totals(name)):
            out.append((value, combine(signed, squares) + rounding(mags.clamp_min(0), value.dtype), unit))
        return out

    def unit_totals(self, name):
        """Per part: the units' values ``[units]`` and their errors ``[units]`` (what :meth:`scores` watches)."""
        out = []
        for (value, signed, squares, mags), ue in zip(self.tot[name], self.unit_err[name]):
            rnd = rounding(mags.clamp_min(0), value.dtype)
            unit = combine_units(reduce_units(signed[None])[0], ue.pow(2).sum(0),
                                 reduce_units(squares.clamp_min(0)[None])[0]) + reduce_units(rnd[None])[0]
            out.append((reduce_units(value[None])[0], unit))
        return out

    def scores(self, watch: int, rtol: float):
        """Per panel the worst relative error over watched units and cut gaps; and whether all are within rtol.
        Computed once per state of the panels (the diagnosis asks again after the last round)."""
        key = (self.count, self.splits, self.a.numel(), watch, rtol)
        if self._scored is None or self._scored[0] != key:
            self._scored = key, self._scores(watch, rtol)
        score, converged = self._scored[1]
        return score.clone(), converged

    def _scores(self, watch: int, rtol: float):
        delta_F = max(abs(float(self.F_end - self.F_start)), 1e-12)
        score = torch.zeros(self.a.numel(), dtype=torch.float64)
        converged = True
        for j, name in enumerate(self.names):
            for (uv, ue), pe in zip(self.unit_totals(name), self.unit_err[name]):
                scale = float(uv.abs().max().clamp_min(1e-30))
                k = min(watch, uv.numel())
                watched = uv.abs().topk(k).indices
                worst = float(ue[watched].max()) / scale
                if worst > rtol:
                    converged = False
                score = torch.maximum(score, pe[:, watched.to(pe.device)].abs().amax(1).double().cpu() / scale)
                total_gap = float(self.gap[:, j].sum())
                explained = max(float(ue.sum()) * 3, CUT_GAP * delta_F)
                if abs(total_gap) <= explained:  # a cut: the gap is what is still wrong (a branch's stays large)
                    if abs(total_gap) > rtol * delta_F:
                        converged = False
                    score = torch.maximum(score, self.gap[:, j].abs() / delta_F)
        spike = self.spike()
        if spike is not None:  # a near-singular integrand: refine next to it; never call it converged
            converged = False
            near = (self.a == spike) | (self.b == spike)
            score[near] = score.max() + 1.0
        return score, converged

    def spike(self):
        """The node where |∂F/∂y| (all sites) exceeds ``SINGULAR_RATIO`` × its median on the path, if any."""
        if self.count < 3:
            return None
        norm = self.norm2[:self.count].sqrt()
        med = float(norm.median())
        k = int(norm.argmax())
        if float(norm[k]) > SINGULAR_RATIO * max(med, 1e-300):
            return k
        return None


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
                       initial_panels: int | None = None, focus: float = 0.5, min_new: int = 2,
                       watch: int = 10) -> PathSums:
    """Trapezoid conductance (and internal influence) on adaptively refined panels, with per-unit errors.

    Each round splits, per example, the fewest worst panels that carry a share ``focus`` of the summed score
    (at least ``min_new``, at most half of the panels).
    """
    n = batch.n
    if initial_panels is None:
        initial_panels = max(1, min(8, budget // 16))
    initial_panels = max(1, min(initial_panels, (budget - 1) // 2))
    first = torch.linspace(0, 1, 2 * initial_panels + 1, dtype=torch.float64)
    if budget < 3:
        first = torch.linspace(0, 1, budget, dtype=torch.float64)
    block = n if internal_batch_size is None else max(1, internal_batch_size // budget)
    names = [s.name for s in sites]
    sums = PathSums(conductance={}, influence={}, value_at_x={}, grad_at_x={}, conductance_error={},
                    influence_error={}, conductance_unit_error={}, influence_unit_error={}, diagnosis={},
                    grad_profile={})
    F_x, F_b = torch.zeros(n, dtype=torch.float64), torch.zeros(n, dtype=torch.float64)
    n_evals = torch.zeros(n, dtype=torch.long)
    profiles = {name: ([None] * n, [None] * n) for name in names}
    bar = progress_bar(total=budget * n, desc="adaptive path", unit="eval",
                       progress=False if progress is False else None)
    for b0 in range(0, n, block):
        ex = list(range(b0, min(n, b0 + block)))
        state = {e: _Path(budget, names) for e in ex}
        for e, (F, ys, gs) in _evaluate_pairs(model, batch, target, sites, {e: first for e in ex},
                                              internal_batch_size, sums).items():
            st = state[e]
            st.add(first, F, ys, gs)
            st.F_start, st.F_end = float(F[0]), float(F[-1])
            k = first.numel()
            if k >= 3:
                st.set_panels(torch.arange(0, k - 2, 2), torch.arange(1, k - 1, 2), torch.arange(2, k, 2))
            else:  # two nodes: one panel whose midpoint is the right end (no error estimate possible)
                st.set_panels(torch.tensor([0]), torch.tensor([k - 1]), torch.tensor([k - 1]))
        bar.update(first.numel() * len(ex))
        spent = first.numel() * len(ex)
        active = set(ex)
        converged = {e: False for e in ex}
        while active:
            new = {}
            for e in sorted(active):
                st = state[e]
                score, ok = st.scores(watch, rtol)
                if ok:
                    converged[e] = True
                if ok or st.count + 2 > budget:
                    active.discard(e)
                    continue
                width = st.alpha[st.b] - st.alpha[st.a]
                score[width < 1e-12] = -1.0
                ranked = torch.argsort(score, descending=True)
                positive = score[ranked].clamp_min(0)
                share = torch.cumsum(positive, 0) / positive.sum().clamp_min(1e-300)
                r = max(int((share < focus).sum()) + 1, min_new)
                r = min(r, (budget - st.count) // 2, max(1, (width.numel() + 1) // 2))
                chosen = ranked[:r]
                chosen = chosen[score[chosen] > 0]
                if chosen.numel() == 0:
                    active.discard(e)
                    continue
                new[e] = chosen
            if not new:
                break
            pairs = {}
            for e, c in new.items():
                st = state[e]
                al, am, ab = st.alpha[st.a[c]], st.alpha[st.m[c]], st.alpha[st.b[c]]
                pairs[e] = torch.cat([(al + am) / 2, (am + ab) / 2])
            for e, (F, ys, gs) in _evaluate_pairs(model, batch, target, sites, pairs, internal_batch_size,
                                                  sums).items():
                idx = state[e].add(pairs[e], F, ys, gs)
                k = new[e].numel()
                state[e].split(new[e], idx[:k], idx[k:])
            bar.update(sum(p.numel() for p in pairs.values()))
            spent += sum(p.numel() for p in pairs.values())
        bar.update(budget * len(ex) - spent)   # a block that converged early leaves its unspent budget done
        for e in ex:
            st = state.pop(e)
            if st.splits:  # the totals afresh: no rounding carried over from the splits' updates
                st.set_panels(st.a, st.m, st.b)
            last = first.numel() - 1  # the node at α = 1
            F_x[e], F_b[e], n_evals[e] = st.F[last], st.F[0], st.count
            order = torch.argsort(st.alpha[:st.count])
            sums.diagnosis[e] = {"converged": converged[e], "alpha": st.alpha[:st.count].clone(),
                                 "a": st.alpha[st.a], "b": st.alpha[st.b], "score": st.scores(watch, rtol)[0]}
            for name in names:
                parts = st.totals(name)
                dev = st.g[name][0].device
                a, m, b = st.a.to(dev), st.m.to(dev), st.b.to(dev)
                wa = (st.alpha[st.m] - st.alpha[st.a]).to(dev)
                wb = (st.alpha[st.b] - st.alpha[st.m]).to(dev)
                infl, ierr, iunit = [], [], []
                for g in st.g[name]:
                    shape = (-1, *([1] * (g.dim() - 1)))
                    wa_, wb_ = wa.to(g.dtype).view(shape), wb.to(g.dtype).view(shape)
                    t2 = 0.5 * (g[a] + g[m]) * wa_ + 0.5 * (g[m] + g[b]) * wb_
                    t1 = 0.5 * (g[a] + g[b]) * (wa_ + wb_)
                    ep = ERROR_FACTOR * (t2 - t1)
                    rnd = rounding(t2.abs().sum(0), t2.dtype)
                    infl.append(t2.sum(0))
                    ierr.append(combine(ep.sum(0), ep.pow(2).sum(0)) + rnd)
                    iunit.append(combine_units(reduce_units(ep.sum(0)[None])[0], reduce_units(ep).pow(2).sum(0),
                                               reduce_units(ep.pow(2).sum(0)[None])[0]) + reduce_units(rnd[None])[0])
                norms = sum(g[:st.count].flatten(1).double().pow(2).sum(1) for g in st.g[name]).sqrt().cpu()
                profiles[name][0][e] = st.alpha[:st.count][order]
                profiles[name][1][e] = norms[order]
                fields = ((sums.conductance, [v for v, _, _ in parts]), (sums.influence, infl),
                          (sums.conductance_error, [err for _, err, _ in parts]), (sums.influence_error, ierr),
                          (sums.conductance_unit_error, [u for _, _, u in parts]), (sums.influence_unit_error, iunit),
                          (sums.value_at_x, [y[last] for y in st.y[name]]),
                          (sums.grad_at_x, [g[last] for g in st.g[name]]))
                for acc, got in fields:
                    if name not in acc:
                        acc[name] = [p.new_zeros((n, *p.shape)) for p in got]
                    for dst, p in zip(acc[name], got):
                        dst[e] = p
    bar.close()
    sums.F_x, sums.F_baseline, sums.n_evals = F_x, F_b, n_evals
    sums.grad_profile = {name: profiles[name] for name in names}
    return sums
