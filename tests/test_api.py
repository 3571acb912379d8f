"""The public API is one coherent surface: keyword-only defaults, one name per concept, one shape rule."""

import inspect

import pytest
import torch
import torch.nn as nn

import unitscope as us


def _public_callables():
    """Every function and public method reachable from ``unitscope.__all__`` (classes: their public methods)."""
    for name in us.__all__:
        obj = getattr(us, name)
        if inspect.ismodule(obj) and callable(obj):  # us.atlas: the package, called as its function
            obj = getattr(obj, name)
        if inspect.isfunction(obj):
            yield name, obj
        elif inspect.isclass(obj) and not issubclass(obj, BaseException):
            for attr, fn in vars(obj).items():
                if inspect.isfunction(fn) and not attr.startswith("_"):
                    yield f"{name}.{attr}", fn


PUBLIC = sorted(_public_callables())


def test_the_public_surface_is_not_empty():
    names = {n for n, _ in PUBLIC}
    assert {"conductance", "attribute", "scan", "neuron_conductance", "ScanResult.top", "Scores.top"} <= names


@pytest.mark.parametrize("name,fn", PUBLIC, ids=[n for n, _ in PUBLIC])
def test_every_parameter_with_a_default_is_keyword_only(name, fn):
    positional = [
        p.name
        for p in inspect.signature(fn).parameters.values()
        if p.default is not p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    assert not positional, f"{name}: {positional} should be keyword-only (after *)"


@pytest.mark.parametrize("name,fn", PUBLIC, ids=[n for n, _ in PUBLIC])
def test_method_is_the_rule_and_scores_what_to_compute(name, fn):
    params = inspect.signature(fn).parameters
    assert "methods" not in params, f"{name}: the scores to compute are called scores="
    if "method" in params:  # Captum's name for path.method (None: the path's), or a rule of its own
        assert params["method"].default in ("gausslegendre", "adaptive") or (
            params["method"].default is None and "path" in params
        ), f"{name}: method= is the integration rule"


#: The functions that integrate along the path: each takes path=, a PathConfig.
ON_THE_PATH = {"attribute", "conductance", "internal_influence", "neuron_conductance", "scan", "atlas"}
#: Those that mirror Captum's methods also take Captum's names for four of its fields.
CAPTUM_LIKE = {"attribute", "conductance", "internal_influence", "neuron_conductance"}


@pytest.mark.parametrize("name,fn", PUBLIC, ids=[n for n, _ in PUBLIC])
def test_no_public_function_takes_more_than_15_parameters(name, fn):
    """Settings travel as one object per concern (PathConfig, StreamConfig, SynthesisConfig, SamplerConfig);
    Captum's spellings of path fields (baselines, n_steps, method, internal_batch_size) are that object's fields
    under another name, so they are not counted."""
    from unitscope.attribution.config import CAPTUM_NAMES

    params = [p for p in inspect.signature(fn).parameters if p != "self"]
    own = [p for p in params if not (name in CAPTUM_LIKE and p in CAPTUM_NAMES)]
    assert len(own) <= 15, f"{name} takes {len(own)} parameters: {own}"


def test_path_settings_travel_as_one_object():
    from unitscope.attribution.config import CAPTUM_NAMES

    for name in sorted(ON_THE_PATH):
        params = inspect.signature(getattr(us, name)).parameters
        assert "path" in params and params["path"].default is None, name
        moved = {"rtol", "gap_warning", "captum_compatible", "unit_batch_size"} & set(params)
        assert not moved, f"{name}: {moved} are PathConfig fields"
        captum = set(CAPTUM_NAMES) & set(params)
        assert captum == (set(CAPTUM_NAMES) if name in CAPTUM_LIKE else set()), (name, captum)
    net = nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 2))
    x = torch.randn(2, 3)
    a = us.conductance(net, x, ["1"], target=0, n_steps=8, method="gausslegendre")
    b = us.conductance(net, x, ["1"], target=0, path=us.PathConfig(n_steps=8, method="gausslegendre"))
    c = us.conductance(net, x, ["1"], target=0, n_steps=8, path=us.PathConfig(method="gausslegendre"))
    assert torch.equal(a["1"], b["1"]) and torch.equal(a["1"], c["1"])
    with pytest.raises(us.UnitscopeError, match="disagrees"):
        us.conductance(net, x, ["1"], target=0, n_steps=8, path=us.PathConfig(n_steps=16))
    with pytest.raises(us.UnitscopeError, match="different objects"):
        us.conductance(net, x, ["1"], target=0, baselines=torch.zeros(1, 3), path=us.PathConfig(baselines=0.5))
    with pytest.raises(us.UnitscopeError, match="PathConfig"):
        us.scan(net, [x], ["1"], by=None, path={"n_steps": 8})
    with pytest.raises(TypeError):
        us.scan(net, [x], ["1"], by=None, n_steps=8)  # scan and atlas take path= alone
    with pytest.raises(us.UnitscopeError, match="n_steps"):
        us.PathConfig(n_steps=1)
    with pytest.raises(us.UnitscopeError, match="integration method"):
        us.PathConfig(method="simpson")


def test_layers_is_positional_or_keyword_everywhere():
    """``us.conductance(model, x, layers)``, ``us.scan(model, loader, layers)``, ``us.atlas(model, data, layers)``:
    the layers a function needs are named or not, as the caller likes (a ``layer`` with a default is a label, and
    keyword-only as every parameter with a default)."""
    for name, fn in PUBLIC:
        params = inspect.signature(fn).parameters
        for p in ("layers", "layer"):
            if p in params and params[p].default is params[p].empty:
                assert params[p].kind is params[p].POSITIONAL_OR_KEYWORD, f"{name}: {p}"


def test_a_new_score_is_one_registry_entry(monkeypatch):
    from unitscope.attribution import scores

    grad = scores.Score("gradient", on_path=False, target=True, grad_at_x=True, values=lambda sums: sums.grad_at_x)
    monkeypatch.setitem(scores.REGISTRY, "gradient", grad)
    net = nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 2))
    x = torch.randn(2, 3)
    out = us.attribute(net, x, ["1"], scores=["gradient", "grad_x_activation", "activation"], target=1)
    torch.testing.assert_close(out["grad_x_activation"]["1"], out["gradient"]["1"] * out["activation"]["1"])


def test_objectives_are_exported():
    assert us.objectives.channel("1", 0).layers == ("1",)


def test_shapes_examples_first():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 2))
    x = torch.randn(4, 3)
    s = us.conductance(net, x, ["1"], target=0, n_steps=8, path=us.PathConfig(gap_warning=None))
    assert s["1"].shape == (4, 5) and s.top("1", k=2).indices.shape == (4, 2)
    assert us.ablation_scores(net, x, "1", target=0).shape == (4, 5)
    assert us.neuron_conductance(net, x, "1", [0, 2, 4], target=0, n_steps=8).shape == (4, 3, 3)
    r = us.scan(net, [(x, torch.tensor([0, 1, 0, 1]))], ["1"], top_k=2, progress=False)
    assert r.top("1").indices.shape == (5, 2)  # the stated exception: units first, a scan has no example dim


def test_no_deprecated_names_are_left():
    from unitscope.attribution import scores

    net = nn.Sequential(nn.Linear(3, 5), nn.ReLU())
    s = us.activation(net, torch.randn(2, 3), ["1"])
    r = us.scan(net, [torch.randn(2, 3)], ["1"], by=None, top_k=1, progress=False)
    assert s.score == "activation" and not hasattr(s, "method") and not hasattr(r, "methods")
    assert not hasattr(scores, "METHODS")


# --- the command line: one definition of every flag ---------------------------------------------------------------


def _subparsers():
    from unitscope.cli.app import build_parser

    parser = build_parser()
    (sub,) = [a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"]
    return dict(sub.choices)


def test_every_registered_subcommand_has_help_and_the_common_flags():
    subs = _subparsers()
    assert {"demo", "layers", "importance", "visualize", "inverse-set", "scan", "report"} <= set(subs)
    for name, p in subs.items():
        flags = {s for a in p._actions for s in a.option_strings}
        passthrough = any(a.dest == "rest" for a in p._actions)  # parses its own options (atlas, for now)
        if name not in ("report", "demo") and not passthrough:
            assert {"--device", "--seed", "--out"} <= flags, name


def test_a_shared_flag_has_one_meaning_everywhere():
    from unitscope.cli.options import OPTIONS

    shared = {flags[0]: kw.get("help") for flags, kw in OPTIONS.values() if flags[0].startswith("--")}
    seen = {}
    for name, p in _subparsers().items():
        for a in p._actions:
            for s in a.option_strings:
                if s in shared:
                    assert a.help == shared[s], (name, s)
                    seen.setdefault(s, set()).add(name)
    # the flags that drifted before: one text for importance and scan
    for flag in ("--target", "--scores", "--method", "--n-steps", "--internal-batch-size", "--layers"):
        assert {"importance", "scan"} <= seen[flag], flag
    assert "--batch-size" in {s for a in _subparsers()["scan"]._actions for s in a.option_strings}
    assert "--rule" not in {s for p in _subparsers().values() for a in p._actions for s in a.option_strings}


def test_target_vocabulary_is_the_same_in_importance_and_scan():
    subs = _subparsers()
    for name in ("importance", "scan"):
        p = subs[name]
        assert p.parse_args(["digits-cnn", "digits", "--layers", "x"]).target == "top"
        assert p.parse_args(["digits-cnn", "digits", "--layers", "x", "--target", "label"]).target == "label"
        assert p.parse_args(["digits-cnn", "digits", "--layers", "x", "--target", "3"]).target == 3
        with pytest.raises(SystemExit):
            p.parse_args(["digits-cnn", "digits", "--layers", "x", "--target", "predicted"])


def test_scan_help_without_arguments_and_the_module_entry_point_errors_in_one_line():
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "unitscope", "scan", "--help"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0 and "--internal-batch-size" in proc.stdout and "reviews" in proc.stdout
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "unitscope.cli.scan",
            "digits-cnn",
            "movie-reviews",
            "--out",
            "/nonexistent-unitscope/x",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr


def test_results_show_themselves_in_a_notebook():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 2))
    x = torch.randn(4, 3)
    html = us.conductance(net, x, ["1", "2"], target=0, n_steps=8, path=us.PathConfig(gap_warning=None))._repr_html_()
    assert html.startswith("<table>") and "<td>1</td>" in html and "<td>2</td>" in html and "%" in html
    r = us.scan(
        net,
        [(x, torch.tensor([0, 1, 0, 1]))],
        ["1"],
        scores=["activation", "conductance"],
        top_k=2,
        path=us.PathConfig(n_steps=4),
        progress=False,
    )
    html = r._repr_html_()
    assert html.count("<tr>") == 3 and "<td>conductance</td>" in html and "4 examples" in html


# --- the house: no import cycles -----------------------------------------------------------------------------------


def _import_graph(toplevel_only: bool) -> dict:
    import ast
    import pathlib

    root = pathlib.Path(us.__file__).parent
    mods = {}
    for p in root.rglob("*.py"):
        parts = list(p.relative_to(root.parent).with_suffix("").parts)
        mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    graph = {}
    for m, p in mods.items():
        pkg = m if p.name == "__init__.py" else m.rsplit(".", 1)[0]
        tree = ast.parse(p.read_text())
        out = set()
        for n in tree.body if toplevel_only else ast.walk(tree):
            if isinstance(n, ast.ImportFrom):
                base = pkg.split(".")[: len(pkg.split(".")) - max(n.level - 1, 0)] if n.level else []
                target = ".".join(base + ([n.module] if n.module else []))
                cands = [target] + [f"{target}.{a.name}" for a in n.names]
            elif isinstance(n, ast.Import):
                cands = [a.name for a in n.names]
            else:
                continue
            out |= {c for c in cands if c in mods and c != m}
        graph[m] = out
    return graph


def _cycles(graph) -> list:
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles():
    assert _cycles(_import_graph(toplevel_only=True)) == []
    # not even through imports inside functions, in the attribution core, data-scale work and synthesis
    inner = [
        c
        for c in _cycles(_import_graph(toplevel_only=False))
        if any(m.split(".")[1] in ("core", "attribution", "data", "synthesis", "cli") for m in c)
    ]
    assert inner == [], inner
