"""The results-folder manifest: each producer (a study, a scan, the atlas, the demo's digits job) writes one
``manifest.json`` into its own output folder saying what it made and how to read it; the report
(:func:`unitscope.report.html.build_report`) renders whatever manifests a results folder holds, at any depth, in
the order of their ``order`` field, then their path.

>>> import json, os, tempfile
>>> d = tempfile.mkdtemp()
>>> open(os.path.join(d, "scatter.png"), "wb").close()
>>> path = write_entry(d, title="Conductance vs ablation",
...     description="Each dot is one unit of one input: its conductance against its ablation score.",
...     headlines=["Conductance agrees with ablation on the digits CNN: mean Pearson r 0.70 over 40 test digits."],
...     figures=[("scatter.png", "Conductance (x) against ablation score (y), one panel per method.")],
...     quick=True, scale="40 test digits, 12 path points")
>>> entry = read_entry(path)
>>> entry["figures"][0]["path"], entry["quick"]
('scatter.png', True)
>>> write_entry(d, title="t", description="d", headlines=["pearson.conductance: 0.7"])
Traceback (most recent call last):
...
ValueError: headline 'pearson.conductance: 0.7' is a raw key, not a sentence: say what the number is, for which model and data, and its unit

Fields (all but ``title`` and ``description`` optional):

* ``headlines``: short sentences, each naming its number's unit and what was measured on which model and data;
* ``figures``: ``{"path", "caption"}`` — every figure needs a caption (what it shows and how to read it);
* ``tables``: ``{"path" (a CSV), "caption"}`` and optionally ``"dead": COLUMN`` (a boolean column; ``live``
  columns are read the other way round) marking dead units, shown as *dead* with no values;
* ``comparisons``: ours beside a paper's number, ``{"quantity", "ours", "ours_setting", "paper",
  "paper_setting"}`` — every number says its setting (model, data);
* ``documents`` (Markdown) and ``snippets`` (HTML fragments): ``{"path", "caption"}``;
* ``links``: ``{"path" or "url", "text"}`` — e.g. the atlas's ``index.html``;
* ``summary``: the study's JSON summary file (linked from the report), ``quick`` and ``scale`` (how small a quick
  run is), ``order`` (a number; the demo's studies use 10, 20, …), ``name`` (defaults to the folder's name).

Paths are relative to the manifest's folder. The file is written atomically (:func:`unitscope.core.files.atomic_write`),
so a failure while writing leaves the previous manifest intact.
"""  # noqa: E501 — a doctest output line, verbatim

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from ..core.files import atomic_write_text

__all__ = ["MANIFEST", "write_entry", "read_entry", "read_json", "looks_like_key"]

MANIFEST = "manifest.json"
VERSION = 1
_KEY = re.compile(r"^\s*[A-Za-z_][\w\[\]]*(\.[\w\[\], ]+)+\s*[:=]")  # "models.cnn.test_accuracy: …"
_KEY_ANYWHERE = re.compile(r"(^|;\s*)[A-Za-z_]\w*(\.\w+)+\s*:\s*[-\d\[]")


def looks_like_key(text: str) -> bool:
    """True for ``a.b.c: value`` headlines (raw keys of a JSON summary), False for sentences.

    >>> looks_like_key("cat.label: 282; cat.output_diff: 9.24"), looks_like_key("seed: 0; steps: 24")
    (True, True)
    >>> looks_like_key("EfficientNet-Lite0 labels the cat photo 282 'tiger cat'; gap 0.9 % at 32 path points.")
    False
    """
    if _KEY.search(text) or _KEY_ANYWHERE.search(text):
        return True
    parts = [p.strip() for p in text.split(";") if p.strip()]
    return bool(parts) and all(re.fullmatch(r"[\w.\[\] ,]+:\s*\S+", p) and len(p.split()) <= 3 for p in parts)


def _rel(out: Path, p) -> str:
    p = Path(p)
    return os.path.relpath(p, out) if p.is_absolute() else str(p)


def _items(out: Path, items, kind: str, *, need_caption: bool) -> list[dict]:
    rows = []
    for it in items or ():
        if isinstance(it, (str, os.PathLike)):
            it = {"path": it}
        elif isinstance(it, (tuple, list)):
            it = {"path": it[0], "caption": it[1] if len(it) > 1 else ""}
        it = dict(it)
        if "path" in it:
            it["path"] = _rel(out, it["path"])
        if need_caption and not str(it.get("caption", "")).strip():
            raise ValueError(f"{kind} {it.get('path')!r} has no caption: say what it shows and how to read it")
        rows.append(it)
    return rows


def write_entry(
    out_dir,
    *,
    title: str,
    description: str,
    headlines=(),
    figures=(),
    tables=(),
    comparisons=(),
    documents=(),
    snippets=(),
    links=(),
    summary: str | None = None,
    quick: bool | None = None,
    scale: str | None = None,
    order: float | None = None,
    name: str | None = None,
    extra: dict | None = None,
) -> Path:
    """Write ``out_dir/manifest.json`` (see the module doc for the fields) and return its path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if not str(title).strip() or not str(description).strip():
        raise ValueError("a manifest entry needs a title and a one-paragraph description of how to read it")
    heads = [str(h).strip() for h in headlines or () if str(h).strip()]
    for h in heads:
        if looks_like_key(h):
            raise ValueError(
                f"headline {h!r} is a raw key, not a sentence: say what the number is, for which "
                "model and data, and its unit"
            )
    comps = []
    for c in comparisons or ():
        c = dict(c)
        missing = [k for k in ("quantity", "ours", "ours_setting", "paper", "paper_setting") if k not in c]
        if missing:
            raise ValueError(
                f"comparison {c.get('quantity')!r} lacks {', '.join(missing)}: every number says "
                "which model and data it comes from"
            )
        comps.append(c)
    entry = {
        "version": VERSION,
        "name": name or out.name,
        "title": str(title),
        "description": str(description),
        "headlines": heads,
        "quick": quick,
        "scale": scale,
        "order": order,
        "summary": _rel(out, summary) if summary else None,
        "figures": _items(out, figures, "figure", need_caption=True),
        "tables": _items(out, tables, "table", need_caption=False),
        "comparisons": comps,
        "documents": _items(out, documents, "document", need_caption=False),
        "snippets": _items(out, snippets, "snippet", need_caption=False),
        "links": _items(out, links, "link", need_caption=False),
    }
    if extra:
        entry.update(extra)
    return atomic_write_text(out / MANIFEST, json.dumps(entry, indent=1, default=_jsonable) + "\n")


def _jsonable(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return str(v)


def read_entry(path) -> dict:
    """A manifest as a dict (``ValueError`` with the file's name if it is not one)."""
    path = Path(path)
    try:
        entry = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: unreadable manifest ({e})") from e
    if not isinstance(entry, dict) or "title" not in entry:
        raise ValueError(f"{path}: not a unitscope manifest (no title)")
    return entry


def read_json(path) -> dict:
    """A study's JSON file as read for the report: the object, or ``{"_unreadable": "NAME: why"}`` when it cannot be
    read, so that one broken file shows as such instead of stopping the report."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except (ValueError, OSError) as e:
        return {"_unreadable": f"{path.name}: {e}"}
