"""CSV tables as HTML a person can read: numbers formatted, missing values as "—", list-valued cells replaced by a
link to the CSV, dead units marked *dead* with no values, long tables cut (the CSV holds every row).

>>> import os, tempfile
>>> d = tempfile.mkdtemp()
>>> p = os.path.join(d, "units.csv")
>>> import pandas as pd
>>> pd.DataFrame({"unit": [0, 1, 2], "dead": [False, True, False], "rs": [0.4412, 0.44, float("nan")],
...               "top": ["[1, 2, 3]", "[0, 1]", "[]"]}).to_csv(p, index=False)
>>> t = render_table(p, href="units.csv", dead="dead")
>>> t["n_rows"], t["n_dead"], "data-dead" in t["html"], ">0.441<" in t["html"], "3 values" in t["html"]
(3, 1, True, True, True)
"""

from __future__ import annotations

import html
import math
import re

__all__ = ["fmt", "render_table", "MAX_ROWS", "OPEN_ROWS"]

MAX_ROWS = 40  # rows shown in the page
OPEN_ROWS = 12  # tables longer than this start collapsed
_NUMBER = r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?|nan|inf"
_SPACED = re.compile(rf"^\s*({_NUMBER})(\s+({_NUMBER})){{3,}}\s*$")


def fmt(v) -> str:
    """A number as a person reads it; None, NaN and empty as "—".

    >>> fmt(0.123456), fmt(float("nan")), fmt(None), fmt(1234567.0), fmt(3)
    ('0.123', '—', '—', '1.23e+06', '3')
    """
    if v is None or isinstance(v, str) and not v.strip():
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if math.isnan(v):
            return "—"
        if v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e5):
            return f"{v:.3g}"
        return f"{v:.3f}".rstrip("0").rstrip(".") if abs(v) < 100 else f"{v:.1f}"
    if isinstance(v, (list, tuple)):
        return f"{len(v)} values"
    return str(v)


def list_length(v) -> int | None:
    """The number of items if ``v`` is a list written into a CSV cell (``[1, 2]`` or ``"0.1 0.2 0.3 0.4"``)."""
    if not isinstance(v, str):
        return None
    s = v.strip()
    if len(s) >= 2 and s[0] in "[(" and s[-1] in "])":
        inner = s[1:-1].strip()
        return 0 if not inner else len([x for x in re.split(r"[,\s]+", inner) if x])
    if _SPACED.match(s):
        return len(s.split())
    return None


def _is_dead(value, live: bool) -> bool:
    if isinstance(value, str):
        value = value.strip().lower() in ("true", "1", "yes")
    try:
        if isinstance(value, float) and math.isnan(value):
            return False
        flag = bool(value)
    except (TypeError, ValueError):
        return False
    return not flag if live else flag


def _cell(v, href: str, dead_row: bool) -> str:
    n = list_length(v)
    if n is not None:
        if dead_row:
            return "—"
        return f'<a class="list-cell" href="{html.escape(href)}">{n} value{"" if n == 1 else "s"} (CSV)</a>'
    if dead_row and isinstance(v, float):
        return "—"
    return html.escape(fmt(v))


def render_table(path, *, href: str, dead: str | None = None, max_rows: int = MAX_ROWS) -> dict:
    """``{"html", "n_rows", "n_cols", "shown", "n_dead", "collapsed", "error"}`` for one CSV file. ``dead``: the
    name of a boolean column marking dead units (a column named ``live`` is read the other way round); without
    it, a boolean ``dead`` or ``live`` column is used if there is one."""
    import pandas as pd

    try:
        df = pd.read_csv(path)
    except (OSError, ValueError) as e:  # an unreadable table is shown as such, not fatal
        return {
            "html": f"<p class='bad'>unreadable table: {html.escape(str(e))}</p>",
            "n_rows": 0,
            "n_cols": 0,
            "shown": 0,
            "n_dead": 0,
            "collapsed": False,
            "error": str(e),
        }
    if len(df.columns) and str(df.columns[0]).startswith("Unnamed"):
        df = df.rename(columns={df.columns[0]: ""})
    if dead is None:
        dead = next((c for c in ("dead", "live") if c in df.columns and df[c].dropna().isin([True, False]).all()), None)
    live = dead is not None and dead.split(".")[-1].lower().startswith("live")
    flags = [dead is not None and _is_dead(v, live) for v in (df[dead] if dead in df.columns else [None] * len(df))]
    shown = df.head(max_rows)
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    rows = []
    for i, row in enumerate(shown.itertuples(index=False)):
        is_dead = flags[i]
        cells = []
        for c, v in zip(df.columns, row):
            if c == dead:
                text = '<span class="dead-mark">dead</span>' if is_dead else ("live" if live else "")
            else:
                text = _cell(v, href, is_dead)
            cells.append(f"<td>{text}</td>")
        attr = ' class="dead" data-dead="1"' if is_dead else ""
        rows.append(f"<tr{attr}>{''.join(cells)}</tr>")
    body = f'<table class="table"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
    return {
        "html": body,
        "n_rows": len(df),
        "n_cols": len(df.columns),
        "shown": len(shown),
        "n_dead": sum(flags),
        "collapsed": len(df) > OPEN_ROWS,
        "error": None,
    }
