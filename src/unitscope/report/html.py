"""One self-contained HTML report from a results folder: whatever its manifests list.

>>> import os, tempfile
>>> from unitscope.report.manifest import write_entry
>>> root = tempfile.mkdtemp()
>>> _ = write_entry(os.path.join(root, "digits"), title="Digits CNN", description="What its filters carry.",
...                 headlines=["The digits CNN labels 98.1 % of 360 held-out digits correctly."])
>>> path = build_report(root)
>>> os.path.basename(path), sorted(os.listdir(root))
('report.html', ['digits', 'report.html', 'report.json', 'report_summary.csv'])

Every ``manifest.json`` under the folder (any depth; hidden folders and ``_…`` skipped; see
:mod:`unitscope.report.manifest`) is one section, in the order of ``demo_status.json`` (the run's order) when it
lists the folder, else by the manifest's ``order`` field, then by path. A sub-folder with
no manifest anywhere inside it is shown through the documented fallback of :mod:`unitscope.report.legacy`.
A ``demo_status.json`` written by ``unitscope demo`` adds each study's status, time, command and, for a
failure, the end of its log; studies it lists that wrote nothing are listed as *not run* (or shown as failed).

Images are embedded (``data:`` URIs) with their captions and, for figures written by
:func:`unitscope.report.figures.save_figure`, ``data-heatmaps`` / ``data-colorbars`` attributes (how many
heat-maps, how many with a colour key); tables and links point to the files beside the report. The file is written
atomically (rendered into a temporary file beside the target, then renamed), so an error never leaves a half-written
report. ``report.json`` (every entry) and ``report_summary.csv`` (one row per section) are written into the results
folder (wherever the HTML goes). A folder with no manifest and no sub-folders, but figures, tables or notes of its
own (a command's ``--out`` folder), is shown through the same fallback. ``allow_empty=False`` (what
``unitscope report`` passes) refuses a folder with nothing to show.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import os
from pathlib import Path

from .legacy import IMAGE_TYPES, flatten, legacy_entry, paper_rows
from ..core.files import atomic_write_text
from .manifest import MANIFEST, read_entry, read_json
from .tables import fmt, render_table

__all__ = ["build_report", "find_entries", "flatten", "paper_rows", "fmt"]


# -------------------------------------------------------------------------------------------- finding --
def _skip(name: str) -> bool:
    return name.startswith((".", "_"))


def find_entries(root: Path) -> list[tuple[Path, dict]]:
    """``(folder, entry)`` for every manifest under ``root`` and, as a fallback, every top-level sub-folder without
    one (folder names in ``skip_fallback`` aside)."""
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not _skip(d))
        if MANIFEST in files:
            path = Path(folder) / MANIFEST
            try:
                found.append((Path(folder), read_entry(path)))
            except ValueError as e:
                found.append(
                    (
                        Path(folder),
                        {
                            "name": Path(folder).name,
                            "title": Path(folder).name,
                            "description": "",
                            "problems": [str(e)],
                        },
                    )
                )
    covered = {f.relative_to(root).parts[0] if f != root else "" for f, _ in found}
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and not _skip(p.name)):
        if sub.name not in covered and any(p.is_file() and p.name != "log.txt" for p in sub.rglob("*")):
            found.append((sub, legacy_entry(sub, sub.name)))
    if not found and any(p.is_file() and p.suffix.lower() in _SHOWN and p.name not in _OWN for p in root.iterdir()):
        entry = legacy_entry(root, root.resolve().name)
        for kind in ("figures", "tables", "documents", "snippets", "links"):
            entry[kind] = [i for i in entry[kind] if Path(i["path"]).name not in _OWN]
        found.append((root, entry))
    return found


_OWN = ("report.html", "report.json", "report_summary.csv")  # what a report writes: not results
_SHOWN = (".png", ".jpg", ".jpeg", ".gif", ".svg", ".webp", ".csv", ".md", ".html")


def _study_of(root: Path, folder: Path) -> str:
    rel = folder.relative_to(root)
    return rel.parts[0] if rel.parts else ""


# -------------------------------------------------------------------------------------------- content --
def data_uri(path: Path) -> str:
    mime = IMAGE_TYPES.get(path.suffix.lower(), "application/octet-stream")
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _markdown(path: Path) -> str:
    from markdown_it import MarkdownIt

    md = MarkdownIt("commonmark", {"html": False}).enable("table")
    return md.render(path.read_text(errors="replace"))


def _section(root: Path, out_dir: Path, folder: Path, entry: dict, status: dict | None) -> dict:
    """An entry with its files resolved (paths relative to the report, existence checked) for the template."""
    from .figures import read_figure_info

    problems = list(entry.get("problems", []))

    def resolve(item: dict) -> dict | None:
        if "url" in item:
            return dict(item, href=item["url"], file=None)
        p = folder / item.get("path", "")
        if not p.is_file():
            problems.append(f"missing file: {os.path.relpath(p, root)}")
            return None
        return dict(item, file=p, href=os.path.relpath(p, out_dir), label=os.path.relpath(p, root))

    figures = []
    for item in entry.get("figures", []):
        r = resolve(item)
        if r is not None:
            info = read_figure_info(r["file"]) if r["file"].suffix.lower() == ".png" else None
            r["heatmaps"] = "unknown" if info is None else str(info.get("heatmaps", 0))
            r["colorbars"] = "unknown" if info is None else str(info.get("keyed", 0))
            figures.append(r)
    tables = [r for r in map(resolve, entry.get("tables", [])) if r is not None]
    docs = [r for r in map(resolve, entry.get("documents", [])) if r is not None]
    snippets = [r for r in map(resolve, entry.get("snippets", [])) if r is not None]
    links = [r for r in map(resolve, entry.get("links", [])) if r is not None]
    summary = resolve({"path": entry["summary"]}) if entry.get("summary") else None
    status = dict(status or {})
    if not status.get("status"):
        status["status"] = "incomplete" if problems or entry.get("unreadable") else "ok"
    rel = folder.relative_to(root)
    ident = "-".join(rel.parts) or "results"
    return {
        "id": "study-" + "".join(c if c.isalnum() else "-" for c in ident),
        "name": entry.get("name") or ident,
        "path": str(rel) if rel.parts else ".",
        "title": entry.get("title", ident),
        "description": entry.get("description", ""),
        "headlines": list(entry.get("headlines", [])),
        "quick": entry.get("quick"),
        "scale": entry.get("scale"),
        "legacy": bool(entry.get("legacy")),
        "order": entry.get("order"),
        "status": status,
        "problems": problems,
        "unreadable": entry.get("unreadable"),
        "figures": figures,
        "tables": tables,
        "comparisons": [
            dict(c, ours=fmt(c.get("ours")), paper=fmt(c.get("paper"))) for c in entry.get("comparisons", [])
        ],
        "documents": docs,
        "snippets": snippets,
        "links": links,
        "summary": summary,
        "raw": read_json(summary["file"]) if summary else None,
    }


def _failed(name: str, status: dict) -> dict:
    return {
        "id": f"study-{name}",
        "name": name,
        "path": name,
        "title": name,
        "description": "",
        "headlines": [],
        "quick": None,
        "scale": None,
        "legacy": False,
        "order": None,
        "status": status,
        "problems": [],
        "unreadable": None,
        "figures": [],
        "tables": [],
        "comparisons": [],
        "documents": [],
        "snippets": [],
        "links": [],
        "summary": None,
        "raw": None,
    }


def _sections(root: Path, out_dir: Path, statuses: dict) -> tuple[list[dict], list[str]]:
    run_order = {n: i for i, n in enumerate(statuses)}
    sections = []
    seen = set()
    for folder, entry in find_entries(root):
        study = _study_of(root, folder)
        st = statuses.get(study) if study not in seen else None
        seen.add(study)
        sections.append(_section(root, out_dir, folder, entry, st))
        order = entry.get("order") if isinstance(entry.get("order"), (int, float)) else 1e9
        sections[-1]["_key"] = (run_order.get(study, len(run_order)), order, str(folder.relative_to(root)))
    not_run = []
    for name, st in statuses.items():
        if name in seen:
            continue
        if st.get("status") not in (None, "not run", "pending"):
            sections.append(dict(_failed(name, st), _key=(run_order[name], 0, name)))
        else:
            not_run.append(name)
    sections.sort(key=lambda s: s.pop("_key"))
    return sections, not_run


# ---------------------------------------------------------------------------------------------- output --
def _template():
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("unitscope.report", "templates"),
        autoescape=jinja2.select_autoescape(["html", "j2"]),
        undefined=jinja2.StrictUndefined,
    )
    env.filters["fmt"] = fmt
    return env.get_template("report.html.j2")


def _summary_rows(sections: list[dict], not_run: list[str]) -> list[dict]:
    rows = [
        {
            "id": s["id"],
            "study": s["title"],
            "folder": s["path"],
            "status": s["status"].get("status", ""),
            "seconds": s["status"].get("seconds"),
            "headline": " ".join(s["headlines"][:2]),
        }
        for s in sections
    ]
    return rows + [
        {"id": None, "study": n, "folder": n, "status": "not run", "seconds": None, "headline": ""} for n in not_run
    ]


def build_report(results_dir, out=None, *, title: str = "unitscope report", allow_empty: bool = True) -> Path:
    """Render ``results_dir`` into one HTML file (default ``results_dir/report.html``); returns its path. Its tables
    (``report.json``, ``report_summary.csv``) go into ``results_dir``. ``allow_empty=False``: a folder with nothing
    to show (no manifest, no results of its own, no study of a ``demo_status.json``) is an error, and nothing is
    written."""
    from ..core.errors import UnitscopeError

    root = Path(results_dir)
    if not root.is_dir():
        raise UnitscopeError(
            f"results folder {str(root)!r} not found", hint="run `unitscope demo` (or a study with --out) first"
        )
    out = Path(out) if out else root / "report.html"
    if out.parent and not out.parent.is_dir():
        raise UnitscopeError(f"folder of {str(out)!r} does not exist")
    status_file = root / "demo_status.json"
    run = read_json(status_file) if status_file.exists() else {}
    statuses = run.get("studies", {}) if isinstance(run, dict) else {}
    sections, not_run = _sections(root, out.parent.resolve() if out.parent else Path("."), statuses)
    if not allow_empty and not sections and not not_run:
        raise UnitscopeError(
            f"nothing to report in {str(root)!r}: no manifest.json, no figures or tables, no results folder inside it",
            hint="give a folder written by unitscope demo, a study or a command's --out, or Atlas.save(DIR)",
        )
    rows = _summary_rows(sections, not_run)
    meta = {k: v for k, v in (run.items() if isinstance(run, dict) else []) if k != "studies"}

    context = dict(
        title=title,
        sections=sections,
        not_run=not_run,
        rows=rows,
        meta=meta,
        results=str(root),
        embed=data_uri,
        markdown=_markdown,
        snippet=lambda p: p.read_text(errors="replace"),
        table=lambda t: render_table(t["file"], href=t["href"], dead=t.get("dead")),
    )
    buf = io.StringIO()
    _template().stream(**context).dump(buf)  # rendered fully before anything is replaced
    atomic_write_text(out, buf.getvalue())

    entries = {
        s["path"]: {"title": s["title"], "status": s["status"], "headlines": s["headlines"], "summary": s["raw"]}
        for s in sections
    }
    atomic_write_text(
        root / "report.json", json.dumps({"meta": meta, "sections": entries, "not_run": not_run}, indent=1, default=str)
    )
    text = io.StringIO()
    w = csv.DictWriter(text, fieldnames=["study", "folder", "status", "seconds", "headline"], extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(root / "report_summary.csv", text.getvalue())
    return out
