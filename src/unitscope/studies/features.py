"""``python -m unitscope.studies.features [--quick] [--out DIR]``: which features of a sparse autoencoder matter for
the MiniLM sentiment head, against which neurons matter at the same layer.

The dictionary is the zoo's SAE (:func:`unitscope.zoo.minilm_sae.minilm_sae`: ReLU, L1, 1,536 features = 4× the 384
dims) on MiniLM's residual stream after its third layer (``bert.encoder.layer.2.output``); the model is
``all-MiniLM-L6-v2`` (frozen) with the zoo's linear sentiment head, from token ids (``lm.on_ids``; paths start at the
word embeddings, baseline: [PAD] at every non-special token), on held-out movie-review test sentences. One
:func:`unitscope.attribute` call per batch scores, in one pass along the path, the SAE's features and its error node
(``dictionaries=``) and the same layer's 384 neurons (the residual stream read as it is, at ``bert.encoder.layer.2``):
conductance, gradient × activation and activation, F = the predicted class's logit.

1. **The SAE's metrics** (:func:`unitscope.zoo.minilm_sae.evaluate`): L0, fraction of variance unexplained, dead
   features, and the head's test accuracy when the layer is replaced by its reconstruction.
2. **Features against neurons**: completeness over the features plus the error node and over the neurons (the layer
   is a cut of the network: both must sum to F(x) − F(x')); how concentrated the conductance is (the share of
   Σ|conductance| that the top 10 units carry, and how many units carry 80 % of it); the features and neurons that
   matter most over the sentences, with the tokens each feature is most active on.
3. **Agreement with ablation**: per sentence and score, the top-``k`` units by the score, their ablation-to-baseline
   effect (``F(x) − F(x with the unit set to its value at the baseline input, at every token)``, the error node kept)
   and the Pearson correlation; mean over sentences — conductance beside gradient × activation and activation, for
   the features and for the neurons.
4. **Negation probes** ("this is not good", "this is not bad"; F = the log-odds of positive): each probe's top
   features, their per-token activation and conductance, the share of it on the negation token, and how much more
   active they are on negations in the test sentences than elsewhere.
5. **The error node's share**: the part of F(x) − F(x') that the error node ε = y − ŷ carries.

Writes CSV, Markdown, a PNG and ``manifest.json`` to ``--out``; prints the tables, then one JSON object as the last
line.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from ..attribution.scores import activation, attribute
from ..core.errors import CompletenessWarning
from ..core.progress import bar, note
from ..core.state import restores_process_state
from ..data.ablation import ablation_scores
from .agreement import pearson
from .common import Config, Result, finish, study_parser
from .tables import write_table

__all__ = ["main", "run", "FeaturesConfig", "QUICK", "FULL", "SCORES", "NEURONS", "concentration", "feature_contexts"]

#: the residual stream after layer 2 read as neurons: the same tensor the SAE reads (BertLayer returns its output)
NEURONS = "bert.encoder.layer.2"
SCORES = ("conductance", "grad_x_activation", "activation")
#: test sentences scored, path points, test sentences the SAE metrics use (None: all), top-k, probe path points
QUICK = dict(n_sentences=8, steps=16, n_eval=128, k=10, probe_steps=32, top=8)
FULL = dict(n_sentences=64, steps=32, n_eval=None, k=10, probe_steps=64, top=12)


@dataclass
class FeaturesConfig(Config):
    """:class:`unitscope.studies.common.Config` plus ``threads`` (torch threads) and ``sae`` (settings of
    :func:`unitscope.zoo.minilm_sae.minilm_sae` other than the shipped recipe's — small ones in tests)."""

    out: str = "unitscope-out/features"
    threads: int = 1
    sae: dict | None = None
    sizes: dict | None = None


@contextmanager
def _quiet():
    """No :class:`CompletenessWarning` from the block: the study measures and reports the gaps itself."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CompletenessWarning)
        yield


def _median(t: torch.Tensor) -> float:
    """The median as numpy takes it (the mean of the two middle values of an even count; torch takes the lower)."""
    return float(np.median(t.double().numpy()))


def concentration(values: torch.Tensor, *, top: int = 10, share: float = 0.8) -> dict:
    """Per row of ``values`` ``[N, U]``: the share of Σ|v| that the ``top`` largest |v| carry, and how many units
    (largest |v| first) it takes to reach ``share`` of Σ|v|; medians over the rows.

    >>> concentration(torch.tensor([[4.0, -3.0, 2.0, 1.0]]), top=1)
    {'top_share': 0.4, 'units_for_share': 3.0}
    """
    a = values.abs().double().sort(1, descending=True).values
    total = a.sum(1).clamp_min(1e-30)
    cum = a.cumsum(1) / total[:, None]
    k = (cum < share - 1e-12).sum(1) + 1
    return {"top_share": round(_median(cum[:, min(top, a.shape[1]) - 1]), 4), "units_for_share": _median(k)}


def _token_strings(lm, sentences) -> list[list[str]]:
    """Each sentence's WordPiece tokens as MiniLM sees them ([CLS] … [SEP], truncated as ``lm.encode`` does)."""
    from ..zoo.minilm import MAX_LENGTH

    tok = lm.tokenizer(list(sentences), truncation=True, max_length=MAX_LENGTH)
    return [lm.tokenizer.convert_ids_to_tokens(ids) for ids in tok["input_ids"]]


def feature_contexts(f: torch.Tensor, tokens: list[list[str]], features, *, k: int = 3, width: int = 4) -> dict:
    """For each of ``features``: its ``k`` largest activations in ``f`` ``[tokens, F]`` (the tokens of ``tokens``,
    sentence after sentence) as ``"… left [token] right …"`` snippets.

    >>> f = torch.tensor([[0.0], [2.0], [1.0]])
    >>> feature_contexts(f, [["[CLS]", "not", "good"]], [0], k=1)
    {0: ['[CLS] [not] good (2.00)']}
    """
    flat = [(i, t) for i, sent in enumerate(tokens) for t in range(len(sent))]
    out = {}
    for u in features:
        col = f[:, u]
        best = col.topk(min(k, col.numel())).indices.tolist()
        snippets = []
        for j in best:
            if float(col[j]) <= 0:
                break
            i, t = flat[j]
            s = tokens[i]
            words = s[max(0, t - width) : t] + [f"[{s[t]}]"] + s[t + 1 : t + 1 + width]
            snippets.append(f"{' '.join(words)} ({float(col[j]):.2f})")
        out[int(u)] = snippets
    return out


def _encode_columns(sae, values: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([sae.encode(values[i : i + chunk]) for i in range(0, values.shape[0], chunk)])


def score_sentences(
    lm, sae, layer: str, sentences, *, n_steps: int, method: str = "adaptive", batch: int = 8, progress=None
) -> dict:
    """The three scores of the SAE's features + error node and of the layer's neurons for ``sentences``, one
    ``attribute`` call per batch of similar length (F = each sentence's predicted class's logit)."""
    from ..zoo.minilm import EMBEDDING
    from .transformer_scores import by_length

    enc = lm.encode(sentences)
    n, F = len(sentences), sae.n_features
    feats = {m: torch.zeros(n, F + 1) for m in SCORES}
    neurons = {m: torch.zeros(n, 384) for m in SCORES}
    label, evals = torch.zeros(n, dtype=torch.long), torch.zeros(n, dtype=torch.long)
    od, gap_f, gap_n = torch.zeros(n), torch.zeros(n), torch.zeros(n)
    sq = {"text": 0.0, "baseline": 0.0, "tokens": 0}  # Σ‖ε‖² over the words (not [CLS]/[SEP]) at x and at x'
    model = lm.on_ids
    for idx in bar(
        by_length(enc.lengths.tolist(), batch), desc="feature and neuron scores", unit="batch", progress=progress
    ):
        t = int(enc.lengths[idx].max())
        ids, base, mask = enc.ids[idx, :t], enc.baseline_ids[idx, :t], enc.attention_mask[idx, :t]
        with torch.no_grad():
            label[idx] = model(ids, mask).argmax(1)
        with _quiet():  # the gaps are measured and reported here
            res = attribute(
                model,
                ids,
                [layer, NEURONS],
                scores=list(SCORES),
                embedding=EMBEDDING,
                baselines=base,
                target=label[idx].tolist(),
                additional_forward_args=(mask,),
                n_steps=n_steps,
                method=method,
                internal_batch_size=96,
                progress=False,
                dictionaries={layer: sae},
            )
        for m in SCORES:
            feats[m][idx] = res[m].per_unit(layer).float()
            neurons[m][idx] = res[m].per_unit(NEURONS).float()
        c = res["conductance"]
        od[idx] = c.output_diff.float()
        gap_f[idx] = (feats["conductance"][idx].sum(1) - od[idx]).abs() / od[idx].abs().clamp_min(1e-12)
        gap_n[idx] = (neurons["conductance"][idx].sum(1) - od[idx]).abs() / od[idx].abs().clamp_min(1e-12)
        evals[idx] = c.n_evals
        words = mask.bool() & (ids != base)
        err_base = activation(model, base, [layer], additional_forward_args=(mask,), dictionaries={layer: sae})[layer][
            1
        ]
        sq["text"] += float((res["activation"][layer][1].double() ** 2).sum(-1)[words].sum())
        sq["baseline"] += float((err_base.double() ** 2).sum(-1)[words].sum())
        sq["tokens"] += int(words.sum())
    return {
        "features": feats,
        "neurons": neurons,
        "label": label,
        "output_diff": od,
        "gap_features": gap_f,
        "gap_neurons": gap_n,
        "n_evals": evals,
        "squared_error": sq,
        "encoded": enc,
    }


def agreement(lm, sae, layer: str, sc: dict, *, k: int, progress=None) -> pd.DataFrame:
    """Per sentence × kind (features / neurons) × score: Pearson between the score's values of its top-``k`` units
    and their ablation-to-baseline effects (the error node is no candidate; it stays as it is)."""
    enc = sc["encoded"]
    model = lm.on_ids
    rows = []
    F = sae.n_features
    for i in bar(range(enc.ids.shape[0]), desc="ablation to the baseline value", unit="sentence", progress=progress):
        L = int(enc.lengths[i])
        ids, mask, base = enc.ids[i : i + 1, :L], enc.attention_mask[i : i + 1, :L], enc.baseline_ids[i : i + 1, :L]
        kw = dict(target=int(sc["label"][i]), additional_forward_args=(mask,), internal_batch_size=64)
        f_base = activation(model, base, [layer], additional_forward_args=(mask,), dictionaries={layer: sae})[layer][0]
        y_base = activation(model, base, [layer], additional_forward_args=(mask,))[layer]
        for kind, values, fill, dicts, width in (
            ("features", sc["features"], f_base[0], {layer: sae}, F),
            ("neurons", sc["neurons"], y_base[0], None, 384),
        ):
            top = {m: values[m][i, :width].topk(k).indices for m in SCORES}
            units = sorted(set(torch.cat(list(top.values())).tolist()))
            effect = ablation_scores(model, ids, layer, units=units, value=fill, dictionaries=dicts, **kw)[0]
            by_unit = dict(zip(units, effect.tolist()))
            for m in SCORES:
                a = values[m][i, top[m]].numpy()
                b = np.array([by_unit[u] for u in top[m].tolist()])
                rows.append({"example": i, "kind": kind, "score": m, "pearson": pearson(a, b)})
    return pd.DataFrame(rows)


def negation_probes(lm, sae, layer: str, probes, *, n_steps: int, top: int, f_corpus, tokens) -> tuple[list, list]:
    """Each probe's top-``top`` features by |conductance| (F = log-odds of positive), per token, with the share on
    the negation token and the feature's lift on negations in the corpus (mean activation at negation tokens / mean
    activation over all tokens of ``f_corpus``, the features at the corpus ``tokens``)."""
    from ..zoo.minilm import EMBEDDING, log_odds, negation_mask

    enc = lm.encode(list(probes))
    with _quiet():
        res = attribute(
            lm.on_ids,
            enc.ids,
            [layer],
            scores=["conductance", "activation"],
            embedding=EMBEDDING,
            baselines=enc.baseline_ids,
            target=log_odds,
            additional_forward_args=(enc.attention_mask,),
            n_steps=n_steps,
            progress=False,
            dictionaries={layer: sae},
        )
    cond_tok, _ = res["conductance"][layer]  # [N, T, F], [N, T, D]
    act_tok, _ = res["activation"][layer]
    per = res["conductance"].per_unit(layer)  # [N, F + 1]
    flat_tokens = [t for s in tokens for t in s]
    neg_corpus = negation_mask(flat_tokens)
    mean_all = f_corpus.mean(0)
    mean_neg = f_corpus[neg_corpus].mean(0) if bool(neg_corpus.any()) else torch.zeros_like(mean_all)
    rows, summary = [], []
    for p, probe in enumerate(probes):
        L = int(enc.lengths[p])
        toks = lm.tokenizer.convert_ids_to_tokens(enc.ids[p, :L].tolist())
        neg = negation_mask(toks)
        c = per[p, :-1]
        best = c.abs().topk(top).indices.tolist()
        od = float(res["conductance"].output_diff[p])
        entry = {
            "probe": probe,
            "log_odds": None,
            "output_diff": round(od, 4),
            "error_node": round(float(per[p, -1]), 4),
            "features": [],
        }
        for rank, u in enumerate(best):
            ct = cond_tok[p, :L, u]
            share = float(ct[neg].abs().sum() / ct.abs().sum().clamp_min(1e-12))
            lift = float(mean_neg[u] / mean_all[u]) if float(mean_all[u]) > 0 else float("nan")
            peak = int(act_tok[p, :L, u].argmax())
            row = {
                "probe": probe,
                "rank": rank + 1,
                "feature": u,
                "conductance": round(float(c[u]), 4),
                "share_of_output_diff": round(float(c[u]) / od, 4) if od else float("nan"),
                "negation_token_share": round(share, 3),
                "corpus_negation_lift": round(lift, 2),
                "peak_token": toks[peak],
                "per_token_activation": " ".join(f"{w}[{float(a):.2f}]" for w, a in zip(toks, act_tok[p, :L, u])),
                "per_token_conductance": " ".join(f"{w}[{float(v):+.3f}]" for w, v in zip(toks, ct)),
            }
            rows.append(row)
            entry["features"].append(
                {
                    k: row[k]
                    for k in ("feature", "conductance", "negation_token_share", "corpus_negation_lift", "peak_token")
                }
            )
        summary.append(entry)
    with torch.no_grad():
        lo = log_odds(lm.on_ids(enc.ids, enc.attention_mask))
    for p, entry in enumerate(summary):
        entry["log_odds"] = round(float(lo[p]), 4)
    return rows, summary


def _top_units(values: torch.Tensor, sign: torch.Tensor, n: int) -> pd.DataFrame:
    """The ``n`` units with the largest mean |conductance| for the log-odds (2 × sign × the predicted logit's)."""
    lo = values * (2 * sign.float() - 1).unsqueeze(1) * 2
    mean_abs = lo.abs().mean(0)
    order = mean_abs.topk(min(n, lo.shape[1])).indices
    return pd.DataFrame(
        {
            "unit": order.numpy(),
            "mean_abs_log_odds_conductance": mean_abs[order].numpy(),
            "mean_log_odds_conductance": lo[:, order].mean(0).numpy(),
            "sentences_nonzero": (lo[:, order].abs() > 1e-6).float().mean(0).numpy(),
        }
    )


@restores_process_state
def main(argv=None) -> dict:
    p = study_parser(
        "features",
        __doc__,
        quick="smoke run: 8 test sentences (full: 64), 16 path points (full: 32), the SAE metrics on "
        "128 test sentences (full: all 1,057)",
    )
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1: the machine is shared)")
    p.add_argument(
        "--sae-seed",
        type=int,
        default=None,
        help="train the SAE with this seed (its draw of sentences and its initialisation) instead of the shipped "
        "recipe's 0; --seed draws the study's sentences",
    )
    args = p.parse_args(argv)
    config = FeaturesConfig.from_args(args)
    if args.sae_seed is not None:
        config.sae = dict(config.sae or {}, seed=args.sae_seed)
    return finish(run(config))


@restores_process_state
def run(config: FeaturesConfig) -> Result:
    """The study with ``config``: writes its tables, figure, ``features.json`` and ``manifest.json`` into
    ``config.out``."""
    from ..zoo.minilm import minilm_sentiment
    from ..zoo.minilm_sae import layer_values, minilm_sae, reconstruction_accuracy, sae_metrics
    from ..zoo.sentiment import movie_reviews
    from .features_figures import concentration_figure, write_manifest
    from .sentiment_negation import NEGATION_PROBES

    out = config.out
    os.makedirs(out, exist_ok=True)
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    torch.set_grad_enabled(True)
    warnings.filterwarnings("ignore", category=UserWarning, module="transformers")
    size = dict(QUICK if config.quick else FULL, **(config.sizes or {}))
    seconds = {}
    t0 = time.perf_counter()
    data = movie_reviews()
    lm = minilm_sentiment(progress=None)
    sae = minilm_sae(**(config.sae or {}), progress=None)
    layer = sae.hook_name
    seconds["data_and_models"] = time.perf_counter() - t0
    print(
        f"all-MiniLM-L6-v2 + linear head (test accuracy {lm.test_accuracy:.3f}); SAE at {layer}: "
        f"{sae.n_features} features ({'cached' if sae.cached else 'trained now'})",
        flush=True,
    )

    # 1. the SAE's metrics -----------------------------------------------------------------------------------
    t0 = time.perf_counter()
    n_eval = size["n_eval"]
    eval_sents = list(data.test.sentences[:n_eval])
    note(f"SAE metrics on {len(eval_sents)} test sentences")
    values = layer_values(lm, eval_sents, layer=layer)
    metrics = sae_metrics(sae, values)
    metrics.update(reconstruction_accuracy(lm, sae, eval_sents, data.test.labels[:n_eval]))
    metrics["accuracy_change"] = metrics.pop("change")
    tokens = _token_strings(lm, eval_sents)
    f_corpus = _encode_columns(sae, values)
    seconds["sae_metrics"] = time.perf_counter() - t0
    print(
        f"\nSAE metrics on {metrics['n_sentences']} test sentences ({metrics['n_tokens']} tokens): L0 "
        f"{metrics['l0']:.1f}, FVU {metrics['fvu']:.3f}, dead features {100 * metrics['dead_share']:.1f} % "
        f"({metrics['dead']}), head accuracy {metrics['accuracy']:.3f} → {metrics['reconstructed_accuracy']:.3f} "
        f"with the layer reconstructed ({100 * metrics['accuracy_change']:+.1f} points; "
        f"{100 * metrics['agreement']:.1f} % of predictions unchanged)",
        flush=True,
    )

    # 2. features against neurons ----------------------------------------------------------------------------
    t0 = time.perf_counter()
    rng = np.random.default_rng(config.seed)
    pick = np.sort(rng.choice(len(data.test), size=min(size["n_sentences"], len(data.test)), replace=False))
    sents = [data.test.sentences[i] for i in pick]
    note(
        f"scores: {len(sents)} test sentences, {sae.n_features} features + error node and 384 neurons, "
        f"{size['steps']} adaptive path points"
    )
    sc = score_sentences(lm, sae, layer, sents, n_steps=size["steps"])
    seconds["scores"] = time.perf_counter() - t0
    cond_f, cond_n = sc["features"]["conductance"], sc["neurons"]["conductance"]
    od = sc["output_diff"].double()
    err = cond_f[:, -1].double()
    err_share = err / od
    abs_err_share = err.abs() / cond_f.abs().double().sum(1)
    pooled_err_share = float((err * od.sign()).sum() / od.abs().sum())
    sq = sc["squared_error"]
    conc = {
        "features": concentration(cond_f[:, :-1]),
        "neurons": concentration(cond_n),
        "features_with_error_node": concentration(cond_f),
    }
    sign = sc["label"]
    top_f = _top_units(cond_f[:, :-1], sign, size["top"]).rename(columns={"unit": "feature"})
    contexts = feature_contexts(f_corpus, tokens, top_f["feature"].tolist())
    top_f["active_on_tokens"] = [float((f_corpus[:, u] > 0).float().mean()) for u in top_f["feature"]]
    top_f["top_contexts"] = [" | ".join(contexts[int(u)]) for u in top_f["feature"]]
    top_n = _top_units(cond_n, sign, size["top"]).rename(columns={"unit": "neuron"})
    units = pd.DataFrame(
        [
            {
                "units": "SAE features (1,536)" if sae.n_features == 1536 else f"SAE features ({sae.n_features})",
                "top10_share_of_abs": conc["features"]["top_share"],
                "units_for_80pct_of_abs": conc["features"]["units_for_share"],
                "completeness_gap_median": _median(sc["gap_features"]),
                "completeness_gap_max": float(sc["gap_features"].max()),
            },
            {
                "units": "neurons (384)",
                "top10_share_of_abs": conc["neurons"]["top_share"],
                "units_for_80pct_of_abs": conc["neurons"]["units_for_share"],
                "completeness_gap_median": _median(sc["gap_neurons"]),
                "completeness_gap_max": float(sc["gap_neurons"].max()),
            },
        ]
    )

    # 3. agreement with ablation -----------------------------------------------------------------------------
    t0 = time.perf_counter()
    note(f"ablation to the baseline value: top-{size['k']} features and neurons by each score, {len(sents)} sentences")
    agree = agreement(lm, sae, layer, sc, k=size["k"])
    seconds["ablation"] = time.perf_counter() - t0
    pearson_tab = agree.groupby(["kind", "score"], sort=False)["pearson"].mean().unstack("score")[list(SCORES)]

    # 4. negation probes -------------------------------------------------------------------------------------
    t0 = time.perf_counter()
    neg_rows, neg = negation_probes(
        lm, sae, layer, NEGATION_PROBES, n_steps=size["probe_steps"], top=5, f_corpus=f_corpus, tokens=tokens
    )
    seconds["negation"] = time.perf_counter() - t0

    for df, name in (
        (units, "features_units"),
        (top_f, "features_top"),
        (top_n, "features_top_neurons"),
        (pearson_tab.reset_index(), "features_agreement"),
        (pd.DataFrame(neg_rows), "features_negation"),
    ):
        write_table(df, out, name, index=False)
    agree.to_csv(os.path.join(out, "features_agreement_rows.csv"), index=False)
    pd.DataFrame(  # per sentence: which one a large relative gap comes from (a small |F(x) − F(x')| inflates it)
        {
            "sentence": sents,
            "output_diff": od.numpy(),
            "gap_features_plus_error": sc["gap_features"].numpy(),
            "gap_neurons": sc["gap_neurons"].numpy(),
            "evaluations": sc["n_evals"].numpy(),
        }
    ).to_csv(os.path.join(out, "features_sentences.csv"), index=False)

    fmt = lambda v: f"{v:.3f}"  # noqa: E731
    print(
        f"\n{len(sents)} test sentences, ≤{size['steps']} path points ({int(sc['n_evals'].max())} evaluations), "
        f"features + error node and neurons of {layer} in one call per batch ({seconds['scores']:.1f}s):"
    )
    print(units.to_string(index=False, float_format=fmt))
    print(
        f"\nerror node's share of F(x) − F(x'): median {_median(err_share):+.3f} over the sentences, "
        f"{pooled_err_share:+.3f} pooled (Σ ε·sign / Σ|F(x) − F(x')|); of Σ|conductance| over features + error "
        f"node: median {_median(abs_err_share):.3f}. The SAE's squared error ‖ε‖² per word is "
        f"{sq['baseline'] / max(sq['text'], 1e-30):.1f}× as large at the [PAD] baseline as on the text "
        f"({sq['baseline'] / sq['tokens']:.1f} against {sq['text'] / sq['tokens']:.1f}, {sq['tokens']} words)"
    )
    print(f"\nagreement with ablation to the baseline value (mean Pearson, top-{size['k']} units per sentence):")
    print(pearson_tab.to_string(float_format=lambda v: f"{v:+.3f}"))
    print("\nthe features that matter most (mean |conductance| for the log-odds):")
    print(top_f.drop(columns=["top_contexts"]).to_string(index=False, float_format=fmt))
    for u, c in contexts.items():
        print(f"  feature {u}: {' | '.join(c)}")
    print("\nthe neurons that matter most:")
    print(top_n.to_string(index=False, float_format=fmt))
    for e in neg:
        feats = ", ".join(
            f"#{f['feature']} {f['conductance']:+.3f} (peak '{f['peak_token']}', "
            f"{100 * f['negation_token_share']:.0f} % on the negation, lift {f['corpus_negation_lift']})"
            for f in e["features"]
        )
        print(
            f"\n“{e['probe']}”: log-odds {e['log_odds']:+.3f}, error node {e['error_node']:+.3f}; top features: "
            f"{feats}",
            flush=True,
        )

    concentration_figure(
        cond_f[:, :-1], cond_n, cond_f[:, -1], od, pearson_tab, os.path.join(out, "features_concentration.png")
    )
    result = {
        "model": "all-MiniLM-L6-v2 (frozen) + linear head; SAE from unitscope.zoo.minilm_sae",
        "layer": layer,
        "n_features": sae.n_features,
        "sae_cached": bool(sae.cached),
        "sae_seed": int((config.sae or {}).get("seed", 0)),
        "seed": config.seed,
        "sae": metrics,
        "n_sentences": len(sents),
        "n_steps": size["steps"],
        "max_evals": int(sc["n_evals"].max()),
        "k": size["k"],
        "completeness_gap": {
            "features_plus_error_median": round(_median(sc["gap_features"]), 6),
            "features_plus_error_max": round(float(sc["gap_features"].max()), 6),
            "neurons_median": round(_median(sc["gap_neurons"]), 6),
            "neurons_max": round(float(sc["gap_neurons"].max()), 6),
        },
        "error_at_baseline": {
            "words": sq["tokens"],
            "text_mean_sq_error": round(sq["text"] / sq["tokens"], 4),
            "baseline_mean_sq_error": round(sq["baseline"] / sq["tokens"], 4),
            "ratio": round(sq["baseline"] / max(sq["text"], 1e-30), 2),
        },
        "error_node_share": {
            "median": round(_median(err_share), 4),
            "pooled": round(pooled_err_share, 4),
            "abs_share_median": round(_median(abs_err_share), 4),
        },
        "concentration": conc,
        "pearson_to_baseline": {
            kind: {m: round(float(pearson_tab.loc[kind, m]), 3) for m in SCORES} for kind in pearson_tab.index
        },
        "top_features": [
            {
                "feature": int(r.feature),
                "mean_log_odds_conductance": round(float(r.mean_log_odds_conductance), 4),
                "contexts": contexts[int(r.feature)][:2],
            }
            for r in top_f.itertuples()
        ],
        "top_neurons": [
            {"neuron": int(r.neuron), "mean_log_odds_conductance": round(float(r.mean_log_odds_conductance), 4)}
            for r in top_n.itertuples()
        ],
        "negation": neg,
        "seconds": {k_: round(v, 1) for k_, v in seconds.items()},
    }
    with open(os.path.join(out, "features.json"), "w") as fh:
        json.dump(result, fh, indent=1)
    write_manifest(out, result, quick=config.quick)
    return Result(value=result, summary=result, out=out)


if __name__ == "__main__":
    main()
