"""A griffe extension for the API pages: unitscope's docstrings are written in reST-flavoured plain text (``code``,
:func:`name`, doctest blocks); this turns them into the Markdown that mkdocstrings renders, without touching the
source. Doctest blocks (``>>>`` lines and their output) become ``pycon`` code blocks, cross-reference roles become
code, linked to the API page when the name is public (in ``unitscope.__all__``)."""

from __future__ import annotations

import re

import griffe

_ROLE = re.compile(r":(?:py:)?(?:func|class|mod|meth|attr|data|obj|exc):`~?([^`]+)`")
_PUBLIC: set[str] = set()


def _public() -> set[str]:
    if not _PUBLIC:
        try:
            import unitscope
            _PUBLIC.update(unitscope.__all__)
        except Exception:       # the reference still builds; the roles become plain code
            pass
    return _PUBLIC


def _role(match: re.Match) -> str:
    target = match.group(1)
    name = target.removeprefix("unitscope.")
    if name in _public():
        return f"[`{target}`][unitscope.{name}]"
    return f"`{target}`"


def _fence_doctests(text: str) -> str:
    out, lines, i = [], text.split("\n"), 0
    while i < len(lines):
        line = lines[i]
        if line.lstrip().startswith(">>>"):
            indent = line[: len(line) - len(line.lstrip())]
            block = []
            while i < len(lines) and lines[i].strip():
                block.append(lines[i][len(indent):] if lines[i].startswith(indent) else lines[i].lstrip())
                i += 1
            if out and out[-1].strip():
                out.append("")
            out += [indent + "```pycon", *(indent + b for b in block), indent + "```"]
            continue
        out.append(line)
        i += 1
    return "\n".join(out)


_ITEM = re.compile(r"^\s*(?:[-*]|\d+\.) ")


def _open_lists(text: str) -> str:
    """A blank line before a list that follows a paragraph line (Markdown needs one; reST readers do not)."""
    out: list[str] = []
    for line in text.split("\n"):
        prev = out[-1] if out else ""
        if _ITEM.match(line) and prev.strip() and not _ITEM.match(prev) and not prev.startswith(" "):
            out.append("")
        out.append(line)
    return "\n".join(out)


def convert(text: str) -> str:
    """reST-flavoured docstring text → Markdown."""
    text = _open_lists(_fence_doctests(text))
    parts = re.split(r"(```.*?```)", text, flags=re.S)     # leave code blocks as they are
    return "".join(p if p.startswith("```") else _ROLE.sub(_role, p) for p in parts)


class RstDocstrings(griffe.Extension):
    def on_object(self, *, obj, loader, **kwargs) -> None:
        if obj.docstring is not None:
            obj.docstring.value = convert(obj.docstring.value)
