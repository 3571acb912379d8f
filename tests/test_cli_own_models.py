"""The command line on a user's own models and data, through the installed ``unitscope`` script.

Every command × {zoo model, ``package.module:factory``, ``hf:`` folder with and without its tokenizer,
``torch.export`` file} × {a folder of class folders of PNGs, a tensor file, a sentences file}, where the pair
makes sense: each run checks the files it wrote (``atlas.json`` with one card per unit, ``index.html``,
``manifest.json``, ``scores.csv``, ``scan.json``). Then every bad input: exit code 2, one line of stderr that names
the argument, and — for what can be checked without the model — nothing loaded, imported or trained first (an
empty model cache stays empty).

The models are tiny and built here (random weights). The atlas of every MODEL kind and ``layers`` run through the
script (three processes at a time); the other runs and the mistakes run in this process through
:func:`unitscope.cli.main` — what the script calls, as ``test_the_script_is_cli_main`` checks — since each
process spends most of its time importing torch; two of the mistakes run through the script as well.
"""

import json
import os
import shutil
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

SCRIPT = shutil.which("unitscope", path=os.path.dirname(sys.executable)) or shutil.which("unitscope")
WORDS = ["[PAD]", "[UNK]", "a", "fine", "film", ".", "not", "good", "bad", "movie"]
BERT_ACT = "bert.encoder.layer.1.intermediate.intermediate_act_fn"
GPT_ACT = "transformer.h.1.mlp.act"

FACTORY = """
import torch, torch.nn as nn

def make():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                         nn.Linear(16, 3))

def grey():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 6 * 6, 2))

class Decoder(nn.Module):
    latent_dim = 5

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.fc = nn.Linear(5, 3 * 8 * 8)

    def forward(self, z):
        return torch.sigmoid(self.fc(z)).view(len(z), 3, 8, 8)

def not_a_model():
    return 42
"""


def _tokenizer():
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Every MODEL and DATA kind, small: a factory module, a torch.export file, a BERT classifier with its
    tokenizer, a GPT-2 LM without one; a folder of two class folders of RGB PNGs (10×12, three each), a .pt
    dict of 8×8 images with labels, a .npy of token ids, sentences with LABEL<TAB>."""
    from PIL import Image

    d = tmp_path_factory.mktemp("own")
    (d / "own_nets.py").write_text(textwrap.dedent(FACTORY))
    sys.path.insert(0, str(d))
    import own_nets

    rng = np.random.default_rng(0)
    for c in ("cat", "dog"):
        (d / "imgs" / c).mkdir(parents=True)
        for i in range(3):
            Image.fromarray((rng.random((10, 12, 3)) * 255).astype(np.uint8)).save(d / "imgs" / c / f"{i}.png")
    torch.save({"inputs": torch.rand(6, 3, 8, 8), "labels": torch.tensor([0, 1, 2, 0, 1, 2])}, d / "x.pt")
    np.save(d / "ids.npy", np.random.default_rng(1).integers(2, len(WORDS), (5, 6)))
    (d / "s.txt").write_text("1\ta fine film .\n0\tnot a good movie\n0\tbad film\n1\tgood\n")
    (d / "plain.txt").write_text("a fine film .\nnot good\n")
    net = own_nets.make().eval()
    ep = torch.export.export(net, (torch.rand(2, 3, 8, 8),), dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(ep, d / "net.pt2")
    torch.manual_seed(0)
    bert = transformers.BertForSequenceClassification(
        transformers.BertConfig(
            hidden_size=16,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=32,
            vocab_size=len(WORDS),
            max_position_embeddings=16,
            num_labels=2,
        )
    )
    bert.save_pretrained(d / "bert")
    _tokenizer().save_pretrained(d / "bert")
    transformers.GPT2LMHeadModel(
        transformers.GPT2Config(
            n_layer=2, n_embd=16, n_head=2, n_positions=16, vocab_size=len(WORDS), bos_token_id=2, eos_token_id=2
        )
    ).save_pretrained(d / "gpt2")  # no tokenizer in the folder
    yield d
    sys.path.remove(str(d))


#: name → the command line (after ``unitscope``); {d} is the files' folder, {out} this run's output folder
RUNS = {
    "atlas-factory-images": "atlas own_nets:make {d}/imgs --layers 1 --quick --target label --out {out}",
    "atlas-export-tensor": "atlas {d}/net.pt2 {d}/x.pt --layers 1 --quick --target label --out {out}",
    "atlas-hf-sentences": f"atlas hf:{{d}}/bert {{d}}/s.txt --layers {BERT_ACT} --quick --target label "
    "--top-units 3 --out {out}",
    "atlas-hf-ids": f"atlas hf:{{d}}/gpt2 {{d}}/ids.npy --layers {GPT_ACT} --quick --top-units 2 --out {{out}}",
    "atlas-factory-generator": "atlas own_nets:make {d}/x.pt --layers 1 --quick --generator own_nets:Decoder "
    "--top-units 2 --out {out}",
    "atlas-zoo-images": "atlas digits-cnn {d}/imgs --layers features.relu3 --quick --no-synthetic --top-units 2 "
    "--out {out}",
    "layers-hf-no-tokenizer": "layers hf:{d}/gpt2",
    "importance-export-images": "importance {d}/net.pt2 {d}/imgs --layers 1 --n-steps 8 --target label --out {out}",
    "importance-hf-sentences": f"importance hf:{{d}}/bert {{d}}/s.txt --layers {BERT_ACT} --n-steps 8 "
    "--target label --out {out}",
    "scan-hf-ids": f"scan hf:{{d}}/gpt2 {{d}}/ids.npy --layers {GPT_ACT} --n-steps 4 --top-k 2 --out {{out}}",
    "scan-factory-images": "scan own_nets:make {d}/imgs --layers 1 --n-steps 4 --top-k 2 --image-size 8 "
    "--mean 0.5 --std 0.25 --out {out}",
    "visualize-export": "visualize {d}/net.pt2 --layer 1 --units 0-1 --steps 4 --param fft --out {out}",
    "inverse-set-factory-generator": "inverse-set own_nets:make --layer 1 --unit 0 --range 0 10 --n 2 "
    "--generator own_nets:Decoder --out {out}",
}


#: the runs that go through the installed script (the rest: through unitscope.cli.main in this process)
SCRIPT_RUNS = (
    "atlas-factory-images",
    "atlas-export-tensor",
    "atlas-hf-sentences",
    "atlas-hf-ids",
    "layers-hf-no-tokenizer",
)


def _script_env(d: Path) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(d), os.environ.get("PYTHONPATH", "")]))
    env.pop("WORLD_SIZE", None)
    return env


def _run_script(argv, env, timeout=300):
    return subprocess.run([SCRIPT, *argv], capture_output=True, text=True, timeout=timeout, env=env)


def _run_here(argv):
    """``unitscope.cli.main(argv)`` in this process, its output captured: what ``subprocess.run`` returns."""
    import contextlib
    import io
    from types import SimpleNamespace

    from unitscope.cli import main
    from unitscope.core.state import torch_threads

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), torch_threads(1):  # a shared machine
        rc = main(argv)
    return SimpleNamespace(returncode=rc, stdout=out.getvalue(), stderr=err.getvalue())


@pytest.fixture(scope="module")
def runs(files):
    """Every run of :data:`RUNS`: ``{name: (completed process, out folder)}``; those of :data:`SCRIPT_RUNS`
    through the script, three processes at a time, while the others run here."""
    env = _script_env(files)
    argv = {name: RUNS[name].format(d=files, out=files / "out" / name).split() for name in RUNS}
    with ThreadPoolExecutor(max_workers=3) as pool:
        futures = {name: pool.submit(_run_script, argv[name], env) for name in SCRIPT_RUNS}
        done = {name: _run_here(argv[name]) for name in RUNS if name not in SCRIPT_RUNS}
        done.update({name: f.result() for name, f in futures.items()})
    return {name: (done[name], files / "out" / name) for name in RUNS}


def _ok(runs, name):
    proc, out = runs[name]
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    return proc, out


def _atlas(out: Path) -> dict:
    blob = json.loads((out / "atlas.json").read_text())
    assert (out / "index.html").is_file() and (out / "atlas_tensors.pt").is_file()
    manifest = json.loads((out / "manifest.json").read_text())
    assert "index.html" in json.dumps(manifest)
    assert all(u["layer"] in blob["layers"] for u in blob["units"])
    assert sorted(u["row"] for u in blob["units"]) == list(range(len(blob["units"])))  # one card per unit
    return blob


def test_the_script_is_cli_main():
    from importlib.metadata import entry_points

    (ep,) = [e for e in entry_points(group="console_scripts") if e.name == "unitscope"]
    assert ep.value == "unitscope.cli:main" and SCRIPT is not None


def test_atlas_of_a_factory_over_a_folder_of_class_folders(runs):
    _, out = _ok(runs, "atlas-factory-images")
    a = _atlas(out)
    assert sorted(u["unit"] for u in a["units"]) == [0, 1, 2, 3]  # one card per channel of layer 1
    assert a["layers"] == ["1"] and a["examples"] == 6 and a["classes"] == [0, 1]  # cat, dog
    assert a["settings"]["synthesize"] and a["settings"]["generator"] == "FFTImageGenerator"
    for u in a["units"]:
        assert {e["index"] for e in u["exemplars"]} <= set(range(6))
        assert u["dead"] or u["synthetic"].get("iam") is not None


def test_atlas_of_an_exported_model_over_a_labelled_tensor(runs):
    _, out = _ok(runs, "atlas-export-tensor")
    a = _atlas(out)
    assert sorted(u["unit"] for u in a["units"]) == [0, 1, 2, 3] and a["classes"] == [0, 1, 2]
    assert a["model"].endswith("net.pt2") and a["data"].endswith("x.pt")


def test_atlas_of_a_bert_classifier_over_labelled_sentences_shades_tokens(runs):
    _, out = _ok(runs, "atlas-hf-sentences")
    a = _atlas(out)
    assert len(a["units"]) == 3 and all(0 <= u["unit"] < 32 for u in a["units"])
    assert a["settings"]["synthesize"] is False and a["settings"]["embedding"] == "bert.embeddings.word_embeddings"
    assert a["classes"] == [0, 1]
    words = set(WORDS)
    for u in a["units"]:
        for e in u["exemplars"]:
            toks, c = e["tokens"], e["token_conductance"]
            assert len(toks) == len(c) and {t for t in toks if t} <= words
            assert all(v == 0 for t, v in zip(toks, c) if t == "")  # padding: no attribution


def test_atlas_of_a_gpt2_without_tokenizer_over_token_ids(runs):
    _, out = _ok(runs, "atlas-hf-ids")
    a = _atlas(out)
    assert len(a["units"]) == 2 and a["examples"] == 5 and a["settings"]["embedding"] == "transformer.wte"
    assert all(len(e["tokens"]) == 6 for u in a["units"] for e in u["exemplars"])


def test_atlas_inverse_sets_through_a_generator_factory(runs):
    _, out = _ok(runs, "atlas-factory-generator")
    a = _atlas(out)
    assert len(a["units"]) == 2 and a["settings"]["generator"] == "DecoderGenerator"


def test_atlas_of_a_zoo_model_over_the_users_images(runs):
    _, out = _ok(runs, "atlas-zoo-images")
    a = _atlas(out)
    assert len(a["units"]) == 2 and a["examples"] == 6 and a["classes"] == [0, 1]
    tensors = torch.load(out / "atlas_tensors.pt", weights_only=True)
    assert tensors["features.relu3/exemplar_inputs"].shape[-3:] == (1, 8, 8)  # prepared as the digits: 8×8 grey


def test_layers_of_a_gpt2_folder_without_tokenizer(runs):
    proc, _ = _ok(runs, "layers-hf-no-tokenizer")
    rows = {ln.split()[0]: ln for ln in proc.stdout.splitlines() if ln.strip()}
    assert rows[GPT_ACT].endswith("[4, 64]") and rows["lm_head"].endswith("[4, 10]")
    assert proc.stderr.strip() == ""


def test_importance_of_an_exported_model_on_images_resized_to_its_input(runs):
    import pandas as pd

    proc, out = _ok(runs, "importance-export-images")
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["inputs"] == 6 and summary["target"] == [0, 0, 0, 1, 1, 1]  # the class folders' labels
    df = pd.read_csv(out / "scores.csv")
    assert sorted(set(df["input"])) == ["0.png", "1.png", "2.png"] and len(df) == 6 * 4


def test_importance_of_a_bert_classifier_on_sentences(runs):
    import pandas as pd

    proc, out = _ok(runs, "importance-hf-sentences")
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["inputs"] == 4 and summary["target"] == [1, 0, 0, 1]
    df = pd.read_csv(out / "scores.csv")
    assert set(df["input"]) == {"a fine film .", "not a good movie", "bad film", "good"}


def test_scan_of_a_gpt2_without_tokenizer_over_token_ids(runs):
    _, out = _ok(runs, "scan-hf-ids")
    summary = json.loads((out / "scan.json").read_text())
    assert summary["examples"] == 5 and summary["layers"] == [GPT_ACT]
    assert {r["units"] for r in summary["per_layer"]} == {64}


def test_scan_of_a_factory_over_class_folders_with_normalization(runs):
    _, out = _ok(runs, "scan-factory-images")
    summary = json.loads((out / "scan.json").read_text())
    assert summary["examples"] == 6 and all(r["its_class"] in (0, 1) for r in summary["per_layer"])


def test_visualize_an_exported_model_knows_its_input_shape(runs):
    _, out = _ok(runs, "visualize-export")
    images = torch.load(out / "am_1.pt", weights_only=True)
    assert images.shape == (2, 3, 8, 8)


def test_inverse_set_through_a_generator_factory(runs):
    proc, out = _ok(runs, "inverse-set-factory-generator")
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["generator"] == "own_nets:Decoder" and (out / "inverse_set.json").is_file()


# --- mistakes: one line, exit code 2, and nothing loaded before the arguments are checked ----------------------

#: (argv with {d}, what the one line says, whether it is found before anything loads)
MISTAKES = [
    (["scan", "digits-cnn", "movie-reviews"], "did you mean 'reviews'?", True),
    (["atlas", "digits-cnn", "movie-reviews"], "did you mean 'reviews'?", True),
    (["importance", "digits-cnn", "{d}/s.txt", "--layers", "x"], "is sentences, and digits-cnn takes images", True),
    (["atlas", "digits-cnn", "photos"], "does not go with", True),
    (
        ["atlas", "sentiment-cnn", "{d}/imgs", "--layers", "filters"],
        "is images, and sentiment-cnn is a text model",
        True,
    ),
    (["atlas", "hf:{d}/gpt2", "{d}/plain.txt", "--layers", GPT_ACT], "has no tokenizer", True),
    (["scan", "hf:{d}/gpt2", "{d}/x.pt", "--layers", GPT_ACT], "takes token ids, integers [N, T]", True),
    (["scan", "hf:{d}/gpt2", "{d}/ids.npy"], "name the layers with --layers", True),
    (["atlas", "hf:{d}/nothing", "{d}/s.txt", "--layers", "x"], "no folder", True),
    (["atlas", "hf:{d}/imgs", "{d}/s.txt", "--layers", "x"], "no config.json", True),
    (["atlas", "own_nets:make", "{d}/imgs"], "name the layers with --layers", True),
    (["atlas", "own_netz:make", "{d}/imgs", "--layers", "1"], "cannot import 'own_netz'", True),
    (["atlas", "digits-cnx", "digits"], "closest zoo names: 'digits-cnn'", True),
    (["atlas", "own_nets:make", "{d}/imgs", "--layers", "1", "--split", "test"], "--split test", True),
    (
        ["importance", "own_nets:make", "{d}/ids.npy", "--layers", "1", "--target", "label"],
        "--target label needs inputs with labels",
        True,
    ),
    (["atlas", "own_nets:make", "{d}/imgs", "--layers", "1 2"], "is not a layer name", True),
    (["atlas", "own_nets:make", "{d}/imgs", "--layers", "1", "--top-k", "0"], "must be ≥ 1", True),
    (
        ["importance", "own_nets:make", "{d}/imgs", "--layers", "1", "--labels", "{d}/s.txt"],
        "has labels of its own",
        True,
    ),
    (
        ["importance", "own_nets:make", "{d}/imgs", "--layers", "1", "--mean", "0.5"],
        "--mean and --std go together",
        True,
    ),
    (["importance", "digits-cnn", "{d}/imgs", "--layers", "x", "--image-size", "8"], "prepares its own inputs", True),
    (["visualize", "hf:{d}/bert", "--layer", BERT_ACT, "--units", "0"], "is a text model", True),
    (
        ["inverse-set", "own_nets:make", "--layer", "1", "--unit", "0", "--range", "0", "1", "--shape", "8", "8"],
        "synthetic images need C H W",
        True,
    ),
    (["layers", "{d}/imgs"], "is a folder", True),
    (["atlas", "own_nets:make", "{d}/imgs", "--layers", "relu"], "closest valid names", False),
    (["atlas", "{d}/net.pt2", "{d}/x.pt", "--layers", "1", "--target", "7"], "--target 7", False),
    (["scan", "hf:{d}/gpt2", "{d}/ids.npy", "--layers", "transformer.h.9.mlp.act"], "closest valid names", False),
    (["importance", "own_nets:grey", "{d}/imgs", "--layers", "1", "--image-size", "6"], None, False),  # works
    (["atlas", "own_nets:not_a_model", "{d}/imgs", "--layers", "1"], "not an nn.Module", False),
    (
        [
            "inverse-set",
            "own_nets:make",
            "--layer",
            "1",
            "--unit",
            "0",
            "--range",
            "0",
            "1",
            "--generator",
            "own_nets:make",
        ],
        "a decoder module needs an int .latent_dim",
        False,
    ),
]


@pytest.mark.parametrize(
    "argv, needle, before_loading", MISTAKES, ids=[" ".join(m[0][:2]) + f" #{i}" for i, m in enumerate(MISTAKES)]
)
def test_a_mistake_is_one_line_and_exit_2(files, argv, needle, before_loading, tmp_path, monkeypatch, capsys):
    import unitscope.loading as loading
    from unitscope.cli import main

    cache = tmp_path / "cache"
    cache.mkdir()
    monkeypatch.setenv("UNITSCOPE_CACHE", str(cache))
    monkeypatch.syspath_prepend(str(files))
    if before_loading:
        monkeypatch.setattr(loading, "load_model", lambda *a, **k: pytest.fail("loaded before the check"))
    argv = [a.format(d=files) for a in argv] + ["--out", str(tmp_path / "out")] * (argv[0] != "layers")
    rc = main(argv)
    err = capsys.readouterr().err
    if needle is None:
        assert rc == 0, err
        return
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert needle in lines[0] and lines[0].startswith(f"unitscope {argv[0]}: error: "), lines[0]
    assert not any(cache.iterdir())  # nothing trained (or even cached)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.parametrize("k", [0, 5])
def test_mistakes_through_the_script(files, k, tmp_path):
    """A few of the mistakes through the installed script, on an empty model cache."""
    argv, needle, _ = MISTAKES[k]
    env = dict(_script_env(files), UNITSCOPE_CACHE=str(tmp_path / "cache"))
    proc = _run_script([a.format(d=files) for a in argv] + ["--out", str(tmp_path / "out")], env, timeout=120)
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert needle in proc.stderr
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())
