"""How results show themselves in a notebook: a small HTML table (``_repr_html_``).

>>> print(html_table("Scores(score='activation')", ["layer", "shape"], [["fc", "[2, 3]"]]))
<table><caption>Scores(score=&#x27;activation&#x27;)</caption><tr><th>layer</th><th>shape</th></tr><tr><td>fc</td><td>[2, 3]</td></tr></table>
"""  # noqa: E501 — a doctest output line, verbatim

from __future__ import annotations

from html import escape

__all__ = ["html_table"]


def html_table(caption: str, columns, rows) -> str:
    """``<table>`` with a caption, a header row and one row per item; every cell is escaped text."""
    head = "".join(f"<th>{escape(str(c))}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{escape(str(v))}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><caption>{escape(caption)}</caption><tr>{head}</tr>{body}</table>"
