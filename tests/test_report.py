"""The HTML report: rendered from the manifests of a fake results folder (plus one folder without a manifest, shown
through the fallback), self-contained, atomic, readable (sentences as headlines, captions, colour bars, dead units
shown as dead, no raw list cells) and loading cleanly in Chromium."""

import base64
import csv
import io
import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from unitscope.cli import main as cli_main
from unitscope.report import html as report_html
from unitscope.report.figures import attribution_overlay, save_figure, subplots
from unitscope.report.html import build_report, flatten, paper_rows
from unitscope.report.manifest import looks_like_key, write_entry

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
]
ARTIFACTS = Path(os.environ.get("UNITSCOPE_TEST_ARTIFACTS", Path(__file__).resolve().parents[1] / "test-artifacts"))


def _png(path: Path, seed: int, size=(40, 30)) -> None:
    rng = np.random.default_rng(seed)
    Image.fromarray((rng.random((size[1], size[0], 3)) * 255).astype(np.uint8)).save(path)


def fake_results(root: Path, *, broken_image: bool = False) -> Path:
    """Four parts with manifests (one a comparison with the paper, one with dead units, one an atlas link), one
    folder without a manifest (fallback), one failed study, two not run."""
    rng = np.random.default_rng(0)
    d = root / "digits"
    d.mkdir(parents=True)
    json.dump({"test_accuracy": 0.981, "max_gap": 0.0061}, open(d / "digits.json", "w"))
    image = (rng.random((8, 8, 3)) * 255).astype(np.uint8)
    save_figure(attribution_overlay(image, rng.normal(size=(3, 8, 8)), title="digit 3"), d / "digits_example0.png")
    pd.DataFrame(
        {
            "digit": [3, 3],
            "layer": ["features.relu1", "features.relu2"],
            "gap_percent": [0.28, 0.61],
            "top_values": ["[0.1234567890123456, 0.2, 0.3]", "[0.5, 0.25, 0.125]"],
        }
    ).to_csv(d / "digits_top_filters.csv", index=False)
    write_entry(
        d,
        title="Digits CNN: which filters carry each prediction",
        description="Conductance of every filter of five layers for three test digits.",
        headlines=[
            "The digits CNN labels 98.1 % of 360 held-out digits correctly.",
            "Completeness gap at most 0.61 % over 5 layers at 32 path points.",
        ],
        figures=[("digits_example0.png", "Signed conductance over a grey copy of digit 3 (blue +, red −).")],
        tables=[("digits_top_filters.csv", "Top filters per digit and layer")],
        summary="digits.json",
        quick=True,
        scale="3 test digits, 32 path points",
        order=10,
    )

    e = root / "evaluation"
    e.mkdir()
    json.dump({"pearson": {"conductance": 0.7}}, open(e / "evaluation.json", "w"))
    if broken_image:
        (e / "scatter.png").write_bytes(b"\x89PNG\r\n\x1a\nthis is not a png")
    else:
        _png(e / "scatter.png", 2)
    pd.DataFrame({"example": range(50), "pearson": rng.normal(size=50)}).to_csv(e / "per_example.csv", index=False)
    write_entry(
        e,
        title="Conductance vs ablation",
        description="Agreement of each method with ablation.",
        headlines=[
            "Conductance agrees with ablation on the digits CNN (features.relu3, 40 test digits): "
            "mean Pearson r 0.70; the paper reports 0.79 on Inception v1."
        ],
        figures=[("scatter.png", "Method score (x) against ablation score (y), one dot per unit and digit.")],
        tables=[("per_example.csv", "Pearson r per test digit")],
        comparisons=[
            {
                "quantity": "mean Pearson r, conductance vs ablation",
                "ours": 0.7,
                "ours_setting": "digits CNN, features.relu3, 40 test digits",
                "paper": 0.79,
                "paper_setting": "Inception v1, mixed4d, ImageNet validation images",
            }
        ],
        summary="evaluation.json",
        order=20,
    )

    s = root / "substitution"
    s.mkdir()
    pd.DataFrame(
        {
            "layer": ["features.relu1"] * 3,
            "unit": [0, 1, 2],
            "live": [True, False, True],
            "selectivity": [0.31, float("nan"), 0.12],
            "rs_iam": [0.1, float("nan"), 0.05],
        }
    ).to_csv(s / "units.csv", index=False)
    fig, ax = subplots(figsize=(3, 2))
    art = ax.imshow(rng.normal(size=(4, 6)), cmap="viridis")
    fig.colorbar(art, ax=ax)
    save_figure(fig, s / "heat.png")
    write_entry(
        s,
        title="Class selectivity and RS",
        description="Per unit: selectivity and RS.",
        headlines=["2 of 3 units of features.relu1 are live on the 1437 training digits; 1 is dead."],
        figures=[("heat.png", "A heat-map with its colour bar.")],
        tables=[{"path": "units.csv", "caption": "Every unit", "dead": "live"}],
        order=40,
    )

    a = root / "atlas"
    a.mkdir()
    (a / "index.html").write_text("<html><body>atlas</body></html>")
    write_entry(
        a,
        title="Unit atlas",
        description="One page per unit.",
        links=[{"path": "index.html", "text": "open the atlas"}],
        order=90,
    )

    (root / "sentiment").mkdir()  # no manifest: the fallback
    json.dump(
        {
            "test_accuracy": 0.77,
            "pearson": {"conductance": 0.812, "activation": 0.2},
            "paper_pearson": {"conductance": 0.88, "activation": 0.19},
            "seconds": {"agreement": 3.0},
        },
        open(root / "sentiment" / "sentiment.json", "w"),
    )
    _png(root / "sentiment" / "sentiment_division.png", 1, (60, 20))
    with open(root / "sentiment" / "sentiment_agreement.csv", "w") as f:
        f.write(",mean,paper\nconductance,0.812,0.88\nactivation,0.2,0.19\n")
    (root / "sentiment" / "sentiment_agreement.md").write_text("| | mean |\n|---|---|\n| conductance | 0.812 |\n")
    (root / "sentiment" / "sentiment_negation_examples.md").write_text(
        "## probes\n\n- **not good** <script>alert(1)</script>\n  - #12: not[+0.31] good[-0.02]\n"
    )
    (root / "sentiment" / "division_note.html").write_text("<p class='snippet-test'>a snippet</p>")
    (root / "sentiment" / "page.html").write_text("<!DOCTYPE html><html><body>a whole page</body></html>")

    json.dump(
        {
            "quick": True,
            "seed": 0,
            "seconds": 42.0,
            "studies": {
                "digits": {"status": "ok", "seconds": 3.1},
                "evaluation": {"status": "ok", "seconds": 20.0},
                "imagenet": {
                    "status": "failed",
                    "seconds": 1.0,
                    "error": "exit code 1: RuntimeError: boom",
                    "log_tail": "Traceback ...\nRuntimeError: boom",
                },
                "sentiment": {"status": "ok", "seconds": 12.0},
                "substitution": {"status": "ok", "seconds": 30.0},
                "inverse": {"status": "pending"},
                "transformer": {"status": "pending"},
            },
        },
        open(root / "demo_status.json", "w"),
    )
    return root


class _Refs(HTMLParser):
    def __init__(self):
        super().__init__()
        self.refs, self.ids, self.tags = [], [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        for k, v in attrs:
            if k in ("src", "href", "srcset", "poster", "data", "action"):
                self.refs.append((tag, k, v or ""))
            if k == "id":
                self.ids.append(v)


def _headlines(text: str) -> list[str]:
    return [
        re.sub(r"<[^>]+>", "", h).strip() for h in re.findall(r"data-headline(?:=\"\")?>(.*?)</(?:li|td)>", text, re.S)
    ]


def test_flatten_and_paper_pairs():
    flat = flatten(
        {
            "pearson": {"conductance": 0.7},
            "flips": {"mean": 4.1},
            "internal_share": 0.2,
            "paper": {
                "pearson": {"inception": {"conductance": 0.79}},
                "flips": {"mean": 3.7},
                "internal_share": 0.05,
                "only_paper": 1,
            },
        }
    )
    rows = {(r["quantity"], r["setting"]): (r["ours"], r["paper"]) for r in paper_rows(flat)}
    assert rows == {
        ("pearson.conductance", "inception"): (0.7, 0.79),
        ("flips.mean", ""): (4.1, 3.7),
        ("internal_share", ""): (0.2, 0.05),
        ("only_paper", ""): (None, 1),
    }
    assert flatten({"a": list(range(20))}) == {"a": "[20 values]"}


def test_manifest_refuses_raw_keys_and_uncaptioned_figures(tmp_path):
    for bad in [
        "cat.label: 282; cat.output_diff: 9.24; cat.n_evals: 32",
        "seed: 0; steps: 24",
        "bands.classifier.fc2[3] [1, 11].n: 48",
        "examples: 360; world_size: 1",
    ]:
        assert looks_like_key(bad), bad
        with pytest.raises(ValueError, match="raw key"):
            write_entry(tmp_path, title="t", description="d", headlines=[bad])
    assert not looks_like_key(
        "EfficientNet-Lite0 labels the cat photo 282 'tiger cat'; completeness gap 0.9 % at 32 path points."
    )
    with pytest.raises(ValueError, match="no caption"):
        write_entry(tmp_path, title="t", description="d", figures=["a.png"])
    with pytest.raises(ValueError, match="which model and data"):
        write_entry(tmp_path, title="t", description="d", comparisons=[{"quantity": "r", "ours": 1, "paper": 2}])
    assert not (tmp_path / "manifest.json").exists(), "a refused entry writes nothing"


def test_report_is_self_contained_and_complete(tmp_path):
    root = fake_results(tmp_path / "results")
    path = build_report(root)
    assert path == root / "report.html"
    text = path.read_text()
    parser = _Refs()
    parser.feed(text)
    # images embedded; every link an in-page anchor or a file inside the results folder
    assert parser.refs
    for tag, attr, value in parser.refs:
        if attr == "src":
            assert value.startswith("data:image/"), (tag, attr, value[:60])
        elif value.startswith("#"):
            assert value[1:] in parser.ids, f"dangling anchor {value}"
        else:
            target = (root / value).resolve()
            assert not re.match(r"^[a-z]+:", value) and target.is_file(), value
            assert root.resolve() in target.parents
    assert "link" not in parser.tags and not re.search(r"url\(\s*['\"]?(https?:|//)", text)
    images = re.findall(r'<img src="data:image/png;base64,([^"]+)" alt="([^"]+)"', text)
    assert sorted(alt for _, alt in images) == [
        "digits_example0.png",
        "heat.png",
        "scatter.png",
        "sentiment_division.png",
    ]
    for b64, _ in images:
        Image.open(io.BytesIO(base64.b64decode(b64))).verify()
    # sections in the run's order (demo_status.json), then the atlas (not a study); the failed one with its error
    order = re.findall(r'<section id="study-([a-z]+)"', text)
    assert order == ["digits", "evaluation", "imagenet", "sentiment", "substitution", "atlas"]
    assert "RuntimeError: boom" in text
    assert re.search(r"Not run: inverse, transformer", text)
    assert '<a href="atlas/index.html">open the atlas</a>' in text
    # ours beside the paper, each with its setting
    assert (
        "<td>mean Pearson r, conductance vs ablation</td><td>0.7</td><td>digits CNN, features.relu3, 40 test "
        "digits</td><td>0.79</td><td>Inception v1, mixed4d, ImageNet validation images</td>"
    ) in text
    assert "<td>pearson › conductance</td><td>0.812</td><td>—</td><td>0.88</td>" in text  # fallback
    # quick mode says so, and how small
    assert "Quick run: 3 test digits, 32 path points." in text
    # the fallback: title from the study's docstring, tables, notes (escaped), snippets
    assert "This folder has no manifest.json" in text
    assert "sentiment_agreement.csv" in text and "sentiment_agreement.md" not in text
    assert "<h2>probes</h2>" in text and "<script>alert(1)</script>" not in text
    assert "<p class='snippet-test'>a snippet</p>" in text
    assert "a whole page" not in text and '<a href="sentiment/page.html">open page.html</a>' in text
    # machine-readable tables next to it
    summary = list(csv.DictReader(open(root / "report_summary.csv")))
    assert [r["folder"] for r in summary] == [
        "digits",
        "evaluation",
        "imagenet",
        "sentiment",
        "substitution",
        "atlas",
        "inverse",
        "transformer",
    ]
    assert {r["folder"]: r["status"] for r in summary}["inverse"] == "not run"
    blob = json.load(open(root / "report.json"))
    assert blob["sections"]["sentiment"]["summary"]["pearson"]["conductance"] == 0.812


def test_report_reads_as_sentences_with_keys_and_dead_units(tmp_path):
    text = build_report(fake_results(tmp_path / "results")).read_text()
    heads = _headlines(text)
    assert len(heads) >= 8 and "The digits CNN labels 98.1 % of 360 held-out digits correctly." in heads
    assert not [h for h in heads if looks_like_key(h)]
    # every figure captioned; every heat-map with a colour bar
    figures = re.findall(r'<figure data-figure data-caption="(\w+)" data-heatmaps="(\w+)" data-colorbars="(\w+)"', text)
    assert len(figures) == 4 and all(c == "yes" for c, _, _ in figures)
    known = [(int(h), int(k)) for _, h, k in figures if h != "unknown"]
    assert sorted(known) == [(1, 1), (1, 1)]
    # no raw list cells: a link to the CSV instead; long tables collapsed with their size
    assert "0.1234567890123456" not in text and '<a class="list-cell" href="digits/digits_top_filters.csv">' in text
    assert re.search(
        r'<details class="table-block" data-rows="50" >\s*<summary>Pearson r per test digit — 50 rows × '
        r"2 columns \(first 40 shown\)",
        text,
    )
    # the dead unit: marked, with no values
    dead = re.findall(r'<tr class="dead" data-dead="1">(.*?)</tr>', text)
    assert len(dead) == 1
    assert re.sub(r"<[^>]+>", "|", dead[0]).split("|").count("—") == 2 and "dead" in dead[0]
    assert "1 dead unit" in text


def test_report_is_written_atomically(tmp_path, monkeypatch):
    root = fake_results(tmp_path / "results")
    (root / "report.html").write_text("previous report")
    calls = []
    real = report_html.data_uri

    def fail_on_second(path):
        calls.append(path)
        if len(calls) == 2:
            raise OSError("disk on fire")
        return real(path)

    monkeypatch.setattr(report_html, "data_uri", fail_on_second)
    with pytest.raises(OSError, match="disk on fire"):
        build_report(root)
    assert len(calls) == 2, "the failure happened while the report was being written"
    assert (root / "report.html").read_text() == "previous report"
    assert not [p for p in os.listdir(root) if p.endswith(".tmp")]


def test_report_command(tmp_path, capsys):
    root = fake_results(tmp_path / "results")
    out = tmp_path / "elsewhere.html"
    assert cli_main(["report", str(root), "--output", str(out)]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == {"report": str(out)}
    text = out.read_text()
    assert out.stat().st_size > 1000 and 'href="results/atlas/index.html"' in text
    # the report's tables go into the results folder, not beside --output
    assert (root / "report.json").is_file() and (root / "report_summary.csv").is_file()
    assert sorted(os.listdir(tmp_path)) == ["elsewhere.html", "results"]


def test_report_command_on_a_folder_with_nothing_to_show(tmp_path, capsys):
    (tmp_path / "only").mkdir()
    (tmp_path / "only" / "atlas_tensors.pt").write_bytes(b"")
    assert cli_main(["report", str(tmp_path / "only")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"nothing to report in '{tmp_path / 'only'}'" in err
    assert sorted(os.listdir(tmp_path / "only")) == ["atlas_tensors.pt"]  # nothing written


def test_a_command_output_folder_is_shown_through_the_fallback(tmp_path):
    from unitscope.report.figures import save_figure, subplots

    fig, ax = subplots()
    ax.plot([0, 1])
    save_figure(fig, tmp_path / "importance_fc.png")
    (tmp_path / "scores.csv").write_text("score,layer,value,error\nconductance,fc,1.5,0.01\n")
    text = build_report(tmp_path, allow_empty=False).read_text()
    assert text.count("data:image/png;base64,") == 1 and "scores.csv" in text
    again = build_report(tmp_path, allow_empty=False).read_text()  # its own outputs are not results
    assert again.count("data:image/png;base64,") == 1 and again.count('<details class="table-block"') == 1
    assert "report_summary.csv" not in again


def test_empty_results_folder(tmp_path):
    text = build_report(tmp_path).read_text()
    assert '<section id="study-' not in text and "Summary" in text


def test_missing_files_are_reported_not_fatal(tmp_path):
    write_entry(tmp_path / "x", title="X", description="d", figures=[("gone.png", "a figure that was not written")])
    text = build_report(tmp_path).read_text()
    assert "missing file: x/gone.png" in text and "incomplete" in text


# ---------------------------------------------------------------------------------------------- Chromium --
def _chromium(url: str, profile: Path, *extra, timeout=90) -> subprocess.CompletedProcess:
    return subprocess.run(
        [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0", *extra, url],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _console_messages(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ":CONSOLE" in ln or "Uncaught" in ln]


def _images_loaded(dom: str) -> tuple[int, int]:
    m = re.search(r'<body[^>]*data-images="(\d+)"[^>]*data-images-broken="(\d+)"', dom)
    assert m, "the report's load handler did not run"
    return int(m.group(1)), int(m.group(2))


needs_chromium = pytest.mark.skipif(
    not os.path.exists(CHROMIUM),
    reason=f"{CHROMIUM} is absent: install Debian's chromium (`apt-get install -y chromium`, as .ci/run does) "
    "to open the report in a headless browser",
)


@needs_chromium
def test_report_opens_in_chromium_without_console_errors(tmp_path):
    root = fake_results(tmp_path / "results")
    path = build_report(root)
    url = path.resolve().as_uri()
    dom = _chromium(url, tmp_path / "profile1", "--virtual-time-budget=5000", "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert _console_messages(dom.stderr) == []
    assert _images_loaded(dom.stdout) == (4, 0)
    # what the browser shows: sentences as headlines, captions, colour bars, the dead unit as dead
    heads = _headlines(dom.stdout)
    assert heads and not [h for h in heads if looks_like_key(h)]
    figs = re.findall(
        r'<figure data-figure="" data-caption="(\w+)" data-heatmaps="(\w+)" data-colorbars="(\w+)">'
        r".*?<figcaption>(.*?)</figcaption>",
        dom.stdout,
        re.S,
    )
    assert len(figs) == 4
    for caption_flag, maps, bars, caption in figs:
        assert caption_flag == "yes" and re.sub(r"<[^>]+>", "", caption).split("(")[0].strip()
        assert maps == "unknown" or bars == maps
    dead = re.findall(r'<tr class="dead" data-dead="1">(.*?)</tr>', dom.stdout)
    assert len(dead) == 1 and "dead" in dead[0] and not re.search(r"<td>\d*\.\d+</td>", dead[0])
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "report.png"
    if shot.exists():
        shot.unlink()
    res = _chromium(url, tmp_path / "profile2", "--window-size=1280,1600", "--hide-scrollbars", f"--screenshot={shot}")
    assert res.returncode == 0 and shot.exists(), res.stderr[-2000:]
    with Image.open(shot) as im:
        assert im.size == (1280, 1600)
        assert np.asarray(im.convert("L")).std() > 5, "a blank screenshot"
    shutil.copy(path, ARTIFACTS / "report.html")


@needs_chromium
def test_chromium_check_sees_a_broken_image(tmp_path):
    """The check above can fail: a corrupt PNG is reported as broken (and flagged in the page)."""
    path = build_report(fake_results(tmp_path / "results", broken_image=True))
    dom = _chromium(path.resolve().as_uri(), tmp_path / "profile", "--virtual-time-budget=5000", "--dump-dom")
    assert _images_loaded(dom.stdout) == (4, 1)
    assert 'class="broken"' in dom.stdout


# --------------------------------------------------------------------------------------- the atlas page --
class _Block(__import__("torch").nn.Module):
    """Module paths as long as a transformer's (``encoder.layer.0.intermediate.intermediate_act_fn``)."""

    def __init__(self):
        import torch.nn as nn

        super().__init__()
        self.intermediate = nn.Module()
        self.intermediate.dense = nn.Conv2d(1, 3, 3)
        self.intermediate.intermediate_act_fn = nn.ReLU()

    def forward(self, x):
        return self.intermediate.intermediate_act_fn(self.intermediate.dense(x))


def _long_named_atlas():
    import torch
    import torch.nn as nn

    import unitscope as us

    torch.manual_seed(0)
    net = nn.Sequential()
    net.encoder = nn.Module()
    net.encoder.layer = nn.ModuleList([_Block()])
    net.head = nn.Sequential(nn.Flatten(), nn.Linear(3 * 36, 2))
    net.forward = lambda x: net.head(net.encoder.layer[0](x))
    layer = "encoder.layer.0.intermediate.intermediate_act_fn"
    x, y = torch.rand(16, 1, 8, 8), torch.arange(16) % 2
    return us.atlas(
        net,
        (x, y),
        layers=[layer],
        top_k=2,
        path=us.PathConfig(n_steps=4),
        synthesis=us.SynthesisConfig(iam_steps=4, inverse_samples=2, inverse_steps=4),
        progress=False,
    ), layer


def test_atlas_page_header_and_band_reasons(tmp_path):
    from unitscope.report.atlas_html import render_atlas

    a, _ = _long_named_atlas()
    assert a.meta["data"] == "tuple of 16 examples"
    html = render_atlas(a, tmp_path).read_text()
    blob = json.loads(html.split('<script type="application/json" id="data">')[1].split("</script>")[0])
    assert blob["meta"]["over"] == "over 16 examples"  # not "over 16 examples of tuple of 16 examples"
    assert "function bandReason" in html and "none of the candidates ended inside the band" in html


@needs_chromium
def test_atlas_page_fits_1280_px_and_opens_the_first_row_shown(tmp_path):
    from unitscope.report.atlas_html import render_atlas

    a, layer = _long_named_atlas()
    url = render_atlas(a, tmp_path / "page").resolve().as_uri()
    first = sorted(a.units, key=lambda u: (-u["importance"]["conductance"], a.units.index(u)))[0]
    for window in ("1280,900", "1280,700"):
        res = _chromium(
            url + "#open=0",
            tmp_path / f"p{window}",
            f"--window-size={window}",
            "--hide-scrollbars",
            "--virtual-time-budget=5000",
            "--dump-dom",
        )
        assert res.returncode == 0 and not _console_messages(res.stderr), res.stderr[-2000:]
        body = re.search(r"<body[^>]*>", res.stdout).group(0)
        assert 'data-table-fits="1"' in body, (window, body)
        assert f'data-card="{layer}:{first["unit"]}"' in body  # the first row shown, by importance
        assert "over 16 examples." in res.stdout and "tuple of" not in res.stdout.split('id="data"')[0]
    res = _chromium(
        url + "#sort=unit:desc&open=0",
        tmp_path / "q",
        "--window-size=1280,900",
        "--virtual-time-budget=5000",
        "--dump-dom",
    )
    last = max(u["unit"] for u in a.units)
    assert f'data-card="{layer}:{last}"' in re.search(r"<body[^>]*>", res.stdout).group(0)
    res = _chromium(
        url + f"#card={layer}:1", tmp_path / "r", "--window-size=1280,900", "--virtual-time-budget=5000", "--dump-dom"
    )
    assert f'data-card="{layer}:1"' in re.search(r"<body[^>]*>", res.stdout).group(0)
