"""One self-contained HTML report from a results folder whose sub-folders are study outputs.

>>> import json, os, tempfile
>>> root = tempfile.mkdtemp()
>>> os.makedirs(os.path.join(root, "sentiment"))
>>> json.dump({"pearson": {"conductance": 0.81}, "paper_pearson": {"conductance": 0.88}},
...           open(os.path.join(root, "sentiment", "sentiment.json"), "w"))
>>> path = build_report(root)
>>> os.path.basename(path), sorted(os.listdir(root))
('report.html', ['report.html', 'report.json', 'report_summary.csv', 'sentiment'])
>>> paper_rows(flatten({"pearson": {"conductance": 0.81}, "paper_pearson": {"conductance": 0.88}}))
[{'quantity': 'pearson.conductance', 'ours': 0.81, 'paper': 0.88, 'setting': ''}]

Every image is embedded (base64 ``data:`` URIs), CSV tables are rendered (and offered as ``data:`` downloads when
small), Markdown files are rendered, ``*.html`` snippets are included as they are, and where a study's JSON summary
holds the papers' numbers (keys named ``paper…``) they are put beside ours. Studies are shown in a fixed order
(:data:`STUDIES`; others after them); those absent are listed as *not run*. A ``demo_status.json`` written by
``unitscope demo`` adds each study's status, time and, for a failure, the end of its log. The file is written
atomically: rendered into a temporary file beside the target and renamed, so an error never leaves a half-written
report. ``report.json`` (every summary) and ``report_summary.csv`` (one row per study) are written next to it.
"""

from __future__ import annotations

import base64
import csv
import html
import json
import math
import os
import tempfile
from pathlib import Path

__all__ = ["STUDIES", "build_report", "flatten", "paper_rows", "collect"]

STUDIES = {  # folder name → (title, what it shows); the report keeps this order
    "digits": ("Digits CNN: which filters carry each prediction",
               "Conductance of every unit of five layers of a CNN trained on scikit-learn's real handwritten digits, "
               "all layers from one path pass, with each layer's completeness gap Σ cond − (F(x) − F(x'))."),
    "evaluation": ("Conductance vs ablation, prediction flips, feature selection",
                   "The conductance paper's evaluations: Pearson correlation of each method's score with the "
                   "ablation score of the top units, how many top filters must be ablated before the prediction "
                   "flips, and accuracy of a linear classifier on the top-k filters per class."),
    "imagenet": ("EfficientNet-Lite0 on real photos: the top filters and what they look at",
                 "Per photo, conductance of every block (target = top logit), the top filters across blocks and "
                 "per-input conductance through each of them drawn on the photo."),
    "sentiment": ("Sentiment CNN (Kim 2014): agreement, division of labour, negation filters",
                  "Conductance on the movie-review sentiment CNN: agreement with ablation, the sign heat-map of "
                  "filter conductance, and filters that attend to negations."),
    "substitution": ("Class selectivity, AM / IAM and Representative Substitution",
                     "Class selectivity of every channel, activation maximization (AM) and independent AM (IAM) "
                     "images, Representative Substitution and its Spearman correlation with selectivity per layer."),
    "inverse": ("Inverse sets: diverse inputs with a unit's activation in a range",
                "Samples of the inverse set {x : a ≤ f(x) ≤ b} of units, drawn through a generator with an "
                "augmented-Lagrangian sampler, and intersections of several units' sets."),
    "transformer": ("A transformer (MiniLM): important units of a language model", ""),
    "scan": ("Dataset scans: statistics and top examples per unit",
             "One streaming pass over a data set per model (count, mean, class means, selectivity and the top "
             "examples of every unit by activation and by conductance, never the activations themselves): image "
             "grids of each unit's top digits, and each sentiment filter's top sentences with its n-gram in bold."),
}
IMAGE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif",
               ".svg": "image/svg+xml", ".webp": "image/webp"}
MAX_ROWS = 40            # rows of a table shown in the page (the CSV next to it holds all)
MAX_DOWNLOAD = 300_000   # bytes: tables up to this size are also offered as a data: download
MAX_NUMBERS = 60         # key numbers listed per study


# ------------------------------------------------------------------------------------------- numbers --
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
        base = segs[:i] + ([rest] if rest else []) + segs[i + 1:]
        match, setting = None, ""
        for j in range(-1, len(base)):
            cand = ".".join(base if j < 0 else base[:j] + base[j + 1:])
            if cand in ours:
                match, setting = cand, "" if j < 0 else base[j]
                break
        rows.append({"quantity": match or ".".join(base), "ours": ours.get(match) if match else None,
                     "paper": value, "setting": setting})
    return rows


def fmt(v) -> str:
    """A number as a person reads it."""
    if isinstance(v, bool) or v is None:
        return "—" if v is None else str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "—"
        if v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e5):
            return f"{v:.3g}"
        return f"{v:.3f}".rstrip("0").rstrip(".") if abs(v) < 100 else f"{v:.1f}"
    if isinstance(v, list):
        return "[" + ", ".join(fmt(x) for x in v) + "]"
    return str(v)


def _headline(flat: dict, pairs: list[dict], n: int = 3) -> list[str]:
    """A few numbers for the summary at the top: ours beside the paper's first, else the first scalars."""
    out = [f"{p['quantity']}{' (' + p['setting'] + ')' if p['setting'] else ''}: {fmt(p['ours'])} "
           f"(paper {fmt(p['paper'])})" for p in pairs if p["ours"] is not None][:n]
    if not out:
        out = [f"{k}: {fmt(v)}" for k, v in flat.items()
               if isinstance(v, (int, float)) and not isinstance(v, bool)][:n]
    return out


# -------------------------------------------------------------------------------------------- content --
def data_uri(path: Path) -> str:
    mime = IMAGE_TYPES.get(path.suffix.lower(), "application/octet-stream")
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _csv_table(path: Path) -> dict:
    import pandas as pd

    try:
        df = pd.read_csv(path)
    except Exception as e:  # an unreadable table is shown as such, not fatal
        return {"name": path.name, "html": f"<p class='bad'>unreadable table: {html.escape(str(e))}</p>",
                "n_rows": 0, "download": None}
    n = len(df)
    if df.columns[0].startswith("Unnamed"):
        df = df.rename(columns={df.columns[0]: ""})
    shown = df.head(MAX_ROWS)
    body = shown.to_html(index=False, classes="table", border=0, na_rep="—", escape=True,
                         float_format=lambda v: fmt(float(v)))
    size = path.stat().st_size
    download = ("data:text/csv;base64," + base64.b64encode(path.read_bytes()).decode("ascii")
                if size <= MAX_DOWNLOAD else None)
    return {"name": path.name, "html": body, "n_rows": n, "shown": len(shown), "download": download}


def _markdown(path: Path) -> str:
    from markdown_it import MarkdownIt

    md = MarkdownIt("commonmark", {"html": False}).enable("table")
    return md.render(path.read_text(errors="replace"))


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (ValueError, OSError) as e:
        return {"_unreadable": f"{path.name}: {e}"}


def collect(folder: Path, name: str, status: dict | None = None) -> dict:
    """Everything one study folder holds, ready for the template (images are embedded while rendering)."""
    title, about = STUDIES.get(name, (name.replace("_", " ").capitalize(), ""))
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
    summaries = [p for p in files if p.suffix == ".json"]
    main = next((p for p in summaries if p.stem == name), summaries[0] if summaries else None)
    summary = _read_json(main) if main else None
    flat = flatten(summary) if isinstance(summary, dict) else {}
    pairs = paper_rows(flat)
    numbers = [{"key": k, "value": fmt(v)} for k, v in flat.items()
               if not any(_is_paper(s) for s in k.split("."))][:MAX_NUMBERS]
    csv_stems = {p.with_suffix("") for p in files if p.suffix == ".csv"}
    status = dict(status or {})
    if not status.get("status"):
        status["status"] = "ok" if summary is not None and "_unreadable" not in summary else "incomplete"
    return {
        "id": "study-" + "".join(c if c.isalnum() else "-" for c in name),
        "name": name, "title": title, "about": about, "status": status,
        "summary_file": main.name if main else None,
        "unreadable": summary.get("_unreadable") if isinstance(summary, dict) else None,
        "pairs": [dict(p, ours=fmt(p["ours"]), paper=fmt(p["paper"])) for p in pairs],
        "numbers": numbers, "headline": _headline(flat, pairs),
        "figures": [p for p in files if p.suffix.lower() in IMAGE_TYPES],
        "tables": [p for p in files if p.suffix == ".csv"],
        "documents": [p for p in files if p.suffix == ".md" and p.with_suffix("") not in csv_stems],
        "snippets": [p for p in files if p.suffix == ".html"],
        "raw": summary,
    }


def _order(names) -> list[str]:
    known = [n for n in STUDIES if n in names]
    return known + sorted(n for n in names if n not in STUDIES)


def _studies(root: Path, statuses: dict) -> tuple[list[dict], list[str]]:
    folders = {p.name: p for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))}
    names = _order(set(folders) | set(statuses))
    sections, not_run = [], []
    for name in names:
        st = statuses.get(name)
        if name in folders and (st or any(folders[name].iterdir())):
            sections.append(collect(folders[name], name, st))
        elif st and st.get("status") not in (None, "not run"):
            sections.append(_empty(name, st))   # it ran and failed before writing anything
        else:
            not_run.append(name)
    not_run += [n for n in STUDIES if n not in names and n not in ("scan",)]
    return sections, _order(set(not_run))


def _empty(name: str, status: dict) -> dict:
    title, about = STUDIES.get(name, (name, ""))
    return {"id": f"study-{name}", "name": name, "title": title, "about": about, "status": status,
            "summary_file": None, "unreadable": None, "pairs": [], "numbers": [], "headline": [], "figures": [],
            "tables": [], "documents": [], "snippets": [], "raw": None}


# ---------------------------------------------------------------------------------------------- output --
def _template():
    import jinja2

    env = jinja2.Environment(loader=jinja2.PackageLoader("unitscope.report", "templates"),
                             autoescape=jinja2.select_autoescape(["html", "j2"]), undefined=jinja2.StrictUndefined)
    env.filters["fmt"] = fmt
    return env.get_template("report.html.j2")


def _summary_rows(sections: list[dict], not_run: list[str]) -> list[dict]:
    rows = [{"study": s["name"], "status": s["status"].get("status", ""), "seconds": s["status"].get("seconds"),
             "headline": "; ".join(s["headline"])} for s in sections]
    return rows + [{"study": n, "status": "not run", "seconds": None, "headline": ""} for n in not_run]


def _atomic_write(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            write(f)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def build_report(results_dir, out=None, *, title: str = "unitscope report") -> Path:
    """Render ``results_dir`` into one HTML file (default ``results_dir/report.html``); returns its path."""
    from ..core.errors import UnitscopeError

    root = Path(results_dir)
    if not root.is_dir():
        raise UnitscopeError(f"results folder {str(root)!r} not found",
                             hint="run `unitscope demo` (or a study with --out) first")
    out = Path(out) if out else root / "report.html"
    if out.parent and not out.parent.is_dir():
        raise UnitscopeError(f"folder of {str(out)!r} does not exist")
    status_file = root / "demo_status.json"
    run = _read_json(status_file) if status_file.exists() else {}
    statuses = run.get("studies", {}) if isinstance(run, dict) else {}
    sections, not_run = _studies(root, statuses)
    rows = _summary_rows(sections, not_run)
    meta = {k: v for k, v in (run.items() if isinstance(run, dict) else []) if k != "studies"}

    def embed(path: Path) -> str:
        return data_uri(path)

    def table(path: Path) -> dict:
        return _csv_table(path)

    def markdown(path: Path) -> str:
        return _markdown(path)

    def snippet(path: Path) -> str:
        return path.read_text(errors="replace")

    template = _template()
    context = dict(title=title, sections=sections, not_run=not_run, rows=rows, meta=meta, results=str(root),
                   embed=embed, table=table, markdown=markdown, snippet=snippet, rel=lambda p: os.path.relpath(p, root))
    _atomic_write(out, lambda f: template.stream(**context).dump(f))

    def write_json(f):
        json.dump({"meta": meta, "studies": {s["name"]: {"status": s["status"], "summary": s["raw"]}
                                             for s in sections}, "not_run": not_run}, f, indent=1, default=str)

    def write_csv(f):
        w = csv.DictWriter(f, fieldnames=["study", "status", "seconds", "headline"])
        w.writeheader()
        w.writerows(rows)

    _atomic_write(out.parent / "report.json", write_json)
    _atomic_write(out.parent / "report_summary.csv", write_csv)
    return out

