"""The package in layers, each importing only from the layers below it (imports inside functions included):

the library (``core``, ``attribution``, ``data``, ``synthesis``, ``atlas``) < the zoo < the app's services
(``loading``, ``hf``, ``report``; ``report`` renders manifests and knows neither the zoo nor any study) < the papers'
studies < the CLI, the demo and the bundled runs of CLI commands (``runs``). The package's ``__init__`` (the public
names) sits with the services."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "src" / "unitscope"

RANK = {
    "core": 0,
    "attribution": 0,
    "data": 0,
    "synthesis": 0,
    "atlas": 0,
    "zoo": 1,
    "loading": 2,
    "hf": 2,
    "report": 2,
    "__init__": 2,
    "studies": 3,
    "cli": 4,
    "demo": 4,
    "runs": 4,
    "__main__": 4,
}
#: on the same rank, who may not import whom
APART = {("report", "zoo"), ("report", "loading"), ("report", "hf"), ("report", "studies")}


def imports(source: str, package: list[str]) -> list[tuple[int, str]]:
    """``(line, absolute module)`` of every ``unitscope`` import in ``source`` at any depth (inside functions too);
    ``package``: the dotted parts of the package the file is in, for relative imports."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.startswith("unitscope")]
        elif isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            if node.level:
                base = package[: len(package) - node.level + 1]
                if not node.module:  # from .. import x: x is a module (or a name) of that package
                    out += [(node.lineno, ".".join(base + [a.name])) for a in node.names]
                    continue
                mod = ".".join(base + [node.module])
            if mod.startswith("unitscope"):
                out.append((node.lineno, mod))
    return out


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def violations() -> list[str]:
    bad = []
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT)
        here = rel.parts[0].removesuffix(".py")
        package = ["unitscope", *rel.parts[:-1]]
        for line, mod in imports(path.read_text(), package):
            there = _layer(mod)
            if there == here or there not in RANK:
                continue
            if RANK[there] > RANK[here] or (here, there) in APART:
                bad.append(f"src/unitscope/{rel}:{line} ({here}) imports {mod} ({there})")
    return bad


def test_every_layer_imports_only_from_the_layers_below_it():
    bad = violations()
    assert not bad, "imports against the layers:\n" + "\n".join(bad)


def test_the_check_reads_relative_imports_and_imports_inside_functions():
    source = "import unitscope.core\nfrom ..zoo import cache\ndef f():\n    from ..cli.scan import main\n"
    assert imports(source, ["unitscope", "report"]) == [
        (1, "unitscope.core"),
        (2, "unitscope.zoo"),
        (4, "unitscope.cli.scan"),
    ]
    assert [_layer(m) for _, m in imports(source, ["unitscope", "report"])] == ["core", "zoo", "cli"]


def test_the_atlas_is_one_subpackage_and_us_atlas_still_builds_one():
    import types

    import unitscope as us
    import unitscope.atlas as atlas_package

    assert isinstance(atlas_package, types.ModuleType) and atlas_package is us.atlas
    assert atlas_package.atlas.__name__ == "atlas" and callable(us.atlas)
    assert list(__import__("inspect").signature(us.atlas).parameters)[:2] == ["model", "data"]
    assert not [p.name for p in ROOT.glob("atlas*.py")], "the atlas lives in src/unitscope/atlas/"
