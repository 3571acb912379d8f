"""The atlas's entry point and its result: :func:`atlas` runs the scan and the per-unit work, :class:`Atlas` holds
the cards (:mod:`unitscope.atlas`)."""

from __future__ import annotations

import json
import math
import zlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sized, cast

import torch
import torch.nn as nn
from ..core.progress import bar as progress_bar

from .source import Source, UnitAccumulator, units_of_layer
from ..core.errors import UnitscopeError
from ..core.files import atomic_save, atomic_write_text
from ..core.state import autograd_on
from ..core.types import DataTarget, LayerNames
from ..attribution.config import PathConfig, path_config
from ..data.stream import StreamConfig, stream_config

__all__ = ["Atlas", "atlas", "SynthesisConfig", "BANDS", "PAGE_WRITERS"]

#: What :meth:`Atlas.save` calls to write the page, ``fn(atlas, directory, *, title, value_range)``: the report layer
#: (:mod:`unitscope.report.atlas_html`, imported by ``import unitscope``) adds its writer, so this library module needs
#: no import of the layer above it.
PAGE_WRITERS: list = []

BANDS = (("p50-75", 50.0, 75.0), ("p90-99", 90.0, 99.0), ("above-max", 100.0, None))
_FORMAT = 1


class Atlas:
    """What :func:`atlas` returns: ``meta`` (model, data, layers, settings), ``units`` (one JSON-ready dict per
    unit, the schema of ``atlas.json``) and ``tensors`` (``"LAYER/KIND"`` → a tensor with one row per card of that
    layer, in card order — ``card["row"]``; ``LAYER/units`` names each row's unit: ``hist_counts``, ``hist_edges``,
    ``iam``, ``inverse``, ``exemplar_inputs``, ``exemplar_attr`` …; the class means are ``[K, cards]``).

    :func:`unitscope.atlas` builds it, :meth:`load` reads one back; :meth:`unit` gives one card, :meth:`plot` draws
    it, :meth:`save` writes ``atlas.json``, the tensors and the HTML page.

    Parameters
    ----------
    meta : dict
        The model, the data, the layers and the settings.
    units : list of dict
        One card per unit (the schema of ``atlas.json``).
    tensors : dict of str to Tensor
        ``"LAYER/KIND"`` → a tensor with one row per card of that layer.

    Raises
    ------
    UnitscopeError
        :meth:`unit` for a unit the atlas has no card of; :meth:`load` for an ``atlas.json`` of another format (its
        tensors are read with ``weights_only=True``: a file holding other Python objects is refused unread).

    Examples
    --------
    >>> import torch, unitscope as us
    >>> a = us.Atlas({"layers": ["fc"]}, [{"layer": "fc", "unit": 0, "row": 0}], {"fc/hist_counts": torch.zeros(1, 8)})
    >>> a.layers, a.unit("fc", 0)["row"]
    (['fc'], 0)
    """

    def __init__(self, meta: dict, units: list[dict], tensors: dict[str, torch.Tensor]):
        self.meta, self.units, self.tensors = dict(meta), list(units), dict(tensors)

    @property
    def layers(self) -> list[str]:
        return list(self.meta.get("layers", []))

    def unit(self, layer: str, unit: int) -> dict:
        for u in self.units:
            if u["layer"] == layer and u["unit"] == unit:
                return u
        raise UnitscopeError(
            f"the atlas has no unit {unit} of layer {layer!r}", layer=layer, hint=f"layers: {', '.join(self.layers)}"
        )

    def to_json(self) -> dict:
        return {"format": _FORMAT, **self.meta, "units": self.units}

    def plot(self, layer: str, unit: int, *, value_range=(0.0, 1.0)):
        """One unit's card as a figure: its activation histogram over the data, its top exemplars (image inputs
        ``[C, H, W]``: the pictures, titled by activation and conductance) and its IAM image beside them; returns a
        :class:`matplotlib.figure.Figure` (made without pyplot: matplotlib's backend and rcParams stay as they
        were). ``value_range``: the inputs' range, for the pictures (a picture outside it is scaled to its own
        min–max). Token inputs show the histogram and the exemplars' values only.

        >>> import torch, torch.nn as nn
        >>> torch.manual_seed(0) and None
        >>> net = nn.Sequential(nn.Conv2d(3, 2, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 2))
        >>> a = atlas(net, torch.rand(8, 3, 6, 6), ["1"], top_k=2, path=PathConfig(n_steps=4),
        ...           synthesis=SynthesisConfig(iam_steps=2, inverse_steps=2, inverse_samples=1), progress=False)
        >>> fig = a.plot("1", 0)
        >>> fig.axes[0].get_title()
        "layer '1', unit 0: activation over the data"
        """
        from matplotlib.figure import Figure

        card = self.unit(layer, unit)
        row, t = card["row"], self.tensors
        images = t.get(f"{layer}/exemplar_inputs")
        pictures = images is not None and images.dim() == 5 and images.shape[2] in (1, 3)
        shown = [(j, e) for j, e in enumerate(card["exemplars"]) if e["by"] == "activation"][:6] if pictures else []
        iam = t.get(f"{layer}/iam")
        has_iam = pictures and iam is not None and not bool(torch.isnan(iam[row]).all())
        cols = 1 + len(shown) + int(has_iam)
        fig = Figure(figsize=(2.2 * cols + 1.6, 2.4))
        axes = fig.subplots(1, cols, squeeze=False)[0]
        counts, edges = t[f"{layer}/hist_counts"][row].double(), t[f"{layer}/hist_edges"][row].double()
        axes[0].bar(
            edges[:-1].numpy(), counts.numpy(), width=(edges[1:] - edges[:-1]).numpy(), align="edge", color="0.45"
        )
        axes[0].set_title(f"layer {layer!r}, unit {unit}: activation over the data", fontsize=7)
        axes[0].tick_params(labelsize=6)

        def picture(ax, x, title):
            lo, hi = value_range
            x = x.float()
            if not (float(x.min()) >= lo and float(x.max()) <= hi):
                lo, hi = float(x.min()), float(x.max())
            x = ((x - lo) / max(hi - lo, 1e-12)).clamp(0, 1)
            ax.imshow(
                x[0].numpy() if x.shape[0] == 1 else x.permute(1, 2, 0).numpy(),
                cmap="gray" if x.shape[0] == 1 else None,
            )
            ax.set_title(title, fontsize=6)
            ax.set_xticks([])
            ax.set_yticks([])

        for i, (j, e) in enumerate(shown):  # j: the exemplar's place in the card and in its tensors
            assert images is not None  # shown only with pictures
            picture(
                axes[1 + i], images[row, j], f"#{e['index']}: act {e['activation']:.3g}\ncond {e['conductance']:+.3g}"
            )
        if has_iam and iam is not None:
            picture(axes[-1], iam[row], "IAM")
        fig.tight_layout()
        return fig

    def save(self, directory, *, html: bool = True, title: str | None = None, value_range=(0.0, 1.0)) -> str:
        """Write ``DIR/atlas.json`` and ``DIR/atlas_tensors.pt`` (plain tensors; load with ``weights_only=True``)
        and, with ``html=True`` (the default), the page: ``DIR/index.html`` with its pictures in ``DIR/img/``
        (:func:`unitscope.report.atlas_html.render_atlas`; open the file in a browser, no server needed) and
        ``DIR/manifest.json``, so ``unitscope report DIR`` shows the atlas too. ``title``: the page's title
        (default "Unit atlas of MODEL"); ``value_range``: the range of the inputs' values, for their pictures
        (a picture outside it is scaled to its own min–max). ``html=False`` writes the data only. Returns the
        path of ``atlas.json``."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        atomic_write_text(d / "atlas.json", json.dumps(self.to_json(), indent=1, allow_nan=False))
        atomic_save({k: v.contiguous() for k, v in self.tensors.items()}, d / "atlas_tensors.pt")
        if html:
            if not PAGE_WRITERS:
                raise UnitscopeError(
                    "no writer of the atlas page is registered",
                    hint="import unitscope.report.atlas_html (import unitscope does), or pass "
                    "html=False for the data only",
                )
            for write in PAGE_WRITERS:
                write(self, d, title=title, value_range=value_range)
        return str(d / "atlas.json")

    @classmethod
    def load(cls, directory) -> "Atlas":
        d = Path(directory)
        blob = json.loads((d / "atlas.json").read_text())
        if blob.get("format") != _FORMAT:
            raise UnitscopeError(f"{d / 'atlas.json'} has atlas format {blob.get('format')!r}, not {_FORMAT}")
        units = blob.pop("units")
        blob.pop("format")
        path = d / "atlas_tensors.pt"
        tensors = torch.load(path, map_location="cpu", weights_only=True) if path.exists() else {}
        return cls(blob, units, tensors)

    def __repr__(self):
        return f"Atlas(model={self.meta.get('model')!r}, layers={self.layers}, units={len(self.units)})"

    def _repr_html_(self) -> str:
        import html

        rows = "".join(
            f"<tr><td>{html.escape(u['layer'])}</td><td>{u['unit']}</td><td>{'dead' if u['dead'] else ''}</td>"
            f"<td>{_fmt(u['importance']['conductance'])}</td><td>{_fmt(u['importance']['top_k_share'])}</td>"
            f"<td>{_fmt((u['selectivity'] or {}).get('index'))}</td><td>{_fmt(u['rs'])}</td>"
            f"<td>{'yes' if u['faithfulness'].get('atypical') else ''}</td></tr>"
            for u in sorted(self.units, key=lambda u: -abs(u["importance"]["conductance"]))[:20]
        )
        return (
            f"<p><b>Atlas</b> of {html.escape(str(self.meta.get('model')))} on "
            f"{html.escape(str(self.meta.get('data')))}: {len(self.units)} units in {len(self.layers)} layers "
            "(the 20 most important below)</p><table><tr><th>layer</th><th>unit</th><th></th>"
            "<th>conductance</th><th>top-k share</th><th>selectivity</th><th>RS</th><th>atypical</th></tr>"
            f"{rows}</table>"
        )


def _fmt(v) -> str:
    return "" if v is None else f"{v:.3g}"


def _seed(base: int, *parts) -> int:
    return (int(base) * 1_000_003 + zlib.crc32(":".join(map(str, parts)).encode())) % (2**31)


def _chosen_units(result, layer: str, units) -> list[int]:
    """The units of ``layer`` the atlas makes cards for (see ``units`` in :func:`atlas`), in increasing order."""
    n = units_of_layer(result, layer)
    if units is None:
        return list(range(n))
    if isinstance(units, int) and not isinstance(units, bool):
        if units < 1:
            raise UnitscopeError("units: a positive number of units per layer", units=units)
        top = result.mean(layer, score="conductance").abs().argsort(descending=True, stable=True)[:units]
        return sorted(int(u) for u in top)
    if not isinstance(units, dict):
        raise UnitscopeError(
            "units: None, an int (the most important per layer) or {layer: [units]}", got=type(units).__name__
        )
    got = units.get(layer)
    if got is None:
        return list(range(n))
    got = sorted({int(u) for u in got})
    bad = [u for u in got if not 0 <= u < n]
    if bad or not got:
        raise UnitscopeError(
            f"units of layer {layer!r} out of range",
            layer=layer,
            units=bad[:10] or got,
            hint=f"the layer has units 0 … {n - 1}",
        )
    return got


def _num(v) -> float | None:
    v = float(v)
    return v if math.isfinite(v) else None


@dataclass(frozen=True)
class SynthesisConfig:
    """The atlas's synthetic inputs: whether to make them, through what, and how hard to optimize.

    - ``synthesize``: IAM images and inverse-set samples — ``None`` (default: for inputs ``[C, H, W]`` and ``[D]``,
      or when a ``generator`` is given), ``True`` or ``False``;
    - ``generator``: ``G`` for the inverse sets (default: the FFT parameterization for images, the identity for
      vectors);
    - ``param``, ``value_range``, ``iam_steps``: the IAM's parameterization (``"fft"`` or ``"pixel"``), the inputs'
      range and its optimization steps;
    - ``inverse_samples``, ``inverse_steps``: inverse-set samples per band and the sampler's steps;
    - ``bands``: ``(name, lower percentile, upper percentile or None for +inf)`` of the unit's activation over the
      data; a percentile of 100 is the data's maximum;
    - ``seed``: every generated input is seeded by it, its layer, unit and kind.

    A frozen dataclass, passed as ``synthesis=`` to :func:`unitscope.atlas`.

    Parameters
    ----------
    synthesize : bool or None, default None
        Make IAM images and inverse-set samples: ``None`` (for inputs ``[C, H, W]`` and ``[D]``, or when a
        ``generator`` is given), ``True`` or ``False``.
    generator : Generator or None, default None
        ``G`` for the inverse sets (``None``: the FFT parameterization for images, the identity for vectors).
    param : str, default "fft"
        The IAM's parameterization, ``"fft"`` or ``"pixel"``.
    value_range : tuple of float, default (0.0, 1.0)
        The inputs' range.
    iam_steps : int, default 128
        The IAM's optimization steps.
    inverse_samples : int, default 4
        Inverse-set samples per band.
    inverse_steps : int, default 100
        The inverse-set sampler's steps.
    bands : tuple, default BANDS
        ``(name, lower percentile, upper percentile or None)`` per band: ``("p50-75", 50, 75)``,
        ``("p90-99", 90, 99)``, ``("above-max", 100, None)``.
    seed : int, default 0
        Every generated input is seeded by it, its layer, unit and kind.

    Raises
    ------
    UnitscopeError
        Nothing at construction; :func:`unitscope.atlas` refuses ``synthesis=`` that is not a ``SynthesisConfig``,
        and ``synthesize=True`` for a layer read through a dictionary.

    Examples
    --------
    >>> SynthesisConfig(iam_steps=32).inverse_samples
    4
    >>> SynthesisConfig(synthesize=False).bands[0]
    ('p50-75', 50.0, 75.0)
    """

    synthesize: bool | None = None
    generator: object = None
    param: str = "fft"
    value_range: tuple = (0.0, 1.0)
    iam_steps: int = 128
    inverse_samples: int = 4
    inverse_steps: int = 100
    bands: tuple = BANDS
    seed: int = 0


@autograd_on()  # the same atlas inside torch.no_grad() / torch.inference_mode()
def atlas(
    model: nn.Module,
    data,
    layers: LayerNames,
    *,
    target: DataTarget = None,
    units=None,
    top_k: int = 9,
    share_k: int = 5,
    bins: int = 128,
    path: PathConfig | None = None,
    stream: StreamConfig | None = None,
    synthesis: SynthesisConfig | None = None,
    embedding=None,
    tokens=None,
    progress: bool | None = None,
    dictionaries=None,
) -> Atlas:
    """Build the atlas of every unit of ``layers`` (see the module docs).

    ``meta["model"]`` and ``meta["data"]`` name the model and the data on the page (default: the model's class and
    the data's size); set them on the result before :meth:`Atlas.save` to name them otherwise.

    Text: items that are a tokenizer's dicts (``input_ids``, ``attention_mask``, ``labels``) or token-id tensors, with
    ``embedding="NAME"`` (the token embedding: paths start at its output; ``path.baselines`` may be a token id, e.g.
    the pad id); a token-major layer's units are its ``D`` neurons over the tokens the mask keeps
    (:mod:`unitscope.core.units`), exemplars carry their per-token conductance through the unit, and there are no
    synthetic inputs (an optimized embedding sequence is no sentence).

    Parameters
    ----------
    model : nn.Module
        The network, handed back as it came.
    data : tuple, Tensor, Dataset, DataLoader or object
        ``(inputs, labels)`` tensors, an inputs tensor, an object with ``.x``/``.y``, a map-style ``Dataset`` or a
        ``DataLoader`` over one (exemplars are read back by index).
    layers : str or list of str
        The layers whose units get cards (dotted names, ``"NAME@K"`` for the K-th call).
    target : None, "label" or int, default None
        ``None`` (each example's top class), ``"label"`` (each example's label), or an int.
    units : None, int or dict, default None
        ``None`` (every unit), an int ``k`` (per layer the ``k`` units with the largest mean |conductance| over the
        data — the scan still covers every unit), or ``{layer: [unit, …]}``.
    top_k : int, default 9
        Exemplars per unit by activation and by conductance.
    share_k : int, default 5
        A unit's importance share is the share of examples where it is among the ``share_k`` most conductant of its
        layer.
    bins : int, default 128
        Bins of each unit's activation histogram.
    path : PathConfig or None, default None
        A :class:`unitscope.PathConfig` (``None``: ``PathConfig(n_steps=20)``): the scan's integration rule and
        baselines (``"adaptive"``: ``n_steps`` to start with); the exemplars' per-input conductance takes a fixed
        rule (``"gausslegendre"`` when ``method`` is adaptive) with as many points; ``path.unit_batch_size`` units
        make one chunk of the per-unit work (split over the processes; the numbers do not depend on it);
        ``path.internal_batch_size``: path rows per backward (scan and exemplars; default from the input size).
    stream : StreamConfig or None, default None
        A :class:`unitscope.StreamConfig` — the scan's ``batch_size``, its ``checkpoint`` (resumed when it exists)
        and a ``torch.distributed`` process ``group`` to share the work over (``None``: this process alone; every
        rank calls ``atlas`` with the same arguments and gets the same ``Atlas``); ``unpack`` and ``extra`` must be
        left unset.
    synthesis : SynthesisConfig or None, default None
        A :class:`unitscope.SynthesisConfig` — IAM and inverse-set samples, their generator, parameterization,
        steps, bands and seed (``None``: ``SynthesisConfig()``).
    embedding : str or None, default None
        For token-id inputs: the name of the token embedding module (paths start at its output).
    tokens : list of list of str or None, default None
        Per example a list of token strings (text models): stored with each exemplar.
    progress : bool or None, default None
        ``None``: bars on a terminal, progress lines in a log; ``False``: none.
    dictionaries : dict or None, default None
        ``{layer: dictionary}`` as in :func:`unitscope.conductance`: that layer's cards are its dictionary's features
        and, last, its error node (``card["error_node"]``); ``meta["dictionaries"]`` gives each layer's feature
        count and the error node's share of the layer's mean conductance. No synthetic inputs are made for such
        layers (``synthesis.synthesize`` must not be ``True``): exemplars, their per-input shading, histograms.

    Returns
    -------
    Atlas
        ``a.meta`` (model, data, layers, settings), ``a.units`` (one JSON-ready card per unit: ``layer``, ``unit``,
        ``exemplars``, ``class_means``, ``dead``, ``faithfulness``, …) and ``a.tensors`` (``"LAYER/KIND"`` → one row
        per card of that layer: ``hist_counts``, ``iam``, ``inverse``, ``exemplar_inputs``, ``exemplar_attr``, …);
        :meth:`Atlas.save` writes ``atlas.json``, the tensors and an HTML page.

    Raises
    ------
    UnitscopeError
        ``synthesis`` that is not a ``SynthesisConfig``, a ``stream`` with ``unpack`` or ``extra``, ``top_k``,
        ``share_k`` or ``unit_batch_size`` < 1, ``target="label"`` without labels, token ids without ``embedding``,
        ``synthesize=True`` with dictionaries, and the mistakes :func:`unitscope.scan` names (unknown layer, data
        it cannot read, a checkpoint of another scan, ...).

    Examples
    --------
    >>> import torch, torch.nn as nn, unitscope as us
    >>> torch.manual_seed(0) and None
    >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 16, 2))
    >>> x, y = torch.rand(6, 1, 6, 6), torch.arange(6) % 2
    >>> a = us.atlas(net, (x, y), ["1"], top_k=2, path=us.PathConfig(n_steps=4),
    ...              synthesis=us.SynthesisConfig(synthesize=False), progress=False)
    >>> a.layers, len(a.units), a.units[0]["layer"], a.units[1]["unit"]
    (['1'], 2, '1', 1)
    """
    from ..data.distributed import Ranks
    from ..data.scan import scan

    cfg = path_config(path, PathConfig(n_steps=20))
    st = stream_config(stream)
    syn = synthesis if synthesis is not None else SynthesisConfig()
    if not isinstance(syn, SynthesisConfig):
        raise UnitscopeError("synthesis must be a unitscope.SynthesisConfig", got=type(syn).__name__)
    if st.unpack is not None or st.extra is not None:
        raise UnitscopeError(
            "the atlas reads its data by index and keeps its own accumulator",
            hint="leave StreamConfig's unpack and extra unset for the atlas",
        )
    n_steps, method, unit_batch = cfg.n_steps, cfg.method, cfg.unit_batch_size
    synthesize, generator, seed = syn.synthesize, syn.generator, syn.seed
    if top_k < 1 or share_k < 1 or unit_batch is None or unit_batch < 1:
        raise UnitscopeError(
            "top_k, share_k and unit_batch_size must be positive",
            top_k=top_k,
            share_k=share_k,
            unit_batch_size=unit_batch,
        )
    src = Source(data, batch_size=st.batch_size)
    layer_names = [layers] if isinstance(layers, str) else list(layers)
    by = "class" if src.has_labels else None
    if target == "label" and not src.has_labels:
        raise UnitscopeError("target='label' needs labels", hint="give (inputs, labels) or use target=None")
    extra = UnitAccumulator(share_k=share_k, bins=bins)
    if src.tokens and embedding is None:
        raise UnitscopeError(
            "token-id inputs need embedding= (the module that maps ids to vectors)",
            hint="e.g. embedding='bert.embeddings.word_embeddings'; paths start at its output",
        )
    if dictionaries:
        from ..core.dictionary import as_dictionary
        from ..core.sites import resolve

        if synthesize:
            raise UnitscopeError(
                "the atlas makes no synthetic inputs for dictionary features",
                hint="leave SynthesisConfig(synthesize=None) (or False) with dictionaries=",
            )
        synthesize = False
        dictionaries = {resolve(model, [k])[0].name: as_dictionary(v, str(k)) for k, v in dictionaries.items()}
    result = scan(
        model,
        src.loader,
        layer_names,
        scores=["activation", "conductance"],
        target=target,
        by=by,
        top_k=top_k,
        path=cfg,
        stream=replace(st, extra=extra),
        progress=progress,
        embedding=embedding,
        dictionaries=dictionaries or None,
    )
    ranks = Ranks.of(st.group)
    rank, world = ranks.rank, ranks.world
    shape = src.example_shape
    if synthesize is None:
        synthesize = not src.tokens and (generator is not None or len(shape) in (1, 3))
    if synthesize and src.tokens:
        raise UnitscopeError(
            "the atlas synthesizes no text", hint="leave SynthesisConfig(synthesize=None) (or False) for token ids"
        )
    n_examples = len(cast(Sized, src.dataset))  # map-style: it has a length
    meta = {
        "model": type(model).__name__,
        "data": f"{type(data).__name__} of {n_examples} examples",
        "layers": result.layers,
        "examples": result.count,
        "settings": {
            "target": repr(target),
            "top_k": top_k,
            "share_k": share_k,
            "bins": bins,
            "n_steps": n_steps,
            "exemplar_steps": n_steps,
            "method": method,
            "synthesize": bool(synthesize),
            "iam_steps": syn.iam_steps,
            "param": syn.param,
            "inverse_samples": syn.inverse_samples,
            "inverse_steps": syn.inverse_steps,
            "generator": None
            if not synthesize
            else type(generator).__name__
            if generator is not None
            else ("FFTImageGenerator" if len(shape) == 3 else "identity"),
            "bands": [list(b) for b in syn.bands],
            "seed": seed,
            "unit_batch": unit_batch,
            "units": units if units is None or isinstance(units, int) else "chosen",
            "embedding": None if embedding is None else str(embedding),
        },
        "classes": result.classes.tolist() if by else [],
    }
    if dictionaries:
        meta["dictionaries"] = by_dictionary = {}
        for name, d in dictionaries.items():
            mean_c = result.mean(name, score="conductance")
            total = float(mean_c.sum())
            by_dictionary[name] = {
                "features": int(mean_c.numel() - 1),
                "error_node": int(mean_c.numel() - 1),
                "error_node_share": float(mean_c[-1]) / total if total else None,
                "hook_name": getattr(d, "hook_name", None),
                "dictionary": repr(d),
            }
    from .work import layer_cards, work_chunk

    chosen = {name: _chosen_units(result, name, units) for name in result.layers}
    items = [(name, u0) for name in result.layers for u0 in range(0, len(chosen[name]), unit_batch)]
    mine = items[rank::world]
    done = {}
    for name, u0 in progress_bar(
        mine, desc="atlas: units", unit="chunk", progress=False if (progress is False or rank != 0) else None
    ):
        done[(name, u0)] = work_chunk(
            model,
            src,
            result,
            extra,
            name,
            chosen[name][u0 : u0 + unit_batch],
            target=target,
            embedding=embedding,
            internal_batch_size=cfg.internal_batch_size,
            n_steps=n_steps,
            baselines=cfg.baselines,
            method="gausslegendre" if method == "adaptive" else method,
            synthesize=synthesize,
            generator=generator,
            value_range=syn.value_range,
            param=syn.param,
            iam_steps=syn.iam_steps,
            inverse_samples=syn.inverse_samples,
            inverse_steps=syn.inverse_steps,
            bands=syn.bands,
            unit_seed=lambda *p: _seed(seed, *p),
            dictionary=(dictionaries or {}).get(name),
        )
    if ranks.distributed:
        gathered = ranks.all_gather_object(done)  # on gloo, whatever the group's backend
        done = {k: v for g in gathered for k, v in g.items()}
    seconds = {"scan": float(result.settings.get("seconds", 0.0))}
    for c in done.values():
        for k, v in c.get("seconds", {}).items():
            seconds[k] = seconds.get(k, 0.0) + v
    meta["seconds"] = seconds
    units, tensors = [], {}
    for name in result.layers:
        chunks = [done[(n, u0)] for n, u0 in items if n == name]
        cards, t = layer_cards(result, extra, name, chunks, tokens=tokens, src=src)
        if dictionaries and name in dictionaries:  # the last unit of a dictionary's layer is its error node
            for card in cards:
                card["error_node"] = card["unit"] == units_of_layer(result, name) - 1
        units += cards
        tensors.update({f"{name}/{k}": v for k, v in t.items()})
    return Atlas(meta, units, tensors)
