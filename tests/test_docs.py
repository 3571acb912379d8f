"""The documentation site builds offline with warnings as errors (``mkdocs build --strict``), its API reference has a
page for every public name, the ``conductance`` page states every parameter, the tutorials (``docs/tutorials/*.py``,
executed by the build: ``docs/_ext/tutorials.py``) are pages with their outputs, and no page loads anything from the
network (fonts, scripts, style sheets)."""

import inspect
import os
import pathlib
import re
import subprocess
import sys

import pytest

import unitscope as us

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    for module in ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers.python"):
        pytest.importorskip(module, reason=f"{module} is not installed: pip install -e '.[docs]' to build the docs")
    out = tmp_path_factory.mktemp("docs") / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "mkdocs",
            "build",
            "--strict",
            "--quiet",
            "--config-file",
            str(ROOT / "mkdocs.yml"),
            "--site-dir",
            str(out),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, f"mkdocs build --strict failed:\n{run.stdout}\n{run.stderr}"
    return out


def test_every_public_name_has_an_api_page(site):
    for name in us.__all__:
        page = site / "api" / name / "index.html"
        assert page.exists(), name
        assert f'id="unitscope.{name}"' in page.read_text(), name


def test_the_conductance_page_states_its_parameters(site):
    html = (site / "api" / "conductance" / "index.html").read_text()
    text = re.sub(r"<[^>]+>", "", html)
    for name in inspect.signature(us.conductance).parameters:
        assert f"{name}" in text, name
        assert f"<code>{name}</code>" in html, f"{name} is not in the parameter table"
    assert "Total conductance of every unit" in text  # the docstring itself


def test_the_tutorials_ran_into_pages(site):
    tutorials = sorted(p.stem for p in (ROOT / "docs" / "tutorials").glob("*.py"))
    assert len(tutorials) >= 4, tutorials
    for name in tutorials:
        html = (site / "tutorials" / name / "index.html").read_text()
        assert 'class="tutorial-output"' in html, name  # the cells' outputs, not only their code
        assert (site / "tutorials" / f"{name}.py").exists(), name  # the notebook itself, to download
    cnn = (site / "tutorials" / "conductance_cnn" / "index.html").read_text()
    assert "data:image/png;base64," in cnn and "CompletenessWarning" in cnn  # the error bars; a layer not ok


def test_the_site_fetches_nothing(site):
    remote = re.compile(r'<(?:script|link|img|iframe)\b[^>]*\b(?:src|href)="(?:https?:)?//', re.I)
    for page in site.rglob("*.html"):
        html = page.read_text()
        assert not remote.search(html), f"{page.relative_to(site)} loads {remote.search(html).group(0)}"
    assert not [p for p in site.rglob("*.css") if "fonts.googleapis" in p.read_text()]
