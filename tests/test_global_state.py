"""Nothing global changes: thread count, grad mode, default dtype, warning filters, the global RNGs (torch, numpy,
random) and matplotlib's backend are the same before and after every public function (tiny models), importing any
module of unitscope, and every study's entry point.

Study entry points: the full runs take minutes, so each study's ``main`` runs for real up to its first heavy call
(loading or training a zoo model, the data), which is replaced by one that records the process state and raises:
by then every study has set what it sets (threads, seed, grad mode, warning filters), and the test checks that all
of it is undone — on the error path, the harder one. ``demo.run`` (the digits job) and ``unitscope layers`` run
whole.
"""

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

import unitscope as us
from unitscope.core.state import process_snapshot
from unitscope.demo import study_module
from unitscope.synthesis.generators import FFTImageGenerator

# third-party imports that change process state themselves, done before anything is measured: sympy adds a warning
# filter when torch first imports it (lazily, inside the first FFT-parameterized maximization); scikit-learn's first
# import (through the digits data) adds warning filters and draws on Python's RNG
import sklearn.datasets  # noqa: E402,F401
import sympy  # noqa: E402,F401

ROOT = Path(__file__).resolve().parents[1]


def differences(before: dict, after: dict) -> list[str]:
    out = []
    for key in before:
        a, b = before[key], after[key]
        if key in ("torch_rng",):
            same = torch.equal(a, b)
        elif key == "cuda_rng":
            same = len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))
        elif key == "numpy_rng":
            same = all(np.array_equal(x, y) for x, y in zip(a, b))
        else:
            same = a == b
        if not same:
            out.append(key)
    return out


def tiny():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 6 * 6, 4))
    x, y = torch.rand(3, 1, 6, 6), torch.tensor([0, 1, 1])
    return net, x, y


def _ablate(net, x, y):
    with us.ablate(net, {"1": [0]}):
        net(x)


def _relative_unit_error(net, x):
    s = us.conductance(net, x, ["1"], target=0, n_steps=4)
    return us.relative_unit_error(s["1"], s.unit_error["1"])


CALLS = {
    "conductance": lambda net, x, y: us.conductance(net, x, ["1"], target=0, n_steps=4),
    "internal_influence": lambda net, x, y: us.internal_influence(net, x, ["1"], target=0, n_steps=4),
    "grad_x_activation": lambda net, x, y: us.grad_x_activation(net, x, ["1"], target=0),
    "activation": lambda net, x, y: us.activation(net, x, ["1"]),
    "attribute": lambda net, x, y: us.attribute(
        net, x, ["1", "3"], scores=["conductance", "activation"], method="adaptive", n_steps=8
    ),
    "neuron_conductance": lambda net, x, y: us.neuron_conductance(net, x, layer="1", units=[0, 1], target=0, n_steps=4),
    "ablation_scores": lambda net, x, y: us.ablation_scores(net, x, "1", target=0),
    "ablate": _ablate,
    "scan": lambda net, x, y: us.scan(
        net,
        [(x, y), (x, y)],
        ["1"],
        scores=["activation", "conductance"],
        top_k=2,
        path=us.PathConfig(n_steps=4),
        progress=False,
    ),
    "class_selectivity": lambda net, x, y: us.class_selectivity(net, [(x, y)], ["1"], progress=False),
    "activation_maximization": lambda net, x, y: us.activation_maximization(
        net, "1", [0], shape=(1, 6, 6), steps=2, progress=False
    ),
    "independent_am": lambda net, x, y: us.independent_am(net, "1", [0, 1], shape=(1, 6, 6), steps=2, progress=False),
    "maximize": lambda net, x, y: us.maximize(
        net, us.objectives.channel("1", 0), batch=1, shape=(1, 6, 6), steps=2, progress=False
    ),
    "representative_substitution": lambda net, x, y: us.representative_substitution(
        us.independent_am(net, "1", [0, 1], shape=(1, 6, 6), steps=2, progress=False)
    ),
    "sample_inverse_set": lambda net, x, y: us.sample_inverse_set(
        net,
        [("3", 0, -1e3, 1e3)],
        FFTImageGenerator((1, 6, 6)),
        n_samples=4,
        n_seeds=2,
        sampler=us.SamplerConfig(max_seed_steps=3, max_sample_steps=2),
        progress=False,
    ),
    "atlas": lambda net, x, y: us.atlas(
        net,
        (x, y),
        layers=["1"],
        top_k=2,
        share_k=1,
        bins=8,
        path=us.PathConfig(n_steps=4),
        synthesis=us.SynthesisConfig(synthesize=False),
        progress=False,
    ),
    "layer_names": lambda net, x, y: us.layer_names(net),
    "relative_unit_error": lambda net, x, y: _relative_unit_error(net, x),
}


def test_every_public_function_is_checked():
    functions = {n for n in us.__all__ if callable(getattr(us, n)) and not isinstance(getattr(us, n), type)}
    assert functions - set(CALLS) == set(), "add the new public function to CALLS"


@pytest.mark.parametrize("grad", [True, False], ids=["grad-on", "no-grad"])
@pytest.mark.parametrize("name", sorted(CALLS))
def test_public_function_leaves_the_process_as_it_was(name, grad):
    net, x, y = tiny()
    with torch.set_grad_enabled(grad):
        before = process_snapshot()
        CALLS[name](net, x, y)
        after = process_snapshot()
    assert differences(before, after) == []


def test_importing_unitscope_changes_nothing():
    # a fresh interpreter: the third-party packages unitscope imports are imported first (sklearn.linear_model
    # itself draws from Python's random at import); then every module of unitscope, then a figure is drawn
    script = textwrap.dedent("""
        import importlib, pkgutil, sys
        import matplotlib
        matplotlib.use("svg")
        import numpy, pandas, scipy.stats, sklearn.linear_model, sklearn.pipeline, sklearn.preprocessing, sympy, torch
        import tqdm
        sys.path.insert(0, sys.argv[1])
        sys.path.insert(0, sys.argv[2])
        from test_global_state import differences
        from unitscope.core.state import process_snapshot
        before = process_snapshot()
        import unitscope
        names = sorted({m.name for m in pkgutil.walk_packages(unitscope.__path__, "unitscope.")
                        if not m.name.endswith("__main__")})
        for n in names:
            importlib.import_module(n)
        from unitscope.report import attribution_overlay, save_figure
        import tempfile, os
        save_figure(attribution_overlay(numpy.zeros((6, 6, 3), numpy.uint8), torch.ones(3, 6, 6)),
                    os.path.join(tempfile.mkdtemp(), "f.png"))
        print("modules", len(names), "changed", differences(before, process_snapshot()), "backend",
              matplotlib.get_backend())
    """)
    proc = subprocess.run(
        [sys.executable, "-c", script, str(ROOT / "src"), str(ROOT / "tests")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    last = proc.stdout.strip().splitlines()[-1]
    assert "changed [] backend svg" in last, last
    assert int(last.split()[1]) > 40


class Stop(Exception):
    """Raised where a study would start its heavy work."""


def _stopper(seen: dict):
    def stop(*args, **kwargs):
        seen["during"] = process_snapshot()
        raise Stop

    return stop


STUDIES = {  # study → (the attribute its main calls first for heavy work, argv)
    "evaluation": ("unitscope.zoo.digits_data", ["--quick"]),
    "imagenet": ("unitscope.zoo.efficientnet_lite0", ["--quick"]),
    "inverse": ("unitscope.zoo.digits_cnn", ["--quick"]),
    "substitution": ("unitscope.zoo.digits.digits_data", ["--quick"]),
    "transformer": ("unitscope.zoo.minilm.minilm_sentiment", ["--quick"]),
    "sentiment": ("unitscope.studies.sentiment.run", ["--quick"]),
    "scan": ("unitscope.runs.scan.scan_main", ["--quick"]),
}


@pytest.mark.parametrize("study", sorted(STUDIES))
def test_study_entry_point_undoes_what_it_sets(study, tmp_path, monkeypatch):
    import importlib

    target, argv = STUDIES[study]
    module_name, attr = target.rsplit(".", 1)
    seen = {}
    monkeypatch.setattr(importlib.import_module(module_name), attr, _stopper(seen))
    main = importlib.import_module(study_module(study)).main
    threads = torch.get_num_threads()
    with torch.no_grad():  # grad off, 2 threads: a study that turns grad on or sets 1 thread changes something
        torch.set_num_threads(2)
        try:
            before = process_snapshot()
            with pytest.raises(Stop):
                main([*argv, "--out", str(tmp_path / study)])
            after = process_snapshot()
        finally:
            torch.set_num_threads(threads)
    assert "during" in seen, "the study never reached its first heavy call"
    print(study, "set, then undid:", differences(before, seen["during"]))
    assert differences(before, after) == []


def test_studies_that_set_state_really_set_it(tmp_path, monkeypatch):
    # the check above means something: the transformer study does change threads, RNG, grad mode and warnings
    import importlib

    seen = {}
    monkeypatch.setattr(importlib.import_module("unitscope.zoo.minilm"), "minilm_sentiment", _stopper(seen))
    from unitscope.studies import transformer

    with torch.no_grad():
        before = process_snapshot()
        with pytest.raises(Stop):
            transformer.main(
                [
                    "--quick",
                    "--seed",
                    "7",
                    "--threads",
                    "1" if torch.get_num_threads() != 1 else "2",
                    "--out",
                    str(tmp_path),
                ]
            )
    assert {"threads", "grad_enabled", "torch_rng", "warning_filters"} <= set(differences(before, seen["during"]))


def test_demo_digits_job_and_the_cli_leave_the_process_alone(tmp_path, capsys):
    from unitscope import demo
    from unitscope.cli import main

    before = process_snapshot()
    demo.run(n_examples=2, n_steps=8, echo=lambda *a: None)
    assert main(["layers", "digits-cnn"]) == 0
    assert differences(before, process_snapshot()) == []


@pytest.mark.parametrize("factory", ["digits_cnn", "digits_vgg", "efficientnet_lite0"])
def test_zoo_factories_do_not_draw_on_the_global_rng(factory):
    # building a model initialises its weights from the global RNG; the zoo builds its models without touching it
    # (also the sentiment CNN and the MiniLM head — not run here: their recipes may need minutes of training)
    import unitscope.zoo as zoo

    if factory == "efficientnet_lite0":
        pytest.importorskip("timm")
    before = process_snapshot()
    getattr(zoo, factory)()
    assert differences(before, process_snapshot()) == []
