"""Every bench takes ``--device`` and bench/gpu.sh runs every bench (issue 28, item 6).

Fast: one subprocess prints every bench's ``--help`` (the scripts run as ``__main__`` with ``--help``, so only
their imports and argument parsers run), and ``bench/gpu.sh`` is checked by ``bash -n`` and its dry run
(``GPU_SH_DRY=1``: it prints what it would run and runs nothing). No GPU needed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
SCRIPTS = sorted(p.name for p in BENCH.glob("*.py") if not p.name.startswith("_"))  # _timing.py: a helper

# runs each script as __main__ with --help in this one process and prints {script: {"code", "help"}} as JSON
_DRIVER = r"""
import contextlib, io, json, runpy, sys
bench, names = sys.argv[1], sys.argv[2:]
sys.path.insert(0, bench)   # as `python bench/NAME.py` does: the helper bench/_timing.py is importable
out = {}
for name in names:
    path = f"{bench}/{name}"
    buf = io.StringIO()
    sys.argv = [path, "--help"]
    try:
        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
            runpy.run_path(path, run_name="__main__")
        code = "returned without exiting"
    except SystemExit as e:
        code = e.code
    except BaseException as e:  # noqa: BLE001 - reported per script
        code = f"{type(e).__name__}: {e}"
    out[name] = {"code": code, "help": buf.getvalue()}
sys.stdout.write("\n" + json.dumps(out) + "\n")
"""


def test_benches_found():
    assert len(SCRIPTS) >= 18 and "floor.py" in SCRIPTS and "_timing.py" not in SCRIPTS


@pytest.fixture(scope="module")
def helps() -> dict:
    env = dict(
        os.environ,
        OMP_NUM_THREADS="1",
        PYTHONPATH=os.pathsep.join(
            [str(ROOT / "src")] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])
        ),
    )
    run = subprocess.run(
        [sys.executable, "-c", _DRIVER, str(BENCH), *SCRIPTS],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("name", SCRIPTS)
def test_help_lists_device(helps, name):
    got = helps[name]
    assert got["code"] in (0, None), f"{name} --help: {got['code']}\n{got['help'][-2000:]}"
    assert re.search(r"--device\b", got["help"]), f"{name} --help does not list --device:\n{got['help']}"


def _gpu_sh(tmp_path, **env):
    return subprocess.run(
        ["bash", str(BENCH / "gpu.sh"), str(tmp_path / "out")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ, GPU_SH_TMP=str(tmp_path / "tmp"), **env),
    )


@pytest.mark.skipif(shutil.which("bash") is None, reason="no bash")
def test_gpu_sh_parses():
    run = subprocess.run(["bash", "-n", str(BENCH / "gpu.sh")], capture_output=True, text=True, timeout=30)
    assert run.returncode == 0, run.stderr


@pytest.mark.skipif(shutil.which("bash") is None, reason="no bash")
def test_gpu_sh_names_every_bench(tmp_path):
    run = _gpu_sh(tmp_path, GPU_SH_DRY="1")
    assert run.returncode == 0, run.stderr
    ran, skipped = {}, {}
    for line in run.stdout.splitlines():
        m = re.match(r"run (\S+) (\d+)s: \S+ (bench/\S+\.py)( .*)? --device cuda$", line)
        if m:
            ran[Path(m.group(3)).name] = int(m.group(2))
        m = re.match(r"skip (\S+\.py): (.+)$", line)
        if m:
            skipped[m.group(1)] = m.group(2).strip()
    assert not set(ran) & set(skipped), "a bench both run and skipped"
    missing = sorted(set(SCRIPTS) - set(ran) - set(skipped))
    assert not missing, f"bench/gpu.sh neither runs nor skips (with a reason): {missing}"
    assert all(skipped.values()), "every skipped bench needs a reason"
    assert not set(ran) - set(SCRIPTS), "gpu.sh runs a script that is not in bench/"
    # the headline benches first, and every timeout inside the 10-minute slot
    order = [ln.split()[1] for ln in run.stdout.splitlines() if ln.startswith("run ")]
    assert order[:3] == ["floor", "neuron", "conductance"], order
    assert all(0 < t <= 600 for t in ran.values())
