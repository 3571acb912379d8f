"""Dataset-scale scans: one pass over a data loader that keeps, per unit, streaming statistics and the
dataset examples that most excite it — never the dataset's activations.

>>> import torch, torch.nn as nn
>>> torch.manual_seed(0) and None
>>> net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
>>> loader = [(torch.randn(5, 3), torch.tensor([0, 1, 0, 1, 1])) for _ in range(2)]
>>> r = scan(net, loader, ["1"], scores=["activation", "conductance"], top_k=3, n_steps=8)
>>> r.count, r.mean("1").shape, r.class_means("1").shape, r.top("1", score="conductance").indices.shape
(10, torch.Size([4]), torch.Size([2, 4]), torch.Size([4, 3]))

What is kept per score × layer × unit (a unit is a channel — dim 1 of the layer output — reduced over the
remaining dims: the **mean** for ``activation`` (Morcos et al.'s convention), the **sum** for attributions,
i.e. a filter's conductance as in ``Scores.per_channel``; ``reduce=`` overrides it):
count, sum, sum of squares, per-class sums with the real class counts (``by="class"``), and the ``top_k``
examples with the largest value (their dataset indices and values; ties go to the lower index, so the
result does not depend on batching or on the number of processes).

Example indices: for a ``DataLoader`` over a map-style dataset they are the dataset's indices (the scan
visits every example its sampler selects once, in index order — shuffling is ignored, statistics do not
depend on order); for any other iterable of batches they are positions in the stream.

With ``group=`` (a ``torch.distributed`` process group; ``torchrun``; gloo on CPU, nccl on GPU) each process takes
every ``world``-th batch, accumulates its shard, and at the end sums are all-reduced and top-k lists merged by
``all_gather``: every rank returns the same result, equal to a single-process run up to float64 rounding.
With ``checkpoint=PATH`` the accumulators are saved atomically every ``checkpoint_every`` batches (one file
per rank); a scan killed and started again with the same model, data and arguments continues where it stopped
(:mod:`unitscope.data.checkpoint`). Results and checkpoints hold plain tensors and data only, and load with
``weights_only=True`` (:mod:`unitscope.core.files`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn
from ..core.progress import bar as progress_bar

from ..core.errors import UnitscopeError
from ..attribution.results import Top
from ..attribution.scores import SCORES, attribute

__all__ = ["scan", "ScanResult", "UnitStats"]

_FORMAT = 1


# ---------------------------------------------------------------------------------------------------------
# accumulators


@dataclass
class UnitStats:
    """Streaming statistics of one score on one layer: tensors over its ``U`` units (float64)."""

    sum: torch.Tensor                 # [U]
    sumsq: torch.Tensor               # [U]
    class_sums: torch.Tensor | None   # [K, U]
    top_values: torch.Tensor          # [U, k] descending; -inf where fewer than k examples were seen
    top_indices: torch.Tensor         # [U, k] example indices; -1 where empty
    minimum: torch.Tensor | None = None  # [U] smallest value seen (+inf before any); None in files of old scans

    @classmethod
    def empty(cls, units: int, top_k: int, by_class: bool) -> "UnitStats":
        z = torch.zeros(units, dtype=torch.float64)
        return cls(z, z.clone(), torch.zeros(0, units, dtype=torch.float64) if by_class else None,
                   torch.full((units, top_k), -torch.inf, dtype=torch.float64),
                   torch.full((units, top_k), -1, dtype=torch.long), torch.full((units,), torch.inf, dtype=torch.float64))

    def update(self, values: torch.Tensor, labels: torch.Tensor | None, index: torch.Tensor) -> None:
        """Add a batch: ``values [B, U]`` (float64), ``labels [B]``, ``index [B]`` (example indices)."""
        self.sum += values.sum(0)
        self.sumsq += (values * values).sum(0)
        if self.minimum is not None and values.shape[0]:
            self.minimum = torch.minimum(self.minimum, values.min(0).values)
        if self.class_sums is not None:
            k = int(labels.max()) + 1 if labels.numel() else 0
            self.grow(k)
            self.class_sums.index_add_(0, labels, values)
        b = values.shape[0]
        self.top_values, self.top_indices = merge_top(
            torch.cat([self.top_values, values.T], 1),
            torch.cat([self.top_indices, index.unsqueeze(0).expand(values.shape[1], b)], 1),
            self.top_values.shape[1])

    def grow(self, k: int) -> None:
        if self.class_sums is not None and self.class_sums.shape[0] < k:
            pad = self.class_sums.new_zeros(k - self.class_sums.shape[0], self.class_sums.shape[1])
            self.class_sums = torch.cat([self.class_sums, pad])

    def state(self) -> dict:
        return {k: getattr(self, k) for k in ("sum", "sumsq", "class_sums", "top_values", "top_indices", "minimum")}


def merge_top(values: torch.Tensor, indices: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` largest ``values`` per row with their ``indices``; ties go to the lower index.

    >>> v, i = merge_top(torch.tensor([[1., 3., 3., 2.]]), torch.tensor([[7, 9, 4, 1]]), 2)
    >>> v.tolist(), i.tolist()
    ([[3.0, 3.0]], [[4, 9]])
    """
    by_index = torch.sort(indices, dim=1, stable=True).indices
    values, indices = values.gather(1, by_index), indices.gather(1, by_index)
    order = torch.sort(values, dim=1, descending=True, stable=True).indices[:, :k]
    return values.gather(1, order), indices.gather(1, order)


# ---------------------------------------------------------------------------------------------------------
# the result


class ScanResult:
    """What :func:`scan` returns: ``stats[score][layer]`` (:class:`UnitStats`), ``count`` examples,
    ``class_counts [K]`` (with ``by="class"``) and the settings of the scan."""

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
    def methods(self) -> list[str]:
        """Deprecated name of :attr:`scores`."""
        import warnings
        warnings.warn("ScanResult.methods is now ScanResult.scores", DeprecationWarning, stacklevel=2)
        return self.scores

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
                sel = (f"{float(self.selectivity(name, score=m).index.mean()):.3f}"
                       if self.class_counts is not None else "—")
                rows.append([m, name, mean.numel(), f"{float(mean.mean()):.4g}", sel, ", ".join(map(str, best))])
        return html_table(f"ScanResult: {self.count} examples", ["score", "layer", "units", "mean",
                          "mean selectivity", "top units by mean"], rows)

    def _get(self, layer: str, score: str) -> UnitStats:
        if score not in self.stats:
            raise UnitscopeError(f"the scan has no score {score!r}", score=score,
                                 hint=f"scanned scores: {', '.join(self.scores)}")
        if layer not in self.stats[score]:
            import difflib
            close = difflib.get_close_matches(str(layer), self.layers, n=3, cutoff=0.0)
            raise UnitscopeError(f"the scan has no layer {layer!r}", layer=layer,
                                 hint="scanned layers: " + ", ".join(map(repr, close or self.layers)))
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

    @property
    def classes(self) -> torch.Tensor:
        """The labels seen at least once (the rows of :meth:`class_means`)."""
        self._need_classes()
        return torch.nonzero(self.class_counts > 0).flatten()

    def _need_classes(self):
        if self.class_counts is None:
            raise UnitscopeError("this scan kept no per-class sums", hint="scan with by='class'")

    def class_means(self, layer: str, *, score: str = "activation") -> torch.Tensor:
        """``[K, U]``: class-conditional means over the classes present (``classes`` gives their labels)."""
        self._need_classes()
        st = self._get(layer, score)
        present = self.classes
        return st.class_sums[present] / self.class_counts[present].unsqueeze(1)

    def selectivity(self, layer: str, *, score: str = "activation", eps: float | None = None, warn: bool = True):
        """Class selectivity (Morcos et al. 2018) of every unit: a :class:`unitscope.data.selectivity.Selectivity`;
        ``NaN`` (with a warning) for units that took negative values, and for all units with fewer than two
        classes — the conventions are in :mod:`unitscope.data.selectivity`."""
        from .selectivity import EPS, selectivity_index

        present = self.classes
        return selectivity_index(self.class_means(layer, score=score), self.class_counts[present], present,
                                 self._get(layer, score).minimum, eps=EPS if eps is None else eps,
                                 what=f"{score} on layer {layer!r}", warn=warn)

    def top(self, layer: str, *, score: str = "activation", unit: int | None = None) -> Top:
        """``Top(values [U, k], indices [U, k])``: the examples with the largest values per unit (best first),
        or those of one ``unit`` (``[k]``). Fewer than ``k`` columns when fewer examples were scanned.
        Units first — the one exception to "examples first": a scan keeps no per-example dim."""
        st = self._get(layer, score)
        k = min(st.top_indices.shape[1], self.count)
        v, i = st.top_values[:, :k], st.top_indices[:, :k]
        return Top(v, i) if unit is None else Top(v[unit], i[unit])

    def to_frame(self):
        """A tidy ``pandas.DataFrame``: one row per score × layer × unit with count, mean, std, the top
        examples (space-separated indices) and, with classes, selectivity and the preferred class."""
        import pandas as pd

        rows = []
        for m, by_layer in self.stats.items():
            for name in by_layer:
                mean, std = self.mean(name, score=m), self.std(name, score=m)
                top = self.top(name, score=m)
                sel = self.selectivity(name, score=m, warn=False) if self.class_counts is not None else None
                for u in range(mean.numel()):
                    row = {"method": m, "layer": name, "unit": u, "count": self.count, "mean": float(mean[u]),
                           "std": float(std[u]),
                           "top_examples": " ".join(str(int(i)) for i in top.indices[u]),
                           "top_values": " ".join(f"{float(v):.6g}" for v in top.values[u])}
                    if sel is not None:
                        row["selectivity"] = float(sel.index[u])
                        row["preferred_class"] = int(sel.preferred[u])
                    rows.append(row)
        return pd.DataFrame(rows)

    # persistence ----------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"format": _FORMAT, "count": self.count, "class_counts": self.class_counts,
                "settings": self.settings,
                "stats": {m: {n: st.state() for n, st in d.items()} for m, d in self.stats.items()}}

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
            raise DamagedFileError(f"{str(path)!r} is not a unitscope scan result",
                                   hint="write it with ScanResult.save (or unitscope scan --out)")
        return cls.from_state(state)


# ---------------------------------------------------------------------------------------------------------
# the scan


def _reduce_units(t: torch.Tensor, how: str, layer: str) -> torch.Tensor:
    if isinstance(t, tuple):
        raise UnitscopeError(f"layer {layer!r} has a tuple output; scan a sub-layer that produces one tensor",
                             layer=layer)
    if t.dim() == 1:
        return t.unsqueeze(1)
    if t.dim() == 2:
        return t
    return t.flatten(2).mean(2) if how == "mean" else t.flatten(2).sum(2)


def _size_hint(loader):
    """The data set's size (or the number of batches) where it is known: part of a checkpoint's identity."""
    ds = getattr(loader, "dataset", loader)
    try:
        return len(ds)
    except TypeError:
        return None


def _target_repr(target) -> str:
    if target is None or isinstance(target, (int, str)):
        return repr(target)
    return getattr(target, "__qualname__", type(target).__name__)


class _Accumulators:
    """Everything a scan adds up, per rank: ``stats[score][layer]``, the example count, the class counts."""

    def __init__(self, methods, how, top_k, by, num_classes, target, extra=None):
        self.methods, self.how, self.top_k, self.by, self.num_classes, self.target = \
            methods, how, top_k, by, num_classes, target
        self.extra = extra
        self.stats: dict[str, dict[str, UnitStats]] = {}
        self.count = 0
        self.class_counts = torch.zeros(num_classes or 0, dtype=torch.float64) if by else None

    def add(self, model, x, y, index, layers, **attribute_kwargs) -> None:
        by, num_classes = self.by, self.num_classes
        if y is not None:
            y = torch.as_tensor(y).long().cpu()
        if (by == "class" or self.target == "label") and y is None:
            raise UnitscopeError("the batches carry no labels", hint="scan with by=None, or give (inputs, labels)")
        if by == "class":
            if y.numel() and (y.min() < 0 or (num_classes is not None and y.max() >= num_classes)):
                raise UnitscopeError("labels out of range", num_classes=num_classes,
                                     labels=sorted(set(y.tolist()))[:10])
        tgt = y.tolist() if self.target == "label" else self.target
        scores = attribute(model, x, layers, scores=self.methods, target=tgt, gap_warning=None, progress=False,
                           **attribute_kwargs)
        if by == "class":
            k = int(y.max()) + 1 if y.numel() else 0
            if self.class_counts.numel() < k:
                self.class_counts = torch.cat([self.class_counts,
                                               self.class_counts.new_zeros(k - self.class_counts.numel())])
            self.class_counts += torch.bincount(y, minlength=self.class_counts.numel()).double()
        reduced = {}
        for m in self.methods:
            s = scores[m]
            by_layer = self.stats.setdefault(m, {})
            for name in s.layers:
                v = _reduce_units(s[name], self.how[m], name).double()
                reduced.setdefault(m, {})[name] = v
                if name not in by_layer:
                    by_layer[name] = UnitStats.empty(v.shape[1], self.top_k, by == "class")
                by_layer[name].update(v, y if by == "class" else None, index)
        if self.extra is not None:
            self.extra.update(reduced, y, index)
        self.count += int(index.numel())


def scan(model: nn.Module, loader, layers, *, scores=("activation",), target=None, by: str | None = "class",
         top_k: int = 9, num_classes: int | None = None, reduce: str = "auto", n_steps: int = 20,
         method: str = "gausslegendre", baselines=None, internal_batch_size: int | None = None,
         batch_size: int = 256, checkpoint=None, checkpoint_every: int = 50, unpack: Callable | None = None,
         group=None, progress: bool | None = None, extra=None) -> ScanResult:
    """Stream ``loader`` through ``model`` once and accumulate per-unit statistics of ``scores`` on ``layers``.

    >>> import torch, torch.nn as nn
    >>> net = nn.Sequential(nn.Linear(2, 2), nn.ReLU())
    >>> with torch.no_grad():
    ...     _ = net[0].weight.copy_(torch.eye(2)), net[0].bias.zero_()
    >>> x = torch.tensor([[1., 0.], [3., 0.], [0., 2.]])
    >>> r = scan(net, [(x, torch.tensor([0, 0, 1]))], ["1"], top_k=2)
    >>> r.mean("1").tolist(), r.class_means("1").tolist(), r.top("1").indices.tolist()
    ([1.3333333333333333, 0.6666666666666666], [[2.0, 0.0], [0.0, 2.0]], [[1, 0], [2, 0]])

    - ``loader``: a ``DataLoader``, a map-style ``Dataset`` (batched by ``batch_size``), a sequence of batches or
      any iterable of batches (see :mod:`unitscope.data.batches`); a batch is ``(inputs, labels, ...)`` or an inputs
      tensor, or whatever ``unpack(batch) -> (inputs, labels)`` reads.
    - ``scores``: any of ``activation``, ``conductance``, ``internal_influence``, ``grad_x_activation`` —
      all computed from one path pass per batch (``n_steps``, ``method``, ``baselines`` as in ``attribute``).
    - ``target``: ``None`` (the top predicted class of each example), an int, ``"label"`` (each example's
      label — class importance), or a callable ``output -> Tensor[N]``.
    - ``by="class"``: keep per-class sums and counts (labels must be integers ``0 … K−1``; ``num_classes``
      checks them); ``None``: no labels needed.
    - ``reduce``: how a channel's positions become one value: ``"auto"`` (mean for ``activation``, sum for
      attributions), ``"mean"`` or ``"sum"``.
    - ``checkpoint``: a file; saved atomically every ``checkpoint_every`` batches and at the end; an existing
      checkpoint of the same scan (same model weights, data, baselines and settings —
      :mod:`unitscope.data.checkpoint`) is resumed, any other is refused.
    - ``group``: ``None`` (default) — this process scans everything alone, with no collective operation (safe
      inside anyone's DDP job); a ``torch.distributed`` process group (e.g. ``torch.distributed.group.WORLD``) —
      every rank of it must call ``scan`` with the same arguments; each takes its shard and all return the merged
      result. A failure on any rank stops every rank (:mod:`unitscope.data.distributed`).
    - ``extra``: an accumulator of your own, fed every batch's reduced values: ``extra.update({score: {layer:
      [B, U]}}, labels, index)``; its ``state()`` (a dict of tensors) is checkpointed and restored with
      ``load_state``; under ``group=`` it gets every rank's state through ``merge(states)``; ``settings()`` joins
      the checkpoint's identity (:func:`unitscope.atlas` keeps histograms and top-k shares this way).
    """
    from .batches import plan_batches, split_batch
    from .checkpoint import checkpoint_path, fingerprint, load_checkpoint, save_checkpoint
    from .distributed import Ranks

    methods = [scores] if isinstance(scores, str) else list(scores)
    unknown = [m for m in methods if m not in SCORES]
    if unknown or not methods:
        raise UnitscopeError(f"unknown score(s) {unknown}", hint=f"choose from {', '.join(SCORES)}")
    if by not in ("class", None):
        raise UnitscopeError("by must be 'class' or None", by=by)
    if reduce not in ("auto", "mean", "sum"):
        raise UnitscopeError("reduce must be 'auto', 'mean' or 'sum'", reduce=reduce)
    if not isinstance(top_k, int) or top_k < 1:
        raise UnitscopeError("top_k must be a positive integer", top_k=top_k)
    if checkpoint is not None and (not isinstance(checkpoint_every, int) or checkpoint_every < 1):
        raise UnitscopeError("checkpoint_every must be a positive integer", checkpoint_every=checkpoint_every)
    unpack = unpack or split_batch
    how = {m: (("mean" if m == "activation" else "sum") if reduce == "auto" else reduce) for m in methods}
    ranks = Ranks.of(group)
    rank, world = ranks.rank, ranks.world
    settings = dict(layers=[str(x) if isinstance(x, str) else type(x).__name__ for x in
                            ([layers] if isinstance(layers, (str, nn.Module)) else layers)],
                    scores=methods, target=_target_repr(target), by=by, top_k=top_k, num_classes=num_classes,
                    reduce=how, n_steps=n_steps, method=method, world_size=world)
    if extra is not None:
        settings["extra"] = extra.settings()
    acc = _Accumulators(methods, how, top_k, by, num_classes, target, extra)
    attribute_kwargs = dict(baselines=baselines, n_steps=n_steps, method=method,
                            internal_batch_size=internal_batch_size)
    done = resumed_from = 0
    ck_path = fp = None
    failed, batches, plan = None, iter(()), None
    try:  # the setup: any rank's error here reaches every rank at the first step
        plan = plan_batches(loader, rank=rank, world=world, unpack=unpack, batch_size=batch_size)
        if checkpoint is not None:
            from ..core.files import check_writable

            ck_path = checkpoint_path(checkpoint, rank, world)
            check_writable(ck_path.parent, what="checkpoint folder")
            fp = fingerprint(model, dict(settings, rank=rank, batch_size=plan.batch_size,
                                         unpack=_target_repr(unpack)),
                             baselines=baselines, data_size=_size_hint(loader),
                             first_batch=None if plan.first is None else plan.first())
            if ck_path.exists():
                done, acc.stats, acc.count, class_counts = load_checkpoint(ck_path, fp, UnitStats, extra=extra)
                if by:
                    acc.class_counts = class_counts
                resumed_from = done
        batches = iter(plan.batches(done))
    except Exception as e:  # noqa: BLE001 — not handled here: re-raised on this rank, reported to the others
        failed = e
    more = ranks.step(failed, True)
    bar = progress_bar(total=plan.n_batches(done), desc=f"scan{'' if world == 1 else f' (rank 0 of {world})'}",
                       unit="batch", progress=False if (progress is False or rank != 0) else None)
    start = time.perf_counter()
    try:
        while more:
            has = False
            try:
                item = next(batches, None)
                if item is not None:
                    has = True
                    acc.add(model, *item, layers, **attribute_kwargs)
                    done += 1
                    bar.update(1)
                    if ck_path is not None and done % checkpoint_every == 0:
                        save_checkpoint(ck_path, fp, done, acc.stats, acc.count, acc.class_counts, extra=extra)
            except Exception as e:  # noqa: BLE001 — re-raised on this rank, reported to the others
                failed = e
            more = ranks.step(failed, has)
    finally:
        bar.close()
    seconds = time.perf_counter() - start
    if ck_path is not None:
        save_checkpoint(ck_path, fp, done, acc.stats, acc.count, acc.class_counts, extra=extra)
    stats, count, class_counts = acc.stats, acc.count, acc.class_counts
    if ranks.distributed:
        stats, count, class_counts = ranks.reduce(stats, count, class_counts, top_k,
                                                  lambda u: UnitStats.empty(u, top_k, by == "class"), merge_top)
        if extra is not None:
            import torch.distributed as dist

            states = [None] * world
            dist.all_gather_object(states, extra.state(), group=ranks.group)
            extra.merge(states)
    if count == 0:
        raise UnitscopeError("the loader gave no examples")
    if class_counts is not None:
        for by_layer in stats.values():
            for st in by_layer.values():
                st.grow(class_counts.numel())
    settings.update(examples=count, seconds=seconds, resumed_from_batch=resumed_from)
    return ScanResult(stats, count, class_counts, settings)
