"""A mkdocs hook: the tutorials in ``docs/tutorials/*.py`` (jupytext's percent format, so Jupyter opens them as
notebooks with jupytext) are executed when the site builds, one namespace per tutorial as in a notebook, and each
becomes a page with its code and its outputs: what a cell prints, the value of its last expression, its warnings
and any matplotlib figure it returns or leaves open (embedded, nothing fetched). A cell that raises fails the build,
so ``mkdocs build`` — and ``tests/test_docs.py`` — runs every tutorial."""

from __future__ import annotations

import ast
import base64
import contextlib
import html
import io
import os
import pathlib
import sys
import tempfile
import time
import warnings

from mkdocs.structure.files import File

_MARK = "# %%"


def cells(text: str) -> list[tuple[str, str]]:
    """``[(kind, source)]`` of a percent-format file; kind is ``"markdown"`` or ``"code"``."""
    out, kind, lines = [], None, []
    for line in text.splitlines():
        if line.startswith(_MARK):
            if kind is not None:
                out.append((kind, "\n".join(lines).strip("\n")))
            kind, lines = ("markdown" if "[markdown]" in line else "code"), []
        elif kind == "markdown":
            lines.append(line[2:] if line.startswith("# ") else line.lstrip("#"))
        elif kind == "code":
            lines.append(line)
    if kind is not None:
        out.append((kind, "\n".join(lines).strip("\n")))
    return [c for c in out if c[1].strip()]


def _figure_png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
    return buf.getvalue()


def _run_cell(source: str, ns: dict) -> tuple[str, list[bytes]]:
    tree = ast.parse(source)
    last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
    out = io.StringIO()
    with contextlib.redirect_stdout(out), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        exec(compile(tree, "<tutorial>", "exec"), ns)
        value = eval(compile(ast.Expression(last.value), "<tutorial>", "eval"), ns) if last else None
    text = out.getvalue()
    for w in caught:                                      # what a user sees in a notebook, less library deprecations
        if not issubclass(w.category, (DeprecationWarning, PendingDeprecationWarning)):
            text += f"{w.category.__name__}: {w.message}\n"
    shown = []
    fig = getattr(value, "figure", value)
    if type(fig).__name__ == "Figure":
        shown.append(fig)
    elif value is not None:
        text += repr(value) + "\n"
    plt = sys.modules.get("matplotlib.pyplot")
    if plt is not None:                                   # figures left open by pyplot
        shown += [plt.figure(n) for n in plt.get_fignums() if plt.figure(n) not in shown]
    figures = [_figure_png(f) for f in shown]
    if plt is not None:
        plt.close("all")
    return text, figures


def render(path: pathlib.Path) -> str:
    """The tutorial executed, as Markdown."""
    import matplotlib
    matplotlib.use("Agg")
    ns: dict = {"__name__": "__main__"}
    source_cells = cells(path.read_text())
    parts = []
    t0 = time.perf_counter()
    cwd = os.getcwd()
    with tempfile.TemporaryDirectory() as work:          # what a tutorial writes stays out of the checkout
        os.chdir(work)
        try:
            for kind, source in source_cells:
                if kind == "markdown":
                    parts.append(source)
                    continue
                parts.append(f"```python\n{source}\n```")
                try:
                    text, figures = _run_cell(source, ns)
                except Exception as e:
                    raise RuntimeError(f"{path.name}: a cell failed: {type(e).__name__}: {e}\n{source}") from e
                if text.strip():
                    parts.append('<pre class="tutorial-output"><code>' + html.escape(text.rstrip()) + "</code></pre>")
                for png in figures:
                    parts.append(f'<img alt="figure" src="data:image/png;base64,{base64.b64encode(png).decode()}">')
        finally:
            os.chdir(cwd)
    parts.append(f"*Executed when this site was built ({time.perf_counter() - t0:.1f} s); the notebook: "
                 f"[`{path.name}`]({path.name}), open it in Jupyter with jupytext.*")
    return "\n\n".join(parts) + "\n"


def on_files(files, config):
    for path in sorted((pathlib.Path(config["docs_dir"]) / "tutorials").glob("*.py")):
        files.append(File.generated(config, f"tutorials/{path.stem}.md", content=render(path)))
    return files
