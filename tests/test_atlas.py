"""The unit atlas on a tiny conv net: schema, exemplars and importance against brute force, dead units, resume,
1 vs 2 processes, the model untouched, and the HTML page in headless Chromium."""

import json
import math
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn as nn

import unitscope as us
from unitscope.atlas import Atlas

PATH = us.PathConfig(method="gausslegendre", n_steps=6, unit_batch_size=3)
KW = dict(
    top_k=3, path=PATH, synthesis=us.SynthesisConfig(iam_steps=6, inverse_samples=2, inverse_steps=8), progress=False
)
LAYERS = ["1", "4"]


def tiny_net() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, 5), nn.ReLU(), nn.Linear(5, 3)
    )
    with torch.no_grad():  # channel 3 of layer "1" is dead: zero weights, negative bias
        net[0].weight[3].zero_()
        net[0].bias[3] = -1.0
    return net.eval()


def tiny_data(n: int = 30):
    g = torch.Generator().manual_seed(1)
    return torch.rand(n, 1, 6, 6, generator=g), torch.randint(0, 3, (n,), generator=g)


@pytest.fixture(scope="module")
def built():
    torch.set_num_threads(1)
    net = tiny_net()
    x, y = tiny_data()
    return net, x, y, us.atlas(net, (x, y), layers=LAYERS, **KW)


def test_schema_and_round_trip(built, tmp_path):
    net, x, y, a = built
    assert isinstance(a, Atlas) and a.layers == LAYERS and len(a.units) == 4 + 5
    path = a.save(tmp_path / "atlas")
    blob = json.loads(Path(path).read_text())
    assert {"model", "data", "layers", "units"} <= set(blob)
    for u in blob["units"]:
        assert {"layer", "unit", "importance", "selectivity", "rs", "exemplars", "synthetic", "faithfulness"} <= set(u)
        assert len(u["exemplars"]) == 6
        assert all({"index", "activation", "conductance"} <= set(e) for e in u["exemplars"])
        if not u["dead"]:
            iam = u["faithfulness"]["iam"]
            assert 1 <= iam["rank"] <= (4 if u["layer"] == "1" else 5) and -1 <= iam["cosine"] <= 1
            assert 0 <= u["rs"] <= 1
            assert [b["band"] for b in u["synthetic"]["inverse"]] == ["p50-75", "p90-99", "above-max"]
            for band in u["synthetic"]["inverse"]:  # a sample lies in its band (checked on a fresh pass)
                for f in u["faithfulness"]["inverse"]:
                    if f["band"] == band["band"]:
                        assert band["a"] - 1e-6 <= f["activation_mean"] <= (band["b"] or math.inf) + 1e-6
    back = Atlas.load(tmp_path / "atlas")
    assert back.units == blob["units"] and set(back.tensors) == set(a.tensors)
    assert back.tensors["1/iam"].shape == (4, 1, 6, 6)
    assert "<table>" in a._repr_html_()


def test_exemplars_are_the_brute_force_top_k(built):
    net, x, y, a = built
    with torch.no_grad():
        acts = {"1": net[:2](x).mean((2, 3)), "4": net[:5](x)}
    for u in a.units:
        col = acts[u["layer"]][:, u["unit"]]
        by_act = [e for e in u["exemplars"] if e["by"] == "activation"]
        if u["dead"]:
            assert all(e["activation"] == 0 for e in by_act)
            continue
        want = torch.argsort(col, descending=True, stable=True)[:3]
        assert [e["index"] for e in by_act] == want.tolist()
        assert [e["activation"] for e in by_act] == pytest.approx(col[want].tolist(), rel=1e-5)


def test_importance_is_the_direct_conductance_mean(built):
    net, x, y, a = built
    s = us.conductance(net, x, layers=LAYERS, n_steps=6, method="gausslegendre")
    for u in a.units:
        t = s[u["layer"]]
        per_unit = t.flatten(2).sum(2) if t.dim() > 2 else t
        c = per_unit[:, u["unit"]]
        assert u["importance"]["conductance"] == pytest.approx(float(c.mean()), rel=1e-4, abs=1e-7)
        top = per_unit.topk(min(5, per_unit.shape[1]), dim=1).indices
        share = float((top == u["unit"]).any(1).float().mean())
        assert u["importance"]["top_k_share"] == pytest.approx(share)
        by_cond = [e for e in u["exemplars"] if e["by"] == "conductance"]
        assert [e["index"] for e in by_cond] == torch.argsort(c, descending=True, stable=True)[:3].tolist()


def test_exemplar_pictures_are_neuron_conductance(built):
    """The batched (paired) per-input conductance of each exemplar equals neuron_conductance on it alone."""
    net, x, y, a = built
    for layer, unit in [("1", 0), ("1", 2), ("4", 4)]:
        card = a.unit(layer, unit)
        pics = a.tensors[f"{layer}/exemplar_attr"][unit]
        for j, e in enumerate(card["exemplars"]):
            want = us.neuron_conductance(
                net, x[e["index"] : e["index"] + 1], layer, [unit], n_steps=6, method="gausslegendre"
            )
            torch.testing.assert_close(pics[j], want[0, 0], rtol=1e-4, atol=1e-6)
            if e["by"] == "activation":
                assert e["conductance"] == pytest.approx(float(want.sum()), rel=1e-4, abs=1e-6)


def test_dead_unit_is_marked_and_gets_no_synthetic_inputs(built):
    net, x, y, a = built
    dead = [(u["layer"], u["unit"]) for u in a.units if u["dead"]]
    assert ("1", 3) in dead
    card = a.unit("1", 3)
    assert card["synthetic"] == {"skipped": "dead: its activation is 0 on every example"}
    assert card["rs"] is None and card["importance"]["conductance"] == 0 and card["faithfulness"] == {}
    assert torch.isnan(a.tensors["1/iam"][3]).all() and not torch.isnan(a.tensors["1/iam"][0]).any()


def test_model_untouched():
    net = tiny_net().train()
    net[3].weight.requires_grad_(False)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x, y = tiny_data(12)
    us.atlas(net, (x, y), layers=["1"], **KW)
    assert net.training and not net[3].weight.requires_grad and net[0].weight.requires_grad
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert all(p.grad is None for p in net.parameters())
    assert all(not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks for m in net.modules())


class FlakyData(torch.utils.data.Dataset):
    """Raises once, at example ``fail_at``: a run killed in the middle of the scan."""

    def __init__(self, x, y, fail_at=None):
        self.x, self.y, self.fail_at = x, y, fail_at

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        if self.fail_at is not None and i == self.fail_at:
            self.fail_at = None
            raise KeyboardInterrupt("killed")
        return self.x[i], self.y[i]


def test_resume_after_a_killed_run_gives_the_same_atlas(tmp_path):
    net = tiny_net()
    x, y = tiny_data()
    ref = us.atlas(
        net,
        FlakyData(x, y),
        layers=LAYERS,
        stream=us.StreamConfig(batch_size=4, checkpoint_every=1, checkpoint=tmp_path / "ref.ck"),
        **KW,
    )
    flaky = FlakyData(x, y, fail_at=17)
    stream = us.StreamConfig(batch_size=4, checkpoint_every=1, checkpoint=tmp_path / "ck")
    with pytest.raises(KeyboardInterrupt):
        us.atlas(net, flaky, layers=LAYERS, stream=stream, **KW)
    assert (tmp_path / "ck").exists()
    again = us.atlas(net, flaky, layers=LAYERS, stream=stream, **KW)
    assert json.dumps(again.units) == json.dumps(ref.units)


WORKER = r"""
import os, sys, torch, torch.distributed as dist
sys.path.insert(0, sys.argv[2])
import test_atlas as t
import unitscope as us
torch.set_num_threads(1)
if "RANK" in os.environ:
    dist.init_process_group("gloo")
x, y = t.tiny_data()
a = us.atlas(t.tiny_net(), (x, y), layers=t.LAYERS,
             stream=us.StreamConfig(group=dist.group.WORLD if dist.is_initialized() else None), **t.KW)
if not dist.is_initialized() or dist.get_rank() == 0:
    a.save(sys.argv[1])
if dist.is_initialized():
    dist.destroy_process_group()
"""


def _close(a, b, path="") -> list[str]:
    if isinstance(a, float) or isinstance(b, float):
        ok = a == b or (a is not None and b is not None and math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-7))
        return [] if ok else [f"{path}: {a} != {b}"]
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):
            return [f"{path}: keys {sorted(set(a) ^ set(b))}"]
        return [d for k in a for d in _close(a[k], b[k], f"{path}.{k}")]
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{path}: lengths {len(a)} != {len(b)}"]
        return [d for i, (p, q) in enumerate(zip(a, b)) for d in _close(p, q, f"{path}[{i}]")]
    return [] if a == b else [f"{path}: {a!r} != {b!r}"]


@pytest.mark.slow
def test_one_and_two_processes_give_the_same_atlas(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    here = str(Path(__file__).parent)
    env = dict(
        os.environ,
        OMP_NUM_THREADS="1",
        PYTHONPATH=os.pathsep.join([str(Path(us.__file__).parents[1]), os.environ.get("PYTHONPATH", "")]),
    )
    one = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "one"), here], env=env, capture_output=True, text=True, timeout=300
    )
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            str(script),
            str(tmp_path / "two"),
            here,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert two.returncode == 0, two.stderr[-3000:]
    a = json.loads((tmp_path / "one" / "atlas.json").read_text())
    b = json.loads((tmp_path / "two" / "atlas.json").read_text())
    for blob in (a, b):
        blob.pop("seconds", None)
    assert _close(a["units"], b["units"]) == []  # the differences, if any, readable
    assert json.dumps(a["units"]) == json.dumps(b["units"])  # and none: every generated input is seeded by unit


def _same_tensors(a, b) -> list[str]:
    return [k for k in a.tensors if not torch.equal(a.tensors[k].nan_to_num(7.0), b.tensors[k].nan_to_num(7.0))]


def test_the_chunk_size_does_not_change_the_atlas(built):
    """Units one at a time, three at a time (``built``) and all at once give the same JSON, bit for bit: every
    IAM image, inverse-set code and augmentation is seeded by its unit, and every model call has the same number of
    rows (atlas.work.BLOCK, SYNTH_BLOCK), so the CPU kernels round alike."""
    net, x, y, a = built
    for unit_batch in (1, 64):
        b = us.atlas(net, (x, y), layers=LAYERS, **dict(KW, path=replace(PATH, unit_batch_size=unit_batch)))
        assert _close(b.units, a.units) == [], unit_batch
        assert json.dumps(b.units) == json.dumps(a.units), unit_batch
        assert sorted(b.tensors) == sorted(a.tensors) and _same_tensors(a, b) == [], unit_batch
    live = [u for u in a.units if not u["dead"]]
    assert live and all(u["synthetic"]["iam"]["activation"] is not None for u in live)  # not vacuous
    # a chosen subset: the same cards, its tensors one row per card
    sub = us.atlas(net, (x, y), layers=LAYERS, units={"1": [2], "4": [0, 4]}, **KW)
    assert [(u["layer"], u["unit"], u["row"]) for u in sub.units] == [("1", 2, 0), ("4", 0, 0), ("4", 4, 1)]
    for u in sub.units:
        full = a.unit(u["layer"], u["unit"])
        assert json.dumps({k: v for k, v in u.items() if k != "row"}) == json.dumps(
            {k: v for k, v in full.items() if k != "row"}
        )
    assert torch.equal(sub.tensors["4/iam"], a.tensors["4/iam"][[0, 4]])
    assert sub.tensors["1/exemplar_inputs"].shape[0] == 1
    with pytest.raises(us.UnitscopeError, match="out of range"):
        us.atlas(net, (x, y), layers=LAYERS, units={"1": [9]}, **KW)


# ------------------------------------------------------------------------------------- the page, the CLI --
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--enable-logging=stderr",
    "--v=0",
    "--virtual-time-budget=5000",
    "--dump-dom",
]


def _dom(url: str, profile: Path) -> tuple[str, list[str]]:
    res = subprocess.run(
        [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", url], capture_output=True, text=True, timeout=90
    )
    assert res.returncode == 0, res.stderr[-2000:]
    console = [ln for ln in res.stderr.splitlines() if ":CONSOLE" in ln or "Uncaught" in ln]
    return res.stdout, console


def _body(dom: str, attr: str) -> str:
    import re

    m = re.search(rf'<body[^>]*\bdata-{attr}="([^"]*)"', dom)
    assert m, f"data-{attr} missing: the page's script did not run"
    return m.group(1)


def test_page_files(built, tmp_path):
    from unitscope.report.atlas_html import render_atlas, write_atlas_manifest
    from unitscope.report.manifest import read_entry

    net, x, y, a = built
    page = render_atlas(a, tmp_path)
    html = page.read_text()
    assert "__DATA__" not in html and len(html) < 200_000
    blob = json.loads(html.split('<script type="application/json" id="data">')[1].split("</script>")[0])
    assert len(blob["units"]) == len(a.units)
    from PIL import Image

    for name in ("L0_exemplars.png", "L0_attr.png", "L0_iam.png", "L0_inverse.png"):
        with Image.open(tmp_path / "img" / name) as im:
            assert im.size[1] == 4 * 40  # one row of tiles per unit of layer "1"
    entry = read_entry(write_atlas_manifest(a, tmp_path))
    assert entry["links"][0]["path"] == "index.html" and entry["headlines"]


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} is absent (apt-get install -y chromium)")
def test_page_in_chromium_sorts_filters_and_decodes_images(built, tmp_path):
    from unitscope.report.atlas_html import render_atlas

    net, x, y, a = built
    url = render_atlas(a, tmp_path / "page").resolve().as_uri()
    dom, console = _dom(url + "#sort=importance:desc&card=1:0", tmp_path / "p1")
    assert console == []
    assert int(_body(dom, "rows")) == len(a.units)
    shown = [float(v) for v in _body(dom, "order").split("|")]
    want = sorted((u["importance"]["conductance"] for u in a.units), reverse=True)[: len(shown)]
    assert shown == pytest.approx(want, rel=1e-2) and shown == sorted(shown, reverse=True)
    assert _body(dom, "card") == "1:0"
    sheets = 3 + any(b["n"] for b in a.unit("1", 0)["synthetic"]["inverse"])  # exemplars, attr, IAM (+ inverse)
    assert int(_body(dom, "images")) == sheets and int(_body(dom, "images-broken")) == 0
    dom, console = _dom(url + "#sort=unit:asc&filter=dead", tmp_path / "p2")
    assert console == [] and int(_body(dom, "rows")) == 1 and _body(dom, "order") == "3"
    dom, _ = _dom(url + "#layer=4&hidedead=1&sort=unit:asc", tmp_path / "p3")
    assert int(_body(dom, "rows")) == 5 and _body(dom, "order") == "0|1|2|3|4"


def test_broken_sheet_is_seen(built, tmp_path):
    """The image check can fail: a corrupt sprite sheet counts as broken."""
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is absent")
    from unitscope.report.atlas_html import render_atlas

    net, x, y, a = built
    page = render_atlas(a, tmp_path / "page")
    (page.parent / "img" / "L0_iam.png").write_bytes(b"not a png")
    dom, _ = _dom(page.resolve().as_uri() + "#card=1:0", tmp_path / "p")
    assert int(_body(dom, "images-broken")) == 1


def test_cli_registers_atlas(capsys):
    from unitscope.cli import main

    assert main(["atlas", "digits-cnn", "photos", "--quick"]) == 2  # a clear error, not a traceback
    assert "does not go with" in capsys.readouterr().err


def test_a_wide_layer_splits_its_sheets_and_opens_in_chromium(tmp_path):
    """2,304 units: sprite sheets of at most 256 units per file; the table lists every unit; a card deep in the
    layer decodes its tiles from the ninth file."""
    from unitscope.report import atlas_html

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 2304, 4), nn.ReLU(), nn.Flatten(), nn.Linear(2304, 2)).eval()
    x, y = torch.rand(6, 1, 4, 4), torch.arange(6) % 2
    a = us.atlas(
        net,
        (x, y),
        layers=["1"],
        top_k=1,
        path=us.PathConfig(n_steps=2, unit_batch_size=2304),
        synthesis=us.SynthesisConfig(synthesize=False),
        progress=False,
    )
    page = atlas_html.render_atlas(a, tmp_path / "page", tile=8)
    sheets = sorted(p.name for p in (page.parent / "img").iterdir() if p.name.startswith("L0_exemplars"))
    assert len(sheets) == 9
    from PIL import Image

    with Image.open(page.parent / "img" / "L0_exemplars_8.png") as im:
        assert im.size == (2 * 8, 2304 % 256 * 8 or 256 * 8)
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is absent")
    dom, console = _dom(page.resolve().as_uri() + "#sort=unit:asc&open=2300", tmp_path / "p")
    assert console == [] and int(_body(dom, "rows")) == 2304 and _body(dom, "card") == "1:2300"
    assert int(_body(dom, "images")) == 2 and int(_body(dom, "images-broken")) == 0  # exemplars, attr
