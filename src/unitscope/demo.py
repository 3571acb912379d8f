"""``unitscope demo [--quick]``: the whole mission in one run, then one HTML report.

>>> STUDY_ORDER[:3]
('evaluation', 'imagenet', 'sentiment')

First the digits job (a CNN trained on real digits, and which of its filters carry each prediction: conductance of
five layers in one call with the completeness gap), then every study entry point that is installed
(``python -m unitscope.studies.NAME [--quick] --out DIR/NAME --seed N``), each in its own process so that one
failing study is reported in the report and does not stop the others. ``DIR/demo_status.json`` records each
study's status, time, command and the end of its log (``DIR/NAME/log.txt`` keeps all of it); every part writes its
own ``manifest.json`` (:func:`unitscope.report.manifest.write_entry`), which the report renders.

Progress: the studies run with ``UNITSCOPE_PROGRESS=log`` (:mod:`unitscope.core.progress`: a line every few
seconds in their log, model trainings with the time left); the demo shows the last of those lines beside its own
bar on a terminal, and echoes it every ``ECHO_SECONDS`` when its output is a log — steps only (:func:`_is_step`):
never data a study prints, and never a line read from its middle.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import time

import torch

from .attribution.config import PathConfig
from .attribution.scores import conductance
from .zoo import digits_cnn, digits_data

__all__ = ["LAYERS", "STUDY_ORDER", "run", "digits_study", "run_study", "available_studies", "run_all"]

LAYERS = ["features.relu1", "features.relu2", "features.relu3", "features.relu4", "classifier.relu"]
QUICK_TIMEOUT, FULL_TIMEOUT = 600.0, 2400.0  # seconds per study before it is stopped and reported as a timeout
STUDY_ORDER = (
    "evaluation",
    "imagenet",
    "sentiment",
    "substitution",
    "inverse",
    "transformer",
    "features",
    "scan",
    "atlas",
)
ECHO_SECONDS = 10.0  # a non-terminal demo prints the running study's last progress line this often


def run(
    n_examples: int = 5,
    n_steps: int = 64,
    method: str = "adaptive",
    top: int = 5,
    seed: int = 0,
    echo=print,
    out: str | None = None,
    quick: bool | None = None,
) -> dict:
    """The digits job; with ``out``, also a table of the top filters, a figure and ``digits.json`` there."""
    t0 = time.perf_counter()
    trained = digits_cnn(seed=seed)
    _, test = digits_data()
    model = trained.model
    source = "loaded from cache" if trained.cached else "trained now"
    echo(
        f"digits CNN ({source}): test accuracy {100 * trained.info['test_accuracy']:.1f}% "
        f"on {len(test)} held-out real digits"
    )
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(test), generator=g)[:n_examples]
    x, y = test.x[idx], test.y[idx]
    scores = conductance(model, x, LAYERS, n_steps=n_steps, method=method, path=PathConfig(gap_warning=None))
    pred = scores.target
    echo(
        f"conductance of {len(LAYERS)} layers in one call ({method}, ≤{n_steps} path points per digit, "
        f"baseline = black image, target = top logit)"
    )
    rows, shares = [], []
    for i in range(len(idx)):
        echo(
            f"\ndigit #{int(idx[i])}: label {int(y[i])}, predicted {int(pred[i])}, "
            f"F(x) − F(x') = {float(scores.output_diff[i]):.3f}, {int(scores.n_evals[i])} path points"
        )
        for layer in LAYERS:
            t = scores.top(layer, k=top)
            units = ", ".join(f"#{u}:{v:+.3f}" for u, v in zip(t.indices[i].tolist(), t.values[i].tolist()))
            gap = 100 * float(scores.relative_delta(layer)[i])
            share = float(t.values[i].sum() / scores.output_diff[i])
            shares.append(share)
            echo(f"  {layer:<16} gap {gap:5.2f}%  top-{top} carry {100 * share:5.1f}%  {units}")
            rows.append(
                {
                    "digit": int(idx[i]),
                    "label": int(y[i]),
                    "predicted": int(pred[i]),
                    "layer": layer,
                    "gap_percent": gap,
                    f"top{top}_share": share,
                    "top_filters": units,
                    "path_points": int(scores.n_evals[i]),
                }
            )
    elapsed = time.perf_counter() - t0
    echo(f"\ndone in {elapsed:.1f} s")
    result = {
        "test_accuracy": trained.info["test_accuracy"],
        "seconds": elapsed,
        "max_gap": max(float(scores.relative_delta(layer).max()) for layer in LAYERS),
        "n_test": len(test),
        "n_examples": len(idx),
        "n_steps": n_steps,
        "method": method,
        "max_path_points": int(scores.n_evals.max()),
        "median_top_share": float(sorted(shares)[len(shares) // 2]),
    }
    if out is not None:
        _digits_outputs(out, model, x, scores, rows, result, top=top, quick=quick)
    return result


def _digits_outputs(out: str, model, x, scores, rows, result, *, top: int, quick: bool | None) -> None:
    import pandas as pd

    from .attribution.neuron import neuron_conductance
    from .report.figures import pixel_pictures, save_figure
    from .report.manifest import write_entry

    os.makedirs(out, exist_ok=True)
    table = pd.DataFrame(rows)
    table.to_csv(os.path.join(out, "digits_top_filters.csv"), index=False)
    layer = "features.relu3"
    figures = []
    for i in range(min(2, len(x))):
        t = scores.top(layer, k=top)
        units = t.indices[i].tolist()
        attr = neuron_conductance(
            model, x[i : i + 1], layer, units, target=int(scores.target[i]), n_steps=32, method="gausslegendre"
        )
        fig = pixel_pictures(
            x[i].expand(3, -1, -1),
            list(attr[0]),
            [f"{layer} #{u}\ncond {v:+.2f}" for u, v in zip(units, t.values[i].tolist())],
            cols=top,
            title=f"digit predicted {int(scores.target[i])}: what its top-{top} {layer} filters look at",
        )
        name = f"digits_example{i}_top{top}.png"
        save_figure(fig, os.path.join(out, name))
        figures.append(
            (
                name,
                f"Test digit predicted {int(scores.target[i])}: for each of its {top} {layer} filters "
                "with the highest conductance, the conductance through that filter of every pixel "
                "(Eq. 2 of Dhamdhere et al.), drawn over a grey copy of the digit — red pushes "
                "towards the prediction, blue against; each panel has its own scale (±1 = the "
                "value in its title).",
            )
        )
    summary = dict(
        result, layers=LAYERS, gap_by_layer={layer: float(scores.relative_delta(layer).max()) for layer in LAYERS}
    )
    with open(os.path.join(out, "digits.json"), "w") as f:
        json.dump(summary, f, indent=1)
    n = result["n_examples"]
    write_entry(
        out,
        title="Digits CNN: which filters carry each prediction",
        order=10,
        quick=quick,
        scale=f"{n} test digits, at most {result['n_steps']} adaptive path points each",
        description=(
            "A small CNN trained on scikit-learn's 1,797 real 8×8 handwritten digits. For a few held-out "
            "digits, the conductance of every unit of five layers (target: the predicted class's logit, "
            "baseline: a black image), all from one pass along the path. Completeness says a layer's "
            "conductances sum to F(x) − F(x'); the gap is how far from it the numerical integral is. The "
            f"table lists, per digit and layer, the gap and the share of F(x) − F(x') that the top-{top} "
            "filters carry — a share above 100 % means the other filters of that layer push the other "
            "way (negative conductance)."
        ),
        headlines=[
            f"The digits CNN labels {100 * result['test_accuracy']:.1f} % of the {result['n_test']} held-out "
            "digits correctly.",
            f"Completeness gap at most {100 * result['max_gap']:.2f} % of F(x) − F(x') over {len(LAYERS)} "
            f"layers and {n} digits, with at most {result['max_path_points']} path points per digit.",
            f"The top-{top} filters of a layer carry a median {100 * result['median_top_share']:.0f} % of "
            "F(x) − F(x') (above 100 %: the layer's other filters subtract).",
        ],
        figures=figures,
        tables=[
            (
                "digits_top_filters.csv",
                f"Per digit and layer: completeness gap (%), share carried by the top-{top} filters, the filters",
            )
        ],
        summary="digits.json",
    )


def digits_study(out: str, *, quick: bool, seed: int, echo=print) -> dict:
    return run(n_examples=3 if quick else 5, n_steps=32 if quick else 64, seed=seed, echo=echo, out=out, quick=quick)


# ----------------------------------------------------------------------------------------------- studies --
#: the runs of the bundled CLI commands (``unitscope.runs``), beside the papers' studies (``unitscope.studies``)
RUNS = ("scan", "atlas")


def study_module(name: str) -> str:
    """The module of a study entry point: ``unitscope.runs.NAME`` for the CLI's bundled runs, else a paper's study."""
    return f"unitscope.runs.{name}" if name in RUNS else f"unitscope.studies.{name}"


def available_studies() -> list[str]:
    """The study entry points installed in this version, in the report's order."""
    return [n for n in STUDY_ORDER if importlib.util.find_spec(study_module(n)) is not None]


def _tail(text: str, lines: int = 25) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def _last_line(path: str) -> str:
    """The last complete non-empty line of a log (its end only is read: a line that starts before that end is
    left out rather than shown from its middle — the long JSON summary a study prints last, for one)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            start = max(0, f.tell() - _TAIL_BYTES)
            f.seek(start)
            lines = f.read().decode("utf-8", "replace").replace("\r", "\n").split("\n")
    except OSError:
        return ""
    if start > 0:
        lines = lines[1:]  # the part of a line that began before the window
    lines = [ln.strip() for ln in lines if ln.strip()]
    return lines[-1] if lines else ""


_TAIL_BYTES = 4096
_WARNING = re.compile(r":\d+: \w*Warning: ")
_JSON = re.compile(r'"\s*:\s|,\s*"\w+"\s*:')  # "key": value — a JSON object's insides


def _is_step(line: str) -> bool:
    """Whether a study's log line is meant as a step (a note, a progress bar's line, a training's), not data: a
    JSON object or fragment, a quoted string, a warning and its source line, a traceback."""
    line = line.strip()
    if not line or line[0] in "{[\"'}]" or line.startswith(("Traceback", "warnings.warn(")):
        return False
    return not (_WARNING.search(line) or _JSON.search(line))


def _is_training(line: str) -> bool:
    """A log line of a model's first-use training, cached after: the zoo's "training the digits VAE once …", its
    bars ("training the digits-vgg model on digits: 7/40 epochs …") and the MiniLM passes that prepare a training
    set."""
    return line.startswith(_TRAINING)


_TRAINING = ("training ", "MiniLM vectors in context")


def run_study(
    name: str,
    out: str,
    *,
    quick: bool,
    seed: int,
    timeout: float | None = None,
    python: str = sys.executable,
    on_progress=None,
) -> dict:
    """Run one study entry point in its own process; its output goes to ``out/NAME/log.txt``. While it runs,
    ``on_progress(last line of the log)`` is called about once a second. ``timeout`` (seconds) stops a study that
    takes longer; the time its log says it is training a model on first use ("training …", with its own bar and
    time left) does not count, so a slow machine's first run is not stopped for training what is cached after."""
    folder = os.path.join(out, name)
    os.makedirs(folder, exist_ok=True)
    cmd = [
        python,
        "-m",
        study_module(name),
        *(["--quick"] if quick else []),
        "--out",
        folder,
        "--seed",
        str(seed),
    ]  # every study entry point takes --quick, --out and --seed (the contract)
    env = dict(
        os.environ,
        PYTHONUNBUFFERED="1",
        MPLBACKEND="Agg",
        UNITSCOPE_PROGRESS="log",
        UNITSCOPE_PROGRESS_SECONDS=os.environ.get("UNITSCOPE_PROGRESS_SECONDS", "5"),
    )
    t0 = time.perf_counter()
    status = {"command": " ".join(["python"] + cmd[1:])}
    log_path = os.path.join(folder, "log.txt")
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        rc, training, tick = None, 0.0, t0
        try:
            while True:
                try:
                    rc = proc.wait(timeout=1.0)
                    break
                except subprocess.TimeoutExpired:
                    line, now = _last_line(log_path), time.perf_counter()
                    if _is_training(line):
                        training += now - tick
                    tick = now
                    if timeout is not None and now - t0 - training > timeout:
                        proc.kill()
                        proc.wait()
                        rc = None
                        break
                    if on_progress is not None:
                        on_progress(line)
        finally:
            if proc.poll() is None:  # interrupted (Ctrl-C): stop the study we started
                proc.kill()
                proc.wait()
    status["seconds"] = round(time.perf_counter() - t0, 1)
    if training:
        status["training_seconds"] = round(training, 1)
    with open(log_path, errors="replace") as f:
        text = f.read()
    last = text.strip().splitlines()[-1] if text.strip() else ""
    if rc is None:
        status.update(
            status="timeout",
            error=f"stopped after {timeout:.0f} s of analysis"
            + (f" (and {training:.0f} s of training, not counted)" if training else "")
            + ": allow more time with --timeout",
        )
    elif rc != 0:
        status.update(status="failed", error=f"exit code {rc}: {last[:300]}")
    else:
        try:
            status["result"] = json.loads(last)
            status["status"] = "ok"
        except ValueError:
            status.update(status="incomplete", error="the last line printed is not a JSON object")
    status["log_tail"] = _tail(text)
    return status


def _save_status(out: str, status: dict) -> None:
    from .core.files import atomic_write_text

    atomic_write_text(os.path.join(out, "demo_status.json"), json.dumps(status, indent=1, default=str))


def run_all(
    *,
    quick: bool = False,
    out: str = "unitscope-out",
    seed: int = 0,
    only=None,
    timeout: float | None = None,
    echo=print,
) -> dict:
    """Run the digits job and every available study into ``out``, then build ``out/report.html``."""
    from tqdm.auto import tqdm

    from .core.errors import UnitscopeError
    from .report.html import build_report

    t_start = time.perf_counter()
    if timeout is None:
        timeout = QUICK_TIMEOUT if quick else FULL_TIMEOUT
    os.makedirs(out, exist_ok=True)
    names = ["digits"] + available_studies()
    if only:
        unknown = [n for n in only if n not in ["digits", *STUDY_ORDER]]
        if unknown:
            raise UnitscopeError(f"unknown study {unknown[0]!r}", hint=f"choose from digits, {', '.join(STUDY_ORDER)}")
        names = [n for n in names if n in only]
    run_status = {"quick": quick, "seed": seed, "studies": {n: {"status": "pending"} for n in names}}
    _save_status(out, run_status)
    tty = sys.stderr.isatty()
    outer = tqdm(names, desc="unitscope demo", unit="study", disable=not tty, dynamic_ncols=True)
    echo(
        f"unitscope demo{' --quick' if quick else ''}: {len(names)} parts ({', '.join(names)}) into {out}/; "
        "small models are trained on first use and then loaded from the cache"
        + ("" if tty else f"; the running study's progress is printed every {ECHO_SECONDS:.0f} s")
    )
    for k, name in enumerate(outer):
        outer.set_description(f"unitscope demo: {name}")
        echo(f"\n=== {name} ({k + 1}/{len(names)}) ===")
        sys.stdout.flush()
        if name == "digits":
            t0 = time.perf_counter()
            try:
                result = digits_study(os.path.join(out, "digits"), quick=quick, seed=seed, echo=echo)
                st = {"status": "ok", "result": {k: result[k] for k in ("test_accuracy", "max_gap")}}
            except Exception as e:  # reported in the report; the other studies still run
                st = {"status": "failed", "error": f"{type(e).__name__}: {e}"}
            st["seconds"] = round(time.perf_counter() - t0, 1)
            st["command"] = f"unitscope demo{' --quick' if quick else ''} (digits job, in-process)"
        else:
            st = run_study(
                name, out, quick=quick, seed=seed, timeout=timeout, on_progress=_progress_shower(name, outer, tty, echo)
            )
            echo(
                f"{name}: {st['status']} in {st['seconds']:.0f} s"
                + (f" — {st['error']}" if st.get("error") else "")
                + f" (log: {os.path.join(out, name, 'log.txt')})"
            )
        run_status["studies"][name] = st
        _save_status(out, run_status)
    outer.close()
    run_status["seconds"] = round(time.perf_counter() - t_start, 1)
    _save_status(out, run_status)
    path = build_report(out)
    summary = {
        "report": str(path),
        "seconds": run_status["seconds"],
        "studies": {n: s["status"] for n, s in run_status["studies"].items()},
    }
    echo(f"\nreport: {path} ({run_status['seconds']:.0f} s in all)")
    print(json.dumps(summary))
    return summary


def _progress_shower(name: str, outer, tty: bool, echo):
    """On a terminal: the study's last log line beside the demo's bar; in a log: that line every ECHO_SECONDS."""
    state = {"t": time.perf_counter(), "line": ""}

    def show(line: str) -> None:
        line = line.strip()
        if not _is_step(line):
            return
        if tty:
            outer.set_postfix_str(line[:70], refresh=True)
        elif time.perf_counter() - state["t"] >= ECHO_SECONDS and line != state["line"]:
            echo(f"  [{name}] {line[:160]}")
            state.update(t=time.perf_counter(), line=line)

    return show
