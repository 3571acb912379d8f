"""What :func:`unitscope.data.scan.scan` returns: per score × layer × unit statistics, the views on them (mean,
std, class means, selectivity, top examples, a table) and their persistence (a safe, atomic file).

Shapes: ``[U]`` per unit, ``[K, U]`` per class; ``top`` is ``[U, k]`` — units first, the one exception to the
package's examples-first rule (a scan keeps no per-example dim; see :mod:`unitscope.attribution.results`).
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..attribution.results import Top
from ..core.errors import UnitscopeError
from .accumulators import UnitStats
from .selectivity import EPS, Selectivity, selectivity_index

__all__ = ["ScanResult", "Selectivity"]

_FORMAT = 1


class ScanResult:
    """What :func:`scan` returns: ``stats[score][layer]`` (:class:`UnitStats`), ``count`` examples,
    ``class_counts [K]`` (with ``by="class"``) and the settings of the scan.

    Its views are units first (a scan keeps no per-example dim): :meth:`mean`, :meth:`std`, :meth:`sem` ``[U]``,
    :meth:`class_means` ``[K, U]``, :meth:`selectivity`, :meth:`top` ``Top(values [U, k], indices [U, k])`` (dataset
    indices), :meth:`to_frame` a table; :meth:`save` / :meth:`load` a safe, atomic file. :func:`unitscope.scan` builds
    it; each parameter is kept as the attribute of the same name.

    Parameters
    ----------
    stats : dict
        ``{score: {layer: UnitStats}}``: the accumulated per-unit sums (:class:`unitscope.data.accumulators.UnitStats`).
    count : int
        The examples scanned.
    class_counts : Tensor or None
        ``[K]``: examples per class (``by="class"``), or ``None``.
    settings : dict
        The scan's settings (scores, ``by``, ``top_k``, path settings, ...).

    Raises
    ------
    UnitscopeError
        From its views: a score or layer the scan did not keep (the message lists those it did), ``by`` other than
        ``"value"`` / ``"abs"``, class means or selectivity of a scan without per-class sums (``by=None``).
        :meth:`load` refuses a file that is not a scan result, or that holds Python objects, unread.

    Examples
    --------
    >>> import torch, torch.nn as nn, unitscope as us
    >>> net = nn.Sequential(nn.Linear(2, 4), nn.ReLU())
    >>> data = [(torch.rand(5, 2), torch.tensor([0, 1, 0, 1, 1]))]
    >>> r = us.scan(net, data, ["1"], scores=["activation", "conductance"], top_k=3, path=us.PathConfig(n_steps=4))
    >>> r.count, r.scores, r.layers
    (5, ['activation', 'conductance'], ['1'])
    >>> r.mean("1").shape, r.class_means("1").shape, r.top("1", score="conductance").indices.shape
    (torch.Size([4]), torch.Size([2, 4]), torch.Size([4, 3]))
    """

    def __init__(self, stats: dict, count: int, class_counts: torch.Tensor | None, settings: dict):
        self.stats = stats
        self.count = int(count)
        self.class_counts = class_counts
        self.settings = dict(settings)

    @property
    def scores(self) -> list[str]:
        """The scores kept (``activation``, ``conductance``, …)."""
        return list(self.stats)

    @property
    def layers(self) -> list[str]:
        return list(next(iter(self.stats.values()))) if self.stats else []

    def __repr__(self) -> str:
        return f"ScanResult(count={self.count}, scores={self.scores}, layers={self.layers})"

    def _repr_html_(self) -> str:
        """A notebook's view: per score × layer, the number of units, their mean, and the units with the largest
        mean (with classes, also the mean selectivity)."""
        from ..core.display import html_table

        rows = []
        for m, by_layer in self.stats.items():
            for name in by_layer:
                mean = self.mean(name, score=m)
                best = mean.topk(min(5, mean.numel())).indices.tolist()
                sel = "—"
                if self.class_counts is not None:
                    index = self.selectivity(name, score=m, warn=False).index
                    sel = f"{float(index.nanmean()):.3f}" if bool((~index.isnan()).any()) else "— (undefined)"
                rows.append([m, name, mean.numel(), f"{float(mean.mean()):.4g}", sel, ", ".join(map(str, best))])
        return html_table(
            f"ScanResult: {self.count} examples",
            ["score", "layer", "units", "mean", "mean selectivity", "top units by mean"],
            rows,
        )

    def _get(self, layer: str, score: str) -> UnitStats:
        if score not in self.stats:
            raise UnitscopeError(
                f"the scan has no score {score!r}", score=score, hint=f"scanned scores: {', '.join(self.scores)}"
            )
        if layer not in self.stats[score]:
            from ..core.sites import rank_names

            raise UnitscopeError(
                f"the scan has no layer {layer!r}",
                layer=layer,
                hint="closest scanned layers: " + ", ".join(map(repr, rank_names(str(layer), self.layers, n=3))),
            )
        return self.stats[score][layer]

    # views ----------------------------------------------------------------------------------------------
    def mean(self, layer: str, *, score: str = "activation") -> torch.Tensor:
        """``[U]``: each unit's mean over the scanned examples."""
        return self._get(layer, score).sum / max(self.count, 1)

    def std(self, layer: str, *, score: str = "activation", ddof: int = 0) -> torch.Tensor:
        """``[U]``: each unit's standard deviation (``ddof=1`` for the sample estimate)."""
        st = self._get(layer, score)
        n = self.count
        var = (st.sumsq - st.sum * st.sum / max(n, 1)).clamp_min(0) / max(n - ddof, 1)
        return var.sqrt()

    def sem(self, layer: str, *, score: str = "activation") -> torch.Tensor:
        """``[U]``: the standard error of each unit's :meth:`mean` over the scanned examples, ``std(ddof=1) / √n``
        — how far the mean could move with other examples of the same data (NaN with fewer than 2 examples). It is
        not the integration error of a path score: a scan keeps only sums of the examples' values."""
        if self.count < 2:
            return torch.full_like(self.mean(layer, score=score), float("nan"))
        return self.std(layer, score=score, ddof=1) / self.count**0.5

    def plot(
        self, layer: str, *, score: str = "activation", k: int = 20, by: str = "abs", ax=None, title: str | None = None
    ):
        """A bar chart of the ``k`` units of ``layer`` with the largest mean ``score`` over the scan (``by="abs"``:
        largest ``|mean|``; ``"value"``: largest signed mean), each with its error bar ``± sem`` (:meth:`sem`, the
        standard error of the mean over the examples); positive bars red, negative blue. Returns a
        :class:`matplotlib.figure.Figure` made without pyplot (matplotlib's backend and rcParams are left alone),
        or the figure of ``ax`` when drawing into it.

        >>> from unitscope.data.accumulators import UnitStats
        >>> st = UnitStats.empty(3, 2, False)
        >>> st.update(torch.tensor([[1.0, -4.0, 2.0], [3.0, -2.0, 2.0]], dtype=torch.float64), None, torch.arange(2))
        >>> fig = ScanResult({"activation": {"fc": st}}, 2, None, {}).plot("fc", k=2)
        >>> [t.get_text() for t in fig.axes[0].get_xticklabels()]
        ['1', '0']
        """
        from ..attribution.results import bar_chart

        if by not in ("value", "abs"):
            raise UnitscopeError("by must be 'value' or 'abs'", by=by)
        mean, sem = self.mean(layer, score=score), self.sem(layer, score=score)
        key = mean.abs() if by == "abs" else mean
        idx = key.topk(min(int(k), mean.numel())).indices
        return bar_chart(
            mean[idx].tolist(),
            sem[idx].tolist(),
            [str(i) for i in idx.tolist()],
            ax=ax,
            title=title or f"{layer}: top {len(idx)} units by {'|mean|' if by == 'abs' else 'mean'} {score}",
            xlabel="unit",
            ylabel=f"{score}, mean over {self.count} examples (± sem)",
        )

    @property
    def classes(self) -> torch.Tensor:
        """The labels seen at least once (the rows of :meth:`class_means`)."""
        return torch.nonzero(self._need_classes() > 0).flatten()

    def _need_classes(self) -> torch.Tensor:
        """``class_counts``; an error for a scan that kept none."""
        if self.class_counts is None:
            raise UnitscopeError("this scan kept no per-class sums", hint="scan with by='class'")
        return self.class_counts

    def class_means(self, layer: str, *, score: str = "activation") -> torch.Tensor:
        """``[K, U]``: class-conditional means over the classes present (``classes`` gives their labels)."""
        counts = self._need_classes()
        st = self._get(layer, score)
        present = self.classes
        assert st.class_sums is not None  # kept with the class counts
        return st.class_sums[present] / counts[present].unsqueeze(1)

    def selectivity(self, layer: str, *, score: str = "activation", eps: float | None = None, warn: bool = True):
        """Class selectivity (Morcos et al. 2018) of every unit: a :class:`unitscope.data.selectivity.Selectivity`;
        ``NaN`` (with a warning) for units that took negative values, and for all units with fewer than two
        classes — the conventions are in :mod:`unitscope.data.selectivity`."""
        present = self.classes
        return selectivity_index(
            self.class_means(layer, score=score),
            self._need_classes()[present],
            present,
            self._get(layer, score).minimum,
            eps=EPS if eps is None else eps,
            what=f"{score} on layer {layer!r}",
            warn=warn,
        )

    def top(self, layer: str, *, score: str = "activation", unit: int | None = None) -> Top:
        """``Top(values [U, k], indices [U, k])``: the examples with the largest values per unit (best first),
        or those of one ``unit`` (``[k]``). Fewer than ``k`` columns when fewer examples were scanned.
        Units first — the one exception to "examples first": a scan keeps no per-example dim. Both ``top`` methods
        rank along the last dim, best first: :meth:`unitscope.Scores.top` the units of each example (``[N, k]``),
        this one the examples of each unit (``[U, k]``). ``Top.errors`` is ``None``: a scan keeps the values of its
        top examples, not their errors (score those examples with :func:`unitscope.conductance` for their errors)."""
        st = self._get(layer, score)
        k = min(st.top_indices.shape[1], self.count)
        v, i = st.top_values[:, :k], st.top_indices[:, :k]
        return Top(v, i) if unit is None else Top(v[unit], i[unit])

    def to_frame(self):
        """A tidy ``pandas.DataFrame``: one row per score × layer × unit with count, mean, std, ``sem`` (the
        standard error of the mean over the examples, :meth:`sem`), the top examples (space-separated indices) and,
        with classes, selectivity and the preferred class."""
        import pandas as pd

        rows = []
        for m, by_layer in self.stats.items():
            for name in by_layer:
                mean, std, sem = self.mean(name, score=m), self.std(name, score=m), self.sem(name, score=m)
                top = self.top(name, score=m)
                sel = self.selectivity(name, score=m, warn=False) if self.class_counts is not None else None
                for u in range(mean.numel()):
                    row = {
                        "score": m,
                        "layer": name,
                        "unit": u,
                        "count": self.count,
                        "mean": float(mean[u]),
                        "std": float(std[u]),
                        "sem": float(sem[u]),
                        "top_examples": " ".join(str(int(i)) for i in top.indices[u]),
                        "top_values": " ".join(f"{float(v):.6g}" for v in top.values[u]),
                    }
                    if sel is not None:
                        row["selectivity"] = float(sel.index[u])
                        row["preferred_class"] = int(sel.preferred[u])
                    rows.append(row)
        return pd.DataFrame(rows)

    # persistence ----------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "format": _FORMAT,
            "count": self.count,
            "class_counts": self.class_counts,
            "settings": self.settings,
            "stats": {m: {n: st.state() for n, st in d.items()} for m, d in self.stats.items()},
        }

    @classmethod
    def from_state(cls, state: dict) -> "ScanResult":
        stats = {m: {n: UnitStats(**st) for n, st in d.items()} for m, d in state["stats"].items()}
        return cls(stats, state["count"], state["class_counts"], state["settings"])

    def save(self, path) -> str:
        """Save atomically (``torch.save`` beside, then rename)."""
        from ..core.files import atomic_save

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_save(self.state_dict(), path)
        return str(path)

    @classmethod
    def load(cls, path) -> "ScanResult":
        """Read a file written by :meth:`save`. Plain tensors and data only (``weights_only=True``): a file that
        holds any other Python object is refused unread (:class:`unitscope.core.files.UnsafeFileError`)."""
        from ..core.files import DamagedFileError, safe_load

        state = safe_load(path, what="scan result")
        if not isinstance(state, dict) or "stats" not in state or "count" not in state:
            raise DamagedFileError(
                f"{str(path)!r} is not a unitscope scan result",
                hint="write it with ScanResult.save (or unitscope scan --out)",
            )
        return cls.from_state(state)
