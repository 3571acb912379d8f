"""Every public name of ``unitscope`` (``unitscope.__all__``) carries its reference in one structure, the NumPy
docstring style that the API pages render (``docstring_style: numpy`` in ``mkdocs.yml``): a first line saying what it
computes, then ``Parameters`` (every parameter of the signature), ``Returns`` (functions), ``Raises`` (all but the
error and warning types) and ``Examples`` with a doctest (run by the suite's ``--doctest-modules``). A new public
function without them fails here."""

from __future__ import annotations

import inspect
import re
import types

import pytest

import unitscope as us

_HEADER = re.compile(r"^(?P<name>[A-Z][A-Za-z ]+)\n(?P<rule>-{3,})$", re.M)


def sections(doc: str) -> dict[str, str]:
    """``{section name: its body}`` of a NumPy-style docstring (a title underlined with dashes)."""
    found = [m for m in _HEADER.finditer(doc) if len(m["rule"]) == len(m["name"])]
    return {
        m["name"]: doc[m.end() : (found[i + 1].start() if i + 1 < len(found) else len(doc))]
        for i, m in enumerate(found)
    }


def documented(obj):
    """What a public name's reference is read from: the object, or for ``unitscope.atlas`` (the package, callable) the
    function that calling it runs."""
    if isinstance(obj, types.ModuleType) and callable(obj):
        return obj.atlas
    return obj


def is_error(obj) -> bool:
    return isinstance(obj, type) and issubclass(obj, BaseException)


def parameter_names(obj) -> list[str]:
    if is_error(obj) and not inspect.isfunction(obj.__init__):  # a built-in exception's constructor
        return []
    params = inspect.signature(obj).parameters.values()
    return [("**" if p.kind is p.VAR_KEYWORD else "*" if p.kind is p.VAR_POSITIONAL else "") + p.name for p in params]


def documented_parameters(body: str) -> set[str]:
    """The names of a ``Parameters`` section: lines at the section's indentation, ``name : type`` or ``name``
    (several names may share a line: ``a, b : int``)."""
    names = set()
    for line in body.splitlines():
        if line and not line[0].isspace():
            for name in line.split(" : ")[0].split(","):
                names.add(name.strip().replace("\\", ""))
    return names


PUBLIC = [n for n in us.__all__ if not (isinstance(getattr(us, n), types.ModuleType) and not callable(getattr(us, n)))]
MODULES = [n for n in us.__all__ if n not in PUBLIC]


@pytest.mark.parametrize("name", PUBLIC)
def test_the_docstring_has_the_sections(name):
    obj = documented(getattr(us, name))
    doc = inspect.getdoc(obj) or ""
    first = doc.split("\n\n")[0].strip()
    assert first and not _HEADER.match(first), f"{name}: the docstring must start with what it computes"
    have = sections(doc)
    wanted = ["Parameters", "Raises", "Examples"] + ([] if isinstance(obj, type) else ["Returns"])
    if is_error(obj):  # an error or warning type is what the others' Raises sections name
        wanted.remove("Raises")
    if isinstance(obj, type) and not parameter_names(obj):
        wanted.remove("Parameters")
    missing = [s for s in wanted if s not in have]
    assert not missing, f"{name}: no {', '.join(missing)} section(s); found {list(have)}"
    order = [s for s in have if s in ("Parameters", "Returns", "Raises", "Examples")]
    assert order == sorted(order, key=["Parameters", "Returns", "Raises", "Examples"].index), f"{name}: {order}"
    assert ">>>" in have["Examples"], f"{name}: the Examples section needs a doctest (>>> lines)"
    for section in ("Returns", "Raises"):
        if section in have:
            assert have[section].strip(), f"{name}: the {section} section is empty"


@pytest.mark.parametrize("name", PUBLIC)
def test_every_parameter_is_documented(name):
    obj = documented(getattr(us, name))
    params = parameter_names(obj)
    if not params:
        return
    body = sections(inspect.getdoc(obj) or "").get("Parameters", "")
    have = documented_parameters(body)
    missing = [p for p in params if p not in have]
    assert not missing, f"{name}: parameters not documented under Parameters: {missing}"
    extra = sorted(have - set(params))
    assert not extra, f"{name}: documented parameters that are not in the signature: {extra}"


@pytest.mark.parametrize("name", MODULES)
def test_a_public_module_says_what_it_holds_with_an_example(name):
    doc = inspect.getdoc(getattr(us, name)) or ""
    assert doc.split("\n\n")[0].strip(), name
    assert ">>>" in doc, f"{name}: the module docstring needs a doctest"


def test_the_sections_parser():
    doc = (
        "What it does.\n\nParameters\n----------\nx : int\n    The x.\na, b : float, default 1.0\n    Two.\n\n"
        "Returns\n-------\nint\n    x + 1.\n\nExamples\n--------\n>>> 1\n1\n"
    )
    have = sections(doc)
    assert list(have) == ["Parameters", "Returns", "Examples"]
    assert documented_parameters(have["Parameters"]) == {"x", "a", "b"}
