"""The atlas as a browsable folder: ``DIR/index.html`` (a sortable, filterable table of every unit and a card per
unit, rendered on demand from a JSON blob) with per-layer sprite sheets of pictures beside it.

>>> import torch, torch.nn as nn, tempfile, unitscope as us
>>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 36, 2))
>>> a = us.atlas(net, (torch.rand(8, 1, 8, 8), torch.arange(8) % 2), ["1"], top_k=2, path=us.PathConfig(n_steps=4),
...              synthesis=us.SynthesisConfig(iam_steps=4, inverse_samples=2, inverse_steps=4), progress=False)
>>> d = tempfile.mkdtemp()
>>> path = render_atlas(a, d)
>>> path.name, sorted(p.name for p in (path.parent / "img").iterdir())[:2]
('index.html', ['L0_attr.png', 'L0_exemplars.png'])

Sprite sheets: one PNG per layer and kind (``exemplars``, ``attr`` — per-input conductance through the unit, red
positive / blue negative —, ``iam``, ``inverse``), one row per unit, one tile per picture, so a page of 2,000+ units
loads a handful of images and the HTML stays small; a card draws its tiles from the sheets when it is opened.
Text models (inputs ``[T, D]``) have no sheets: their cards show the exemplar sentences with every token shaded by
its conductance through the unit.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch

from ..atlas import PAGE_WRITERS

__all__ = ["render_atlas", "write_atlas_manifest", "write_atlas_page"]

TILE = 40
ROWS_PER_SHEET = 256  # units per sprite-sheet file: a 2,048-channel layer is 8 files of 256 × 40 px rows


def _to_rgb(t: torch.Tensor, value_range) -> np.ndarray:
    """``[C, H, W]`` → ``uint8 [H, W, 3]``: in ``value_range`` if it fits, else min–max of the tile. ``value_range``
    is ``(lo, hi)``, or per channel ``([lo_c], [hi_c])`` (inputs normalized with a mean and std per channel: the
    picture is then the pixels the user gave)."""
    t = t.float()
    if torch.isnan(t).all():
        return np.full((t.shape[-2], t.shape[-1], 3), 255, np.uint8)
    lo, hi = (torch.as_tensor(v, dtype=torch.float32).reshape(-1, 1, 1) for v in value_range)
    if lo.numel() not in (1, t.shape[0]) or hi.numel() not in (1, t.shape[0]):
        lo, hi = lo.min().view(1, 1, 1), hi.max().view(1, 1, 1)
    if not (bool((t >= lo - 1e-6).all()) and bool((t <= hi + 1e-6).all())):
        lo, hi = t.min().view(1, 1, 1), t.max().view(1, 1, 1)
    x = ((t - lo) / (hi - lo).clamp_min(1e-12)).clamp(0, 1)
    x = x.repeat(3, 1, 1) if x.shape[0] == 1 else x[:3]
    return (x.permute(1, 2, 0).numpy() * 255).astype(np.uint8)


def _signed_rgb(t: torch.Tensor) -> np.ndarray:
    """Per-input conductance ``[C, H, W]`` summed over channels: red positive, blue negative, white 0."""
    a = t.float().sum(0)
    m = float(a.abs().max())
    x = (a / m).numpy() if m > 0 else np.zeros(a.shape, np.float32)
    pos, neg = np.clip(x, 0, 1), np.clip(-x, 0, 1)
    rgb = np.stack([1 - neg, 1 - pos - neg, 1 - pos], -1)
    return (np.clip(rgb, 0, 1) * 255).astype(np.uint8)


def _sheet(rows: list[list[np.ndarray | None]], path: Path, tile: int) -> dict:
    """Tiles ``rows[unit][j]`` into ``path`` (``…_1.png``, ``…_2.png`` … past ``ROWS_PER_SHEET`` units)."""
    from PIL import Image

    cols = max((len(r) for r in rows), default=0)
    files = []
    for f0 in range(0, max(len(rows), 1), ROWS_PER_SHEET):
        part = rows[f0 : f0 + ROWS_PER_SHEET]
        sheet = Image.new("RGB", (max(cols, 1) * tile, max(len(part), 1) * tile), (255, 255, 255))
        for i, row in enumerate(part):
            for j, img in enumerate(row):
                if img is not None:
                    im = Image.fromarray(img).resize(
                        (tile, tile), Image.NEAREST if img.shape[0] < tile else Image.BILINEAR
                    )
                    sheet.paste(im, (j * tile, i * tile))
        name = path.name if f0 == 0 else f"{path.stem}_{f0 // ROWS_PER_SHEET}{path.suffix}"
        sheet.save(path.with_name(name), optimize=True)
        files.append(f"img/{name}")
    return {"files": files, "rows_per_file": ROWS_PER_SHEET, "cols": cols, "tile": tile}


def _layer_sheets(atlas, li: int, layer: str, img_dir: Path, value_range, tile: int) -> dict:
    t = atlas.tensors
    sheets = {}
    if f"{layer}/exemplar_inputs" in t:
        ex = t[f"{layer}/exemplar_inputs"]
        if ex.dim() == 5:  # [U, k, C, H, W]: images
            sheets["exemplars"] = _sheet(
                [[_to_rgb(x, value_range) for x in row] for row in ex], img_dir / f"L{li}_exemplars.png", tile
            )
            sheets["attr"] = _sheet(
                [[_signed_rgb(x) for x in row] for row in t[f"{layer}/exemplar_attr"]],
                img_dir / f"L{li}_attr.png",
                tile,
            )
    if f"{layer}/iam" in t and t[f"{layer}/iam"].dim() == 4:
        sheets["iam"] = _sheet(
            [[None if torch.isnan(x).all() else _to_rgb(x, value_range)] for x in t[f"{layer}/iam"]],
            img_dir / f"L{li}_iam.png",
            tile,
        )
        inv = t[f"{layer}/inverse"]  # [U, bands, K, C, H, W]
        sheets["inverse"] = _sheet(
            [[None if torch.isnan(x).all() else _to_rgb(x, value_range) for band in row for x in band] for row in inv],
            img_dir / f"L{li}_inverse.png",
            tile,
        )
        sheets["inverse"]["per_band"] = int(inv.shape[2])
    return sheets


def _histogram(atlas, layer: str, row: int, bins: int = 32) -> dict | None:
    counts = atlas.tensors.get(f"{layer}/hist_counts")
    edges = atlas.tensors.get(f"{layer}/hist_edges")
    if counts is None:
        return None
    c, e = counts[row].double(), edges[row].double()
    nz = torch.nonzero(c).flatten()
    if len(nz) == 0:
        return None
    lo, hi = int(nz[0]), int(nz[-1]) + 1
    c, e = c[lo:hi], e[lo : hi + 1]
    step = max(1, math.ceil(len(c) / bins))
    c = torch.stack([c[i : i + step].sum() for i in range(0, len(c), step)])
    e = torch.cat([e[::step], e[-1:]])[: len(c) + 1]
    return {"counts": [int(v) for v in c.tolist()], "edges": [float(f"{v:.5g}") for v in e.tolist()]}


def render_atlas(atlas, out_dir, *, title: str | None = None, value_range=(0.0, 1.0), tile: int = TILE) -> Path:
    """Write ``out_dir/index.html`` and ``out_dir/img/*.png`` for ``atlas`` (an :class:`unitscope.atlas.Atlas`);
    returns the page's path. The page needs no network and no server (open the file)."""
    from importlib.resources import files

    from ..core.files import atomic_write_text

    out = Path(out_dir)
    img_dir = out / "img"
    img_dir.mkdir(parents=True, exist_ok=True)
    layers = atlas.layers
    sheets = {layer: _layer_sheets(atlas, li, layer, img_dir, value_range, tile) for li, layer in enumerate(layers)}
    units = []
    for u in atlas.units:
        card = dict(u)
        card["histogram_bins"] = _histogram(atlas, u["layer"], u.get("row", u["unit"]))
        units.append(card)
    meta = {k: v for k, v in atlas.meta.items() if k != "seconds"}
    meta["over"] = over_examples(atlas.meta)
    blob = {"meta": meta, "layers": layers, "sheets": sheets, "units": units}
    data = json.dumps(blob, allow_nan=False, separators=(",", ":")).replace("</", "<\\/")
    template = files("unitscope.report").joinpath("templates/atlas.html.j2").read_text(encoding="utf-8")
    page = template.replace("__TITLE__", _esc(title or f"Unit atlas of {atlas.meta.get('model')}")).replace(
        "__DATA__", data
    )
    path = out / "index.html"
    atomic_write_text(path, page)
    return path


def over_examples(meta: dict) -> str:
    """ "over 16 examples of digits" — or "over 16 examples" where the data has no name of its own (the atlas then
    calls it "tuple of 16 examples", which the sentence would repeat).

    >>> over_examples({"examples": 16, "data": "tuple of 16 examples"})
    'over 16 examples'
    >>> over_examples({"examples": 360, "data": "digits"})
    'over 360 examples of digits'
    """
    import re

    n, data = meta.get("examples"), meta.get("data")
    auto = re.fullmatch(r"\w+ of (\d+) examples", str(data or ""))
    if data is None or (auto and str(n) == auto.group(1)):
        return f"over {n} examples"
    if auto:
        return f"over {n} of {auto.group(1)} examples"
    return f"over {n} examples of {data}"


def _esc(s: str) -> str:
    import html

    return html.escape(str(s))


def write_atlas_manifest(
    atlas, out_dir, *, title: str | None = None, quick: bool | None = None, order: float | None = None
) -> Path:
    """A results-folder manifest entry (:mod:`unitscope.report.manifest`) that links the atlas's page."""
    from .manifest import write_entry

    n = len(atlas.units)
    dead = sum(u["dead"] for u in atlas.units)
    flagged = sum(bool(u["faithfulness"].get("atypical")) for u in atlas.units)
    live = [u for u in atlas.units if not u["dead"]]
    top = max(live, key=lambda u: u["importance"]["conductance"] or 0.0) if live else None
    model = atlas.meta.get("model")
    heads = [
        f"The atlas of {model} covers {n} units in {len(atlas.layers)} layer(s) {over_examples(atlas.meta)}; "
        f"{dead} units are dead (activation 0 on every example)."
    ]
    if top is not None:
        heads.append(
            f"The most important unit is {top['layer']} #{top['unit']}: mean conductance "
            f"{top['importance']['conductance']:.3g} (output units per example), among the layer's "
            f"{atlas.meta['settings']['share_k']} most conductant on "
            f"{100 * top['importance']['top_k_share']:.0f} % of the examples."
        )
    skipped = {u["synthetic"].get("skipped") for u in live if not u["synthetic"].get("iam")}
    if live and any(u["synthetic"].get("iam") for u in live):
        heads.append(
            f"{flagged} of {len(live)} live units have an IAM image that drives the layer through an "
            "atypical pattern (its layer vector farther from the mean of the unit's top exemplars than any "
            "of the unit's held-out natural exemplars — those chosen by conductance — is); "
            "IAM pushes the layer's other units down by design, so its pattern is often sparser than the "
            "data's — the unit's card shows the same check for its inverse-set samples."
        )
    from ..atlas.work import NO_TEXT_SYNTHESIS

    if NO_TEXT_SYNTHESIS in skipped:
        heads.append(
            "Text: the cards show exemplar sentences with every token shaded by its conductance through "
            "the unit, and no synthetic inputs — an input optimized in embedding space is no sentence, so "
            "it would show nothing a reader can check against the exemplars."
        )
    chosen = atlas.meta.get("settings", {}).get("units")
    if isinstance(chosen, int):
        heads.append(
            f"Cards for the {chosen} most important units of each layer (largest mean |conductance|); the "
            "scan that ranked them covered every unit."
        )
    return write_entry(
        out_dir,
        title=title or f"Unit atlas: {model}",
        description="Every unit of the named layers: whether it matters (mean conductance, top-k "
        "share, the classes it supports and opposes) and what it responds to (its top "
        "exemplars with their per-input conductance, its IAM image with RS, inverse-set "
        "samples in activation bands), with a faithfulness check of each synthetic input "
        "against the exemplars. Open the page to sort, filter and open unit cards.",
        headlines=heads,
        links=[{"path": "index.html", "text": f"open the atlas of {model}"}],
        summary="atlas.json",
        quick=quick,
        order=order,
    )


def write_atlas_page(atlas, out_dir, *, title: str | None = None, value_range=(0.0, 1.0)) -> None:
    """The page of an atlas folder and its manifest (what ``Atlas.save(html=True)`` writes beside the data)."""
    render_atlas(atlas, out_dir, title=title, value_range=value_range)
    write_atlas_manifest(atlas, out_dir, title=title)


if write_atlas_page not in PAGE_WRITERS:
    PAGE_WRITERS.append(write_atlas_page)
