"""The conformance matrix's outcome table: architecture × function → ok / flagged / error / xfail / FAIL.

A test of the matrix is parametrized by ``arch`` and ``fn``; it may note ``flagged`` (a layer marked not ok, with
its message) in ``request.node.user_properties``. The table is printed at the end of the session and written to
``$UNITSCOPE_CONFORMANCE_TABLE`` (or ``conformance_table.txt`` in pytest's temporary directory).
"""

import os
import sys
import tempfile
from pathlib import Path

import pytest
import torch

_TESTS = str(Path(__file__).resolve().parent.parent)
if _TESTS not in sys.path:  # tests/conftest.py puts it there too; this folder must also work on its own
    sys.path.insert(0, _TESTS)

OUTCOMES: dict = {}  # (arch, fn) -> status


@pytest.fixture(autouse=True)
def _one_thread():
    """Small models on a shared 2-core machine: one torch thread (restored afterwards)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _key(item):
    params = getattr(getattr(item, "callspec", None), "params", {})
    if "arch" in params and "fn" in params:
        return params["arch"], params["fn"]
    return None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    key = _key(item)
    if key is None:
        return
    if rep.when == "setup" and rep.failed:
        OUTCOMES[key] = "FAIL"
    elif rep.when == "setup" and rep.skipped:
        OUTCOMES[key] = "xfail" if hasattr(rep, "wasxfail") else "skip"
    elif rep.when == "call":
        if hasattr(rep, "wasxfail"):
            OUTCOMES[key] = "xfail" if rep.skipped else "XPASS"
        elif rep.failed:
            OUTCOMES[key] = "FAIL"
        elif rep.skipped:
            OUTCOMES[key] = "skip"
        else:
            OUTCOMES[key] = dict(item.user_properties).get("status", "ok")
    if OUTCOMES.get(key) == "flagged":
        OUTCOMES[key] = "flag"


_SHORT = (
    ("conductance:", "C:"),
    ("riemann_", ""),
    ("gausslegendre", "GL"),
    ("trapezoid", "trap"),
    ("adaptive", "adapt"),
    ("internal_influence", "influence"),
    ("grad_x_activation", "grad×act"),
    ("activation", "act"),
    ("neuron:", "Eq2:"),
    ("ablation_scores", "ablation"),
    ("class_selectivity", "select"),
    ("independent_am", "IAM"),
    ("sample_inverse_set", "inverse"),
    ("inverse:unreachable", "inv:empty"),
    ("inference_mode", "inference"),
    ("odd_layers", "odd"),
)


def short(fn: str) -> str:
    for a, b in _SHORT:
        fn = fn.replace(a, b)
    return fn


def table() -> str:
    if not OUTCOMES:
        return ""
    archs = list(dict.fromkeys(a for a, _ in OUTCOMES))
    fns = list(dict.fromkeys(f for _, f in OUTCOMES))
    width = max(len(a) for a in archs)
    cols = [max(len(short(f)), 5) for f in fns]
    lines = [" " * width + " | " + " | ".join(short(f).ljust(c) for f, c in zip(fns, cols))]
    lines.append("-" * len(lines[0]))
    for a in archs:
        lines.append(a.ljust(width) + " | " + " | ".join(OUTCOMES.get((a, f), "-").ljust(c) for f, c in zip(fns, cols)))
    counts = {}
    for v in OUTCOMES.values():
        counts[v] = counts.get(v, 0) + 1
    lines.append("")
    lines.append("totals: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    lines.append(
        "ok: every invariant held; flag: a cut layer missed the 1 % completeness tolerance and is marked "
        "not ok with a message (and a warning) naming it; xfail: a known library bug (test_matrix.KNOWN); "
        "FAIL: an invariant broke; '-': not applicable. C: conductance by rule, Eq2: neuron_conductance"
    )
    return "\n".join(lines)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    text = table()
    if not text:
        return
    terminalreporter.section("unitscope conformance matrix")
    terminalreporter.write_line(text)
    target = os.environ.get("UNITSCOPE_CONFORMANCE_TABLE")
    if not target:
        factory = getattr(config, "_tmp_path_factory", None)
        base = factory.getbasetemp() if factory is not None else Path(tempfile.gettempdir())
        target = str(Path(base) / "conformance_table.txt")
    Path(target).parent.mkdir(parents=True, exist_ok=True)
    Path(target).write_text(text + "\n")
    terminalreporter.write_line(f"(written to {target})")
