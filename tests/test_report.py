"""The HTML report: built from a fake results folder, self-contained, atomic, and loading cleanly in Chromium."""

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
import pytest
from PIL import Image

from unitscope.cli import app as cli
from unitscope.report import html as report_html
from unitscope.report.html import build_report, flatten, paper_rows

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage"]
ARTIFACTS = Path(os.environ.get("UNITSCOPE_TEST_ARTIFACTS", Path(__file__).resolve().parents[1] / "test-artifacts"))


def _png(path: Path, seed: int, size=(40, 30)) -> None:
    rng = np.random.default_rng(seed)
    Image.fromarray((rng.random((size[1], size[0], 3)) * 255).astype(np.uint8)).save(path)


def fake_results(root: Path, *, broken_image: bool = False) -> Path:
    """Three studies that ran (one with a paper comparison), one that failed, the rest not run."""
    (root / "digits").mkdir(parents=True)
    json.dump({"test_accuracy": 0.981, "max_gap": 0.0061}, open(root / "digits" / "digits.json", "w"))
    _png(root / "digits" / "digits_example0_top5.png", 0)
    with open(root / "digits" / "digits_top_filters.csv", "w") as f:
        f.write("digit,layer,gap_percent\n3,features.relu1,0.28\n3,features.relu2,0.61\n")

    (root / "sentiment").mkdir()
    json.dump({"test_accuracy": 0.77, "pearson": {"conductance": 0.812, "activation": 0.2},
               "paper_pearson": {"conductance": 0.88, "activation": 0.19}, "seconds": {"agreement": 3.0}},
              open(root / "sentiment" / "sentiment.json", "w"))
    _png(root / "sentiment" / "sentiment_division.png", 1, (60, 20))
    with open(root / "sentiment" / "sentiment_agreement.csv", "w") as f:
        f.write(",mean,paper\nconductance,0.812,0.88\nactivation,0.2,0.19\n")
    (root / "sentiment" / "sentiment_agreement.md").write_text("| | mean |\n|---|---|\n| conductance | 0.812 |\n")
    (root / "sentiment" / "sentiment_negation_examples.md").write_text(
        "## probes\n\n- **not good** <script>alert(1)</script>\n  - #12: not[+0.31] good[-0.02]\n")
    (root / "sentiment" / "division_note.html").write_text("<p class='snippet-test'>a snippet</p>")

    (root / "evaluation").mkdir()
    json.dump({"pearson": {"conductance": 0.7}, "flips": {"mean": 4.1, "max": 20},
               "paper": {"pearson": {"inception": {"conductance": 0.79}}, "flips": {"mean": 3.7, "max": 16}}},
              open(root / "evaluation" / "evaluation.json", "w"))
    if broken_image:
        (root / "evaluation" / "scatter.png").write_bytes(b"\x89PNG\r\n\x1a\nthis is not a png")
    else:
        _png(root / "evaluation" / "scatter.png", 2)

    json.dump({"quick": True, "seed": 0, "seconds": 42.0, "studies": {
        "digits": {"status": "ok", "seconds": 3.1},
        "evaluation": {"status": "ok", "seconds": 20.0},
        "sentiment": {"status": "ok", "seconds": 12.0},
        "imagenet": {"status": "failed", "seconds": 1.0, "error": "exit code 1: RuntimeError: boom",
                     "log_tail": "Traceback ...\nRuntimeError: boom"}}}, open(root / "demo_status.json", "w"))
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


def test_flatten_and_paper_pairs():
    flat = flatten({"pearson": {"conductance": 0.7}, "flips": {"mean": 4.1}, "internal_share": 0.2,
                    "paper": {"pearson": {"inception": {"conductance": 0.79}}, "flips": {"mean": 3.7},
                              "internal_share": 0.05, "only_paper": 1}})
    rows = {(r["quantity"], r["setting"]): (r["ours"], r["paper"]) for r in paper_rows(flat)}
    assert rows == {("pearson.conductance", "inception"): (0.7, 0.79), ("flips.mean", ""): (4.1, 3.7),
                    ("internal_share", ""): (0.2, 0.05), ("only_paper", ""): (None, 1)}
    assert flatten({"a": list(range(20))}) == {"a": "[20 values]"}


def test_report_is_self_contained_and_complete(tmp_path):
    root = fake_results(tmp_path / "results")
    path = build_report(root)
    assert path == root / "report.html"
    text = path.read_text()
    parser = _Refs()
    parser.feed(text)
    # no external resources: every src is a data: URI, every href an in-page anchor or a data: download
    assert parser.refs, "the report has no images or links at all"
    for tag, attr, value in parser.refs:
        if attr == "src":
            assert value.startswith("data:image/"), (tag, attr, value[:60])
        else:
            assert value.startswith("#") or value.startswith("data:text/csv;base64,"), (tag, attr, value[:60])
            if value.startswith("#"):
                assert value[1:] in parser.ids, f"dangling anchor {value}"
    assert "link" not in parser.tags and not re.search(r"url\(\s*['\"]?(https?:|//)", text)
    # every embedded image is the file's bytes
    images = re.findall(r'<img src="data:image/png;base64,([^"]+)" alt="([^"]+)"', text)
    assert sorted(alt for _, alt in images) == ["digits_example0_top5.png", "scatter.png", "sentiment_division.png"]
    for b64, alt in images:
        Image.open(io.BytesIO(base64.b64decode(b64))).verify()
    # sections in the study order, the failed one with its error, the others listed as not run
    order = [m for m in re.findall(r'<section id="study-([a-z]+)"', text)]
    assert order == ["digits", "evaluation", "imagenet", "sentiment"]
    assert "RuntimeError: boom" in text
    assert re.search(r"Not run: substitution, inverse, transformer", text)
    # the papers' numbers beside ours
    row = re.search(r"<tr><td>pearson.conductance</td><td>—</td><td>0.812</td><td>0.88</td></tr>", text)
    assert row, "sentiment: ours 0.812 beside the paper's 0.88"
    assert "<td>pearson.conductance</td><td>inception</td><td>0.7</td><td>0.79</td>" in text
    # tables rendered (CSV preferred over its Markdown twin), Markdown notes rendered and escaped, snippets kept
    assert text.count("sentiment_agreement.csv") >= 1 and "sentiment_agreement.md" not in text
    assert "<h2>probes</h2>" in text and "<script>alert(1)</script>" not in text
    assert "<p class='snippet-test'>a snippet</p>" in text
    # the machine-readable tables next to it
    summary = list(csv.DictReader(open(root / "report_summary.csv")))
    assert [r["study"] for r in summary][:4] == ["digits", "evaluation", "imagenet", "sentiment"]
    assert {r["study"]: r["status"] for r in summary}["inverse"] == "not run"
    assert "0.812 (paper 0.88)" in {r["study"]: r["headline"] for r in summary}["sentiment"]
    blob = json.load(open(root / "report.json"))
    assert blob["studies"]["sentiment"]["summary"]["pearson"]["conductance"] == 0.812


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
    assert cli.main(["report", str(root), "--output", str(out)]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == {"report": str(out)}
    assert out.stat().st_size > 1000


def test_empty_results_folder_lists_every_study_as_not_run(tmp_path):
    text = build_report(tmp_path).read_text()
    assert re.search(r"Not run: digits, evaluation, imagenet, sentiment, substitution, inverse, transformer", text)


# ---------------------------------------------------------------------------------------------- Chromium --
def _chromium(url: str, profile: Path, *extra, timeout=90) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--enable-logging=stderr",
                           "--v=0", *extra, url], capture_output=True, text=True, timeout=timeout)


def _console_messages(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ":CONSOLE" in ln or "Uncaught" in ln]


def _images_loaded(dom: str) -> tuple[int, int]:
    m = re.search(r'<body[^>]*data-images="(\d+)"[^>]*data-images-broken="(\d+)"', dom)
    assert m, "the report's load handler did not run"
    return int(m.group(1)), int(m.group(2))


needs_chromium = pytest.mark.skipif(
    not os.path.exists(CHROMIUM),
    reason=f"{CHROMIUM} is absent: install Debian's chromium (`apt-get install -y chromium`, as .ci/run does) "
           "to open the report in a headless browser")


@needs_chromium
def test_report_opens_in_chromium_without_console_errors(tmp_path):
    root = fake_results(tmp_path / "results")
    path = build_report(root)
    url = path.resolve().as_uri()
    dom = _chromium(url, tmp_path / "profile1", "--virtual-time-budget=5000", "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert _console_messages(dom.stderr) == []
    assert _images_loaded(dom.stdout) == (3, 0)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "report.png"
    if shot.exists():
        shot.unlink()
    res = _chromium(url, tmp_path / "profile2", "--window-size=1280,1600", "--hide-scrollbars",
                    f"--screenshot={shot}")
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
    assert _images_loaded(dom.stdout) == (3, 1)
    assert 'class="broken"' in dom.stdout
