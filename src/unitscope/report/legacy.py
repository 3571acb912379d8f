"""The fallback for an output folder without a ``manifest.json`` (one that no study wrote through
:func:`unitscope.report.manifest.write_entry`: an older run, a folder of your own): its files are shown as found.

Title and description come from the docstring of ``unitscope.studies.NAME`` when such a module exists (read from
its source, not imported), figures are captioned with the title saved in the PNG (or their file name), every CSV
is a table, Markdown files without a CSV twin are notes, ``*.html`` fragments are snippets (whole HTML pages, such
as an atlas's ``index.html``, are linked), and the papers' numbers in
the folder's JSON summary (keys named ``paper…``) are put beside ours — with key paths written as words
(``pearson › conductance``), since such a folder says nothing of its setting.

>>> humanize("paper_pearson.conductance")
'paper pearson › conductance'
>>> paper_rows(flatten({"pearson": {"conductance": 0.81}, "paper_pearson": {"conductance": 0.88}}))
[{'quantity': 'pearson.conductance', 'ours': 0.81, 'paper': 0.88, 'setting': ''}]
"""

from __future__ import annotations

import ast
import importlib.util
import re
from pathlib import Path

from .manifest import read_json
from .tables import fmt

__all__ = ["flatten", "paper_rows", "humanize", "legacy_entry", "IMAGE_TYPES"]

IMAGE_TYPES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".svg": "image/svg+xml",
    ".webp": "image/webp",
}


def flatten(obj, prefix: str = "") -> dict:
    """Nested dicts → ``{"a.b.c": scalar or short list}`` (long lists are summarized as ``[N values]``)."""
    out = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(obj, (list, tuple)):
        if len(obj) <= 12 and all(isinstance(v, (int, float, str, bool)) or v is None for v in obj):
            out[prefix] = list(obj)
        else:
            out[prefix] = f"[{len(obj)} values]"
    else:
        out[prefix] = obj
    return out


def _is_paper(segment: str) -> bool:
    return "paper" in segment.lower()


def paper_rows(flat: dict) -> list[dict]:
    """Pair each ``paper…`` number with ours: the key with the ``paper`` part removed (and, for settings such as
    ``paper.pearson.inception.conductance``, one more segment removed, which becomes the ``setting``)."""
    ours = {k: v for k, v in flat.items() if not any(_is_paper(s) for s in k.split("."))}
    rows = []
    for key, value in flat.items():
        segs = key.split(".")
        i = next((j for j, s in enumerate(segs) if _is_paper(s)), None)
        if i is None:
            continue
        rest = segs[i].lower().replace("paper", "").strip("_")
        base = segs[:i] + ([rest] if rest else []) + segs[i + 1 :]
        match, setting = None, ""
        for j in range(-1, len(base)):
            cand = ".".join(base if j < 0 else base[:j] + base[j + 1 :])
            if cand in ours:
                match, setting = cand, "" if j < 0 else base[j]
                break
        rows.append(
            {
                "quantity": match or ".".join(base),
                "ours": ours.get(match) if match else None,
                "paper": value,
                "setting": setting,
            }
        )
    return rows


def humanize(key: str) -> str:
    """A dotted key path in words: segments joined by " › ", underscores as spaces."""
    return " › ".join(s.replace("_", " ") for s in str(key).split("."))


def _docstring(name: str) -> tuple[str, str]:
    """(title, first paragraph) of the docstring of ``unitscope.studies.NAME`` (a paper's study) or
    ``unitscope.runs.NAME`` (a bundled CLI run), or ("", "")."""
    spec = None
    for package in ("unitscope.studies", "unitscope.runs"):
        try:
            spec = importlib.util.find_spec(f"{package}.{name}")
        except (ImportError, ValueError):
            spec = None
        if spec is not None:
            break
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return "", ""
    doc = ast.get_docstring(ast.parse(Path(spec.origin).read_text())) or ""
    para = doc.split("\n\n")[0].replace("\n", " ").strip()
    para = re.sub(r"^``[^`]*``\s*:\s*", "", para)  # "``python -m … [--quick]``: what it does"
    para = para[:1].upper() + para[1:]
    title = re.split(r"\s[(—]|:\s|(?<!\bal)\.\s", para, maxsplit=1)[0][:90] if para else ""
    return title, para


def _is_page(path: Path) -> bool:
    """A whole HTML document (linked, not pasted into the report) rather than a fragment."""
    with open(path, errors="replace") as f:
        head = f.read(2048).lstrip().lower()
    return head.startswith(("<!doctype", "<html"))


def legacy_entry(folder: Path, name: str) -> dict:
    """A manifest-like entry for ``folder`` (see the module doc)."""
    from .figures import read_figure_info

    files = sorted(
        p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".") and p.name not in ("log.txt",)
    )
    summaries = [p for p in files if p.suffix == ".json"]
    main = next((p for p in summaries if p.stem == name), summaries[0] if summaries else None)
    summary = read_json(main) if main else None
    pairs = paper_rows(flatten(summary)) if isinstance(summary, dict) else []
    title, about = _docstring(name)
    heads = [
        f"{humanize(p['quantity'])}{' (' + humanize(p['setting']) + ')' if p['setting'] else ''}: ours "
        f"{fmt(p['ours'])}, paper {fmt(p['paper'])}."
        for p in pairs
        if p["ours"] is not None
    ][:3]
    csv_stems = {p.with_suffix("") for p in files if p.suffix == ".csv"}

    def caption(p: Path) -> str:
        info = read_figure_info(p) or {}
        return info.get("title") or p.stem.replace("_", " ")

    rel = lambda p: str(p.relative_to(folder))  # noqa: E731
    return {
        "name": name,
        "legacy": True,
        "title": title or name.replace("_", " ").capitalize(),
        "description": about,
        "headlines": heads,
        "quick": None,
        "scale": None,
        "order": None,
        "summary": rel(main) if main else None,
        "unreadable": summary.get("_unreadable") if isinstance(summary, dict) else None,
        "figures": [{"path": rel(p), "caption": caption(p)} for p in files if p.suffix.lower() in IMAGE_TYPES],
        "tables": [{"path": rel(p), "caption": p.stem.replace("_", " ")} for p in files if p.suffix == ".csv"],
        "comparisons": [
            {
                "quantity": humanize(p["quantity"]),
                "ours": p["ours"],
                "ours_setting": "—",
                "paper": p["paper"],
                "paper_setting": humanize(p["setting"]) if p["setting"] else "—",
            }
            for p in pairs
        ],
        "documents": [
            {"path": rel(p), "caption": p.stem.replace("_", " ")}
            for p in files
            if p.suffix == ".md" and p.with_suffix("") not in csv_stems
        ],
        "snippets": [{"path": rel(p)} for p in files if p.suffix == ".html" and not _is_page(p)],
        "links": [{"path": rel(p), "text": f"open {rel(p)}"} for p in files if p.suffix == ".html" and _is_page(p)],
    }
