"""The linter, the formatter and the type checker are part of the tests: ``ruff check`` and ``ruff format --check``
over ``src``, ``tests`` and ``bench`` and
``mypy`` over the library, both configured in pyproject.toml (``[tool.ruff]``, ``[tool.mypy]``) and installed by the
``test`` extra. mypy keeps its cache in ``.mypy_cache``: a second run checks only what changed."""

import importlib.util
import inspect
import pathlib
import subprocess
import sys

import pytest

import unitscope as us

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _run(module: str, *args: str) -> subprocess.CompletedProcess:
    if importlib.util.find_spec(module) is None:
        pytest.fail(f"{module} is not installed: pip install -e '.[test]' (make test does)")
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_ruff_finds_nothing():
    run = _run("ruff", "check", "--no-fix", "src", "tests", "bench")
    assert run.returncode == 0, f"ruff check src tests bench:\n{run.stdout}\n{run.stderr}"


def test_ruff_format_leaves_everything_as_it_is():
    run = _run("ruff", "format", "--check", "src", "tests", "bench")
    assert run.returncode == 0, (
        f"ruff format --check src tests bench (run ruff format to fix):\n{run.stdout}\n{run.stderr}"
    )


def test_mypy_finds_nothing_in_the_library():
    run = _run("mypy")  # the files and settings: [tool.mypy] in pyproject.toml
    assert run.returncode == 0, f"mypy:\n{run.stdout}\n{run.stderr}"


ANNOTATED = ("inputs", "layer", "layers", "baselines", "target")


def test_the_public_api_annotates_its_common_arguments():
    """Every public function's ``inputs``, ``layer(s)``, ``baselines`` and ``target`` say their type (the aliases
    of :mod:`unitscope.core.types`)."""
    missing = []
    for name in us.__all__:
        fn = getattr(us, name)
        if inspect.isclass(fn) or (inspect.ismodule(fn) and not callable(fn)):
            continue
        for p in inspect.signature(fn).parameters.values():
            if p.name in ANNOTATED and p.annotation is inspect.Parameter.empty:
                missing.append(f"{name}({p.name})")
    assert not missing, missing
