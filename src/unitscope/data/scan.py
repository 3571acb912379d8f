"""Dataset-scale scans: one pass over a data loader that keeps, per unit, streaming statistics and the
dataset examples that most excite it — never the dataset's activations.

>>> import torch, torch.nn as nn
>>> torch.manual_seed(0) and None
>>> net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
>>> loader = [(torch.randn(5, 3), torch.tensor([0, 1, 0, 1, 1])) for _ in range(2)]
>>> r = scan(net, loader, ["1"], scores=["activation", "conductance"], top_k=3, path=PathConfig(n_steps=8))
>>> r.count, r.mean("1").shape, r.class_means("1").shape, r.top("1", score="conductance").indices.shape
(10, torch.Size([4]), torch.Size([2, 4]), torch.Size([4, 3]))

What is kept per score × layer × unit (a unit of the layer's unit specification, :mod:`unitscope.core.units`:
a conv channel, a transformer neuron over the tokens that the attention mask keeps — so batches of different
lengths scan alike —, ``spec=`` to choose; the other dims reduced by the **mean** for ``activation`` (Morcos et
al.'s convention) and the **sum** for attributions, i.e. a filter's conductance as in ``Scores.per_channel``;
``reduce=`` overrides it):
count, sum, sum of squares, per-class sums with the real class counts (``by="class"``), and the ``top_k``
examples with the largest value (their dataset indices and values; ties go to the lower index, so the
result does not depend on batching or on the number of processes).

Example indices: for a ``DataLoader`` over a map-style dataset they are the dataset's indices (the scan
visits every example its sampler selects once, in index order — shuffling is ignored, statistics do not
depend on order); for any other iterable of batches they are positions in the stream.

With ``stream=StreamConfig(group=...)`` (a ``torch.distributed`` process group; ``torchrun``; gloo on CPU, nccl on GPU)
each process takes every ``world``-th batch, accumulates its shard, and at the end sums are all-reduced and top-k lists
merged by ``all_gather``: every rank returns the same result, equal to a single-process run up to float64 rounding. With
``stream=StreamConfig(checkpoint=PATH)`` the accumulators are saved atomically every ``checkpoint_every`` batches (one
file per rank); a scan killed and started again with the same model, data and arguments continues where it stopped
(:mod:`unitscope.data.checkpoint`). Results and checkpoints hold plain tensors and data only, and load with
``weights_only=True`` (:mod:`unitscope.core.files`).
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import torch.nn as nn

from ..attribution.config import PathConfig, path_config
from ..attribution.scores import chosen_scores
from ..core.errors import UnitscopeError
from ..core.progress import bar as progress_bar
from ..core.types import DataTarget, Layers
from .accumulators import Accumulators, UnitStats, merge_top
from .scan_result import ScanResult
from .selectivity import EPS, Selectivity
from .stream import StreamConfig, stream_config

__all__ = ["scan", "class_selectivity", "ScanResult", "UnitStats", "merge_top"]


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


def scan(
    model: nn.Module,
    loader,
    layers: Layers,
    *,
    scores=("activation",),
    target: DataTarget = None,
    by: str | None = "class",
    top_k: int = 9,
    num_classes: int | None = None,
    additional_forward_args=None,
    path: PathConfig | None = None,
    stream: StreamConfig | None = None,
    progress: bool | None = None,
    spec=None,
    embedding=None,
    dictionaries=None,
) -> ScanResult:
    """Stream ``loader`` through ``model`` once and accumulate per-unit statistics of ``scores`` on ``layers``.

    Per unit of each layer (by its unit specification: a conv's channels, a ``[N, D]`` layer's neurons, a
    token-major layer's neurons over its real tokens), for each score: the mean, standard deviation, minimum and
    maximum over the examples, the ``top_k`` examples with the largest values, and with ``by="class"`` per-class sums
    and counts. Every score is computed from one path pass per batch, as in :func:`unitscope.attribute` (no gap
    warning per batch). Only these sums are kept, never the dataset's activations.

    Batches that are dicts with ``input_ids`` (a tokenizer's) pass their other entries (``attention_mask``) as keyword
    arguments, and the mask leaves padding out.

    ``stream.checkpoint``: a file; saved atomically every ``stream.checkpoint_every`` batches and at the end; an
    existing checkpoint of the same scan (same model weights, data, baselines and settings —
    :mod:`unitscope.data.checkpoint`) is resumed, any other is refused. ``stream.group``: ``None`` (default) — this
    process scans everything alone, with no collective operation (safe inside anyone's DDP job); a
    ``torch.distributed`` process group (e.g. ``torch.distributed.group.WORLD``) — every rank of it must call ``scan``
    with the same arguments; each takes its shard and all return the merged result. A failure on any rank stops
    every rank (:mod:`unitscope.data.distributed`). ``stream.extra``: an accumulator of your own, fed every batch's
    reduced values (see :class:`unitscope.StreamConfig`; :func:`unitscope.atlas` keeps histograms and top-k shares
    this way).

    Parameters
    ----------
    model : nn.Module
        The network, handed back as it came.
    loader : DataLoader, Dataset, sequence or iterable
        A ``DataLoader``, a map-style ``Dataset`` (batched by ``stream.batch_size``), a sequence of batches or any
        iterable of batches (see :mod:`unitscope.data.batches`); a batch is ``(inputs, labels, ...)`` or an inputs
        tensor, or whatever ``stream.unpack(batch) -> (inputs, labels)`` reads.
    layers : str, nn.Module or list of them
        The layers, as in :func:`unitscope.conductance`.
    scores : str, sequence of str or dict, default ("activation",)
        Any of ``"activation"``, ``"conductance"``, ``"internal_influence"``, ``"grad_x_activation"``. How a unit's
        positions become one value: ``{score: reduction}`` with ``"auto"`` (what a list of names means: the mean for
        ``activation``, the sum for attributions), ``"mean"`` or ``"sum"``.
    target : None, int, "label" or callable, default None
        ``None`` (the top predicted class of each example), an int, ``"label"`` (each example's label — class
        importance), or a callable ``output -> Tensor [N]``.
    by : "class" or None, default "class"
        ``"class"``: keep per-class sums and counts (labels must be integers ``0 … K−1``); ``None``: no labels
        needed.
    top_k : int, default 9
        How many top examples to keep per unit and score.
    num_classes : int or None, default None
        With ``by="class"``: the number of classes ``K``, checked against the labels (``None``: from the labels).
    additional_forward_args : tuple, dict or None, default None
        Further arguments of ``model``, given to every batch.
    path : PathConfig or None, default None
        The path scores' settings: a :class:`unitscope.PathConfig` (the baselines, the rule, the budget; ``None``:
        ``PathConfig(n_steps=20)``).
    stream : StreamConfig or None, default None
        How the data is read and the work shared: a :class:`unitscope.StreamConfig` (``None``: ``StreamConfig()``,
        batches of 256, no checkpoint, this process alone).
    progress : bool or None, default None
        ``None``: a bar over the batches on a terminal, progress lines in a log; ``False``: none.
    spec : str, UnitSpec, dict or None, default None
        The unit specification (a layout name, a ``UnitSpec`` or ``{layer: ...}``; ``None``: by layout).
    embedding : str or None, default None
        For token-id inputs: the module whose output the paths start at (as in :func:`unitscope.attribute`).
    dictionaries : dict or None, default None
        ``{layer: dictionary}`` as in :func:`unitscope.conductance` (each loaded once, its weights part of a
        checkpoint's identity): that layer's units are the dictionary's ``F`` features and, last, its error node
        (``U = F + 1``) — per-feature statistics and top examples, the error node's share beside them.

    Returns
    -------
    ScanResult
        Units first (a scan keeps no per-example dim): ``r.mean(layer)`` / ``r.std(layer)`` are ``[U]``,
        ``r.class_means(layer)`` ``[K, U]``, ``r.top(layer)`` ``Top(values [U, k], indices [U, k])`` (dataset
        indices), ``r.count`` the examples scanned; ``score=`` picks the score.

    Raises
    ------
    UnitscopeError
        ``by`` other than ``"class"`` / ``None``, a reduction other than ``"auto"``, ``"mean"``, ``"sum"``, ``top_k``
        < 1, an unknown score or layer, batches without labels for ``by="class"`` or labels out of range, a batch it
        cannot read inputs from, a loader with no examples, a checkpoint of another scan (or unreadable), ``group=``
        without ``torch.distributed`` initialized, and the mistakes :func:`unitscope.attribute` names.

    Examples
    --------
    >>> import torch, torch.nn as nn
    >>> net = nn.Sequential(nn.Linear(2, 2), nn.ReLU())
    >>> with torch.no_grad():
    ...     _ = net[0].weight.copy_(torch.eye(2)), net[0].bias.zero_()
    >>> x = torch.tensor([[1., 0.], [3., 0.], [0., 2.]])
    >>> r = scan(net, [(x, torch.tensor([0, 0, 1]))], ["1"], top_k=2)
    >>> r.mean("1").tolist(), r.class_means("1").tolist(), r.top("1").indices.tolist()
    ([1.3333333333333333, 0.6666666666666666], [[2.0, 0.0], [0.0, 2.0]], [[1, 0], [2, 0]])
    """
    from .batches import plan_batches, split_batch
    from .checkpoint import checkpoint_path, fingerprint, load_checkpoint, save_checkpoint
    from .distributed import Ranks

    methods = [s.name for s in chosen_scores(list(scores) if isinstance(scores, dict) else scores)]
    reduce = dict(scores) if isinstance(scores, dict) else {}
    cfg = path_config(path, PathConfig(n_steps=20))
    st = stream_config(stream)
    checkpoint, checkpoint_every, extra, group = st.checkpoint, st.checkpoint_every, st.extra, st.group
    baselines, batch_size = cfg.baselines, st.batch_size
    if by not in ("class", None):
        raise UnitscopeError("by must be 'class' or None", by=by)
    bad = {m: r for m, r in reduce.items() if r not in ("auto", "mean", "sum")}
    if bad:
        raise UnitscopeError(
            "a score's reduction is 'auto', 'mean' or 'sum'",
            scores=bad,
            hint="e.g. scores={'activation': 'sum', 'conductance': 'auto'}",
        )
    if not isinstance(top_k, int) or top_k < 1:
        raise UnitscopeError("top_k must be a positive integer", top_k=top_k)
    unpack = st.unpack or split_batch
    how = {
        m: (("mean" if m == "activation" else "sum") if reduce.get(m, "auto") == "auto" else reduce[m]) for m in methods
    }
    ranks = Ranks.of(group)
    rank, world = ranks.rank, ranks.world
    settings: dict[str, Any] = dict(
        layers=[
            str(x) if isinstance(x, str) else type(x).__name__
            for x in ([layers] if isinstance(layers, (str, nn.Module)) else layers)
        ],
        scores=methods,
        target=_target_repr(target),
        by=by,
        top_k=top_k,
        num_classes=num_classes,
        reduce=how,
        n_steps=cfg.n_steps,
        method=cfg.method,
        world_size=world,
        spec=None if spec is None else repr(spec),
        embedding=None if embedding is None else str(embedding),
    )
    if extra is not None:
        settings["extra"] = extra.settings()
    if dictionaries:  # loaded once (a path is read here, not per batch); their weights: part of the scan's identity
        from ..core.dictionary import as_dictionary
        from .checkpoint import model_digest

        if not isinstance(dictionaries, dict):
            raise UnitscopeError("dictionaries must be a dict {layer: dictionary}", got=type(dictionaries).__name__)
        dictionaries = {k: as_dictionary(v, str(k)) for k, v in dictionaries.items()}
        settings["dictionaries"] = {
            (k if isinstance(k, str) else type(k).__name__): f"{model_digest(d)} {d!r}" for k, d in dictionaries.items()
        }
    for k, default in (("rtol", 1e-3), ("captum_compatible", False)):  # path settings beyond the defaults
        if getattr(cfg, k) != default:
            settings[k] = getattr(cfg, k)
    acc = Accumulators(methods, how, top_k, by, num_classes, target, extra)
    attribute_kwargs = dict(
        path=replace(cfg, gap_warning=None),
        spec=spec,
        embedding=embedding,
        additional_forward_args=additional_forward_args,
        dictionaries=dictionaries or None,
    )
    done = resumed_from = 0
    ck_path = fp = None
    failed, batches, plan = None, iter(()), None
    try:  # the setup: any rank's error here reaches every rank at the first step
        plan = plan_batches(loader, rank=rank, world=world, unpack=unpack, batch_size=batch_size)
        if checkpoint is not None:
            from ..core.files import check_writable

            ck_path = checkpoint_path(checkpoint, rank, world)
            check_writable(ck_path.parent, what="checkpoint folder")
            fp = fingerprint(
                model,
                dict(settings, rank=rank, batch_size=plan.batch_size, unpack=_target_repr(unpack)),
                baselines=baselines,
                data_size=_size_hint(loader),
                first_batch=None if plan.first is None else plan.first(),
            )
            if ck_path.exists():
                done, acc.stats, acc.count, class_counts = load_checkpoint(ck_path, fp, UnitStats, extra=extra)
                if by:
                    acc.class_counts = class_counts
                resumed_from = done
        batches = iter(plan.batches(done))
    except Exception as e:  # noqa: BLE001 — not handled here: re-raised on this rank, reported to the others
        failed = e
    more = ranks.step(failed, True)
    assert plan is not None  # the setup's error, if any, was raised by the step
    bar = progress_bar(
        total=plan.n_batches(done),
        desc=f"scan{'' if world == 1 else f' (rank 0 of {world})'}",
        unit="batch",
        progress=False if (progress is False or rank != 0) else None,
    )
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
                    if ck_path is not None and fp is not None and done % checkpoint_every == 0:
                        save_checkpoint(ck_path, fp, done, acc.stats, acc.count, acc.class_counts, extra=extra)
            except Exception as e:  # noqa: BLE001 — re-raised on this rank, reported to the others
                failed = e
            more = ranks.step(failed, has)
    finally:
        bar.close()
    seconds = time.perf_counter() - start
    if ck_path is not None and fp is not None:  # set together
        save_checkpoint(ck_path, fp, done, acc.stats, acc.count, acc.class_counts, extra=extra)
    stats, count, class_counts = acc.stats, acc.count, acc.class_counts
    if ranks.distributed:
        stats, count, class_counts = ranks.reduce(
            stats, count, class_counts, top_k, lambda u: UnitStats.empty(u, top_k, by == "class"), merge_top
        )
        if extra is not None:
            extra.merge(ranks.all_gather_object(extra.state()))
    if count == 0:
        raise UnitscopeError("the loader gave no examples")
    if class_counts is not None:
        for by_layer in stats.values():
            for unit_stats in by_layer.values():
                unit_stats.grow(class_counts.numel())
    settings.update(examples=count, seconds=seconds, resumed_from_batch=resumed_from)
    return ScanResult(stats, count, class_counts, settings)


def class_selectivity(
    model: nn.Module,
    loader,
    layers: Layers,
    *,
    num_classes: int | None = None,
    eps: float = EPS,
    progress: bool | None = None,
) -> dict[str, Selectivity]:
    """Selectivity of every channel of ``layers`` from ``loader`` (batches of ``(inputs, labels)``): one
    :func:`scan` pass keeping per-class sums of the channels' mean activations (conventions:
    :mod:`unitscope.data.selectivity`).

    ``SI = (μ_max − μ_−max) / (μ_max + μ_−max + ε)`` per channel, from its class-conditional mean activations;
    defined for non-negative activations (post-ReLU) and at least two classes, ``NaN`` (with a warning) elsewhere.

    Parameters
    ----------
    model : nn.Module
        The network, handed back as it came.
    loader : DataLoader, Dataset, sequence or iterable
        Batches of ``(inputs, labels)``, the labels integers ``0 … K−1`` (read as by :func:`scan`).
    layers : str, nn.Module or list of them
        The layers, as in :func:`unitscope.conductance`.
    num_classes : int or None, default None
        The number of classes ``K``, checked against the labels (``None``: from the labels).
    eps : float, default 1e-7
        The ``ε`` of the index (it keeps a dead channel at ``SI = 0`` instead of 0/0).
    progress : bool or None, default None
        ``None``: a bar over the batches on a terminal; ``False``: none.

    Returns
    -------
    dict of str to Selectivity
        Per layer a :class:`unitscope.data.selectivity.Selectivity`: ``index [U]`` (``NaN`` where undefined,
        ``reason`` says why), ``class_means [K, U]``, ``counts [K]``, ``preferred [U]`` (the class with the largest
        mean).

    Raises
    ------
    UnitscopeError
        Batches without labels, labels out of range, an unknown layer, a loader with no examples, and the other
        mistakes :func:`scan` names.

    Examples
    --------
    >>> import torch, torch.nn as nn
    >>> net = nn.Sequential(nn.Linear(2, 3), nn.ReLU())
    >>> loader = [(torch.randn(8, 2), torch.randint(0, 2, (8,))) for _ in range(3)]
    >>> sel = class_selectivity(net, loader, ["1"], num_classes=2)
    >>> sel["1"].index.shape, sel["1"].class_means.shape
    (torch.Size([3]), torch.Size([2, 3]))
    """
    result = scan(
        model,
        loader,
        layers,
        scores={"activation": "mean"},
        by="class",
        top_k=1,
        num_classes=num_classes,
        progress=progress,
    )
    return {name: result.selectivity(name, score="activation", eps=eps) for name in result.layers}
