"""The MiniLM study's part of the report: its own manifest entry (sentences for headlines, a caption for every
figure, quick mode explained) and heat strips with colour bars — without MiniLM (synthetic numbers)."""

import json

import numpy as np

from unitscope.report.figures import read_figure_info
from unitscope.report.manifest import looks_like_key, read_entry
from unitscope.studies.transformer_figures import strips_figure, write_manifest

SCORES = ("conductance", "internal_influence", "grad_x_activation", "activation")


def _result():
    return {
        "test_accuracy": 0.782,
        "cnn_test_accuracy": 0.755,
        "n_agreement": 6,
        "n_steps": 8,
        "k": 10,
        "n_negation": 4,
        "completeness_gap_by_layer": {"median": [0.6, 0.2, 0.1, 0.05, 0.04, 0.0], "max": [1.5] * 6},
        "pearson": dict.fromkeys(SCORES, 0.1),
        "pearson_ablation_to_baseline": dict.fromkeys(SCORES, 0.5),
        "both_sign_share_by_layer": [0.5, 0.4, 0.3, 0.2, 0.2, 0.1],
        "negation_neurons": [{"probe": "this is not good", "layer": 2, "neuron": 1265, "phrase_share": 0.99}],
    }


def test_manifest_entry_reads_as_sentences_and_explains_quick_mode(tmp_path):
    gap = {
        "steps": 8,
        "full_steps": 32,
        "n_sentences": 3,
        "median": {"8": 0.15, "32": 0.01},
        "worst": {"8": 1.5, "32": 0.05},
    }
    for name in ("transformer_layers.png", "transformer_agreement.png", "transformer_negation.png"):
        (tmp_path / name).write_bytes(b"")
    entry = read_entry(write_manifest(str(tmp_path), _result(), quick=True, gap_check=gap))
    assert entry["name"] == "transformer" and entry["quick"] and entry["scale"] and entry["order"] == 70
    assert len(entry["description"]) > 200 and entry["summary"] == "transformer.json"
    assert len(entry["headlines"]) >= 5 and not any(looks_like_key(h) for h in entry["headlines"])
    assert [f["path"] for f in entry["figures"]] == [
        "transformer_layers.png",
        "transformer_agreement.png",
        "transformer_negation.png",
    ]
    assert all(len(f["caption"]) > 80 for f in entry["figures"])
    layers = entry["figures"][0]["caption"]
    assert "8 path points" in layers and "15 %" in layers and "1 %" in layers  # the measured gaps, not a guess
    full = read_entry(write_manifest(str(tmp_path), _result(), quick=False, gap_check=None))
    assert not full["quick"] and "Quick mode" not in full["figures"][0]["caption"]
    json.dumps(full)


def test_negation_strips_have_a_colour_bar_each(tmp_path):
    rows = [
        (
            "'this is not good' → negative",
            ["this", "is", "not", "good"],
            {"L2:n1265": np.array([0.0, 0.1, 0.9, 0.3]), "L1:n7": np.array([0.1, -0.2, 0.0, 0.05])},
        ),
        ("corpus", ["not", "bad"], {"L1:n1184": np.array([-0.4, 0.2])}),
    ]
    info = read_figure_info(strips_figure(rows, str(tmp_path / "strips.png")))
    assert info["heatmaps"] == 2 and info["keyed"] == 2 and info["title"]


def test_layer_figure_draws_the_full_budget_gap_in_quick_mode(tmp_path):
    import pandas as pd
    from PIL import Image

    from unitscope.studies.transformer_figures import layer_figure

    by_layer = pd.DataFrame(
        {
            "layer": range(6),
            "cut_gap_median": [0.3] * 5 + [0.0],
            "cut_gap_max": [1.5] * 6,
            "mlp_share_median": [0.5] * 6,
            "attention_share_median": [0.2] * 6,
        }
    )
    gap = {"full_steps": 32, "n_sentences": 3, "median_by_layer": {"32": [0.001] * 5 + [0.0]}}
    path = layer_figure(by_layer, str(tmp_path / "layers.png"), title="t", gap_check=gap)
    plain = layer_figure(by_layer, str(tmp_path / "plain.png"), title="t")
    assert read_figure_info(path)["title"] == "t"
    with Image.open(path) as a, Image.open(plain) as b:  # the extra line (and its legend entry) is drawn
        assert a.size == b.size and a.tobytes() != b.tobytes()
