"""The ``unitscope`` command: user mistakes are one line and exit code 2; layers and importance on the digits."""

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn as nn

from unitscope.cli import app as cli
from unitscope.cli.visualize import parse_units
from unitscope.core.errors import UnitscopeError
from unitscope.loading import load_inputs, load_model


def run_cli(capsys, *argv):
    rc = cli.main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def one_line_error(rc, err):
    """The error is one line. On an empty model cache the first use of a zoo model also says, on a line of its own,
    that it trains the model (work that happened, not the error): that line is left out."""
    assert rc == 2
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("training the ")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["layers", "digits-cnx"], "closest zoo names: 'digits-cnn'"),
        (["importance", "digits-cnn", "digits", "--layers", "feature.relu3"], "closest valid names: 'features.relu3'"),
        (["importance", "digits-cnn", "digitz", "--layers", "features.relu3"], "did you mean 'digits'?"),
        (
            ["importance", "digits-cnn", "digits", "--layers", "features.relu3", "--scores", "condutance"],
            "unknown score 'condutance'",
        ),
        (["importance", "digits-cnn", "digits", "--layers", "features.relu3", "--target", "best"], "--target"),
        (["importance", "digits-cnn", "digits"], "required: --layers"),
        (["importance", "digits-cnn", "digits", "--layers", "features.relu3", "--n-steps", "x"], "invalid int value"),
        (["importance", "nosuchpkg.mod:factory", "digits", "--layers", "x"], "cannot import 'nosuchpkg.mod'"),
        (["importance", "torch.nn:Linearr", "digits", "--layers", "x"], "closest names: 'Linear'"),
        (["layers", "missing/model.pt2"], "not found"),
        (["report", "/nonexistent/results"], "results folder"),
        (["frobnicate"], "invalid choice"),
        (
            ["layers", "digits-cnn", "--device", "cuda:7"]
            if not torch.cuda.is_available()
            else ["layers", "digits-cnn", "--device", "tpu"],
            "device",
        ),
        (["demo", "--only", "nosuchstudy", "--out", "{tmp}"], "unknown study 'nosuchstudy'"),
    ],
)
def test_user_mistakes_are_one_line_and_exit_2(capsys, tmp_path, argv, needle):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    rc, out, err = run_cli(capsys, *argv)
    line = one_line_error(rc, err)
    assert needle in line
    assert line.startswith("unitscope")


def test_a_failed_command_leaves_no_empty_output_folder_behind(capsys, tmp_path):
    out = tmp_path / "new" / "visualize"
    rc, _, err = run_cli(
        capsys, "visualize", "digits-cnn", "--layer", "features.relu2", "--units", "0-200", "--out", str(out)
    )
    assert "units 64, 65" in one_line_error(rc, err) and "137 in all" in err
    assert not (tmp_path / "new").exists()  # both folders it made for the write check are gone
    kept = tmp_path / "kept"
    kept.mkdir()
    rc, _, _ = run_cli(
        capsys, "visualize", "digits-cnn", "--layer", "features.relu2", "--units", "99", "--out", str(kept)
    )
    assert rc == 2 and kept.is_dir()  # a folder the user had is never removed


def test_bad_input_files_are_one_line(capsys, tmp_path):
    (tmp_path / "notes.csv").write_text("a,b\n")
    (tmp_path / "broken.png").write_bytes(b"not a png")
    np.save(tmp_path / "wrong.npy", np.zeros((2, 3, 5, 5), np.float32))
    for inputs, needle in [
        (tmp_path / "notes.csv", "not an image"),
        (tmp_path / "broken.png", "cannot read image"),
        (tmp_path / "wrong.npy", "does not accept inputs of shape [1, 3, 5, 5]"),
    ]:
        rc, _, err = run_cli(
            capsys, "importance", "digits-cnn", str(inputs), "--layers", "features.relu3", "--out", str(tmp_path / "o")
        )
        assert needle in one_line_error(rc, err)


def test_console_script_exit_code_and_no_traceback():
    proc = subprocess.run(
        [sys.executable, "-m", "unitscope", "layers", "digits-cnx"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr
    assert "digits-cnn" in proc.stderr


def test_layers_lists_names_and_shapes(capsys):
    rc, out, _ = run_cli(capsys, "layers", "digits-cnn")
    assert rc == 0
    rows = {ln.split()[0]: ln for ln in out.splitlines()}
    assert "[64, 8, 8]" in rows["features.relu1"] and "ReLU" in rows["features.relu1"]
    assert "[128, 4, 4]" in rows["features.relu3"]
    assert rows["classifier.fc2"].endswith("[10]")


def test_importance_on_digits_writes_scores_that_match_the_library(capsys, tmp_path):
    import unitscope as us
    from unitscope.zoo import digits_cnn, digits_data

    out = tmp_path / "imp"
    rc, stdout, err = run_cli(
        capsys,
        "importance",
        "digits-cnn",
        "digits",
        "--layers",
        "features.relu3",
        "classifier.relu",
        "--scores",
        "conductance",
        "activation",
        "--limit",
        "6",
        "--n-steps",
        "16",
        "--target",
        "label",
        "--out",
        str(out),
    )
    assert rc == 0, err
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert summary["inputs"] == 6 and summary["layers"] == ["features.relu3", "classifier.relu"]
    assert all(os.path.getsize(f) > 1000 for f in summary["figures"])
    df = pd.read_csv(out / "scores.csv")
    assert set(df["score"]) == {"conductance", "activation"}
    # one row per example × channel: 6 × (128 + 128) per method
    assert len(df) == 2 * 6 * 256
    _, test = digits_data()
    ref = us.conductance(
        digits_cnn().model,
        test.x[:6],
        ["features.relu3"],
        target=test.y[:6],
        n_steps=16,
        path=us.PathConfig(gap_warning=None),
    ).per_channel("features.relu3")
    got = df[(df.score == "conductance") & (df.layer == "features.relu3")].sort_values(["example", "channel"])
    np.testing.assert_allclose(got["value"].to_numpy().reshape(6, 128), ref.numpy(), rtol=1e-4, atol=1e-5)
    # the gap column is Σ filters − (F(x) − F(x')), the same for every row of an example, and small
    assert got.groupby("example")["delta"].nunique().eq(1).all()
    assert summary["max_completeness_gap"]["features.relu3"] < 0.1
    assert summary["max_completeness_gap"]["classifier.relu"] < 1e-4


def test_importance_reads_images_npy_and_exported_models(capsys, tmp_path):
    from PIL import Image

    for i in range(3):
        arr = (np.random.default_rng(i).random((16, 16)) * 255).astype(np.uint8)
        Image.fromarray(arr).save(tmp_path / f"d{i}.png")
    rc, stdout, err = run_cli(
        capsys,
        "importance",
        "digits-cnn",
        str(tmp_path),
        "--layers",
        "features.relu2",
        "--n-steps",
        "8",
        "--out",
        str(tmp_path / "o1"),
    )
    assert rc == 0, err
    df = pd.read_csv(tmp_path / "o1" / "scores.csv")
    assert sorted(set(df["input"])) == ["d0.png", "d1.png", "d2.png"]

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(16, 3)).eval()
    x = torch.rand(2, 1, 4, 4)
    ep = torch.export.export(net, (x,), dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(ep, tmp_path / "net.pt2")
    np.save(tmp_path / "x.npy", torch.rand(5, 1, 4, 4).numpy())
    rc, stdout, err = run_cli(
        capsys,
        "importance",
        str(tmp_path / "net.pt2"),
        str(tmp_path / "x.npy"),
        "--layers",
        "1",
        "--n-steps",
        "8",
        "--out",
        str(tmp_path / "o2"),
    )
    assert rc == 0, err
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert summary["inputs"] == 5 and summary["max_completeness_gap"]["1"] < 0.05
    rc, out, _ = run_cli(capsys, "layers", str(tmp_path / "net.pt2"))
    assert rc == 0 and "[4, 2, 2]" in out


def test_torchscript_models_list_layers_but_cannot_be_scored(capsys, tmp_path):
    import warnings

    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(net), tmp_path / "net.ts")
    rc, out, err = run_cli(capsys, "layers", str(tmp_path / "net.ts"))
    assert rc == 0 and [ln.split()[0] for ln in out.splitlines()] == ["0", "1", "2"]
    torch.save(torch.rand(2, 3), tmp_path / "x.pt")
    rc, _, err = run_cli(capsys, "importance", str(tmp_path / "net.ts"), str(tmp_path / "x.pt"), "--layers", "1")
    assert "TorchScript" in one_line_error(rc, err)


def test_factory_models_and_loading_errors():
    m = load_model("torch.nn:Identity")
    assert isinstance(m.model, nn.Identity) and m.kind == "factory"
    with pytest.raises(UnitscopeError, match="not an nn.Module"):
        load_model("math:pi")
    x = load_inputs("digits", load_model("digits-mlp"), limit=4)
    assert x.x.shape == (4, 1, 8, 8) and x.labels.shape == (4,)
    with pytest.raises(UnitscopeError, match="need a text model"):
        load_inputs("reviews", None)


def test_units_ranges():
    assert parse_units(["0-3", "7,9"]) == [0, 1, 2, 3, 7, 9]
    with pytest.raises(UnitscopeError, match="integers or ranges"):
        parse_units(["a"])


def tiny_net():
    """A factory for ``package.module:factory`` (this test module is importable: conftest puts tests/ on the path)."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(64, 3))


def test_visualize_and_inverse_set_on_a_factory_model(capsys, tmp_path):
    rc, out, err = run_cli(
        capsys,
        "visualize",
        "test_cli:tiny_net",
        "--layer",
        "1",
        "--units",
        "0-3",
        "--iam",
        "--steps",
        "8",
        "--shape",
        "1",
        "4",
        "4",
        "--out",
        str(tmp_path / "vis"),
    )
    assert rc == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["kind"] == "IAM" and summary["units"] == [0, 1, 2, 3] and len(summary["rs"]) == 4
    assert all(0.0 <= v <= 1.0 for v in summary["rs"])
    images = torch.load(tmp_path / "vis" / "iam_1.pt")
    assert images.shape == (4, 1, 4, 4) and images.min() >= 0 and images.max() <= 1
    rc, _, err = run_cli(capsys, "visualize", "test_cli:tiny_net", "--layer", "1", "--units", "0")
    assert "image shape" in one_line_error(rc, err)

    rc, out, err = run_cli(
        capsys,
        "inverse-set",
        "test_cli:tiny_net",
        "--layer",
        "1",
        "--unit",
        "2",
        "--range",
        "0.05",
        "0.3",
        "--n",
        "4",
        "--shape",
        "1",
        "4",
        "4",
        "--out",
        str(tmp_path / "inv"),
    )
    assert rc == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    blob = torch.load(tmp_path / "inv" / "inverse_set.pt")
    # every sample's activation, measured again here, lies in the range
    net = tiny_net()
    with torch.no_grad():
        acts = net[1](net[0](blob["samples"]))[:, 2].mean((1, 2))
    assert len(acts) == summary["n"] >= 1
    assert bool(((acts >= 0.05 - 1e-5) & (acts <= 0.3 + 1e-5)).all())
    rc, _, err = run_cli(
        capsys,
        "inverse-set",
        "test_cli:tiny_net",
        "--layer",
        "1",
        "--unit",
        "2",
        "--range",
        "1",
        "0",
        "--shape",
        "1",
        "4",
        "4",
    )
    assert "A ≤ B" in one_line_error(rc, err)


class _TakesEmbeddings(nn.Module):
    """Like the sentiment CNN: it owns an embedding, but forward() takes the embeddings themselves."""

    def __init__(self):
        super().__init__()
        self.embedding = nn.Embedding(10, 4)
        self.filters = nn.Linear(4, 6)
        self.out = nn.Linear(6, 2)

    def forward(self, x):
        return self.out(torch.relu(self.filters(x)))


def takes_embeddings():
    torch.manual_seed(0)
    return _TakesEmbeddings()


def test_layers_notes_layers_that_forward_does_not_call(capsys):
    # a factory model, not the zoo's sentiment CNN: on an empty cache that would train the whole model first
    rc, out, err = run_cli(capsys, "layers", "test_cli:takes_embeddings", "--shape", "4")
    assert rc == 0, err
    rows = {ln.split()[0]: ln for ln in out.splitlines() if ln.strip()}
    assert rows["embedding"].endswith("(not called by forward)")  # forward() takes embeddings
    assert rows["filters"].endswith("[6]") and rows["out"].endswith("[2]")


def test_scan_takes_any_model_and_data_the_other_commands_take(capsys, tmp_path):
    torch.save(torch.rand(10, 1, 4, 4), tmp_path / "x.pt")
    rc, out, err = run_cli(
        capsys,
        "scan",
        "test_cli:tiny_net",
        str(tmp_path / "x.pt"),
        "--layers",
        "1",
        "--scores",
        "activation",
        "conductance",
        "--n-steps",
        "4",
        "--top-k",
        "3",
        "--out",
        str(tmp_path / "scan"),
    )
    assert rc == 0, err
    assert out.startswith("scanned 10 examples of ")  # a short summary for a person, the JSON in a file
    summary = json.loads((tmp_path / "scan" / "scan.json").read_text())
    assert summary["examples"] == 10 and summary["scores"] == ["activation", "conductance"]
    assert (tmp_path / "scan" / "units.csv").exists()  # no labels: tables, no selectivity, no grids
    rc, _, err = run_cli(
        capsys,
        "scan",
        "test_cli:tiny_net",
        str(tmp_path / "x.pt"),
        "--target",
        "label",
        "--out",
        str(tmp_path / "scan2"),
    )
    assert "--target label needs inputs with labels" in one_line_error(rc, err)


def shared_relu_net():
    """A factory whose one ReLU module runs twice per forward pass (as in torchvision's ResNet blocks)."""
    torch.manual_seed(0)
    relu = nn.ReLU()
    return nn.Sequential(nn.Linear(4, 3), relu, nn.Linear(3, 2), relu)


def test_layers_lists_each_call_of_a_shared_module(capsys):
    rc, out, err = run_cli(capsys, "layers", "test_cli:shared_relu_net", "--shape", "4")
    assert rc == 0, err
    rows = {ln.split()[0]: ln for ln in out.splitlines() if ln.strip()}
    assert "1" not in rows and rows["1@0"].endswith("[3]") and rows["1@1"].endswith("[2]")
