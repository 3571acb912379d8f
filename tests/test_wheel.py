"""The package a user installs: a wheel built from a copy of the tree passes ``twine check``, carries its metadata
(summary, license, Python and torch ranges, extras, the project's URLs), installs with ``pip install --no-deps`` into
a folder of its own and into a fresh virtual environment, and from there imports, with the report's templates
inside, and runs the console script ``unitscope --help``; the ranges it declares hold for the packages the tests
run with."""

import email
import importlib.metadata
import os
import pathlib
import shutil
import subprocess
import sys
import zipfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _run(*args, **kw):
    run = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=600, **kw)
    assert run.returncode == 0, f"{' '.join(map(str, args))} failed:\n{run.stdout}\n{run.stderr}"
    return run


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    pytest.importorskip("build", reason="`build` is not installed: pip install -e '.[test]'")
    tmp = tmp_path_factory.mktemp("wheel")
    tree = tmp / "tree"  # a copy: building never writes build/ or *.egg-info into the checkout
    tree.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, tree / name)
    shutil.copytree(ROOT / "src", tree / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    _run(sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", tmp / "dist", tree)
    wheels = list((tmp / "dist").glob("unitscope-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def test_twine_check_passes(wheel):
    pytest.importorskip("twine", reason="`twine` is not installed: pip install -e '.[test]'")
    out = _run(sys.executable, "-m", "twine", "check", "--strict", wheel)
    assert "PASSED" in out.stdout


def test_the_metadata(wheel):
    with zipfile.ZipFile(wheel) as z:
        name = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        meta = email.message_from_bytes(z.read(name))
        files = z.namelist()
    assert meta["Name"] == "unitscope"
    assert "hidden units" in meta["Summary"]
    assert meta["License-Expression"] == "MIT"
    assert any(f.endswith(".dist-info/licenses/LICENSE") for f in files)
    assert meta["Requires-Python"] == ">=3.10"
    requires = meta.get_all("Requires-Dist")
    assert any(
        r.replace(" ", "").startswith("torch<3,>=2.1") or r.replace(" ", "").startswith("torch>=2.1,<3")
        for r in requires
    ), requires
    assert {"vision", "text", "docs", "parquet", "test"} <= set(meta.get_all("Provides-Extra"))
    assert meta["Description-Content-Type"] == "text/markdown"
    assert "all" in meta.get_all("Provides-Extra")
    assert any(r.replace(" ", "").startswith("sentence-transformers>=3;extra==") and "text" in r for r in requires)
    assert "Programming Language :: Python :: 3.10" in meta.get_all("Classifier")
    urls = dict(u.split(", ", 1) for u in meta.get_all("Project-URL"))
    assert set(urls) == {"Homepage", "Documentation", "Repository", "Changelog"}, urls
    assert all(u.startswith("https://") for u in urls.values()), urls
    assert "unitscope/report/templates/report.html.j2" in files
    assert not [f for f in files if f.startswith(("tests/", "bench/", "docs/"))]


def test_installs_and_runs(wheel, tmp_path):
    target = tmp_path / "site"
    _run(sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--quiet", "--target", target, wheel)
    env = {**os.environ, "PYTHONPATH": str(target), "OMP_NUM_THREADS": "1"}
    where = _run(
        sys.executable,
        "-c",
        "import unitscope, importlib.resources as r; print(unitscope.__file__); "
        "print(r.files('unitscope.report').joinpath('templates', 'report.html.j2').is_file())",
        env=env,
        cwd=tmp_path,
    ).stdout.split()
    assert pathlib.Path(where[0]).is_relative_to(target), where  # the installed copy, not the checkout
    assert where[1] == "True"
    out = _run(target / "bin" / "unitscope", "--help", env=env, cwd=tmp_path).stdout  # the console script
    assert "importance" in out and "scan" in out and "atlas" in out, out


def _metadata(wheel):
    with zipfile.ZipFile(wheel) as z:
        name = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        return email.message_from_bytes(z.read(name))


def test_the_declared_ranges_hold_for_the_tested_packages(wheel):
    """Every requirement of the wheel (and of its ``text`` and ``vision`` extras) is met by what the tests import:
    the ranges are not written from memory."""
    from packaging.requirements import Requirement

    meta, checked = _metadata(wheel), []
    for line in meta.get_all("Requires-Dist"):
        req = Requirement(line)
        if req.marker is not None and not any(req.marker.evaluate({"extra": e}) for e in ("text", "vision")):
            continue
        if req.name == "unitscope":
            continue
        version = importlib.metadata.version(req.name)
        assert req.specifier.contains(version, prereleases=True), (line, version)
        checked.append(req.name)
    assert {"torch", "numpy", "threadpoolctl", "transformers", "torchvision"} <= set(checked)
    py = ".".join(map(str, sys.version_info[:3]))
    from packaging.specifiers import SpecifierSet

    assert SpecifierSet(meta["Requires-Python"]).contains(py)


def test_installs_into_a_fresh_virtual_environment(wheel, tmp_path):
    """``pip install`` of the wheel into a new venv (its dependencies seen from the test environment's
    site-packages through a path file, since this machine has no index): ``unitscope --help`` runs there and the
    package imported is the venv's copy, not the checkout."""
    import site
    import venv

    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    py = env_dir / "bin" / "python"
    purelib = pathlib.Path(_run(py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").stdout.strip())
    deps = [p for p in site.getsitepackages() if pathlib.Path(p).is_dir()]
    # a path line adds the directory but runs none of its .pth files: the checkout's editable install stays out
    (purelib / "_test_deps.pth").write_text("\n".join(deps) + "\n")
    _run(sys.executable, "-m", "pip", "--python", py, "install", "--no-deps", "--no-index", "--quiet", wheel)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["OMP_NUM_THREADS"] = "1"
    where = _run(py, "-c", "import unitscope; print(unitscope.__file__)", env=env, cwd=tmp_path).stdout.strip()
    assert pathlib.Path(where).is_relative_to(purelib), where
    out = _run(env_dir / "bin" / "unitscope", "--help", env=env, cwd=tmp_path).stdout
    assert "importance" in out and "scan" in out and "atlas" in out, out
